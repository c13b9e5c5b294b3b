"""RTL check: rtl/imc_colgroup.v under Icarus Verilog + cocotb, imcsim as the reference model.

- the correct RTL passes every input format (binary:6, binary:3 with zero masking, radix4:8,
  radix4:4 with padding rows) in every Vref mode, on corner-case and random vectors;
- built with LEVEL_BITS = 3 (multi-level row inputs, docs/hardware-model.md 4.8) it passes
  the multi-level formats radix4:8/2 and binary:6/3 (and binary:3 through the level port) in
  every Vref mode;
- each broken variant (BUG_SAR_OFF_BY_ONE, BUG_DROP_MASK, and on multi-level rows
  BUG_DROP_MASK and BUG_A_ROWS) fails, and the failure message names the cycle and the
  column or output;
- the plain-Verilog flow: a $readmemh testbench (rtl/tb_hex.v) replays an ``imcsim vectors``
  folder (binary rows, and a multi-level one with row_level.hex) and dumps CSV and VCD, which
  ``imcsim check`` passes (and fails for a broken RTL).

Needs ``iverilog`` on PATH and the ``cocotb`` package (CI installs both).
"""
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RTL = ROOT / "rtl"

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None,
                                reason="Icarus Verilog (iverilog) is not on PATH; "
                                       "install it with `apt-get install iverilog`")

# the output stage rounds (shift 2..11 > 0) and saturates (12-bit y_int of a 20-bit acc)
PARAMS = {"ROWS": 64, "COLS": 8, "KW": 4, "ADC_BITS": 5, "SCALE_FRAC": 8, "ACC_BITS": 20,
          "SATURATE": 1, "OUT_FRAC": 4, "OUT_BITS": 12, "OUT_ROUND": 2}
# multi-level rows: a 3-bit row DAC (input_bits = 3; radix4:8/2 has D = 4, binary:6/3 D = 7)
ML_PARAMS = dict(PARAMS, LEVEL_BITS=3)


def _runner():
    pytest.importorskip("cocotb", reason="cocotb is not installed (pip install cocotb)")
    from cocotb_tools.runner import get_runner
    if str(HERE) not in sys.path:                   # the sim's Python imports tb_colgroup
        sys.path.insert(0, str(HERE))
    return get_runner("icarus")


def run_sim(build_dir: Path, defines=None, testcase=None, n_random=6, params=None):
    """Build and run the cocotb testbench; returns (failures {test: message}, tests, log)."""
    params = PARAMS if params is None else params
    runner = _runner()
    runner.build(sources=[RTL / "imc_colgroup.v"], hdl_toplevel="imc_colgroup",
                 parameters=params, defines=defines or {}, build_dir=build_dir, always=True,
                 timescale=("1ns", "1ps"))
    xml = build_dir / "results.xml"
    log = build_dir / "sim.log"
    env = {"IMCSIM_RTL_PARAMS": json.dumps(params), "IMCSIM_RTL_RANDOM": str(n_random),
           "NUMBA_NUM_THREADS": "1",
           # rewrite asserts only in the testbench (the default "*.py" recompiles numpy etc.)
           "COCOTB_REWRITE_ASSERTION_FILES": "tb_*.py"}
    try:
        runner.test(hdl_toplevel="imc_colgroup", test_module="tb_colgroup",
                    build_dir=build_dir, test_dir=build_dir, results_xml=str(xml),
                    extra_env=env, testcase=testcase, log_file=log)
    except SystemExit:                              # failed tests under pytest
        pass
    return parse_results(xml), log.read_text() if log.exists() else ""


def parse_results(xml: Path):
    """{test name: failure message or None}."""
    if not xml.exists():
        raise AssertionError(f"no cocotb results at {xml} (the simulation did not run)")
    out = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        fail = case.find("failure")
        if fail is None:
            fail = case.find("error")
        out[case.get("name")] = (None if fail is None else
                                 (fail.get("message") or "") + (fail.text or ""))
    return out


def test_rtl_matches_golden_for_every_format_and_vref_mode(tmp_path):
    results, log = run_sim(tmp_path / "good")
    assert len(results) == 12, results              # 4 formats x 3 Vref modes
    failed = {k: v for k, v in results.items() if v is not None}
    assert not failed, f"RTL disagrees with the golden model: {failed}\n{log[-3000:]}"


