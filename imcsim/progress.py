"""Progress of long work: a bar on a terminal, silence in a pipe.

:class:`Progress` draws a tqdm bar on stderr when stderr is a terminal and tqdm is installed
(the ``train`` extra), a plain line per update when stderr is a terminal without tqdm, and
nothing when stderr is not a terminal (logs and pipes stay clean) or when disabled.
"""
from __future__ import annotations

import os
import sys


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):           # replaced or closed stderr
        return False


class Progress:
    """Counts ``total`` units of work.

    Parameters
    ----------
    total : int
        Units to do.
    desc, unit : str
        What the bar says.
    enabled : bool
        False draws nothing.  True draws on a terminal only (see the module docstring).
    """

    def __init__(self, total: int, desc: str, unit: str = "it", enabled: bool = True):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.done = 0
        self.postfix = ""
        self.bar = None
        self.enabled = bool(enabled) and stderr_is_terminal()
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=self.total, desc=desc, unit=unit, leave=False)

    def update(self, n: int = 1, postfix: str = "") -> None:
        self.done += n
        self.postfix = postfix
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix_str(postfix)
        else:
            print(f"{self.desc}: {self.done}/{self.total} {self.unit} {postfix}".rstrip(),
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_ANNOUNCED: set = set()


def note_first_compile(dispatcher, what: str = "the emulator's kernels") -> None:
    """On a terminal, say that a Numba kernel is about to be compiled (no cache file yet).

    The first call of a cached ``numba.njit`` kernel after an install compiles it, which
    takes tens of seconds; without a word that looks like a hang.  Said once per process and
    kernel, on stderr, only when stderr is a terminal; silent when the cache holds the kernel
    (or when this Numba keeps its cache elsewhere).
    """
    name = getattr(dispatcher, "__name__", str(dispatcher))
    if name in _ANNOUNCED or not stderr_is_terminal():
        return
    _ANNOUNCED.add(name)
    try:
        index = dispatcher._cache._cache_file._index_path     # Numba's cache index file
    except AttributeError:
        return
    if not os.path.exists(index):
        print(f"imcsim: compiling {what} for this machine (once after an install or upgrade, "
              "about 30-60 s; cached afterwards)", file=sys.stderr, flush=True)


__all__ = ["Progress", "stderr_is_terminal", "note_first_compile"]
