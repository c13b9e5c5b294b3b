"""Issue 23, input classes: no false PASS, no silent acceptance, no hang on bad inputs.

One test (or one parametrised family) per class, each failing without its fix:

- measured dumps (``imcsim.verify.dumps``, shared by ``check``, ``check --statistical`` and
  ``calibrate``): column range, code range, cycle range, block completeness, enough samples for
  the test a block feeds, degenerate (all-zero, single-code) ramps; a calibration preset
  without its tables;
- format specs validated in full (``binary:6/0``);
- ``--scheduler``: a file that is not a scheduler file, a missing file, an address that
  answers with bytes that are not Dask's, or not at all;
- the size of a sweep, bounded before it is expanded.

Small geometry (64 x 6, 5-bit ADC, a reduced stimulus) for speed.
"""
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import replace

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imcsim import BinaryFormat, MacroConfig, NonIdealityConfig, Radix4Format, VrefConfig, VrefMode
from imcsim.calibration import (
    calibrate,
    load_measurement,
    make_calibration_stimulus,
    simulate_measurement,
    statistical_check,
    write_measurement,
)
from imcsim.cli import main
from imcsim.cli.common import EXIT_MISMATCH
from imcsim.formats import parse_format
from imcsim.verify.dumps import MIN_REPEAT_CONVERSIONS, MIN_STATISTICAL_CONVERSIONS
from imcsim.verify.vectors import make_operands, write_vectors

from cli_helpers import assert_usage_error, err_lines

NOM = MacroConfig(rows=64, columns=6, adc_bits=5,
                  vref=VrefConfig(full_scale=64, dual_low=31, dual_high=64))
CHIP = replace(NOM, chip_seed=7, nonideal=NonIdealityConfig(
    cell_cap_sigma=0.01, parasitic_ratio=0.05, cdac_unit_sigma=0.02, comparator_offset_sigma=0.4,
    comparator_noise_sigma=0.3, sampling_noise_sigma=0.2))
DESIGN = {"repeat_vectors": 32, "repeat_counts": 4, "pattern_subsets": 8, "pattern_repeats": 2,
          "x_bits": 4}
L = NOM.top_code


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# --- calibration dumps ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cal(tmp_path_factory):
    """A measured chip (dumps + calibration.json in ``good/``) and its calibration chip.json."""
    root = tmp_path_factory.mktemp("cal")
    stim = make_calibration_stimulus(NOM, **DESIGN)
    meas = simulate_measurement(stim, CHIP, seed=1)
    write_measurement(root / "good", meas)
    (root / "good" / "calibration.json").write_text(json.dumps(stim.to_dict()))
    result = calibrate(meas)
    result.save(root / "chip.json", plots=False)
    return {"root": root, "stimulus": stim, "measured": meas, "result": result}


def _dumps(cal, tmp_path, name="dumps"):
    folder = tmp_path / name
    shutil.copytree(cal["root"] / "good", folder)
    return folder


def _plain_h5(path, code, cycles=None):
    """A silicon-style dump: /cycles/code (n, C) and, optionally, /cycles/cycle."""
    path.unlink(missing_ok=True)
    with h5py.File(path, "w") as f:
        g = f.create_group("cycles")
        g["code"] = np.asarray(code, dtype=np.int64)
        if cycles is not None:
            g["cycle"] = np.asarray(cycles, dtype=np.int64)


def _flat(cal, block):
    codes = cal["measured"].codes[block]
    B, P, C = codes.shape
    return codes.reshape(B * P, C).copy()


def _set_code(value):
    def edit(cal, folder):
        code = _flat(cal, "ramp_F31")
        code[5, 2] = value
        _plain_h5(folder / "ramp_F31.h5", code)
    return edit


def _half_columns(cal, folder):
    _plain_h5(folder / "ramp_F31.h5", _flat(cal, "ramp_F31")[:, :3])


def _more_columns(cal, folder):
    code = _flat(cal, "ramp_F31")
    _plain_h5(folder / "ramp_F31.h5", np.concatenate([code, code], axis=1))


