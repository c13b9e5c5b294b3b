"""Event counters of the macro (docs/hardware-model.md section 6), defined once.

The emulator (``Macro.mvm``, ``mvm_traced``, the golden model) and the analytic energy model
(``imcsim.energy``) both call ``tile_event_counts``: the emulator with the active rows it
measured, the energy model with measured or assumed ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcsim.mapping import TilePlan, words32

EVENT_NAMES = ("array_cycles", "bitcell_mults", "adc_conversions", "sar_steps", "nmc_outputs",
               "reshape_words", "cima_load_words", "clipped_conversions", "high_vref_conversions",
               "dac_row_drives", "dac_level_sum")


@dataclass
class EventCounts:
    """Event counters of one MVM, per tile: ``per_tile[name]`` is (row_tiles, col_tiles).

    int64 for counts of a run; float64 for expected counts of the analytic model.
    """

    per_tile: dict

    @classmethod
    def zeros(cls, plan: TilePlan) -> EventCounts:
        return cls({n: np.zeros((plan.row_tiles, plan.col_tiles), dtype=np.int64)
                    for n in EVENT_NAMES})

    def total(self) -> dict:
        """Totals over all tiles, as Python ints (or floats for expected counts)."""
        out = {}
        for n, v in self.per_tile.items():
            s = v.sum()
            out[n] = int(s) if np.asarray(v).dtype.kind in "iu" else float(s)
        return out


def tile_event_counts(plan: TilePlan, *, vectors: int, n_planes: int, bits_per_element: int,
                      adc_bits: int, active_sum, high_cycles, clipped=None,
                      reshape_words: int | None = None, run_cycles=None,
                      high_conversions=None, range_decisions: int = 0, dac_drives=None,
                      dac_levels=None) -> EventCounts:
    """Event counts of one MVM mapped by ``plan``.

    Parameters
    ----------
    plan : TilePlan
    vectors : int  B, streamed vectors.
    n_planes : int  P, array cycles per vector and tile operation.
    bits_per_element : int  K, bits of one streamed element in the reshape buffer.
    adc_bits : int  Nb, SAR steps per conversion.
    active_sum : int or float array (row_tiles,)  active rows summed over the B * P cycles of
        each row tile (float: an expected value).
    high_cycles : int or float array (row_tiles,)  cycles converted at the high Vref level.
    clipped : int64 (row_tiles, col_tiles) or None  clipped conversions (data-dependent; 0 when
        not measured).
    run_cycles : int or float array (row_tiles,) or None  cycles of each row tile that run
        per column tile (``MacroConfig.skip_masked_cycles`` leaves all-masked ones out);
        None: all B * P.
    high_conversions : int64 (row_tiles, col_tiles) or None  conversions at the high level,
        counted per column (per-column dual Vref); None: ``high_cycles`` times the columns.
    range_decisions : int  extra comparator decisions per conversion before the SAR (1 for
        the per-column dual Vref choice), counted in ``sar_steps``.
    dac_drives, dac_levels : int or float array (row_tiles,) or None  rows driven at a
        non-zero level through a multi-level row DAC, and the sum of those levels, over the
        B * P cycles of each row tile (docs/hardware-model.md 4.8); every column tile drives
        them again.  None: binary rows (0).
    reshape_words : int or None  words a convolution's reshape buffer takes in per column
        tile, booked on row tile 0; None: a plain MVM streams ceil(R * K / 32) words per vector
        and tile.
    """
    T, U = plan.row_tiles, plan.col_tiles
    rows = np.array([plan.row_range(t)[1] - plan.row_range(t)[0] for t in range(T)], dtype=np.int64)
    cols = np.array([plan.used_columns(u) for u in range(U)], dtype=np.int64)
    n_out = np.array([plan.output_range(u)[1] - plan.output_range(u)[0] for u in range(U)],
                     dtype=np.int64)
    active_sum = np.asarray(active_sum)
    high_cycles = np.asarray(high_cycles)
    dtype = np.float64 if active_sum.dtype.kind == "f" else np.int64
    ones = np.ones((T, U), dtype=np.int64)
    if run_cycles is None:
        cycles = vectors * n_planes
    else:                                  # (T, 1): skipped cycles cost no cycle or conversion
        cycles = np.asarray(run_cycles).reshape(T, 1)
    per_tile = {
        "array_cycles": ones * cycles,
        "bitcell_mults": (active_sum[:, None] * cols[None, :]).astype(dtype),
        "adc_conversions": ones * cycles * cols[None, :],
        "sar_steps": ones * (cycles * (adc_bits + range_decisions)) * cols[None, :],
        "nmc_outputs": ones * vectors * n_out[None, :],
        "cima_load_words": cols[None, :] * np.array([words32(int(r), 1) for r in rows])[:, None],
        "clipped_conversions": (np.zeros((T, U), dtype=np.int64) if clipped is None
                                else np.asarray(clipped, dtype=np.int64).reshape(T, U)),
        "high_vref_conversions": (
            (high_cycles[:, None] * cols[None, :]).astype(
                np.float64 if high_cycles.dtype.kind == "f" else np.int64)
            if high_conversions is None
            else np.asarray(high_conversions, dtype=np.int64).reshape(T, U)),
    }
    for name, per_row_tile in (("dac_row_drives", dac_drives), ("dac_level_sum", dac_levels)):
        if per_row_tile is None:
            per_tile[name] = np.zeros((T, U), dtype=np.int64)
        else:
            a = np.asarray(per_row_tile)
            per_tile[name] = (a.reshape(T, 1) * ones).astype(
                np.float64 if a.dtype.kind == "f" else np.int64)
    if reshape_words is None:
        per_tile["reshape_words"] = (vectors * np.array(
            [words32(int(r), bits_per_element) for r in rows]))[:, None] * ones
    else:
        words = np.zeros((T, U), dtype=np.int64)
        words[0, :] = reshape_words
        per_tile["reshape_words"] = words
    return EventCounts({name: per_tile[name] for name in EVENT_NAMES})
