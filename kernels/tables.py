"""Static mismatch tables of one chip, drawn from the counter-based generator of ``kernels.hw``.

A chip is its ``chip_seed``: every table entry is a pure function of (seed, stream, index).
"""
import numpy as np
from numba import njit

from imcsim.kernels.targets import CPU as hw


@njit(cache=True)
def cell_capacitor_table(chip_seed, rows, columns, sigma_cell_fx):
    """Capacitance of every bit cell, int64 (rows, columns), in CAP_UNIT units."""
    caps = np.empty((rows, columns), dtype=np.int64)
    prefix = hw.seed_hash(chip_seed, hw.STREAM_CELL_CAP)
    for r in range(rows):
        hr = hw.mix(prefix, r)
        for c in range(columns):
            caps[r, c] = hw.mismatched_capacitor(hw.CAP_UNIT, sigma_cell_fx, hw.mix(hr, c))
    return caps


@njit(cache=True)
def cdac_weight_table(chip_seed, columns, adc_bits, sigma_cdac_fx):
    """Binary-weighted CDAC capacitors per column, int64 (columns, adc_bits), CDAC_UNIT units.

    Capacitor k is built from 2**k unit capacitors, each with its own mismatch, so the
    relative error of larger capacitors shrinks as 1/sqrt(2**k), as in silicon.
    """
    weights = np.empty((columns, adc_bits), dtype=np.int64)
    prefix = hw.seed_hash(chip_seed, hw.STREAM_CDAC)
    for c in range(columns):
        hc = hw.mix(prefix, c)
        for k in range(adc_bits):
            hk = hw.mix(hc, k)
            total = np.int64(0)
            for i in range(1 << k):
                total += hw.mismatched_capacitor(hw.CDAC_UNIT, sigma_cdac_fx, hw.mix(hk, i))
            weights[c, k] = total
    return weights


@njit(cache=True)
def comparator_offset_table(chip_seed, columns, sigma_offset_fx):
    """Static comparator offset of every column's ADC, int64 (columns,), analog fixed point."""
    offsets = np.empty(columns, dtype=np.int64)
    prefix = hw.seed_hash(chip_seed, hw.STREAM_CMP_OFFSET)
    for c in range(columns):
        offsets[c] = hw.scaled_normal(sigma_offset_fx, hw.mix(prefix, c), hw.NOISE_SHIFT)
    return offsets
