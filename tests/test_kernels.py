"""Each Numba kernel against a naive plain-Python twin (reference_model never imports kernels).

The whole-MVM kernel is covered by tests/test_equivalence.py; here the smaller kernels are
checked on their own: input packing (including the > 8-plane path the MVM tests rarely reach),
the radix-4 value check, the range check, the static mismatch tables and the event noise.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imcsim.kernels.hw import (
    CAP_UNIT,
    CDAC_UNIT,
    NOISE_SHIFT,
    STREAM_CDAC,
    STREAM_CELL_CAP,
    STREAM_CMP_OFFSET,
    STREAM_SAMPLE,
)
from imcsim.kernels.pack import (
    count_outside,
    float_integers,
    pack_input_planes,
    radix4_units,
)
from imcsim.kernels.tables import cdac_weight_table, cell_capacitor_table, comparator_offset_table
from imcsim.kernels.targets import CPU


def event_noise_columns(sigma_fx, seed, stream, t, u, vector, plane, n_cols, step):
    """Noise of one cycle's columns through the compiled key and noise functions."""
    # uint64 keys come back as Python ints: keep them uint64 for the next compiled call
    key = np.uint64(CPU.cycle_key(np.uint64(seed), stream, t, u, vector, plane))
    out = []
    for c in range(n_cols):
        h = np.uint64(CPU.mix(key, c))
        if step >= 0:
            h = np.uint64(CPU.mix(h, step))
        out.append(CPU.scaled_normal(sigma_fx, h, NOISE_SHIFT))
    return np.array(out)

import reference_model as ref  # noqa: E402

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def naive_planes(values, kind, K):
    """Per element: (row-input bit, active) of every plane, from the twin's encoders."""
    bits, active = [], []
    for v in values:
        if kind == "binary":
            bits.append(ref.encode_binary(int(v), K))
            active.append([1] * K)
        else:
            sign, mask = ref.encode_radix4(float(v) / ref.radix4_den(K), K)
            bits.append([sign] * (K - 1))
            active.append(mask)
    return bits, active


