"""Bit-packing of streamed input planes for the fast path.

Each input element's plane pattern comes from lookup tables built by ``imcsim.formats`` (the one
definition of the encodings): bit p of ``pattern_lut[v + lut_offset]`` is the row input of plane
p and bit p of ``gate_lut[...]`` says whether the row is active in plane p.  Row r of a tile goes
to bit (r % 64) of word (r // 64) of its (vector, plane).
"""
import numpy as np
from numba import njit, prange

from kernels.fast_mvm import popcount64

_M1 = np.uint64(0x00AA00AA00AA00AA)
_M2 = np.uint64(0x0000CCCC0000CCCC)
_M3 = np.uint64(0x00000000F0F0F0F0)
_BYTE = np.uint64(0xFF)


@njit(cache=True, inline="always")
def _transpose8(x):
    """Transpose an 8x8 bit matrix held in a uint64 (bit 8i+j <-> bit 8j+i)."""
    t = (x ^ (x >> np.uint64(7))) & _M1
    x = x ^ t ^ (t << np.uint64(7))
    t = (x ^ (x >> np.uint64(14))) & _M2
    x = x ^ t ^ (t << np.uint64(14))
    t = (x ^ (x >> np.uint64(28))) & _M3
    return x ^ t ^ (t << np.uint64(28))


@njit(cache=True, parallel=True)
def pack_input_planes(values, lut_offset, pattern_lut, gate_lut, n_planes, r0, r1,
                      xbits, xmask, active):
    """Pack rows [r0, r1) of every vector and count active rows per plane.

    values : int64 (B, M)  element values in the format's integer units (validated).
    pattern_lut, gate_lut : uint16 (V,)  per-value plane patterns; an empty gate_lut means
        every row is active in every plane (dense binary inputs), which skips the gate work.
    xbits, xmask : uint64 (B, P, W), active : int64 (B, P)  outputs (overwritten).
    """
    n_vec = values.shape[0]
    n_words = xbits.shape[2]
    all_active = gate_lut.shape[0] == 0
    full_gate = np.uint64((1 << n_planes) - 1) * np.uint64(0x0101010101010101)
    for b in prange(n_vec):
        for p in range(n_planes):
            active[b, p] = 0
        pw = np.zeros(8, dtype=np.uint64)
        gw = np.zeros(8, dtype=np.uint64)
        for w in range(n_words):
            lo = r0 + w * 64
            if n_planes <= 8:
                pw[:] = 0
                gw[:] = 0
                for chunk in range(8):
                    xp = np.uint64(0)
                    xg = np.uint64(0)
                    base = lo + chunk * 8
                    if all_active and base + 8 <= r1:
                        for i in range(8):
                            idx = values[b, base + i] + lut_offset
                            xp |= np.uint64(pattern_lut[idx] & 0xFF) << np.uint64(8 * i)
                        xg = full_gate
                    else:
                        for i in range(8):
                            r = base + i
                            if r < r1:
                                idx = values[b, r] + lut_offset
                                xp |= np.uint64(pattern_lut[idx] & 0xFF) << np.uint64(8 * i)
                                gate = (1 << n_planes) - 1 if all_active else gate_lut[idx]
                                xg |= np.uint64(gate & 0xFF) << np.uint64(8 * i)
                    tp = _transpose8(xp)
                    tg = _transpose8(xg)
                    sh = np.uint64(8 * chunk)
                    for p in range(n_planes):
                        pw[p] |= ((tp >> np.uint64(8 * p)) & _BYTE) << sh
                        gw[p] |= ((tg >> np.uint64(8 * p)) & _BYTE) << sh
                for p in range(n_planes):
                    xbits[b, p, w] = pw[p] & gw[p]
                    xmask[b, p, w] = gw[p]
                    active[b, p] += np.int64(popcount64(gw[p]))
            else:
                hi = min(r1, lo + 64)
                for p in range(n_planes):
                    word = np.uint64(0)
                    mword = np.uint64(0)
                    for r in range(lo, hi):
                        idx = values[b, r] + lut_offset
                        sh = np.uint64(r - lo)
                        gate = (1 << n_planes) - 1 if all_active else gate_lut[idx]
                        word |= np.uint64((pattern_lut[idx] >> p) & 1) << sh
                        mword |= np.uint64((gate >> p) & 1) << sh
                    xbits[b, p, w] = word & mword
                    xmask[b, p, w] = mword
                    active[b, p] += np.int64(popcount64(mword))


@njit(cache=True, parallel=True)
def radix4_units(values, denominator, max_exponent2, units):
    """Radix-4 values -> integer units of 1/denominator; returns how many are not representable.

    A representable magnitude times the denominator is 4**j, 0 <= 2j <= max_exponent2.  ``units`` (int64, same shape as
    ``values``) is written; unrepresentable entries get 0 (the caller raises).
    """
    flat = values.ravel()
    out = units.ravel()
    n = flat.shape[0]
    bad = 0
    for i in prange(n):
        m = abs(flat[i]) * denominator
        if m == 0.0:
            out[i] = 0
            continue
        k = np.int64(0)
        if m >= 1.0 and m <= float(np.int64(1) << max_exponent2):
            k = np.int64(m)
        # a power of two whose single set bit sits at an even position
        if k > 0 and float(k) == m and (k & (k - 1)) == 0 and (k & 0x5555555555555555) != 0:
            out[i] = -k if flat[i] < 0 else k
        else:
            out[i] = 0
            bad += 1
    return bad