def test_rtl_half_up_adc_law_matches_golden(tmp_path):
    """ADC_ROUND = 1: the half-up law (docs/hardware-model.md 4.5) in every format and Vref
    mode; the variable and fixed modes' lossy conversions put counts on both sides of the
    shifted thresholds."""
    results, log = run_sim(tmp_path / "half_up", params=dict(PARAMS, ADC_ROUND=1))
    assert len(results) == 12, results
    failed = {k: v for k, v in results.items() if v is not None}
    assert not failed, f"RTL disagrees with the golden model: {failed}\n{log[-3000:]}"


def test_rtl_multilevel_rows_match_golden(tmp_path):
    """LEVEL_BITS = 3: row levels from the golden records' row_level; counts, A (level_sum),
    F and the NMC in level units."""
    results, log = run_sim(tmp_path / "multilevel", params=ML_PARAMS)
    assert sorted(results) == sorted(
        f"colgroup_matches_golden/x_format={f}/vref_mode={m}"
        for f in ("radix4_8_2", "binary_6_3", "binary_3")
        for m in ("fixed", "variable", "dual")), results
    failed = {k: v for k, v in results.items() if v is not None}
    assert not failed, f"RTL disagrees with the golden model: {failed}\n{log[-3000:]}"
    for label in ("all_rows_at_top_level", "level_sum=31", "level_sum=32"):
        assert label in log, log[-3000:]


@pytest.mark.parametrize("bug, testcase, pattern", [
    # masked (level-0) rows counted at level 1: the column counts go wrong
    ("BUG_DROP_MASK", "colgroup_matches_golden/x_format=binary_6_3/vref_mode=dual",
     r"column \d+: column_count expected -?\d+, got -?\d+"),
    # the NMC subtracts the driven-row count instead of A (fixed F: only the NMC is wrong)
    ("BUG_A_ROWS", "colgroup_matches_golden/x_format=radix4_8_2/vref_mode=fixed",
     r"output \d+: nmc_acc expected -?\d+, got -?\d+"),
])
def test_broken_multilevel_rtl_is_caught(tmp_path, bug, testcase, pattern):
    results, log = run_sim(tmp_path / bug.lower(), defines={bug: 1}, testcase=testcase,
                           n_random=2, params=ML_PARAMS)
    assert results, log[-2000:]
    failed = {k: v for k, v in results.items() if v is not None}
    assert failed, f"{bug}: the scoreboard did not catch the broken RTL\n{log[-2000:]}"
    text = " ".join(failed.values()) + log
    assert re.search(r"cycle \d+ \(vector \d+, plane \d+\) " + pattern, text), text[-3000:]


@pytest.mark.parametrize("bug, testcase", [
    ("BUG_SAR_OFF_BY_ONE", "colgroup_matches_golden/x_format=radix4_8/vref_mode=variable"),
    ("BUG_DROP_MASK", "colgroup_matches_golden/x_format=radix4_8/vref_mode=dual"),
])
def test_broken_rtl_is_caught_with_cycle_and_column(tmp_path, bug, testcase):
    results, log = run_sim(tmp_path / bug.lower(), defines={bug: 1}, testcase=testcase,
                           n_random=2)
    assert results, log[-2000:]
    failed = {k: v for k, v in results.items() if v is not None}
    assert failed, f"{bug}: the scoreboard did not catch the broken RTL\n{log[-2000:]}"
    text = " ".join(failed.values()) + log
    assert re.search(r"cycle \d+ \(vector \d+, plane \d+\) column \d+: \w+ expected -?\d+, "
                     r"got -?\d+", text), text[-3000:]


def test_broken_output_stage_is_caught_on_y_int(tmp_path):
    """y_int is the RTL's own register: a wrong output stage fails with the output named."""
    results, log = run_sim(tmp_path / "bug_out_floor", defines={"BUG_OUT_FLOOR": 1},
                           testcase="colgroup_matches_golden/x_format=binary_6/vref_mode=variable",
                           n_random=4)
    assert results, log[-2000:]
    failed = {k: v for k, v in results.items() if v is not None}
    assert failed, f"BUG_OUT_FLOOR: the scoreboard did not catch the broken RTL\n{log[-2000:]}"
    text = " ".join(failed.values()) + log
    assert re.search(r"output \d+: y_int expected -?\d+, got -?\d+", text), text[-3000:]
    assert "nmc_acc expected" not in text, text[-3000:]   # only the output stage is wrong


