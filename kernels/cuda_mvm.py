"""CUDA kernels of the fast path, compiled from the hardware functions of ``kernels.hw``.

Every kernel calls ``kernels.targets.cuda_hardware()``: the same function bodies the CPU path
runs, compiled with ``numba.cuda.jit(device=True)``.  Loop orders are chosen for the GPU:

- ``encode_units``: one thread per element: format check and integer units (``hw.radix4_unit``
  / ``hw.binary_unit``), so operands already on the GPU never go back to the host;
- ``pack_inputs``: one thread per (vector, 64-row word of any row tile): plane bits and masks
  from the format's lookup tables, active rows per (tile, vector, plane) counted with atomics;
- ``pack_stored``: one thread per (64-row word, column) of every tile: the stored operand's
  bit-plane columns as (T, WT, Kw, N), so that neighbouring threads (outputs) read
  neighbouring words;
- ``level_sums``: A of every cycle from its level-bit sub-planes (multi-level rows);
- ``cycle_constants``: Vref choice, NMC scale and ADC threshold of every cycle of every tile;
- ``tile_mvm``: one thread per (output, vector) over all row and column tiles in one launch
  (a launch per tile left the GPU idle on the weight-update MVM's many small tiles), fused
  like the CPU kernel: for every row tile, input plane and weight plane, the XNOR count (``hw.word_mismatches``; words without active rows
  are skipped, so a sparse radix-4 plane costs in proportion to the words its active rows
  touch), charge sharing, sampling, SAR or the ideal law, and the NMC accumulation in the
  canonical order; codes reach device memory only when asked for;
- ``signed_inputs`` / ``signed_stored``: one thread per (row, word) / (word, column): a row
  tile's sub-planes as +1 / -1 / 0 (masked) float32 rows and its stored columns as +/-1, the
  operands of the GEMM count path (``imcsim.gpu``): their product is each column's signed dot
  product, exact in float32 (and TF32: +/-1 and 0 are exact, sums stay below 2**24), and
  ``tile_mvm`` turns it into the count (``hw.count_from_signed_dot``) instead of popcounting;
- ``output_stage``: one thread per (vector, output).
The kernels are private to ``imcsim.gpu``, which validates every argument first.  This module
imports ``numba.cuda`` (``cuda`` must be a module global for Numba's CUDA simulator), so only
``imcsim.gpu`` imports it, on first use of a CUDA macro.
"""
import numpy as np
from numba import cuda

from imcsim.kernels.targets import cuda_hardware

#: the most input sub-planes and ADC bits a thread keeps in local memory (a format has at
#: most 32 level-bit sub-planes, ``formats.plane_lookup_tables``; the ADC has <= 16 bits)
MAX_PLANES = 32
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

@cuda.jit(device=True)
def _word_rows(t, w, tile_rows, inner):
    """Rows [lo, hi) of word w of row tile t (empty where the last tile is partial)."""
    lo = t * tile_rows + w * 64
    hi = lo + 64
    tile_end = (t + 1) * tile_rows
    hi = hi if hi < tile_end else tile_end          # not min(): see kernels/hw.py
    hi = hi if hi < inner else inner
    return lo, hi