def _csv_column_999(cal, folder):
    code = _flat(cal, "ramp_F31")
    lines = ["cycle,signal,index,value"] + [f"{i},code,{c},{code[i, c]}"
                                            for i in range(code.shape[0])
                                            for c in range(code.shape[1])]
    lines.append("0,code,999,3")
    (folder / "ramp_F31.h5").unlink()
    (folder / "ramp_F31.csv").write_text("\n".join(lines) + "\n")


def _few_rows(cal, folder):
    _plain_h5(folder / "repeat_F31.h5", _flat(cal, "repeat_F31")[:2], cycles=[0, 1])


def _cycle_outside(cal, folder):
    code = _flat(cal, "ramp_F31")
    _plain_h5(folder / "ramp_F31.h5", np.concatenate([code, code[:1]]),
              cycles=list(range(code.shape[0])) + [code.shape[0] + 40])


def _cycle_twice(cal, folder):
    code = _flat(cal, "ramp_F31")
    cycles = np.arange(code.shape[0])
    cycles[7] = 6
    _plain_h5(folder / "ramp_F31.h5", code, cycles=cycles)


def _y_int_shape(cal, folder):
    with h5py.File(folder / "ramp_F31.h5", "r+") as f:
        y = f["result"]["y_int"][()]
        del f["result"]["y_int"]
        f["result"]["y_int"] = np.concatenate([y, y[:, :1]], axis=1)


BAD_DUMPS = {
    "code -1": (_set_code(-1), ["ramp_F31", "code -1"]),
    "code above the top code": (_set_code(L + 1), ["ramp_F31", f"code {L + 1}", f"[0, {L}]"]),
    "a ramp block with half its columns": (_half_columns, ["ramp_F31", "columns 3..5"]),
    "more columns than the array": (_more_columns, ["ramp_F31", "column 6", "6 columns"]),
    "a CSV row for column 999": (_csv_column_999, ["ramp_F31.csv", "column 999"]),
    "a repeat block with too few rows": (_few_rows, ["repeat_F31", "cycles absent"]),
    "a cycle outside the block": (_cycle_outside, ["ramp_F31", "outside the block"]),
    "a cycle given twice": (_cycle_twice, ["ramp_F31", "both give cycle 6"]),
    "outputs of another shape": (_y_int_shape, ["ramp_F31", "y_int of shape"]),
}


@pytest.mark.parametrize("case", sorted(BAD_DUMPS))
def test_bad_dumps_are_refused_by_calibrate_and_the_statistical_check(cal, tmp_path, case):
    """Each used to give a preset (calibrate) or a PASS (check --statistical)."""
    edit, names = BAD_DUMPS[case]
    folder = _dumps(cal, tmp_path)
    edit(cal, folder)
    out = tmp_path / "out" / "chip.json"
    out.parent.mkdir()
    r = run("calibrate", folder, "-o", out, "--no-plots")
    assert_usage_error(r, *names)
    assert not list(out.parent.iterdir())                 # nothing written
    report = tmp_path / "stat.json"
    r = run("check", "--statistical", cal["root"] / "chip.json", folder, "--json", report)
    assert_usage_error(r, *names)
    assert not report.exists()


def test_good_dumps_still_pass(cal, tmp_path):
    """The same commands on the untouched dumps: a preset, and a PASS."""
    folder = _dumps(cal, tmp_path)
    out = tmp_path / "chip.json"
    r = run("calibrate", folder, "-o", out, "--no-plots")
    assert r.exit_code == 0, r.output
    r = run("check", "--statistical", cal["root"] / "chip.json", folder)
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output


