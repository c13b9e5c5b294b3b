"""CUDA kernels of the fast path, compiled from the hardware functions of ``kernels.hw``.

Every kernel calls ``kernels.targets.cuda_hardware()``: the same function bodies the CPU path
runs, compiled with ``numba.cuda.jit(device=True)``.  Loop orders are chosen for the GPU:

- ``encode_units``: one thread per element: format check and integer units (``hw.radix4_unit``
  / ``hw.binary_unit``), so operands already on the GPU never go back to the host;
- ``pack_inputs``: one thread per (vector, 64-row word): plane bits and masks from the
  format's lookup tables, active rows counted with atomics;
- ``pack_stored``: one thread per (64-row word, column): the stored operand's bit-plane columns
  as (W, Kw, G), so that neighbouring threads (outputs) read neighbouring words;
- ``cycle_constants``: Vref choice, NMC scale and ADC threshold of every cycle;
- ``tile_mvm``: one thread per (output, vector), fused like the CPU kernel: for every input
  plane and weight plane, the XNOR count (``hw.word_mismatches``; words without active rows
  are skipped, so a sparse radix-4 plane costs in proportion to the words its active rows
  touch), charge sharing, sampling, SAR or the ideal law, and the NMC accumulation in the
  canonical order; codes reach device memory only when asked for;
- ``output_stage``: one thread per (vector, output).
The kernels are private to ``imcsim.gpu``, which validates every argument first.  This module
imports ``numba.cuda`` (``cuda`` must be a module global for Numba's CUDA simulator), so only
``imcsim.gpu`` imports it, on first use of a CUDA macro.
"""
import numpy as np
from numba import cuda

from imcsim.kernels.targets import cuda_hardware

#: the most input planes and ADC bits a thread keeps in local memory (formats have <= 16
#: planes; the ADC has <= 16 bits)
MAX_PLANES = 16
MAX_ADC_BITS = 16

#: the hardware functions of kernels.hw as CUDA device functions
hw = cuda_hardware()


@cuda.jit
def encode_units(values, radix4, denominator, max_exponent2, lo, hi, units, bad):
    i = cuda.grid(1)
    if i >= values.shape[0]:
        return
    if radix4:
        unit, ok = hw.radix4_unit(values[i], denominator, max_exponent2)
    else:
        unit, ok = hw.binary_unit(values[i], lo, hi)
    units[i] = unit
    if not ok:
        cuda.atomic.add(bad, 0, 1)

@cuda.jit
def pack_inputs(values, lut_offset, pattern_lut, gate_lut, all_active, r0, r1, xbits, xmask,
                active):
    b, w = cuda.grid(2)
    n_planes = xbits.shape[1]
    if b >= xbits.shape[0] or w >= xbits.shape[2]:
        return
    words = cuda.local.array(MAX_PLANES, np.uint64)
    masks = cuda.local.array(MAX_PLANES, np.uint64)
    for p in range(n_planes):
        words[p] = np.uint64(0)
        masks[p] = np.uint64(0)
    lo = r0 + w * 64
    end = lo + 64
    hi = r1 if r1 < end else end        # not min(): see kernels/hw.py
    full = (1 << n_planes) - 1
    for r in range(lo, hi):
        idx = values[b, r] + lut_offset
        pattern = np.int64(pattern_lut[idx])
        gate = full if all_active else np.int64(gate_lut[idx])
        bit = np.uint64(1) << np.uint64(r - lo)
        for p in range(n_planes):
            if (gate >> p) & 1:
                masks[p] |= bit
                if (pattern >> p) & 1:
                    words[p] |= bit
    for p in range(n_planes):
        xbits[b, p, w] = words[p]
        xmask[b, p, w] = masks[p]
        cuda.atomic.add(active, (b, p), np.int64(hw.popcount64(masks[p])))

@cuda.jit
def pack_stored(values, lut_offset, pattern_lut, r0, r1, n0, wbits):
    """Stored operand tile -> uint64 (W, Kw, G): word w of weight plane q of output g."""
    w, c = cuda.grid(2)
    weight_planes = wbits.shape[1]
    if w >= wbits.shape[0] or c >= weight_planes * wbits.shape[2]:
        return
    g = c // weight_planes
    q = c - g * weight_planes
    lo = r0 + w * 64
    end = lo + 64
    hi = r1 if r1 < end else end        # not min(): see kernels/hw.py
    word = np.uint64(0)
    for r in range(lo, hi):
        if (np.int64(pattern_lut[values[r, n0 + g] + lut_offset]) >> q) & 1:
            word |= np.uint64(1) << np.uint64(r - lo)
    wbits[w, q, g] = word

@cuda.jit
def cycle_constants(active, vref_mode, fixed_full_scale, dual_low, dual_high, top_code,
                    scale_frac_bits, half_up, full_scale, scale, threshold_shift):
    b, p = cuda.grid(2)
    if b >= active.shape[0] or p >= active.shape[1]:
        return
    fs = hw.cycle_full_scale(active[b, p], vref_mode, fixed_full_scale, dual_low, dual_high,
                             top_code)
    full_scale[b, p] = fs
    scale[b, p] = hw.nmc_scale(fs, top_code, scale_frac_bits)
    threshold_shift[b, p] = hw.adc_threshold_shift(fs, top_code, half_up)

