"""Issue 10: nothing crashes, nothing is lost, nothing passes falsely.

One test (or one parametrised family) per class of defect: tracebacks on unusual but valid or
damaged inputs, data loss on a full disk, false PASS and silent acceptance, and requests too
large for the machine.
"""
import csv
import errno
import importlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import imcsim.checks as checks
from imcsim import BinaryFormat, Macro, MacroConfig, Radix4Format, VrefConfig, VrefMode
from imcsim.cli import main
from imcsim.cli.common import EXIT_INTERNAL, EXIT_MISMATCH, EXIT_USAGE
from imcsim.verify import trace as trace_mod
from imcsim.verify.check import check_files
from imcsim.verify.trace import TraceFile, TraceSelection
from imcsim.verify.vectors import make_operands, write_vectors

from cli_helpers import assert_usage_error, err_lines

cli_main = importlib.import_module("imcsim.cli.main")
check_mod = importlib.import_module("imcsim.verify.check")

CFG = MacroConfig(rows=64, columns=8, adc_bits=5, chip_seed=2,
                  vref=VrefConfig(mode=VrefMode.DUAL, full_scale=48, dual_low=31, dual_high=64))
XF, WF = Radix4Format(8), BinaryFormat(4)
SMALL_CFG = MacroConfig(rows=32, columns=10, adc_bits=4, vref=VrefConfig(
    mode=VrefMode.VARIABLE, full_scale=32, dual_low=15, dual_high=32))
SMALL = ("--rows", "32", "--columns", "10", "--adc-bits", "4", "--w-format", "binary:5",
         "--x-format", "binary:4")


def run(*args, catch=True):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=catch)


@pytest.fixture(scope="module")
def vec(tmp_path_factory):
    """A vectors folder and a trace of one small MVM."""
    root = tmp_path_factory.mktemp("hardening")
    ops = make_operands(CFG, XF, WF, inner=64, outputs=2, n_random=2, seed=5)
    write_vectors(root / "vec", CFG, ops.W, ops.X, XF, WF, seed=9, labels=ops.labels)
    Macro(CFG).mvm_traced(ops.X, ops.W, XF, WF, seed=9, trace=root / "trace.h5")
    return root


# --- tracebacks instead of errors ------------------------------------------------------------
@pytest.mark.parametrize("which", ["X", "W", "stored"])
def test_non_native_byte_order_is_refused_in_one_line_naming_the_argument(which):
    m = Macro(SMALL_CFG)
    X, W = np.ones((2, 8), dtype=np.int64), np.ones((8, 3), dtype=np.int64)
    if which == "stored":
        with pytest.raises(TypeError, match=r"^W: dtype >i8 is not in the machine's byte order"):
            m.store_weights(W.astype(">i8"), BinaryFormat(5))
        return
    args = {"X": (X.astype(">i8"), W), "W": (X, W.astype(">i8"))}[which]
    with pytest.raises(TypeError, match=rf"^{which}: dtype >i8 .*byte order"):
        m.mvm(*args, BinaryFormat(4), BinaryFormat(5))
    with pytest.raises(TypeError, match=rf"^{which}: dtype >i8"):
        m.mvm_traced(*args, BinaryFormat(4), BinaryFormat(5))


def test_cli_reads_big_endian_npy_files_as_their_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X, W = rng.integers(-4, 5, (3, 20)), rng.integers(-8, 9, (20, 4))
    np.save("x.npy", X)
    np.save("w.npy", W)
    np.save("xb.npy", X.astype(">i8"))
    np.save("wb.npy", W.astype(">f8"))
    r = run("mvm", *SMALL, "--x", "x.npy", "--w", "w.npy", "-o", "y.npy")
    assert r.exit_code == 0, r.output
    r = run("mvm", *SMALL, "--x", "xb.npy", "--w", "wb.npy", "-o", "yb.npy")
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load("y.npy"), np.load("yb.npy"))


