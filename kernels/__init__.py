"""Numba kernels of imcsim (installed as ``imcsim.kernels``); imports only numpy and numba.

``hw`` holds every hardware behaviour once, ``targets`` compiles it for the CPU and CUDA,
``cpu_mvm`` / ``cuda_mvm`` are the batched kernels, ``cycle`` the per-cycle kernels of the
cycle-level path, ``pack`` the bit packing, ``tables`` the static mismatch tables.  Validated
callers live in ``imcsim``.

Numba's on-disk cache keys a compiled kernel on its own file only, not on the files of the
functions it inlines; ``_invalidate_stale_cache`` drops the cache of this package whenever any
of its sources changed, so an edit to ``hw.py`` can never run with stale machine code.
"""
import hashlib
from pathlib import Path


def _invalidate_stale_cache() -> None:
    here = Path(__file__).resolve().parent
    cache = here / "__pycache__"
    digest = hashlib.sha256()
    for src in sorted(here.glob("*.py")):
        digest.update(src.name.encode())
        digest.update(src.read_bytes())
    stamp = cache / "imcsim-kernels.sources"
    current = digest.hexdigest()
    try:
        if stamp.read_text() == current:
            return
    except OSError:
        pass
    try:
        cache.mkdir(exist_ok=True)
        for f in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
            f.unlink()
        stamp.write_text(current)
    except OSError:
        pass        # a read-only install: its cache was written from these same sources


_invalidate_stale_cache()
