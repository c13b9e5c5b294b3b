"""Helpers of the CLI hardening tests: stderr lines and the one-line usage-error convention."""
from imcsim.cli.common import EXIT_USAGE


def err_lines(result) -> list:
    return [ln for ln in result.stderr.splitlines() if ln.strip()]


def assert_usage_error(result, *names):
    """Exit 2, one stderr line 'Error: ...' naming every one of ``names``, no traceback."""
    assert result.exit_code == EXIT_USAGE, (result.output, result.exception)
    lines = err_lines(result)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for name in names:
        assert str(name) in lines[0], lines[0]
    assert "Traceback" not in result.output
