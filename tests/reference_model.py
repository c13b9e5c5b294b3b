"""Plain-Python reference twin of the imcsim macro.

Written independently from ``imcsim`` and ``kernels`` (it must never import them), following
docs/hardware-model.md literally: Python integers, explicit loops over tiles, vectors, planes,
columns and rows.  It is slow but meant to be obviously correct.

Section numbers in comments refer to docs/hardware-model.md.
"""
from __future__ import annotations

import math
from fractions import Fraction

MASK64 = (1 << 64) - 1

ANALOG_FRAC_BITS = 20
CAP_UNIT = 4096
CDAC_UNIT = 4096

STREAM_CELL_CAP = 1
STREAM_CDAC = 2
STREAM_CMP_OFFSET = 3
STREAM_SAMPLE = 4
STREAM_CMP_NOISE = 5
STREAM_ROW_DAC = 6

DAC_UNIT = 4096           # Sec. 4.8: one row-DAC unit source
MAX_INPUT_BITS = 5         # Sec. 4.8: the row DAC's resolution, 1..5 bits
MAX_DAC_ROW_LEVELS = 16384  # Sec. 4.8: rows * (2**input_bits - 1) <= 16384

EVENT_NAMES = (
    "array_cycles", "bitcell_mults", "adc_conversions", "sar_steps", "nmc_outputs",
    "reshape_words", "cima_load_words", "clipped_conversions", "high_vref_conversions",
    "dac_row_drives", "dac_level_sum",
)


# ----------------------------------------------------------------------------------------
# Sec. 5: counter-based randomness
# ----------------------------------------------------------------------------------------
def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def key_hash(seed: int, stream: int, *keys: int) -> int:
    h = splitmix64(seed & MASK64)
    for value in (stream,) + keys:
        h = splitmix64(h ^ (value & MASK64))
    return h


def normal_fx(seed: int, stream: int, *keys: int) -> int:
    """Irwin-Hall N(0,1) in units of 2**-16, integers only."""
    h = key_hash(seed, stream, *keys)
    total = 0
    for i in range(3):
        u = splitmix64((h + i) & MASK64)
        for k in range(4):
            total += (u >> (16 * k)) & 0xFFFF
    return total - 393210


def sigma_to_fx(sigma: float) -> int:
    return int(round(sigma * 2**16))


# ----------------------------------------------------------------------------------------
# Sec. 2: number formats
# ----------------------------------------------------------------------------------------
def binary_plane_weights(K: int) -> list[int]:
    return [1, 1] + [2 ** (j - 1) for j in range(2, K)]


def _as_integer(x) -> int:
    """An element of a BinaryFormat as a Python int; non-integers raise ValueError."""
    if isinstance(x, bool):
        raise ValueError("not an integer")
    if isinstance(x, float):
        if not math.isfinite(x) or x != int(x):
            raise ValueError(f"{x} is not an integer")
        return int(x)
    if isinstance(x, Fraction):
        if x.denominator != 1:
            raise ValueError(f"{x} is not an integer")
        return int(x)
    return int(x)


def encode_binary(x, K: int) -> list[int]:
    """Canonical Eq. 1 encoding; returns the stored/applied bit (0/1) of planes j = 0..K-1."""
    if K < 3:
        raise ValueError("BinaryFormat needs K >= 3")
    x = _as_integer(x)
    n = K - 2
    if abs(x) > 2**n:
        raise ValueError(f"{x} out of range for BinaryFormat({K})")
    if x % 2 != 0:
        b0m, b0p, s = -1, +1, x
    elif x >= 0:
        b0m, b0p, s = +1, +1, x - 1
    else:
        b0m, b0p, s = -1, -1, x + 1
    assert s % 2 != 0 and abs(s) <= 2**n - 1
    T = (s + 2**n - 1) // 2
    bits = [1 if b0m > 0 else 0, 1 if b0p > 0 else 0]
    for i in range(1, n + 1):
        bits.append((T >> (i - 1)) & 1)
    return bits


