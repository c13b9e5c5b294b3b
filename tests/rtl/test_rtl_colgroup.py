"""RTL check: rtl/imc_colgroup.v under Icarus Verilog + cocotb, imcsim as the reference model.

- the correct RTL passes every input format (binary:6, binary:3 with zero masking, radix4:8,
  radix4:4 with padding rows) in every Vref mode, on corner-case and random vectors;
- each broken variant (BUG_SAR_OFF_BY_ONE, BUG_DROP_MASK) fails, and the failure message
  names the cycle and the column;
- the plain-Verilog flow: a $readmemh testbench (rtl/tb_hex.v) replays an ``imcsim vectors``
  folder and dumps CSV and VCD, which ``imcsim check`` passes (and fails for a broken RTL).

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


def _runner():
    pytest.importorskip("cocotb", reason="cocotb is not installed (pip install cocotb)")
    from cocotb_tools.runner import get_runner
    if str(HERE) not in sys.path:                   # the sim's Python imports tb_colgroup
        sys.path.insert(0, str(HERE))
    return get_runner("icarus")


def run_sim(build_dir: Path, defines=None, testcase=None, n_random=6):
    """Build and run the cocotb testbench; returns (failures {test: message}, tests, log)."""
    runner = _runner()
    runner.build(sources=[RTL / "imc_colgroup.v"], hdl_toplevel="imc_colgroup",
                 parameters=PARAMS, defines=defines or {}, build_dir=build_dir, always=True,
                 timescale=("1ns", "1ps"))
    xml = build_dir / "results.xml"
    log = build_dir / "sim.log"
    env = {"IMCSIM_RTL_PARAMS": json.dumps(PARAMS), "IMCSIM_RTL_RANDOM": str(n_random),
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
def _vectors(tmp_path, x_format, vref):
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
    res = CliRunner().invoke(vectors_command, args)
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "manifest.json").read_text())


def den_bits(man) -> int:
    """log2(den_x * den_w) of a vectors folder's formats (the RTL's den_bits input)."""
    from imcsim import parse_format
    return sum(int(parse_format(man[k]).denominator).bit_length() - 1
               for k in ("x_format", "w_format"))


def run_hex_tb(tmp_path, vec, man, defines=()):
    g = man["geometry"]
    vref = man["vref"]
    ctrl = {f["name"]: f for f in next(x for x in man["files"]
                                       if x["file"] == "ctrl.hex")["fields"]}
    params = dict(PARAMS, N_CYCLES=man["n_cycles"],
                  VREF_MODE={"fixed": 0, "variable": 1, "dual": 2}[vref["mode"]],
                  VREF_FIXED=vref["full_scale"], VREF_LOW=vref["dual_low"],
                  VREF_HIGH=vref["dual_high"], XSH_LSB=ctrl["x_shift"]["lsb"],
                  XSH_W=ctrl["x_shift"]["width"], CLEAR_LSB=ctrl["clear"]["lsb"],
                  DEN_BITS=den_bits(man))
    assert g["rows_R"] <= PARAMS["ROWS"] and g["columns_C"] == PARAMS["COLS"]
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


@pytest.mark.parametrize("x_format, vref", [("binary:6", "fixed"), ("radix4:8", "dual")])
def test_hex_vectors_replayed_on_rtl_pass_imcsim_check(tmp_path, x_format, vref):
    from click.testing import CliRunner

    from imcsim.cli.verify import check_command
    vec, man = _vectors(tmp_path, x_format, vref)
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
