"""The fast batched CPU path: one tile operation of the macro for a whole batch of vectors.

Semantics are those of ``kernels.hw`` (docs/hardware-model.md); this module only chooses loop
orders that are fast on a CPU:
- column counts by XNOR + POPCNT over bit-packed 64-row words, register-blocked 2 input planes
  x 4 columns (dense planes; a deliberate manual unrolling of ``hw.column_xnor_count``);
- for sparse planes (radix-4 mask planes, masked zeros) a row gather: for each active row add
  that row's XNOR outcomes to all column counters (``hw.column_xnor_count`` and
  ``hw.column_charge`` in row-major order), so the cost follows the active rows;
- ADC and NMC fused behind the count so nothing large is written to memory.
The kernel is private to ``imcsim.macro``, which validates every argument first.
"""
import numpy as np
from numba import njit, prange

from imcsim.kernels.targets import CPU as hw


@njit(cache=True, inline="always")
def _count_dense(xbits, xmask, wbits, b, p0, p1, active, counts, masked):
    """XNOR counts of planes p0 and p1 for every column, 2 planes x 4 columns per block.

    Deliberately unrolled ``hw.column_xnor_count``: count = active rows - mismatches.  With
    every row active (``masked`` False) the mask is all ones (LLVM drops the AND), since both
    x and w are zero on the padding rows of the last word.
    """
    n_cols = wbits.shape[0]
    n_words = wbits.shape[1]
    for c0 in range(0, n_cols, 4):
        c1 = min(c0 + 1, n_cols - 1)
        c2 = min(c0 + 2, n_cols - 1)
        c3 = min(c0 + 3, n_cols - 1)
        a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = np.int64(0)
        if masked:
            for w in range(n_words):
                x0, m0 = xbits[b, p0, w], xmask[b, p0, w]
                x1, m1 = xbits[b, p1, w], xmask[b, p1, w]
                w0, w1, w2, w3 = wbits[c0, w], wbits[c1, w], wbits[c2, w], wbits[c3, w]
                a00 += hw.word_mismatches(x0, w0, m0)
                a01 += hw.word_mismatches(x0, w1, m0)
                a02 += hw.word_mismatches(x0, w2, m0)
                a03 += hw.word_mismatches(x0, w3, m0)
                a10 += hw.word_mismatches(x1, w0, m1)
                a11 += hw.word_mismatches(x1, w1, m1)
                a12 += hw.word_mismatches(x1, w2, m1)
                a13 += hw.word_mismatches(x1, w3, m1)
        else:
            for w in range(n_words):
                x0, x1 = xbits[b, p0, w], xbits[b, p1, w]
                w0, w1, w2, w3 = wbits[c0, w], wbits[c1, w], wbits[c2, w], wbits[c3, w]
                a00 += hw.word_mismatches(x0, w0, hw.ALL_ONES)
                a01 += hw.word_mismatches(x0, w1, hw.ALL_ONES)
                a02 += hw.word_mismatches(x0, w2, hw.ALL_ONES)
                a03 += hw.word_mismatches(x0, w3, hw.ALL_ONES)
                a10 += hw.word_mismatches(x1, w0, hw.ALL_ONES)
                a11 += hw.word_mismatches(x1, w1, hw.ALL_ONES)
                a12 += hw.word_mismatches(x1, w2, hw.ALL_ONES)
                a13 += hw.word_mismatches(x1, w3, hw.ALL_ONES)
        n0 = active[b, p0]
        n1 = active[b, p1]
        counts[p0, c0] = n0 - a00
        counts[p1, c0] = n1 - a10
        if c0 + 1 < n_cols:
            counts[p0, c1] = n0 - a01
            counts[p1, c1] = n1 - a11
        if c0 + 2 < n_cols:
            counts[p0, c2] = n0 - a02
            counts[p1, c2] = n1 - a12
        if c0 + 3 < n_cols:
            counts[p0, c3] = n0 - a03
            counts[p1, c3] = n1 - a13


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
            r, rest = hw.lowest_set_row(m)
            src = wcols[w * 64 + r]
            if (x >> np.uint64(r)) & np.uint64(1):
                for c in range(n_cols):
                    out_row[c] += src[c]
            else:
                zeros += 1
                for c in range(n_cols):
                    out_row[c] -= src[c]
            m = rest
    for c in range(n_cols):
        out_row[c] += zeros


@njit(cache=True, inline="always")
def _gather_capacitance(xbits, xmask, b, p, cap_table, out_row):
    """out_row[c] = ``hw.column_charge`` of every column, one active row at a time."""
    out_row[:] = 0
    n_cols = out_row.shape[0]
    for w in range(xmask.shape[2]):
        m = xmask[b, p, w]
        x = xbits[b, p, w]
        while m != 0:
            r, m = hw.lowest_set_row(m)
            src = cap_table[np.int64((x >> np.uint64(r)) & np.uint64(1)), w * 64 + r]
            for c in range(n_cols):
                out_row[c] += src[c]


