"""Boundary validation shared by the public API (one line naming the argument and the problem)."""
from __future__ import annotations

import numpy as np


def check_matrix(name: str, arr) -> None:
    """A non-empty 2-D integer or float NumPy array in native byte order."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(arr).__name__}")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected an integer or float dtype, got {arr.dtype}")
    if 0 in arr.shape:
        raise ValueError(f"{name}: must not be empty, got shape {arr.shape}")


def check_seed(name: str, value) -> int:
    """A non-negative int below 2**63 (noise keys are uint64 counters)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not 0 <= int(value) < (1 << 63):
        raise ValueError(f"{name}: must lie in [0, 2**63), got {value}")
    return int(value)
