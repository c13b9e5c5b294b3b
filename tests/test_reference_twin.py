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
        reshape_words=1, cima_load_words=3, clipped_conversions=0, high_vref_conversions=0,
        dac_row_drives=0, dac_level_sum=0)


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


# ---------------------------------------------------------------- Sec. 2.3 multi-level mappings
def test_encode_radix4_levels_k8_e2():
    # radix4:8/2: P = ceil(7/2) = 4 cycles carrying mask planes (0,1) (2,3) (4,5) (6);
    # plane j drives level 4**(j - 2p) in cycle p = j // 2; pw_p = 4**(2p); den 64
    assert ref.radix4_cycles(8, 2) == 4
    assert ref.radix4_cycle_weights(8, 2) == [1, 16, 256, 4096]
    assert ref.radix4_top_level(8, 2) == 4
    cases = [
        (Fraction(1, 64), (1, [1, 0, 0, 0])),   # j = 0
        (1 / 16, (1, [4, 0, 0, 0])),            # j = 1
        (0.25, (1, [0, 1, 0, 0])),              # j = 2
        (1.0, (1, [0, 4, 0, 0])),               # j = 3
        (-1.0, (0, [0, 4, 0, 0])),              # sign 0 in every cycle
        (4.0, (1, [0, 0, 1, 0])),               # j = 4
        (-16.0, (0, [0, 0, 4, 0])),             # j = 5
        (64.0, (1, [0, 0, 0, 1])),              # j = 6: the last cycle carries one plane
        (0.0, (1, [0, 0, 0, 0])),               # zero: masked in every cycle, sign 1
    ]
    for value, enc in cases:
        assert ref.encode_radix4_levels(value, 8, 2) == enc
        assert ref.decode_levels(*enc, ref.radix4_cycle_weights(8, 2), 64) == Fraction(value)
    for bad in (2.0, 1 / 256, 256.0):
        with pytest.raises(ValueError):
            ref.encode_radix4_levels(bad, 8, 2)


def test_encode_radix4_levels_other_e():
    # E = 1 is Eq. 2 itself: the levels are the mask bits
    for e in range(-3, 4):
        v = Fraction(4) ** e
        s, m = ref.encode_radix4(v, 8)
        assert ref.encode_radix4_levels(v, 8, 1) == (s, m)
    assert ref.radix4_top_level(8, 1) == 1 and ref.radix4_cycles(8, 1) == 7
    # radix4:8/3: P = 3 (planes 0-2, 3-5, 6), D = 16, pw = [1, 64, 4096]
    assert ref.radix4_cycles(8, 3) == 3 and ref.radix4_top_level(8, 3) == 16
    assert ref.radix4_cycle_weights(8, 3) == [1, 64, 4096]
    assert ref.encode_radix4_levels(16.0, 8, 3) == (1, [0, 16, 0])     # j = 5
    assert ref.encode_radix4_levels(-64.0, 8, 3) == (0, [0, 0, 1])     # j = 6
    # radix4:4/2: P = 2 (planes 0-1, 2), D = 4
    assert ref.radix4_cycles(4, 2) == 2 and ref.radix4_top_level(4, 2) == 4
    assert ref.encode_radix4_levels(4.0, 4, 2) == (1, [0, 1])
    for K, E in ((8, 0), (8, 8), (6, 6), (7, 2)):
        with pytest.raises(ValueError):
            ref.encode_radix4_levels(1.0, K, E)


