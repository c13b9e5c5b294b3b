"""Which array namespace an operand lives in (NumPy, or CuPy on a GPU), for library code.

Shared by ``imcsim`` modules that accept device arrays and by the training engine
(``imcsim.training.xp`` re-exports it), so that the rule is written once.
"""
from __future__ import annotations

import sys
from types import ModuleType

import numpy as np

__all__ = ["namespace_of"]


def namespace_of(*arrays) -> ModuleType:
    """The namespace of the first device array among ``arrays``; NumPy when there is none.

    CuPy arrays are recognised by their type's module (without importing CuPy); other array
    types by the array-API ``__array_namespace__`` protocol.  NumPy arrays, NumPy scalars,
    Python numbers, lists and None all mean NumPy.
    """
    for a in arrays:
        if a is None or isinstance(a, (np.ndarray, np.generic, int, float, complex, list, tuple)):
            continue
        if type(a).__module__.split(".", 1)[0] == "cupy":
            return sys.modules["cupy"]
        get = getattr(a, "__array_namespace__", None)
        if get is not None:
            return get()
    return np
