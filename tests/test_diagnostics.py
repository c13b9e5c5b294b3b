"""Per-MVM error diagnostics (issue 19): hand computations, sampling, and that a run with them
trains exactly as one without; an interrupted sweep run resumes to the uninterrupted result;
a sweep's train keys mean what imcsim train's flags mean."""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from imcsim import BinaryFormat, Macro, MacroConfig, VrefConfig, VrefMode
from imcsim.cli import main
from imcsim.training.diagnostics import MvmDiagnostics, MvmErrorSums, sampled_steps
from imcsim.training.engine import TrainConfig, Trainer
from imcsim.training.options import train_config


def test_error_sums_of_a_two_by_two_case_by_hand():
    exact = np.array([[1.0, 2.0], [3.0, 4.0]])
    macro = np.array([[1.0, 1.0], [3.0, 6.0]])          # errors 0, -1, 0, +2
    s = MvmErrorSums()
    s.add_outputs(exact, macro)
    s.add_conversions(10, 4, 1)
    r = s.summary()
    rms = math.sqrt((1 + 4 + 9 + 16) / 4)
    assert r["bias"] == pytest.approx((1 / 4) / rms)
    assert r["rms_error"] == pytest.approx(math.sqrt(5 / 4) / rms)
    assert r["cosine"] == pytest.approx((1 + 2 + 9 + 24) / math.sqrt(30 * (1 + 1 + 9 + 36)))
    # per-output means removed: exact columns (-1, 1), (-1, 1); macro (-1, 1), (-2.5, 2.5)
    assert r["cosine_centred"] == pytest.approx((1 + 1 + 2.5 + 2.5) / math.sqrt(4 * (2 + 12.5)))
    var_e = 30 / 4 - (10 / 4) ** 2
    var_d = 5 / 4 - (1 / 4) ** 2
    assert r["snr_db"] == pytest.approx(10 * math.log10(var_e / var_d))
    assert r["lossy_share"] == 0.4 and r["clipped_share"] == 0.1
    assert r["calls"] == 1 and r["elements"] == 4


def test_an_exact_match_has_no_error_and_no_finite_snr():
    s = MvmErrorSums()
    s.add_outputs(np.eye(3), np.eye(3))
    r = s.summary()
    assert r["bias"] == 0 and r["rms_error"] == 0 and r["cosine"] == pytest.approx(1.0)
    assert r["snr_db"] is None and r["exact_match"] is True


def test_diagnostics_of_a_small_macro_mvm_against_a_hand_computation():
    rng = np.random.default_rng(3)
    X = rng.integers(-16, 17, (12, 700)).astype(np.float64)     # 700 rows: lossy at F > 255
    W = rng.integers(-8, 9, (700, 5))
    macro = Macro(MacroConfig(vref=VrefConfig(mode=VrefMode.VARIABLE)))
    res = macro.mvm(X, W, BinaryFormat(6), BinaryFormat(5))
    diag = MvmDiagnostics(max_vectors=6)                        # every second vector
    diag.record("L", "forward", X, W, res, macro.config.top_code)
    rec = diag.summary(["L"])["L"]["forward"]
    e = X[::2] @ W
    m = res.y[::2]
    d = m - e
    rms = np.sqrt(np.mean(e ** 2))
    assert rec["bias"] == pytest.approx(d.mean() / rms)
    assert rec["rms_error"] == pytest.approx(np.sqrt(np.mean(d ** 2)) / rms)
    assert rec["cosine"] == pytest.approx(np.sum(e * m) / np.sqrt(np.sum(e ** 2) * np.sum(m ** 2)))
    ec, mc = e - e.mean(axis=0), m - m.mean(axis=0)
    assert rec["cosine_centred"] == pytest.approx(
        np.sum(ec * mc) / np.sqrt(np.sum(ec ** 2) * np.sum(mc ** 2)))
    assert rec["snr_db"] == pytest.approx(10 * np.log10(e.var() / d.var()))
    # a cycle is lossy where F = max(driven rows, 255) exceeds 255 and a row is driven;
    # every cycle converts the same columns
    lossy_cycles = np.sum((res.full_scale > 255) & (res.active_rows > 0))
    assert rec["lossy_share"] == pytest.approx(lossy_cycles / res.full_scale.size)
    ev = res.events.total()
    assert rec["clipped_share"] == ev["clipped_conversions"] / ev["adc_conversions"]
    assert rec["bias"] < 0                  # the floor law reads low (docs/training.md)


