"""Argument checks shared by the energy modules (one message style: ``name: what, got value``)."""
from __future__ import annotations

import math

import numpy as np

_REAL = (int, float, np.integer, np.floating)


def check_number(name: str, value, *, positive: bool = False) -> float:
    """A finite real number >= 0 (> 0 with ``positive``), as a float.

    Parameters
    ----------
    name : str
        The argument's name, used in the error message.
    value : int or float or numpy scalar
        The number to check (bool is refused).
    positive : bool
        Refuse 0 as well.

    Returns
    -------
    float
        ``float(value)``.

    Raises
    ------
    TypeError
        ``value`` is not a real number.
    ValueError
        ``value`` is negative, not finite, or 0 with ``positive``.
    """
    if isinstance(value, bool) or not isinstance(value, _REAL):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and positive):
        raise ValueError(f"{name}: must be a finite number {'>' if positive else '>='} 0, "
                         f"got {value}")
    return v


def check_pos_int(name: str, value) -> int:
    """An integer >= 1 (Python or NumPy int; bool is refused), as an int.

    Raises
    ------
    TypeError
        ``value`` is not an integer.
    ValueError
        ``value`` < 1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: must be >= 1, got {value}")
    return int(value)


def check_density(name: str, value) -> float:
    """A fraction in [0, 1] (of active rows or non-zero elements), as a float.

    Raises
    ------
    TypeError
        ``value`` is not a real number.
    ValueError
        ``value`` lies outside [0, 1].
    """
    if isinstance(value, bool) or not isinstance(value, _REAL):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}: must lie in [0, 1], got {value}")
    return float(value)


def check_str(name: str, value) -> str:
    """A str (TypeError otherwise)."""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a str, got {type(value).__name__}")
    return value
