"""SAR ADC: the ideal law for every count and full scale, SAR step consistency, DNL."""
import numpy as np
import pytest

from imcsim import Macro, MacroConfig, NonIdealityConfig
from imcsim.adc_transfer import sar_convert_columns, transfer_curve
from imcsim.kernels.hw import ANALOG_FRAC_BITS, CDAC_UNIT
from imcsim.kernels.targets import CPU

ROWS, L, NB = 2304, 255, 8
COUNTS = np.arange(ROWS + 1, dtype=np.int64)


def law(count, fs):
    return np.minimum(count * L // fs, L)


def ideal_cdac():
    return (CDAC_UNIT << np.arange(NB, dtype=np.int64))


@pytest.mark.parametrize("fs_block", [range(255, 700), range(700, 1500), range(1500, 2305)])
def test_stepped_sar_with_ideal_cdac_is_the_adc_law_for_every_count_and_full_scale(fs_block):
    cdac = np.repeat(ideal_cdac()[None, :], COUNTS.size, axis=0)
    total = cdac.sum(axis=1)
    offset = np.zeros(COUNTS.size, dtype=np.int64)
    v = COUNTS << ANALOG_FRAC_BITS
    for fs in fs_block:
        code, _, _ = sar_convert_columns(v, offset, cdac, total, fs)
        assert np.array_equal(code, law(COUNTS, fs)), fs


def test_fast_path_division_and_njit_sar_are_the_adc_law():
    w = ideal_cdac()
    for fs in (255, 256, 257, 300, 511, 1000, 1151, 2303, 2304):
        m, sh = CPU.division_magic(fs)
        fast = np.array([CPU.ideal_adc_code(n, m, sh, L, 0) for n in COUNTS])
        assert np.array_equal(fast, law(COUNTS, fs))
        trials, decisions = np.zeros(NB, np.int64), np.zeros(NB, np.uint8)
        stepped = np.array([CPU.sar_convert(int(n) << ANALOG_FRAC_BITS, 0, w, int(w.sum()), fs, NB,
                                            0, np.uint64(0), 0, trials, decisions, False)
                            for n in COUNTS])
        assert np.array_equal(stepped, law(COUNTS, fs))


@pytest.mark.parametrize("adc_bits", [2, 5, 8, 12])
def test_ideal_shortcut_equals_the_stepped_sar_under_the_half_up_law(adc_bits):
    """The half-up law's integer shortcut (hw.ideal_rounding_addend) against the SAR with its
    threshold shift, for every count of every full scale of a sample covering the extremes."""
    top = (1 << adc_bits) - 1
    w = CDAC_UNIT << np.arange(adc_bits, dtype=np.int64)
    trials, decisions = np.zeros(adc_bits, np.int64), np.zeros(adc_bits, np.uint8)
    scales = sorted({top, top + 1, top + 2, 2 * top - 1, 2 * top, 2 * top + 1, 1000, 2303, 2304,
                     4095, 9999, 16383, 16384} - {f for f in range(top)})
    for fs in scales:
        counts = np.unique(np.concatenate([np.arange(min(fs, 3000) + 2),
                                           np.linspace(0, 2 * fs, 400).astype(np.int64)]))
        m, sh = CPU.division_magic(fs)
        shift = CPU.adc_threshold_shift(fs, top, True)
        addend = CPU.ideal_rounding_addend(shift, top)
        fast = np.array([CPU.ideal_adc_code(int(n), m, sh, top, addend) for n in counts])
        stepped = np.array([CPU.sar_convert(int(n) << ANALOG_FRAC_BITS, 0, w, int(w.sum()), fs,
                                            adc_bits, 0, np.uint64(0), shift, trials, decisions,
                                            False) for n in counts])
        assert np.array_equal(fast, stepped), fs
        # a rounding quantizer: within one code of floor(count * L / F + 1/2) (they part only
        # at exact ties, where the shift's fixed-point rounding decides)
        rounded = np.minimum((2 * counts * top + fs) // (2 * fs), top)
        assert np.abs(fast - rounded).max() <= 1, fs


def test_division_magic_exact_over_whole_dividend_range():
    rng = np.random.default_rng(0)
    for d in list(range(1, 300)) + list(rng.integers(300, 1 << 16, 200)):
        m, sh = CPU.division_magic(int(d))
        a = np.concatenate([np.arange(5000), rng.integers(0, 1 << 28, 5000),
                            [(1 << 28) - 1]]).astype(np.int64)
        assert np.array_equal((a * m) >> sh, a // d), d


def test_sar_trace_is_a_successive_approximation():
    rng = np.random.default_rng(1)
    v = rng.integers(0, 2304 << ANALOG_FRAC_BITS, 500)
    cdac = np.repeat(ideal_cdac()[None, :], v.size, axis=0)
    code, trials, decisions = sar_convert_columns(v, np.zeros(v.size, np.int64), cdac,
                                                  cdac.sum(axis=1), 2304)
    for i in range(v.size):
        kept = 0
        for s in range(NB):
            bit = 1 << (NB - 1 - s)
            assert trials[i, s] == kept | bit          # MSB first, earlier decisions kept
            assert decisions[i, s] == bool(code[i] & bit)
            if decisions[i, s]:
                kept |= bit
        assert kept == code[i]


def test_cdac_mismatch_gives_measurable_dnl_and_ideal_does_not():
    steps = 32
    ideal = transfer_curve(Macro(MacroConfig()), 2304, column=5, steps_per_lsb=steps)
    assert ideal.summary()["max_abs_dnl_lsb"] <= 2.0 / steps
    assert ideal.missing_codes == []
    bad = Macro(MacroConfig(nonideal=NonIdealityConfig(cdac_unit_sigma=0.05), chip_seed=3))
    curve = transfer_curve(bad, 2304, column=5, steps_per_lsb=steps)
    assert curve.summary()["max_abs_dnl_lsb"] > 0.2
    # the MSB capacitor dominates: the mid-code transition carries the largest error
    assert np.nanargmax(np.abs(curve.dnl)) in range(100, 160)
    other = transfer_curve(bad, 2304, column=6, steps_per_lsb=steps)
    assert not np.allclose(np.nan_to_num(curve.dnl), np.nan_to_num(other.dnl))


def test_comparator_offset_shifts_the_thresholds():
    m = Macro(MacroConfig(nonideal=NonIdealityConfig(comparator_offset_sigma=4.0), chip_seed=2))
    off_rows = m.comparator_offsets[0] / (1 << ANALOG_FRAC_BITS)
    curve = transfer_curve(m, 255, column=0, steps_per_lsb=16)
    # at F = 255 one LSB is one row: every threshold moves by -offset
    assert np.nanmedian(curve.inl) == pytest.approx(-off_rows, abs=0.07)


@pytest.mark.parametrize("kw", [dict(full_scale=100), dict(full_scale=2305), dict(column=256),
                                dict(steps_per_lsb=2)])
def test_transfer_curve_rejects_bad_arguments(kw):
    args = dict(full_scale=2304, column=0, steps_per_lsb=8)
    args.update(kw)
    with pytest.raises(ValueError):
        transfer_curve(Macro(MacroConfig()), **args)


def test_half_up_rounding_is_floor_of_count_plus_half_lsb_and_stays_lossless():
    from imcsim import Rounding
    cfg = MacroConfig(adc_rounding=Rounding.HALF_UP)
    cdac = np.repeat(ideal_cdac()[None, :], COUNTS.size, axis=0)
    v = COUNTS << ANALOG_FRAC_BITS
    for fs in (255, 256, 300, 1151, 2304):
        h = int(cfg.adc_threshold_shift(fs))
        code, _, _ = sar_convert_columns(v, np.zeros(COUNTS.size, np.int64), cdac,
                                         cdac.sum(axis=1), fs, h)
        expected = np.minimum(((COUNTS << ANALOG_FRAC_BITS) + h) * L // (fs << ANALOG_FRAC_BITS), L)
        assert np.array_equal(code, expected)
        # within one LSB of the floor law, and nearest in the ideal value count * L / F
        assert np.all(np.abs(code - np.minimum(COUNTS * L / fs, L)) <= 0.5 + 1e-9)
    assert int(cfg.adc_threshold_shift(255)) == 1 << (ANALOG_FRAC_BITS - 1)   # half a row


def test_half_up_rounding_removes_the_bias_of_noise_at_v_prec():
    from imcsim import BinaryFormat, Rounding
    rng = np.random.default_rng(0)
    X = rng.integers(-16, 17, (16, 200))
    W = rng.integers(-8, 9, (200, 20))
    noisy = NonIdealityConfig(comparator_noise_sigma=0.2)
    errs = {}
    for rounding in (Rounding.FLOOR, Rounding.HALF_UP):
        m = Macro(MacroConfig(adc_rounding=rounding, nonideal=noisy))
        res = m.mvm(X, W, BinaryFormat(6), BinaryFormat(5), seed=1)
        errs[rounding] = res.y - X @ W
        ideal = Macro(MacroConfig(adc_rounding=rounding)).mvm(X, W, BinaryFormat(6),
                                                               BinaryFormat(5))
        assert np.array_equal(ideal.y, X @ W)        # 200 rows at F = 255: lossless either way
    # floor: a count sits on its threshold, so noise flips half the codes down
    assert np.abs(errs[Rounding.HALF_UP]).mean() < 0.2 * np.abs(errs[Rounding.FLOOR]).mean()
