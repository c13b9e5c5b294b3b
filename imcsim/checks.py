"""Boundary validation shared by the public API (one line naming the argument and the problem).

Also the memory estimate of an MVM request (:func:`mvm_memory_bytes`) and the check that it fits
the memory available (:func:`check_memory`), so that a request too large for the machine is
refused with the figure before anything is allocated.
"""
from __future__ import annotations

import os

import numpy as np

GIB = 1 << 30


def check_matrix(name: str, arr) -> None:
    """A non-empty 2-D integer or float NumPy array in native byte order."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(arr).__name__}")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected an integer or float dtype, got {arr.dtype}")
    check_native(name, arr)
    if 0 in arr.shape:
        raise ValueError(f"{name}: must not be empty, got shape {arr.shape}")


def check_native(name: str, arr: np.ndarray) -> None:
    """Refuse a non-native byte order (big-endian data on x86) in one line naming ``name``."""
    if not arr.dtype.isnative:
        raise TypeError(f"{name}: dtype {arr.dtype.str} is not in the machine's byte order; "
                        f"convert it first, e.g. {name}.astype({name}.dtype.newbyteorder('='))")


def native(arr: np.ndarray) -> np.ndarray:
    """``arr`` in native byte order (the same values; a copy only when it was not native)."""
    if arr.dtype.isnative:
        return arr
    return arr.astype(arr.dtype.newbyteorder("="))


def check_seed(name: str, value) -> int:
    """A non-negative int below 2**63 (noise keys are uint64 counters)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not 0 <= int(value) < (1 << 63):
        raise ValueError(f"{name}: must lie in [0, 2**63), got {value}")
    return int(value)


# --- memory ---------------------------------------------------------------------------------
def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    except OSError:
        pass
    return out


def available_memory() -> tuple[int | None, str]:
    """(bytes this process can still allocate, what the figure is), or (None, '') if unknown.

    MemAvailable of /proc/meminfo (MemTotal where the kernel has no MemAvailable), lowered to
    the room left under a cgroup memory limit (v2 ``memory.max``, v1 ``limit_in_bytes``);
    without /proc, the physical memory from ``os.sysconf``.
    """
    info = _meminfo()
    avail, what = None, ""
    if "MemAvailable" in info:
        avail, what = info["MemAvailable"], "available"
    elif "MemTotal" in info:
        avail, what = info["MemTotal"], "installed"
    else:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            what = "installed"
        except (AttributeError, ValueError, OSError):
            return None, ""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_int(limit_file)
        if limit is not None and limit < (1 << 60):
            room = max(0, limit - (_read_int(usage_file) or 0))
            if room < avail:
                avail, what = room, "left under the cgroup memory limit"
            break
    return avail, what


def format_bytes(n: float) -> str:
    """1.5 GiB / 12.0 MiB / 512 B."""
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


#: requests below this many bytes are never checked against the available memory
ALWAYS_FITS_BYTES = 64 << 20


def check_memory(name: str, needed: int, hint: str = "") -> None:
    """ValueError naming ``name`` when ``needed`` bytes exceed the memory available.

    The message gives both figures: ``X, W: needs about 6.1 GiB of memory, more than the
    3.2 GiB available``, then ``hint``.
    """
    if needed < ALWAYS_FITS_BYTES:
        return      # reading /proc on every small MVM would cost ~0.1 ms a call for nothing
    avail, what = available_memory()
    if avail is not None and needed > avail:
        raise ValueError(f"{name}: needs about {format_bytes(needed)} of memory, more than the "
                         f"{format_bytes(avail)} {what}" + (f"; {hint}" if hint else ""))


def mvm_memory_bytes(config, batch: int, inner: int, outputs: int, x_format, w_format, *,
                     codes: bool = False, traced: bool = False, x_float: bool = True) -> int:
    """Peak bytes an MVM of (batch x inner) @ (inner x outputs) allocates, roughly.

    Counts what the paths allocate beyond the caller's operands: the streamed operand in
    integer units (and a float temporary of the format check), the stored operand (int16 and
    its int64 check), one row tile of packed input planes with its per-cycle constants, the
    accumulators and outputs, the per-cycle counters, and the ADC codes when requested
    (always on the cycle-level path, ``traced``), plus the cycle-level path's row signals.
    ``x_float``: X holds floats (its format check makes a temporary of X's size).
    """
    B, M, N = int(batch), int(inner), int(outputs)
    P, Kw = int(x_format.n_planes), int(w_format.n_planes)
    S = int(x_format.level_bits)                # level-bit sub-planes per cycle (4.8)
    R, C = int(config.rows), int(config.columns)
    T = -(-M // R)
    rows_t = min(M, R)
    words = -(-rows_t // 64)
    per_tile_out = max(1, C // Kw)
    n = 0
    float_check = x_float and x_format.kind == "binary"      # round() of a float X
    n += B * M * (17 if float_check else 8)    # x units (int64), the float check's temporaries
    n += M * N * (2 + 8)                       # stored int16 values and the int64 check
    n += B * P * S * words * 8 * 2             # packed row inputs and masks of one row tile
    n += B * P * 8 * (6 + S)                   # per-cycle constants of one row tile
    n += T * B * P * 8 * 3                     # active rows, level sums, full scale per cycle
    n += B * N * 8 * 4                         # accumulators, output stage, y_int and y
    cols = min(N, per_tile_out) * Kw
    n += cols * words * 8 + rows_t * cols * (1 + 16 * S)  # one stored tile: packed, columns,
    #                                          # charge tables
    if codes or traced:
        n += T * B * P * N * Kw * 2            # every ADC code (uint16)
        n += B * P * min(N, per_tile_out) * Kw * 2
    if traced:
        n += B * P * rows_t * 3 + B * rows_t * 8   # row signals (bits, masks, levels) of a tile
    return n
