"""Per-cycle kernels: one array cycle, its NMC step, and the per-cycle constants.

The cycle-level path (``imcsim.cycles``) and the golden model run the macro one array cycle at
a time through these functions, recording every SAR step; ``cycle_constants`` and
``output_stage`` also serve the fast CPU path.  All hardware maths comes from ``kernels.hw``.
"""
import numpy as np
from numba import njit, prange

from imcsim.kernels.targets import CPU as hw


@njit(cache=True)
def cycle_constants(active, vref_mode, fixed_full_scale, dual_low, dual_high, top_code,
                    scale_frac_bits, half_up, full_scale, scale, threshold_shift):
    """Full scale, NMC scale and ADC threshold shift of every cycle (flat int64 arrays).

    active : int64 (n,)  active rows per cycle; the three outputs are int64 (n,).
    """
    for i in range(active.shape[0]):
        fs = hw.cycle_full_scale(active[i], vref_mode, fixed_full_scale, dual_low, dual_high,
                                 top_code)
        full_scale[i] = fs
        scale[i] = hw.nmc_scale(fs, top_code, scale_frac_bits)
        threshold_shift[i] = hw.adc_threshold_shift(fs, top_code, half_up)


@njit(cache=True)
def level_sums(sub_active, level_bits, level_sum):
    """A of every cycle (docs/hardware-model.md 4.8): its level bits' active rows weighted
    by ``hw.level_weighted``.  sub_active : int64 (n, P * S); level_sum : int64 (n, P)."""
    for i in range(level_sum.shape[0]):
        for p in range(level_sum.shape[1]):
            total = np.int64(0)
            for k in range(level_bits):
                total += hw.level_weighted(sub_active[i, p * level_bits + k], k, False)
            level_sum[i, p] = total


@njit(cache=True)
def array_cycle(xbits, xmask, active, tile, tables, analog, full_scale, threshold_shift,
                sample_key, noise_key, count_out, value_out, trials_out, decisions_out,
                code_out, full_scale_out):
    """One array cycle of one column group: XNOR cells, charge sharing, sampling, SAR.

    xbits, xmask : uint64 (S, W) row inputs and active rows of the cycle's S level-bit
    sub-planes (docs/hardware-model.md 4.8; S = 1 for binary rows); active : int64 (S,) their
    active rows.
    tile : StoredTile  ``wbits`` uint64 (C, W) and ``cap_table`` int64 (S, 2, R, C) (used
    when ``analog.charge_table``: cell or row-DAC mismatch); ``wcols`` is not read.
    tables : AnalogTables;  analog : AnalogParams (``kernels.params``), the call's Vref in
    its per-column dual fields (``hw.column_conversion``; ``full_scale`` is then the low
    level).
    full_scale, threshold_shift : the cycle's F and ADC threshold shift.
    sample_key, noise_key : uint64 the cycle's sampling / comparator-noise keys.
    Outputs (C,) / (C, Nb): level-weighted XNOR counts, held values, SAR trials and
    decisions, codes, and each column's full scale.
    Returns (clipped conversions (held value above the full scale), conversions at the high
    level under the per-column choice).
    """
    wbits, cap_table, charge_table = tile.wbits, tile.cap_table, analog.charge_table
    n_cols = wbits.shape[0]
    clipped = 0
    high = 0
    level_bits = xbits.shape[0]
    for c in range(n_cols):
        count = np.int64(0)
        charged = np.int64(0)
        for k in range(level_bits):
            count += hw.level_weighted(hw.column_xnor_count(xbits[k], xmask[k], active[k],
                                                            wbits, c), k, False)
            if charge_table:
                charged += hw.level_weighted(hw.column_charge(xbits[k], xmask[k],
                                                              cap_table[k], c), k, True)
        if not charge_table:
            charged = count * hw.CAP_UNIT
        value = hw.sample_column(hw.charge_share(analog.rows, charged,
                                                 tables.col_total_cap[c]),
                                 analog.sigma_sample_fx, hw.mix(sample_key, c))
        code, f_c, clip, is_high = hw.column_conversion(
            value, tables.cmp_offset[c], tables.cdac[c], tables.cdac_total[c], full_scale,
            threshold_shift, analog.per_column, analog.dual_low, analog.dual_high,
            analog.half_up, analog.top_code, analog.sigma_cmp_fx, hw.mix(noise_key, c),
            trials_out[c], decisions_out[c], True)
        clipped += clip
        high += is_high
        count_out[c] = count
        value_out[c] = value
        full_scale_out[c] = f_c
        code_out[c] = code
    return clipped, high