def test_sampled_steps_depend_on_seed_and_epoch_only():
    a = sampled_steps(0, 1, 22, 2)
    assert a == sampled_steps(0, 1, 22, 2) and len(a) == 2 and all(0 <= i < 22 for i in a)
    assert sampled_steps(0, 0, 5, 9) == frozenset(range(5))
    assert sampled_steps(0, 0, 5, 0) == frozenset()
    draws = {sampled_steps(s, e, 22, 2) for s in range(4) for e in range(4)}
    assert len(draws) > 8


def _tiny(**kw):
    base = dict(model="small-cnn", epochs=2, max_steps=3, batch=32, imc="all")
    base.update(kw)
    return train_config(base)


def test_diagnostics_observe_only_and_land_in_metrics(tmp_path):
    on = Trainer(_tiny(diagnostic_steps=3), tmp_path / "on", progress=False).run()
    off = Trainer(_tiny(diagnostic_steps=0), tmp_path / "off", progress=False).run()
    for a, b in zip(on, off):
        assert a["train_loss"] == b["train_loss"] and a["test_acc"] == b["test_acc"]
        assert "mvm_error" in a and "mvm_error" not in b
    rec = on[-1]["mvm_error"]
    assert set(rec) == {"conv2", "conv3", "fc4"}
    assert set(rec["conv3"]) == {"forward", "backward", "update"}
    assert rec["conv3"]["forward"]["calls"] == 3           # one call per sampled step
    result = CliRunner().invoke(main, ["report", str(tmp_path / "on")])
    assert result.exit_code == 0, result.output
    assert "conv3" in result.output and "bias/rms" in result.output
    result = CliRunner().invoke(main, ["report", str(tmp_path / "off")])
    assert result.exit_code == 2 and "no per-MVM diagnostics" in result.output
    result = CliRunner().invoke(main, ["report", str(tmp_path / "none")])
    assert result.exit_code == 2 and "not a run folder" in result.output


def test_adc_rounding_overrides_the_preset():
    t = Trainer.__new__(Trainer)
    t.config = _tiny(adc_rounding="half_up")
    from imcsim.training.backends import scheme_by_name
    t.scheme = scheme_by_name("radix4")
    assert t.macro_config().adc_rounding.value == "half_up"
    t.config = _tiny(adc_rounding="floor")
    assert t.macro_config().adc_rounding.value == "floor"
    t.config = _tiny()                                  # the preset's law: half_up since Table III
    assert t.macro_config().adc_rounding.value == "half_up"
    with pytest.raises(ValueError, match="adc_rounding"):
        _tiny(adc_rounding="half_even")


# --- one front door: sweep keys and CLI flags ---------------------------------------------
CASES = [
    ({"imc": "all"}, ["--imc", "all"]),
    ({"imc": "forward"}, ["--imc", "forward"]),
    ({"imc": "", "other": "exact"}, ["--other", "exact"]),
    ({"other": "exact"}, ["--other", "exact"]),
    ({"imc": "forward", "other": "fp32"}, ["--imc", "forward", "--other", "fp32"]),
    ({"imc": "all", "vref": {"backward": "dual:255:2304"}},
     ["--imc", "all", "--vref", "backward=dual:255:2304"]),
    # the one Vref grammar: a bare SPEC for every kind, comma lists, later items win
    ({"imc": "all", "vref": "dual:255:2304:column"},
     ["--imc", "all", "--vref", "dual:255:2304:column"]),
    ({"imc": "all", "vref": ["dual", "update=fixed:matched"]},
     ["--imc", "all", "--vref", "dual,update=fixed:matched"]),
    ({"imc": "all", "vref": [["forward", "fixed:1152"]]},
     ["--imc", "all", "--vref", "forward=fixed:1152"]),
    ({"imc": "all", "adc_rounding": "half_up", "diagnostic_steps": 0, "batch": 16,
      "max_steps": 2}, ["--imc", "all", "--adc-rounding", "half_up", "--diagnostic-steps", "0",
                        "--batch", "16", "--max-steps", "2"]),
]


