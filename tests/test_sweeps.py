"""Exactness sweeps at the paper's geometry.

Marked slow: CI runs a bounded sample (IMCSIM_SWEEP_EXAMPLES, default 4 per test); set
IMCSIM_SWEEP_EXAMPLES=200 for a full sweep.
"""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imcsim import BinaryFormat, Macro, MacroConfig, NonIdealityConfig, Radix4Format, VrefConfig, VrefMode

EXAMPLES = int(os.environ.get("IMCSIM_SWEEP_EXAMPLES", "4"))
SWEEP = settings(max_examples=EXAMPLES, deadline=None, derandomize=True)


def operands(rng, kind, B, M, N, density):
    if kind == "binary":
        X = np.where(rng.random((B, M)) < density, rng.integers(-16, 17, (B, M)), 0)
        return X, BinaryFormat(6)
    sign = np.where(rng.random((B, M)) < 0.5, -1.0, 1.0)
    X = np.where(rng.random((B, M)) < density, sign * 4.0 ** rng.integers(-3, 4, (B, M)), 0.0)
    return X, Radix4Format(8)


@pytest.mark.slow
@SWEEP
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["binary", "radix4"]),
       mode=st.sampled_from(list(VrefMode)), density=st.sampled_from([0.05, 0.3, 1.0]),
       M=st.integers(100, 5000), N=st.integers(1, 60), B=st.integers(1, 3))
def test_paper_geometry_traced_equals_fast_with_every_nonideality(seed, kind, mode, density, M, N, B):
    rng = np.random.default_rng(seed)
    X, xf = operands(rng, kind, B, M, N, density)
    cfg = MacroConfig(mask_zero_inputs=True, chip_seed=seed % 97,
                      vref=VrefConfig(mode=mode, full_scale=int(rng.integers(255, 2305))),
                      nonideal=NonIdealityConfig(cell_cap_sigma=0.005, parasitic_ratio=0.03,
                                                 cdac_unit_sigma=0.01, comparator_offset_sigma=0.3,
                                                 comparator_noise_sigma=0.2,
                                                 sampling_noise_sigma=0.1))
    m = Macro(cfg)
    W = rng.integers(-8, 9, (M, N))
    fast = m.mvm(X, W, xf, BinaryFormat(5), seed=seed, return_codes=True)
    cyc = m.mvm_traced(X, W, xf, BinaryFormat(5), seed=seed)
    assert np.array_equal(fast.codes, cyc.codes)
    assert np.array_equal(fast.y_int, cyc.y_int)
    assert fast.events.total() == cyc.events.total()


@pytest.mark.slow
@SWEEP
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["binary", "radix4"]),
       M=st.integers(1, 9000), N=st.integers(1, 120), B=st.integers(1, 16))
def test_paper_geometry_lossless_equals_exact_product(seed, kind, M, N, B):
    rng = np.random.default_rng(seed)
    # density low enough that no cycle exceeds 255 active rows
    density = min(1.0, 150.0 / min(M, 2304))
    X, xf = operands(rng, kind, B, M, N, density)
    W = rng.integers(-8, 9, (M, N))
    res = Macro(MacroConfig(mask_zero_inputs=True)).mvm(X, W, xf, BinaryFormat(5))
    assert res.active_rows.max() <= 255          # 8 sigma above the mean of 150 rows
    assert np.array_equal(res.y, X @ W)
