"""The real implementation (fast Numba path and cycle-level traced path) against the
independent plain-Python reference twin (tests/reference_model.py), bit for bit."""
import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imcsim import (
    BinaryFormat,
    Macro,
    MacroConfig,
    NmcConfig,
    NonIdealityConfig,
    Overflow,
    Radix4Format,
    Rounding,
    VrefConfig,
    VrefMode,
)

import reference_model as ref  # noqa: E402

EVENTS = ref.EVENT_NAMES


# ---------------------------------------------------------------- helpers
def code_offsets_of(p):
    """The NMC's per-column code-offset registers of a case, or None: from ``offsets_seed``,
    register widths 2..12 bits, 0..8 fraction bits, values anywhere in the register
    (its extremes included)."""
    seed = p.get("offsets_seed")
    if seed is None:
        return None
    rng = np.random.default_rng(seed)
    bits = int(rng.choice([2, 3, 8, 12]))
    frac = int(rng.choice([0, 4, 8]))
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    style = seed % 3          # 0: anywhere, 1: the register's extremes, 2: small
    draw = (lambda: rng.integers(lo, hi + 1, size=p["columns"])) if style == 0 else (
        (lambda: rng.choice([lo, hi], size=p["columns"])) if style == 1 else
        (lambda: rng.integers(max(lo, -2), min(hi, 2) + 1, size=p["columns"])))
    return {"code_offset_bits": bits, "code_offset_frac_bits": frac,
            "code_offsets_lossless": tuple(int(v) for v in draw()),
            "code_offsets_lossy": tuple(int(v) for v in draw()),
            "code_offsets_zero": tuple(int(v) for v in draw())}


def make_config(p):
    return MacroConfig(
        rows=p["rows"], columns=p["columns"], adc_bits=p["adc_bits"], vdd=0.8,
        adc_rounding=Rounding(p.get("adc_rounding", "floor")),
        mask_zero_inputs=p["mask_zero_inputs"],
        skip_masked_cycles=p.get("skip_masked_cycles", False),
        vref=VrefConfig(mode=VrefMode(p["vref_mode"]), full_scale=p["full_scale"],
                        dual_low=p["dual_low"], dual_high=p["dual_high"],
                        per_column=p.get("dual_per_column", False) and p["vref_mode"] == "dual"),
        nmc=NmcConfig(scale_frac_bits=p["scale_frac_bits"], acc_bits=p["acc_bits"],
                      overflow=Overflow(p["overflow"]),
                      half_lsb_reconstruction=p["half_lsb_reconstruction"],
                      out_frac_bits=p["out_frac_bits"], out_bits=p["out_bits"],
                      out_rounding=Rounding(p["out_rounding"]),
                      out_scale_frac_bits=p.get("out_scale_frac_bits", 16),
                      **(code_offsets_of(p) or {})),
        nonideal=NonIdealityConfig(**p["nonideal"]),
        input_bits=p.get("input_bits", 1),
        chip_seed=p["chip_seed"])


def twin_fx(nonideal):
    """The doc's sigma conversions, computed independently of imcsim."""
    return {
        "sigma_cell_fx": ref.sigma_to_fx(nonideal.get("cell_cap_sigma", 0.0)),
        "parasitic_fx": ref.sigma_to_fx(nonideal.get("parasitic_ratio", 0.0)),
        "sigma_cdac_fx": ref.sigma_to_fx(nonideal.get("cdac_unit_sigma", 0.0)),
        "sigma_offset_fx": ref.sigma_to_fx(nonideal.get("comparator_offset_sigma", 0.0)),
        "sigma_cmp_fx": ref.sigma_to_fx(nonideal.get("comparator_noise_sigma", 0.0)),
        "sigma_sample_fx": ref.sigma_to_fx(nonideal.get("sampling_noise_sigma", 0.0)),
        "sigma_dac_fx": ref.sigma_to_fx(nonideal.get("dac_unit_sigma", 0.0)),
    }