def test_encode_binary_digits_k8_n3():
    # binary:8/3: |x| <= 64 (7 magnitude bits) in 3-bit digits: P = 3, D = 7, pw = [1, 8, 64]
    assert ref.binary_digit_cycles(8, 3) == 3
    assert ref.binary_digit_weights(8, 3) == [1, 8, 64]
    assert ref.binary_digit_top_level(8, 3) == 7
    cases = [
        (0, (1, [0, 0, 0])),        # zero: level 0 everywhere, sign 1
        (7, (1, [7, 0, 0])),
        (-1, (0, [1, 0, 0])),
        (-45, (0, [5, 5, 0])),      # 45 = 0b101_101
        (63, (1, [7, 7, 0])),
        (64, (1, [0, 0, 1])),       # 64 = 0b1_000_000
        (-64, (0, [0, 0, 1])),
        (19.0, (1, [3, 2, 0])),     # 19 = 0b10_011; integral floats are accepted
    ]
    for x, enc in cases:
        assert ref.encode_binary_digits(x, 8, 3) == enc
        assert ref.decode_levels(*enc, ref.binary_digit_weights(8, 3), 1) == x
    for bad in (65, -65, 0.5, Fraction(3, 2), True):
        with pytest.raises(ValueError):
            ref.encode_binary_digits(bad, 8, 3)
    for K, N in ((8, 0), (8, 5), (2, 1)):
        with pytest.raises(ValueError):
            ref.encode_binary_digits(1, K, N)


@pytest.mark.parametrize("K, N, P, D", [
    (8, 1, 7, 1), (8, 2, 4, 3), (8, 4, 2, 15), (6, 4, 2, 15), (5, 3, 2, 7),
    (3, 4, 1, 3),   # N' = min(4, K-1) = 2: D = 3
    (3, 2, 1, 3), (4, 4, 1, 7),
])
def test_binary_digits_geometry_and_roundtrip(K, N, P, D):
    assert ref.binary_digit_cycles(K, N) == P
    assert ref.binary_digit_top_level(K, N) == D
    pw = ref.binary_digit_weights(K, N)
    lim = 2 ** (K - 2)
    top = 0
    for x in range(-lim, lim + 1):
        s, lv = ref.encode_binary_digits(x, K, N)
        assert len(lv) == P and s == (1 if x >= 0 else 0)
        assert ref.decode_levels(s, lv, pw, 1) == x
        top = max(top, *lv)
    assert top <= D


# ---------------------------------------------------------------- Sec. 4.8 row DAC
def test_row_dac_gains_by_hand():
    # ideal: g[r][k] = 2**k * DAC_UNIT
    assert ref.row_dac_gains(3, 0, 2, 3) == [[4096, 8192, 16384]] * 2
    sig = 6554  # 0.1 * 2**16
    g = ref.row_dac_gains(3, sig, 2, 3)
    for r in range(2):
        for k in range(3):
            units = [4096 + ((4096 * sig * ref.normal_fx(3, 6, r, k, i)) >> 32)
                     for i in range(2**k)]
            assert g[r][k] == sum(units)
    assert ref.STREAM_ROW_DAC == 6 and ref.DAC_UNIT == 4096
    assert g != ref.row_dac_gains(4, sig, 2, 3)     # static, keyed by chip_seed


def test_column_charge_by_hand():
    # ideal DAC: Q = sum of d_r * cap[r] over XNOR = 1 rows
    g_id = [[4096, 8192, 16384]] * 3
    assert ref.column_charge([5, 3, 7], [1, 1, 0], [4000, 4200, 4096], g_id) == 4000 * 5 + 4200 * 3
    # non-ideal: level 5 = bits 0, 2; level 3 = bits 0, 1; each cell-bit term floored (>> 12)
    g = [[4100, 8000, 16500], [4000, 8300, 16000]]
    # 4000*4100 >> 12 = 4003, 4000*16500 >> 12 = 16113, 4200*4000 >> 12 = 4101,
    # 4200*8300 >> 12 = 8510
    assert ref.column_charge([5, 3], [1, 1], [4000, 4200], g) == 4003 + 16113 + 4101 + 8510
    assert ref.column_charge([5, 3], [0, 1], [4000, 4200], g) == 4101 + 8510
    assert ref.column_charge([0, 0], [1, 1], [4000, 4200], g) == 0


def _exact(X, W):
    return [[sum(Fraction(X[b][m]) * W[m][n] for m in range(len(W))) for n in range(len(W[0]))]
            for b in range(len(X))]


def _encode_x(kind, K, sub, x):
    if kind == "radix4":
        return ref.encode_radix4_levels(x, K, sub)
    return ref.encode_binary_digits(x, K, sub)


