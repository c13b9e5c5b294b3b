"""A built wheel installs into a fresh virtual environment and runs outside the repository.

Slow (builds a wheel, creates a plain venv, installs numpy/numba/scipy/h5py/click into it):
select with ``-m slow``.  ``.ci/run`` does the same step itself and sets IMCSIM_WHEEL_CHECKED
so that its pytest run does not repeat it.
"""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = (["config"], ["mvm", "--random-shape", "2", "64", "4"],
            ["energy", "--model", "vgg-lite"])


def run(cmd, cwd, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    if os.environ.get("IMCSIM_WHEEL_CHECKED"):
        pytest.skip(".ci/run has checked the wheel")
    pytest.importorskip("build", reason="the 'build' package is not installed")
    dist = tmp_path / "dist"
    # sdist, then the wheel from it: a clean tree (a stale build/ could leak into a --wheel build)
    res = run([sys.executable, "-m", "build", "--outdir", dist, ROOT], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    wheel, = dist.glob("imcsim-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"imcsim"}, tops                 # kernels/, training/ install inside imcsim
    assert any(n.startswith("imcsim/data/presets/") and n.endswith(".json") for n in names)
    assert any(n.startswith("imcsim/data/energy/") and n.endswith(".json") for n in names)

    venv = tmp_path / "venv"
    res = run([sys.executable, "-m", "venv", venv], tmp_path)     # plain: no system packages
    assert res.returncode == 0, res.stderr
    python = venv / "bin" / "python"
    res = run([python, "-m", "pip", "install", "--quiet", wheel], tmp_path)
    if res.returncode != 0 and any(s in res.stdout + res.stderr for s in (
            "No matching distribution", "Could not find a version", "NewConnectionError")):
        pytest.skip("the dependencies cannot be installed here (no package index)")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = run([python, "-c", "import imcsim; print(imcsim.__file__)"], elsewhere)
    assert res.returncode == 0 and str(venv) in res.stdout, res.stdout + res.stderr
    for top in ("kernels", "training"):
        res = run([python, "-c", f"import {top}"], elsewhere)
        assert res.returncode != 0, f"the wheel installed a top-level '{top}'"
    for args in COMMANDS:
        res = run([venv / "bin" / "imcsim", *args], elsewhere)
        assert res.returncode == 0, f"imcsim {' '.join(args)}:\n{res.stdout[-2000:]}{res.stderr[-2000:]}"
        assert res.stdout.strip()
