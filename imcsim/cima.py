"""The compute-in-memory array (CIMA): stored bit-plane columns, XNOR cells, masks, charge.

docs/hardware-model.md sections 3 and 4.1-4.2.  A stored matrix is written into the array as
bit-plane columns, tile by tile (``StoredWeights``); one array cycle of a column group
(``ColumnGroup.array_cycle``) drives the rows with one input plane, masks the inactive rows,
counts the XNOR=1 cells of every column, shares their charge and converts it
(``kernels.cycle.array_cycle`` over the hardware functions of ``kernels.hw``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from imcsim.checks import check_matrix
from imcsim.config import MacroConfig
from imcsim.formats import check_stored_format
from imcsim.kernels import hw
from imcsim.kernels.cycle import array_cycle as _array_cycle_kernel
from imcsim.kernels.pack import pack_input_planes, transpose_to_int16, unpack_columns
from imcsim.kernels.params import StoredTile
from imcsim.kernels.tables import drive_charge_table
from imcsim.kernels.targets import CPU
from imcsim.mapping import plan_tiles
from imcsim.progress import note_first_compile
from imcsim.tuning import parallel_chunks


class MacroChip(Protocol):
    """What a stored operand and a column group read from their macro (``imcsim.macro.Macro``
    provides it): the config, the chip's static tables and a call's analog constants.  A
    protocol, not an import: the macro imports this module."""

    config: MacroConfig
    cell_capacitance: np.ndarray        # int64 (rows, columns) [CAP_UNIT]

    def row_dac_gains(self, level_bits: int) -> np.ndarray: ...

    def analog_constants(self, cols: int, vref=None, top_level: int = 1) -> tuple: ...


class StoredOperand:
    """A matrix written into the CIMA: ``macro``, ``w_format``, ``shape``, ``plan``, ``tile``."""


class StoredWeights(StoredOperand):
    """A matrix written into the CIMA, encoded into bit-plane columns tile by tile.

    Build with ``Macro.store_weights`` (tiles are kept and reused across MVMs); ``Macro.mvm``
    given a plain array builds a transient one that encodes each tile when it is used and
    keeps nothing, so a large stored operand never exists as bit planes all at once.
    """

    def __init__(self, macro: MacroChip, W, w_format, cache: bool = True):
        check_matrix("W", W)
        check_stored_format(w_format)
        self.macro = macro
        self.w_format = w_format
        self.shape = W.shape
        self.plan = plan_tiles(macro.config, W.shape[0], W.shape[1], w_format)
        # int16 holds every BinaryFormat value (|v| <= 2**14) at a quarter of int64's memory;
        # kept transposed (N, M): each output's column of values is one "vector" of rows, so
        # the input packer (kernels.pack.pack_input_planes) packs its weight planes
        if W.dtype.kind in "iu" and W.dtype.isnative:
            # integers: range check and transpose in one parallel pass
            lim = w_format.max_value
            self.values_t = np.empty((W.shape[1], W.shape[0]), dtype=np.int16)
            if transpose_to_int16(W, -lim, lim, self.values_t):
                w_format.validate(W, "W")          # raises the format's own message
        else:
            # floats (a training engine's integer-valued operands): checked and narrowed to
            # int16 in one pass, never widened to int64 first
            self.values_t = np.ascontiguousarray(w_format.validate(W, "W", dtype=np.int16).T)
        self.cache = cache
        self._tiles = {}

    @property
    def values(self) -> np.ndarray:
        """int16 (M, N): the stored values (a transposed view of ``values_t``)."""
        return self.values_t.T

    def tile(self, t: int, u: int, columns: bool = True) -> dict:
        """Stored bits of tile (t, u): 'packed' uint64 (C, W) and 'columns' uint8 (R, C).

        columns : also build the unpacked columns (the row-gather path and the cycle level
        use them); a cached tile gains them on the first request that wants them.
        """
        key = (t, u)
        entry = self._tiles.get(key)
        if entry is not None and (not columns or "columns" in entry):
            return entry
        from imcsim.formats import format_lookup_tables
        r0, r1 = self.plan.row_range(t)
        n0, n1 = self.plan.output_range(u)
        kw = self.w_format.n_planes
        offset, pattern, _, _, _ = format_lookup_tables(self.w_format, False)
        n_words = -(-(r1 - r0) // 64)
        planes = np.empty((n1 - n0, kw, n_words), dtype=np.uint64)     # (G, Kw, W)
        masks = np.empty_like(planes)
        active = np.empty((n1 - n0, kw), dtype=np.int64)
        # an empty gate table: every stored cell is connected (the stored operand has no masks)
        pack_input_planes(self.values_t[n0:n1], offset, pattern, pattern[:0], kw, r0, r1, planes,
                          masks, active, False, parallel_chunks())
        packed = planes.reshape((n1 - n0) * kw, n_words)              # column g * Kw + q
        entry = {"packed": packed}
        if columns:
            entry["columns"] = np.empty((r1 - r0, (n1 - n0) * kw), dtype=np.uint8)
            unpack_columns(packed, r1 - r0, entry["columns"])
        if self.cache:
            self._tiles[key] = entry
        return entry

    def capacitance_table(self, t: int, u: int, tile: dict | None = None,
                          level_bits: int = 1) -> np.ndarray:
        """int64 (S, 2, R, C): the charge an XNOR=1 cell holds when level bit k of its row
        DAC drives input bit 0 / 1 (``hw.driven_cell_charge``; 0 where XNOR is 0)."""
        tile = self.tile(t, u) if tile is None else tile
        key = ("cap_table", level_bits)
        if key not in tile:
            cols = tile["columns"]
            rows = cols.shape[0]
            caps = self.macro.cell_capacitance[:rows, : cols.shape[1]]
            gains = self.macro.row_dac_gains(level_bits)[:rows]               # (R, S)
            table = np.empty((level_bits, 2, rows, cols.shape[1]), dtype=np.int64)
            drive_charge_table(cols, np.ascontiguousarray(caps), np.ascontiguousarray(gains),
                               table)
            tile[key] = table
        return tile[key]


@dataclass
class CycleOutcome:
    """What one array cycle produced, per used column (C,) or (C, Nb)."""

    column_count: np.ndarray    # int64: active cells with XNOR = 1
    column_value: np.ndarray    # int64: charge-shared, sampled value, analog fixed point
    sar_trial: np.ndarray       # int64 (C, Nb): trial codes, MSB first
    sar_decision: np.ndarray    # uint8 (C, Nb): comparator decisions
    code: np.ndarray            # int64: final ADC codes
    clipped: int                # conversions whose input exceeded the full scale
    full_scale: np.ndarray      # int64: each column's F (differs only per-column dual Vref)
    high: int = 0               # conversions at the high level (per-column dual Vref)


class ColumnGroup:
    """The used columns of one tile operation (t, u): stored bits and analog constants."""

    def __init__(self, macro: MacroChip, weights: StoredWeights, t: int, u: int, level_bits: int = 1,
                 top_level: int = 1):
        """level_bits, top_level : S and D of the streamed format (docs/hardware-model.md
        4.8; 1 and 1 for binary rows)."""
        plan = weights.plan
        self.macro = macro
        self.t, self.u = t, u
        self.r0, self.r1 = plan.row_range(t)
        self.n0, self.n1 = plan.output_range(u)
        tile = weights.tile(t, u)
        self.wbits = tile["packed"]                                      # uint64 (C, W)
        cols = self.wbits.shape[0]
        # the analog constants in the streamed format's level units (hardware-model.md 4.8),
        # from the macro's one definition of them
        self.analog, self.tables = macro.analog_constants(cols, None, top_level)
        self.cap_table = (weights.capacitance_table(t, u, tile, level_bits)
                          if self.analog.charge_table
                          else np.zeros((level_bits, 2, 0, 0), dtype=np.int64))
        # the kernel's grouped stored operand (its unpacked columns are not needed here)
        self.stored = StoredTile(self.wbits, np.zeros((0, 0), dtype=np.uint8), self.cap_table)

    def analog_at(self, vref):
        """The group's AnalogParams with the call's Vref (a VrefConfig) in the per-column
        fields (``hw.column_conversion``); the group's own constants hold the config's."""
        return self.analog._replace(per_column=vref.per_column, dual_low=vref.dual_low,
                                    dual_high=vref.dual_high)

    @property
    def n_columns(self) -> int:
        return self.wbits.shape[0]

    def array_cycle(self, xbits, xmask, active, full_scale: int, threshold_shift: int,
                    seed: int, vector: int, plane: int, vref=None) -> CycleOutcome:
        """One array cycle: XNOR cells, charge sharing, sampling, SAR conversion per column.

        xbits, xmask : uint64 (S, W) packed row inputs and active rows of the cycle's level-bit
        sub-planes; active : int64 (S,) their counts; full_scale : F in level units;
        threshold_shift : the ADC law's shift; seed, vector (global index), plane : the noise
        key of this cycle; vref : the call's VrefConfig (default the config's), for the
        per-column dual choice.
        """
        c = self.macro.config
        cols = self.n_columns
        count = np.empty(cols, dtype=np.int64)
        value = np.empty(cols, dtype=np.int64)
        code = np.empty(cols, dtype=np.int64)
        trials = np.zeros((cols, c.adc_bits), dtype=np.int64)
        decisions = np.zeros((cols, c.adc_bits), dtype=np.uint8)
        seed = np.uint64(seed)
        sample_key = hw_key(seed, hw.STREAM_SAMPLE, self.t, self.u, vector, plane)
        noise_key = hw_key(seed, hw.STREAM_CMP_NOISE, self.t, self.u, vector, plane)
        vref = c.vref if vref is None else vref
        column_fs = np.empty(cols, dtype=np.int64)
        analog = self.analog_at(vref)
        note_first_compile(_array_cycle_kernel, "the cycle-level kernels")
        clipped, high = _array_cycle_kernel(
            np.ascontiguousarray(xbits), np.ascontiguousarray(xmask),
            np.ascontiguousarray(active, dtype=np.int64), self.stored, self.tables, analog,
            int(full_scale), int(threshold_shift), sample_key, noise_key, count, value,
            trials, decisions, code, column_fs)
        return CycleOutcome(count, value, trials, decisions, code, int(clipped), column_fs,
                            int(high))

    def skipped_cycle(self) -> CycleOutcome:
        """The outcome of a cycle the controller skipped: nothing counted, sampled or
        converted (all zero), nothing clipped."""
        cols, bits = self.n_columns, self.macro.config.adc_bits
        zeros = np.zeros(cols, dtype=np.int64)
        return CycleOutcome(zeros, zeros.copy(), np.zeros((cols, bits), dtype=np.int64),
                            np.zeros((cols, bits), dtype=np.uint8), zeros.copy(), 0,
                            zeros.copy())


def hw_key(seed: int, stream: int, tile_row: int, tile_col: int, vector: int,
           plane: int) -> np.uint64:
    """The key hash of one array cycle's event stream (``hw.cycle_key``), uint64."""

    return np.uint64(CPU.cycle_key(np.uint64(seed), stream, tile_row, tile_col, vector, plane))