@njit(cache=True)
def column_scales(column_full_scale, full_scale, cycle_scale, scale_high, scale_out):
    """Each column's NMC scale (``hw.column_nmc_scale``): int64 (C,) into ``scale_out``."""
    for c in range(column_full_scale.shape[0]):
        scale_out[c] = hw.column_nmc_scale(column_full_scale[c], full_scale, cycle_scale,
                                           scale_high)


@njit(cache=True)
def charge_share_columns(rows, charged, total, values_out):
    """``hw.charge_share`` of many columns: charged int64 (B, C) capacitance of the XNOR=1
    cells, total int64 (C,) each column's capacitance; values_out int64 (B, C) [analog
    fixed point].  For the NumPy-level models (the calibration's chip model)."""
    for b in range(charged.shape[0]):
        for c in range(charged.shape[1]):
            values_out[b, c] = hw.charge_share(rows, charged[b, c], total[c])


@njit(cache=True)
def sar_paths(codes, adc_bits, trials_out, keep_out):
    """The SAR path that ends in each code (``hw.sar_path_trial``), for the NumPy-level models
    (the calibration's likelihoods): codes int64 (n,); trials_out int64 (n, Nb) the trial code
    of step s (s = 0 decides the MSB); keep_out bool (n, Nb) whether step s kept its bit."""
    for i in range(codes.shape[0]):
        for s in range(adc_bits):
            k = adc_bits - 1 - s
            trials_out[i, s] = hw.sar_path_trial(codes[i], k)
            keep_out[i, s] = ((codes[i] >> k) & 1) == 1


@njit(cache=True)
def nmc_cycle(acc, codes, active, scale_fx, column_full_scale, top_code, code_offsets,
              x_plane_weight, w_plane_weights, scale_frac_bits, acc_bits, saturate, steps_out):
    """The NMC's work for one array cycle of one column group, in the canonical order.

    acc : int64 (G,) accumulators (updated in place); codes : int64 (G * Kw,) ADC codes;
    scale_fx, column_full_scale : int64 (G * Kw,) each column's F / L and F (they differ
    under the per-column dual Vref choice); code_offsets : int64 (3, >= G * Kw) the NMC's
    code-offset registers (``hw.column_code_offset`` picks each code's).
    steps_out : int64 (G, Kw) the accumulator after each weight plane.
    """
    kw = w_plane_weights.shape[0]
    for g in range(acc.shape[0]):
        a = acc[g]
        for q in range(kw):
            c = g * kw + q
            offset = hw.column_code_offset(column_full_scale[c], codes[c], top_code,
                                           code_offsets, c)
            term = hw.nmc_term(codes[c], scale_fx[c], active, scale_frac_bits, offset,
                               x_plane_weight, w_plane_weights[q])
            a = hw.accumulate(a, term, acc_bits, saturate)
            steps_out[g, q] = a
        acc[g] = a


@njit(cache=True, parallel=True)
def output_stage(acc, shift, rounding, out_bits, has_scale, out_scale, scale_frac_bits,
                 has_offset, out_offset, y_out):
    """Accumulators int64 (B, N) -> output registers int64 (B, N) (``hw.output_value``)."""
    for b in prange(acc.shape[0]):
        for n in range(acc.shape[1]):
            y_out[b, n] = hw.output_value(acc[b, n], shift, rounding, out_bits, has_scale,
                                          out_scale[n] if has_scale else 0, scale_frac_bits,
                                          has_offset, out_offset[n] if has_offset else 0)


@njit(cache=True, parallel=True)
def output_floats(y_int, scale, y_out):
    """y_out = y_int * scale, float64 (B, N) from int64 (B, N), with ``scale`` a power of two
    (2**-out_frac_bits): each value is the exact scaling of its rounded conversion, bit for
    bit NumPy's ``y_int.astype(float64) / 2**out_frac_bits``.  In parallel, because on a
    layer-sized MVM the new array's first touch (page faults) is most of its cost."""
    for b in prange(y_int.shape[0]):
        for n in range(y_int.shape[1]):
            y_out[b, n] = np.float64(y_int[b, n]) * scale


@njit(cache=True)
def sar_columns(values, offsets, cdac, cdac_total, full_scale, threshold_shift, sigma_cmp_fx,
                noise_keys, trials_out, decisions_out, codes_out):
    """``hw.sar_convert`` of many held values, recording every step.

    values, offsets, cdac_total : int64 (n,); cdac : int64 (n, Nb); noise_keys : uint64 (n,)
    comparator-noise keys (ignored when sigma_cmp_fx is 0).  Outputs (n, Nb), (n, Nb), (n,).
    """
    for i in range(values.shape[0]):
        codes_out[i] = hw.sar_convert(values[i], offsets[i], cdac[i], cdac_total[i], full_scale,
                                      cdac.shape[1], sigma_cmp_fx, noise_keys[i],
                                      threshold_shift, trials_out[i], decisions_out[i], True)


