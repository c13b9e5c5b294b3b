"""imcsim noise-budget (issue 20): a small ladder end to end, the budget rule, bad specs,
and a ladder that resumes."""
import json

import pytest
from click.testing import CliRunner

from imcsim.cli import main
from imcsim.config import load_preset
from imcsim.training.budget import budget_spec, budget_table, format_budget
from imcsim.training.engine import Trainer
from imcsim.training.options import train_config

SMALL = ["--model", "mlp", "--epochs", "1", "--max-steps", "2", "--batch", "32", "--sequential",
         "--quiet"]


def test_a_small_ladder_runs_and_reports(tmp_path):
    out = tmp_path / "b"
    result = CliRunner().invoke(main, ["noise-budget", "--scales", "0,1", "--scaled",
                                       "all,noise", "--out", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "budget.json").read_text())
    ladders = doc["budget"]["ladders"]
    assert set(ladders) == {"all", "noise"}
    assert [p["scale"] for p in ladders["all"]["points"]] == [0.0, 1.0]
    assert doc["budget"]["fp32"]["n"] == 1 and "largest scale" in result.output
    assert (out / "budget.md").is_file()
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["all-x0-seed0", "all-x1-seed0", "fp32-seed0", "noise-x0-seed0",
                    "noise-x1-seed0"]
    # x1 of every ladder is the preset itself: the same run, the same accuracy
    acc = {r: json.loads((out / r / "result.json").read_text())["result"]["test_acc"]
           for r in runs}
    assert acc["all-x1-seed0"] == acc["noise-x1-seed0"]
    # the ladder again: every run is complete and skipped
    again = CliRunner().invoke(main, ["noise-budget", "--scales", "0,1", "--scaled",
                                      "all,noise", "--out", str(out), *SMALL])
    assert again.exit_code == 0 and again.output.splitlines()[0] == result.output.splitlines()[0]


def test_noise_scale_scales_the_preset_it_names():
    cfg = train_config({"preset": "paper-nonideal", "imc": "all", "noise_scale": 0.5,
                        "noise_scaled": "noise"})
    t = Trainer.__new__(Trainer)
    t.config = cfg
    from imcsim.training.backends import scheme_by_name
    t.scheme = scheme_by_name("radix4")
    got, nominal = t.macro_config().nonideal, load_preset("paper-nonideal").nonideal
    assert got.comparator_noise_sigma == nominal.comparator_noise_sigma / 2
    assert got.sampling_noise_sigma == nominal.sampling_noise_sigma / 2
    assert got.cell_cap_sigma == nominal.cell_cap_sigma          # not in the group
    for bad in ({"noise_scale": -1}, {"noise_scaled": "colour"}):
        with pytest.raises(ValueError, match="noise_scale"):
            train_config({"preset": "paper-nonideal", **bad})


def test_the_calibrated_chip_loads_measured_code_offsets_per_scale():
    """--calibrate-offsets (train key calibrate_offsets): the run's chip, at its noise scale,
    gets its NMC code offsets measured: the floor law's half code on F > L, and at scale 0
    nothing on F = L (an ideal integer count reads exactly)."""
    from imcsim.training.backends import scheme_by_name
    regs = {}
    for scale in (0.0, 1.0):
        t = Trainer.__new__(Trainer)
        t.config = train_config({"preset": "paper-nonideal", "imc": "all", "noise_scale": scale,
                                 "adc_rounding": "floor", "calibrate_offsets": True})
        t.scheme = scheme_by_name("radix4")
        regs[scale] = t.macro_config().nmc
    assert set(regs[0.0].code_offsets_lossy) == {-8}              # -1/2 code, 4 fraction bits
    assert set(regs[0.0].code_offsets_lossless) == {0}
    assert set(regs[0.0].code_offsets_zero) == {0}
    lossless = regs[1.0].code_offsets_lossless
    assert len(set(lossless)) > 3 and -12 < sum(lossless) / len(lossless) < -4
    with pytest.raises(ValueError, match="calibrate_offsets"):
        train_config({"calibrate_offsets": "yes"})


def test_a_calibrated_ladder_runs(tmp_path):
    result = CliRunner().invoke(main, ["noise-budget", "--scales", "1", "--adc-rounding",
                                       "floor", "--calibrate-offsets", "--out",
                                       str(tmp_path / "c"), *SMALL])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "c" / "budget.json").read_text())["spec"]
    assert spec["base"]["calibrate_offsets"] is True


