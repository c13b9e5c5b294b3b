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

EVENT_NAMES = (
    "array_cycles", "bitcell_mults", "adc_conversions", "sar_steps", "nmc_outputs",
    "reshape_words", "cima_load_words", "clipped_conversions", "high_vref_conversions",
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


def encode_binary(x, K: int) -> list[int]:
    """Canonical Eq. 1 encoding; returns the stored/applied bit (0/1) of planes j = 0..K-1."""
    if K < 3:
        raise ValueError("BinaryFormat needs K >= 3")
    if isinstance(x, bool):
        raise ValueError("not an integer")
    if isinstance(x, float):
        if not math.isfinite(x) or x != int(x):
            raise ValueError(f"{x} is not an integer")
        x = int(x)
    elif isinstance(x, Fraction):
        if x.denominator != 1:
            raise ValueError(f"{x} is not an integer")
        x = int(x)
    else:
        x = int(x)
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
                  half_lsb_reconstruction: bool = False, out_frac_bits: int = 12,
                  out_bits: int = 48, out_rounding: str = "half_even",
                  sigma_cell_fx: int = 0, parasitic_fx: int = 0, sigma_cdac_fx: int = 0,
                  sigma_offset_fx: int = 0, sigma_cmp_fx: int = 0, sigma_sample_fx: int = 0,
                  chip_seed: int = 0, seed: int = 0,
                  out_scale=None, out_scale_frac_bits: int = 0, out_offset=None,
                  adc_rounding: str = "floor") -> dict:
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
    if full_scale is None:
        full_scale = rows
    if dual_low is None:
        dual_low = L
    if dual_high is None:
        dual_high = rows
    for name, val in (("full_scale", full_scale), ("dual_low", dual_low), ("dual_high", dual_high)):
        if not (L <= val <= rows):
            raise ValueError(f"{name}={val} outside [L, rows]")

    # ---- encode the operands (Sec. 2) -------------------------------------------------
    if x_kind == "binary":
        P = Kx
        pw_x = binary_plane_weights(Kx)
        log2_den_x = 1
        # x_bit[b][m][p], x_act[b][m][p]
        x_bit, x_act = [], []
        for b in range(B):
            bits_b, act_b = [], []
            for m in range(M):
                bits = encode_binary(X[b][m], Kx)
                on = 0 if (mask_zero_inputs and int(X[b][m]) == 0) else 1
                bits_b.append(bits)
                act_b.append([on] * P)
            x_bit.append(bits_b)
            x_act.append(act_b)
    elif x_kind == "radix4":
        P = Kx - 1
        pw_x = [4**j for j in range(P)]
        log2_den_x = Kx - 2
        x_bit, x_act = [], []
        for b in range(B):
            bits_b, act_b = [], []
            for m in range(M):
                sign, mask = encode_radix4(X[b][m], Kx)
                bits_b.append([sign] * P)
                act_b.append(list(mask))
            x_bit.append(bits_b)
            x_act.append(act_b)
    else:
        raise ValueError(x_kind)
    pw_w = binary_plane_weights(Kw)
    w_bit = [[encode_binary(W[m][n], Kw) for n in range(N)] for m in range(M)]

    # ---- geometry (Sec. 3) --------------------------------------------------------------
    G = columns // Kw
    if G < 1:
        raise ValueError("columns < Kw")
    T = max(1, -(-M // rows))
    U = max(1, -(-N // G)) if N else 0

    # ---- static mismatch, keyed by chip_seed (Sec. 4.4, 4.5) ---------------------------
    cap = [[CAP_UNIT] * columns for _ in range(rows)]
    if sigma_cell_fx:
        for r in range(rows):
            for c in range(columns):
                cap[r][c] = CAP_UNIT + ((CAP_UNIT * sigma_cell_fx *
                                         normal_fx(chip_seed, STREAM_CELL_CAP, r, c)) >> 32)
    c_par = (rows * CAP_UNIT * parasitic_fx) >> 16
    q_tot = [sum(cap[r][c] for r in range(rows)) + c_par for c in range(columns)]
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
    off = [((sigma_offset_fx * normal_fx(chip_seed, STREAM_CMP_OFFSET, c)) >> 12)
           if sigma_offset_fx else 0 for c in range(columns)]

    # ---- array cycles --------------------------------------------------------------------
    ev = dict.fromkeys(EVENT_NAMES, 0)
    codes = [[[[[0] * Kw for _ in range(N)] for _ in range(P)] for _ in range(B)] for _ in range(T)]
    # each conversion's full scale (they differ only with the per-column dual choice)
    col_fs = [[[[[0] * Kw for _ in range(N)] for _ in range(P)] for _ in range(B)] for _ in range(T)]
    per_column = dual_per_column and vref_mode == "dual"
    fs_out = [[[0] * P for _ in range(B)] for _ in range(T)]
    act_out = [[[0] * P for _ in range(B)] for _ in range(T)]

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
                    active = [x_act[b][r0 + r][p] == 1 for r in range(rows_in_tile)]
                    A = sum(active)
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
                    act_out[t][b][p] = A
                    ev["bitcell_mults"] += A * C_u
                    if skip_masked_cycles and A == 0:
                        continue    # the controller skips an all-masked cycle: codes stay 0
                    ev["array_cycles"] += 1
                    ev["adc_conversions"] += C_u
                    ev["sar_steps"] += (Nb + (1 if per_column else 0)) * C_u
                    for g, n in enumerate(outs):
                        for q in range(Kw):
                            c = g * Kw + q
                            q_ch = 0
                            for r in range(rows_in_tile):
                                if active[r] and x_bit[b][r0 + r][p] == w_bit[r0 + r][n][q]:
                                    q_ch += cap[r][c]
                            v = ((rows * q_ch) << ANALOG_FRAC_BITS) // q_tot[c]
                            if sigma_sample_fx:
                                v += (sigma_sample_fx *
                                      normal_fx(seed, STREAM_SAMPLE, t, u, b, p, c)) >> 12
                            # comparator noise of SAR step s; step Nb is the range decision
                            noise = [((sigma_cmp_fx *
                                       normal_fx(seed, STREAM_CMP_NOISE, t, u, b, p, c, s)) >> 12)
                                     if sigma_cmp_fx else 0 for s in range(Nb + 1)]
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
                    A = act_out[t][b][p]
                    if skip_masked_cycles and A == 0:
                        continue    # a skipped cycle adds no NMC term
                    for q in range(Kw):
                        sc = scale_fx(col_fs[t][b][p][n][q], L, S)
                        code = codes[t][b][p][n][q]
                        if half_lsb_reconstruction:
                            cnt = ((2 * code + 1) * sc) >> 1
                        else:
                            cnt = code * sc
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
    }
    result.update(ev)
    return result
