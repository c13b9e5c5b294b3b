"""`imcsim check`: HDF5 / CSV / VCD / hex dumps against vectors and traces, bit flips, tolerance."""
import csv
import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from imcsim import (
    BinaryFormat,
    Macro,
    MacroConfig,
    NonIdealityConfig,
    Radix4Format,
    VrefConfig,
    VrefMode,
)
from imcsim.cli.verify import check_command
from imcsim.verify.check import check_files, load_expected, parse_signal_map
from imcsim.verify.trace import TraceFile
from imcsim.verify.vcd import read_vcd
from imcsim.verify.vectors import make_operands, write_vectors

CFG = MacroConfig(rows=64, columns=8, adc_bits=5, chip_seed=2,
                  vref=VrefConfig(mode=VrefMode.DUAL, full_scale=48, dual_low=31, dual_high=64),
                  nonideal=NonIdealityConfig(comparator_noise_sigma=0.3,
                                             sampling_noise_sigma=0.2))
XF, WF = Radix4Format(8), BinaryFormat(4)


@pytest.fixture(scope="module")
def vec(tmp_path_factory):
    """A vectors folder (one tile, corner cases + random) and a trace of the same MVM."""
    root = tmp_path_factory.mktemp("check")
    ops = make_operands(CFG, XF, WF, inner=64, outputs=2, n_random=4, seed=5)
    write_vectors(root / "vec", CFG, ops.W, ops.X, XF, WF, seed=9, labels=ops.labels)
    Macro(CFG).mvm_traced(ops.X, ops.W, XF, WF, seed=9, trace=root / "trace.h5")
    return root


def invoke(*args):
    return CliRunner().invoke(check_command, [str(a) for a in args])


def flip(path, name, index, bit=0):
    with h5py.File(path, "r+") as f:
        d = f["cycles"][name]
        a = d[()]
        a[index] ^= np.array(1 << bit).astype(a.dtype)
        d[...] = a


def test_vectors_pass_against_themselves_their_hex_files_and_the_trace(vec):
    for actual in (vec / "vec" / "vectors.h5", vec / "vec", vec / "trace.h5"):
        res = invoke(vec / "vec", actual)
        assert res.exit_code == 0, res.output
        assert "PASS" in res.output
    # and the trace as EXPECTED, the vectors as ACTUAL (rows matched by tile/vector/plane)
    res = invoke(vec / "trace.h5", vec / "vec" / "vectors.h5")
    assert res.exit_code == 0, res.output
    rep = check_files(vec / "vec", vec / "trace.h5")
    assert rep.passed and rep.compared["code"] == rep.expected_cycles * 8
    assert rep.compared["y_int"] == 2 * len(json.loads(
        (vec / "vec" / "manifest.json").read_text())["vectors"])


@pytest.mark.parametrize("name, bit", [("code", 0), ("code", 4), ("column_count", 2),
                                       ("sar_decision", 0), ("nmc_acc", 30), ("column_value", 7),
                                       ("active_rows", 1), ("full_scale", 0), ("y_int", 3)])
def test_single_bit_flips_in_hdf5_are_caught_with_cycle_and_column(vec, tmp_path, name, bit):
    actual = tmp_path / "flip.h5"
    shutil.copy(vec / "vec" / "vectors.h5", actual)
    with h5py.File(actual) as f:
        done = np.nonzero(f["cycles"]["group_done"][()])[0]
    cycle = int(done[1]) if name == "y_int" else 23
    index = {"sar_decision": (cycle, 5, 2), "nmc_acc": (cycle, 1), "y_int": (cycle, 1),
             "active_rows": cycle, "full_scale": cycle}.get(name, (cycle, 5))
    flip(actual, name, index, bit)
    res = invoke(vec / "vec", actual)
    assert res.exit_code == 1, res.output
    assert "FAIL: 1 mismatches" in res.output
    row = next(ln for ln in res.output.splitlines() if ln.strip().startswith(f"{cycle} "))
    assert name in row
    if name in ("code", "column_count", "sar_decision", "column_value"):
        assert row.split()[3] == "5" and "column 5: 1" in res.output
    assert f"summary by signal: {name} 1/" in res.output


def test_bit_flip_in_a_hex_file_is_caught(vec, tmp_path):
    folder = tmp_path / "hexdump"
    shutil.copytree(vec / "vec", folder)
    lines = (folder / "code.hex").read_text().splitlines()
    lines[8] = f"{int(lines[8], 16) ^ (1 << 12):0{len(lines[8])}x}"   # cycle 7, column 2
    (folder / "code.hex").write_text("\n".join(lines) + "\n")
    res = invoke(vec / "vec", folder)
    assert res.exit_code == 1, res.output
    row = next(ln for ln in res.output.splitlines() if ln.strip().startswith("7 "))
    assert row.split()[3] == "2" and "code" in row


