"""cocotb testbench of rtl/imc_colgroup.v with imcsim's GoldenModel as the scoreboard.

Run by tests/rtl/test_rtl_colgroup.py (cocotb_tools.runner, Icarus Verilog).  The RTL's
parameters arrive in the environment variable IMCSIM_RTL_PARAMS (JSON); each test builds the
matching MacroConfig, draws corner-case and random vectors (imcsim.verify.vectors.make_operands),
drives every array cycle into the RTL and compares every output with the golden record:
column counts, SAR decisions, codes, active rows, full scale, NMC accumulators, and the
RTL's own output register y_int (its output stage: shift, rounding, saturation) on the cycles
that end a group.
"""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from imcsim import MacroConfig, NmcConfig, Overflow, Rounding, VrefConfig, VrefMode, parse_format
from imcsim.verify.golden import GoldenModel, assert_cycle
from imcsim.verify.vectors import make_operands, unpack_words

PARAMS = json.loads(os.environ.get("IMCSIM_RTL_PARAMS", "{}"))
ROWS = PARAMS.get("ROWS", 64)
COLS = PARAMS.get("COLS", 8)
KW = PARAMS.get("KW", 4)
ADC_BITS = PARAMS.get("ADC_BITS", 5)
SCALE_FRAC = PARAMS.get("SCALE_FRAC", 8)
ACC_BITS = PARAMS.get("ACC_BITS", 20)
SATURATE = PARAMS.get("SATURATE", 1)
OUT_FRAC = PARAMS.get("OUT_FRAC", 12)               # defaults: the RTL's
OUT_BITS = PARAMS.get("OUT_BITS", 48)
OUT_ROUND = PARAMS.get("OUT_ROUND", 2)
ROUNDING = {0: Rounding.FLOOR, 1: Rounding.HALF_UP, 2: Rounding.HALF_EVEN}[OUT_ROUND]
G = COLS // KW
L = (1 << ADC_BITS) - 1
CNT_BITS = max(1, ROWS.bit_length())              # $clog2(ROWS + 1)
VREF_CODES = {"fixed": 0, "variable": 1, "dual": 2}
FIXED_FS = (L + ROWS) // 2 + 1                     # a fixed F strictly inside (L, ROWS)
N_RANDOM = int(os.environ.get("IMCSIM_RTL_RANDOM", "6"))

# per input format (name "binary_6" = spec "binary:6"): inner dimension (rows past it are
# padding, masked) and zero masking
CASES = {
    "binary_6": {"inner": ROWS, "mask_zero": False},
    "binary_3": {"inner": ROWS - ROWS // 4, "mask_zero": True},
    "radix4_8": {"inner": ROWS, "mask_zero": False},
    "radix4_4": {"inner": ROWS // 2 + 3, "mask_zero": False},
}


def macro_config(vref_mode: str, mask_zero: bool) -> MacroConfig:
    return MacroConfig(
        rows=ROWS, columns=COLS, adc_bits=ADC_BITS, mask_zero_inputs=mask_zero,
        vref=VrefConfig(mode=VrefMode(vref_mode), full_scale=FIXED_FS, dual_low=L,
                        dual_high=ROWS),
        nmc=NmcConfig(scale_frac_bits=SCALE_FRAC, acc_bits=ACC_BITS,
                      overflow=Overflow.SATURATE if SATURATE else Overflow.WRAP,
                      out_frac_bits=OUT_FRAC, out_bits=OUT_BITS, out_rounding=ROUNDING))


def as_int(bits) -> int:
    return sum(int(b) << i for i, b in enumerate(bits))


async def reset_and_load(dut, golden: GoldenModel, vref_mode: str):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    cfg = golden.config
    dut.rst.value = 1
    dut.start.value = 0
    dut.w_we.value = 0
    dut.w_addr.value = 0
    dut.w_data.value = 0
    dut.row_in.value = 0
    dut.row_mask.value = 0
    dut.x_shift.value = 0
    dut.clear.value = 0
    dut.den_bits.value = golden.acc_frac_bits - SCALE_FRAC   # log2(den_x * den_w)
    dut.vref_mode.value = VREF_CODES[vref_mode]
    dut.vref_fixed.value = cfg.vref.full_scale
    dut.vref_low.value = cfg.vref.dual_low
    dut.vref_high.value = cfg.vref.dual_high
    await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    cols = golden.stored_columns(0, 0)               # (R, C); rows past R store 0
    for r in range(ROWS):
        dut.w_we.value = 1
        dut.w_addr.value = r
        dut.w_data.value = as_int(cols[r]) if r < cols.shape[0] else 0
        await FallingEdge(dut.clk)
    dut.w_we.value = 0


async def run_cycle(dut, rec) -> dict:
    """Drive one array cycle and return what the RTL produced, in scoreboard form."""
    dut.row_in.value = as_int(rec["row_input"])
    dut.row_mask.value = as_int(rec["row_mask"])
    dut.x_shift.value = int(rec["x_plane_weight"]).bit_length() - 1
    dut.clear.value = int(rec["clear"])
    dut.start.value = 1
    await FallingEdge(dut.clk)
    dut.start.value = 0
    await RisingEdge(dut.done)
    await ReadOnly()
    actual = {
        "active_rows": dut.active_rows.value.to_unsigned(),
        "full_scale": dut.full_scale.value.to_unsigned(),
        "column_count": unpack_words([dut.count.value.to_unsigned()], COLS, CNT_BITS)[0],
        "code": unpack_words([dut.code.value.to_unsigned()], COLS, ADC_BITS)[0],
        "sar_decision": unpack_words([dut.sar_dec.value.to_unsigned()], COLS, ADC_BITS)[0],
        "nmc_acc": unpack_words([dut.acc.value.to_unsigned()], G, ACC_BITS, signed=True)[0],
        # the RTL's output register (compared on group_done cycles only)
        "y_int": unpack_words([dut.y_int.value.to_unsigned()], G, OUT_BITS, signed=True)[0],
    }
    await FallingEdge(dut.clk)
    return actual


@cocotb.test()
@cocotb.parametrize(x_format=list(CASES), vref_mode=["fixed", "variable", "dual"])
async def colgroup_matches_golden(dut, x_format, vref_mode):
    """Corner-case and random vectors of one input format and Vref mode."""
    case = CASES[x_format]
    cfg = macro_config(vref_mode, case["mask_zero"])
    xf, wf = parse_format(x_format.replace("_", ":")), parse_format(f"binary:{KW}")
    seed = sum(map(ord, x_format + vref_mode))     # deterministic across runs
    ops = make_operands(cfg, xf, wf, inner=case["inner"], outputs=G, n_random=N_RANDOM,
                        seed=seed)
    golden = GoldenModel(cfg, ops.W, wf, xf)
    await reset_and_load(dut, golden, vref_mode)
    golden.load_vectors(ops.X)
    n = 0
    for rec in golden.iter_cycles():
        actual = await run_cycle(dut, rec)
        try:
            assert_cycle(rec, actual)
        except AssertionError as exc:
            label = ops.labels[rec["vector"]]
            raise AssertionError(f"{exc} [{x_format}, vref {vref_mode}, vector label "
                                 f"{label}]") from None
        n += 1
    dut._log.info("%s, vref %s: %d array cycles of %d vectors match the golden model",
                  x_format, vref_mode, n, len(ops.labels))