@cuda.jit
def pack_inputs(values, lut_offset, pattern_lut, gate_lut, all_active, tile_rows, level_bits,
                xbits, xmask, active, driven):
    """Streamed operand -> uint64 (B, P * S, T * WT) sub-plane bits and masks of every row
    tile (S = ``level_bits`` level-bit sub-planes per cycle, docs/hardware-model.md 4.8).

    One thread per (vector b, word gw); word gw is word w = gw % WT of row tile t = gw // WT
    (WT = ceil(tile_rows / 64) words per tile, the last tile's surplus words stay empty).
    Active rows per (t, b, sub-plane) and, when S > 1, rows driven at a non-zero level per
    (t, b, cycle) are counted with atomics.
    """
    b, gw = cuda.grid(2)
    n_planes = xbits.shape[1]
    if b >= xbits.shape[0] or gw >= xbits.shape[2]:
        return
    words_per_tile = (tile_rows + 63) // 64
    t = gw // words_per_tile
    lo, hi = _word_rows(t, gw - t * words_per_tile, tile_rows, values.shape[1])
    words = cuda.local.array(MAX_PLANES, np.uint64)
    masks = cuda.local.array(MAX_PLANES, np.uint64)
    for p in range(n_planes):
        words[p] = np.uint64(0)
        masks[p] = np.uint64(0)
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
        xbits[b, p, gw] = words[p]
        xmask[b, p, gw] = masks[p]
        if masks[p] != 0:
            cuda.atomic.add(active, (t, b, p), np.int64(hw.popcount64(masks[p])))
    if level_bits > 1:
        for cycle in range(n_planes // level_bits):
            union = np.uint64(0)
            for k in range(level_bits):
                union |= masks[cycle * level_bits + k]
            if union != 0:
                cuda.atomic.add(driven, (t, b, cycle), np.int64(hw.popcount64(union)))


@cuda.jit(device=True)
def _cycle_of_thread(n_tiles, n_vectors, n_cycles):
    """(t, b, p) of this thread of a (T * B, P) grid, or (-1, -1, -1) past its end."""
    tb, p = cuda.grid(2)
    if tb >= n_tiles * n_vectors or p >= n_cycles:
        return -1, -1, -1
    t = tb // n_vectors
    return t, tb - t * n_vectors, p


@cuda.jit
def level_sums(sub_active, level_bits, level_sum):
    """A of every (tile, vector, cycle): its level bits' active rows weighted 2**k."""
    t, b, p = _cycle_of_thread(level_sum.shape[0], level_sum.shape[1], level_sum.shape[2])
    if t < 0:
        return
    total = np.int64(0)
    for k in range(level_bits):
        total += hw.level_weighted(sub_active[t, b, p * level_bits + k], k, False)
    level_sum[t, b, p] = total


@cuda.jit
def pack_stored(values, transposed, lut_offset, pattern_lut, tile_rows, wbits):
    """Stored operand -> uint64 (T, WT, Kw, N): word w of tile t, weight plane q, output n.

    ``values`` is (M, N), or (N, M) when ``transposed``.  One thread per (t * WT + w,
    n * Kw + q); a warp's neighbouring outputs write (and the MVM later reads) neighbouring
    words.
    """
    gw, c = cuda.grid(2)
    words_per_tile = wbits.shape[1]
    weight_planes = wbits.shape[2]
    n_out = wbits.shape[3]
    if gw >= wbits.shape[0] * words_per_tile or c >= weight_planes * n_out:
        return
    t = gw // words_per_tile
    w = gw - t * words_per_tile
    n = c // weight_planes
    q = c - n * weight_planes
    inner = values.shape[1] if transposed else values.shape[0]
    lo, hi = _word_rows(t, w, tile_rows, inner)
    word = np.uint64(0)
    for r in range(lo, hi):
        # int64 before the offset: the host copy is int16, whose sum would wrap (NumPy 2
        # keeps a Python int's partner type, so the simulator would index out of the table)
        v = np.int64(values[n, r]) if transposed else np.int64(values[r, n])
        if (np.int64(pattern_lut[v + lut_offset]) >> q) & 1:
            word |= np.uint64(1) << np.uint64(r - lo)
    wbits[t, w, q, n] = word


@cuda.jit
def cycle_constants(active, vref_mode, fixed_full_scale, dual_low, dual_high, top_code,
                    scale_frac_bits, half_up, full_scale, scale, threshold_shift):
    """Vref choice, NMC scale and ADC threshold of every (tile, vector, plane) cycle."""
    t, b, p = _cycle_of_thread(active.shape[0], active.shape[1], active.shape[2])
    if t < 0:
        return
    fs = hw.cycle_full_scale(active[t, b, p], vref_mode, fixed_full_scale, dual_low, dual_high,
                             top_code)
    full_scale[t, b, p] = fs
    scale[t, b, p] = hw.nmc_scale(fs, top_code, scale_frac_bits)
    threshold_shift[t, b, p] = hw.adc_threshold_shift(fs, top_code, half_up)


@cuda.jit
def signed_inputs(xbits, xmask, word_lo, b_lo, out):
    """Vectors [b_lo, b_lo + out.shape[0] // (P * S)) of one row tile as signed rows:
    out float32 (B' * P * S, WT * 64), row (b - b_lo) * P * S + i, column w * 64 + r: +1
    where row r of word w is active with input 1, -1 active with input 0, 0 masked (and on
    the padding rows past the tile).  The tile's words are xbits[:, :, word_lo + w].

    One thread per (row of ``out``, word w).
    """
    row, w = cuda.grid(2)
    n_sub = xbits.shape[1]
    words = out.shape[1] // 64
    if row >= out.shape[0] or w >= words:
        return
    b = b_lo + row // n_sub
    i = row - (row // n_sub) * n_sub
    x = xbits[b, i, word_lo + w]
    m = xmask[b, i, word_lo + w]
    for r in range(64):
        bit = np.uint64(1) << np.uint64(r)
        value = np.float32(0.0)
        if m & bit:
            value = np.float32(1.0) if x & bit else np.float32(-1.0)
        out[row, w * 64 + r] = value


@cuda.jit
def signed_stored(wbits, t, out):
    """Row tile t of the stored operand as +/-1 float32 (WT * 64, N * Kw): row w * 64 + r,
    column n * Kw + q, from wbits uint64 (T, WT, Kw, N).  Padding rows get -1 too: the
    signed inputs are 0 there, so they add nothing.

    One thread per (word w, column c).
    """
    w, c = cuda.grid(2)
    kw = wbits.shape[2]
    if w >= wbits.shape[1] or c >= out.shape[1]:
        return
    n = c // kw
    q = c - n * kw
    word = wbits[t, w, q, n]
    for r in range(64):
        value = np.float32(1.0) if word & (np.uint64(1) << np.uint64(r)) else np.float32(-1.0)
        out[w * 64 + r, c] = value


@cuda.jit
def tile_mvm(cyc, stored, tables, analog, nmc, span, out, dots):
    """Row tiles [t_lo, t_hi) of outputs [n_lo, n_hi), fused: XNOR counts, charge sharing,
    ADC and NMC, in one launch.

    The CPU kernel's named tuples of ``kernels.params``, with the GPU's layouts:

    - cyc : ``CycleInputs`` of every row tile at once: xbits, xmask uint64 (B, P * S, T * WT)
      (word w of row tile t at t * WT + w); active int64 (T, B, P * S); level_sum,
      full_scale, scale, threshold_shift int64 (T, B, P); level_bits S.
    - stored : ``StoredTile``: wbits uint64 (T, WT, Kw, N) so that a warp (consecutive n)
      reads consecutive words; wcols unused (the GPU has no row gather); cap_table int64
      (S, 2, R, C) of the launched tile when ``analog.charge_table``.
    - tables, analog : ``AnalogTables`` (every column of the chip), ``AnalogParams``.
    - nmc : ``NmcParams`` (n_outputs: outputs of a full column tile).
    - span : ``LaunchSpan``: seed, vector_offset and the tiles, outputs and vectors of this
      launch.
    - dots : float32 (b_hi - b_lo, P * S, N * Kw): the signed dot products of the launch's
      one row tile (the GEMM count path: ``signed_inputs`` @ ``signed_stored``), whose counts
      replace the popcounts; (0, 0, 0) to popcount.
    - out : ``MvmOutputs``: keep_codes; codes int64 (T, B, P, N * Kw), written only when
      keep_codes; clipped, high_count int64 (T, U) counts; acc int64 (B, N) accumulators.

    One thread per (output n, vector b).  For every row tile t in order, every input cycle
    p (its S level-bit sub-planes p * S + k in ``xbits``/``xmask``/``active``, A in
    ``level_sum``), then every weight plane q (the canonical NMC order), the count of column
    c = g * Kw + q of column tile u = n // n_outputs (g = n - u * n_outputs), its code, and
    the accumulator update; the accumulator stays in a register across tiles.
    Without cell or row-DAC mismatch one launch covers the whole MVM; with it, the host
    launches one (t, u) tile at a time with that tile's charge table.
    """
    i, first_b = cuda.grid(2)
    n = span.n_lo + i
    if n >= span.n_hi:
        return
    # grid-stride over vectors: the grid's y dimension is capped at 65535 blocks
    for b in range(span.b_lo + first_b, span.b_hi, cuda.gridDim.y * cuda.blockDim.y):
        _mvm_one(cyc, stored, tables, analog, nmc, span, out, dots, n, b)


@cuda.jit(device=True)
def _mvm_one(cyc, stored, tables, analog, nmc, span, out, dots, n, b):
    """Output n of vector b over row tiles [t_lo, t_hi): the body of ``tile_mvm``."""
    xbits, xmask, active, level_sum = cyc.xbits, cyc.xmask, cyc.active, cyc.level_sum
    level_bits = cyc.level_bits
    wbits, cap_table = stored.wbits, stored.cap_table
    top_code, scale_frac_bits = analog.top_code, nmc.scale_frac_bits
    per_column, dual_low, dual_high = analog.per_column, analog.dual_low, analog.dual_high
    ideal, charge_table, keep_codes = analog.ideal, analog.charge_table, out.keep_codes
    from_dots = dots.shape[0] > 0
    words_per_tile = wbits.shape[1]
    kw = wbits.shape[2]
    u = n // nmc.n_outputs
    g = n - u * nmc.n_outputs
    no_trials = cuda.local.array(MAX_ADC_BITS, np.int64)
    no_decisions = cuda.local.array(MAX_ADC_BITS, np.uint8)
    gb = span.vector_offset + b
    a_out = out.acc[b, n]
    # per-column dual Vref: a column that exceeds the low level converts at the high one
    scale_high, shift_high = np.int64(0), np.int64(0)
    magic_high, magic_high_shift = np.int64(0), np.int64(0)
    if per_column:
        scale_high = hw.nmc_scale(dual_high, top_code, scale_frac_bits)
        shift_high = hw.adc_threshold_shift(dual_high, top_code, analog.half_up)
        magic_high, magic_high_shift = hw.division_magic(dual_high)
    addend_high = hw.ideal_rounding_addend(shift_high, top_code)
    for t in range(span.t_lo, span.t_hi):
        w0 = t * words_per_tile
        n_clipped = 0
        n_high = 0
        for p in range(level_sum.shape[2]):
            a = level_sum[t, b, p]
            if hw.cycle_skipped(a, analog.skip_masked):
                if keep_codes:
                    for q in range(kw):
                        out.codes[t, b, p, n * kw + q] = 0
                continue                  # not run: no conversion, no NMC term
            fs = cyc.full_scale[t, b, p]
            sc = cyc.scale[t, b, p]
            addend = np.int64(0)
            multiplier, shift = np.int64(0), np.int64(0)
            if ideal:
                multiplier, shift = hw.division_magic(fs)
                addend = hw.ideal_rounding_addend(cyc.threshold_shift[t, b, p], top_code)
            sample_key = np.uint64(0)
            noise_key = np.uint64(0)
            if not ideal:
                sample_key = hw.cycle_key(span.seed, hw.STREAM_SAMPLE, t, u, gb, p)
                noise_key = hw.cycle_key(span.seed, hw.STREAM_CMP_NOISE, t, u, gb, p)
            for q in range(kw):
                c = g * kw + q
                count = np.int64(0)
                if not charge_table:
                    # hw.column_xnor_count over the (T, WT, Kw, N) layout, per level bit
                    for k in range(level_bits):
                        i = p * level_bits + k
                        if from_dots:
                            sub = hw.count_from_signed_dot(dots[b - span.b_lo, i, n * kw + q],
                                                           active[t, b, i])
                        else:
                            mismatches = np.int64(0)
                            for w in range(words_per_tile):
                                m = xmask[b, i, w0 + w]
                                if m != 0:
                                    mismatches += hw.word_mismatches(xbits[b, i, w0 + w],
                                                                     wbits[t, w, q, n], m)
                            sub = active[t, b, i] - mismatches
                        count += hw.level_weighted(sub, k, False)
                if ideal:
                    # no driven row (a == 0): every count is 0, and so is every code
                    code, f_c, clip, is_high = hw.ideal_column_conversion(
                        count, fs, multiplier, shift, addend, per_column, dual_low, dual_high,
                        magic_high, magic_high_shift, addend_high, top_code, analog.adc_bits)
                else:
                    if charge_table:
                        charge = np.int64(0)
                        for k in range(level_bits):
                            i = p * level_bits + k
                            charge += hw.level_weighted(
                                hw.column_charge(xbits[b, i, w0:w0 + words_per_tile],
                                                 xmask[b, i, w0:w0 + words_per_tile],
                                                 cap_table[k], c), k, True)
                    else:
                        charge = count * hw.CAP_UNIT
                    value = hw.sample_column(
                        hw.charge_share(analog.rows, charge, tables.col_total_cap[c]),
                        analog.sigma_sample_fx, hw.mix(sample_key, c))
                    code, f_c, clip, is_high = hw.column_conversion(
                        value, tables.cmp_offset[c], tables.cdac[c], tables.cdac_total[c], fs,
                        cyc.threshold_shift[t, b, p], per_column, dual_low, dual_high,
                        analog.half_up, top_code, analog.sigma_cmp_fx, hw.mix(noise_key, c),
                        no_trials, no_decisions, False)
                sc_c = hw.column_nmc_scale(f_c, fs, sc, scale_high)
                if clip:
                    n_clipped += 1
                if is_high:
                    n_high += 1
                if keep_codes:
                    out.codes[t, b, p, n * kw + q] = code
                off = hw.column_code_offset(f_c, code, top_code, nmc.code_offsets, c)
                term = hw.nmc_term(code, sc_c, a, scale_frac_bits, off, nmc.pw_x[p], nmc.pw_w[q])
                a_out = hw.accumulate(a_out, term, nmc.acc_bits, nmc.saturate)
        if n_clipped:
            cuda.atomic.add(out.clipped, (t, u), n_clipped)
        if n_high:
            cuda.atomic.add(out.high_count, (t, u), n_high)
    out.acc[b, n] = a_out


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
KERNELS = {"encode_units": encode_units, "pack_inputs": pack_inputs, "level_sums": level_sums,
        "pack_stored": pack_stored, "cycle_constants": cycle_constants,
        "tile_mvm": tile_mvm, "signed_inputs": signed_inputs, "signed_stored": signed_stored,
        "output_stage": output_stage}
