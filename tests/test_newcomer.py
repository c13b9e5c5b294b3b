"""A newcomer's first hour (issue 24): training on the base install, results independent of
thread settings, no silent compile, options that exist, data that ships."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

from imcsim.cli import main
from imcsim.progress import Progress, note_first_compile
from imcsim.training.data import digits_arrays, load_digits
from imcsim.training.engine import Trainer
from imcsim.training.options import train_config


def test_packaged_digits_are_scikit_learns():
    sklearn = pytest.importorskip("sklearn.datasets")
    images, labels = digits_arrays()
    bunch = sklearn.load_digits()
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8)
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)


def test_training_needs_no_extra(tmp_path, monkeypatch):
    """Without scikit-learn, tqdm and matplotlib a run trains and writes its metrics."""
    for name in ("sklearn", "tqdm", "matplotlib"):
        monkeypatch.setitem(sys.modules, name, None)            # import fails
    cfg = train_config({"model": "mlp", "epochs": 1, "max_steps": 2, "batch": 32})
    assert load_digits().x_train.shape[1:] == (8, 8, 1)
    history = Trainer(cfg, tmp_path, progress=True).run()
    assert history and (tmp_path / "metrics.json").is_file()
    assert not (tmp_path / "curves.png").exists()


RUN = r"""
import json, sys
from imcsim.training.engine import Trainer
from imcsim.training.options import train_config
cfg = train_config(json.loads(sys.argv[1]))
h = Trainer(cfg, sys.argv[2], progress=False).run()
print(json.dumps([[r["train_loss"], r["test_loss"]] for r in h]))
"""


@pytest.mark.parametrize("params", [
    {"model": "small-cnn", "epochs": 1, "max_steps": 3, "batch": 64},
    {"model": "small-cnn", "epochs": 1, "max_steps": 2, "batch": 32, "imc": "all"},
])
def test_a_run_does_not_depend_on_blas_or_numba_threads(params, tmp_path):
    """The documented guarantee (docs/training.md, Determinism), in fresh processes."""
    outs = []
    for i, threads in enumerate(("1", "2", None)):
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                            "NUMBA_NUM_THREADS")}
        if threads:
            env.update(OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads,
                       MKL_NUM_THREADS=threads, NUMBA_NUM_THREADS=threads)
        done = subprocess.run([sys.executable, "-c", RUN, json.dumps(params),
                               str(tmp_path / str(i))], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        outs.append(done.stdout.strip().splitlines()[-1])
    assert outs[0] == outs[1] == outs[2]


def test_progress_is_silent_off_a_terminal(capsys):
    with Progress(3, "work") as bar:
        bar.update(1, "x")
    assert capsys.readouterr().err == ""


def test_a_cold_kernel_cache_is_announced_on_a_terminal(tmp_path, monkeypatch, capsys):
    import imcsim.progress as progress
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    cold = types.SimpleNamespace(__name__="cold_kernel", _cache=types.SimpleNamespace(
        _cache_file=types.SimpleNamespace(_index_path=str(tmp_path / "missing.nbi"))))
    note_first_compile(cold)
    note_first_compile(cold)                                   # once per process
    assert capsys.readouterr().err.count("compiling") == 1
    (tmp_path / "warm.nbi").write_text("")
    warm = types.SimpleNamespace(__name__="warm_kernel", _cache=types.SimpleNamespace(
        _cache_file=types.SimpleNamespace(_index_path=str(tmp_path / "warm.nbi"))))
    note_first_compile(warm)
    assert capsys.readouterr().err == ""


def test_cifar10_without_its_folder_names_the_option_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", "cifar10", "--out", str(out)])
    assert result.exit_code == 2 and "--data-folder" in result.output
    assert "None" not in result.output and not out.exists()


def test_check_statistical_takes_the_stimulus_folder(tmp_path):
    result = CliRunner().invoke(main, ["check", "--help"])
    assert "--stimulus" in result.output
    (tmp_path / "e").mkdir()
    (tmp_path / "a").mkdir()
    result = CliRunner().invoke(main, ["check", str(tmp_path / "e"), str(tmp_path / "a"),
                                       "--stimulus", str(tmp_path)])
    assert result.exit_code == 2 and "--statistical only" in result.output
