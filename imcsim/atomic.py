"""All-or-nothing output files: write every output under a temporary name, rename at the end.

Every command and library function that writes files uses this one helper, so a run that fails
(bad input found late, a full disk, an interrupt) leaves every output path exactly as it was.

Usage::

    with AtomicOutputs(out_path, codes_path) as outputs:
        np.save(outputs.temporary(out_path), y)
        np.save(outputs.temporary(codes_path), codes)
    # here both files exist; had anything raised, neither would have changed

Temporary files live beside their targets (same file system, so the rename is atomic) and are
named ``.<name>.<pid>.<token>.partial``; ones left behind by killed processes are removed the
next time the same target is written.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def resolve_output(path, name: str = "output") -> Path:
    """Absolute path of an output file, with its folder checked (ValueError naming the path)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a path, got {type(path).__name__}")
    p = Path(path).expanduser()
    if str(p) in ("", "."):
        raise ValueError(f"{name}: empty path")
    p = p.resolve()
    if p.is_dir():
        raise ValueError(f"{name}: {path} is a folder, not a file")
    parent = p.parent
    if not parent.is_dir():
        raise ValueError(f"{name}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{name}: folder {parent} is not writable")
    return p


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(target: Path) -> None:
    """Delete temporary files of ``target`` whose writing process no longer exists."""
    prefix = f".{target.name}."
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(PARTIAL_SUFFIX)):
            continue
        pid_text = name[len(prefix):].split(".", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            try:
                entry.unlink()
            except OSError:
                pass


class AtomicOutputs:
    """A set of output files written all-or-nothing.

    Parameters
    ----------
    *paths : str or Path or None
        Output files (None entries are skipped, so optional outputs can be passed as they are).
        Paths are compared after resolving them: two names for one file are refused, as is an
        output that equals one of ``inputs``.
    names : iterable of str or None
        The argument name of each path, used in error messages (default "output").
    inputs : iterable of paths
        Files the command reads; writing over one of them is refused.
    """

    def __init__(self, *paths, names: Iterable[str] | None = None, inputs: Iterable = ()):
        names = list(names) if names is not None else ["output"] * len(paths)
        if len(names) != len(paths):
            raise ValueError("names: one name per path")
        self.targets: list[Path] = []
        seen: dict[Path, str] = {}
        read = {Path(p).expanduser().resolve(): str(p) for p in inputs if p is not None}
        for path, name in zip(paths, names):
            if path is None:
                continue
            target = resolve_output(path, name)
            if target in seen:
                raise ValueError(f"{name}: {path} is the same file as {seen[target]}")
            if target in read:
                raise ValueError(f"{name}: {path} would overwrite the input {read[target]}")
            seen[target] = name
            self.targets.append(target)
        self._temporary: dict[Path, Path] = {}
        self.committed = False

    def temporary(self, path) -> Path:
        """The temporary file to write for target ``path`` (created on first request)."""
        target = Path(path).expanduser().resolve()
        if target not in self.targets:
            raise KeyError(f"{path} is not one of the declared outputs")
        if target not in self._temporary:
            remove_stale_partials(target)
            token = secrets.token_hex(4)
            self._temporary[target] = target.with_name(
                f".{target.name}.{os.getpid()}.{token}{PARTIAL_SUFFIX}")
        return self._temporary[target]

    def commit(self) -> None:
        """Rename every written temporary file onto its target."""
        missing = [t for t in self._temporary.values() if not t.exists()]
        if missing:
            raise OSError(f"output {missing[0]} was never written")
        for target, tmp in self._temporary.items():
            os.replace(tmp, target)
        self.committed = True

    def abort(self) -> None:
        """Delete every temporary file; targets stay as they were."""
        for tmp in self._temporary.values():
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        self._temporary.clear()

    def __enter__(self) -> AtomicOutputs:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def write_text_atomic(path, text: str, name: str = "output") -> Path:
    """Write one text file all-or-nothing; returns the resolved target."""
    with AtomicOutputs(path, names=[name]) as out:
        out.temporary(path).write_text(text)
    return out.targets[0]


def write_bytes_atomic(path, data: bytes, name: str = "output") -> Path:
    """Write one binary file all-or-nothing; returns the resolved target."""
    with AtomicOutputs(path, names=[name]) as out:
        out.temporary(path).write_bytes(data)
    return out.targets[0]