# --- the plain Verilog flow: $readmemh vectors -> RTL -> CSV / VCD -> imcsim check ---------
def _vectors(tmp_path, x_format, vref, adc_rounding=None):
    """A vectors folder of the RTL's geometry; ``adc_rounding`` None: the preset's law."""
    from click.testing import CliRunner

    from imcsim.cli.verify import vectors_command
    out = tmp_path / "vec"
    args = [str(out), "--rows", str(PARAMS["ROWS"]), "--columns", str(PARAMS["COLS"]),
            "--adc-bits", str(PARAMS["ADC_BITS"]), "--scale-frac-bits",
            str(PARAMS["SCALE_FRAC"]), "--acc-bits", str(PARAMS["ACC_BITS"]),
            "--w-format", f"binary:{PARAMS['KW']}", "--x-format", x_format,
            "--out-frac-bits", str(PARAMS["OUT_FRAC"]), "--out-bits", str(PARAMS["OUT_BITS"]),
            "--out-rounding", ["floor", "half_up", "half_even"][PARAMS["OUT_ROUND"]],
            "--shape", "60", str(PARAMS["COLS"] // PARAMS["KW"]), "--vref", vref,
            "--random", "4", "--seed", "3"]
    if adc_rounding is not None:
        args += ["--adc-rounding", adc_rounding]
    res = CliRunner().invoke(vectors_command, args)
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "manifest.json").read_text())


def den_bits(man) -> int:
    """log2(den_x * den_w) of a vectors folder's formats (the RTL's den_bits input)."""
    from imcsim import parse_format
    return sum(int(parse_format(man[k]).denominator).bit_length() - 1
               for k in ("x_format", "w_format"))


def _vectors_multilevel(tmp_path, x_format, vref):
    """A multi-level vectors folder (input_bits = LEVEL_BITS), written with the Python API."""
    from imcsim import MacroConfig, NmcConfig, Rounding, VrefConfig, VrefMode, parse_format
    from imcsim.verify.vectors import make_operands, write_vectors
    xf, wf = parse_format(x_format), parse_format(f"binary:{PARAMS['KW']}")
    L = (1 << PARAMS["ADC_BITS"]) - 1
    cfg = MacroConfig(
        rows=PARAMS["ROWS"], columns=PARAMS["COLS"], adc_bits=PARAMS["ADC_BITS"],
        input_bits=ML_PARAMS["LEVEL_BITS"],
        vref=VrefConfig(mode=VrefMode(vref), full_scale=4 * L, dual_low=L,
                        dual_high=PARAMS["ROWS"] * xf.top_level),
        nmc=NmcConfig(scale_frac_bits=PARAMS["SCALE_FRAC"], acc_bits=PARAMS["ACC_BITS"],
                      out_frac_bits=PARAMS["OUT_FRAC"], out_bits=PARAMS["OUT_BITS"],
                      out_rounding=[Rounding.FLOOR, Rounding.HALF_UP,
                                    Rounding.HALF_EVEN][PARAMS["OUT_ROUND"]]))
    ops = make_operands(cfg, xf, wf, inner=60, outputs=PARAMS["COLS"] // PARAMS["KW"],
                        n_random=4, seed=3, density=0.8)
    out = tmp_path / "vec"
    man = write_vectors(out, cfg, ops.W, ops.X, xf, wf, labels=ops.labels)
    return out, man


