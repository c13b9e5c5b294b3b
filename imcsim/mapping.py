"""Mapping of an MVM onto the macro: tiles, bit-plane columns, and each cycle's Vref choice.

docs/hardware-model.md sections 3 and 4.3.  Everything here is shared by every path (fast CPU,
CUDA, cycle level, golden model), so all see the same tiles and full scales.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcsim.config import MacroConfig, Rounding, VrefConfig, VrefMode
from imcsim.kernels import hw
from imcsim.kernels.cycle import cycle_constants as _cycle_constants_kernel

#: Vref modes as the integers the compiled hardware functions branch on
VREF_MODE_CODES = {VrefMode.FIXED: hw.VREF_FIXED, VrefMode.VARIABLE: hw.VREF_VARIABLE,
                   VrefMode.DUAL: hw.VREF_DUAL}
#: NMC output rounding rules as integers
ROUNDING_CODES = {Rounding.FLOOR: hw.ROUND_FLOOR, Rounding.HALF_UP: hw.ROUND_HALF_UP,
                  Rounding.HALF_EVEN: hw.ROUND_HALF_EVEN}


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


def vref_arguments(vref: VrefConfig) -> tuple:
    """(mode code, fixed F, dual low F, dual high F): a Vref config as kernel arguments.

    With the per-column dual choice every cycle starts at the low level (its per-cycle
    constants are the low level's); each column's ADC raises its own F (``AnalogParams``).
    """
    if vref.per_column:
        return hw.VREF_FIXED, vref.dual_low, vref.dual_low, vref.dual_high
    return VREF_MODE_CODES[vref.mode], vref.full_scale, vref.dual_low, vref.dual_high


def cycle_constants(active_rows, vref: VrefConfig,
                    config: MacroConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cycle constants from the active-row counts (``hw.cycle_full_scale`` and friends).

    active_rows : int array, any shape.  Returns int64 arrays of that shape: the full scale F
    in rows (the Vref choice), the NMC scale F / L with ``nmc.scale_frac_bits`` fraction bits,
    and the ADC threshold shift (analog fixed point; 0 for the floor law).
    """
    a = np.ascontiguousarray(active_rows, dtype=np.int64)
    flat = a.reshape(-1)
    fs, scale, shift = (np.empty(flat.shape, dtype=np.int64) for _ in range(3))
    _cycle_constants_kernel(flat, *vref_arguments(vref), config.top_code,
                            config.nmc.scale_frac_bits, config.adc_rounding is Rounding.HALF_UP,
                            fs, scale, shift)
    return fs.reshape(a.shape), scale.reshape(a.shape), shift.reshape(a.shape)


def select_full_scale(active_rows, vref: VrefConfig, top_code: int) -> np.ndarray:
    """Full scale F (rows) of every cycle from its active-row count (int64, same shape)."""
    a = np.ascontiguousarray(active_rows, dtype=np.int64)
    flat = a.reshape(-1)
    fs, scale, shift = (np.empty(flat.shape, dtype=np.int64) for _ in range(3))
    _cycle_constants_kernel(flat, *vref_arguments(vref), top_code, 16, False, fs, scale, shift)
    return fs.reshape(a.shape)


def words32(elements: int, bits_per_element: int) -> int:
    """32-bit words needed to carry ``elements`` elements of ``bits_per_element`` bits."""
    return -(-elements * bits_per_element // 32)
