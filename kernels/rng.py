"""Counter-based random numbers keyed by (seed, stream, event coordinates).

Every random quantity of the macro (capacitor mismatch, comparator offset and noise, sampling
noise) is a pure function of its key, so results never depend on call order, batch chunking,
tile order or thread count.  Only integer operations are used, so the NumPy-side and Numba-side
callers and the reference twin in the tests agree bit for bit.  The exact definition is in
docs/hardware-model.md, section 5.
"""
import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_MASK16 = np.uint64(0xFFFF)
# 12 * 65535 / 2: the mean of the Irwin-Hall sum of twelve 16-bit uniforms.
IRWIN_HALL_MEAN = 393210
STREAM_CELL_CAP = 1
STREAM_CDAC = 2
STREAM_CMP_OFFSET = 3
STREAM_SAMPLE = 4
STREAM_CMP_NOISE = 5


@njit(cache=True, inline="always")
def splitmix64(x):
    """SplitMix64 finaliser of a uint64 (wrapping arithmetic). Returns uint64."""
    x = np.uint64(x) + _GOLDEN
    z = x
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def mix(h, value):
    """Fold one non-negative key counter into a running key hash (uint64)."""
    return splitmix64(np.uint64(h) ^ np.uint64(value))


@njit(cache=True, inline="always")
def seed_hash(seed, stream):
    """Key hash of (seed, stream): the prefix every event key starts from (uint64)."""
    return mix(splitmix64(np.uint64(seed)), stream)


@njit(cache=True, inline="always")
def normal_fx_from_hash(h):
    """Approximately N(0, 1) in units of 2**-16 (int64), from a finished key hash.

    Irwin-Hall sum of twelve 16-bit uniforms: integer-only, mean 0, sigma 65536, tails cut at
    six sigma.
    """
    total = np.int64(0)
    for i in range(3):
        u = splitmix64(h + np.uint64(i))
        total += np.int64(u & _MASK16)
        total += np.int64((u >> np.uint64(16)) & _MASK16)
        total += np.int64((u >> np.uint64(32)) & _MASK16)
        total += np.int64(u >> np.uint64(48))
    return total - IRWIN_HALL_MEAN


@njit(cache=True, inline="always")
def scaled_normal(sigma_fx, h, shift):
    """``(sigma_fx * normal_fx) >> shift`` (floor), the fixed-point noise sample of a key hash."""
    return (np.int64(sigma_fx) * normal_fx_from_hash(h)) >> np.int64(shift)


@njit(cache=True)
def event_noise_columns(sigma_fx, shift, seed, stream, tile_row, tile_col, vector, plane,
                        n_cols, step):
    """Noise of one array cycle for every column: int64 (n_cols,).

    Key (seed, stream, tile_row, tile_col, vector, plane, column[, step]); ``step < 0`` leaves
    the step out (sampling noise).  Used by the cycle-level path; the fast kernel forms the
    same keys inline.
    """
    out = np.empty(n_cols, dtype=np.int64)
    prefix = mix(mix(mix(mix(seed_hash(seed, stream), tile_row), tile_col), vector), plane)
    for c in range(n_cols):
        h = mix(prefix, c)
        if step >= 0:
            h = mix(h, step)
        out[c] = scaled_normal(sigma_fx, h, shift)
    return out