def run_twin(X, W, p, out_scale=None, out_offset=None, extra=None):
    kw = {k: p[k] for k in ("rows", "columns", "adc_bits", "vref_mode", "full_scale", "dual_low",
                            "dual_high", "mask_zero_inputs", "scale_frac_bits", "acc_bits",
                            "overflow", "half_lsb_reconstruction", "out_frac_bits", "out_bits",
                            "out_rounding", "chip_seed", "seed")}
    kw.update(twin_fx(p["nonideal"]))
    kw.pop("sigma_dac_fx")
    kw.update(extra or {})           # multi-level rows (tests/test_multilevel.py)
    kw["out_scale_frac_bits"] = p.get("out_scale_frac_bits", 16)
    kw["adc_rounding"] = p.get("adc_rounding", "floor")
    kw["skip_masked_cycles"] = p.get("skip_masked_cycles", False)
    kw["dual_per_column"] = p.get("dual_per_column", False)
    kw.update(code_offsets_of(p) or {})
    kw.pop("code_offset_bits", None)
    return ref.reference_mvm(X.tolist(), W.tolist(), p["x_kind"], p["Kx"], p["Kw"], **kw,
                             out_scale=None if out_scale is None else list(out_scale),
                             out_offset=None if out_offset is None else list(out_offset))


def x_format(p):
    return Radix4Format(p["Kx"]) if p["x_kind"] == "radix4" else BinaryFormat(p["Kx"])


def assert_same(res, twin, label):
    y_int = np.asarray(res.y_int)
    exp_y = np.array(twin["y_int"], dtype=np.int64)
    assert y_int.shape == exp_y.shape, label
    assert np.array_equal(y_int, exp_y), f"{label}: y_int\n{y_int}\nexpected\n{exp_y}"
    assert np.array_equal(np.asarray(res.y, dtype=np.float64),
                          np.array(twin["y"], dtype=np.float64)), f"{label}: y"
    codes = np.asarray(res.codes)
    exp_codes = np.array(twin["codes"], dtype=np.int64)
    assert codes.shape == exp_codes.shape, f"{label}: codes shape {codes.shape} vs {exp_codes.shape}"
    if not np.array_equal(codes, exp_codes):
        idx = np.argwhere(codes != exp_codes)
        first = tuple(idx[0])
        raise AssertionError(f"{label}: {len(idx)} codes differ; first at (t,b,p,n,q)={first}: "
                             f"got {codes[first]}, expected {exp_codes[first]}")
    assert np.array_equal(np.asarray(res.full_scale), np.array(twin["full_scale"])), \
        f"{label}: full_scale {np.asarray(res.full_scale)} vs {twin['full_scale']}"
    assert np.array_equal(np.asarray(res.active_rows), np.array(twin["active_rows"])), \
        f"{label}: active_rows"
    tot = res.events.total()
    got = {k: int(tot[k]) for k in EVENTS}
    exp = {k: twin[k] for k in EVENTS}
    assert got == exp, f"{label}: events {got} vs expected {exp}"


def check_case(X, W, p, out_scale=None, out_offset=None):
    cfg = make_config(p)
    assert cfg.nonideal.fixed_point() == twin_fx(p["nonideal"])
    macro = Macro(cfg)
    kwargs = dict(x_format=x_format(p), w_format=BinaryFormat(p["Kw"]), seed=p["seed"],
                  out_scale=out_scale, out_offset=out_offset)
    if p.get("vref_override"):
        # build the macro with some other Vref and override it for the call
        other = VrefConfig(mode=VrefMode.FIXED, full_scale=p["rows"], dual_low=p["rows"],
                           dual_high=p["rows"])
        macro = Macro(cfg.with_vref(other))
        kwargs["vref"] = cfg.vref
    twin = run_twin(X, W, p, out_scale, out_offset)
    res = macro.mvm(X, W, return_codes=True, **kwargs)
    assert_same(res, twin, "mvm (fast)")
    res2 = macro.mvm_traced(X, W, **kwargs)
    assert_same(res2, twin, "mvm_traced")
    res3 = macro.mvm_traced(X, W, sink=PerCycleOnly(), **kwargs)
    assert_same(res3, twin, "mvm_traced (per-cycle stepper)")
    return twin


class PerCycleOnly:
    """A sink without ``add_block``, which records nothing: the cycle-level path then runs
    the per-cycle stepper (``CycleStepper``, the golden model's) instead of the compiled
    blocks (``run_cycle_blocks``), so both are checked against the twin."""

    def selects(self, rec, n_planes):
        return False

    def add(self, rec):
        raise AssertionError("selects nothing")

    def close(self, result):
        pass

    def abort(self):
        pass