NPY_CASES = {
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(_npy_bytes()[:-17]),
    "garbage": lambda p: p.write_bytes(b"\x93NUMPY\x01\x00garbage"),
    "text": lambda p: p.write_text("1,2,3\n"),
    "npz": lambda p: np.savez(open(p, "wb"), a=np.ones(3)),
    "object": lambda p: np.save(p, np.array([1, "a"], dtype=object), allow_pickle=True),
    "bool": lambda p: np.save(p, np.ones((2, 20), bool)),
    "3-D": lambda p: np.save(p, np.ones((2, 20, 1))),
}


def _npy_bytes():
    import io
    buf = io.BytesIO()
    np.save(buf, np.ones((3, 20), dtype=np.int64))
    return buf.getvalue()


@pytest.mark.parametrize("case", list(NPY_CASES))
def test_damaged_npy_operands_exit_2_naming_the_option_and_file(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    np.save("w.npy", np.ones((20, 4), dtype=np.int64))
    NPY_CASES[case](Path("bad.npy"))
    r = run("mvm", *SMALL, "--x", "bad.npy", "--w", "w.npy")
    assert_usage_error(r, "--x", "bad.npy")


def _damaged_trace(src, dst, how):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        g = f["cycles"]
        if how == "missing dataset":
            del g["code"]
        elif how == "short dataset":
            data = g["sar_trial"][()]
            del g["sar_trial"]
            g["sar_trial"] = data[:-1]
        elif how == "scalar dataset":
            del g["cycle"]
            g["cycle"] = 3
        elif how == "wrong columns":
            data = g["sar_decision"][()]
            del g["sar_decision"]
            g["sar_decision"] = data[:, :-1]
        elif how == "float dataset":
            data = g["n_columns"][()]
            del g["n_columns"]
            g["n_columns"] = data.astype(float) + 0.5
        elif how == "bad config":
            f.attrs["config_json"] = "{not json"
        elif how == "missing attribute":
            del f.attrs["shape_bmn"]
        elif how == "cycles not a group":
            del f["cycles"]
            f["cycles"] = np.zeros(3)
    return dst


TRACE_DAMAGE = {"missing dataset": "/cycles/code", "short dataset": "/cycles/sar_trial",
                "scalar dataset": "/cycles/cycle", "wrong columns": "/cycles/sar_decision",
                "float dataset": "/cycles/n_columns", "bad config": "config_json",
                "missing attribute": "shape_bmn", "cycles not a group": "/cycles"}


@pytest.mark.parametrize("how", list(TRACE_DAMAGE))
def test_damaged_trace_is_refused_on_open_naming_file_and_dataset(vec, tmp_path, how):
    bad = _damaged_trace(vec / "trace.h5", tmp_path / "bad.h5", how)
    with pytest.raises(ValueError) as info:
        TraceFile(bad)
    msg = str(info.value)
    assert str(bad) in msg and TRACE_DAMAGE[how] in msg and "\n" not in msg
    for args in (("trace", "show", bad, "--cycle", "0"),
                 ("trace", "export", bad, "--vcd", tmp_path / "out.vcd")):
        assert_usage_error(run(*args), bad.name)
    assert not (tmp_path / "out.vcd").exists()
    r = run("check", vec / "vec", bad)                  # as ACTUAL of a check, too
    assert_usage_error(r, bad.name)


# --- check: every unusable dump is exit 2, every false PASS a refusal ------------------------
def _csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _codes(vec):
    with h5py.File(vec / "vec" / "vectors.h5") as f:
        return f["cycles"]["code"][()]


def _rows(code):
    """Every code of the vectors as wide CSV rows (cycle, column, code)."""
    return [[c, k, int(code[c, k])] for c in range(code.shape[0]) for k in range(code.shape[1])]


def test_check_refuses_non_integer_and_out_of_range_values(vec, tmp_path):
    code = _codes(vec)
    # float codes 1.5 against 1: used to be truncated into a PASS
    h5 = tmp_path / "float.h5"
    with h5py.File(h5, "w") as f:
        f["code"] = code.astype(np.float64) + np.where(np.arange(code.size) == 9, 0.5,
                                                        0.0).reshape(code.shape)
    assert_usage_error(run("check", vec / "vec", h5), "float.h5", "code", "not an integer")
    # integer-valued floats are the values they hold
    with h5py.File(h5, "w") as f:
        f["code"] = code.astype(np.float64)
    assert run("check", vec / "vec", h5).exit_code == 0
    for name, data in (("nan", np.full(code.shape, np.nan)),
                       ("huge", np.full(code.shape, 2.0 ** 64)),
                       ("uint", np.full(code.shape, 2 ** 64 - 1, dtype=np.uint64)),
                       ("text", np.full(code.shape, b"1")),
                       ("scalar", np.int64(3)),
                       ("4-D", np.zeros((len(code), 2, 2, 2), dtype=np.int64))):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f["code"] = data
        assert_usage_error(run("check", vec / "vec", tmp_path / f"{name}.h5"), f"{name}.h5")
    for value in ("1" + "0" * 30, "1.5", "nan", "0x" + "f" * 20):
        p = _csv(tmp_path / "v.csv", ["cycle", "column", "code"], [[0, 0, value]])
        assert_usage_error(run("check", vec / "vec", p), "v.csv", "line 2")
    vcd = tmp_path / "real.vcd"
    vcd.write_text("$scope module m $end\n$var wire 1 ! eoc $end\n$var real 64 \" code_0 $end\n"
                   "$upscope $end\n$enddefinitions $end\n#0\n0!\nr1.5 \"\n#1\n1!\n")
    assert_usage_error(run("check", vec / "vec", vcd), "real.vcd", "not an integer")


def test_check_refuses_two_values_for_one_cycle(vec, tmp_path):
    code = _codes(vec)
    rows = _rows(code)
    ok = _csv(tmp_path / "ok.csv", ["cycle", "column", "code"], rows + [rows[4]])
    assert run("check", vec / "vec", ok).exit_code == 0      # an identical repeat is harmless
    conflict = rows + [[rows[4][0], rows[4][1], rows[4][2] + 1]]
    p = _csv(tmp_path / "dup.csv", ["cycle", "column", "code"], conflict)
    assert_usage_error(run("check", vec / "vec", p), "dup.csv", "lines 6 and",
                       f"cycle {rows[4][0]}", "two values")
    long = _csv(tmp_path / "long.csv", ["cycle", "signal", "index", "value"],
                [[0, "code", 1, int(code[0, 1])], [0, "code", 1, int(code[0, 1]) + 1]])
    assert_usage_error(run("check", vec / "vec", long), "lines 2 and 3")
    # HDF5 with keys: two rows for one (tile, vector, plane), the last used to win silently
    dup = tmp_path / "dup.h5"
    shutil.copy(vec / "vec" / "vectors.h5", dup)
    with h5py.File(dup, "r+") as f:
        for k in ("tile_row", "tile_col", "vector", "plane"):
            d = f["cycles"][k]
            a = d[()]
            a[5] = a[4]
            d[...] = a
    assert_usage_error(run("check", vec / "vec", dup), "dup.h5", "rows 4 and 5")


def test_check_exit_codes_mismatch_1_nothing_compared_2_crash_3(vec, tmp_path, monkeypatch):
    rows = _rows(_codes(vec))
    rows[0][2] += 1
    p = _csv(tmp_path / "one.csv", ["cycle", "column", "code"], rows)
    r = run("check", vec / "vec", p)
    assert r.exit_code == EXIT_MISMATCH and "FAIL: 1 mismatches" in r.output
    far = _csv(tmp_path / "far.csv", ["cycle", "column", "code"], [[10 ** 12, 0, 1]])
    assert_usage_error(run("check", vec / "vec", far), "far.csv", "nothing to compare")
    with pytest.raises(ValueError, match="nothing to compare"):
        check_files(vec / "vec", far)

    def crash(*a, **k):
        raise RuntimeError("bug in compare")
    monkeypatch.setattr(check_mod, "compare", crash)
    r = run("check", vec / "vec", p)
    assert r.exit_code == EXIT_INTERNAL
    assert err_lines(r) == ["internal error: RuntimeError: bug in compare (rerun with --debug "
                            "for the traceback)"]


@pytest.mark.parametrize("text, name", [
    ("cycle,column,code\n0,-1,3\n", "index -1"),
    ("cycle,column,code\n-2,0,3\n", "negative cycle"),
    ("cycle,signal,index,value\n0,code,99999999,1\n", "index 99999999"),
    ("cycle,signal,index,value\n0,bogus,0,1\n", "bogus"),
    ("cycle,signal,index,value\n0,active_rows,7,1\n", "one value per cycle"),
    ("cycle,code\n0,1\n", "column"),
    (b"cycle,code\n\xff\xfe\x00\n", "v.csv"),
])
def test_malformed_csv_dumps_exit_2(vec, tmp_path, text, name):
    p = tmp_path / "v.csv"
    (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
    assert_usage_error(run("check", vec / "vec", p), name)


@pytest.mark.parametrize("text", [
    "$var wire 1 ! eoc $end\n$enddefinitions $end\n#x\n",
    "$var wire 1 ! eoc $end\n$enddefinitions $end\n#5\n1!\n#2\n0!\n",
    "$var wire 1 ! eoc $end\n$enddefinitions $end\n#0\nb102 !\n",
    "$var wire 1 ! eoc $end\n$enddefinitions $end\n#0\nb1\n",
    "$var wire 1 ! eoc $end\n$enddefinitions $end\n#0\n1?\n",
])
def test_malformed_vcd_dumps_exit_2_naming_the_line(vec, tmp_path, text):
    p = tmp_path / "d.vcd"
    p.write_text(text)
    assert_usage_error(run("check", vec / "vec", p), "d.vcd", "line")


def test_malformed_hex_manifest_exits_2(vec, tmp_path):
    folder = tmp_path / "hexdump"
    shutil.copytree(vec / "vec", folder)
    man = json.loads((folder / "manifest.json").read_text())
    man["files"][0]["fields"][0]["width"] = 10 ** 9
    (folder / "manifest.json").write_text(json.dumps(man))
    assert_usage_error(run("check", vec / "vec", folder), "manifest.json", "width")
    (folder / "manifest.json").write_text("{")
    assert_usage_error(run("check", vec / "vec", folder), "manifest.json")


# --- traces: full disk, empty selections ----------------------------------------------------
def _ops():
    rng = np.random.default_rng(1)
    return rng.integers(-4, 5, (6, 40)), rng.integers(-8, 9, (40, 5))


def test_trace_write_error_raises_oserror_naming_the_target_and_leaves_nothing(tmp_path,
                                                                                monkeypatch):
    real = trace_mod.GuardedFile._raw_write
    written = {"n": 0}

    def disk_full(self, data):
        written["n"] += len(data)
        if written["n"] > 6000:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, data)
    monkeypatch.setattr(trace_mod.GuardedFile, "_raw_write", disk_full)
    X, W = _ops()
    m = Macro(SMALL_CFG)
    target = tmp_path / "t.h5"
    target.write_bytes(b"the user's old trace")
    with pytest.raises(OSError, match="No space left on device") as info:
        m.mvm_traced(X, W, BinaryFormat(4), BinaryFormat(5), trace=target)
    assert str(target) in str(info.value) and ".partial" not in str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.h5"]
    assert target.read_bytes() == b"the user's old trace"
    # the CLI: exit 2, one line naming --trace's target, every output as it was
    monkeypatch.chdir(tmp_path)
    written["n"] = 0
    Path("y.npy").write_bytes(b"old y")
    r = run("mvm", *SMALL, "--random-shape", "6", "40", "5", "-o", "y.npy", "--trace", "t.h5")
    assert_usage_error(r, str(target), "No space left on device")
    assert Path("y.npy").read_bytes() == b"old y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.h5", "y.npy"]