def naive_pack(rows_bits):
    """List of 0/1 over rows -> list of 64-row words (row r at bit r % 64 of word r // 64)."""
    words = [0] * max(1, -(-len(rows_bits) // 64))
    for r, bit in enumerate(rows_bits):
        words[r // 64] |= int(bit) << (r % 64)
    return words


@SETTINGS
@given(kind=st.sampled_from(["binary", "radix4"]), K=st.integers(3, 12),
       B=st.integers(1, 5), M=st.integers(1, 300), tile=st.integers(0, 2), seed=st.integers(0, 99),
       mask_zero=st.booleans())
def test_pack_input_planes_matches_naive_packing(kind, K, B, M, tile, seed, mask_zero):
    from imcsim import BinaryFormat, Radix4Format
    from imcsim.formats import plane_lookup_tables
    if kind == "radix4":
        K = 2 * max(2, K // 2)
        K = min(K, 10)
    fmt = BinaryFormat(K) if kind == "binary" else Radix4Format(K)
    rng = np.random.default_rng(seed)
    if kind == "binary":
        lim = 2 ** (K - 2)
        units = rng.integers(-lim, lim + 1, (B, M))
    else:
        mags = np.where(rng.random((B, M)) < 0.4, 0, 4 ** rng.integers(0, K - 1, (B, M)))
        units = mags * np.where(rng.random((B, M)) < 0.5, -1, 1)
    P = fmt.n_planes
    offset, pattern, gate = plane_lookup_tables(fmt, mask_zero)
    rows = 97                                  # a tile height that is not a multiple of 64
    r0 = min(tile * rows, M - 1)
    r1 = min(M, r0 + rows)
    n_words = -(-(r1 - r0) // 64)
    xbits = np.zeros((B, P, n_words), np.uint64)
    xmask = np.zeros((B, P, n_words), np.uint64)
    active = np.zeros((B, P), np.int64)
    all_active = kind == "binary" and not mask_zero
    gates = np.zeros(0, np.uint16) if all_active else gate
    uniform = kind == "radix4"
    pack_input_planes(units.astype(np.int64), offset, pattern, gates, P, r0, r1, xbits, xmask,
                      active, uniform)
    for b in range(B):
        bits, act = naive_planes(units[b, r0:r1], kind, K)
        for p in range(P):
            a = [act[r][p] and not (mask_zero and kind == "binary" and units[b, r0 + r] == 0)
                 for r in range(r1 - r0)]
            x = [bits[r][p] and a[r] for r in range(r1 - r0)]
            assert xmask[b, p].tolist() == naive_pack(a)
            assert xbits[b, p].tolist() == naive_pack(x)
            assert active[b, p] == sum(a)


def test_radix4_units_and_count_outside_match_plain_python():
    values = np.array([0.0, 1 / 64, -1 / 64, 64.0, -4.0, 0.5, 128.0, np.nan, np.inf, 3.0, -0.0,
                       1 / 128, 2.0, 16.0])
    units = np.zeros(values.shape, np.int64)
    bad = radix4_units(values, 64.0, 12, units)
    expect, n_bad = [], 0
    for v in values:
        try:
            sign, mask = ref.encode_radix4(float(v), 8)
            mag = sum(4 ** i for i, m in enumerate(mask) if m)
            expect.append(mag if sign else -mag)
        except (ValueError, OverflowError):
            expect.append(0)
            n_bad += 1
    assert bad == n_bad == 7          # 0.5, 128, nan, inf, 3, 1/128, 2
    assert units.tolist() == expect
    x = np.array([[-17, 0, 16], [5, 17, -16]])
    assert count_outside(x, -16, 16) == sum(1 for v in x.ravel() if not -16 <= v <= 16) == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(-40, 40).map(float),
                          st.floats(allow_nan=True, allow_infinity=True, width=64),
                          st.sampled_from([0.5, -0.5, 31.0, 32.0, -32.0, -33.0, 1e300, -0.0])),
                min_size=1, max_size=40),
       st.sampled_from([np.float64, np.float32]))
def test_float_integers_matches_plain_python(values, dtype):
    """The fused float check of BinaryFormat.validate against its plain-Python reading:
    not finite or not integral -> not_integer; integral outside [lo, hi] -> outside; the
    others converted exactly; the flagged ones 0."""
    x = np.array(values, dtype=dtype)
    out = np.full(x.shape, -99, np.int64)
    not_integer, outside = float_integers(x, -32, 32, out)
    exp_ni = exp_out = 0
    expect = []
    for v in x.tolist():
        if not math.isfinite(v) or v != math.floor(v):
            exp_ni += 1
            expect.append(0)
        elif not -32 <= v <= 32:
            exp_out += 1
            expect.append(0)
        else:
            expect.append(int(v))
    assert (not_integer, outside) == (exp_ni, exp_out)
    assert out.tolist() == expect


def test_static_mismatch_tables_match_the_twins_definition():
    rows, cols, nb = 5, 4, 4
    s_cell, s_cdac, s_off = 3000, 2000, 40000
    caps = cell_capacitor_table(7, rows, cols, s_cell)
    for r in range(rows):
        for c in range(cols):
            n = ref.normal_fx(7, STREAM_CELL_CAP, r, c)
            assert caps[r, c] == CAP_UNIT + ((CAP_UNIT * s_cell * n) >> 32)
    w = cdac_weight_table(7, cols, nb, s_cdac)
    for c in range(cols):
        for k in range(nb):
            units = [CDAC_UNIT + ((CDAC_UNIT * s_cdac * ref.normal_fx(7, STREAM_CDAC, c, k, i)) >> 32)
                     for i in range(1 << k)]
            assert w[c, k] == sum(units)
    off = comparator_offset_table(7, cols, s_off)
    assert off.tolist() == [(s_off * ref.normal_fx(7, STREAM_CMP_OFFSET, c)) >> NOISE_SHIFT
                            for c in range(cols)]


def test_event_noise_matches_the_twins_keys():
    got = event_noise_columns(50000, 11, STREAM_SAMPLE, 1, 2, 3, 4, 6, -1)
    assert got.tolist() == [(50000 * ref.normal_fx(11, STREAM_SAMPLE, 1, 2, 3, 4, c)) >> 12
                            for c in range(6)]
    got = event_noise_columns(50000, 11, 5, 1, 2, 3, 4, 3, 7)
    assert got.tolist() == [(50000 * ref.normal_fx(11, 5, 1, 2, 3, 4, c, 7)) >> 12
                            for c in range(3)]


@SETTINGS
@given(st.integers(3, 16), st.integers(1, 200), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_stored_tiles_match_twin_encoding(K, rows, outputs, data_seed):
    """Stored tiles (packed by the input packer on the transposed matrix, unpacked columns by
    unpack_columns) == the twin's Eq. 1 encoder, bit by bit, for every tile of a matrix."""
    from imcsim import BinaryFormat, Macro, MacroConfig, VrefConfig
    rng = np.random.default_rng(data_seed)
    lim = 1 << (K - 2)
    cfg = MacroConfig(rows=255, columns=max(K, 2 * K + 1),
                      vref=VrefConfig(full_scale=255, dual_low=255, dual_high=255))
    values = rng.integers(-lim, lim + 1, (rows + 300, outputs)).astype(np.int64)
    stored = Macro(cfg).store_weights(values, BinaryFormat(K))
    plan = stored.plan
    for t in range(plan.row_tiles):
        r0, r1 = plan.row_range(t)
        for u in range(plan.col_tiles):
            n0, n1 = plan.output_range(u)
            tile = stored.tile(t, u)
            for g in range(n1 - n0):
                planes = [ref.encode_binary(int(values[r, n0 + g]), K) for r in range(r0, r1)]
                for q in range(K):
                    column = [planes[r][q] for r in range(r1 - r0)]
                    assert tile["packed"][g * K + q].tolist() == naive_pack(column)
                    assert tile["columns"][:, g * K + q].tolist() == column
    # a transient operand (as Macro.mvm builds for an array) keeps only the last row tile's
    # planes: tiles asked out of order are packed again, the same bits
    from imcsim.cima import StoredWeights
    transient = StoredWeights(stored.macro, values, BinaryFormat(K), cache=False)
    for t in reversed(range(plan.row_tiles)):
        for u in reversed(range(plan.col_tiles)):
            again = transient.tile(t, u)
            assert np.array_equal(again["packed"], stored.tile(t, u)["packed"])
            assert np.array_equal(again["columns"], stored.tile(t, u)["columns"])


@pytest.mark.parametrize("adc_bits", [1, 2, 8, 11, 16])
def test_sar_paths_match_the_twins_successive_approximation(adc_bits):
    """``cycle.sar_paths`` (``hw.sar_path_trial``, the calibration's SAR paths) against the
    twin's SAR loop driven by each code's own bits, over every code at the extremes."""
    from imcsim.calibration.model import path_trials
    top = (1 << adc_bits) - 1
    codes = np.unique(np.r_[0, 1, top - 1, top, np.random.default_rng(adc_bits).integers(
        0, top + 1, 200)]).clip(0, top)
    trials, keep = path_trials(codes, adc_bits)
    for i, code in enumerate(codes.tolist()):
        decided = 0
        for s in range(adc_bits):
            trial = decided | (1 << (adc_bits - 1 - s))     # tests/reference_model.sar_convert
            kept = trial <= code                             # the comparator, as the code says
            assert trials[i, s] == trial and keep[i, s] == kept, (code, s)
            if kept:
                decided = trial
        assert decided == code


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(1, 12), st.sampled_from([1, 7, 6554, 65536, 1 << 20, 1 << 24]),
       st.integers(0, 2**64 - 1), st.integers(-3, 3), st.integers(0, 2**32 - 1),
       st.sampled_from([0, 1 << 19]))
def test_sar_with_bounded_noise_matches_the_twins_sar(adc_bits, sigma_cmp_fx, key, near,
                                                      data_seed, threshold_shift):
    """``hw.sar_convert`` draws a step's comparator noise only where it can change the
    decision; the codes, trials and decisions stay those of the twin's SAR, which adds the
    noise at every step.  Held values sit on and around the DAC's trial levels, where the
    noise decides, at every width and noise level (the noise samples themselves are checked
    against the twin's keys above)."""
    from imcsim.kernels.hw import ANALOG_FRAC_BITS
    rng = np.random.default_rng(data_seed)
    weights = [int(CDAC_UNIT * 2**k * (1 + rng.normal(0, 0.01))) for k in range(adc_bits)]
    total = sum(weights)
    full_scale = int(rng.integers(2**adc_bits - 1, 4 * 2**adc_bits))
    trial = int(rng.integers(1, 2**adc_bits))
    level = ((full_scale * sum(w for k, w in enumerate(weights) if trial >> k & 1))
             << ANALOG_FRAC_BITS) // total
    noise_rms = (sigma_cmp_fx << ANALOG_FRAC_BITS) >> 16
    value = level + near * max(1, noise_rms) + int(rng.integers(-2, 3))
    offset = int(rng.integers(-3, 4)) * max(1, noise_rms // 4)
    noise = [int(CPU.scaled_normal(sigma_cmp_fx, np.uint64(CPU.mix(np.uint64(key), s)),
                                   NOISE_SHIFT))
             for s in range(adc_bits)]
    want = ref.sar_convert(value, offset, noise, full_scale, weights, threshold_shift)
    trials = np.zeros(adc_bits, dtype=np.int64)
    decisions = np.zeros(adc_bits, dtype=np.uint8)
    got = CPU.sar_convert(value, offset, np.array(weights, dtype=np.int64), total, full_scale,
                          adc_bits, sigma_cmp_fx, np.uint64(key), threshold_shift, trials,
                          decisions, True)
    assert got == want
    path_trials, keep = ref_path(want, adc_bits)
    assert trials.tolist() == path_trials and decisions.tolist() == keep


def ref_path(code: int, adc_bits: int):
    """The twin's SAR path that ends in ``code``: trial codes and decisions, MSB first."""
    trials, keep, decided = [], [], 0
    for s in range(adc_bits):
        trial = decided | (1 << (adc_bits - 1 - s))
        trials.append(trial)
        keep.append(int(trial <= code))
        if trial <= code:
            decided = trial
    return trials, keep


# --- the output stage's float view -----------------------------------------------------------
@settings(max_examples=120, deadline=None)
@given(st.integers(0, 62),
       st.lists(st.sampled_from([0, 1, -1, 2**53 + 1, -(2**53) - 1, 2**62 + 3, 2**63 - 1,
                                 -(2**63)]) | st.integers(-(2**63), 2**63 - 1),
                min_size=1, max_size=12),
       st.integers(1, 3))
def test_output_floats_equal_the_cast_and_division(frac_bits, values, rows):
    """``y = y_int / 2**out_frac_bits`` in float64, bit for bit, including the int64 extremes
    and integers that float64 cannot hold exactly (rounded once, by the conversion)."""
    from imcsim.kernels.cycle import output_floats
    y_int = np.array(values * rows, dtype=np.int64).reshape(rows, len(values))
    expected = [[float(v) / float(2**frac_bits) for v in row] for row in y_int.tolist()]
    got = np.empty(y_int.shape, dtype=np.float64)
    output_floats(y_int, 2.0 ** -frac_bits, got)
    assert got.tolist() == expected
    assert np.array_equal(got.view(np.int64), np.array(expected).view(np.int64))
