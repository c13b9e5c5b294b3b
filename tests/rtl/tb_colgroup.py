"""cocotb testbench of rtl/imc_colgroup.v with imcsim's GoldenModel as the scoreboard.

Run by tests/rtl/test_rtl_colgroup.py (cocotb_tools.runner, Icarus Verilog).  The RTL's
parameters arrive in the environment variable IMCSIM_RTL_PARAMS (JSON); each test builds the
matching MacroConfig, draws corner-case and random vectors (imcsim.verify.vectors.make_operands),
drives every array cycle into the RTL and compares every output with the golden record:
column counts, SAR decisions, codes, active rows, the level sum A, full scale, NMC
accumulators, and the RTL's own output register y_int (its output stage: shift, rounding,
saturation) on the cycles that end a group.

The set of cases follows the build's LEVEL_BITS: binary rows (LEVEL_BITS = 1, row_mask) run
the binary-row formats; a multi-level build (LEVEL_BITS > 1, row_level; docs/hardware-model.md
4.8) runs the multi-level formats radix4:8/2 and binary:6/3, with extra vectors that drive
every row at the top level and put the level sum A on the Vref thresholds, plus one
binary-row format through the level port.
"""
import json
import os

import cocotb
import numpy as np
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
LEVEL_BITS = PARAMS.get("LEVEL_BITS", 1)
ADC_ROUND = PARAMS.get("ADC_ROUND", 0)              # adc_rounding: 0 floor, 1 half_up
ADC_ROUNDING = {0: Rounding.FLOOR, 1: Rounding.HALF_UP}[ADC_ROUND]
ROUNDING = {0: Rounding.FLOOR, 1: Rounding.HALF_UP, 2: Rounding.HALF_EVEN}[OUT_ROUND]
G = COLS // KW
L = (1 << ADC_BITS) - 1
ROW_BITS = max(1, ROWS.bit_length())              # active_rows: $clog2(ROWS + 1)
CNT_BITS = max(1, (ROWS * ((1 << LEVEL_BITS) - 1)).bit_length())   # level units
VREF_CODES = {"fixed": 0, "variable": 1, "dual": 2}
N_RANDOM = int(os.environ.get("IMCSIM_RTL_RANDOM", "6"))