@njit(cache=True, inline="always")
def _no_overflow_bound(cyc, b, n_planes, nmc, top_code, column_scale):
    """An upper bound of |sum of one output's terms| over a vector, capped at 2**62.

    When the accumulator plus this bound cannot reach the register's limits, no partial sum
    can saturate or wrap, so the order of the additions cannot matter.
    """
    w_weight_sum = np.int64(0)
    for q in range(nmc.pw_w.shape[0]):
        w_weight_sum += nmc.pw_w[q]
    cap = np.int64(1) << np.int64(62)
    bound = np.int64(0)
    for p in range(n_planes):
        # a column at its own (per-column dual Vref) level may use the larger column_scale
        sc = cyc.scale[b, p] if cyc.scale[b, p] > column_scale else column_scale
        # |code - code offset| < top_code + 1 + offset_codes (hw.nmc_term)
        step_max = (2 * (top_code + 1 + nmc.offset_codes) * sc
                    + (cyc.level_sum[b, p] << nmc.scale_frac_bits))
        weight = nmc.pw_x[p] * w_weight_sum               # < 2**46: plane weights are bounded
        if step_max > (cap - bound) // weight:
            return cap
        bound += step_max * weight
    return bound


@njit(cache=True, inline="always")
def _column_counts(cyc, tile, analog, tuning, b, sub_counts, counts, gathered, charged, dense,
                   charges):
    """Step 1 of a vector: the XNOR count (or charged capacitance) of every sub-plane and
    column into ``sub_counts``, and each cycle's level-weighted count into ``counts`` (the same
    array when a cycle has one level bit).  Charges precomputed by the caller (``charges``
    (B, P * S, C), when not empty) are taken as they are."""
    xbits, xmask, active = cyc.xbits, cyc.xmask, cyc.active
    level_bits = cyc.level_bits
    n_sub = xbits.shape[1]
    n_planes = n_sub // level_bits
    n_cols = tile.wbits.shape[0]
    if analog.charge_table and charges.shape[0] > 0:
        for i in range(n_sub):
            sub_counts[i, :] = charges[b, i, :]
    elif analog.charge_table:
        for i in range(n_sub):
            _gather_capacitance(xbits, xmask, b, i, tile.cap_table[i % level_bits],
                                charged)
            sub_counts[i, :] = charged
    else:
        for i in range(n_sub):
            dense[i] = active[b, i] > tuning.gather_limit
            if dense[i]:
                continue
            if active[b, i] > 0:
                _gather_counts(xbits, xmask, b, i, tile.wcols, gathered)
                sub_counts[i, :] = gathered
            else:
                sub_counts[i, :] = 0
        i = 0
        while i < n_sub:
            if not dense[i]:
                i += 1
                continue
            j = i + 1
            while j < n_sub and not dense[j]:
                j += 1
            if j >= n_sub:
                j = i
            masked = active[b, i] != tuning.tile_rows or active[b, j] != tuning.tile_rows
            _count_dense(xbits, xmask, tile.wbits, b, i, j, active, sub_counts, masked)
            i = j + 1 if j > i else i + 1
    if level_bits > 1:
        # a cycle's count: its level bits' counts, weighted (hardware-model.md 4.8)
        for p in range(n_planes):
            for c in range(n_cols):
                total = np.int64(0)
                for k in range(level_bits):
                    total += hw.level_weighted(sub_counts[p * level_bits + k, c], k,
                                               analog.charge_table)
                counts[p, c] = total


