"""The fast batched path: one tile operation of the macro for a whole batch of input vectors.

Semantics are those of docs/hardware-model.md; this module only makes them fast:
- column counts by XNOR + POPCNT over bit-packed 64-row words, register-blocked
  2 input planes x 4 columns (dense planes);
- for sparse planes (radix-4 mask planes, masked zeros) a row-gather instead: for each active
  row add that row's XNOR outcomes to all column counters, so the cost follows the number of
  active rows, not the array height;
- ADC and NMC fused behind the count so nothing large is written to memory.
The kernel is private to ``imcsim.macro``, which validates every argument first.
"""
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from imcsim.kernels.analog import (ANALOG_FRAC_BITS, CAP_UNIT, NOISE_SHIFT, charge_share,
                            division_magic, ideal_adc_code)
from imcsim.kernels.rng import STREAM_CMP_NOISE, STREAM_SAMPLE, mix, scaled_normal, seed_hash

_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


@intrinsic
def popcount64(typingctx, x):
    """Scalar POPCNT of a uint64 (LLVM ctpop). Returns uint64."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(cache=True, inline="always")
def _count_dense(xbits, xmask, wbits, b, p0, p1, active, counts, masked):
    """XNOR counts of planes p0 and p1 for every column, 2 planes x 4 columns per block.

    count = active rows - popcount((x ^ w) & mask): x is already zero on masked rows, and with
    every row active (``masked`` False) the mask is dropped altogether, since both x and w are
    zero on the padding rows of the last word.
    """
    n_cols = wbits.shape[0]
    n_words = wbits.shape[1]
    for c0 in range(0, n_cols, 4):
        c1 = min(c0 + 1, n_cols - 1)
        c2 = min(c0 + 2, n_cols - 1)
        c3 = min(c0 + 3, n_cols - 1)
        a00 = np.uint64(0)
        a01 = np.uint64(0)
        a02 = np.uint64(0)
        a03 = np.uint64(0)
        a10 = np.uint64(0)
        a11 = np.uint64(0)
        a12 = np.uint64(0)
        a13 = np.uint64(0)
        if masked:
            for w in range(n_words):
                x0 = xbits[b, p0, w]
                m0 = xmask[b, p0, w]
                x1 = xbits[b, p1, w]
                m1 = xmask[b, p1, w]
                w0 = wbits[c0, w]
                w1 = wbits[c1, w]
                w2 = wbits[c2, w]
                w3 = wbits[c3, w]
                a00 += popcount64((x0 ^ w0) & m0)
                a01 += popcount64((x0 ^ w1) & m0)
                a02 += popcount64((x0 ^ w2) & m0)
                a03 += popcount64((x0 ^ w3) & m0)
                a10 += popcount64((x1 ^ w0) & m1)
                a11 += popcount64((x1 ^ w1) & m1)
                a12 += popcount64((x1 ^ w2) & m1)
                a13 += popcount64((x1 ^ w3) & m1)
        else:
            for w in range(n_words):
                x0 = xbits[b, p0, w]
                x1 = xbits[b, p1, w]
                w0 = wbits[c0, w]
                w1 = wbits[c1, w]
                w2 = wbits[c2, w]
                w3 = wbits[c3, w]
                a00 += popcount64(x0 ^ w0)
                a01 += popcount64(x0 ^ w1)
                a02 += popcount64(x0 ^ w2)
                a03 += popcount64(x0 ^ w3)
                a10 += popcount64(x1 ^ w0)
                a11 += popcount64(x1 ^ w1)
                a12 += popcount64(x1 ^ w2)
                a13 += popcount64(x1 ^ w3)
        n0 = active[b, p0]
        n1 = active[b, p1]
        counts[p0, c0] = n0 - np.int64(a00)
        counts[p1, c0] = n1 - np.int64(a10)
        if c0 + 1 < n_cols:
            counts[p0, c1] = n0 - np.int64(a01)
            counts[p1, c1] = n1 - np.int64(a11)
        if c0 + 2 < n_cols:
            counts[p0, c2] = n0 - np.int64(a02)
            counts[p1, c2] = n1 - np.int64(a12)
        if c0 + 3 < n_cols:
            counts[p0, c3] = n0 - np.int64(a03)
            counts[p1, c3] = n1 - np.int64(a13)


@njit(cache=True, inline="always")
def _gather_counts(xbits, xmask, b, p, wcols, out_row):
    """out_row[c] = XNOR count over active rows, one stored row at a time (row-gather path).

    Rows with input 1 add w[r, :], rows with input 0 add 1 - w[r, :] (added up as one
    constant and a subtraction, so no complemented copy of the weights is needed).
    """
    out_row[:] = 0
    n_cols = out_row.shape[0]
    zeros = 0
    for w in range(xmask.shape[2]):
        m = xmask[b, p, w]
        x = xbits[b, p, w]
        while m != 0:
            low = m & (np.uint64(0) - m)
            r = w * 64 + np.int64(popcount64(low - np.uint64(1)))
            src = wcols[r]
            if (x & low) != 0:
                for c in range(n_cols):
                    out_row[c] += src[c]
            else:
                zeros += 1
                for c in range(n_cols):
                    out_row[c] -= src[c]
            m ^= low
    for c in range(n_cols):
        out_row[c] += zeros


@njit(cache=True, inline="always")
def _gather_capacitance(xbits, xmask, b, p, cap_table, out_row):
    """out_row[c] = sum over active rows r of cap_table[in_bit(r), r, c]: charged capacitance."""
    out_row[:] = 0
    n_cols = out_row.shape[0]
    for w in range(xmask.shape[2]):
        m = xmask[b, p, w]
        x = xbits[b, p, w]
        while m != 0:
            low = m & (np.uint64(0) - m)
            r = w * 64 + np.int64(popcount64(low - np.uint64(1)))
            sel = 1 if (x & low) != 0 else 0
            src = cap_table[sel, r]
            for c in range(n_cols):
                out_row[c] += src[c]
            m ^= low


@njit(cache=True, inline="always")
def _accumulate(acc, term, acc_lo, acc_hi, acc_bits, saturate):
    """Add one term to an NMC accumulator register of acc_bits (saturate or wrap)."""
    s = acc + term
    if saturate:
        if s > acc_hi:
            return acc_hi
        if s < acc_lo:
            return acc_lo
        return s
    span = np.int64(1) << acc_bits
    s = (s - acc_lo) & (span - 1)
    return s + acc_lo


@njit(cache=True, inline="always")
def sar_convert(v, offset, cdac_weights, cdac_total, full_scale, adc_bits, sigma_cmp_fx, noise_key,
                threshold_shift=0):
    """Successive approximation of one held column value; returns the code (int64).

    ``noise_key`` is the comparator-noise key hash up to the column; step s mixes in s.
    ``threshold_shift`` (analog fixed point) raises the held value: half an LSB for
    ``adc_rounding`` HALF_UP, 0 for the paper's floor law.
    """
    code = np.int64(0)
    wsum = np.int64(0)
    rhs_scale = np.int64(full_scale) << ANALOG_FRAC_BITS
    for s in range(adc_bits):
        k = adc_bits - 1 - s
        held = v + offset + threshold_shift
        if sigma_cmp_fx != 0:
            held += scaled_normal(sigma_cmp_fx, mix(noise_key, s), NOISE_SHIFT)
        trial_sum = wsum + cdac_weights[k]
        if held * cdac_total >= rhs_scale * trial_sum:
            code |= np.int64(1) << k
            wsum = trial_sum
    return code


@njit(cache=True, parallel=True)
def tile_mvm(xbits, xmask, active, full_scale, scale_fx, wbits, wcols, cap_table, col_total_cap,
             cdac_weights, cdac_total, cmp_offset, pw_x, pw_w, n_outputs, rows, adc_bits,
             scale_frac_bits, acc_bits, saturate, half_lsb, ideal, cell_mismatch,
             sigma_sample_fx, sigma_cmp_fx, seed, tile_row, tile_col, vector_offset, gather_limit,
             tile_rows, threshold_shift, acc, codes_out, clipped_out):
    """One tile operation for every vector of the batch; updates ``acc`` in place.

    Parameters (all validated by the caller)
    ----------
    xbits, xmask : uint64 (B, P, W)  row inputs and active-row masks, bit-packed by 64 rows.
    active : int64 (B, P)  active rows per cycle.  full_scale, scale_fx : int64 (B, P).
    wbits : uint64 (C, W)  stored bits per used column.
    wcols : uint8 (R, C)  stored bits, unpacked (row-gather path; (0, 0) when unused).
    cap_table : int64 (2, R, C)  the same weighted by cell capacitance (cell mismatch only).
    col_total_cap : int64 (C,)  total column capacitance incl. parasitic, CAP_UNIT units.
    cdac_weights : int64 (C, Nb); cdac_total, cmp_offset : int64 (C,).
    pw_x : int64 (P,), pw_w : int64 (Kw,)  integer plane weights.
    acc : int64 (B, n_outputs)  NMC accumulators, carried across row tiles.
    codes_out : uint16 (B, P, C) or (0, 0, 0) when codes are not wanted.
    threshold_shift : int64 (B, P)  ADC threshold shift of every cycle (0 for the floor law;
        the ``ideal`` shortcut is only taken with the floor law).
    tile_rows : int  rows of this row tile (a plane with that many active rows is dense
        and needs no mask).
    clipped_out : int64 (B,)  clipped conversions of this tile, per vector.
    """
    n_vec = xbits.shape[0]
    n_planes = xbits.shape[1]
    n_cols = wbits.shape[0]
    kw = pw_w.shape[0]
    top = (np.int64(1) << adc_bits) - 1
    acc_hi = (np.int64(1) << (acc_bits - 1)) - 1
    acc_lo = -acc_hi - 1
    keep_codes = codes_out.shape[0] > 0
    w_weight_sum = np.int64(0)
    for q in range(kw):
        w_weight_sum += pw_w[q]
    sample_prefix = mix(mix(seed_hash(seed, STREAM_SAMPLE), tile_row), tile_col)
    noise_prefix = mix(mix(seed_hash(seed, STREAM_CMP_NOISE), tile_row), tile_col)
    # scratch is allocated once per chunk of vectors, not per vector
    n_chunks = min(n_vec, 32)
    for chunk in prange(n_chunks):
        counts = np.zeros((n_planes, n_cols), dtype=np.int64)
        codes = np.zeros((n_planes, n_cols), dtype=np.int64)
        gathered = np.empty(n_cols, dtype=np.int32)
        charged = np.empty(n_cols, dtype=np.int64)
        dense = np.zeros(n_planes, dtype=np.bool_)
        for b in range(chunk * n_vec // n_chunks, (chunk + 1) * n_vec // n_chunks):
            clipped = 0
            # 1. column counts (or charged capacitance) of every plane
            if cell_mismatch:
                for p in range(n_planes):
                    _gather_capacitance(xbits, xmask, b, p, cap_table, charged)
                    counts[p, :] = charged
            else:
                for p in range(n_planes):
                    dense[p] = active[b, p] > gather_limit
                    if dense[p]:
                        continue
                    if active[b, p] > 0:
                        _gather_counts(xbits, xmask, b, p, wcols, gathered)
                        counts[p, :] = gathered
                    else:
                        counts[p, :] = 0
                p = 0
                while p < n_planes:
                    if not dense[p]:
                        p += 1
                        continue
                    q = p + 1
                    while q < n_planes and not dense[q]:
                        q += 1
                    if q >= n_planes:
                        q = p
                    masked = active[b, p] != tile_rows or active[b, q] != tile_rows
                    _count_dense(xbits, xmask, wbits, b, p, q, active, counts, masked)
                    p = q + 1 if q > p else p + 1
            # 2. charge sharing and SAR conversion of every (plane, column)
            gb = vector_offset + b
            for p in range(n_planes):
                fs = full_scale[b, p]
                if ideal and active[b, p] == 0:
                    codes[p, :] = 0
                    continue
                if ideal:
                    multiplier, shift = division_magic(fs)
                    for c in range(n_cols):
                        n = counts[p, c]
                        codes[p, c] = ideal_adc_code(n, multiplier, shift, top)
                        if n > fs:
                            clipped += 1
                    continue
                sample_key = mix(mix(sample_prefix, gb), p)
                noise_key = mix(mix(noise_prefix, gb), p)
                for c in range(n_cols):
                    q_ch = counts[p, c] if cell_mismatch else counts[p, c] * CAP_UNIT
                    v = charge_share(rows, q_ch, col_total_cap[c])
                    if sigma_sample_fx != 0:
                        v += scaled_normal(sigma_sample_fx, mix(sample_key, c), NOISE_SHIFT)
                    if v > (np.int64(fs) << ANALOG_FRAC_BITS):
                        clipped += 1
                    codes[p, c] = sar_convert(v, cmp_offset[c], cdac_weights[c], cdac_total[c], fs,
                                              adc_bits, sigma_cmp_fx, mix(noise_key, c),
                                              threshold_shift[b, p])
            clipped_out[b] = clipped
            if keep_codes:
                for p in range(n_planes):
                    for c in range(n_cols):
                        codes_out[b, p, c] = codes[p, c]
            # 3. NMC: canonical order plane p, then weight plane q, saturating after every add.
            # When no partial sum can reach the register's limits the order cannot matter,
            # so those outputs skip the per-add checks (same result, fewer branches).
            bound = np.int64(0)
            for p in range(n_planes):
                step_max = 2 * (top + 1) * scale_fx[b, p] + (active[b, p] << scale_frac_bits)
                bound += step_max * pw_x[p] * w_weight_sum
            for g in range(n_outputs):
                a = acc[b, g]
                if not half_lsb and abs(a) <= acc_hi - bound:
                    for p in range(n_planes):
                        if ideal and active[b, p] == 0:
                            continue        # every code is 0 and so is every term
                        sc2 = 2 * scale_fx[b, p]
                        offset = active[b, p] << scale_frac_bits
                        part = np.int64(0)
                        for q in range(kw):
                            part += (codes[p, g * kw + q] * sc2 - offset) * pw_w[q]
                        a += part * pw_x[p]
                    acc[b, g] = a
                    continue
                for p in range(n_planes):
                    sc = scale_fx[b, p]
                    offset = active[b, p] << scale_frac_bits
                    for q in range(kw):
                        code = codes[p, g * kw + q]
                        if half_lsb:
                            estimate = ((2 * code + 1) * sc) >> 1
                        else:
                            estimate = code * sc
                        term = (2 * estimate - offset) * pw_x[p] * pw_w[q]
                        a = _accumulate(a, term, acc_lo, acc_hi, acc_bits, saturate)
                acc[b, g] = a