def test_unused_columns_of_the_array_are_ignored(cal, tmp_path):
    """Columns the stimulus does not drive (covered_columns .. columns - 1) may be dumped."""
    cfg = replace(NOM, columns=17)                          # Kw = 3: columns 0..14 covered
    stim = make_calibration_stimulus(cfg, **DESIGN)
    assert stim.covered_columns == 15
    meas = simulate_measurement(stim, replace(CHIP, columns=17), seed=1)
    folder = tmp_path / "seventeen"
    write_measurement(folder, meas)
    (folder / "calibration.json").write_text(json.dumps(stim.to_dict()))
    code = meas.codes["ramp_F31"]
    B, P, C = code.shape
    wide = np.concatenate([code.reshape(B * P, C), np.full((B * P, 2), L)], axis=1)
    _plain_h5(folder / "ramp_F31.h5", wide)
    back = load_measurement(folder)
    assert np.array_equal(back.codes["ramp_F31"], code)
    # ... but not a column past the array
    _plain_h5(folder / "ramp_F31.h5", np.concatenate([wide, wide[:, :1]], axis=1))
    with pytest.raises(ValueError, match="ramp_F31: code for column 17"):
        load_measurement(folder)


@settings(max_examples=int(os.environ.get("IMCSIM_FUZZ_EXAMPLES", "25")), deadline=None,
          database=None, derandomize="IMCSIM_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_a_block_dump_is_used_in_full_or_refused(cal, tmp_path_factory, data):
    """Whatever is done to a block's dump (values, rows, columns, cycle numbers), the
    measurement holds every conversion of it in [0, L] exactly as dumped, or one ValueError
    line names the block."""
    folder = _dumps(cal, tmp_path_factory.mktemp("fuzz"))
    code = _flat(cal, "ramp_F31")
    n, C = code.shape
    cycles = np.arange(n)
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["value", "drop", "dup", "cycle", "width"]))
        i = data.draw(st.integers(0, code.shape[0] - 1))
        if what == "value":
            code[i, data.draw(st.integers(0, code.shape[1] - 1))] = data.draw(
                st.sampled_from([-1, -7, L + 1, 2 ** 40, 0, L]))
        elif what == "drop":
            code, cycles = np.delete(code, i, 0), np.delete(cycles, i)
        elif what == "dup":
            code, cycles = np.insert(code, i, code[i], 0), np.insert(cycles, i, cycles[i])
        elif what == "cycle":
            cycles[i] = data.draw(st.sampled_from([-1, n, n + 100, int(cycles[0])]))
        else:
            k = data.draw(st.integers(1, C + 2))
            code = code[:, :k] if k <= C else np.pad(code, ((0, 0), (0, k - C)))
    _plain_h5(folder / "ramp_F31.h5", code, cycles=cycles)
    try:
        back = load_measurement(folder)
    except ValueError as exc:
        assert "ramp_F31" in str(exc) and "\n" not in str(exc)
        return
    got = back.codes["ramp_F31"].reshape(n, C)
    assert np.array_equal(np.sort(cycles), np.arange(n))          # every cycle once
    assert np.array_equal(got[cycles], code[:, :C]) and code.shape[1] == C
    assert got.min() >= 0 and got.max() <= L


@pytest.mark.parametrize("value", [0, 5])
def test_all_zero_or_single_code_dumps(cal, tmp_path, value):
    """calibrate: one line naming the degenerate block (was SciPy's 'function value ... NaN');
    check --statistical: a FAIL, exit 1 (was the same SciPy message, exit 2)."""
    folder = _dumps(cal, tmp_path)
    for name, codes in cal["measured"].codes.items():
        B, P, C = codes.shape
        _plain_h5(folder / f"{name}.h5", np.full((B * P, C), value))
    out = tmp_path / "out.json"
    r = run("calibrate", folder, "-o", out, "--no-plots")
    assert_usage_error(r, "ramp_F31", "degenerate", f"every code is {value}")
    assert not out.exists()
    r = run("check", "--statistical", cal["root"] / "chip.json", folder)
    assert r.exit_code == EXIT_MISMATCH, r.output
    assert "FAIL" in r.output and "no fit of the measurement" in r.output
    assert "ramp_F31" in r.output and not err_lines(r)


