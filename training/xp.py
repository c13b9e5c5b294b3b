"""Array namespaces of the training engine: NumPy on the CPU, CuPy on a CUDA GPU.

Layers, quantizers, the optimizer, the loss and the data pipeline take their namespace from
the arrays they receive (:func:`namespace_of`), so one code path runs on either device and the
arrays stay where they are.  Random numbers are always drawn on the host with seeded NumPy
generators and then moved (:func:`to_device`), so a CPU run and a GPU run see the same streams.
What is and is not bit-identical between the two is in docs/training.md ("CPU and GPU").
"""
from __future__ import annotations

import os
from types import ModuleType

import numpy as np

from imcsim.array_namespace import namespace_of

DEVICES = ("cpu", "cuda")


class DeviceUnavailable(ValueError):
    """The requested device cannot be used here; the message is one line naming the fix."""


def array_module(device: str = "cpu") -> ModuleType:
    """The array namespace of ``device``: ``numpy`` for 'cpu', ``cupy`` for 'cuda'.

    Raises :class:`DeviceUnavailable` (a ValueError, one line) when CuPy is missing or broken,
    no CUDA GPU is visible, or ``CUPY_TF32`` asks cuBLAS to round FP32 products to TF32.
    """
    if device == "cpu":
        return np
    if device != "cuda":
        raise ValueError(f"device: expected one of {', '.join(DEVICES)}, got {device!r}")
    try:
        import cupy
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".", 1)[0] != "cupy":
            raise DeviceUnavailable(f"--device cuda: CuPy cannot import {exc.name}: "
                                    "pip install 'imcsim[gpu]'") from None
        raise DeviceUnavailable("--device cuda: CuPy is not installed: "
                                "pip install 'imcsim[gpu]'") from None
    except ImportError as exc:                       # installed, but its CUDA libraries clash
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeviceUnavailable(f"--device cuda: CuPy failed to import: {first}") from None
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception:                                # no driver: CUDARuntimeError
        count = 0
    if count < 1:
        raise DeviceUnavailable("--device cuda: no CUDA GPU found")
    if os.environ.get("CUPY_TF32", "0").strip() not in ("", "0"):
        raise DeviceUnavailable("--device cuda: CUPY_TF32 is set, which rounds FP32 matmuls to "
                                "TF32; unset it for results comparable with the CPU")
    return cupy




def is_array(a) -> bool:
    """True for a NumPy array or a device array (anything with its own namespace)."""
    return isinstance(a, np.ndarray) or (hasattr(a, "shape") and hasattr(a, "dtype")
                                         and namespace_of(a) is not np)


def to_host(a) -> np.ndarray:
    """A NumPy array with the values of ``a`` (a copy for device arrays, ``a`` itself for a
    NumPy array)."""
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)
    if get is not None and namespace_of(a) is not np:
        return get()
    return np.asarray(a)


def to_device(a, xp: ModuleType):
    """``a`` as an array of namespace ``xp`` (no copy when it already is one)."""
    if xp is np:
        return to_host(a)
    return xp.asarray(a)


__all__ = ["DEVICES", "DeviceUnavailable", "array_module", "namespace_of", "is_array",
           "to_host", "to_device"]
