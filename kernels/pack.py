"""Bit-packing of streamed input planes for the fast path.

Each input element's plane pattern comes from lookup tables built by ``imcsim.formats`` (the one
definition of the encodings): bit p of ``pattern_lut[v + lut_offset]`` is the row input of plane
p and bit p of ``gate_lut[...]`` says whether the row is active in plane p.  Row r of a tile goes
to bit (r % 64) of word (r // 64) of its (vector, plane).
"""
import numpy as np
from numba import njit, prange

from imcsim.kernels.targets import CPU as hw

_M1 = np.uint64(0x00AA00AA00AA00AA)
_M2 = np.uint64(0x0000CCCC0000CCCC)
_M3 = np.uint64(0x00000000F0F0F0F0)
_BYTE = np.uint64(0xFF)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_LOW_BITS = np.uint64(0x0101010101010101)
_GATHER_MUL = np.uint64(0x0102040810204080)
_SWAP8 = np.uint64(0x00FF00FF00FF00FF)
_SWAP16 = np.uint64(0x0000FFFF0000FFFF)
_SWAP32 = np.uint64(0x00000000FFFFFFFF)


@njit(cache=True, inline="always")
def _transpose8(x):
    """Transpose an 8x8 bit matrix held in a uint64 (bit 8i+j <-> bit 8j+i)."""
    t = (x ^ (x >> np.uint64(7))) & _M1
    x = x ^ t ^ (t << np.uint64(7))
    t = (x ^ (x >> np.uint64(14))) & _M2
    x = x ^ t ^ (t << np.uint64(14))
    t = (x ^ (x >> np.uint64(28))) & _M3
    return x ^ t ^ (t << np.uint64(28))


@njit(cache=True, inline="always")
def _swap(a, b, shift, mask):
    """One delta swap of a byte transpose: exchange the masked units of a (shifted) and b."""
    t = ((a >> shift) ^ b) & mask
    return a ^ (t << shift), b ^ t


@njit(cache=True, inline="always")
def _transpose_bytes(m, out):
    """8x8 byte transpose: byte j of out[i] = byte i of m[j] (m, out: uint64 (8,))."""
    a0, a1, a2, a3 = m[0], m[1], m[2], m[3]
    a4, a5, a6, a7 = m[4], m[5], m[6], m[7]
    s8, s16, s32 = np.uint64(8), np.uint64(16), np.uint64(32)
    m8, m16, m32 = _SWAP8, _SWAP16, _SWAP32
    a0, a1 = _swap(a0, a1, s8, m8)
    a2, a3 = _swap(a2, a3, s8, m8)
    a4, a5 = _swap(a4, a5, s8, m8)
    a6, a7 = _swap(a6, a7, s8, m8)
    a0, a2 = _swap(a0, a2, s16, m16)
    a1, a3 = _swap(a1, a3, s16, m16)
    a4, a6 = _swap(a4, a6, s16, m16)
    a5, a7 = _swap(a5, a7, s16, m16)
    a0, a4 = _swap(a0, a4, s32, m32)
    a1, a5 = _swap(a1, a5, s32, m32)
    a2, a6 = _swap(a2, a6, s32, m32)
    a3, a7 = _swap(a3, a7, s32, m32)
    out[0], out[1], out[2], out[3] = a0, a1, a2, a3
    out[4], out[5], out[6], out[7] = a4, a5, a6, a7