def test_a_calibration_preset_without_its_tables(cal, tmp_path):
    """'tables missing', naming the file (was a check against the emulator's chip of that
    preset, with a diagnosis of parameters the chip never had)."""
    shutil.copy(cal["root"] / "chip.json", tmp_path / "chip.json")
    shutil.copy(cal["root"] / "chip.report.json", tmp_path / "chip.report.json")
    r = run("check", "--statistical", tmp_path / "chip.json", cal["root"] / "good")
    assert_usage_error(r, "tables missing", tmp_path / "chip.h5")
    # a plain preset (no calibration report beside it) is still the emulator's chip
    (tmp_path / "nominal.json").write_text(NOM.to_json())
    r = run("check", "--statistical", tmp_path / "nominal.json", cal["root"] / "good")
    assert r.exit_code == EXIT_MISMATCH, r.output


def test_blocks_too_small_for_their_test(tmp_path):
    """A stimulus designed so small that its repeat block cannot feed the noise fit, nor any
    block of it the statistical check: refused, naming the block (was silently dropped / a
    PASS of tests that could not fail)."""
    stim = make_calibration_stimulus(NOM, ramp_vectors=1, repeat_vectors=2, repeat_counts=2,
                                     pattern_subsets=2, pattern_repeats=1, x_bits=3)
    P = stim.n_planes
    assert 2 * P < MIN_REPEAT_CONVERSIONS and 4 * P < MIN_STATISTICAL_CONVERSIONS
    folder = tmp_path / "tiny"
    write_measurement(folder, simulate_measurement(stim, CHIP, seed=1))
    (folder / "calibration.json").write_text(json.dumps(stim.to_dict()))
    r = run("calibrate", folder, "-o", tmp_path / "chip.json", "--no-plots")
    assert_usage_error(r, "repeat_F31", f"at least {MIN_REPEAT_CONVERSIONS}")
    (tmp_path / "nominal.json").write_text(NOM.to_json())
    r = run("check", "--statistical", tmp_path / "nominal.json", folder)
    assert_usage_error(r, "repeat_F31", f"at least {MIN_STATISTICAL_CONVERSIONS}")


def test_codes_built_in_python_are_checked_too(cal):
    """calibrate(dict) and statistical_check(model, measurement) apply the same rules."""
    stim, meas = cal["stimulus"], cal["measured"]
    codes = {k: v.copy() for k, v in meas.codes.items()}
    codes["ramp_F45"][1, 1, 1] = -1
    with pytest.raises(ValueError, match="block ramp_F45: .*code -1"):
        calibrate(codes, stim)
    half = {k: (v[:, :, :3] if k == "ramp_F31" else v) for k, v in meas.codes.items()}
    with pytest.raises(ValueError, match="block ramp_F31: codes of shape"):
        statistical_check(cal["result"], replace(meas, codes=half))
    # a model of fewer columns than the measurement (it used to check only its own columns)
    model = cal["result"].model
    narrow = replace(model, gain=model.gain[:3], offset=model.offset[:3], cdac=model.cdac[:3])
    with pytest.raises(ValueError, match="3 modelled columns"):
        statistical_check(narrow, meas)


# --- imcsim check ---------------------------------------------------------------------------
CFG = MacroConfig(rows=64, columns=8, adc_bits=5, chip_seed=2,
                  vref=VrefConfig(mode=VrefMode.DUAL, full_scale=48, dual_low=31, dual_high=64))
XF, WF = Radix4Format(8), BinaryFormat(4)


@pytest.fixture(scope="module")
def vec(tmp_path_factory):
    root = tmp_path_factory.mktemp("vec")
    ops = make_operands(CFG, XF, WF, inner=64, outputs=2, n_random=2, seed=5)
    write_vectors(root / "vec", CFG, ops.W, ops.X, XF, WF, seed=9, labels=ops.labels)
    with h5py.File(root / "vec" / "vectors.h5") as f:
        code = f["cycles"]["code"][()].astype(np.int64)
        n_cols = f["cycles"]["n_columns"][()]
    return root / "vec", code, n_cols


