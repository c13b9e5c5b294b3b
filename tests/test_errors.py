"""imcsim.errors: the one way every layer shortens an exception to one line."""
import pytest

from imcsim.errors import first_line, typed_line

CASES = [
    # (message or exception, default, first_line, typed_line)
    (ValueError("bad x\nsecond"), None, "bad x", "ValueError: bad x"),
    (ValueError("\n  \n  indented  \nmore"), None, "indented", "ValueError: indented"),
    (KeyError(), None, "KeyError", "KeyError"),
    (OSError(""), "", "", "OSError"),
    ("  text\nrest", None, "text", None),
    ("", None, "", None),
    ("\n", "fallback", "fallback", None),
]


@pytest.mark.parametrize("exc, default, first, typed", CASES)
def test_first_and_typed_line(exc, default, first, typed):
    assert first_line(exc, default) == first
    if typed is not None:
        assert typed_line(exc) == typed