def _csv_rows(vec_dir):
    with h5py.File(vec_dir / "vectors.h5") as f:
        g = {k: f["cycles"][k][()] for k in ("code", "column_count", "active_rows",
                                               "full_scale", "nmc_acc")}
    rows = []
    for i in range(len(g["code"])):
        for c in range(g["code"].shape[1]):
            rows.append({"cycle": i, "column": c, "code": int(g["code"][i, c]),
                         "column_count": int(g["column_count"][i, c]),
                         "active_rows": int(g["active_rows"][i]),
                         "full_scale": int(g["full_scale"][i])})
        for o in range(g["nmc_acc"].shape[1]):
            rows.append({"cycle": i, "output": o, "nmc_acc": int(g["nmc_acc"][i, o])})
    return rows


def write_csv(path, rows, header):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        w.writerows(rows)


def test_csv_wide_and_long(vec, tmp_path):
    rows = _csv_rows(vec / "vec")
    header = ["cycle", "column", "output", "code", "column_count", "active_rows", "full_scale",
              "nmc_acc"]
    write_csv(tmp_path / "wide.csv", rows, header)
    res = invoke(vec / "vec", tmp_path / "wide.csv")
    assert res.exit_code == 0, res.output
    long_rows = []
    for r in rows:
        for s in ("code", "column_count", "nmc_acc"):
            if s in r:
                long_rows.append({"cycle": r["cycle"], "signal": s,
                                  "index": r.get("column", r.get("output")), "value": r[s]})
    write_csv(tmp_path / "long.csv", long_rows, ["cycle", "signal", "index", "value"])
    res = invoke(vec / "vec", tmp_path / "long.csv")
    assert res.exit_code == 0, res.output
    # a changed value and a missing one
    bad = [dict(r) for r in rows]
    bad[3]["code"] += 2                              # cycle 0, column 3
    del bad[10]["code"]                              # cycle 1, column 0
    write_csv(tmp_path / "bad.csv", bad, header)
    res = invoke(vec / "vec", tmp_path / "bad.csv", "--max-report", "5")
    assert res.exit_code == 1
    assert "FAIL: 2 mismatches" in res.output and "missing" in res.output
    assert "column 3: 1" in res.output and "column 0: 1" in res.output


def test_trace_vcd_export_reads_back_and_checks(vec, tmp_path):
    vcd = tmp_path / "t.vcd"
    with TraceFile(vec / "trace.h5") as tf:
        tf.export_vcd(vcd)
        n = tf.n_cycles
        codes = [tf.cycle(i)["code"] for i in range(n)]
    changes = read_vcd(vcd)
    assert sum(v for _, v in changes["eoc"]) == n
    res = invoke(vec / "trace.h5", vcd)             # default map: eoc, code_<c>, ...
    assert res.exit_code == 0, res.output
    assert f"code {n * 8}" in res.output
    res = invoke(vec / "vec", vcd)
    assert res.exit_code == 0, res.output
    # flip bit 0 of code_6 at the end of cycle 4
    ident = next(ln.split()[3] for ln in vcd.read_text().splitlines()
                 if ln.startswith("$var") and ln.split()[4] == "code_6")
    text = vcd.read_text().splitlines()
    eoc_times = [t for t, v in changes["eoc"] if v == 1]
    t4 = eoc_times[4]
    at = text.index(f"#{t4}")
    line = f"b{int(codes[4][6]) ^ 1:b} {ident}"
    j = at + 1
    while j < len(text) and not text[j].startswith("#"):
        if text[j].endswith(f" {ident}"):
            text[j] = line
            break
        j += 1
    else:
        text.insert(at + 1, line)
    vcd.write_text("\n".join(text) + "\n")
    res = invoke(vec / "trace.h5", vcd)
    assert res.exit_code == 1, res.output
    row = next(ln for ln in res.output.splitlines() if ln.strip().startswith("4 "))
    assert row.split()[3] == "6" and "code" in row


