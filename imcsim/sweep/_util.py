"""Small helpers of the sweep modules: one-line errors, JSON of NumPy scalars, flat dicts."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from imcsim.errors import typed_line as _one_line  # noqa: F401 - the sweep modules' name


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
