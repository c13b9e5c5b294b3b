"""All-or-nothing output files: write every output under a temporary name, rename at the end.

Every command and library function that writes files uses this one helper, so a run that fails
(bad input found late, a full disk, an interrupt) leaves every output path exactly as it was.

Usage::

    with AtomicOutputs(out_path, codes_path, h5_path) as outputs:
        np.save(outputs.temporary(out_path), y)
        with outputs.writing(codes_path) as tmp:     # an OSError here names codes_path
            np.save(tmp, codes)
        with outputs.h5(h5_path) as f:               # the guarded HDF5 writer
            f["y"] = y
    # here all files exist; had anything raised, none would have changed

Temporary files live beside their targets (same file system, so the rename is atomic) and are
named ``.<name>.<pid>.<token>.partial``; ones left behind by killed processes are removed the
next time the same target is written (and by :func:`remove_stale_partials_in`, for a folder
that must be empty).

Every failed write raises an OSError naming the *target* (never the temporary), and HDF5 files
are written through :class:`H5Writer`, the one guarded HDF5 writer: HDF5 never sees a failed
write (it crashes the process after one), so a full disk ends in that one clean OSError.
"""
from __future__ import annotations

import errno
import os
import secrets
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".partial"
#: errno values of a failed write (a full disk, a quota, a file size limit, ...)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS})


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