def _rand_levels_x(rng, kind, K, sub, B, M, rows, L):
    """A random X whose level sum A stays <= L in every row tile and cycle (lossless): each
    drawn element is kept only if it fits the budget of its tile's cycles, else it is 0."""
    P = ref.radix4_cycles(K, sub) if kind == "radix4" else ref.binary_digit_cycles(K, sub)
    X = []
    for _ in range(B):
        row, used = [], {}
        for m in range(M):
            if kind == "radix4":
                x = _rand_radix4(rng, K)
            else:
                x = rng.randint(-2 ** (K - 2), 2 ** (K - 2))
            lv = _encode_x(kind, K, sub, x)[1]
            t = m // rows
            if all(used.get((t, p), 0) + lv[p] <= L for p in range(P)):
                for p in range(P):
                    used[(t, p)] = used.get((t, p), 0) + lv[p]
            else:
                x = 0.0 if kind == "radix4" else 0
            row.append(x)
        X.append(row)
    return X


@pytest.mark.parametrize("kind, K, sub, input_bits", [
    ("radix4", 8, 2, 3), ("radix4", 6, 2, 3), ("radix4", 4, 2, 3), ("radix4", 6, 1, 1),
    ("radix4", 8, 3, 5), ("radix4", 4, 3, 5),
    ("binary", 8, 3, 3), ("binary", 6, 1, 1), ("binary", 8, 4, 4), ("binary", 5, 2, 2),
    ("binary", 3, 4, 2),
])
def test_multilevel_lossless_equals_exact(kind, K, sub, input_bits):
    # Sec. 4.8: F = L and A <= L per cycle give the exact product; the small inner dimension
    # plus the rejection in _rand_levels_x keep A <= L, also over two row tiles (M > rows)
    rng = random.Random(f"{kind}{K}/{sub}")
    adc_bits, Kw = 5, 4
    L = 31
    extra = {"x_per_cycle": sub} if kind == "radix4" else {"x_digit_bits": sub}
    ofb = K - 2 if kind == "radix4" else 0
    for rows, M in ((L, 5), (L, L + 4)):
        W = [[rng.randint(-4, 4) for _ in range(3)] for _ in range(M)]
        X = _rand_levels_x(rng, kind, K, sub, 2, M, rows, L)
        for vref in (dict(vref_mode="variable"), dict(vref_mode="fixed", full_scale=L),
                     dict(vref_mode="dual", dual_low=L)):
            r = ref.reference_mvm(X, W, kind, K, Kw, rows=rows, columns=2 * Kw + 1,
                                  adc_bits=adc_bits, input_bits=input_bits, out_frac_bits=ofb,
                                  **extra, **vref)
            assert [[Fraction(v, 2**ofb) for v in row] for row in r["y_int"]] == _exact(X, W)
            assert r["clipped_conversions"] == 0
            assert np.max(r["level_sum"]) <= L


def test_multilevel_exact_hand_example():
    # binary:8/3, x = [-45, 64, 19], w = [1, -2, 3]: y = -45 - 128 + 57 = -116.
    # levels per cycle: p0 [5, 0, 3], p1 [5, 0, 2], p2 [0, 1, 0] -> A = 8, 7, 1 <= L = 15
    X = [[-45, 64, 19]]
    W = [[1], [-2], [3]]
    r = ref.reference_mvm(X, W, "binary", 8, 4, rows=15, columns=4, adc_bits=4,
                          x_digit_bits=3, input_bits=3, out_frac_bits=0)
    assert r["y_int"] == [[-116]]
    assert r["level_sum"] == [[[8, 7, 1]]]
    assert r["active_rows"] == [[[2, 2, 1]]]
    assert r["full_scale"] == [[[15, 15, 15]]]    # variable: max(A, L)
    # radix4:8/2 (den 64), x = [1, -1/16, 64]: y = 1*2 + (-1/16)*(-3) + 64*1 = 66 + 3/16
    X = [[1.0, -1 / 16, 64.0]]
    W = [[2], [-3], [1]]
    r = ref.reference_mvm(X, W, "radix4", 8, 4, rows=15, columns=4, adc_bits=4,
                          x_per_cycle=2, input_bits=3, out_frac_bits=6)
    assert r["y_int"] == [[66 * 64 + 12]]
    # cycle 0: -1/16 at level 4; cycle 1: 1 at level 4; cycle 3: 64 at level 1
    assert r["level_sum"] == [[[4, 4, 0, 1]]]
    assert r["active_rows"] == [[[1, 1, 0, 1]]]


