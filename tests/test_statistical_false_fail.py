"""The statistical check's false-FAIL rate over many chips that follow the model (issue 23).

A chip is drawn (its own sigmas and chip_seed), measured once through the emulator's fast path,
calibrated, and measured again: ``statistical_check(calibration, fresh measurement)`` must PASS
but for a fraction of at most its ``alpha`` (family-wise, 1e-3 by default).  Before the fix, 6 of
the first 20 such chips of this geometry FAILed (3 of the 8 the fast test draws): the fitted
noise was biased low (a free held value per repeated row subset, an incidental parameter) and
the check took the calibrated model as exact, so a few % of noise error in nearly
deterministic conversions read as a 40 % spread error.

Real defects still FAIL: a column whose offset or gain moved, more noise than calibrated.
Small geometry (64 x 6, 5-bit ADC, a reduced stimulus) so that a chip costs a few seconds; the
larger sample is marked slow.
"""
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from imcsim import MacroConfig, NonIdealityConfig, VrefConfig
from imcsim.calibration import (
    calibrate,
    load_calibrated_model,
    make_calibration_stimulus,
    simulate_measurement,
    statistical_check,
)
from imcsim.config import Rounding

NOM = MacroConfig(rows=64, columns=6, adc_bits=5, adc_rounding=Rounding.HALF_UP,
                  vref=VrefConfig(full_scale=64, dual_low=31, dual_high=64))
DESIGN = {"repeat_vectors": 32, "repeat_counts": 8, "pattern_subsets": 16, "pattern_repeats": 2,
          "x_bits": 4}
ALPHA = 1e-3                                  # statistical_check's default


@pytest.fixture(scope="module")
def stimulus():
    return make_calibration_stimulus(NOM, **DESIGN)


def model_chip(i: int) -> MacroConfig:
    """Chip i: every non-ideality on, sigmas and chip_seed drawn from seed i (the noise from
    0.06 to 0.36 LSB at F = L, where most conversions of a repeated subset give one code)."""
    rng = np.random.default_rng(i)
    ni = NonIdealityConfig(cell_cap_sigma=float(rng.uniform(0.002, 0.01)),
                           parasitic_ratio=float(rng.uniform(0.0, 0.05)),
                           cdac_unit_sigma=float(rng.uniform(0.005, 0.02)),
                           comparator_offset_sigma=float(rng.uniform(0.1, 0.4)),
                           comparator_noise_sigma=float(rng.uniform(0.05, 0.3)),
                           sampling_noise_sigma=float(rng.uniform(0.02, 0.2)))
    return replace(NOM, nonideal=ni, chip_seed=int(rng.integers(1, 2 ** 40)))


def calibrate_and_check(stimulus, chip):
    """(calibration, report of a fresh measurement of the same chip)."""
    result = calibrate(simulate_measurement(stimulus, chip, seed=1))
    fresh = simulate_measurement(stimulus, chip, seed=2)
    return result, statistical_check(result, fresh, check_outputs=False)


def allowed_fails(n: int, alpha: float, p: float = 1e-4) -> int:
    """The most FAILs of n correct chips that a false-FAIL rate of alpha explains: more happen
    with probability below p."""
    k = 0
    while stats.binom.sf(k, n, alpha) >= p:
        k += 1
    return k


def false_fails(stimulus, seeds) -> list[str]:
    out = []
    for i in seeds:
        chip = model_chip(i)
        result, report = calibrate_and_check(stimulus, chip)
        ni = chip.nonideal
        total = float(np.hypot(ni.comparator_noise_sigma, ni.sampling_noise_sigma))
        # the root cause, fixed: the fitted noise is no longer far too low (a free held value
        # per repeated subset gave 40-56 % low on chips 3, 5, 17 of this geometry; now within
        # 12 %, of which 1-3 % is the Gaussian model of the emulator's Irwin-Hall noise)
        assert result.estimates["noise_total"].value == pytest.approx(total, rel=0.15), i
        if not report.passed:
            out.append(f"chip {i}: " + "; ".join(f"{c.block} column {c.column}: {c.failed}"
                                                 for c in report.cells if not c.passed))
    return out


def test_false_fail_rate_of_model_chips_is_within_alpha(stimulus):
    seeds = range(8)
    fails = false_fails(stimulus, seeds)
    assert len(fails) <= allowed_fails(len(seeds), ALPHA), fails