def test_a_diverged_run_is_a_result_outside_every_tolerance():
    records = [_rec("fp32", None, 1.0, 97.0), _rec("all-x0", "all", 0.0, 96.5),
               _rec("all-x1", "all", 1.0, 96.0),
               {"name": "all-x2-seed0", "config": "all-x2", "status": "failed",
                "params": {"noise_scaled": "all", "noise_scale": 2.0},
                "error": "TrainingDiverged: training diverged: conv3.alpha"},
               _rec("all-x4", "all", 4.0, 96.9),
               {"name": "all-x8-seed0", "config": "all-x8", "status": "failed",
                "params": {"noise_scaled": "all", "noise_scale": 8.0},
                "error": "MemoryError"}]
    table = budget_table(records, ["all"])
    points = {p["scale"]: p for p in table["ladders"]["all"]["points"]}
    assert points[2.0]["diverged"] == 1 and points[2.0]["mean"] is None
    assert table["ladders"]["all"]["budgets"] == {"2": 1.0, "10": 1.0}
    assert table["missing"] == ["all-x8-seed0"]           # an error is no result
    assert "diverged in 1 of 1" in format_budget(table)


def _rec(config, scaled, scale, acc, seed=0):
    return {"name": f"{config}-seed{seed}", "config": config, "status": "ok",
            "params": {"noise_scaled": scaled, "noise_scale": scale},
            "result": {"test_acc": acc / 100}}


def test_the_budget_is_the_largest_scale_with_every_smaller_one_inside():
    recs = [_rec("fp32", "all", 1.0, 98.0)]
    for scale, acc in ((0.0, 98.0), (0.5, 97.0), (1.0, 90.0), (2.0, 96.5), (4.0, 50.0)):
        recs.append(_rec(f"all-x{scale}", "all", scale, acc))
    table = budget_table(recs, ["all"])
    # 2.0 is within 2 points again, but 1.0 is not: the 2-point budget stops at 0.5
    assert table["ladders"]["all"]["budgets"] == {"2": 0.5, "10": 2.0}
    recs[1]["result"]["test_acc"] = 0.80                          # even x0 outside
    assert budget_table(recs, ["all"])["ladders"]["all"]["budgets"]["2"] is None


@pytest.mark.parametrize("args, message", [
    (["--scales", "0,-1"], "scales"),
    (["--scales", "0,x"], "--scales"),
    (["--scales", "1,1"], "twice"),
    (["--scaled", "all,colour"], "noise_scaled"),
    (["--seeds", "0,0"], "seeds"),
    (["--set", "seed=3"], "--set"),
    (["--set", "noise_scale=3"], "--set"),
    (["--imc", "sideways"], "imc"),
    (["--chip-pool", "2", "--calibrate-offsets"], "chip_pool"),
])
def test_bad_ladders_get_one_line(tmp_path, args, message):
    out = tmp_path / "b"
    result = CliRunner().invoke(main, ["noise-budget", "--out", str(out), *SMALL, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_the_spec_has_one_baseline_and_a_ladder_per_name():
    spec = budget_spec({"model": "mlp"}, [1, 0.5], ["noise"], [0, 1])
    assert list(spec["configs"]) == ["fp32", "noise-x0p5", "noise-x1"]
    assert spec["grid"] == {"seed": [0, 1]} and spec["order"] == "grid"
    with pytest.raises(ValueError, match="too many|more than"):
        budget_spec({}, list(range(500)), ["all", "noise", "mismatch"], [0, 1])


def test_a_hardware_aware_ladder_hops_chips(tmp_path):
    """--chip-pool N: every run of the ladder trains each step on another of N chips of its
    own (scaled) macro, every IMC MVM kind; the FP32 baseline has no chip to hop."""
    from imcsim.calibration.montecarlo import ChipHoppingBackend, trainer_for
    from imcsim.training.backends import MvmKind
    result = CliRunner().invoke(main, ["noise-budget", "--scales", "0.5", "--chip-pool", "2",
                                       "--out", str(tmp_path / "h"), *SMALL])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "h" / "budget.json").read_text())["spec"]
    assert spec["base"]["chip_pool"] == 2 and spec["configs"]["fp32"]["chip_pool"] == 0
    config = train_config({"model": "mlp", "imc": "forward,update", "chip_pool": 3,
                           "noise_scale": 0.5, "preset": "paper-nonideal"})
    trainer = trainer_for(config, tmp_path / "t", progress=False)
    layers = [la for la in trainer.model.compute_layers()
              if isinstance(la.policy[MvmKind.FORWARD], ChipHoppingBackend)]
    assert layers
    for la in layers:
        assert isinstance(la.policy[MvmKind.UPDATE], ChipHoppingBackend)
        assert not isinstance(la.policy[MvmKind.BACKWARD], ChipHoppingBackend)
        chips = la.policy[MvmKind.FORWARD].pool
        assert len(chips) == 3 and len({b.macro.config.chip_seed for b in chips}) == 3
        # the run's own macro: its noise scale, on every chip
        assert all(b.macro.config.nonideal == trainer.macro_config().nonideal for b in chips)
    plain = trainer_for(train_config({"model": "mlp", "imc": "forward"}), tmp_path / "p",
                        progress=False)
    assert type(plain) is Trainer and not any(
        isinstance(la.policy[MvmKind.FORWARD], ChipHoppingBackend)
        for la in plain.model.compute_layers())
