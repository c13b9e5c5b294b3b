"""Near-memory-computing datapath arithmetic shared by both paths (docs/hardware-model.md 4.6).

The per-term accumulation lives in the paths themselves (it is the hot loop); what is here is
the per-cycle scale constant and the output stage, written once in integer NumPy.
"""
from __future__ import annotations

import numpy as np

from imcsim.config import NmcConfig, Overflow, Rounding


def nmc_scale_fx(full_scale, top_code: int, scale_frac_bits: int) -> np.ndarray:
    """Fixed-point F / L (round half up) that turns a code back into a row count. int64."""
    f = np.asarray(full_scale, dtype=np.int64)
    return ((f << (scale_frac_bits + 1)) + top_code) // (2 * top_code)


def accumulator_fraction_bits(nmc: NmcConfig, x_format, w_format) -> int:
    """Fraction bits of the accumulator: S + log2(den_x) + log2(den_w)."""
    return (nmc.scale_frac_bits + int(x_format.denominator).bit_length() - 1
            + int(w_format.denominator).bit_length() - 1)


def shift_round(values, shift: int, rounding: Rounding) -> np.ndarray:
    """Arithmetic shift right by ``shift`` (> 0) with the given rounding; int64 in and out."""
    v = np.asarray(values, dtype=np.int64)
    if shift <= 0:
        return v << (-shift)
    floor = v >> shift
    if rounding is Rounding.FLOOR:
        return floor
    rem = v - (floor << shift)
    half = np.int64(1) << (shift - 1)
    if rounding is Rounding.HALF_UP:
        return floor + (rem >= half)
    up = (rem > half) | ((rem == half) & ((floor & 1) == 1))
    return floor + up


def saturate(values, bits: int) -> np.ndarray:
    """Clamp int64 values to a two's-complement register of ``bits``."""
    hi = np.int64((1 << (bits - 1)) - 1)
    return np.minimum(np.maximum(np.asarray(values, dtype=np.int64), -hi - 1), hi)


def wrap(values, bits: int) -> np.ndarray:
    """Two's-complement wrap of int64 values into ``bits``."""
    v = np.asarray(values, dtype=np.int64)
    lo = -(1 << (bits - 1))
    return ((v - lo) & ((1 << bits) - 1)) + lo


def register_update(values, bits: int, overflow: Overflow) -> np.ndarray:
    """Apply the accumulator's overflow rule."""
    return saturate(values, bits) if overflow is Overflow.SATURATE else wrap(values, bits)


def output_stage(acc, nmc: NmcConfig, acc_frac_bits: int, out_scale=None, out_offset=None):
    """Accumulator -> output register ``y_int`` (out_frac_bits, out_bits, rounding).

    Parameters
    ----------
    acc : int64 (B, N)  accumulator after the last row tile.
    out_scale : int64 (N,) or None  per-output scale with ``out_scale_frac_bits``.
    out_offset : int64 (N,) or None  per-output offset in output LSBs.
    """
    y = saturate(shift_round(acc, acc_frac_bits - nmc.out_frac_bits, nmc.out_rounding),
                 nmc.out_bits)
    if out_scale is None and out_offset is None:
        return y
    if out_scale is not None:
        y = shift_round(y * np.asarray(out_scale, dtype=np.int64)[None, :],
                        nmc.out_scale_frac_bits, nmc.out_rounding)
    if out_offset is not None:
        y = y + np.asarray(out_offset, dtype=np.int64)[None, :]
    return saturate(y, nmc.out_bits)
