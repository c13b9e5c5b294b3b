"""Mapping of an MVM onto the CIMA: tiles, bit-plane columns, row inputs and masks, Vref choice.

docs/hardware-model.md sections 3, 4.1 and 4.3.  Everything here is shared by the fast and the
cycle-level path, so both see the same operands, tiles and full scales.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcsim.config import MacroConfig, VrefConfig, VrefMode


@dataclass(frozen=True)
class TilePlan:
    """How an (M x N) stored matrix with Kw-bit elements is cut into array operations."""

    inner: int           # M
    outputs: int         # N
    rows: int            # array rows
    columns: int         # array columns
    weight_planes: int   # Kw

    @property
    def outputs_per_tile(self) -> int:
        return self.columns // self.weight_planes

    @property
    def row_tiles(self) -> int:
        return -(-self.inner // self.rows)

    @property
    def col_tiles(self) -> int:
        return -(-self.outputs // self.outputs_per_tile)

    def row_range(self, t: int) -> tuple[int, int]:
        return t * self.rows, min(self.inner, (t + 1) * self.rows)

    def output_range(self, u: int) -> tuple[int, int]:
        g = self.outputs_per_tile
        return u * g, min(self.outputs, (u + 1) * g)

    def used_columns(self, u: int) -> int:
        lo, hi = self.output_range(u)
        return (hi - lo) * self.weight_planes


def plan_tiles(config: MacroConfig, inner: int, outputs: int, w_format) -> TilePlan:
    if w_format.n_planes > config.columns:
        raise ValueError(f"w_format: {w_format.spec()} needs {w_format.n_planes} columns per "
                         f"output but the array has {config.columns}")
    return TilePlan(inner, outputs, config.rows, config.columns, w_format.n_planes)


def select_full_scale(active_rows, vref: VrefConfig, top_code: int) -> np.ndarray:
    """Full scale F (rows) of every cycle from its active-row count (int64, same shape)."""
    a = np.asarray(active_rows, dtype=np.int64)
    if vref.mode is VrefMode.FIXED:
        return np.full(a.shape, vref.full_scale, dtype=np.int64)
    if vref.mode is VrefMode.VARIABLE:
        return np.maximum(a, top_code)
    return np.where(a <= vref.dual_low, vref.dual_low, vref.dual_high).astype(np.int64)


def pack_rows(bits: np.ndarray) -> np.ndarray:
    """Pack a 0/1 array (..., R) along its last axis into uint64 words (..., ceil(R/64)).

    Bit (r % 64) of word (r // 64) holds row r.
    """
    bits = np.asarray(bits, dtype=np.uint8)
    n_rows = bits.shape[-1]
    n_words = max(1, -(-n_rows // 64))
    padded = np.zeros(bits.shape[:-1] + (n_words * 64,), dtype=np.uint8)
    padded[..., :n_rows] = bits
    packed = np.packbits(padded, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view(np.uint64).reshape(bits.shape[:-1] + (n_words,))


def words32(elements: int, bits_per_element: int) -> int:
    """32-bit words needed to carry ``elements`` elements of ``bits_per_element`` bits."""
    return -(-elements * bits_per_element // 32)
