"""Shared pytest setup: make the test helpers in tests/ (reference_model) importable."""
import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

# CUDA paths run under Numba's CUDA simulator unless a real GPU run is asked for
# (IMCSIM_TEST_REAL_GPU=1, as the device script does).  Must be set before numba is imported.
import os  # noqa: E402

if os.environ.get("IMCSIM_TEST_REAL_GPU", "0") in ("", "0"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import signal  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def default_sigint_handler():
    """Every test sees Python's own SIGINT handler, whatever the suite inherited: a suite
    started in the background (``nohup ... &``) inherits SIGINT ignored, and the tests that
    send themselves a SIGINT would then test nothing (they failed so, found running the README
    command that way)."""
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
