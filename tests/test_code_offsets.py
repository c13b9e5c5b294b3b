"""The NMC's per-column code offsets and their calibration (imcsim.calibration.offsets).

Bit-for-bit agreement of every kernel with the twin over random registers is in
tests/test_equivalence.py (``offsets_seed``); this file checks the configuration's
boundary, the measurement and what the correction does.
"""
from dataclasses import replace

import numpy as np
import pytest

from imcsim import Macro
from imcsim.calibration.offsets import (
    calibrate_code_offsets,
    code_offset_registers,
    measure_code_offsets,
    with_code_offsets,
)
from imcsim.config import MacroConfig, NmcConfig, NonIdealityConfig, Rounding, VrefConfig, VrefMode
from imcsim.formats import BinaryFormat

SMALL = MacroConfig(rows=300, columns=40, adc_bits=6,
                    vref=VrefConfig(mode=VrefMode.VARIABLE, full_scale=300, dual_low=63,
                                    dual_high=300))
NOISY = NonIdealityConfig(comparator_noise_sigma=0.3, comparator_offset_sigma=0.3,
                          sampling_noise_sigma=0.1)


@pytest.mark.parametrize("kwargs, message", [
    ({"code_offsets_lossless": (1, 2), "code_offsets_lossy": (1,), "code_offsets_zero": (1,)},
     "one offset per column"),
    ({"code_offsets_lossless": (128,), "code_offsets_lossy": (0,), "code_offsets_zero": (0,)},
     "8-bit register"),
    ({"code_offsets_lossless": (1.5,), "code_offsets_lossy": (0,), "code_offsets_zero": (0,)},
     "must be an int"),
    ({"code_offset_frac_bits": 9}, "code_offset_frac_bits"),
    ({"code_offset_bits": 1}, "code_offset_bits"),
])
def test_bad_registers_are_refused_in_one_line(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        NmcConfig(**kwargs)


def test_registers_must_cover_every_column_and_round_trip_through_json():
    with pytest.raises(ValueError, match="one offset per column"):
        replace(SMALL, nmc=NmcConfig(code_offsets_lossless=(0,) * 3, code_offsets_lossy=(0,) * 3,
                                     code_offsets_zero=(0,) * 3))
    cfg = replace(SMALL, nmc=NmcConfig(code_offsets_lossless=tuple(range(-20, 20)),
                                       code_offsets_lossy=(5,) * 40, code_offsets_zero=(1,) * 40))
    back = MacroConfig.from_json(cfg.to_json())
    assert back == cfg and isinstance(back.nmc.code_offsets_lossless, tuple)


def test_register_rounding_and_saturation():
    assert code_offset_registers([-0.5, 0.47, -0.03, 0.03, 100.0, -100.0], 4, 8) == (
        -8, 8, 0, 0, 127, -128)


def test_half_code_offsets_equal_half_lsb_reconstruction_bit_for_bit():
    """-1/2 code in every register is the NMC's half-LSB reconstruction (two routes to one
    term, ``hw.nmc_term``), on the fast and the cycle-level path."""
    rng = np.random.default_rng(3)
    X = rng.integers(-64, 65, size=(5, 700)).astype(np.float64)
    W = rng.integers(-8, 9, size=(700, 7))
    for base in (SMALL, replace(SMALL, nonideal=NOISY)):
        half = replace(base, nmc=NmcConfig(half_lsb_reconstruction=True))
        regs = replace(base, nmc=NmcConfig(code_offsets_lossless=(-8,) * 40,
                                           code_offsets_lossy=(-8,) * 40,
                                           code_offsets_zero=(-8,) * 40))
        fmt = (BinaryFormat(8), BinaryFormat(5))
        a = Macro(half).mvm(X, W, *fmt, seed=4)
        b = Macro(regs).mvm(X, W, *fmt, seed=4)
        c = Macro(regs).mvm_traced(X, W, *fmt, seed=4)
        assert np.array_equal(a.y_int, b.y_int) and np.array_equal(b.y_int, c.y_int)
        assert not np.array_equal(a.y_int, Macro(base).mvm(X, W, *fmt, seed=4).y_int)


def test_measured_offsets_are_the_floor_laws_half_code_and_nothing_under_half_up():
    """The ideal chip: the floor law reads a spread count half a code low (F > L) and an
    integer count exactly (F = L); half_up is unbiased in both ranges."""
    floor = replace(SMALL, adc_rounding=Rounding.FLOOR)
    lossless, lossy, zero = measure_code_offsets(floor)
    assert np.allclose(lossless, 0.0) and np.allclose(lossy, -0.5, atol=0.02)
    assert np.allclose(zero, 0.0)
    lossless, lossy, zero = measure_code_offsets(replace(floor, adc_rounding=Rounding.HALF_UP))
    assert np.allclose(lossless, 0.0) and np.allclose(lossy, 0.0, atol=0.02)
    assert np.allclose(zero, 0.0)


def test_noise_makes_the_lossless_range_read_half_a_code_low_and_offsets_spread_columns():
    chip = replace(SMALL, adc_rounding=Rounding.FLOOR, nonideal=NOISY)
    lossless, lossy, zero = measure_code_offsets(chip)
    assert -0.75 < lossless.mean() < -0.25        # noise-free, it would read exactly (0)
    assert 0 <= zero.mean() < 0.25                # a count 0 cannot read below code 0
    # each column's comparator offset shows: a column whose comparator reads high errs less
    offsets = Macro(chip).comparator_offsets_in_levels(1)[:40]
    assert np.corrcoef(offsets, lossless)[0, 1] > 0.8
    regs = calibrate_code_offsets(chip).nmc
    assert len(regs.code_offsets_lossless) == 40
    assert regs == with_code_offsets(chip, lossless, lossy, zero).nmc


def test_calibrated_chip_removes_the_floor_laws_bias_from_the_products():
    """What the correction is for: the mean error of the MVM outputs against the exact
    product (the floor law's bias) shrinks on the calibrated chip."""
    chip = replace(SMALL, adc_rounding=Rounding.FLOOR, nonideal=NOISY)
    rng = np.random.default_rng(0)
    X = rng.integers(-64, 65, size=(64, 300)).astype(np.float64)
    W = rng.integers(-8, 9, size=(300, 8))
    fmt = (BinaryFormat(8), BinaryFormat(5))
    exact = X @ W
    bias = {}
    for name, cfg in (("floor", chip), ("calibrated", calibrate_code_offsets(chip))):
        y = Macro(cfg).mvm(X, W, *fmt, seed=1).y
        bias[name] = abs(np.mean(y - exact)) / np.sqrt(np.mean(exact ** 2))
    assert bias["calibrated"] < bias["floor"] / 5, bias


def test_the_statistical_checks_nmc_replay_applies_the_code_offsets():
    """check_nmc replays the NMC on measured codes: with code offsets (and half-LSB
    reconstruction) in the chip's config, the replay must apply them as the chip did."""
    from imcsim.calibration.measured import simulate_measurement
    from imcsim.calibration.statistical import check_nmc
    from imcsim.calibration.stimulus import make_calibration_stimulus
    chip = calibrate_code_offsets(replace(SMALL, nonideal=NOISY))
    chip = replace(chip, nmc=replace(chip.nmc, half_lsb_reconstruction=True))
    stimulus = make_calibration_stimulus(chip, ramp_vectors=1, max_ramp_counts=8,
                                         repeat_vectors=2, repeat_counts=2, pattern_subsets=2,
                                         pattern_repeats=1)
    report = check_nmc(simulate_measurement(stimulus, chip, seed=2))
    assert report and all(r["compared"] > 0 and r["mismatches"] == 0 for r in report.values())
