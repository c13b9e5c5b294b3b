"""Hand-computed checks of the reference twin itself (tests/reference_model.py) against
docs/hardware-model.md.  These do not touch imcsim."""
import random
from fractions import Fraction

import numpy as np
import pytest

import reference_model as ref  # noqa: E402


# ---------------------------------------------------------------- Sec. 2.1 binary format
@pytest.mark.parametrize("x, bits", [
    # planes j = 0 (b0-), 1 (b0+), 2.. (b1..b4); hand-derived from the canonical encoding
    (0, [1, 1, 1, 1, 1, 0]),    # even >= 0: b0+- = +1, s = -1, T = 7 = 0b0111
    (1, [0, 1, 0, 0, 0, 1]),    # odd: s = 1, T = 8 = 0b1000
    (-1, [0, 1, 1, 1, 1, 0]),   # odd: s = -1, T = 7
    (16, [1, 1, 1, 1, 1, 1]),   # even: s = 15, T = 15
    (-16, [0, 0, 0, 0, 0, 0]),  # even < 0: s = -15, T = 0
    (7, [0, 1, 1, 1, 0, 1]),    # odd: s = 7, T = 11 = 0b1011
    (-2, [0, 0, 1, 1, 1, 0]),   # even < 0: s = -1, T = 7 = 0b0111
])
def test_encode_binary_k6(x, bits):
    assert ref.encode_binary(x, 6) == bits
    assert ref.decode_binary(bits) == x


@pytest.mark.parametrize("K", [3, 4, 5, 6, 8])
def test_binary_roundtrip_full_range(K):
    lim = 2 ** (K - 2)
    for x in range(-lim, lim + 1):
        bits = ref.encode_binary(x, K)
        assert len(bits) == K and set(bits) <= {0, 1}
        assert ref.decode_binary(bits) == x
    for bad in (lim + 1, -lim - 1, 0.5, 1.25):
        with pytest.raises(ValueError):
            ref.encode_binary(bad, K)


def test_binary_plane_weights():
    assert ref.binary_plane_weights(6) == [1, 1, 2, 4, 8, 16]
    assert ref.binary_plane_weights(3) == [1, 1, 2]


# ---------------------------------------------------------------- Sec. 2.2 radix-4 format
def test_encode_radix4_k8():
    assert ref.radix4_den(8) == 64
    assert ref.encode_radix4(Fraction(1, 64), 8) == (1, [1, 0, 0, 0, 0, 0, 0])
    assert ref.encode_radix4(1 / 64, 8) == (1, [1, 0, 0, 0, 0, 0, 0])
    assert ref.encode_radix4(-64.0, 8) == (0, [0, 0, 0, 0, 0, 0, 1])
    assert ref.encode_radix4(0.0, 8) == (1, [0, 0, 0, 0, 0, 0, 0])
    assert ref.encode_radix4(1.0, 8) == (1, [0, 0, 0, 1, 0, 0, 0])
    assert ref.encode_radix4(-0.25, 8) == (0, [0, 0, 1, 0, 0, 0, 0])
    for bad in (2.0, 3.0, 1 / 256, 256.0, 0.5, float("nan")):
        with pytest.raises(ValueError):
            ref.encode_radix4(bad, 8)
    with pytest.raises(ValueError):
        ref.encode_radix4(1.0, 7)


@pytest.mark.parametrize("K", [4, 6, 8])
def test_radix4_roundtrip(K):
    half = (K - 2) // 2
    for e in range(-half, half + 1):
        for sgn in (1, -1):
            v = sgn * Fraction(4) ** e
            s, m = ref.encode_radix4(v, K)
            assert sum(m) == 1 and len(m) == K - 1
            assert ref.decode_radix4(s, m, K) == v
    with pytest.raises(ValueError):
        ref.encode_radix4(Fraction(4) ** (half + 1), K)


# ---------------------------------------------------------------- Sec. 5 randomness
def test_splitmix64_known_value():
    assert ref.splitmix64(0) == 0xE220A8397B1DCDAF
    # wraps mod 2**64
    assert 0 <= ref.splitmix64(ref.MASK64) < 2**64


def test_key_hash_composition():
    h = ref.splitmix64(7)
    for v in (3, 1, 2):
        h = ref.splitmix64(h ^ v)
    assert ref.key_hash(7, 3, 1, 2) == h
    assert ref.key_hash(7, 3, 1, 2) != ref.key_hash(7, 3, 2, 1)