def _csv(path, code, n_cols, extra=(), change=None):
    rows = ["cycle,signal,index,value"]
    for i in range(code.shape[0]):
        for c in range(int(n_cols[i])):
            v = change.get((i, c), code[i, c]) if change else code[i, c]
            rows.append(f"{i},code,{c},{v}")
    rows += list(extra)
    path.write_text("\n".join(rows) + "\n")
    return path


def test_check_refuses_a_value_past_the_tile(vec, tmp_path):
    """A CSV row for column 999 of an 8-column tile (and a wider HDF5 dump) used to be cut off
    before the comparison: PASS."""
    folder, code, n_cols = vec
    good = _csv(tmp_path / "good.csv", code, n_cols)
    assert run("check", folder, good).exit_code == 0
    bad = _csv(tmp_path / "c999.csv", code, n_cols, extra=["0,code,999,3"])
    assert_usage_error(run("check", folder, bad), "c999.csv", "column 999", "8 columns")
    wide = tmp_path / "wide.h5"
    with h5py.File(wide, "w") as f:
        f["code"] = np.concatenate([code, code], axis=1)
    assert_usage_error(run("check", folder, wide), "wide.h5", "column 8")


def test_check_refuses_codes_outside_the_adc_range(vec, tmp_path):
    """Code -1 where 0 is expected passed within --tolerance 1; nothing above L is a code."""
    folder, code, n_cols = vec
    i, c = (int(v) for v in np.argwhere(code == 0)[0])
    neg = _csv(tmp_path / "neg.csv", code, n_cols, change={(i, c): -1})
    assert_usage_error(run("check", folder, neg, "--tolerance", "1"), "neg.csv", "code -1",
                       f"column {c}")
    i, c = (int(v) for v in np.argwhere(code == code.max())[0])
    high = _csv(tmp_path / "high.csv", code, n_cols, change={(i, c): CFG.top_code + 1})
    assert_usage_error(run("check", folder, high, "--tolerance", "1"), "high.csv",
                       f"code {CFG.top_code + 1}")


def test_check_reads_vcd_x_as_missing_not_as_minus_one(vec, tmp_path):
    """An undefined (x) code on a VCD is a missing value (a mismatch, exit 1), not code -1."""
    folder, code, n_cols = vec
    C = code.shape[1]
    ids = {c: chr(35 + c) for c in range(C)}
    lines = ["$timescale 1ns $end", "$scope module top $end", "$var wire 1 ! eoc $end"]
    lines += [f"$var wire 5 {ids[c]} code_{c} $end" for c in range(C)]
    lines += ["$upscope $end", "$enddefinitions $end", "#0", "0!"]
    for i in range(code.shape[0]):
        t = 10 * i
        vals = [("bx" if (i, c) == (1, 0) else f"b{int(code[i, c]):b}") for c in range(C)]
        lines += [f"#{t + 1}"] + [f"{v} {ids[c]}" for c, v in enumerate(vals)]
        lines += [f"#{t + 5}", "1!", f"#{t + 8}", "0!"]
    vcd = tmp_path / "x.vcd"
    vcd.write_text("\n".join(lines) + "\n")
    r = run("check", folder, vcd, "--signals", "code")
    assert r.exit_code == EXIT_MISMATCH, r.output
    assert "missing" in r.output


# --- formats ----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["binary:6/0", "binary:6/00", "binary:\u0666"])
def test_format_specs_are_validated_in_full(spec):
    """binary:6/0 ran as binary:6; a non-ASCII digit was read as its value."""
    with pytest.raises(ValueError, match="format"):
        parse_format(spec)
    r = run("mvm", "--rows", "32", "--columns", "10", "--adc-bits", "4", "--x-format", spec)
    assert_usage_error(r, spec)


def test_valid_format_specs_still_parse():
    assert parse_format("binary:6/3") == BinaryFormat(6, 3)
    assert parse_format(" binary : 6 ") == BinaryFormat(6)
    assert parse_format("radix4:8/1") == Radix4Format(8, 1)


# --- --scheduler -------------------------------------------------------------------------------
@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"command": "mvm", "out": str(tmp_path / "out"),
                                "grid": {"seed": [0]}}))
    return path