@pytest.mark.parametrize("case", range(6))
def test_multilevel_equals_one_hot(case):
    # both representations are lossless here, so both equal X @ W and each other exactly
    rng = random.Random(100 + case)
    radix = case % 2 == 0
    L, rows, Kw = 15, 15, 3
    B, M, N = 2, rng.randint(3, 20), rng.randint(1, 3)
    W = [[rng.randint(-2, 2) for _ in range(N)] for _ in range(M)]
    if radix:
        K = rng.choice([6, 8])
        X = _rand_levels_x(rng, "radix4", K, 2, B, M, rows, L)
        multi = ref.reference_mvm(X, W, "radix4", K, Kw, rows=rows, columns=7, adc_bits=4,
                                  x_per_cycle=2, input_bits=3, out_frac_bits=K - 2)
        one = ref.reference_mvm(X, W, "radix4", K, Kw, rows=rows, columns=7, adc_bits=4,
                                out_frac_bits=K - 2)
        assert len(multi["level_sum"][0][0]) == ref.radix4_cycles(K, 2) < K - 1
    else:
        K, Nd = rng.choice([(6, 2), (7, 3), (8, 4)])
        X = _rand_levels_x(rng, "binary", K, Nd, B, M, rows, L)
        multi = ref.reference_mvm(X, W, "binary", K, Kw, rows=rows, columns=7, adc_bits=4,
                                  x_digit_bits=Nd, input_bits=Nd, out_frac_bits=0)
        # Eq. 1 binary: at most rows = L active rows per cycle, lossless
        one = ref.reference_mvm(X, W, "binary", K, Kw, rows=rows, columns=7, adc_bits=4,
                                out_frac_bits=0)
    assert multi["y_int"] == one["y_int"]
    assert [[Fraction(v, 2 ** (K - 2 if radix else 0)) for v in row]
            for row in multi["y_int"]] == _exact(X, W)
    assert multi["array_cycles"] < one["array_cycles"]


# binary:5/3 (P = 2, D = 7, 3 level bits), rows = L = 7, 1 column tile of 3 columns.
# x = [7, -5]: cycle 0 levels [7, 5], signs [1, 0]; cycle 1 all 0 (A = 0, F = L = 7).
# w = [1, 1] (K = 3 planes [0, 1, 1]): XNOR row 0 = [0, 1, 1], row 1 = [1, 0, 0]
# counts of cycle 0: [5, 7, 7], A = 12, variable F = 12: ideal codes floor(count * 7 / 12)
X_DAC = [[7, -5]]
W_DAC = [[1], [1]]
DAC = dict(rows=7, columns=3, adc_bits=3, x_digit_bits=3, input_bits=3)