@njit(cache=True, inline="always")
def _convert(cyc, tables, analog, b, gb, sample_prefix, noise_prefix, scale_high, magic_high,
             magic_high_shift, addend_high, counts, codes, column_scale, column_fs, no_trials,
             no_decisions):
    """Step 2 of a vector: charge sharing and SAR conversion of every (cycle, column) into
    ``codes``; under the per-column dual Vref also each column's F and NMC scale.  Returns
    (clipped, high): the vector's clipped conversions and those at the high level."""
    level_sum = cyc.level_sum
    n_planes, n_cols = codes.shape
    top = np.int64(analog.top_code)
    per_column = analog.per_column
    clipped = 0
    high = 0
    for p in range(n_planes):
        fs = cyc.full_scale[b, p]
        if hw.cycle_skipped(level_sum[b, p], analog.skip_masked):
            codes[p, :] = 0
            continue
        if per_column:
            column_scale[p, :] = cyc.scale[b, p]
            column_fs[p, :] = fs
        if analog.ideal:
            multiplier, shift = hw.division_magic(fs)
            addend = hw.ideal_rounding_addend(cyc.threshold_shift[b, p], top)
            if level_sum[b, p] == 0:
                # no driven row: every count is 0, one conversion stands for all
                code0, f0, clip0, high0 = hw.ideal_column_conversion(
                    0, fs, multiplier, shift, addend, per_column, analog.dual_low,
                    analog.dual_high, magic_high, magic_high_shift, addend_high, top,
                    analog.adc_bits)
                codes[p, :] = code0
                clipped += n_cols * clip0
                high += n_cols * high0
                continue
            if not per_column:        # the common case, kept free of the branches
                for c in range(n_cols):
                    n = counts[p, c]
                    codes[p, c] = hw.ideal_adc_code(n, multiplier, shift, top, addend)
                    if n > fs:
                        clipped += 1
                continue
            for c in range(n_cols):
                code, f_c, clip, is_high = hw.ideal_column_conversion(
                    counts[p, c], fs, multiplier, shift, addend, per_column,
                    analog.dual_low, analog.dual_high, magic_high, magic_high_shift,
                    addend_high, top, analog.adc_bits)
                codes[p, c] = code
                column_scale[p, c] = hw.column_nmc_scale(f_c, fs, cyc.scale[b, p],
                                                         scale_high)
                column_fs[p, c] = f_c
                clipped += clip
                high += is_high
            continue
        sample_key = hw.mix(hw.mix(sample_prefix, gb), p)
        noise_key = hw.mix(hw.mix(noise_prefix, gb), p)
        for c in range(n_cols):
            charge = counts[p, c] if analog.charge_table else counts[p, c] * hw.CAP_UNIT
            value = hw.sample_column(
                hw.charge_share(analog.rows, charge, tables.col_total_cap[c]),
                analog.sigma_sample_fx, hw.mix(sample_key, c))
            code, f_c, clip, is_high = hw.column_conversion(
                value, tables.cmp_offset[c], tables.cdac[c], tables.cdac_total[c], fs,
                cyc.threshold_shift[b, p], per_column, analog.dual_low,
                analog.dual_high, analog.half_up, top, analog.sigma_cmp_fx,
                hw.mix(noise_key, c), no_trials, no_decisions, False)
            codes[p, c] = code
            if per_column:
                column_scale[p, c] = hw.column_nmc_scale(f_c, fs, cyc.scale[b, p],
                                                         scale_high)
                column_fs[p, c] = f_c
            clipped += clip
            high += is_high
    return clipped, high


@njit(cache=True, inline="always")
def _accumulate(cyc, analog, nmc, b, codes, column_scale, column_fs, adds, scale_high, acc,
                g0):
    """Step 3 of a vector: the NMC terms of every (cycle, column) into its outputs'
    accumulators ``acc[b, g0:g0 + nmc.n_outputs]``."""
    level_sum = cyc.level_sum
    n_planes = codes.shape[0]
    kw = nmc.pw_w.shape[0]
    top = np.int64(analog.top_code)
    _, acc_hi = hw.register_limits(nmc.acc_bits)
    per_column = analog.per_column
    # 3. NMC: canonical order plane p, then weight plane q, overflow rule after every
    # add.  When no partial sum can reach the register's limits the order cannot
    # matter, so those outputs sum their terms without per-add checks.
    bound = _no_overflow_bound(cyc, b, n_planes, nmc, top, scale_high)
    for p in range(n_planes):
        # planes that add nothing: all codes 0 with no code offset (ideal, no active
        # row), or a cycle the controller did not run
        adds[p] = not ((analog.ideal and level_sum[b, p] == 0
                        and not nmc.has_code_offsets)
                       or hw.cycle_skipped(level_sum[b, p], analog.skip_masked))
    for g in range(nmc.n_outputs):
        a = acc[b, g0 + g]
        exact_sum = abs(a) <= acc_hi - bound
        for p in range(n_planes):
            if not adds[p]:
                continue
            act = level_sum[b, p]
            sc = cyc.scale[b, p]
            f_p = cyc.full_scale[b, p]
            for q in range(kw):
                c = g * kw + q
                if per_column:      # a column at its own level has its own scale
                    sc = column_scale[p, c]
                    f_p = column_fs[p, c]
                offset = np.int64(0)
                if nmc.has_code_offsets:           # the paper's NMC: no lookup per term
                    offset = hw.column_code_offset(f_p, codes[p, c], top, nmc.code_offsets, c)
                term = hw.nmc_term(codes[p, c], sc, act, nmc.scale_frac_bits, offset,
                                   nmc.pw_x[p], nmc.pw_w[q])
                if exact_sum:
                    a += term
                else:
                    a = hw.accumulate(a, term, nmc.acc_bits, nmc.saturate)
        acc[b, g0 + g] = a