@pytest.mark.parametrize("keys, flags", CASES)
def test_each_sweep_key_means_what_the_flag_means(keys, flags, monkeypatch, tmp_path):
    from imcsim.sweep import plan_sweep
    seen = {}

    class Captured(Exception):
        pass

    def capture(self, config, out_dir, progress=True):
        seen["config"] = config
        raise Captured

    monkeypatch.setattr(Trainer, "__init__", capture)
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "r")] + flags)
    assert "config" in seen, result.output        # stopped right after building the config
    plan = plan_sweep({"command": "train", "base": keys}, out=tmp_path / "s")
    assert TrainConfig.from_json(json.dumps(plan.runs[0].params)) == seen["config"]
    if keys.get("other") == "exact" and not keys.get("imc"):
        # the rule the sweep once lost: --other exact without --imc is all-exact, not FP32
        assert dict(seen["config"].backends) == dict.fromkeys(
            ("forward", "backward", "update"), "exact")


# --- an interrupted sweep run resumes from its checkpoint -------------------------------------
def test_an_interrupted_sweep_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    from imcsim.sweep import plan_sweep, run_sweep
    spec = {"command": "train", "base": {"model": "small-cnn", "epochs": 3, "max_steps": 2,
                                         "batch": 32, "imc": "all"}}
    whole = run_sweep(plan_sweep(spec, out=tmp_path / "whole"))
    assert whole.records[0]["status"] == "ok"

    real_save = Trainer.save_checkpoint
    trained = []
    real_epoch = Trainer.train_epoch

    def save_then_die(self, epoch):
        real_save(self, epoch)
        if epoch == 1:
            raise RuntimeError("power cut")

    def counting_epoch(self, epoch):
        trained.append(epoch)
        return real_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", counting_epoch)
    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    plan = plan_sweep(spec, out=tmp_path / "cut")
    first = run_sweep(plan)
    assert first.records[0]["status"] == "failed" and "power cut" in first.records[0]["error"]
    assert trained == [0, 1]
    monkeypatch.setattr(Trainer, "save_checkpoint", real_save)
    again = run_sweep(plan)
    assert trained == [0, 1, 2]                 # resumed after epoch 2, not restarted
    assert again.records[0]["status"] == "ok"
    strip = ("seconds", "train_seconds")
    a = {k: v for k, v in whole.records[0]["result"].items() if k not in strip}
    b = {k: v for k, v in again.records[0]["result"].items() if k not in strip}
    assert a == b
    ha = json.loads((tmp_path / "whole" / plan.runs[0].name / "metrics.json").read_text())["history"]
    hb = json.loads((plan.runs[0].folder / "metrics.json").read_text())["history"]
    assert [r["test_loss"] for r in ha] == [r["test_loss"] for r in hb]


def test_a_checkpoint_of_other_parameters_is_not_resumed(tmp_path):
    from imcsim.training.rundir import resumable_checkpoint
    cfg = _tiny(epochs=1, max_steps=1)
    Trainer(cfg, tmp_path, progress=False).run()
    assert resumable_checkpoint(tmp_path, cfg)
    assert resumable_checkpoint(tmp_path, _tiny(epochs=1, max_steps=1, diagnostic_steps=0))
    assert not resumable_checkpoint(tmp_path, _tiny(epochs=2, max_steps=1))
    assert not resumable_checkpoint(tmp_path, _tiny(epochs=1, max_steps=1, seed=4))
    (tmp_path / "checkpoint.npz").write_bytes(b"PK\x03\x04 truncated")
    assert not resumable_checkpoint(tmp_path, cfg)


def test_a_finished_run_of_an_older_imcsim_is_still_skipped(tmp_path):
    """result.json written before TrainConfig gained a field (a default) still counts."""
    from imcsim.sweep import plan_sweep, run_sweep, stored_result
    spec = {"command": "train", "base": {"model": "mlp", "epochs": 1, "max_steps": 1,
                                         "batch": 32}}
    plan = plan_sweep(spec, out=tmp_path)
    run_sweep(plan)
    path = plan.runs[0].folder / "result.json"
    doc = json.loads(path.read_text())
    del doc["params"]["noise_scale"], doc["params"]["diagnostic_steps"]
    path.write_text(json.dumps(doc))
    assert stored_result(plan.runs[0], "train") is not None
    doc["params"]["seed"] = 5                       # another run: not skipped
    path.write_text(json.dumps(doc))
    assert stored_result(plan.runs[0], "train") is None