FSIZE_SCRIPT = """
import resource, sys
from imcsim.cli import main
args = ["mvm", "--rows", "64", "--columns", "40", "--adc-bits", "6", "--random-shape"]
main(args + ["2", "70", "3", "--trace", sys.argv[1] + ".warm"], standalone_mode=False)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))     # after the kernels are cached
main(args + ["48", "120", "16", "--trace", sys.argv[1]])
"""


def test_a_real_file_size_limit_while_tracing_exits_2_without_a_crash(tmp_path):
    """HDF5 crashes the process once one of its writes failed; the guarded file keeps its
    writes from failing, so the command ends with one line (was: segmentation fault)."""
    proc = subprocess.run([sys.executable, "-c", FSIZE_SCRIPT, str(tmp_path / "big.h5")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Numba" not in ln
             and "@njit" not in ln]
    assert proc.returncode == EXIT_USAGE, proc.stderr[-3000:]
    assert lines == [f"Error: trace: cannot write {tmp_path / 'big.h5'}: File too large"], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.h5.warm"]


@pytest.mark.parametrize("option, value, names", [
    ("--trace-vectors", "5:9", ("--trace-vectors", "6 vectors")),
    ("--trace-vectors", "3:7", ("--trace-vectors",)),
    ("--trace-tiles", "0,3", ("--trace-tiles", "2 x 3 tiles")),
    ("--trace-tiles", "0,0,1", ("--trace-tiles",)),
    ("--trace-planes", "4", ("--trace-planes", "0..3")),
    ("--trace-planes", "-1", ("--trace-planes",)),
    ("--trace-cycles", "30:99", ("--trace-cycles", "24 serial cycles")),
])
def test_out_of_range_trace_selection_is_refused_before_running(tmp_path, monkeypatch, option,
                                                                 value, names):
    monkeypatch.chdir(tmp_path)
    r = run("mvm", *SMALL, "--random-shape", "6", "40", "5", "--trace", "t.h5", option, value)
    assert_usage_error(r, *names)
    assert list(tmp_path.iterdir()) == []


def test_a_selection_that_records_nothing_is_refused_by_the_api(tmp_path):
    X, W = _ops()
    m = Macro(SMALL_CFG)
    with pytest.raises(ValueError, match="recorded no cycle"):
        m.mvm_traced(X, W, BinaryFormat(4), BinaryFormat(5), trace=tmp_path / "t.h5",
                     selection=TraceSelection(vectors="7:9"))
    assert list(tmp_path.iterdir()) == []
    sel = TraceSelection(vectors="0:9", planes=(9,))
    with pytest.raises(ValueError, match="vectors: 0:9 reaches past the 6 vectors"):
        sel.check_against(6, 4, (2, 1))


# --- fail fast on size ----------------------------------------------------------------------
def test_requests_that_cannot_fit_are_refused_with_the_figure_before_allocating(monkeypatch,
                                                                                 tmp_path):
    monkeypatch.setattr(checks, "available_memory", lambda: (24 << 30, "available"))
    t0 = time.perf_counter()
    r = run("mvm", "--random-shape", "1000000", "1000", "256")
    assert_usage_error(r, "--random-shape: needs about", "GiB of memory, more than the 24.0 GiB")
    r = run("mvm", "--random-shape", "1000000", "600", "256", "--codes", tmp_path / "c.npy")
    assert_usage_error(r, "--random-shape")                 # 15 GiB of ADC codes alone
    assert time.perf_counter() - t0 < 20
    assert not (tmp_path / "c.npy").exists()
    monkeypatch.setattr(checks, "available_memory", lambda: (1 << 20, "available"))
    monkeypatch.setattr(checks, "ALWAYS_FITS_BYTES", 0)     # check even small requests here
    m = Macro(SMALL_CFG)
    X = np.zeros((4000, 40), dtype=np.int8)
    with pytest.raises(ValueError, match=r"^X, W: needs about .* MiB of memory, more than "
                                         r"the 1.0 MiB available"):
        m.mvm(X, np.zeros((40, 5), dtype=np.int8), BinaryFormat(4), BinaryFormat(5))
    np.save(tmp_path / "x.npy", np.zeros((4000, 40)))
    np.save(tmp_path / "w.npy", np.zeros((40, 5)))
    r = run("mvm", *SMALL, "--x", tmp_path / "x.npy", "--w", tmp_path / "w.npy")
    assert_usage_error(r, "--x", "MiB of memory")


def test_memory_estimate_is_close_to_what_the_fast_path_allocates():
    import tracemalloc
    m = Macro(MacroConfig(rows=64, columns=40, adc_bits=6, vref=VrefConfig(
        mode=VrefMode.VARIABLE, full_scale=64, dual_low=63, dual_high=64)))
    rng = np.random.default_rng(0)
    X, W = rng.integers(-4, 5, (3000, 200)).astype(np.int8), rng.integers(-8, 9, (200, 24))
    fmt = (BinaryFormat(4), BinaryFormat(5))
    m.mvm(X[:2], W, *fmt, return_codes=True)
    tracemalloc.start()
    try:
        m.mvm(X, W, *fmt, return_codes=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    est = checks.mvm_memory_bytes(m.config, 3000, 200, 24, *fmt, codes=True, x_float=False)
    assert 0.8 * peak < est < 2.5 * peak, (peak, est)
    avail, what = checks.available_memory()
    assert avail is None or (avail > 0 and what)


# --- training --------------------------------------------------------------------------------
TRAIN = ("train", "--model", "mlp", "--epochs", "1", "--max-steps", "1", "--batch", "16",
         "--quiet")


def test_resume_from_a_truncated_or_corrupt_checkpoint_exits_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(*TRAIN, "--out", "run")
    assert r.exit_code == 0, r.output
    ck = tmp_path / "run" / "checkpoint.npz"
    good = ck.read_bytes()
    for damaged in (good[: len(good) // 2], b"", b"PK\x03\x04garbage" * 10):
        ck.write_bytes(damaged)
        r = run(*TRAIN, "--out", "run", "--resume", "--epochs", "2")
        assert_usage_error(r, "resume", "checkpoint.npz")
    with zipfile.ZipFile(ck, "w") as z:                       # a zip without the arrays
        z.writestr("meta.npy", b"nonsense")
    assert_usage_error(run(*TRAIN, "--out", "run", "--resume", "--epochs", "2"), "checkpoint.npz")


@pytest.mark.parametrize("spec, names", [
    ("nosuch:forward:0:t.h5", ("no layer 'nosuch'", "fc2")),
    ("fc2:sideways:0:t.h5", ("KIND",)),
    ("fc2:forward:x:t.h5", ("STEP",)),
    ("fc2:forward:5:t.h5", ("step 5 is not in this run",)),
    ("fc1:forward:0:t.h5", ("does not run on the emulator",)),
    ("fc2:backward:0:t.h5", ("does not run on the emulator",)),
    ("fc2:forward:0:nofolder/t.h5", ("does not exist",)),
])
def test_train_trace_requests_that_would_write_nothing_are_refused(tmp_path, monkeypatch, spec,
                                                                    names):
    monkeypatch.chdir(tmp_path)
    r = run(*TRAIN, "--imc", "forward", "--out", "run", "--trace", spec)
    assert_usage_error(r, "trace", *names)
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir())


def test_reproducible_mode_is_refused_on_cuda():
    from imcsim.training.engine import TrainConfig
    with pytest.raises(ValueError, match="reproducible: .*CPU only"):
        TrainConfig(reproducible=True, device="cuda")