@cuda.jit
def tile_mvm(xbits, xmask, active, full_scale, scale, threshold_shift, wbits, cap_table,
             col_total_cap, cdac, cdac_total, cmp_offset, rows, top_code, ideal, cell_mismatch,
             sigma_sample_fx, sigma_cmp_fx, seed, tile_row, tile_col, vector_offset, pw_x, pw_w,
             scale_frac_bits, half_lsb, acc_bits, saturate, n0, keep_codes, codes, clipped, acc):
    """One tile operation, fused: XNOR counts, charge sharing, ADC and NMC of one output.

    One thread per (output g of the tile, vector b): for every input plane p, then every
    weight plane q (the canonical NMC order), the count of column c = g * Kw + q, its code,
    and the accumulator update.  wbits : uint64 (W, Kw, G) so that a warp (consecutive g)
    reads consecutive words.  codes (B, P, C) is written only when ``keep_codes``.
    """
    g, first_b = cuda.grid(2)
    if g >= wbits.shape[2]:
        return
    # grid-stride over vectors: the grid's y dimension is capped at 65535 blocks
    for b in range(first_b, xbits.shape[0], cuda.gridDim.y * cuda.blockDim.y):
        _tile_mvm_one(xbits, xmask, active, full_scale, scale, threshold_shift, wbits,
                      cap_table, col_total_cap, cdac, cdac_total, cmp_offset, rows, top_code,
                      ideal, cell_mismatch, sigma_sample_fx, sigma_cmp_fx, seed, tile_row,
                      tile_col, vector_offset, pw_x, pw_w, scale_frac_bits, half_lsb, acc_bits,
                      saturate, n0, keep_codes, codes, clipped, acc, g, b)


@cuda.jit(device=True)
def _tile_mvm_one(xbits, xmask, active, full_scale, scale, threshold_shift, wbits, cap_table,
                  col_total_cap, cdac, cdac_total, cmp_offset, rows, top_code, ideal,
                  cell_mismatch, sigma_sample_fx, sigma_cmp_fx, seed, tile_row, tile_col,
                  vector_offset, pw_x, pw_w, scale_frac_bits, half_lsb, acc_bits, saturate, n0,
                  keep_codes, codes, clipped, acc, g, b):
    """Output g of vector b: the body of ``tile_mvm``."""
    kw = wbits.shape[1]
    no_trials = cuda.local.array(MAX_ADC_BITS, np.int64)
    no_decisions = cuda.local.array(MAX_ADC_BITS, np.uint8)
    adc_bits = cdac.shape[1]
    gb = vector_offset + b
    n_clipped = 0
    a_out = acc[b, n0 + g]
    for p in range(xbits.shape[1]):
        a = active[b, p]
        fs = full_scale[b, p]
        sc = scale[b, p]
        if ideal and a > 0:
            multiplier, shift = hw.division_magic(fs)
        else:
            multiplier, shift = np.int64(0), np.int64(0)
        sample_key = np.uint64(0)
        noise_key = np.uint64(0)
        if not ideal:
            sample_key = hw.cycle_key(seed, hw.STREAM_SAMPLE, tile_row, tile_col, gb, p)
            noise_key = hw.cycle_key(seed, hw.STREAM_CMP_NOISE, tile_row, tile_col, gb, p)
        for q in range(kw):
            c = g * kw + q
            count = np.int64(0)
            if not cell_mismatch:
                # hw.column_xnor_count over the (W, Kw, G) layout
                mismatches = np.int64(0)
                for w in range(xbits.shape[2]):
                    m = xmask[b, p, w]
                    if m != 0:
                        mismatches += hw.word_mismatches(xbits[b, p, w], wbits[w, q, g], m)
                count = a - mismatches
            code = np.int64(0)
            if ideal:
                if a > 0:
                    code = hw.ideal_adc_code(count, multiplier, shift, top_code)
                    if count > fs:
                        n_clipped += 1
            else:
                if cell_mismatch:
                    charge = hw.column_charge(xbits[b, p], xmask[b, p], cap_table, c)
                else:
                    charge = count * hw.CAP_UNIT
                value = hw.sample_column(hw.charge_share(rows, charge, col_total_cap[c]),
                                         sigma_sample_fx, hw.mix(sample_key, c))
                if value > (np.int64(fs) << np.int64(hw.ANALOG_FRAC_BITS)):
                    n_clipped += 1
                code = hw.sar_convert(value, cmp_offset[c], cdac[c], cdac_total[c], fs, adc_bits,
                                      sigma_cmp_fx, hw.mix(noise_key, c), threshold_shift[b, p],
                                      no_trials, no_decisions, False)
            if keep_codes:
                codes[b, p, c] = code
            term = hw.nmc_term(code, sc, a, scale_frac_bits, half_lsb, pw_x[p], pw_w[q])
            a_out = hw.accumulate(a_out, term, acc_bits, saturate)
    acc[b, n0 + g] = a_out
    if n_clipped:
        cuda.atomic.add(clipped, b, n_clipped)


@cuda.jit
def output_stage(acc, shift, rounding, out_bits, has_scale, out_scale, scale_frac_bits,
                 has_offset, out_offset, y_int):
    n, first_b = cuda.grid(2)
    if n >= acc.shape[1]:
        return
    sc = out_scale[n] if has_scale else 0
    off = out_offset[n] if has_offset else 0
    for b in range(first_b, acc.shape[0], cuda.gridDim.y * cuda.blockDim.y):   # grid-stride
        y_int[b, n] = hw.output_value(acc[b, n], shift, rounding, out_bits, has_scale, sc,
                                      scale_frac_bits, has_offset, off)


#: every kernel by name, for imcsim.gpu
KERNELS = {"encode_units": encode_units, "pack_inputs": pack_inputs,
        "pack_stored": pack_stored, "cycle_constants": cycle_constants,
        "tile_mvm": tile_mvm,
        "output_stage": output_stage}
