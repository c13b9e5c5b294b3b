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
def _binary_weighted_units(prefix, items, bits, unit, sigma_fx):
    """int64 (items, bits): element k of item i is 2**k unit elements of nominal size
    ``unit``, unit j with its own mismatch keyed (prefix, i, k, j), so the relative error of
    larger elements shrinks as 1/sqrt(2**k), as in silicon."""
    weights = np.empty((items, bits), dtype=np.int64)
    for i in range(items):
        hi = hw.mix(prefix, i)
        for k in range(bits):
            hk = hw.mix(hi, k)
            total = np.int64(0)
            for j in range(1 << k):
                total += hw.mismatched_capacitor(unit, sigma_fx, hw.mix(hk, j))
            weights[i, k] = total
    return weights


@njit(cache=True)
def cdac_weight_table(chip_seed, columns, adc_bits, sigma_cdac_fx):
    """Binary-weighted CDAC capacitors per column, int64 (columns, adc_bits), CDAC_UNIT units.

    Capacitor k is built from 2**k unit capacitors, each with its own mismatch.
    """
    return _binary_weighted_units(hw.seed_hash(chip_seed, hw.STREAM_CDAC), columns, adc_bits,
                                  hw.CDAC_UNIT, sigma_cdac_fx)


@njit(cache=True)
def comparator_offset_table(chip_seed, columns, sigma_offset_fx):
    """Static comparator offset of every column's ADC, int64 (columns,), analog fixed point."""
    offsets = np.empty(columns, dtype=np.int64)
    prefix = hw.seed_hash(chip_seed, hw.STREAM_CMP_OFFSET)
    for c in range(columns):
        offsets[c] = hw.scaled_normal(sigma_offset_fx, hw.mix(prefix, c), hw.NOISE_SHIFT)
    return offsets


@njit(cache=True)
def row_dac_gain_table(chip_seed, rows, level_bits, sigma_dac_fx):
    """Gain of every row DAC's level bit, int64 (rows, level_bits), DAC_UNIT units.

    Bit k is 2**k unit sources, each with its own mismatch (docs/hardware-model.md 4.8).
    """
    return _binary_weighted_units(hw.seed_hash(chip_seed, hw.STREAM_ROW_DAC), rows,
                                  level_bits, hw.DAC_UNIT, sigma_dac_fx)


@njit(cache=True)
def drive_charge_table(stored_bits, cell_caps, dac_gains, table):
    """The charge tables of one tile (docs/hardware-model.md 4.8), written into ``table``.

    stored_bits : uint8 (R, C); cell_caps : int64 (R, C) CAP_UNIT units; dac_gains : int64
    (R, S) DAC_UNIT units.  table : int64 (S, 2, R, C): ``hw.driven_cell_charge`` of the cell
    when level bit k drives input bit 0 / 1, 0 where the cell's XNOR is 0.
    """
    for k in range(table.shape[0]):
        for r in range(table.shape[2]):
            for c in range(table.shape[3]):
                q = hw.driven_cell_charge(cell_caps[r, c], dac_gains[r, k])
                bit = stored_bits[r, c]
                table[k, 0, r, c] = 0 if bit else q
                table[k, 1, r, c] = q if bit else 0