def fit_registers(p, top_level=1):
    """Keep the drawn register widths inside what a 64-bit model can hold (the implementation
    rejects wider ones with ValueError; the twin has no such limit)."""
    pw_x = 4 ** (p["Kx"] - 2) if p["x_kind"] == "radix4" else 2 ** (p["Kx"] - 2)
    pw_w = 2 ** (p["Kw"] - 2)
    # NMC code offsets move a code by up to `extra` codes (of L) past its range
    offsets, L = code_offsets_of(p), 2 ** p["adc_bits"] - 1
    extra = 0 if offsets is None else -(-max(map(abs, offsets["code_offsets_lossless"]
                                                 + offsets["code_offsets_lossy"]
                                                 + offsets["code_offsets_zero"]))
                                        // 2 ** offsets["code_offset_frac_bits"]) + 1
    max_term = ((2 * p["rows"] * top_level * (L + extra) // L + 2) << p["scale_frac_bits"]) \
        * pw_x * pw_w
    while max_term + (1 << (p["acc_bits"] - 1)) >= (1 << 63):
        p["acc_bits"] -= 1
    den_bits = p["Kx"] - 2 if p["x_kind"] == "radix4" else (0 if p.get("x_digit_bits") else 1)
    acc_frac = p["scale_frac_bits"] + den_bits + 1
    p["out_frac_bits"] = min(p["out_frac_bits"], acc_frac + 63 - p["acc_bits"])
    return p


# ---------------------------------------------------------------- random cases
RADIX4_FRACTION = 0.4


def draw_operands(rng, p, B, M, N):
    Kx, Kw, style = p["Kx"], p["Kw"], p["style"]
    wl = 2 ** (Kw - 2)
    zero_frac = {"uniform": 0.1, "sparse": 0.7, "extreme": 0.0}[style]
    if style == "extreme":
        W = np.full((M, N), wl, dtype=np.int64)
        W[:, ::2] = -wl
    else:
        W = rng.integers(-wl, wl + 1, size=(M, N)).astype(np.int64)
    if p["x_kind"] == "binary":
        xl = 2 ** (Kx - 2)
        if style == "extreme":
            X = np.full((B, M), xl, dtype=np.int64)
            X[1::2] = -xl
        else:
            X = rng.integers(-xl, xl + 1, size=(B, M)).astype(np.int64)
        X[rng.random((B, M)) < zero_frac] = 0
    else:
        half = (Kx - 2) // 2
        if style == "extreme":
            X = np.full((B, M), 4.0 ** half)
            X[1::2] *= -1
        else:
            e = rng.integers(-half, half + 1, size=(B, M))
            X = rng.choice([-1.0, 1.0], size=(B, M)) * 4.0 ** e
        X[rng.random((B, M)) < zero_frac] = 0.0
    return X, W


SIGMAS = dict(cell_cap_sigma=[0.0, 0.01, 0.03], parasitic_ratio=[0.0, 0.05, 0.3],
              cdac_unit_sigma=[0.0, 0.01, 0.05], comparator_offset_sigma=[0.0, 0.3, 1.5],
              comparator_noise_sigma=[0.0, 0.2, 1.0], sampling_noise_sigma=[0.0, 0.25, 0.8])


@st.composite
def mvm_cases(draw):
    adc_bits = draw(st.integers(3, 8))
    L = 2**adc_bits - 1
    rows = draw(st.integers(L, L + 24))
    Kw = draw(st.sampled_from([3, 4, 5, 6, 7, 8, 16]))
    G = draw(st.integers(1, 3))
    columns = Kw * G + draw(st.integers(0, Kw - 1))
    T = draw(st.integers(1, 3))
    # the last row tile holds between 1 and `rows` rows; keep 8-bit cases short
    last = draw(st.integers(1, rows if adc_bits < 8 else 40))
    M = (T - 1) * rows + last
    U = draw(st.integers(1, 3))
    N = (U - 1) * G + draw(st.integers(1, G))
    B = draw(st.integers(1, 4))
    x_kind = draw(st.sampled_from(["binary", "binary", "radix4"]))
    Kx = draw(st.integers(3, 8)) if x_kind == "binary" else draw(st.sampled_from([4, 6, 8]))
    fs = sorted(draw(st.lists(st.integers(L, rows), min_size=3, max_size=3)))
    small_acc = draw(st.booleans())
    nonideal = {}
    if draw(st.integers(0, 9)) < 6:
        for name, choices in SIGMAS.items():
            nonideal[name] = draw(st.sampled_from(choices))
    p = dict(
        rows=rows, columns=columns, adc_bits=adc_bits, Kw=Kw, Kx=Kx, x_kind=x_kind,
        mask_zero_inputs=draw(st.booleans()),
        skip_masked_cycles=draw(st.booleans()),
        dual_per_column=draw(st.booleans()),
        vref_mode=draw(st.sampled_from(["fixed", "variable", "dual"])),
        full_scale=draw(st.sampled_from([fs[0], fs[1], fs[2], L, rows])),
        # equal dual levels too: every conversion is then at the (one) high level
        dual_low=fs[0], dual_high=draw(st.sampled_from([fs[2], fs[2], fs[0]])),
        scale_frac_bits=draw(st.sampled_from([0, 8, 12, 16, 16, 20, 24])),
        acc_bits=draw(st.integers(8, 26)) if small_acc else draw(st.sampled_from([32, 48, 62])),
        overflow=draw(st.sampled_from(["saturate", "wrap"])),
        half_lsb_reconstruction=draw(st.booleans()),
        offsets_seed=draw(st.sampled_from([None, None, 0, 1, 2, 3, 4, 5])),
        adc_rounding=draw(st.sampled_from(["floor", "floor", "half_up"])),
        out_frac_bits=draw(st.integers(0, 24)),
        out_bits=draw(st.sampled_from([48, 48, 8, 12, 16, 24, 62])),
        out_rounding=draw(st.sampled_from(["floor", "half_up", "half_even"])),
        nonideal=nonideal,
        chip_seed=draw(st.sampled_from([0, 1, 12345, 2**63 - 1])),
        seed=draw(st.sampled_from([0, 7, 2**40 + 3, 2**63 - 1])),
        style=draw(st.sampled_from(["uniform", "uniform", "sparse", "extreme"])),
        vref_override=draw(st.integers(0, 4)) == 0,
        data_seed=draw(st.integers(0, 2**32 - 1)),
    )
    fit_registers(p)
    rng = np.random.default_rng(p["data_seed"])
    X, W = draw_operands(rng, p, B, M, N)
    return X, W, p


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mvm_cases())
def test_random_mvm_matches_twin(case):
    X, W, p = case
    check_case(X, W, p)


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mvm_cases(), st.sampled_from([0.01, 0.03, 0.2]), st.integers(1, 3))
def test_cell_charges_by_products_and_by_rows_match_twin(case, cell_sigma, chunks):
    """With cell mismatch the fast path's charges come from exact float64 matrix products
    (``imcsim.charges``, dense planes) or from the row-by-row sum: both routes are forced on
    every case (its other non-idealities kept, cell mismatch added), the products also in
    several vector chunks."""
    import imcsim.charges as charges
    X, W, p = case
    p = dict(p, nonideal=dict(p["nonideal"], cell_cap_sigma=cell_sigma))
    macro = Macro(make_config(p))
    kwargs = dict(x_format=x_format(p), w_format=BinaryFormat(p["Kw"]), seed=p["seed"])
    twin = run_twin(X, W, p)
    for route in ("gemm", "gather"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(charges, "GEMM_CHARGE_FRACTION", 0.0 if route == "gemm" else 2.0)
            rows = min(p["rows"], X.shape[1])
            mp.setattr(charges, "CHARGE_CHUNK_BYTES",
                       max(1, 8 * rows * 64 * -(-X.shape[0] // chunks)))
            res = macro.mvm(X, W, return_codes=True, **kwargs)
        assert_same(res, twin, f"mvm (fast, charges by {route})")


def test_cell_charges_refuse_inexact_tables_and_chunk_the_batch():
    from imcsim.charges import FLOAT64_EXACT, charge_chunks, exact_in_float64
    table = np.zeros((1, 2, 4, 3), dtype=np.int64)
    table[0, 1, 0, 0] = FLOAT64_EXACT // 4 - 1
    assert exact_in_float64(table)
    table[0, 1, 0, 0] = FLOAT64_EXACT // 4
    assert not exact_in_float64(table)
    assert charge_chunks(10, 2, 64) == [(0, 10)]
    import imcsim.charges as charges
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(charges, "CHARGE_CHUNK_BYTES", 8 * 2 * 64 * 4)
        assert charges.charge_chunks(10, 2, 64) == [(0, 4), (4, 8), (8, 10)]


def test_nmc_bound_near_int64_limit_matches_twin():
    """Regression: scale_frac_bits 24 with 16-bit weights overflowed the fast path's
    no-saturation bound (int64), so it skipped the 48-bit accumulator's saturation."""
    p = dict(rows=2304, columns=256, adc_bits=8, Kw=16, Kx=8, x_kind="radix4",
             mask_zero_inputs=False, vref_mode="fixed", full_scale=2304, dual_low=255,
             dual_high=2304, scale_frac_bits=24, acc_bits=48, overflow="saturate",
             half_lsb_reconstruction=False, adc_rounding="floor", out_frac_bits=12, out_bits=48,
             out_rounding="half_even", nonideal={}, chip_seed=0, seed=0)
    fit_registers(p)
    check_case(np.array([[64.0]]), np.array([[-16384]]), p)


def scenario(seed):
    """A whole random case from one integer, with a hand-controlled distribution (hypothesis's
    own draws are shrinkable but cluster; this spreads the configs evenly)."""
    rng = np.random.default_rng(seed)
    ch = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    adc_bits = int(rng.integers(3, 9))
    L = 2**adc_bits - 1
    extra = [0, 1, int(rng.integers(2, 40))]
    if adc_bits <= 6:   # tall tiles: many more active rows than codes (lossy, clipping, high Vref)
        extra += [int(rng.integers(L, 2 * L + 3))] * 2
    rows = L + ch(extra)
    Kw = int(rng.integers(3, 9))
    G = int(rng.integers(1, 4))
    columns = Kw * G + int(rng.integers(0, Kw))
    T = int(rng.integers(1, 4))
    last = int(rng.integers(1, rows + 1)) if adc_bits < 8 else int(rng.integers(1, 60))
    M = (T - 1) * rows + last
    U = int(rng.integers(1, 4))
    N = (U - 1) * G + int(rng.integers(1, G + 1))
    B = int(rng.integers(1, 5))
    x_kind = "radix4" if rng.random() < RADIX4_FRACTION else "binary"
    Kx = int(rng.integers(3, 9)) if x_kind == "binary" else ch([4, 6, 8])
    fs = sorted(int(v) for v in rng.integers(L, rows + 1, size=3))
    nonideal = {}
    if rng.random() < 0.6:
        for name, choices in SIGMAS.items():
            nonideal[name] = ch(choices[1:]) if rng.random() < 0.7 else 0.0
    low = ch([fs[0], L])
    p = dict(
        rows=rows, columns=columns, adc_bits=adc_bits, Kw=Kw, Kx=Kx, x_kind=x_kind,
        mask_zero_inputs=bool(rng.random() < 0.4),
        skip_masked_cycles=bool(rng.random() < 0.3),
        dual_per_column=bool(rng.random() < 0.5),
        vref_mode=ch(["fixed", "variable", "dual"]),
        full_scale=ch([fs[0], fs[1], L, L, rows]),
        dual_low=low, dual_high=ch([fs[2], rows, low]),           # low: equal levels
        scale_frac_bits=ch([16, 16, 16, 0, 8, 12, 20, 24]),
        acc_bits=int(rng.integers(8, 27)) if rng.random() < 0.3 else ch([48, 62, 32]),
        overflow=ch(["saturate", "wrap"]),
        half_lsb_reconstruction=bool(rng.random() < 0.3),
        offsets_seed=int(rng.integers(2**32)) if rng.random() < 0.3 else None,
        adc_rounding=ch(["floor", "floor", "half_up"]),
        out_frac_bits=int(rng.integers(0, 30)),
        out_bits=int(rng.integers(8, 30)) if rng.random() < 0.3 else 48,
        out_rounding=ch(["floor", "half_up", "half_even"]),
        nonideal=nonideal,
        chip_seed=ch([0, 1, int(rng.integers(2**62)), 2**63 - 1]),
        seed=ch([0, 7, int(rng.integers(2**63)), 2**63 - 1]),
        style=ch(["uniform", "uniform", "sparse", "extreme"]),
        vref_override=bool(rng.random() < 0.2),
    )
    fit_registers(p)
    X, W = draw_operands(rng, p, B, M, N)
    return X, W, p


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_random_scenarios_match_twin(seed):
    X, W, p = scenario(seed)
    check_case(X, W, p)


# ---------------------------------------------------------------- targeted cases
BASE = dict(rows=64, columns=16, adc_bits=4, Kw=5, Kx=6, x_kind="binary",
            mask_zero_inputs=False, vref_mode="variable", full_scale=64, dual_low=15,
            dual_high=64, scale_frac_bits=16, acc_bits=48, overflow="saturate",
            half_lsb_reconstruction=False, out_frac_bits=12, out_bits=48,
            out_rounding="half_even", nonideal={}, chip_seed=0, seed=0, style="uniform")
ALL_ON = dict(cell_cap_sigma=0.02, parasitic_ratio=0.1, cdac_unit_sigma=0.02,
              comparator_offset_sigma=0.7, comparator_noise_sigma=0.5, sampling_noise_sigma=0.4)


@pytest.mark.parametrize("mode", ["fixed", "variable", "dual"])
@pytest.mark.parametrize("nonideal", [False, True])
@pytest.mark.parametrize("x_kind", ["binary", "radix4"])
def test_targeted_40x12(mode, nonideal, x_kind):
    p = dict(BASE, vref_mode=mode, x_kind=x_kind, Kx=6 if x_kind == "binary" else 8,
             nonideal=ALL_ON if nonideal else {}, chip_seed=3, seed=11)
    rng = np.random.default_rng(5)
    X, W = draw_operands(rng, p, 3, 40, 12)
    check_case(X, W, p)


@pytest.mark.parametrize("style", ["uniform", "extreme"])
@pytest.mark.parametrize("nonideal", [False, True])
def test_clipping_and_high_vref(style, nonideal):
    # 40 active rows against F = L = 15 (fixed) clips; dual with dual_low = 15 picks the high level
    for mode in ("fixed", "dual"):
        p = dict(BASE, vref_mode=mode, full_scale=15, dual_low=15, dual_high=48, style=style,
                 nonideal=ALL_ON if nonideal else {}, chip_seed=1, seed=2)
        rng = np.random.default_rng(8)
        X, W = draw_operands(rng, p, 2, 40, 6)
        twin = check_case(X, W, p)
        if mode == "fixed":
            assert twin["clipped_conversions"] > 0
        else:
            assert twin["high_vref_conversions"] == twin["adc_conversions"]


@pytest.mark.parametrize("x_kind", ["radix4", "binary"])
@pytest.mark.parametrize("nonideal", [False, True])
def test_equal_dual_levels_per_column_count_every_conversion_high(x_kind, nonideal):
    """dual_low == dual_high with the per-column choice: the counters of every path agree
    (the ideal fast path once skipped the all-masked cycles of sparse radix-4 planes), and
    every conversion counts at the high level, read literally."""
    p = dict(BASE, vref_mode="dual", dual_per_column=True, dual_low=40, dual_high=40,
             full_scale=40, x_kind=x_kind, Kx=8 if x_kind == "radix4" else 6, style="sparse",
             nonideal=ALL_ON if nonideal else {}, chip_seed=3, seed=4)
    rng = np.random.default_rng(11)
    X, W = draw_operands(rng, p, 3, 50, 6)
    twin = check_case(X, W, p)
    assert twin["high_vref_conversions"] == twin["adc_conversions"]


@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
def test_accumulator_overflow(overflow):
    # all-positive terms overflow a 16-bit accumulator
    p = dict(BASE, acc_bits=16, overflow=overflow, rows=15, columns=5, out_frac_bits=18,
             full_scale=15, dual_high=15)
    X = np.full((2, 4), 16, dtype=np.int64)
    X[1] = -16
    W = np.full((4, 1), 8, dtype=np.int64)
    twin = check_case(X, W, p)
    if overflow == "saturate":
        assert twin["y_int"] == [[2**15 - 1], [-2**15]]   # shift 0: y_int is the accumulator
    else:
        assert twin["y_int"] == [[0], [0]]   # +/-512 * 2**18 = +/-2**27 wraps to 0 in 16 bits


@pytest.mark.parametrize("rounding", ["floor", "half_up", "half_even"])
def test_out_scale_and_offset(rounding):
    p = dict(BASE, nonideal=ALL_ON, chip_seed=4, seed=5, out_rounding=rounding, out_bits=24,
             out_frac_bits=6, out_scale_frac_bits=10)
    rng = np.random.default_rng(21)
    X, W = draw_operands(rng, p, 3, 40, 12)
    scale = rng.integers(-3000, 3000, size=12).astype(np.int64)
    offset = rng.integers(-50000, 50000, size=12).astype(np.int64)
    check_case(X, W, p, out_scale=scale, out_offset=offset)
    check_case(X, W, p, out_scale=scale)
    check_case(X, W, p, out_offset=offset)


def test_out_scale_offset_single_saturation():
    # Sec. 4.6: y_int = sat(round(y_int * out_scale >> out_scale_frac_bits) + out_offset):
    # ONE saturation after the offset.  Y = 512 -> y_int = 1024 (out_frac_bits 1, 12-bit out);
    # x3 = 3072 (beyond 2047, but not saturated yet), - 2000 -> 1072.
    p = dict(BASE, rows=15, columns=5, full_scale=15, dual_high=15, out_bits=12,
             out_frac_bits=1, out_scale_frac_bits=16)
    X = np.full((1, 4), 16, dtype=np.int64)
    W = np.full((4, 1), 8, dtype=np.int64)
    twin = check_case(X, W, p, out_scale=np.array([3 << 16]), out_offset=np.array([-2000]))
    assert twin["y_int"] == [[1072]]


def test_tallest_array_with_nonidealities():
    # rows = 16384 (MAX_ROWS, the largest the config accepts), every row charged, with cell
    # mismatch and parasitic: rows * Q_ch << 20 must stay inside int64 (Sec. 4.4 is exact).
    from imcsim.config import MAX_ROWS
    p = dict(BASE, rows=MAX_ROWS, columns=3, adc_bits=8, Kx=3, Kw=3, full_scale=MAX_ROWS,
             dual_low=255, dual_high=MAX_ROWS,
             nonideal=dict(parasitic_ratio=0.05, cell_cap_sigma=0.2))
    X = np.full((1, MAX_ROWS), 2, dtype=np.int64)
    W = np.full((MAX_ROWS, 1), 2, dtype=np.int64)
    twin = check_case(X, W, p)
    # with large cell mismatch the code sits near floor(255 / 1.05) = 242
    assert np.all(np.abs(np.array(twin["codes"]) - 242) <= 2)


def test_rows_beyond_int64_safe_limit_are_rejected():
    from imcsim.config import MAX_ROWS
    with pytest.raises(ValueError, match="rows"):
        MacroConfig(rows=MAX_ROWS + 1)


def test_twelve_bit_adc_with_nonidealities():
    p = dict(BASE, rows=4100, columns=7, adc_bits=12, Kx=5, Kw=3, vref_mode="dual",
             full_scale=4095, dual_low=4095, dual_high=4100, nonideal=ALL_ON, chip_seed=5, seed=6)
    rng = np.random.default_rng(3)
    X, W = draw_operands(rng, p, 2, 30, 3)
    check_case(X, W, p)


# ---------------------------------------------------------------- formats
@pytest.mark.parametrize("K", [3, 5, 6, 8])
def test_binary_format_encoding_matches_twin(K):
    lim = 2 ** (K - 2)
    xs = np.arange(-lim, lim + 1)
    bits, active = BinaryFormat(K).encode(xs)
    assert np.array_equal(bits, np.array([ref.encode_binary(int(x), K) for x in xs]))
    assert active.all()


@pytest.mark.parametrize("K", [4, 6, 8])
def test_radix4_format_encoding_matches_twin(K):
    half = (K - 2) // 2
    xs = np.array([0.0] + [s * 4.0 ** e for e in range(-half, half + 1) for s in (1, -1)])
    bits, active = Radix4Format(K).encode(xs)
    for i, x in enumerate(xs):
        sign, mask = ref.encode_radix4(float(x), K)
        assert list(bits[i]) == [sign] * (K - 1)
        assert [int(a) for a in active[i]] == mask


# ---------------------------------------------------------------- lossless training MVMs
PAPER = dict(rows=2304, columns=256, adc_bits=8, mask_zero_inputs=False, vref_mode="variable",
             full_scale=2304, dual_low=255, dual_high=2304, scale_frac_bits=16, acc_bits=48,
             overflow="saturate", half_lsb_reconstruction=False, out_frac_bits=12, out_bits=48,
             out_rounding="half_even", nonideal={}, chip_seed=0, seed=0)


def _radix4(rng, shape, K=8, zero_frac=0.2):
    half = (K - 2) // 2
    v = rng.choice([-1.0, 1.0], size=shape) * 4.0 ** rng.integers(-half, half + 1, size=shape)
    v[rng.random(shape) < zero_frac] = 0.0
    return v


@pytest.mark.parametrize("which", ["forward", "backward", "update"])
def test_lossless_training_mvms_paper_geometry(which):
    rng = np.random.default_rng({"forward": 1, "backward": 2, "update": 3}[which])
    B, M, N = 3, 200, 20
    if which == "forward":      # 6-bit activations (PACT, >= 0) x 5-bit weights
        p = dict(PAPER, x_kind="binary", Kx=6, Kw=5)
        X = rng.integers(0, 17, size=(B, M))
        W = rng.integers(-8, 9, size=(M, N))
    elif which == "backward":   # radix-4 gradients x stored 5-bit weights (transposed)
        p = dict(PAPER, x_kind="radix4", Kx=8, Kw=5)
        X = _radix4(rng, (B, M))
        W = rng.integers(-8, 9, size=(M, N))
    else:                       # radix-4 gradients streamed over stored 6-bit activations
        p = dict(PAPER, x_kind="radix4", Kx=8, Kw=6)
        X = _radix4(rng, (B, M))
        W = rng.integers(-16, 17, size=(M, N))
    W = W.astype(np.int64)
    den = 64 if p["x_kind"] == "radix4" else 1
    exact_units = (np.round(np.asarray(X) * den).astype(np.int64)) @ W   # Y * den, exact
    expected_y_int = exact_units * (2 ** 12 // den)
    twin = check_case(X, W, p)
    assert np.array_equal(np.array(twin["y_int"]), expected_y_int)
    assert max(np.max(twin["active_rows"]), 0) <= 255
    assert twin["clipped_conversions"] == 0
    res = Macro(make_config(p)).mvm(X, W, x_format=x_format(p), w_format=BinaryFormat(p["Kw"]))
    assert np.array_equal(np.asarray(res.y_int), expected_y_int)
    assert np.array_equal(np.asarray(res.y), np.asarray(X, dtype=np.float64) @ W)


# ---------------------------------------------------------------- determinism
def _det_setup():
    p = dict(BASE, nonideal=ALL_ON, chip_seed=9, seed=1234, vref_mode="dual", dual_low=15,
             dual_high=64)
    rng = np.random.default_rng(17)
    X, W = draw_operands(rng, p, 11, 90, 7)   # 2 row tiles, 3 column tiles
    macro = Macro(make_config(p))
    kw = dict(x_format=BinaryFormat(6), w_format=BinaryFormat(5), seed=1234, return_codes=True)
    return X, W, macro, kw, p


def _has_vector_offset():
    return "vector_offset" in inspect.signature(Macro.mvm).parameters


def test_determinism_chunking():
    if not _has_vector_offset():
        pytest.skip("Macro.mvm has no vector_offset argument; chunking covered by thread test")
    X, W, macro, kw, p = _det_setup()
    full = macro.mvm(X, W, **kw)
    parts = []
    for lo, hi in ((0, 1), (1, 5), (5, 11)):
        parts.append(macro.mvm(X[lo:hi], W, vector_offset=lo, **kw))
    assert np.array_equal(np.concatenate([r.y_int for r in parts], axis=0), full.y_int)
    assert np.array_equal(np.concatenate([np.asarray(r.codes) for r in parts], axis=1),
                          np.asarray(full.codes))
    # and the twin agrees with the whole batch
    assert np.array_equal(np.asarray(full.y_int), np.array(run_twin(X, W, p)["y_int"]))


def test_determinism_threads_and_repeat():
    import numba
    X, W, macro, kw, p = _det_setup()
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = macro.mvm(X, W, **kw)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = macro.mvm(X, W, **kw)
    finally:
        numba.set_num_threads(old)
    again = macro.mvm(X, W, **kw)
    for r in (two, again):
        assert np.array_equal(r.y_int, one.y_int)
        assert np.array_equal(np.asarray(r.codes), np.asarray(one.codes))
        assert r.events.total() == one.events.total()
    # a batch's vector b sees the same noise whatever else is in the batch (key = b)
    head = macro.mvm(X[:4], W, **kw)
    assert np.array_equal(head.y_int, one.y_int[:4])
    # a different seed changes the dynamic noise
    other = macro.mvm(X, W, **dict(kw, seed=4321))
    assert not np.array_equal(np.asarray(other.codes), np.asarray(one.codes))
