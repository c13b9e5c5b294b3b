"""Run folders (issue 23): never overwritten without --force or --resume, no empty folder
after a failed start, checkpoints whose bytes depend on the run only."""
import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from imcsim.cli import main
from imcsim.training.engine import Trainer
from imcsim.training.options import train_config
from imcsim.training.rundir import checkpoint_meta

TINY = ["--model", "mlp", "--epochs", "1", "--max-steps", "1", "--batch", "32", "--quiet"]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_existing_run_is_refused_without_force_or_resume(tmp_path):
    out = tmp_path / "run"
    assert CliRunner().invoke(main, ["train", "--out", str(out), *TINY]).exit_code == 0
    before = _digest(out / "checkpoint.npz")
    again = CliRunner().invoke(main, ["train", "--out", str(out), *TINY, "--seed", "3"])
    assert again.exit_code == 2 and "--resume" in again.output and "--force" in again.output
    assert _digest(out / "checkpoint.npz") == before          # nothing touched
    forced = CliRunner().invoke(main, ["train", "--out", str(out), *TINY, "--seed", "3", "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(checkpoint_meta(out / "checkpoint.npz")["config"])["seed"] == 3
    both = CliRunner().invoke(main, ["train", "--out", str(out), *TINY, "--force", "--resume"])
    assert both.exit_code == 2


def test_a_run_interrupted_before_its_first_checkpoint_leaves_no_folder(tmp_path, monkeypatch):
    out = tmp_path / "run"

    def interrupted(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    result = CliRunner().invoke(main, ["train", "--out", str(out), *TINY])
    assert result.exit_code == 130 and not out.exists()
    bad = CliRunner().invoke(main, ["train", "--out", str(out), *TINY, "--vref", "forward=x"])
    assert bad.exit_code == 2 and not out.exists()


def test_identical_runs_leave_identical_checkpoints_without_wall_times(tmp_path):
    cfg = train_config({"model": "mlp", "epochs": 2, "max_steps": 2, "batch": 32})
    Trainer(cfg, tmp_path / "a", progress=False).run()
    Trainer(cfg, tmp_path / "b", progress=False).run()
    assert _digest(tmp_path / "a" / "checkpoint.npz") == _digest(tmp_path / "b" / "checkpoint.npz")
    meta = checkpoint_meta(tmp_path / "a" / "checkpoint.npz")
    assert all("seconds" not in row for row in meta["history"])
    # the wall times live in metrics.json, and a resumed run keeps them
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())["history"]
    assert all(row["seconds"] > 0 for row in metrics)
    longer = train_config({"model": "mlp", "epochs": 3, "max_steps": 2, "batch": 32})
    history = Trainer(longer, tmp_path / "a", progress=False).run(resume=True)
    assert [row["seconds"] for row in history[:2]] == [row["seconds"] for row in metrics]
    with np.load(tmp_path / "a" / "checkpoint.npz") as ck:      # still an ordinary .npz
        assert "meta" in ck.files


@pytest.mark.parametrize("flag", ["--resume"])
def test_resume_of_a_folder_without_a_checkpoint_names_the_file(tmp_path, flag):
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "none"), *TINY, flag])
    assert result.exit_code == 2 and "checkpoint" in result.output