@pytest.mark.slow
def test_false_fail_rate_over_forty_model_chips(stimulus):
    seeds = range(100, 140)
    fails = false_fails(stimulus, seeds)
    assert len(fails) <= allowed_fails(len(seeds), ALPHA), fails


def test_allowed_fails_is_the_binomial_bound():
    assert allowed_fails(8, 1e-3) == 1 and allowed_fails(40, 1e-3) == 2
    assert allowed_fails(10, 0.3) >= 7        # the old rate would need 7 of 10 allowed


# --- real defects still FAIL -------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibrated(stimulus):
    chip = model_chip(3)
    result, report = calibrate_and_check(stimulus, chip)
    assert report.passed, report.format()
    return {"chip": chip, "result": result,
            "fresh": simulate_measurement(stimulus, chip, seed=5)}


@pytest.mark.parametrize("what", ["offset", "gain", "cdac"])
def test_a_moved_column_fails_in_that_column(calibrated, what):
    """The chip's column 2 moved away from its calibration: offset +0.3 rows (0.3 LSB at
    F = L), gain +1 %, its MSB capacitor +3 %."""
    model = calibrated["result"].model
    c = 2
    if what == "offset":
        changed = replace(model, offset=model.offset + np.eye(model.columns)[c] * 0.3)
    elif what == "gain":
        changed = replace(model, gain=model.gain * (1 + 0.01 * np.eye(model.columns)[c]))
    else:
        cdac = model.cdac.copy()
        cdac[c, -1] *= 1.03
        changed = replace(model, cdac=cdac)
    report = statistical_check(changed, calibrated["fresh"], check_outputs=False)
    assert not report.passed
    assert report.failed_columns() == [c], report.format()


@pytest.mark.parametrize("factor", [2.0])
def test_noise_unlike_the_calibration_fails(calibrated, stimulus, factor):
    """The same chip with its dynamic noise scaled (its tables unchanged).  This small
    stimulus knows the noise to 3 % (se of log sigma), so the check allows +-14 % (z_model
    3.66 plus the 2 % tolerance) and a 1.5 x noise is near its limit; the default stimulus
    knows it to 1 %."""
    chip = calibrated["chip"]
    ni = chip.nonideal
    noisy = replace(chip, nonideal=replace(
        ni, comparator_noise_sigma=ni.comparator_noise_sigma * factor,
        sampling_noise_sigma=ni.sampling_noise_sigma * factor))
    report = statistical_check(calibrated["result"], simulate_measurement(stimulus, noisy, seed=6),
                               check_outputs=False)
    assert not report.passed
    assert any("spread" in m for c in report.cells for m in c.failed)


def test_another_chip_and_the_ideal_model_fail(calibrated, stimulus):
    other = replace(calibrated["chip"], chip_seed=calibrated["chip"].chip_seed + 1)
    assert not statistical_check(calibrated["result"], simulate_measurement(stimulus, other, seed=7),
                                 check_outputs=False).passed
    assert not statistical_check(NOM, calibrated["fresh"], check_outputs=False).passed


def test_the_saved_calibration_keeps_its_uncertainty(calibrated, tmp_path):
    """chip.h5 carries the intervals the check moves the model within, so `imcsim check
    --statistical chip.json` decides as the in-memory calibration does."""
    result = calibrated["result"]
    paths = result.save(tmp_path / "chip.json", plots=False)
    loaded = load_calibrated_model(paths["preset"])
    mine, theirs = result.model.uncertainty, loaded.uncertainty
    assert theirs is not None
    assert theirs.sigma_total_ci == pytest.approx(mine.sigma_total_ci)
    assert theirs.sigma_cell_ci == pytest.approx(mine.sigma_cell_ci)
    a = statistical_check(result, calibrated["fresh"], check_outputs=False)
    b = statistical_check(paths["preset"], calibrated["fresh"], check_outputs=False)
    assert a.passed and b.passed
    np.testing.assert_allclose([c.spread_band for c in a.cells], [c.spread_band for c in b.cells])
    s = a.settings
    assert s["alpha_sampling"] + s["alpha_model"] == pytest.approx(ALPHA)
    # an exact model (an emulator config) spends all of alpha on the sampling error
    assert statistical_check(calibrated["chip"], calibrated["fresh"],
                             check_outputs=False).settings["alpha_model"] == 0