@njit(cache=True, inline="always")
def _pack_vector_bytes(values, b, lut_offset, pattern_lut, gate_lut, all_active, uniform_pattern,
                       first_plane, n_planes, r0, r1, pat, gat, tp, tg, xbits, xmask, active):
    """Pack planes [first_plane, first_plane + n_planes) (n_planes <= 8) of one vector.

    A byte of plane bits per row; an 8x8 bit transpose turns 8 rows x 8 planes into 8 planes
    x 8 rows, and an 8x8 byte transpose gathers the 8 row-chunks of a 64-row word per plane.
    Formats with more planes (multi-level sub-planes) are packed 8 planes at a time.
    """
    n_words = xbits.shape[2]
    pat[:] = 0
    gat[:] = 0
    if first_plane == 0:                 # the common case (<= 8 planes): no shift per row
        for r in range(r1 - r0):
            idx = values[b, r0 + r] + lut_offset
            pat[r] = np.uint8(pattern_lut[idx] & 0xFF)
            if not all_active:
                gat[r] = np.uint8(gate_lut[idx] & 0xFF)
    else:
        shift = np.uint32(first_plane)
        for r in range(r1 - r0):
            idx = values[b, r0 + r] + lut_offset
            pat[r] = np.uint8((np.uint32(pattern_lut[idx]) >> shift) & np.uint32(0xFF))
            if not all_active:
                gat[r] = np.uint8((np.uint32(gate_lut[idx]) >> shift) & np.uint32(0xFF))
    pat64 = pat.view(np.uint64)      # little-endian: byte i of word k is row 8k + i
    gat64 = gat.view(np.uint64)
    for p in range(first_plane, first_plane + n_planes):
        active[b, p] = 0
    n_rows = r1 - r0
    for w in range(n_words):
        if all_active:
            # every row of the word is active in every plane: no gate transposes; the
            # padding rows past r1 are zero in pat already
            for chunk in range(8):
                tp[chunk] = _transpose8(pat64[w * 8 + chunk])
            _transpose_bytes(tp, tp)
            valid = min(64, n_rows - w * 64)
            word_mask = _ALL if valid == 64 else (np.uint64(1) << np.uint64(valid)) - np.uint64(1)
            for p in range(n_planes):
                xbits[b, first_plane + p, w] = tp[p]
                xmask[b, first_plane + p, w] = word_mask
                active[b, first_plane + p] += valid
            continue
        if uniform_pattern:
            # every plane carries the same row input (radix-4: the sign), so one word of
            # plane-0 bits serves all planes: gather bit 0 of 8 bytes with one multiply
            sign_word = np.uint64(0)
            for chunk in range(8):
                tg[chunk] = _transpose8(gat64[w * 8 + chunk])
                low_bits = (pat64[w * 8 + chunk] & _LOW_BITS) * _GATHER_MUL
                sign_word |= (low_bits >> np.uint64(56)) << np.uint64(8 * chunk)
            _transpose_bytes(tg, tg)
            for p in range(n_planes):
                xbits[b, first_plane + p, w] = sign_word & tg[p]
                xmask[b, first_plane + p, w] = tg[p]
                active[b, first_plane + p] += np.int64(hw.popcount64(tg[p]))
            continue
        for chunk in range(8):
            g = _transpose8(gat64[w * 8 + chunk])
            tg[chunk] = g
            tp[chunk] = _transpose8(pat64[w * 8 + chunk]) & g
        _transpose_bytes(tp, tp)
        _transpose_bytes(tg, tg)
        for p in range(n_planes):
            xbits[b, first_plane + p, w] = tp[p]
            xmask[b, first_plane + p, w] = tg[p]
            active[b, first_plane + p] += np.int64(hw.popcount64(tg[p]))