def partial_parts(path) -> tuple[str, int] | None:
    """(target name, writer pid) of an ``AtomicOutputs`` temporary
    (``.NAME.PID.TOKEN.partial``), or None for any other path."""
    name = Path(path).name
    if not (name.startswith(".") and name.endswith(PARTIAL_SUFFIX)):
        return None
    parts = name[1:-len(PARTIAL_SUFFIX)].rsplit(".", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def temporary_target(path) -> Path | None:
    """The target of an ``AtomicOutputs`` temporary of *this* process, or None for any other
    path (a writer handed a temporary writes it in place and names the target in errors)."""
    parts = partial_parts(path)
    if parts is None or parts[1] != os.getpid():
        return None
    return Path(path).with_name(parts[0])


def remove_stale_partials(target: Path) -> None:
    """Delete temporary files of ``target`` whose writing process no longer exists."""
    for entry in _partials(target.parent):
        name, pid = partial_parts(entry)
        if name == target.name and not _pid_alive(pid):
            _unlink(entry)


def remove_stale_partials_in(folder) -> list[Path]:
    """Delete every temporary in ``folder`` whose writing process no longer exists (a run
    killed with SIGKILL cannot clean up); returns the temporaries of live processes."""
    live = []
    for entry in _partials(Path(folder)):
        if _pid_alive(partial_parts(entry)[1]):
            live.append(entry)
        else:
            _unlink(entry)
    return live


def _partials(folder: Path) -> list[Path]:
    try:
        return [e for e in folder.iterdir() if partial_parts(e) is not None and e.is_file()]
    except OSError:
        return []


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def write_error(exc: OSError, target, name: str = "output") -> OSError:
    """``exc`` as an OSError naming ``target`` (the errno kept): ``NAME: cannot write TARGET:
    REASON``; ``exc`` itself when it already names the target."""
    if str(target) in str(exc):
        return exc
    reason = exc.strerror or next((ln.strip() for ln in str(exc).splitlines() if ln.strip()),
                                  type(exc).__name__)
    where = f"cannot write {target}: {reason}"
    err = OSError(where if name == Path(target).name else f"{name}: {where}")
    err.errno = exc.errno
    return err


def check_schema_version(value, reader: str, path, what: str = "schema version") -> str:
    """The ``MAJOR.MINOR`` version of a file this reader (version ``reader``) may read.

    A newer minor version only adds what this reader ignores; a newer major version changed
    what it reads, so it is refused (ValueError naming the file): read as this version, its
    data would be misread without a word.
    """
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    parts = text.strip().split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{path}: {what} {text[:20]!r} is not MAJOR.MINOR")
    major = int(reader.split(".")[0])
    if int(parts[0]) > major:
        raise ValueError(f"{path}: {what} {text} is newer than this imcsim reads "
                         f"({major}.x); read it with the imcsim version that wrote it")
    return text.strip()


# --- interrupts ------------------------------------------------------------------------------
#: SIGINTs seen by a running command (``imcsim.cli.common`` counts them, also the ones a
#: destructor or a library callback swallowed on their way up)
_interrupts = {"seen": 0}


def note_interrupt() -> None:
    """Count one SIGINT (a command that saw one must not publish its outputs)."""
    _interrupts["seen"] += 1


def interrupts_seen() -> int:
    """SIGINTs counted by :func:`note_interrupt` so far in this process."""
    return _interrupts["seen"]


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold SIGINT until the block ends, then deliver it to the handler that was installed.

    Used around the renames of :meth:`AtomicOutputs.commit`: an interrupt there would leave
    some targets new and others old.  Outside the main thread (where Python runs signal
    handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is None:      # a handler Python cannot restore
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


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
        self.names: dict[Path, str] = seen           # target -> argument name, for errors
        self._inputs = read
        self._temporary: dict[Path, Path] = {}
        self._interrupts = interrupts_seen()
        self.committed = False

    def add(self, path, name: str = "output") -> Path:
        """Declare one more output (same checks as the constructor's); returns its target."""
        target = resolve_output(path, name)
        if target in self.names:
            raise ValueError(f"{name}: {path} is the same file as {self.names[target]}")
        if target in self._inputs:
            raise ValueError(f"{name}: {path} would overwrite the input {self._inputs[target]}")
        self.targets.append(target)
        self.names[target] = name
        return target

    def _target(self, path) -> Path:
        target = Path(path).expanduser().resolve()
        if target not in self.names:
            raise KeyError(f"{path} is not one of the declared outputs")
        return target

    def temporary(self, path) -> Path:
        """The temporary file to write for target ``path`` (created on first request)."""
        target = self._target(path)
        if target not in self._temporary:
            remove_stale_partials(target)
            token = secrets.token_hex(4)
            self._temporary[target] = target.with_name(
                f".{target.name}.{os.getpid()}.{token}{PARTIAL_SUFFIX}")
        return self._temporary[target]

    @contextmanager
    def writing(self, path) -> Iterator[Path]:
        """The temporary of ``path``, to write inside the block; an OSError raised there (a full
        disk, a file size limit) comes out naming the target."""
        target = self._target(path)
        tmp = self.temporary(path)
        try:
            yield tmp
        except OSError as exc:
            raise write_error(exc, target, self.names[target]) from None

    def h5(self, path) -> H5Writer:
        """An :class:`H5Writer` on the temporary of ``path`` (``with outputs.h5(p) as f:``)."""
        target = self._target(path)
        return H5Writer(self.temporary(path), target, self.names[target])

    def _named(self, exc: OSError) -> OSError:
        """An OSError raised while the outputs were written, naming the output it concerns:
        the one whose temporary it names, else (a failed write of an open file names no
        file) the output requested last."""
        if any(str(t) in str(exc) for t in self.targets):
            return exc
        by_tmp = {str(tmp): t for t, tmp in self._temporary.items()}
        target = by_tmp.get(str(exc.filename)) if exc.filename is not None else None
        if target is None and exc.errno in WRITE_ERRNOS and self._temporary:
            target = list(self._temporary)[-1]
        return exc if target is None else write_error(exc, target, self.names[target])

    def commit(self) -> None:
        """Rename every written temporary file onto its target.

        Refused (KeyboardInterrupt) when the command saw a SIGINT that was swallowed on its way
        up; a SIGINT during the renames is held until they are all done.
        """
        if interrupts_seen() != self._interrupts:
            raise KeyboardInterrupt
        missing = [t for t in self._temporary.values() if not t.exists()]
        if missing:
            raise OSError(f"output {missing[0]} was never written")
        with deferred_interrupt():
            for target, tmp in self._temporary.items():
                try:
                    os.replace(tmp, target)
                except OSError as exc:
                    raise write_error(exc, target, self.names[target]) from None
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
            named = self._named(exc) if isinstance(exc, OSError) else exc
            self.abort()
            if named is not exc:
                raise named from None


def write_text_atomic(path, text: str, name: str = "output") -> Path:
    """Write one text file all-or-nothing; returns the resolved target."""
    with AtomicOutputs(path, names=[name]) as out, out.writing(path) as tmp:
        tmp.write_text(text)
    return out.targets[0]


def write_bytes_atomic(path, data: bytes, name: str = "output") -> Path:
    """Write one binary file all-or-nothing; returns the resolved target."""
    with AtomicOutputs(path, names=[name]) as out, out.writing(path) as tmp:
        tmp.write_bytes(data)
    return out.targets[0]


# --- HDF5 ------------------------------------------------------------------------------------
#: positioned write (POSIX); elsewhere a seek, then a write
_PWRITE = getattr(os, "pwrite", None)


class GuardedFile:
    """A file for h5py's ``fileobj`` driver that never lets HDF5 see a failed write.

    HDF5 2.0 crashes the process (segmentation fault at the next close or at exit) once one of
    its own writes has failed, e.g. on a full disk.  Here a failed write is recorded in
    :attr:`error` and its bytes are kept in memory, so HDF5 stays consistent and can be
    closed; the writer then checks :attr:`error` and raises a clean OSError.
    """

    def __init__(self, path) -> None:
        self.raw = open(path, "w+b", buffering=0)
        self.pos = 0
        self.error: OSError | None = None
        self.overlay: list[tuple[int, bytes]] = []      # writes after the first failure
        self.size = 0

    def _raw_write(self, data) -> None:
        """Write all of ``data`` at :attr:`pos` (raises OSError).  One positioned write per
        call where the platform has ``pwrite`` (HDF5 writes a trace in hundreds of pieces)."""
        view = memoryview(data).cast("B")
        offset = self.pos
        while view:
            if _PWRITE is not None:
                n = _PWRITE(self.raw.fileno(), view, offset)
            else:
                self.raw.seek(offset)
                n = self.raw.write(view)
            if not n:
                raise OSError(errno.EIO, "short write")
            view, offset = view[n:], offset + n

    def write(self, data) -> int:
        # HDF5's buffer is only read during the call: it is copied only to keep it in memory
        # after a failure, never on the way to the file
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                self._raw_write(view)
            except OSError as exc:
                self.error = exc
        if self.error is not None:
            self.overlay.append((self.pos, bytes(view)))
        self.pos += len(view)
        self.size = max(self.size, self.pos)
        return len(view)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = max(0, self.size - self.pos)
        self.raw.seek(self.pos)
        buf = bytearray(self.raw.read(n) or b"")
        if self.overlay:
            buf.extend(bytes(max(0, min(n, self.size - self.pos) - len(buf))))
            for off, data in self.overlay:
                lo, hi = max(off, self.pos), min(off + len(data), self.pos + len(buf))
                if lo < hi:
                    buf[lo - self.pos:hi - self.pos] = data[lo - off:hi - off]
        self.pos += len(buf)
        return bytes(buf)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if self.error is None:
            try:
                self.raw.truncate(size)
            except OSError as exc:
                self.error = exc
        self.size = size
        return size

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.raw.close()


class H5Writer:
    """The one way imcsim writes an HDF5 file: an ``h5py.File`` on a :class:`GuardedFile`.

    Parameters
    ----------
    path : path
        The file to write, normally an ``AtomicOutputs`` temporary (``AtomicOutputs.h5``).
    target, name : path, str
        What errors name (default: the temporary's target, "output").

    Use as ``with H5Writer(tmp, target) as f: f.attrs[...] = ...``: on leaving the block the
    file is closed and a failed write raises ``OSError("NAME: cannot write TARGET: REASON")``
    (errno kept).  Long writers call :meth:`check` now and then, so that a full disk stops
    them early (the guarded file keeps the bytes HDF5 wrote after the failure in memory).
    """

    def __init__(self, path, target=None, name: str = "output") -> None:
        import h5py
        self.path = Path(path)
        self.target = Path(target) if target is not None else (temporary_target(path)
                                                               or self.path)
        self.name = name
        self.guard: GuardedFile | None = None
        self.file = None
        try:
            self.guard = GuardedFile(self.path)
            self.file = h5py.File(self.guard, "w")
        except OSError as exc:
            self.abort()
            raise write_error(exc, self.target, name) from None
        except BaseException:
            self.abort()
            raise

    def check(self) -> None:
        """Raise the first failed write as an OSError naming the target."""
        exc = None if self.guard is None else self.guard.error
        if exc is not None:
            raise write_error(exc, self.target, self.name)

    def close(self) -> None:
        """Close the file, then raise any failed write (:meth:`check`)."""
        f, self.file = self.file, None
        try:
            if f is not None:
                f.close()
        finally:
            if self.guard is not None:
                self.guard.close()
        self.check()

    def abort(self) -> None:
        """Close without checking (the caller is failing already, and deletes the file)."""
        f, self.file = self.file, None
        if f is not None:
            try:
                f.close()
            except Exception:           # already failing; the temporary is deleted anyway
                pass
        if self.guard is not None:
            self.guard.close()

    def __enter__(self):
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        failed = self.guard is not None and self.guard.error is not None
        self.abort()
        if failed and isinstance(exc, OSError):
            self.check()                  # a write failed first: say so, naming the target
