"""The per-cycle signal table every dump and expected file is read into, and its integers.

``SignalTable`` holds, per array cycle, the values of some signals (``imcsim.verify.golden``'s
SIGNALS) with a presence mask, and the keys that place a row (tile_row, tile_col, vector,
plane, or a cycle index).  ``as_int64`` turns a signal's values into int64 and refuses anything
that is not an integer in its range, naming where it came from.  The loaders
(``load_h5``, ``load_text``, ``load_vcd``) fill tables; ``check.compare`` compares two.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field

import numpy as np

from imcsim.verify.golden import COLUMN_SIGNALS, OUTPUT_SIGNALS, SCALAR_SIGNALS, SIGNALS

KEYS = ("tile_row", "tile_col", "vector", "plane")
INT64_MAX = (1 << 63) - 1
#: largest column / output index a CSV may give (beyond any array's columns)
MAX_INDEX = 1 << 16
#: exceptions that mean a dump or an expected file is malformed, whatever raised them
MALFORMED = (KeyError, IndexError, TypeError, OverflowError, AttributeError, UnicodeError,
             csv.Error, json.JSONDecodeError)


def as_int64(data, where: str) -> np.ndarray:
    """Values of a signal as int64; ValueError naming ``where`` for anything that is not an
    integer in int64's range (1.5, NaN, 1e30, strings), so no value is truncated into a PASS."""
    arr = np.asarray(data)
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.int64)
    if kind == "i":
        return arr.astype(np.int64, copy=False)
    if kind == "u":
        if arr.size and int(arr.max()) > INT64_MAX:
            raise ValueError(f"{where}: value {int(arr.max())} is out of the int64 range")
        return arr.astype(np.int64)
    if kind == "f":
        bad = ~np.isfinite(arr)
        if not bad.any():
            bad = (arr != np.round(arr)) | (np.abs(arr) >= 2.0 ** 63)
        if bad.any():
            at = tuple(int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"{where}: value {arr[at].item()!r} at "
                             f"{at if len(at) > 1 else at[0]} "
                             "is not an integer in the int64 range (codes and counts are "
                             "integers)")
        return arr.astype(np.int64)
    raise ValueError(f"{where}: expected integers, got dtype {arr.dtype}")


def malformed(source, exc: BaseException) -> ValueError:
    """The one-line error of a malformed file: its name, the exception's type and first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ValueError(f"{source}: malformed ({type(exc).__name__}{': ' + text if text else ''})")


@dataclass
class SignalTable:
    """Per array cycle values of some signals.

    values[name] : int64 (n, width); present[name] : bool (n, width) (False: not given /
    padding).  keys : {tile_row, tile_col, vector, plane: int64 (n,)} when known.
    """

    n: int
    values: dict[str, np.ndarray] = field(default_factory=dict)
    present: dict[str, np.ndarray] = field(default_factory=dict)
    keys: dict[str, np.ndarray] | None = None
    widths: dict[str, int] = field(default_factory=dict)   # element widths, for bus splitting
    signed: dict[str, bool] = field(default_factory=dict)
    source: str = ""

    def add(self, name: str, values, present=None) -> None:
        """Add a signal: values (n,) or (n, width); present: False where not given."""
        values = np.asarray(values, dtype=np.int64)
        if values.ndim == 1:
            values = values[:, None]
        self.values[name] = values
        self.present[name] = (np.ones(values.shape, dtype=bool) if present is None
                              else np.asarray(present, dtype=bool).reshape(values.shape))


def signal_kind(name):
    if name in SCALAR_SIGNALS:
        return "scalar"
    if name in COLUMN_SIGNALS:
        return "column"
    if name in OUTPUT_SIGNALS:
        return "output"
    raise ValueError(f"signal: unknown signal {name!r}; known: {', '.join(SIGNALS)}")



__all__ = ["INT64_MAX", "KEYS", "MALFORMED", "MAX_INDEX", "SignalTable", "as_int64", "malformed",
           "signal_kind"]