@njit(cache=True, parallel=True)
def pack_input_planes(values, lut_offset, pattern_lut, gate_lut, n_planes, r0, r1,
                      xbits, xmask, active, uniform_pattern=False, chunks=64):
    """Pack rows [r0, r1) of every vector and count active rows per plane.

    values : int64 (B, M)  element values in the format's integer units (validated).
    pattern_lut, gate_lut : uint16 (V,)  per-value plane patterns; an empty gate_lut means
        every row is active in every plane (dense binary inputs), which skips the gate work.
    xbits, xmask : uint64 (B, P, W), active : int64 (B, P)  outputs (overwritten).
    uniform_pattern : bool  every value's row input is the same in all planes (radix-4).
    chunks : int  parallel chunks of vectors (speed only; the caller passes a multiple of the
        thread count, since numba.get_num_threads() here would make the kernel uncachable).
    """
    n_vec = values.shape[0]
    n_words = xbits.shape[2]
    all_active = gate_lut.shape[0] == 0
    n_chunks = min(n_vec, chunks)
    for chunk in prange(n_chunks):
        pat = np.zeros(n_words * 64, dtype=np.uint8)
        gat = np.zeros(n_words * 64, dtype=np.uint8)
        tp = np.zeros(8, dtype=np.uint64)
        tg = np.zeros(8, dtype=np.uint64)
        for b in range(chunk * n_vec // n_chunks, (chunk + 1) * n_vec // n_chunks):
            for first in range(0, n_planes, 8):             # 8 planes at a time
                _pack_vector_bytes(values, b, lut_offset, pattern_lut, gate_lut, all_active,
                                   uniform_pattern, first, min(8, n_planes - first), r0, r1,
                                   pat, gat, tp, tg, xbits, xmask, active)


@njit(cache=True, parallel=True)
def driven_rows(xmask, level_bits, driven):
    """Rows each cycle drives at a non-zero level (docs/hardware-model.md 4.8): the union of
    its level-bit sub-planes' masks.  xmask : uint64 (B, P * S, W); driven : int64 (B, P)."""
    for b in prange(driven.shape[0]):
        for p in range(driven.shape[1]):
            total = np.int64(0)
            for w in range(xmask.shape[2]):
                union = np.uint64(0)
                for k in range(level_bits):
                    union |= xmask[b, p * level_bits + k, w]
                total += np.int64(hw.popcount64(union))
            driven[b, p] = total


@njit(cache=True, parallel=True)
def radix4_units(values, denominator, max_exponent2, units):
    """Radix-4 values -> integer units of 1/denominator (``hw.radix4_unit``).

    ``units`` (int64, same shape as ``values``) is written; returns how many entries are not
    representable (they get 0 and the caller raises).
    """
    flat = values.ravel()
    out = units.ravel()
    bad = 0
    for i in prange(flat.shape[0]):
        unit, ok = hw.radix4_unit(flat[i], denominator, max_exponent2)
        out[i] = unit
        if not ok:
            bad += 1
    return bad


@njit(cache=True, parallel=True)
def count_outside(values, lo, hi):
    """How many entries of an integer array lie outside [lo, hi] (the caller raises)."""
    flat = values.ravel()
    bad = 0
    for i in prange(flat.shape[0]):
        v = flat[i]
        if v < lo or v > hi:
            bad += 1
    return bad


@njit(cache=True, parallel=True)
def float_integers(values, lo, hi, out):
    """Float values that must be integers in [lo, hi] -> int64 ``out`` (same shape), in one
    parallel pass without temporaries.

    Returns (not_integer, outside): how many entries are not finite or not integral, and how
    many integral ones lie outside [lo, hi]; those entries get 0 and the caller raises.
    """
    flat = values.ravel()
    dst = out.ravel()
    not_integer = 0
    outside = 0
    for i in prange(flat.shape[0]):
        v = flat[i]
        if not np.isfinite(v) or v != np.floor(v):
            not_integer += 1
            dst[i] = 0
        elif v < lo or v > hi:
            outside += 1
            dst[i] = 0
        else:
            dst[i] = np.int64(v)
    return not_integer, outside


@njit(cache=True, parallel=True)
def unpack_columns(packed, n_rows, columns):
    """Packed stored columns uint64 (C, W) -> uint8 (R, C), one row per output row."""
    n_cols = packed.shape[0]
    for r in prange(n_rows):
        word = r // 64
        shift = np.uint64(r % 64)
        for c in range(n_cols):
            columns[r, c] = np.uint8((packed[c, word] >> shift) & np.uint64(1))


@njit(cache=True, parallel=True)
def transpose_to_int16(values, lo, hi, out):
    """out[n, m] = values[m, n] for an integer matrix (M, N); returns how many lie outside
    [lo, hi] (those entries are written clipped and the caller raises).

    One pass over the stored operand in 64 x 64 blocks (both sides stay in cache).
    """
    n_rows, n_cols = values.shape
    bad = 0
    n_blocks = (n_cols + 63) // 64
    for nb in prange(n_blocks):
        c0 = nb * 64
        c1 = min(n_cols, c0 + 64)
        for r0 in range(0, n_rows, 64):
            r1 = min(n_rows, r0 + 64)
            for c in range(c0, c1):
                for r in range(r0, r1):
                    v = values[r, c]
                    if v < lo or v > hi:
                        bad += 1
                        v = lo if v < lo else hi
                    out[c, r] = np.int16(v)
    return bad


@njit(cache=True, parallel=True)
def record_row_signals(values, vectors, planes, r0, r1, lut_offset, pattern_lut, gate_lut,
                       level_bits, bits, active, levels):
    """What the row drivers apply in each of n recorded cycles (vector, plane), rows [r0, r1).

    values : integer (B, M) units of the streamed operand (validated); vectors, planes : int64
    (n,) each record's vector and cycle; pattern_lut, gate_lut : the format's lookup tables
    (bit p * S + k: row input / active flag of level bit k of cycle p, S = ``level_bits``).
    bits, levels : uint8 (n, R) and active : bool (n, R), written: the encoder's row input of
    the cycle's first sub-plane (even on masked rows, where the mask disconnects the cell),
    the row's level (its active level bits, bit k weighing 2**k; 0 = masked) and level > 0.
    """
    for i in prange(vectors.shape[0]):
        b = vectors[i]
        first = np.int64(planes[i] * level_bits)
        for r in range(r1 - r0):
            idx = np.int64(values[b, r0 + r]) + lut_offset
            pattern = np.int64(pattern_lut[idx])
            gate = np.int64(gate_lut[idx])
            level = 0
            for k in range(level_bits):
                level |= ((gate >> (first + k)) & 1) << k
            bits[i, r] = np.uint8((pattern >> first) & 1)
            levels[i, r] = np.uint8(level)
            active[i, r] = level > 0