# per input format (name "binary_6" = spec "binary:6", "radix4_8_2" = "radix4:8/2"): inner
# dimension (rows past it are padding, masked), zero masking, random-vector density (None:
# make_operands' default)
BINARY_ROW_CASES = {
    "binary_6": {"inner": ROWS, "mask_zero": False},
    "binary_3": {"inner": ROWS - ROWS // 4, "mask_zero": True},
    "radix4_8": {"inner": ROWS, "mask_zero": False},
    "radix4_4": {"inner": ROWS // 2 + 3, "mask_zero": False},
}
MULTI_LEVEL_CASES = {
    "radix4_8_2": {"inner": ROWS, "mask_zero": False, "density": 0.8},
    "binary_6_3": {"inner": ROWS - 3, "mask_zero": False},
    "binary_3": BINARY_ROW_CASES["binary_3"],       # binary rows through the level port
}
CASES = BINARY_ROW_CASES if LEVEL_BITS == 1 else MULTI_LEVEL_CASES


def format_spec(name: str) -> str:
    kind, bits, *per = name.split("_")
    return f"{kind}:{bits}" + (f"/{per[0]}" if per else "")


def macro_config(vref_mode: str, mask_zero: bool, top_level: int = 1) -> MacroConfig:
    """Vref levels in level units (hardware-model.md 4.8): fixed F strictly inside
    (L, ROWS * D) -- for multi-level rows 4L, so counts that are multiples of 4 sit on code
    boundaries --, dual levels L and ROWS * D."""
    top = ROWS * top_level
    fixed = (L + ROWS) // 2 + 1 if top_level == 1 else 4 * L
    assert L < fixed < top
    return MacroConfig(
        rows=ROWS, columns=COLS, adc_bits=ADC_BITS, mask_zero_inputs=mask_zero,
        input_bits=LEVEL_BITS, adc_rounding=ADC_ROUNDING,
        vref=VrefConfig(mode=VrefMode(vref_mode), full_scale=fixed, dual_low=L,
                        dual_high=top),
        nmc=NmcConfig(scale_frac_bits=SCALE_FRAC, acc_bits=ACC_BITS,
                      overflow=Overflow.SATURATE if SATURATE else Overflow.WRAP,
                      out_frac_bits=OUT_FRAC, out_bits=OUT_BITS, out_rounding=ROUNDING))


def level_vectors(xf, inner: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Extra vectors for a multi-level format: every row at the top level D (A = inner * D,
    the largest reach), the level sum A = L and L + 1 in one cycle (the variable mode's
    F = max(A, L) and the dual mode's threshold dual_low = L), and dense random levels."""
    rng = np.random.default_rng(seed)
    if xf.kind == "radix4":
        e = np.arange(xf.exponent_planes)
        values = np.concatenate([[0.0], 4.0 ** e / xf.denominator, -(4.0 ** e) / xf.denominator])
    else:
        values = np.arange(-xf.max_value, xf.max_value + 1).astype(np.float64)
    sign, level = xf.encode_levels(values)             # (V, P) each

    def value_for(cycle: int, lvl: int, s: int) -> float:
        """The smallest value driving level lvl with sign s in cycle, level 0 elsewhere
        if possible."""
        ok = (level[:, cycle] == lvl) & (sign[:, cycle] == s)
        cand = values[ok]
        quiet = (level[ok].sum(axis=1) == lvl)
        cand = cand[quiet] if quiet.any() else cand
        return float(cand[np.argmin(np.abs(cand))])

    top = xf.top_level
    top_cycle = int(np.nonzero((level == top).any(axis=0))[0][0])
    signs = rng.integers(0, 2, inner)
    out, labels = [], []
    out.append([value_for(top_cycle, top, int(s)) for s in signs])
    labels.append(f"all_rows_at_top_level:cycle={top_cycle},A={inner * top}")
    avail = sorted({int(v) for v in level[:, 0] if v > 0}, reverse=True)
    for a in (L, L + 1):
        x, rest = np.zeros(inner), a
        rows = rng.permutation(inner)
        k = 0
        for lvl in avail:                              # greedy: 1 is always a level
            while rest >= lvl and k < inner:
                x[rows[k]] = value_for(0, lvl, int(rng.integers(0, 2)))
                rest -= lvl
                k += 1
        assert rest == 0, (a, avail)
        out.append(x)
        labels.append(f"level_sum={a}:cycle=0")
    for _ in range(2):
        out.append(rng.choice(values[values != 0], inner))
        labels.append("dense_levels")
    return np.array(out, dtype=np.float64), labels


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
    if LEVEL_BITS > 1:
        dut.row_level.value = 0
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


def pack_levels(levels) -> int:
    """Row r's level at bits [r*LEVEL_BITS, (r+1)*LEVEL_BITS)."""
    assert max((int(v) for v in levels), default=0) < (1 << LEVEL_BITS)
    return sum(int(v) << (r * LEVEL_BITS) for r, v in enumerate(levels))


async def run_cycle(dut, rec) -> dict:
    """Drive one array cycle; returns what the RTL produced, in scoreboard form."""
    dut.row_in.value = as_int(rec["row_input"])
    dut.row_mask.value = as_int(rec["row_mask"])
    if LEVEL_BITS > 1:
        dut.row_level.value = pack_levels(rec["row_level"])
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
        # A, the level sum (hardware-model.md 4.8; the active rows for binary rows)
        "level_sum": dut.level_sum.value.to_unsigned(),
    }
    await FallingEdge(dut.clk)
    return actual


@cocotb.test()
@cocotb.parametrize(x_format=list(CASES), vref_mode=["fixed", "variable", "dual"])
async def colgroup_matches_golden(dut, x_format, vref_mode):
    """Corner-case and random vectors of one input format and Vref mode."""
    case = CASES[x_format]
    xf, wf = parse_format(format_spec(x_format)), parse_format(f"binary:{KW}")
    cfg = macro_config(vref_mode, case["mask_zero"], xf.top_level)
    seed = sum(map(ord, x_format + vref_mode))     # deterministic across runs
    ops = make_operands(cfg, xf, wf, inner=case["inner"], outputs=G, n_random=N_RANDOM,
                        seed=seed, density=case.get("density"))
    X, labels = ops.X, list(ops.labels)
    if xf.top_level > 1:                           # multi-level rows: add level vectors
        extra, extra_labels = level_vectors(xf, case["inner"], seed)
        X, labels = np.concatenate([X, extra]), labels + extra_labels
    golden = GoldenModel(cfg, ops.W, wf, xf)
    await reset_and_load(dut, golden, vref_mode)
    golden.load_vectors(X)
    n = 0
    for rec in golden.iter_cycles():
        actual = await run_cycle(dut, rec)
        try:
            assert_cycle(rec, actual)
        except AssertionError as exc:
            label = labels[rec["vector"]]
            raise AssertionError(f"{exc} [{x_format}, vref {vref_mode}, vector label "
                                 f"{label}]") from None
        n += 1
    dut._log.info("%s, vref %s: %d array cycles of %d vectors match the golden model%s",
                  x_format, vref_mode, n, len(labels),
                  f" (level vectors: {', '.join(labels[len(ops.labels):])})"
                  if len(labels) > len(ops.labels) else "")

