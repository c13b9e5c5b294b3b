"""The counters every MVM path fills, in one layout (``MvmCounters``): the fast CPU path, the
CUDA path (after its copies to the host) and the cycle-level path allocate and hand them to
``Macro.result`` the same way, which counts the events from them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MvmCounters:
    """What every path measures during an MVM besides the accumulators, in one layout (the
    fast CPU path, the CUDA path after its copies to the host, the cycle-level path).

    Attributes
    ----------
    active_rows, level_sum, full_scale : int64 (T, B, P)
        Rows driven, A and F per cycle.
    clipped, high_columns : int64 (T, U)
        Clipped conversions, and conversions at the high level under the per-column dual
        Vref, per tile operation.
    codes : uint16 (T, B, P, N, Kw) or None
        Every conversion's code, when asked for.
    """

    active_rows: np.ndarray
    level_sum: np.ndarray
    full_scale: np.ndarray
    clipped: np.ndarray
    high_columns: np.ndarray
    codes: np.ndarray | None = None

    def note_row_tile(self, t: int, packed) -> None:
        """Row tile t's per-cycle rows driven, A and F (a ``macro.PackedTile``)."""
        self.active_rows[t] = packed.active_rows
        self.full_scale[t] = packed.full_scale
        self.level_sum[t] = packed.level_sum

    @classmethod
    def zeros(cls, plan, batch: int, n_planes: int, codes: bool) -> MvmCounters:
        cycles = (plan.row_tiles, batch, n_planes)
        tiles = (plan.row_tiles, plan.col_tiles)
        return cls(np.zeros(cycles, np.int64), np.zeros(cycles, np.int64),
                   np.zeros(cycles, np.int64), np.zeros(tiles, np.int64),
                   np.zeros(tiles, np.int64),
                   np.zeros(cycles + (plan.outputs, plan.weight_planes), np.uint16)
                   if codes else None)