@njit(cache=True, parallel=True)
def tile_mvm(cyc, tile, tables, analog, nmc, key, tuning, acc, g0, codes_out, clipped_out,
             high_out, charges):
    """One tile operation for every vector of the batch; updates ``acc`` in place.

    Parameters (all validated by the caller; see ``kernels.params``)
    ----------
    cyc : CycleInputs  the row tile's packed inputs, (B, P * S, W) sub-planes with S =
        ``cyc.level_bits`` level bits per cycle (docs/hardware-model.md 4.8), and per-cycle
        constants (B, P).
    tile : StoredTile  the stored bits of this tile.
    tables : AnalogTables  analog constants of the used columns.
    analog : AnalogParams;  nmc : NmcParams;  key : NoiseKey;  tuning : Tuning.
    acc : int64 (B, N)  the MVM's NMC accumulators, carried across row tiles; this tile's
        outputs are columns g0 .. g0 + nmc.n_outputs - 1 (updated in place: no copy of a
        column slice in and out for every tile).
    g0 : int  the tile's first output.
    codes_out : uint16 (B, P, C) or (0, 0, 0) when codes are not wanted.
    clipped_out : int64 (B,)  clipped conversions of this tile, per vector.
    high_out : int64 (B,)  conversions whose column chose the high level (per-column dual
        Vref), per vector.
    charges : int64 (B, P * S, C)  with ``analog.charge_table``, every sub-plane's column
        charges computed by the caller (``imcsim.charges.cell_charges``: exact matrix
        products), or (0, 0, 0) to add them up here one active row at a time.
    """
    level_bits = cyc.level_bits
    n_vec = cyc.xbits.shape[0]
    n_sub = cyc.xbits.shape[1]
    n_planes = n_sub // level_bits
    n_cols = tile.wbits.shape[0]
    top = np.int64(analog.top_code)
    keep_codes = codes_out.shape[0] > 0
    per_column = analog.per_column
    # per-column dual Vref: a column that exceeds the low level converts at the high one
    scale_high = hw.nmc_scale(analog.dual_high, top, nmc.scale_frac_bits) if per_column else 0
    magic_high, magic_high_shift = hw.division_magic(analog.dual_high)
    addend_high = hw.ideal_rounding_addend(
        hw.adc_threshold_shift(analog.dual_high, top, analog.half_up), top)
    sample_prefix = hw.mix(hw.mix(hw.seed_hash(key.seed, hw.STREAM_SAMPLE), key.tile_row),
                           key.tile_col)
    noise_prefix = hw.mix(hw.mix(hw.seed_hash(key.seed, hw.STREAM_CMP_NOISE), key.tile_row),
                          key.tile_col)
    # scratch is allocated once per chunk of vectors, not per vector; several chunks per
    # thread (tuning.chunks, from the caller: numba.get_num_threads() inside a kernel would
    # make it uncachable) keep the threads busy when sparse planes make vectors unequal
    n_chunks = min(n_vec, tuning.chunks)
    for chunk in prange(n_chunks):
        sub_counts = np.zeros((n_sub, n_cols), dtype=np.int64)
        # one level bit per cycle: the sub-plane counts are the cycle counts
        counts = sub_counts if level_bits == 1 else np.zeros((n_planes, n_cols), dtype=np.int64)
        codes = np.zeros((n_planes, n_cols), dtype=np.int64)
        column_scale = np.zeros((n_planes, n_cols), dtype=np.int64)   # per-column dual Vref
        column_fs = np.zeros((n_planes, n_cols), dtype=np.int64)      # each column's F
        gathered = np.empty(n_cols, dtype=np.int32)
        charged = np.empty(n_cols, dtype=np.int64)
        dense = np.zeros(n_sub, dtype=np.bool_)
        adds = np.zeros(n_planes, dtype=np.bool_)
        no_trials = np.zeros(analog.adc_bits, dtype=np.int64)
        no_decisions = np.zeros(analog.adc_bits, dtype=np.uint8)
        for b in range(chunk * n_vec // n_chunks, (chunk + 1) * n_vec // n_chunks):
            _column_counts(cyc, tile, analog, tuning, b, sub_counts, counts, gathered, charged,
                           dense, charges)
            clipped, high = _convert(cyc, tables, analog, b, key.vector_offset + b,
                                     sample_prefix, noise_prefix, scale_high, magic_high,
                                     magic_high_shift, addend_high, counts, codes, column_scale,
                                     column_fs, no_trials, no_decisions)
            clipped_out[b] = clipped
            high_out[b] = high
            if keep_codes:
                for p in range(n_planes):
                    for c in range(n_cols):
                        codes_out[b, p, c] = codes[p, c]
            _accumulate(cyc, analog, nmc, b, codes, column_scale, column_fs, adds, scale_high,
                        acc, g0)
