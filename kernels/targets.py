"""Compile the hardware functions of ``kernels.hw`` for each target, from the one source.

``compile_hardware(decorate, primitives)`` re-creates every function of
``kernels.hw.HARDWARE_FUNCTIONS`` over a fresh globals dictionary in which the names of the
other hardware functions (and the target primitives such as ``popcount64``) are bound to their
compiled versions for that target, then applies the target's decorator.  So a function body
is written once and the CPU kernels, the cycle-level path, the golden model and the CUDA
kernels all run that body.

- ``CPU``: every hardware function as ``numba.njit(inline="always")``.
- ``cuda_hardware()``: the same functions as ``numba.cuda.jit(device=True)``; built on first
  use, so importing the CPU path never imports numba.cuda.
"""
from __future__ import annotations

import os
import types
from functools import lru_cache

from numba import njit
from numba import types as nbtypes
from numba.extending import intrinsic

from imcsim.kernels import hw


@intrinsic
def _ctpop64(typingctx, x):
    """Scalar POPCNT of a uint64 (LLVM ctpop). Returns uint64."""
    sig = nbtypes.uint64(nbtypes.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(inline="always")
def cpu_popcount64(x):
    """POPCNT on the CPU: one instruction where the host has it."""
    return _ctpop64(x)


def compile_hardware(name: str, decorate, primitives: dict) -> types.ModuleType:
    """Every hardware function compiled by ``decorate``, calling each other within the target.

    Returns a module object (Numba resolves ``module.function`` at compile time, so kernels
    call ``hw.charge_share(...)`` with ``hw`` the target's module).

    Parameters
    ----------
    name : str  the target's name (the module is ``imcsim.kernels.hw[<name>]``).
    decorate : callable  the target's decorator (``njit(...)``, ``cuda.jit(device=True)``).
    primitives : dict  name -> compiled target primitive (``popcount64``).
    """
    namespace = dict(vars(hw))
    namespace.update(primitives)
    compiled = {}
    for name in hw.HARDWARE_FUNCTIONS:
        source = getattr(hw, name)
        rebound = types.FunctionType(source.__code__, namespace, name, source.__defaults__,
                                     source.__closure__)
        rebound.__qualname__ = source.__qualname__
        rebound.__doc__ = source.__doc__
        rebound.__module__ = source.__module__
        compiled[name] = decorate(rebound)
    namespace.update(compiled)
    module = types.ModuleType(f"imcsim.kernels.hw[{name}]", hw.__doc__)
    module.__dict__.update(namespace)
    return module


#: The hardware functions for the CPU kernels (inlined into their callers).
CPU = compile_hardware("cpu", njit(inline="always"), {"popcount64": cpu_popcount64})


def _cuda_popcount64(x):
    """POPCNT on CUDA (``__popcll``); ``cuda`` is bound in the globals given in cuda_hardware."""
    return cuda.popc(x)  # noqa: F821


def _simulator_popcount64(x):
    """POPCNT under Numba's CUDA simulator, which runs device functions as Python.

    (The simulator swaps a function's ``cuda`` global per call, which races when many
    simulated threads share one device function, so the primitive must not use it.)
    """
    return bin(int(x)).count("1")


@lru_cache(maxsize=1)
def cuda_hardware() -> types.ModuleType:
    """The hardware functions as CUDA device functions (or the CUDA simulator's)."""
    from numba import cuda

    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        popcount = _simulator_popcount64
    else:
        popcount = types.FunctionType(_cuda_popcount64.__code__,
                                      {"cuda": cuda, "__name__": __name__}, "popcount64")
    device = cuda.jit(device=True)
    return compile_hardware("cuda", device, {"popcount64": device(popcount)})