def decode_binary(bits) -> Fraction:
    K = len(bits)
    pw = binary_plane_weights(K)
    return Fraction(sum(pw[j] * (1 if bits[j] else -1) for j in range(K)), 2)


def radix4_den(K: int) -> int:
    return 4 ** ((K - 2) // 2)


def encode_radix4(value, K: int) -> tuple[int, list[int]]:
    """Eq. 2 encoding: (sign bit, [M_0 .. M_{K-2}])."""
    if K < 4 or K % 2 != 0:
        raise ValueError("Radix4Format needs an even K >= 4")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not finite")
    v = Fraction(value)
    mask = [0] * (K - 1)
    if v == 0:
        return 1, mask
    sign = 1 if v > 0 else 0
    mag = abs(v) * radix4_den(K)
    if mag.denominator != 1:
        raise ValueError(f"{value} not representable in Radix4Format({K})")
    m = mag.numerator
    for j in range(K - 1):
        if m == 4**j:
            mask[j] = 1
            return sign, mask
    raise ValueError(f"{value} not representable in Radix4Format({K})")


def decode_radix4(sign: int, mask, K: int) -> Fraction:
    mag = sum(Fraction(4**i, radix4_den(K)) for i in range(K - 1) if mask[i])
    return mag if sign else -mag


# ----------------------------------------------------------------------------------------
# Sec. 2.3: multi-level mappings of a streamed operand (row input bit s, level d per cycle)
# ----------------------------------------------------------------------------------------
def _check_per_cycle(K: int, E: int) -> None:
    if K < 4 or K % 2 != 0:
        raise ValueError("Radix4Format needs an even K >= 4")
    if not 1 <= E <= K - 1:
        raise ValueError(f"radix4:{K}/{E}: per_cycle must lie in [1, K-1]")


def _check_digit_bits(K: int, N: int) -> None:
    if K < 3:
        raise ValueError("BinaryFormat needs K >= 3")
    if not 1 <= N <= 4:
        raise ValueError(f"binary:{K}/{N}: digit_bits must lie in [1, 4]")


def radix4_cycles(K: int, E: int = 1) -> int:
    """P = ceil((K-1)/E) cycles of radix4:K/E."""
    _check_per_cycle(K, E)
    return -(-(K - 1) // E)


def radix4_cycle_weights(K: int, E: int = 1) -> list[int]:
    """pw_p = 4**(E*p)."""
    return [4 ** (E * p) for p in range(radix4_cycles(K, E))]


def radix4_top_level(K: int, E: int = 1) -> int:
    """D = 4**(E'-1), E' = min(E, K-1)."""
    _check_per_cycle(K, E)
    return 4 ** (min(E, K - 1) - 1)


def encode_radix4_levels(value, K: int, E: int = 1) -> tuple[int, list[int]]:
    """radix4:K/E: (sign bit, [d_0 .. d_{P-1}]). Mask plane j = E*p + i of Eq. 2 drives
    level 4**i in cycle p = j // E; the sign bit is the row input of every cycle."""
    P = radix4_cycles(K, E)
    sign, mask = encode_radix4(value, K)
    levels = [0] * P
    for j in range(K - 1):
        if mask[j]:
            p = j // E
            levels[p] = 4 ** (j - E * p)
    return sign, levels


def binary_digit_cycles(K: int, N: int) -> int:
    """P = ceil((K-1)/N) cycles of binary:K/N."""
    _check_digit_bits(K, N)
    return -(-(K - 1) // N)


def binary_digit_weights(K: int, N: int) -> list[int]:
    """pw_p = 2**(N*p) (denominator 1)."""
    return [2 ** (N * p) for p in range(binary_digit_cycles(K, N))]


def binary_digit_top_level(K: int, N: int) -> int:
    """D = 2**N' - 1, N' = min(N, K-1)."""
    _check_digit_bits(K, N)
    return 2 ** min(N, K - 1) - 1


def encode_binary_digits(x, K: int, N: int) -> tuple[int, list[int]]:
    """binary:K/N: (sign bit, [d_0 .. d_{P-1}]), d_p = (|x| >> N*p) & (2**N - 1); the sign
    bit is 1 for x >= 0 (zero: sign 1, level 0 in every cycle)."""
    P = binary_digit_cycles(K, N)
    x = _as_integer(x)
    if abs(x) > 2 ** (K - 2):
        raise ValueError(f"{x} out of range for BinaryFormat({K}, digit_bits={N})")
    mag = abs(x)
    return (1 if x >= 0 else 0), [(mag >> (N * p)) & (2**N - 1) for p in range(P)]


def decode_levels(sign: int, levels, weights, den: int) -> Fraction:
    """value = (+/-) sum_p d_p * pw_p / den (the inverse of both Sec. 2.3 mappings)."""
    mag = Fraction(sum(d * w for d, w in zip(levels, weights)), den)
    return mag if sign else -mag


# ----------------------------------------------------------------------------------------
# Sec. 4.8: row-DAC gains and the bit-sliced column charge
# ----------------------------------------------------------------------------------------
def row_dac_gains(chip_seed: int, sigma_dac_fx: int, rows: int, level_bits: int) -> list[list[int]]:
    """g[r][k] = sum over the 2**k unit sources i of bit k of row r's DAC of
    DAC_UNIT + ((DAC_UNIT * sigma_dac_fx * normal_fx(chip_seed, STREAM_ROW_DAC, r, k, i)) >> 32)."""
    g = []
    for r in range(rows):
        gr = []
        for k in range(level_bits):
            gk = 0
            for i in range(2**k):
                err = 0
                if sigma_dac_fx:
                    err = (DAC_UNIT * sigma_dac_fx *
                           normal_fx(chip_seed, STREAM_ROW_DAC, r, k, i)) >> 32
                gk += DAC_UNIT + err
            gr.append(gk)
        g.append(gr)
    return g


def column_charge(levels, xnor, cap_col, g) -> int:
    """Q_ch = sum_k sum over rows r with bit k of d_r set and XNOR = 1 of (cap[r] * g[r][k]) >> 12.
    ``levels[r]`` = d_r, ``xnor[r]`` in {0, 1}, ``cap_col[r]`` = cap[r, c], ``g`` from row_dac_gains."""
    level_bits = len(g[0]) if g else 0
    q = 0
    for k in range(level_bits):
        for r in range(len(levels)):
            if (levels[r] >> k) & 1 and xnor[r]:
                q += (cap_col[r] * g[r][k]) >> 12
    return q


# ----------------------------------------------------------------------------------------
# Sec. 4.5: SAR ADC, and Sec. 4.6 helpers
# ----------------------------------------------------------------------------------------
def ideal_adc_code(count: int, F: int, L: int) -> int:
    return min(max((count * L) // F, 0), L)


def sar_convert(v: int, off: int, noise: list[int], F: int, w: list[int], shift: int = 0) -> int:
    """Step-by-step SAR of Sec. 4.5. ``w[k]`` is capacitor k's weight, ``noise[s]`` the
    comparator noise of step s, ``shift`` the ADC threshold shift (all in the doc's
    fixed-point units)."""
    Nb = len(w)
    W_tot = sum(w)
    D = 0
    for s in range(Nb):
        trial = D | (1 << (Nb - 1 - s))
        wsum = sum(w[k] for k in range(Nb) if (trial >> k) & 1)
        if (v + off + shift + noise[s]) * W_tot >= (F * wsum) << ANALOG_FRAC_BITS:
            D = trial
    return D


def scale_fx(F: int, L: int, S: int) -> int:
    return ((F << (S + 1)) + L) // (2 * L)


def saturate(v: int, bits: int) -> int:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return min(max(v, lo), hi)


def wrap(v: int, bits: int) -> int:
    half = 1 << (bits - 1)
    return ((v + half) % (1 << bits)) - half


def round_shift(v: int, shift: int, mode: str) -> int:
    """Shift right by ``shift`` with rounding (or left when shift <= 0)."""
    if shift <= 0:
        return v << (-shift)
    if mode == "floor":
        return v >> shift
    if mode == "half_up":
        return (v + (1 << (shift - 1))) >> shift
    if mode == "half_even":
        q = v >> shift
        r = v - (q << shift)
        half = 1 << (shift - 1)
        if r > half or (r == half and (q & 1)):
            q += 1
        return q
    raise ValueError(mode)


# ----------------------------------------------------------------------------------------
# The whole macro
# ----------------------------------------------------------------------------------------
def reference_mvm(X, W, x_kind: str, Kx: int, Kw: int, *,
                  rows: int, columns: int, adc_bits: int,
                  vref_mode: str = "variable", full_scale: int | None = None,
                  dual_low: int | None = None, dual_high: int | None = None,
                  mask_zero_inputs: bool = False, skip_masked_cycles: bool = False,
                  dual_per_column: bool = False,
                  scale_frac_bits: int = 16, acc_bits: int = 48, overflow: str = "saturate",
                  half_lsb_reconstruction: bool = False, code_offsets_lossless=None,
                  code_offsets_lossy=None, code_offsets_zero=None,
                  code_offset_frac_bits: int = 4,
                  out_frac_bits: int = 12,
                  out_bits: int = 48, out_rounding: str = "half_even",
                  sigma_cell_fx: int = 0, parasitic_fx: int = 0, sigma_cdac_fx: int = 0,
                  sigma_offset_fx: int = 0, sigma_cmp_fx: int = 0, sigma_sample_fx: int = 0,
                  chip_seed: int = 0, seed: int = 0,
                  out_scale=None, out_scale_frac_bits: int = 0, out_offset=None,
                  adc_rounding: str = "floor",
                  x_per_cycle: int = 1, x_digit_bits: int = 0, input_bits: int = 1,
                  sigma_dac_fx: int = 0) -> dict:
    """Y = X @ W on the macro (Sec. 3-4, 6).

    ``x_kind`` "binary" with ``x_digit_bits`` 0 is Eq. 1 (Sec. 2.1), with N >= 1 the signed
    N-bit digits of ``binary:Kx/N`` (Sec. 2.3); "radix4" with ``x_per_cycle`` E is
    ``radix4:Kx/E`` (E = 1: Sec. 2.2). ``input_bits`` is the row DAC's resolution and
    ``sigma_dac_fx`` its unit-source mismatch (Sec. 4.8); every analog quantity is in level
    units vdd / (rows * D), D the format's top level.
    """
    Nb = adc_bits
    L = 2**Nb - 1
    S = scale_frac_bits
    if rows < L:
        raise ValueError("rows >= L required")
    X = [list(row) for row in X]
    W = [list(row) for row in W]
    B = len(X)
    M = len(W)
    N = len(W[0]) if M else 0
    assert all(len(row) == M for row in X)
    assert all(len(row) == N for row in W)

    # ---- the streamed format: cycles, cycle weights, denominator, top level (Sec. 2) ----
    if x_kind == "binary":
        if x_per_cycle != 1:
            raise ValueError("x_per_cycle applies to radix4 only")
        if x_digit_bits == 0:
            P = Kx
            pw_x = binary_plane_weights(Kx)
            log2_den_x = 1
            D = 1
        else:
            P = binary_digit_cycles(Kx, x_digit_bits)
            pw_x = binary_digit_weights(Kx, x_digit_bits)
            log2_den_x = 0
            D = binary_digit_top_level(Kx, x_digit_bits)
    elif x_kind == "radix4":
        if x_digit_bits != 0:
            raise ValueError("x_digit_bits applies to binary only")
        P = radix4_cycles(Kx, x_per_cycle)
        pw_x = radix4_cycle_weights(Kx, x_per_cycle)
        log2_den_x = Kx - 2
        D = radix4_top_level(Kx, x_per_cycle)
    else:
        raise ValueError(x_kind)
    level_bits = D.bit_length()     # S of Sec. 2.3 (not the NMC's scale_frac_bits)

    # ---- the row DAC (Sec. 4.8) ---------------------------------------------------------
    if not isinstance(input_bits, int) or not 1 <= input_bits <= MAX_INPUT_BITS:
        raise ValueError(f"input_bits={input_bits} outside [1, {MAX_INPUT_BITS}]")
    if rows * (2**input_bits - 1) > MAX_DAC_ROW_LEVELS:
        raise ValueError(f"rows * (2**input_bits - 1) = {rows * (2**input_bits - 1)} "
                         f"> {MAX_DAC_ROW_LEVELS}")
    if D > 2**input_bits - 1:
        raise ValueError(f"the format's top level {D} exceeds the row DAC's "
                         f"{2**input_bits - 1} (input_bits = {input_bits})")

    # ---- Vref levels, in level units (Sec. 4.3, 4.8) --------------------------------------
    if full_scale is None:
        full_scale = rows * D
    if dual_low is None:
        dual_low = L
    if dual_high is None:
        dual_high = rows * D
    # only the levels the mode programs are checked (the variable mode programs none)
    in_use = {"fixed": ("full_scale",), "dual": ("dual_low", "dual_high")}.get(vref_mode, ())
    for name, val in (("full_scale", full_scale), ("dual_low", dual_low), ("dual_high", dual_high)):
        if name in in_use and not (L <= val <= rows * D):
            raise ValueError(f"{name}={val} outside [L, rows * D] = [{L}, {rows * D}]")

    # ---- encode the operands (Sec. 2): row input bit x_bit[b][m][p], level x_lvl[b][m][p] --
    x_bit, x_lvl = [], []
    for b in range(B):
        bits_b, lvl_b = [], []
        for m in range(M):
            if x_kind == "binary" and x_digit_bits == 0:
                # Eq. 1: the plane bit; level 1 unless masked (Sec. 4.1)
                bits = encode_binary(X[b][m], Kx)
                on = 0 if (mask_zero_inputs and int(X[b][m]) == 0) else 1
                bits_b.append(bits)
                lvl_b.append([on] * P)
            else:
                if x_kind == "binary":
                    # mask_zero_inputs changes nothing: zero has level 0 in every cycle
                    sign, levels = encode_binary_digits(X[b][m], Kx, x_digit_bits)
                else:
                    sign, levels = encode_radix4_levels(X[b][m], Kx, x_per_cycle)
                bits_b.append([sign] * P)
                lvl_b.append(levels)
        x_bit.append(bits_b)
        x_lvl.append(lvl_b)
    pw_w = binary_plane_weights(Kw)
    w_bit = [[encode_binary(W[m][n], Kw) for n in range(N)] for m in range(M)]

    # ---- geometry (Sec. 3) --------------------------------------------------------------
    G = columns // Kw
    if G < 1:
        raise ValueError("columns < Kw")
    T = max(1, -(-M // rows))
    U = max(1, -(-N // G)) if N else 0

    # ---- static mismatch, keyed by chip_seed (Sec. 4.4, 4.5, 4.8) ----------------------
    cap = [[CAP_UNIT] * columns for _ in range(rows)]
    if sigma_cell_fx:
        for r in range(rows):
            for c in range(columns):
                cap[r][c] = CAP_UNIT + ((CAP_UNIT * sigma_cell_fx *
                                         normal_fx(chip_seed, STREAM_CELL_CAP, r, c)) >> 32)
    c_par = (rows * CAP_UNIT * parasitic_fx) >> 16
    q_tot = [sum(cap[r][c] for r in range(rows)) + c_par for c in range(columns)]
    dac_g = row_dac_gains(chip_seed, sigma_dac_fx, rows, level_bits)
    cdac_w = []
    for c in range(columns):
        wc = []
        for k in range(Nb):
            wk = 0
            for i in range(2**k):
                err = 0
                if sigma_cdac_fx:
                    err = (CDAC_UNIT * sigma_cdac_fx * normal_fx(chip_seed, STREAM_CDAC, c, k, i)) >> 32
                wk += CDAC_UNIT + err
            wc.append(wk)
        cdac_w.append(wc)
    # Sec. 4.8: non-idealities given in rows of vdd become level units, keeping their voltage:
    # the static offset is drawn in rows as in Sec. 4.5 and then multiplied by D; the dynamic
    # noises use the fixed-point sigmas times D
    off = [(((sigma_offset_fx * normal_fx(chip_seed, STREAM_CMP_OFFSET, c)) >> 12) * D)
           if sigma_offset_fx else 0 for c in range(columns)]
    sig_cmp, sig_smp = sigma_cmp_fx * D, sigma_sample_fx * D

    # ---- array cycles --------------------------------------------------------------------
    ev = dict.fromkeys(EVENT_NAMES, 0)
    codes = [[[[[0] * Kw for _ in range(N)] for _ in range(P)] for _ in range(B)] for _ in range(T)]
    # each conversion's full scale (they differ only with the per-column dual choice)
    col_fs = [[[[[0] * Kw for _ in range(N)] for _ in range(P)] for _ in range(B)] for _ in range(T)]
    per_column = dual_per_column and vref_mode == "dual"
    fs_out = [[[0] * P for _ in range(B)] for _ in range(T)]
    act_out = [[[0] * P for _ in range(B)] for _ in range(T)]   # rows driven (d > 0)
    lvl_out = [[[0] * P for _ in range(B)] for _ in range(T)]   # A = sum of levels

    for t in range(T):
        r0 = t * rows
        rows_in_tile = max(0, min(M, r0 + rows) - r0)
        for u in range(U):
            outs = list(range(u * G, min(N, (u + 1) * G)))
            C_u = Kw * len(outs)
            ev["nmc_outputs"] += B * len(outs)
            ev["reshape_words"] += B * (-(-rows_in_tile * Kx // 32))
            ev["cima_load_words"] += C_u * (-(-rows_in_tile // 32))
            for b in range(B):
                for p in range(P):
                    # Sec. 4.8: level d_r of each physical row (padding rows: 0)
                    lvl = [x_lvl[b][r0 + r][p] for r in range(rows_in_tile)]
                    driven = sum(1 for d in lvl if d > 0)
                    A = sum(lvl)
                    if vref_mode == "fixed":
                        F = full_scale
                    elif vref_mode == "variable":
                        F = max(A, L)
                    elif vref_mode == "dual" and per_column:
                        F = dual_low        # each column starts at the low level
                    elif vref_mode == "dual":
                        F = dual_low if A <= dual_low else dual_high
                    else:
                        raise ValueError(vref_mode)
                    # Sec. 6 "conversions whose F is dual_high", read literally (this also
                    # counts the low level when dual_low == dual_high)
                    high = vref_mode == "dual" and F == dual_high
                    fs_out[t][b][p] = F
                    act_out[t][b][p] = driven
                    lvl_out[t][b][p] = A
                    ev["bitcell_mults"] += driven * C_u
                    if skip_masked_cycles and A == 0:
                        continue    # the controller skips an all-masked cycle: codes stay 0
                    if D > 1:
                        ev["dac_row_drives"] += driven
                        ev["dac_level_sum"] += A
                    ev["array_cycles"] += 1
                    ev["adc_conversions"] += C_u
                    ev["sar_steps"] += (Nb + (1 if per_column else 0)) * C_u
                    for g, n in enumerate(outs):
                        for q in range(Kw):
                            c = g * Kw + q
                            xnor = [1 if x_bit[b][r0 + r][p] == w_bit[r0 + r][n][q] else 0
                                    for r in range(rows_in_tile)]
                            q_ch = column_charge(lvl, xnor, [cap[r][c] for r in range(rows_in_tile)],
                                                 dac_g)
                            v = ((rows * q_ch) << ANALOG_FRAC_BITS) // q_tot[c]
                            if sig_smp:
                                v += (sig_smp *
                                      normal_fx(seed, STREAM_SAMPLE, t, u, b, p, c)) >> 12
                            # comparator noise of SAR step s; step Nb is the range decision
                            noise = [((sig_cmp *
                                       normal_fx(seed, STREAM_CMP_NOISE, t, u, b, p, c, s)) >> 12)
                                     if sig_cmp else 0 for s in range(Nb + 1)]
                            F_c = F
                            if per_column:
                                # Sec. 4.3: the column's ADC raises its level when its held
                                # value (with offset and noise) exceeds the low one
                                if v + off[c] + noise[Nb] > (dual_low << ANALOG_FRAC_BITS):
                                    F_c = dual_high
                            col_fs[t][b][p][n][q] = F_c
                            # Sec. 4.5: half an LSB, ((F << 20) + L) // (2L), for half_up
                            shift = (((F_c << ANALOG_FRAC_BITS) + L) // (2 * L)
                                     if adc_rounding == "half_up" else 0)
                            code = sar_convert(v, off[c], noise[:Nb], F_c, cdac_w[c], shift)
                            codes[t][b][p][n][q] = code
                            if v > (F_c << ANALOG_FRAC_BITS):
                                ev["clipped_conversions"] += 1
                            if high or (per_column and F_c == dual_high):
                                ev["high_vref_conversions"] += 1

    # ---- NMC (Sec. 4.6) ---------------------------------------------------------------------
    log2_den_w = 1
    y_int = [[0] * N for _ in range(B)]
    shift = S + log2_den_x + log2_den_w - out_frac_bits
    for b in range(B):
        for n in range(N):
            acc = 0
            for t in range(T):
                for p in range(P):
                    A = lvl_out[t][b][p]      # level units (Sec. 4.8)
                    if skip_masked_cycles and A == 0:
                        continue    # a skipped cycle adds no NMC term
                    for q in range(Kw):
                        F_c = col_fs[t][b][p][n][q]
                        sc = scale_fx(F_c, L, S)
                        code = codes[t][b][p][n][q]
                        # Sec. 4.6: the column's measured mean code error (its register,
                        # 2**-code_offset_frac_bits code: for code 0, else for F <= L or
                        # F > L) is subtracted from the code; half-LSB reconstruction
                        # subtracts another -1/2 code. Exact rational arithmetic, floored once
                        # (8 fraction bits inside).
                        c = (n % G) * Kw + q
                        mu = Fraction(0)
                        if code_offsets_lossless is not None:
                            if code == 0:
                                reg = code_offsets_zero[c]
                            elif F_c <= L:
                                reg = code_offsets_lossless[c]
                            else:
                                reg = code_offsets_lossy[c]
                            mu = Fraction(reg, 2**code_offset_frac_bits)
                        if half_lsb_reconstruction:
                            mu -= Fraction(1, 2)
                        cnt = math.floor((code - mu) * sc)
                        dot = 2 * cnt - (A << S)
                        acc += dot * pw_x[p] * pw_w[q]
                        if overflow == "saturate":
                            acc = saturate(acc, acc_bits)
                        elif overflow == "wrap":
                            acc = wrap(acc, acc_bits)
                        else:
                            raise ValueError(overflow)
            yi = saturate(round_shift(acc, shift, out_rounding), out_bits)
            if out_scale is not None:
                yi = saturate(round_shift(yi * int(out_scale[n]), out_scale_frac_bits, out_rounding)
                              + (int(out_offset[n]) if out_offset is not None else 0), out_bits)
            elif out_offset is not None:
                yi = saturate(yi + int(out_offset[n]), out_bits)
            y_int[b][n] = yi

    result = {
        "y_int": y_int,
        "y": [[yi / 2**out_frac_bits for yi in row] for row in y_int],
        "codes": codes,
        "full_scale": fs_out,
        "active_rows": act_out,
        "level_sum": lvl_out,
    }
    result.update(ev)
    return result
