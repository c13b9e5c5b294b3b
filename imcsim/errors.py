"""One-line error messages: the project's rule that a bad input gets one line, not a traceback.

Every layer (the library's file readers, the sweep runner, the training engine's resume, the
CLI) quotes a lower-level exception inside its own one-line message; these two helpers are the
one way it is shortened.
"""
from __future__ import annotations


def first_line(exc: BaseException | str, default: str | None = None) -> str:
    """The first non-empty line of an exception's message (or of a string), stripped.

    Parameters
    ----------
    exc : BaseException or str
        The exception, or a message.
    default : str, optional
        What to return when there is no non-empty line; by default the exception's type name
        (a string without a non-empty line is returned as it is).
    """
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    if default is not None:
        return default
    return exc if isinstance(exc, str) else type(exc).__name__


def typed_line(exc: BaseException) -> str:
    """``"TypeName: first line"`` of an exception (``"TypeName"`` when its message is empty),
    for records that keep a failure's kind, such as a sweep's failed runs."""
    first = first_line(exc, default="")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


__all__ = ["first_line", "typed_line"]