def run_hex_tb(tmp_path, vec, man, defines=(), params=None):
    g = man["geometry"]
    vref = man["vref"]
    files = {x["file"]: x for x in man["files"]}
    ctrl = {f["name"]: f for f in files["ctrl.hex"]["fields"]}
    params = dict(PARAMS if params is None else params, N_CYCLES=man["n_cycles"],
                  VREF_MODE={"fixed": 0, "variable": 1, "dual": 2}[vref["mode"]],
                  VREF_FIXED=vref["full_scale"], VREF_LOW=vref["dual_low"],
                  VREF_HIGH=vref["dual_high"], XSH_LSB=ctrl["x_shift"]["lsb"],
                  XSH_W=ctrl["x_shift"]["width"], CLEAR_LSB=ctrl["clear"]["lsb"],
                  DEN_BITS=den_bits(man),
                  # the ADC law the vectors were written under (the presets: half_up)
                  ADC_ROUND={"floor": 0, "half_up": 1}[man["config"]["adc_rounding"]])
    assert g["rows_R"] <= PARAMS["ROWS"] and g["columns_C"] == PARAMS["COLS"]
    if params.get("LEVEL_BITS", 1) > 1:            # row_level.hex packs LEVEL_BITS per row
        assert files["row_level.hex"]["fields"][0]["width"] == params["LEVEL_BITS"], files
    exe = tmp_path / "tb_hex.vvp"
    cmd = ["iverilog", "-g2005", "-o", str(exe), "-s", "tb_hex"]
    cmd += [f"-Ptb_hex.{k}={v}" for k, v in params.items()]
    cmd += [f"-D{d}" for d in defines]
    cmd += [str(RTL / "tb_hex.v"), str(RTL / "imc_colgroup.v")]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    run = subprocess.run(["vvp", "-n", str(exe), f"+VECTORS={vec}/", f"+OUT={tmp_path}/"],
                         check=False, capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "rtl.csv").is_file(), run.stdout
    return tmp_path / "rtl.csv", tmp_path / "rtl.vcd"


VCD_MAP = ["valid=done", "code=code", "column_count=count", "sar_decision=sar_dec",
           "active_rows=active_rows", "full_scale=full_scale", "nmc_acc=acc", "y_int=y_int"]


@pytest.mark.parametrize("x_format, vref, law", [("binary:6", "fixed", None),
                                                 ("binary:6", "fixed", "floor"),
                                                 ("radix4:8", "dual", None)])
def test_hex_vectors_replayed_on_rtl_pass_imcsim_check(tmp_path, x_format, vref, law):
    """The RTL takes the vectors' ADC law (ADC_ROUND from the manifest's config): the presets'
    half_up, and floor named on the command line (fixed F = 64 rows > L: lossy, the laws
    differ)."""
    from click.testing import CliRunner

    from imcsim.cli.verify import check_command
    vec, man = _vectors(tmp_path, x_format, vref, law)
    assert man["config"]["adc_rounding"] == (law or "half_up")
    csv_path, vcd_path = run_hex_tb(tmp_path, vec, man)
    runner = CliRunner()
    res = runner.invoke(check_command, [str(vec), str(csv_path)])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "code " in res.output and "nmc_acc" in res.output
    assert "y_int" in res.output
    args = [str(vec), str(vcd_path)] + [a for m in VCD_MAP for a in ("--map", m)]
    res = runner.invoke(check_command, args)
    assert res.exit_code == 0, res.output
    assert f"code {man['n_cycles'] * PARAMS['COLS']}" in res.output


def test_hex_flow_catches_broken_rtl(tmp_path):
    from click.testing import CliRunner

    from imcsim.cli.verify import check_command
    vec, man = _vectors(tmp_path, "radix4:8", "variable")
    csv_path, _ = run_hex_tb(tmp_path, vec, man, defines=("BUG_SAR_OFF_BY_ONE",))
    res = CliRunner().invoke(check_command, [str(vec), str(csv_path)])
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output and "summary by column" in res.output


def test_hex_multilevel_vectors_replayed_on_rtl_pass_imcsim_check(tmp_path):
    """tb_hex with LEVEL_BITS = 3 replays row_level.hex of a radix4:8/2 vectors folder."""
    from click.testing import CliRunner

    from imcsim.cli.verify import check_command
    vec, man = _vectors_multilevel(tmp_path, "radix4:8/2", "dual")
    assert (vec / "row_level.hex").is_file() and (vec / "level_sum.hex").is_file()
    csv_path, _ = run_hex_tb(tmp_path, vec, man, params=ML_PARAMS)
    res = CliRunner().invoke(check_command, [str(vec), str(csv_path)])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "nmc_acc" in res.output and "y_int" in res.output