def test_normal_fx_definition_and_moments():
    h = ref.key_hash(5, 4, 0, 1, 2)
    tot = 0
    for i in range(3):
        u = ref.splitmix64(h + i)
        tot += sum((u >> (16 * k)) & 0xFFFF for k in range(4))
    assert ref.normal_fx(5, 4, 0, 1, 2) == tot - 393210
    vals = np.array([ref.normal_fx(11, 4, i) for i in range(20000)], dtype=np.float64)
    assert abs(vals.mean()) < 0.05 * 65536
    assert abs(vals.std() / 65536 - 1) < 0.03
    assert np.abs(vals).max() <= 6 * 65536


# ---------------------------------------------------------------- Sec. 4.5 ADC
@pytest.mark.parametrize("Nb", [3, 4, 8])
def test_sar_ideal_equals_adc_law(Nb):
    L = 2**Nb - 1
    w = [ref.CDAC_UNIT * 2**k for k in range(Nb)]
    for F in (L, L + 1, 2 * L, 3 * L + 2, 9 * L):
        for count in range(0, F + 20):
            code = ref.sar_convert(count << 20, 0, [0] * Nb, F, w)
            assert code == ref.ideal_adc_code(count, F, L) == min(count * L // F, L)


def test_adc_law_hand_values():
    # L = 255, F = 2304: floor(count * 255 / 2304)
    assert ref.ideal_adc_code(9, 2304, 255) == 0
    assert ref.ideal_adc_code(10, 2304, 255) == 1      # 2550 / 2304
    assert ref.ideal_adc_code(2304, 2304, 255) == 255
    assert ref.ideal_adc_code(200, 255, 255) == 200    # one code per row
    assert ref.ideal_adc_code(300, 255, 255) == 255    # clipped
    assert ref.ideal_adc_code(7, 14, 7) == 3


def test_sar_with_offset_and_mismatch_by_hand():
    Nb, _L, F = 3, 7, 7
    w = [ref.CDAC_UNIT * 2**k for k in range(Nb)]
    # an offset of -1 row pulls every code down by one row (F = L: one code per row)
    assert ref.sar_convert(5 << 20, -(1 << 20), [0, 0, 0], F, w) == 4
    # comparator noise on the MSB step only: v = 4 rows, noise -half a row on the MSB -> 0b011
    assert ref.sar_convert(4 << 20, 0, [-(1 << 19), 0, 0], F, w) == 3
    # same noise on the LSB step: MSB kept, LSB trial (5) rejected anyway -> 4
    assert ref.sar_convert(4 << 20, 0, [0, 0, -(1 << 19)], F, w) == 4
    # a heavy MSB capacitor: w = [1, 2, 5] units, W_tot = 8; v = 4 rows, F = 7:
    # MSB trial: 4 * 8 >= 7 * 5 ? no.  bit1 trial: 32 >= 14 yes.  bit0 trial (3): 32 >= 21 yes -> 3
    w2 = [4096, 8192, 5 * 4096]
    assert ref.sar_convert(4 << 20, 0, [0, 0, 0], F, w2) == 3


# ---------------------------------------------------------------- Sec. 4.6 NMC helpers
def test_scale_and_rounding_helpers():
    assert ref.scale_fx(255, 255, 16) == 2**16
    assert ref.scale_fx(14, 7, 16) == 2**17
    assert ref.scale_fx(2304, 255, 16) == (2304 * 2**16 * 2 + 255) // 510  # 592137 (9.0353 rows)
    assert ref.scale_fx(2304, 255, 16) == 592137
    assert ref.round_shift(5, 1, "floor") == 2
    assert ref.round_shift(5, 1, "half_up") == 3
    assert ref.round_shift(5, 1, "half_even") == 2
    assert ref.round_shift(7, 1, "half_even") == 4
    assert ref.round_shift(-5, 1, "floor") == -3
    assert ref.round_shift(-5, 1, "half_up") == -2
    assert ref.round_shift(-5, 1, "half_even") == -2
    assert ref.round_shift(-7, 1, "half_even") == -4
    assert ref.round_shift(-6, 2, "half_even") == -2   # -1.5 -> -2
    assert ref.round_shift(-10, 2, "half_even") == -2  # -2.5 -> -2
    assert ref.round_shift(3, -2, "floor") == 12
    assert ref.saturate(200, 8) == 127 and ref.saturate(-200, 8) == -128
    assert ref.wrap(128, 8) == -128 and ref.wrap(-129, 8) == 127 and ref.wrap(5, 8) == 5


# ---------------------------------------------------------------- a tiny MVM by hand
TINY = dict(rows=14, columns=3, adc_bits=3)
X_TINY = [[2, 1, -1]]
W_TINY = [[1], [2], [-2]]


def test_tiny_mvm_lossy_by_hand():
    # K = 3: 2 -> [1,1,1], 1 -> [0,1,1], -1 -> [0,1,0], -2 -> [0,0,0]
    # x planes p0 [1,0,0], p1 [1,1,1], p2 [1,1,0]; w planes q0 [0,1,0], q1 [1,1,0], q2 [1,1,0]
    # counts (A = 3): p0 [1,2,2], p1 [1,2,2], p2 [2,3,3]
    # fixed F = 14, L = 7: code = floor(count / 2): p0 [0,1,1], p1 [0,1,1], p2 [1,1,1]
    # scale_fx = 2**17, dot_fx = (4 code - 3) * 2**16 -> p0 [-3,1,1] p1 [-3,1,1] p2 [1,1,1]
    # acc / 2**16 = 1*(-3+1+2) + 1*(-3+1+2) + 2*(1+1+2) = 8, Y = 8 / 4 = 2
    r = ref.reference_mvm(X_TINY, W_TINY, "binary", 3, 3, **TINY, vref_mode="fixed",
                          full_scale=14, out_frac_bits=12)
    assert r["codes"][0][0] == [[[0, 1, 1]], [[0, 1, 1]], [[1, 1, 1]]]
    assert r["full_scale"] == [[[14, 14, 14]]]
    assert r["active_rows"] == [[[3, 3, 3]]]
    assert r["y_int"] == [[2 * 4096]]
    assert r["y"] == [[2.0]]
    assert {k: r[k] for k in ref.EVENT_NAMES} == dict(
        array_cycles=3, bitcell_mults=27, adc_conversions=9, sar_steps=27, nmc_outputs=1,
        reshape_words=1, cima_load_words=3, clipped_conversions=0, high_vref_conversions=0)


def test_tiny_mvm_lossless_by_hand():
    # variable: F = max(3, 7) = 7, code = count; dot = 2 count - 3:
    # p0 [-1,1,1] p1 [-1,1,1] p2 [1,3,3] -> 2 + 2 + 2 * 10 = 24 -> Y = 6 = X @ W
    r = ref.reference_mvm(X_TINY, W_TINY, "binary", 3, 3, **TINY, vref_mode="variable")
    assert r["codes"][0][0] == [[[1, 2, 2]], [[1, 2, 2]], [[2, 3, 3]]]
    assert r["full_scale"] == [[[7, 7, 7]]]
    assert r["y_int"] == [[6 * 4096]]
    # dual with dual_low = 7 >= A: low level, same result, no high-Vref conversions
    r = ref.reference_mvm(X_TINY, W_TINY, "binary", 3, 3, **TINY, vref_mode="dual",
                          dual_low=7, dual_high=14)
    assert r["y_int"] == [[6 * 4096]] and r["high_vref_conversions"] == 0


def test_tiny_clipping_and_dual_high():
    # 10 rows of x = 2, w = 2: every plane pair agrees, count = A = 10 in every column.
    X = [[2] * 10]
    W = [[2]] * 10
    r = ref.reference_mvm(X, W, "binary", 3, 3, rows=14, columns=3, adc_bits=3,
                          vref_mode="fixed", full_scale=7)
    assert r["clipped_conversions"] == 9
    assert all(c == 7 for p in r["codes"][0][0] for c in p[0])
    # dual: A = 10 > dual_low = 7 -> F = dual_high = 14, code = floor(10 * 7 / 14) = 5
    r = ref.reference_mvm(X, W, "binary", 3, 3, rows=14, columns=3, adc_bits=3,
                          vref_mode="dual", dual_low=7, dual_high=14)
    assert r["high_vref_conversions"] == 9 and r["clipped_conversions"] == 0
    assert r["full_scale"] == [[[14, 14, 14]]]
    assert all(c == 5 for p in r["codes"][0][0] for c in p[0])


def test_mask_zero_inputs_and_radix4_masking():
    X = [[0, 1, 0]]
    W = [[1], [2], [-2]]
    r = ref.reference_mvm(X, W, "binary", 3, 3, **TINY, mask_zero_inputs=True)
    assert r["active_rows"] == [[[1, 1, 1]]]
    assert r["bitcell_mults"] == 9
    assert r["y_int"] == [[2 * 4096]]
    # radix-4 K = 4 (den 4, planes 4**-1, 4**0, 4**1): x = [1/4, 0, -4]
    X = [[0.25, 0.0, -4.0]]
    r = ref.reference_mvm(X, W, "radix4", 4, 3, **TINY, out_frac_bits=4)
    assert r["active_rows"] == [[[1, 0, 1]]]
    assert r["y_int"] == [[int((Fraction(1, 4) * 1 + 8) * 16)]]
    assert r["array_cycles"] == 3


def test_half_lsb_and_overflow_modes():
    base = dict(rows=14, columns=3, adc_bits=3, vref_mode="fixed", full_scale=14)
    # half-LSB: count_est = (2 code + 1) * 2**17 >> 1 = (2 code + 1) * 2**16 rows,
    # dot = (4 code + 2 - 3) 2**16: p0 [-1,3,3] p1 [-1,3,3] p2 [3,3,3] -> 8 + 8 + 2*12 = 40 -> 10
    r = ref.reference_mvm(X_TINY, W_TINY, "binary", 3, 3, **base, half_lsb_reconstruction=True)
    assert r["y_int"] == [[10 * 4096]]
    # X = 16 * ones(4), W = 8: 512 with acc = 512 * 2**18 = 2**27 (needs 29 bits signed).
    X = [[16] * 4]
    W = [[8]] * 4
    common = dict(rows=15, columns=5, adc_bits=4, vref_mode="variable")
    r = ref.reference_mvm(X, W, "binary", 6, 5, **common)
    assert r["y_int"] == [[512 * 4096]]
    r = ref.reference_mvm(X, W, "binary", 6, 5, **common, acc_bits=20, overflow="saturate",
                          out_frac_bits=0)
    # every term is positive: the accumulator ends at 2**19 - 1 -> >> 18 half-even = 2
    assert r["y_int"] == [[2]]
    r = ref.reference_mvm(X, W, "binary", 6, 5, **common, out_bits=8, out_frac_bits=0)
    assert r["y_int"] == [[127]]


def test_out_frac_bits_rounding():
    # Y = 6 with out_frac_bits = 20 -> shift = 18 - 20 < 0: left shift
    r = ref.reference_mvm(X_TINY, W_TINY, "binary", 3, 3, **TINY, out_frac_bits=20)
    assert r["y_int"] == [[6 * 2**20]]
    # radix-4 value 1/64 * 1 = Y needs out_frac_bits >= 6; with 0 -> rounds to 0
    X = [[1 / 64]]
    W = [[1]]
    r = ref.reference_mvm(X, W, "radix4", 8, 3, rows=7, columns=3, adc_bits=3, out_frac_bits=6)
    assert r["y_int"] == [[1]]
    r = ref.reference_mvm(X, W, "radix4", 8, 3, rows=7, columns=3, adc_bits=3, out_frac_bits=0,
                          out_rounding="half_up")
    assert r["y_int"] == [[0]]


# ---------------------------------------------------------------- lossless == exact product
def _rand_radix4(rng, K):
    half = (K - 2) // 2
    if rng.random() < 0.2:
        return 0.0
    return rng.choice((-1.0, 1.0)) * 4.0 ** rng.randint(-half, half)


@pytest.mark.parametrize("case", range(12))
def test_lossless_random_equals_exact(case):
    rng = random.Random(case)
    adc_bits = rng.randint(3, 6)
    L = 2**adc_bits - 1
    rows = rng.randint(L, L + 10)
    Kw = rng.randint(3, 6)
    columns = Kw * rng.randint(1, 3) + rng.randint(0, Kw - 1)
    B, M, N = rng.randint(1, 3), rng.randint(1, 2 * L + 3), rng.randint(1, 7)
    radix = rng.random() < 0.5
    Kx = rng.choice([4, 6, 8]) if radix else rng.randint(3, 7)
    W = [[rng.randint(-2 ** (Kw - 2), 2 ** (Kw - 2)) for _ in range(N)] for _ in range(M)]
    if radix:
        X = [[_rand_radix4(rng, Kx) for _ in range(M)] for _ in range(B)]
        ofb = Kx - 2
    else:
        X = [[rng.randint(-2 ** (Kx - 2), 2 ** (Kx - 2)) for _ in range(M)] for _ in range(B)]
        ofb = 0
    # lossless needs at most L active rows per cycle: limit the tile height to L
    r = ref.reference_mvm(X, W, "radix4" if radix else "binary", Kx, Kw, rows=rows,
                          columns=columns, adc_bits=adc_bits, vref_mode="variable",
                          out_frac_bits=ofb, mask_zero_inputs=rng.random() < 0.5)
    if np.max(r["active_rows"]) > L:
        # tile has more than L active rows: lossy; only check the equality on L-row tiles
        r = ref.reference_mvm(X, W, "radix4" if radix else "binary", Kx, Kw, rows=L,
                              columns=columns, adc_bits=adc_bits, vref_mode="variable",
                              out_frac_bits=ofb)
    exact = [[sum(Fraction(X[b][m]) * W[m][n] for m in range(M)) for n in range(N)]
             for b in range(B)]
    assert [[Fraction(v, 2**ofb) for v in row] for row in r["y_int"]] == exact
    assert r["clipped_conversions"] == 0


def test_lossy_is_not_exact():
    # sanity that the check above can fail: fixed high F loses information
    rng = random.Random(3)
    X = [[rng.randint(-16, 16) for _ in range(20)]]
    W = [[rng.randint(-8, 8) for _ in range(3)] for _ in range(20)]
    r = ref.reference_mvm(X, W, "binary", 6, 5, rows=64, columns=15, adc_bits=4,
                          vref_mode="fixed", full_scale=64, out_frac_bits=0)
    assert r["y_int"] != (np.array(X) @ np.array(W)).tolist()


# ---------------------------------------------------------------- geometry / events
def test_tiling_events():
    # M = 40 rows over 2 tiles of 31 (31 + 9), N = 5 outputs over tiles of G = 2 (2, 2, 1)
    rng = random.Random(1)
    B, M, N, Kx, Kw = 3, 40, 5, 6, 5
    X = [[rng.randint(-16, 16) for _ in range(M)] for _ in range(B)]
    W = [[rng.randint(-8, 8) for _ in range(N)] for _ in range(M)]
    r = ref.reference_mvm(X, W, "binary", Kx, Kw, rows=31, columns=12, adc_bits=5,
                          vref_mode="variable")
    T, U = 2, 3
    assert np.array(r["codes"]).shape == (T, B, Kx, N, Kw)
    assert np.array(r["active_rows"]).tolist() == [[[31] * Kx] * B, [[9] * Kx] * B]
    C = [10, 10, 5]
    assert r["array_cycles"] == T * U * B * Kx
    assert r["adc_conversions"] == T * B * Kx * sum(C)
    assert r["sar_steps"] == 5 * r["adc_conversions"]
    assert r["bitcell_mults"] == B * Kx * (31 + 9) * sum(C)
    assert r["nmc_outputs"] == T * B * N
    # ceil(31 * 6 / 32) = 6, ceil(9 * 6 / 32) = 2
    assert r["reshape_words"] == U * B * (6 + 2)
    assert r["cima_load_words"] == sum(C) * (1 + 1)
    assert r["y_int"] == ((np.array(X) @ np.array(W)) * 4096).tolist()


def test_nonideal_static_and_dynamic_keys():
    rng = random.Random(2)
    X = [[rng.randint(-16, 16) for _ in range(20)] for _ in range(2)]
    W = [[rng.randint(-8, 8) for _ in range(3)] for _ in range(20)]
    kw = dict(rows=31, columns=10, adc_bits=5, vref_mode="variable")
    ideal = ref.reference_mvm(X, W, "binary", 6, 5, **kw)
    noisy = dict(sigma_cell_fx=2000, parasitic_fx=3000, sigma_cdac_fx=3000,
                 sigma_offset_fx=20000, sigma_cmp_fx=20000, sigma_sample_fx=20000)
    a = ref.reference_mvm(X, W, "binary", 6, 5, **kw, **noisy, seed=1)
    b = ref.reference_mvm(X, W, "binary", 6, 5, **kw, **noisy, seed=1)
    c = ref.reference_mvm(X, W, "binary", 6, 5, **kw, **noisy, seed=2)
    assert a == b
    assert a["codes"] != ideal["codes"]
    assert a["codes"] != c["codes"]
    # noise is keyed by the vector index b: vector 1 alone != vector 1 inside the batch
    # unless the key is the same -> running the batch of vector 0 alone reproduces row 0
    a0 = ref.reference_mvm(X[:1], W, "binary", 6, 5, **kw, **noisy, seed=1)
    assert a0["y_int"][0] == a["y_int"][0]
    # pure parasitic capacitance shrinks every column value: codes never go up
    p = ref.reference_mvm(X, W, "binary", 6, 5, **kw, parasitic_fx=2**15)
    assert all(cp <= ci for cp, ci in zip(np.ravel(p["codes"]), np.ravel(ideal["codes"])))
    assert np.ravel(p["codes"]).tolist() != np.ravel(ideal["codes"]).tolist()