@njit(cache=True, parallel=True)
def tile_cycles(cyc, tile, tables, analog, nmc, key, b0, b1, slot, acc, g0, codes_out, records,
                clipped_out, high_out):
    """Every array cycle of tile operation (t, u) for vectors [b0, b1), recording the cycles
    a trace selects: the cycle-level path at compiled speed (``imcsim.cycles``).

    Runs ``array_cycle``, ``column_scales`` and ``nmc_cycle`` per cycle, as the per-cycle
    stepper does, in parallel over vectors (each vector's planes in order; vectors are
    independent within one tile operation, so results never depend on the thread count).

    cyc : CycleInputs of the row tile (B, ...); tile, tables, analog : as ``array_cycle`` (the
    call's Vref in ``analog``); nmc : NmcParams; key : NoiseKey (seed, t, u, vector offset).
    slot : int64 (b1 - b0, P) the record row of each cycle, -1 where not recorded.
    acc : int64 (B, N) accumulators (outputs g0 .. g0 + G updated); codes_out : int64
    (B, P, N, Kw) the row tile's codes.  records : TraceRecords, rows (n, C_full) etc.,
    zero on entry; a recorded cycle fills its first C columns and G outputs.
    clipped_out, high_out : int64 (b1 - b0,) per-vector counts.
    """
    n_cols = tile.wbits.shape[0]
    kw = nmc.pw_w.shape[0]
    n_groups = n_cols // kw
    n_planes = cyc.level_sum.shape[1]
    s_bits = cyc.level_bits
    nb = analog.adc_bits
    scale_high = hw.nmc_scale(analog.dual_high, analog.top_code, nmc.scale_frac_bits)
    # unpacked before the parallel loop: a store through a named tuple's array inside a
    # prange body is lost (Numba 0.68's parfor lowering; reads and calls are unaffected)
    rec_count, rec_value, rec_trial, rec_decision, rec_code, rec_acc = records
    for i in prange(b1 - b0):
        b = b0 + i
        count = np.empty(n_cols, dtype=np.int64)
        value = np.empty(n_cols, dtype=np.int64)
        code = np.empty(n_cols, dtype=np.int64)
        column_fs = np.empty(n_cols, dtype=np.int64)
        column_scale = np.empty(n_cols, dtype=np.int64)
        trials = np.zeros((n_cols, nb), dtype=np.int64)
        decisions = np.zeros((n_cols, nb), dtype=np.uint8)
        steps = np.empty((n_groups, kw), dtype=np.int64)
        group_acc = acc[b, g0:g0 + n_groups]
        gb = key.vector_offset + b
        clipped = 0
        high = 0
        for p in range(n_planes):
            a = cyc.level_sum[b, p]
            r = slot[i, p]
            if hw.cycle_skipped(a, analog.skip_masked):      # not run: the NMC holds
                for g in range(n_groups):
                    for q in range(kw):
                        codes_out[b, p, g0 + g, q] = 0
                        if r >= 0:
                            rec_acc[r, g, q] = group_acc[g]
                continue
            sample_key = hw.cycle_key(key.seed, hw.STREAM_SAMPLE, key.tile_row, key.tile_col,
                                      gb, p)
            noise_key = hw.cycle_key(key.seed, hw.STREAM_CMP_NOISE, key.tile_row,
                                     key.tile_col, gb, p)
            subs = slice(p * s_bits, (p + 1) * s_bits)
            n_clip, n_high = array_cycle(cyc.xbits[b, subs], cyc.xmask[b, subs],
                                         cyc.active[b, subs], tile, tables, analog,
                                         cyc.full_scale[b, p], cyc.threshold_shift[b, p],
                                         sample_key, noise_key, count, value, trials,
                                         decisions, code, column_fs)
            clipped += n_clip
            high += n_high
            column_scales(column_fs, cyc.full_scale[b, p], cyc.scale[b, p], scale_high,
                          column_scale)
            nmc_cycle(group_acc, code, a, column_scale, column_fs, analog.top_code,
                      nmc.code_offsets, nmc.pw_x[p], nmc.pw_w, nmc.scale_frac_bits,
                      nmc.acc_bits, nmc.saturate, steps)
            for g in range(n_groups):
                for q in range(kw):
                    codes_out[b, p, g0 + g, q] = code[g * kw + q]
            if r >= 0:
                for c in range(n_cols):
                    rec_count[r, c] = count[c]
                    rec_value[r, c] = value[c]
                    rec_code[r, c] = code[c]
                    for s in range(nb):
                        rec_trial[r, c, s] = trials[c, s]
                        rec_decision[r, c, s] = decisions[c, s]
                for g in range(n_groups):
                    for q in range(kw):
                        rec_acc[r, g, q] = steps[g, q]
        clipped_out[i] = clipped
        high_out[i] = high