def test_dac_mismatch_charge_by_hand():
    ideal = ref.reference_mvm(X_DAC, W_DAC, "binary", 5, 3, **DAC)
    assert ideal["codes"][0][0] == [[[2, 4, 4]], [[0, 0, 0]]]
    assert ideal["level_sum"] == [[[12, 0]]] and ideal["active_rows"] == [[[2, 0]]]
    assert ideal["full_scale"] == [[[12, 7]]]
    levels, xnor = [7, 5], [[0, 1], [1, 0], [1, 0]]   # xnor[c][r] of cycle 0
    for chip_seed, sig_cell in ((0, 0), (0, 3277), (8, 3277)):
        sig_dac = 6554
        r = ref.reference_mvm(X_DAC, W_DAC, "binary", 5, 3, **DAC, sigma_dac_fx=sig_dac,
                              sigma_cell_fx=sig_cell, chip_seed=chip_seed)
        # Sec. 4.4 caps and Sec. 4.8 gains, by the doc's formulas
        cap = [[4096 + ((4096 * sig_cell * ref.normal_fx(chip_seed, 1, rr, c)) >> 32)
                for c in range(3)] for rr in range(7)]
        g = [[sum(4096 + ((4096 * sig_dac * ref.normal_fx(chip_seed, 6, rr, k, i)) >> 32)
                  for i in range(2**k)) for k in range(3)] for rr in range(2)]
        codes = []
        for c in range(3):
            q_ch = sum((cap[rr][c] * g[rr][k]) >> 12 for k in range(3) for rr in range(2)
                       if (levels[rr] >> k) & 1 and xnor[c][rr])
            q_tot = sum(cap[rr][c] for rr in range(7))
            v = (7 * q_ch << 20) // q_tot
            codes.append(min(v * 7 // (12 << 20), 7))    # ideal CDAC, F = 12, L = 7
        assert r["codes"][0][0] == [[codes], [[0, 0, 0]]]
        if (chip_seed, sig_cell) == (0, 0):
            # g[0] = [3323, 8305, 15539]: level 7 of row 0 holds 27167 < 7 * 4096, i.e.
            # 6.63 level units < 48/7: the code of columns 1 and 2 drops from 4 to 3
            assert g[0] == [3323, 8305, 15539]
            assert codes == [2, 3, 3]
        assert r["level_sum"] == ideal["level_sum"]


def test_dac_mismatch_applies_to_binary_rows():
    # Sec. 4.8 read literally: a D = 1 format drives level 1 through DAC bit 0 (one unit),
    # so sigma_dac_fx moves its charge too. rows = 7, x = 1 on 6 rows, w = 1: count = A = 6
    X = [[1] * 6]
    W = [[1]] * 6
    kw = dict(rows=7, columns=3, adc_bits=3, vref_mode="fixed", full_scale=7)
    ideal = ref.reference_mvm(X, W, "binary", 3, 3, **kw)
    sig = 13107
    r = ref.reference_mvm(X, W, "binary", 3, 3, **kw, sigma_dac_fx=sig, chip_seed=5)
    g0 = [4096 + ((4096 * sig * ref.normal_fx(5, 6, rr, 0, 0)) >> 32) for rr in range(6)]
    assert ref.row_dac_gains(5, sig, 6, 1) == [[x] for x in g0]
    # plane 1 (b0+ = +1 for x = 1 and w = 1): every row XNOR = 1 in column 1 (plane q = 1)
    v = (7 * sum(g0) << 20) // (7 * 4096)
    assert r["codes"][0][0][1][0][1] == min(v * 7 // (7 << 20), 7) == 5
    assert ideal["codes"][0][0][1][0][1] == 6
    assert r["dac_row_drives"] == 0 and r["dac_level_sum"] == 0


def test_noise_sigmas_scaled_by_top_level():
    # Sec. 4.8, D = 7: the static offset is off_c of Sec. 4.5 (drawn in rows) times D; the
    # comparator and sampling noise sigmas are multiplied by D before the draw
    so, sc, ss, chip_seed, seed = 30000, 20000, 20000, 1, 2
    r = ref.reference_mvm(X_DAC, W_DAC, "binary", 5, 3, **DAC, sigma_offset_fx=so,
                          sigma_cmp_fx=sc, sigma_sample_fx=ss, chip_seed=chip_seed, seed=seed)
    w = [4096, 8192, 16384]
    counts = [[5, 7, 7], [0, 0, 0]]
    F = [12, 7]

    def hand(D):
        out = []
        for p in range(2):
            row = []
            for c in range(3):
                off = ((so * ref.normal_fx(chip_seed, 3, c)) >> 12) * D
                v = (counts[p][c] << 20) + ((ss * D * ref.normal_fx(seed, 4, 0, 0, 0, p, c)) >> 12)
                noise = [(sc * D * ref.normal_fx(seed, 5, 0, 0, 0, p, c, s)) >> 12 for s in range(3)]
                row.append(ref.sar_convert(v, off, noise, F[p], w))
            out.append([row])
        return out

    assert r["codes"][0][0] == hand(7)
    assert hand(7) != hand(1)       # the scaling is visible in this example
    # the offset is scaled after the draw: D * off_c, not (sigma_offset_fx * D * n) >> 12
    offs = [((so * ref.normal_fx(chip_seed, 3, c)) >> 12) * 7 for c in range(3)]
    assert offs != [(so * 7 * ref.normal_fx(chip_seed, 3, c)) >> 12 for c in range(3)]


def test_vref_levels_in_level_units():
    # binary:5/3 on rows = 7: levels lie in [L, rows * D] = [7, 49]; defaults rows * D
    r = ref.reference_mvm(X_DAC, W_DAC, "binary", 5, 3, **DAC, vref_mode="fixed")
    assert r["full_scale"] == [[[49, 49]]]
    r = ref.reference_mvm(X_DAC, W_DAC, "binary", 5, 3, **DAC, vref_mode="fixed", full_scale=30)
    # code = floor(count * 7 / 30): counts [5, 7, 7] -> [1, 1, 1]
    assert r["codes"][0][0][0] == [[1, 1, 1]] and r["full_scale"] == [[[30, 30]]]
    r = ref.reference_mvm(X_DAC, W_DAC, "binary", 5, 3, **DAC, vref_mode="dual")
    # A = 12 > dual_low = 7: dual_high = 49 (default); A = 0: dual_low
    assert r["full_scale"] == [[[49, 7]]] and r["high_vref_conversions"] == 3
    for bad in (dict(full_scale=50), dict(full_scale=6)):
        with pytest.raises(ValueError):
            ref.reference_mvm(X_DAC, W_DAC, "binary", 5, 3, **DAC, vref_mode="fixed", **bad)
    with pytest.raises(ValueError):
        ref.reference_mvm(X_DAC, W_DAC, "binary", 5, 3, **DAC, vref_mode="dual", dual_high=50)
    # a D = 1 format keeps [L, rows]
    with pytest.raises(ValueError):
        ref.reference_mvm([[1, 1]], W_DAC, "binary", 5, 3, rows=7, columns=3, adc_bits=3,
                          input_bits=3, vref_mode="fixed", full_scale=8)


def test_row_dac_errors():
    X, W = [[1.0]], [[1]]
    base = dict(rows=7, columns=3, adc_bits=3)
    # D = 4 (radix4:8/2) needs 3 bits; D = 7 (binary:8/3) needs 3 bits
    with pytest.raises(ValueError):
        ref.reference_mvm(X, W, "radix4", 8, 3, **base, x_per_cycle=2, input_bits=2)
    ref.reference_mvm(X, W, "radix4", 8, 3, **base, x_per_cycle=2, input_bits=3)
    with pytest.raises(ValueError):
        ref.reference_mvm([[1]], W, "binary", 8, 3, **base, x_digit_bits=3, input_bits=2)
    ref.reference_mvm([[1]], W, "binary", 8, 3, **base, x_digit_bits=3, input_bits=3)
    # binary:3/4: N' = 2, D = 3 fits 2 bits
    ref.reference_mvm([[1]], W, "binary", 3, 3, **base, x_digit_bits=4, input_bits=2)
    # radix4:8/3: D = 16 needs 5 bits (the DAC's most)
    with pytest.raises(ValueError):
        ref.reference_mvm(X, W, "radix4", 8, 3, **base, x_per_cycle=3, input_bits=4)
    ref.reference_mvm(X, W, "radix4", 8, 3, **base, x_per_cycle=3, input_bits=5)
    # rows * (2**input_bits - 1) <= 16384
    ref.reference_mvm([[1]], W, "binary", 3, 3, rows=5461, columns=3, adc_bits=3, input_bits=2)
    with pytest.raises(ValueError):
        ref.reference_mvm([[1]], W, "binary", 3, 3, rows=5462, columns=3, adc_bits=3,
                          input_bits=2)
    with pytest.raises(ValueError):
        ref.reference_mvm([[1]], W, "binary", 3, 3, rows=16385, columns=3, adc_bits=3)
    for bits in (0, 6):
        with pytest.raises(ValueError):
            ref.reference_mvm([[1]], W, "binary", 3, 3, **base, input_bits=bits)
    # each option belongs to its kind
    with pytest.raises(ValueError):
        ref.reference_mvm([[1]], W, "binary", 6, 3, **base, x_per_cycle=2, input_bits=3)
    with pytest.raises(ValueError):
        ref.reference_mvm(X, W, "radix4", 8, 3, **base, x_digit_bits=2, input_bits=3)


def test_dac_events_by_hand():
    # radix4:4/2 (den 4, planes 1/4, 1, 4): P = 2, D = 4; cycle 0 carries planes 0 (level 1)
    # and 1 (level 4), cycle 1 plane 2 (level 1). x = [1/4, 1, -4, 0]:
    # cycle 0 levels [1, 4, 0, 0] (2 rows driven, A = 5), cycle 1 [0, 0, 1, 0] (1 row, A = 1)
    X = [[0.25, 1.0, -4.0, 0.0]]
    W = [[1, -1], [2, 0], [-2, 1], [1, 2]]
    kw = dict(rows=7, columns=3, adc_bits=3, x_per_cycle=2, input_bits=3, out_frac_bits=2)
    r = ref.reference_mvm(X, W, "radix4", 4, 3, **kw)
    assert r["active_rows"] == [[[2, 1]]] and r["level_sum"] == [[[5, 1]]]
    # lossless (F = 7 >= A): y = [1/4 + 2 + 8, -1/4 - 4] = [41/4, -17/4]
    assert r["y_int"] == [[41, -17]]
    # G = 1 output per column tile: U = 2 tiles of C_u = 3 columns, T = 1
    assert r["array_cycles"] == 2 * 2
    assert r["bitcell_mults"] == 2 * (2 + 1) * 3           # rows driven, not A
    assert r["dac_row_drives"] == 2 * (2 + 1)              # per tile cycle, not per column
    assert r["dac_level_sum"] == 2 * (5 + 1)
    assert r["reshape_words"] == 2 * 1                     # ceil(4 * K = 16 bits / 32)
    # skipping: x = [1/4, 1, 0, 0] leaves cycle 1 all masked (A = 0)
    X2 = [[0.25, 1.0, 0.0, 0.0]]
    r2 = ref.reference_mvm(X2, W, "radix4", 4, 3, **kw, skip_masked_cycles=True)
    assert r2["array_cycles"] == 2 and r2["level_sum"] == [[[5, 0]]]
    assert r2["dac_row_drives"] == 2 * 2 and r2["dac_level_sum"] == 2 * 5
    assert r2["y_int"] == [[9, -1]]
    # the same data through D = 1 formats: both DAC counters stay 0
    r1 = ref.reference_mvm(X, W, "radix4", 4, 3, **kw | dict(x_per_cycle=1))
    assert r1["dac_row_drives"] == 0 and r1["dac_level_sum"] == 0
    assert r1["level_sum"] == r1["active_rows"] == [[[1, 1, 1]]]
    assert r1["bitcell_mults"] == 2 * 3 * 3 and r1["y_int"] == r["y_int"]
    rb = ref.reference_mvm([[1, 2, -4, 0]], W, "binary", 5, 3, rows=7, columns=3, adc_bits=3,
                           x_digit_bits=1, input_bits=1)
    assert rb["dac_row_drives"] == 0 and rb["dac_level_sum"] == 0
    assert rb["y_int"] == [[(1 + 4 + 8) * 4096, (-1 - 4) * 4096]]
    # binary:5/2 (D = 3): x = [1, 2, -4, 0] -> p0 levels [1, 2, 0, 0], p1 [0, 0, 1, 0]
    rd = ref.reference_mvm([[1, 2, -4, 0]], W, "binary", 5, 3, rows=7, columns=3, adc_bits=3,
                           x_digit_bits=2, input_bits=2)
    assert rd["level_sum"] == [[[3, 1]]] and rd["active_rows"] == [[[2, 1]]]
    assert rd["dac_row_drives"] == 2 * 3 and rd["dac_level_sum"] == 2 * 4
    assert rd["y_int"] == rb["y_int"]
