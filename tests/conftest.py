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
