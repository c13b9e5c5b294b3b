"""Analog physics of the macro in fixed point: static mismatch tables and the SAR conversion.

Units (docs/hardware-model.md, section 4): column values are in rows scaled by
``2**ANALOG_FRAC_BITS``; capacitors in ``CAP_UNIT`` / ``CDAC_UNIT`` integer units; sigmas are
fixed-point integers scaled by ``2**16``.  Everything is integer arithmetic.
"""
import numpy as np
from numba import njit

from imcsim.kernels.rng import (STREAM_CDAC, STREAM_CELL_CAP, STREAM_CMP_OFFSET, mix,
                         normal_fx_from_hash, seed_hash)

ANALOG_FRAC_BITS = 20
CAP_UNIT = 4096
CDAC_UNIT = 4096
SIGMA_FRAC_BITS = 16
# (sigma_fx * normal_fx) carries 2 * SIGMA_FRAC_BITS fraction bits; a value in rows keeps
# ANALOG_FRAC_BITS of them.
NOISE_SHIFT = 2 * SIGMA_FRAC_BITS - ANALOG_FRAC_BITS


@njit(cache=True)
def cell_capacitor_table(chip_seed, rows, columns, sigma_cell_fx):
    """Capacitance of every bit cell, int64 (rows, columns), in CAP_UNIT units."""
    caps = np.empty((rows, columns), dtype=np.int64)
    prefix = seed_hash(chip_seed, STREAM_CELL_CAP)
    for r in range(rows):
        hr = mix(prefix, r)
        for c in range(columns):
            n = normal_fx_from_hash(mix(hr, c))
            caps[r, c] = CAP_UNIT + ((CAP_UNIT * np.int64(sigma_cell_fx) * n) >> 32)
    return caps


@njit(cache=True)
def cdac_weight_table(chip_seed, columns, adc_bits, sigma_cdac_fx):
    """Binary-weighted CDAC capacitors per column, int64 (columns, adc_bits), CDAC_UNIT units.

    Capacitor k is built from 2**k unit capacitors, each with its own mismatch, so the
    relative error of larger capacitors shrinks as 1/sqrt(2**k), as in silicon.
    """
    weights = np.empty((columns, adc_bits), dtype=np.int64)
    prefix = seed_hash(chip_seed, STREAM_CDAC)
    for c in range(columns):
        hc = mix(prefix, c)
        for k in range(adc_bits):
            hk = mix(hc, k)
            total = np.int64(0)
            for i in range(1 << k):
                n = normal_fx_from_hash(mix(hk, i))
                total += CDAC_UNIT + ((CDAC_UNIT * np.int64(sigma_cdac_fx) * n) >> 32)
            weights[c, k] = total
    return weights


@njit(cache=True)
def comparator_offset_table(chip_seed, columns, sigma_offset_fx):
    """Static comparator offset of every column's ADC, int64 (columns,), analog fixed point."""
    offsets = np.empty(columns, dtype=np.int64)
    prefix = seed_hash(chip_seed, STREAM_CMP_OFFSET)
    for c in range(columns):
        n = normal_fx_from_hash(mix(prefix, c))
        offsets[c] = (np.int64(sigma_offset_fx) * n) >> NOISE_SHIFT
    return offsets


@njit(cache=True, inline="always")
def charge_share(rows, charged_capacitance, total_capacitance):
    """Column value in analog fixed point after shorting all cell capacitors (int64)."""
    return (np.int64(rows) * charged_capacitance << ANALOG_FRAC_BITS) // total_capacitance


# Numerators of the ideal ADC law, count * L, stay below 2**DIVIDEND_BITS (rows <= 2**16,
# L <= 4095), which makes the multiply-shift division below exact.
DIVIDEND_BITS = 28


@njit(cache=True, inline="always")
def division_magic(divisor):
    """(multiplier, shift) with floor(a / divisor) == (a * multiplier) >> shift for 0 <= a < 2**28.

    m = ceil(2**k / d) with k = 28 + ceil(log2 d) gives m*d - 2**k < d <= 2**(k-28), the
    condition for exactness (Granlund & Montgomery 1994); a * m stays below 2**58.
    """
    d = np.int64(divisor)
    ceil_log2 = 0
    while (np.int64(1) << ceil_log2) < d:
        ceil_log2 += 1
    shift = DIVIDEND_BITS + ceil_log2
    multiplier = ((np.int64(1) << shift) + d - 1) // d
    return multiplier, shift


@njit(cache=True, inline="always")
def ideal_adc_code(count, multiplier, shift, top_code):
    """The ideal ADC law ``clip(floor(count * L / F), 0, L)``; (multiplier, shift) divide by F."""
    code = (np.int64(count) * top_code * multiplier) >> shift
    return top_code if code > top_code else code