def _bus_vcd(path, vec_dir, flip_cycle=None):
    """An RTL-style VCD: a `done` strobe and a packed `code_bus` (column c at bits 5c..5c+4)."""
    with h5py.File(vec_dir / "vectors.h5") as f:
        code = f["cycles"]["code"][()]
        acc = f["cycles"]["nmc_acc"][()]
    lines = ["$timescale 1ns $end", "$scope module top $end",
             "$var wire 1 ! clk $end", "$var wire 1 \" done $end",
             "$var wire 40 # code_bus [39:0] $end", "$var wire 96 $ acc_bus [95:0] $end",
             "$upscope $end", "$enddefinitions $end", "#0", "0!", "0\"", "bx #"]
    t = 0
    for i in range(len(code)):
        word = sum(int(v) << (5 * c) for c, v in enumerate(code[i]))
        if i == flip_cycle:
            word ^= 1 << 5                            # column 1, bit 0
        accw = sum((int(v) & (2**48 - 1)) << (48 * g) for g, v in enumerate(acc[i]))
        lines += [f"#{t + 5}", "1!", f"#{t + 10}", "0!", f"#{t + 15}", "1!", "1\"",
                  f"b{word:b} #", f"b{accw:b} $", f"#{t + 20}", "0!", f"#{t + 25}", "1!", "0\""]
        t += 30
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("mode", ["strobe", "clock"])
def test_vcd_with_a_signal_map_and_packed_buses(vec, tmp_path, mode):
    vcd = tmp_path / "rtl.vcd"
    _bus_vcd(vcd, vec / "vec")
    (tmp_path / "map.json").write_text(json.dumps({"valid": "done", "code": "code_bus"}))
    extra = ["--map", "clock=clk"] if mode == "clock" else []
    res = invoke(vec / "vec", vcd, "--map", tmp_path / "map.json", "--map", "nmc_acc=acc_bus:48",
                 *extra)
    assert res.exit_code == 0, res.output
    _bus_vcd(vcd, vec / "vec", flip_cycle=11)
    res = invoke(vec / "vec", vcd, "--map", tmp_path / "map.json", *extra)
    assert res.exit_code == 1, res.output
    row = next(ln for ln in res.output.splitlines() if ln.strip().startswith("11 "))
    assert row.split()[3] == "1" and "code" in row


def test_tolerance_mode_for_silicon_reports_error_statistics(vec, tmp_path):
    actual = tmp_path / "noisy.h5"                  # a silicon dump: codes and cycle keys
    rng = np.random.default_rng(0)
    with h5py.File(vec / "vec" / "vectors.h5") as src, h5py.File(actual, "w") as f:
        code = src["cycles"]["code"][()].astype(np.int64)
        err = rng.choice([-1, 0, 0, 0, 1], code.shape)
        f["cycles/code"] = np.clip(code + err, 0, 31)
        for k in ("tile_row", "tile_col", "vector", "plane"):
            f["cycles"][k] = src["cycles"][k][()]
    res = invoke(vec / "vec", actual)
    assert res.exit_code == 1 and "code error (got - expected)" in res.output
    res = invoke(vec / "vec", actual, "--tolerance", "1", "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert "tolerance: codes within +/-1 LSB" in res.output
    assert "mean" in res.output and "sigma" in res.output and "-1 LSB" in res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["passed"] and set(rep["code_errors"]["histogram"]) <= {"-1", "0", "1"}
    assert abs(rep["code_errors"]["sigma"] - np.std(
        np.clip(code + err, 0, 31) - code)) < 1e-9
    with h5py.File(actual, "r+") as f:
        f["cycles"]["code"][3, 2] = (code[3, 2] + 3) % 32
    res = invoke(vec / "vec", actual, "--tolerance", "1")
    assert res.exit_code == 1 and "FAIL: 1 mismatches" in res.output


def test_check_restricts_signals_and_skips_derived_ones_in_tolerance_mode(vec, tmp_path):
    actual = tmp_path / "a.h5"
    shutil.copy(vec / "vec" / "vectors.h5", actual)
    flip(actual, "nmc_acc", (3, 0), 2)
    assert invoke(vec / "vec", actual).exit_code == 1
    res = invoke(vec / "vec", actual, "--signals", "code,column_count")
    compared = next(ln for ln in res.output.splitlines() if ln.startswith("compared"))
    assert res.exit_code == 0 and "code" in compared and "nmc_acc" not in compared
    res = invoke(vec / "vec", actual, "--tolerance", "0")
    assert res.exit_code == 0 and "not compared in tolerance mode: sar_decision" in res.output


@pytest.mark.parametrize("args, match", [
    (["missing.h5"], "no such file"),
    (["actual.txt"], "suffix"),
    (["nocycle.csv"], "cycle"),
    (["actual.vcd", "--map", "foo=bar"], "unknown name"),
    (["actual.vcd", "--map", "code"], "name=signal"),
    (["actual.vcd", "--map", "valid=nosuch"], "nosuch"),
    (["actual.h5", "--signals", "codes"], "unknown"),
])
def test_check_input_errors_exit_2_with_one_line(vec, tmp_path, args, match):
    (tmp_path / "actual.txt").write_text("x")
    (tmp_path / "nocycle.csv").write_text("column,code\n0,1\n")
    _bus_vcd(tmp_path / "actual.vcd", vec / "vec")
    shutil.copy(vec / "vec" / "vectors.h5", tmp_path / "actual.h5")
    args = [str(tmp_path / args[0])] + args[1:]
    res = invoke(vec / "vec", *args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and match in lines[0], res.output


def test_expected_must_be_vectors_or_trace(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["a"] = 1
    with pytest.raises(ValueError, match="neither"):
        load_expected(tmp_path / "x.h5")
    assert parse_signal_map(["code=code_{c}", "valid=eoc"]) == {"code": "code_{c}",
                                                                 "valid": "eoc"}