class _Server:
    """A TCP server that is not a Dask scheduler: it greets with ``greeting`` (or stays
    silent when None) and holds the connection open."""

    def __init__(self, greeting: bytes | None):
        self.greeting = greeting
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.greeting is not None:
                try:
                    conn.sendall(self.greeting)
                except OSError:
                    pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_scheduler_file_that_is_not_one_fails_at_once(spec, tmp_path):
    """A JSON file without a scheduler's address: exit 2 in seconds (was exit 3, an
    AssertionError inside Dask)."""
    pytest.importorskip("distributed")
    path = tmp_path / "not-a-scheduler.json"
    path.write_text(json.dumps({"foo": 1}))
    t = time.monotonic()
    r = run("sweep", spec, "--scheduler", path, "--quiet")
    assert_usage_error(r, "--scheduler", path, "not a Dask scheduler file")
    assert time.monotonic() - t < 10


def test_missing_scheduler_file_fails_at_once(spec, tmp_path):
    """Dask waits without end for a scheduler file to appear."""
    pytest.importorskip("distributed")
    t = time.monotonic()
    r = run("sweep", spec, "--scheduler", tmp_path / "missing" / "file.json", "--quiet")
    assert_usage_error(r, "--scheduler", "no such scheduler file")
    assert time.monotonic() - t < 10
    r = run("vectors", tmp_path / "v", "--shards", "2", "--scheduler",
            tmp_path / "missing" / "file.json")
    assert_usage_error(r, "--scheduler", "no such scheduler file")


def test_scheduler_address_that_answers_with_other_bytes(spec):
    """An HTTP-like reply: Dask read it as a frame of 3 EiB (exit 3, MemoryError)."""
    pytest.importorskip("distributed")
    server = _Server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    try:
        r = run("sweep", spec, "--scheduler", server.address, "--quiet")
    finally:
        server.close()
    assert_usage_error(r, "--scheduler", server.address, "no Dask scheduler answered")


def test_scheduler_address_that_stays_silent(spec, monkeypatch):
    """A server that accepts and never answers held Dask's handshake forever."""
    pytest.importorskip("distributed")
    import imcsim.sweep.cluster as cluster_mod
    monkeypatch.setattr(cluster_mod, "SCHEDULER_TIMEOUT", 1.0)
    server = _Server(None)
    t = time.monotonic()
    try:
        r = run("sweep", spec, "--scheduler", server.address, "--quiet")
    finally:
        server.close()
    assert_usage_error(r, "--scheduler", server.address, "sent nothing in 1 s")
    assert time.monotonic() - t < 10


# --- sweep size ---------------------------------------------------------------------------------
def test_sweep_size_is_bounded_before_the_grid_is_expanded(tmp_path, monkeypatch):
    """A 2000 x 2000 grid: refused before a single run is built (it grew past 2 GB, even for
    --dry-run)."""
    import imcsim.sweep as sweep_mod
    calls = []

    def normalize(params):
        calls.append(1)
        if len(calls) > 10:
            raise ValueError("expanded the grid")
        return dict(params)
    monkeypatch.setitem(sweep_mod.COMMANDS, "probe", sweep_mod.Command(
        "probe", normalize, lambda params, folder: {}))
    grid = {"a": list(range(2000)), "b": list(range(2000))}
    with pytest.raises(ValueError, match="4000000 runs .* limit of 100000"):
        sweep_mod.plan_sweep({"command": "probe", "grid": grid}, out=tmp_path / "o")
    assert not calls
    spec = tmp_path / "big.json"
    spec.write_text(json.dumps({"command": "mvm", "grid": {"seed": list(range(2000)),
                                                           "chip_seed": list(range(2000))}}))
    t = time.monotonic()
    r = run("sweep", spec, "--dry-run", "--out", tmp_path / "o")
    assert_usage_error(r, "4000000 runs", "100000")
    assert time.monotonic() - t < 10
    assert len(sweep_mod.plan_sweep({"command": "probe", "grid": {"a": [0, 1]}},
                                    out=tmp_path / "o").runs) == 2
