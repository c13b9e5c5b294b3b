"""`imcsim sweep`: spec checking, a 2 x 2 sweep on a Dask LocalCluster of 2 worker processes
equal to the four runs done alone, resumability, failed runs, killed workers."""
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from imcsim.cli import main
from imcsim.cli.common import EXIT_MISMATCH, EXIT_USAGE
from imcsim.sweep import (
    COMMANDS,
    Command,
    load_spec,
    plan_sweep,
    read_table,
    register_command,
    run_sweep,
    write_table,
)
from imcsim.training.engine import TrainConfig, Trainer

TINY = {"model": "mlp", "epochs": 1, "max_steps": 2, "batch": 32}
SPEC = {"command": "train", "base": TINY,
        "configs": {"fp": {"label": "FP32"}, "ex": {"label": "exact MVMs",
                                                 "backends": {"forward": "exact",
                                                              "backward": "exact",
                                                              "update": "fp32"}}},
        "grid": {"seed": [0, 1]}}


def history(folder):
    """metrics.json's history without the wall times."""
    doc = json.loads((Path(folder) / "metrics.json").read_text())
    return [{k: v for k, v in row.items() if k != "seconds"} for row in doc["history"]]


# --- crash: a command that kills its worker process --------------------------------------
def _crash_normalize(params):
    return {"mode": params.get("mode", "never"), "marker": params.get("marker", "")}


def _crash_run(params, folder):
    marker = Path(params["marker"])
    if params["mode"] == "always" or (params["mode"] == "once" and not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return {"value": 1}


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed")
    import cloudpickle
    import dask

    from imcsim.sweep import dask_client
    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the crash command
    # a task whose worker dies is retried once (then reported); one task per worker at once
    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.scheduler.worker-saturation": 1.0}):
        with dask_client(None, workers=2) as c:
            yield c


def test_plan_names_runs_and_checks_every_parameter(tmp_path):
    plan = plan_sweep(SPEC, out=tmp_path / "o")
    assert [r.name for r in plan.runs] == ["fp-seed0", "fp-seed1", "ex-seed0", "ex-seed1"]
    assert [r.label for r in plan.runs][::2] == ["FP32", "exact MVMs"]
    fp, ex = plan.runs[0].params, plan.runs[2].params
    assert fp["backends"] == [["forward", "fp32"], ["backward", "fp32"], ["update", "fp32"]]
    assert ex["backends"] == [["forward", "exact"], ["backward", "exact"], ["update", "fp32"]]
    assert fp["batch_size"] == 32 and fp["max_steps_per_epoch"] == 2 and fp["model"] == "mlp"
    assert plan.runs[0].folder == (tmp_path / "o" / "fp-seed0").resolve()
    assert plan_sweep(SPEC, out=tmp_path, overrides={"epochs": 3}).runs[0].params["epochs"] == 3
    bad = [({**SPEC, "command": "fly"}, "command"),
           ({**SPEC, "colour": 1}, "colour"),
           ({**SPEC, "base": {**TINY, "epochz": 1}}, "run fp-seed0: unknown parameter 'epochz'"),
           ({**SPEC, "base": {**TINY, "epochs": 0}}, "epochs"),
           ({**SPEC, "grid": {"seed": []}}, "non-empty"),
           ({**SPEC, "configs": {"fp": {"seed": 3}}}, "also swept"),
           ({**SPEC, "configs": {"a/b": {}}}, "folder name"),
           ({**SPEC, "configs": {"x": {"imc": "sideways"}}}, "sideways")]
    for spec, match in bad:
        with pytest.raises(ValueError, match=match):
            plan_sweep(spec, out=tmp_path)
    with pytest.raises(ValueError, match="swept by the grid"):
        plan_sweep(SPEC, out=tmp_path, overrides={"seed": 1})
    mvm = plan_sweep({"command": "mvm", "base": {"shape": [2, 40, 3], "nonideal.cell_cap_sigma":
                                                 0.01}, "grid": {"chip_seed": [0, 1]}},
                     out=tmp_path)
    assert [r.name for r in mvm.runs] == ["chip_seed0", "chip_seed1"]
    assert mvm.runs[1].params["config"]["chip_seed"] == 1
    assert mvm.runs[1].params["config"]["nonideal"]["cell_cap_sigma"] == 0.01
    with pytest.raises(ValueError, match="nonideal.typo"):
        plan_sweep({"command": "mvm", "base": {"nonideal.typo": 1}}, out=tmp_path)


def test_yaml_and_json_specs_load_alike(tmp_path):
    pytest.importorskip("yaml")
    (tmp_path / "s.json").write_text(json.dumps(SPEC))
    (tmp_path / "s.yaml").write_text(
        "command: train\nbase: {model: mlp, epochs: 1, max_steps: 2, batch: 32}\n"
        "configs:\n  fp: {label: FP32}\n"
        "  ex:\n    label: exact MVMs\n    backends: {forward: exact, backward: exact, update: fp32}\n"
        "grid:\n  seed: [0, 1]\n")
    assert load_spec(tmp_path / "s.yaml") == load_spec(tmp_path / "s.json") == SPEC
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_spec(tmp_path / "bad.json")


def test_two_by_two_sweep_equals_the_four_runs_alone(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_sweep(SPEC, out="sweep")
    seen = []
    result = run_sweep(plan, client=client, on_result=lambda doc, done, total:
                       seen.append((doc["name"], done, total)))
    assert not result.failed and [d for _, d, _ in seen] == [1, 2, 3, 4]
    assert {doc["worker"] for doc in result.records} <= set(client.scheduler_info()["workers"])
    write_table(result)
    for run in plan.runs:                               # each alone, in this process
        backends = (("forward", "fp32"), ("backward", "fp32"), ("update", "fp32"))
        if run.config == "ex":
            backends = (("forward", "exact"), ("backward", "exact"), ("update", "fp32"))
        config = TrainConfig(model="mlp", epochs=1, max_steps_per_epoch=2, batch_size=32,
                             seed=run.grid["seed"], backends=backends)
        final = Trainer(config, tmp_path / "alone" / run.name, progress=False).run()[-1]
        assert history(run.folder) == history(tmp_path / "alone" / run.name), run.name
        doc = json.loads((run.folder / "result.json").read_text())
        assert doc["status"] == "ok" and doc["result"]["test_acc"] == final["test_acc"]
        assert doc["params"] == json.loads(config.to_json())
    table = read_table("sweep")
    assert [r["name"] for r in table["runs"]] == [r.name for r in plan.runs]
    csv_lines = (tmp_path / "sweep" / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,config,label,seed,status,epoch,train_loss")
    assert len(csv_lines) == 5 and all(",ok," in line for line in csv_lines[1:])


def test_cli_sweep_resumes_and_reports_a_failed_run(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = {**SPEC, "configs": {**SPEC["configs"],      # cifar10 without its files: fails
                                "bad": {"dataset": "cifar10", "data_folder": "nowhere"}}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    addr = client.scheduler.address
    r = CliRunner().invoke(main, ["sweep", "s.json", "--scheduler", addr, "--quiet"])
    assert r.exit_code == EXIT_MISMATCH, r.output
    assert "4/6 runs ok (0 complete before)" in r.stdout
    assert "failed bad-seed0:" in r.stdout and "2 of 6 runs failed" in r.stderr
    rows = read_table("runs/s")["runs"]
    assert [d["status"] for d in rows] == ["ok"] * 4 + ["failed"] * 2
    assert "nowhere" in rows[4]["error"]
    stamp = (tmp_path / "runs/s/fp-seed0/result.json").stat().st_mtime_ns
    r = CliRunner().invoke(main, ["sweep", "s.json", "--sequential", "--quiet"])
    assert r.exit_code == EXIT_MISMATCH and "4/6 runs ok (4 complete before)" in r.stdout
    assert (tmp_path / "runs/s/fp-seed0/result.json").stat().st_mtime_ns == stamp
    r = CliRunner().invoke(main, ["sweep", "s.json", "--dry-run"])
    assert r.exit_code == 0 and r.stdout.count("complete") == 4 and r.stdout.count("pending") == 2
    r = CliRunner().invoke(main, ["sweep", "s.json", "--set", "epochz=2"])
    assert r.exit_code == EXIT_USAGE and "epochz" in r.stderr


def test_a_killed_worker_is_retried_or_reported(client, tmp_path):
    register_command(Command("crash", _crash_normalize, _crash_run))
    try:        # two sweeps: a run rescheduled beside a dying one could die with it
        retried = run_sweep(plan_sweep({"command": "crash", "configs": [
            {"name": "ok", "mode": "never"},
            {"name": "once", "mode": "once", "marker": str(tmp_path / "once")}]},
            out=tmp_path / "o"), client=client)
        reported = run_sweep(plan_sweep({"command": "crash", "configs": [
            {"name": "always", "mode": "always", "marker": str(tmp_path / "always")}]},
            out=tmp_path / "o"), client=client)
    finally:
        COMMANDS.pop("crash")
    assert [(d["name"], d["status"], d["result"]) for d in retried.records] == [
        ("ok", "ok", {"value": 1}), ("once", "ok", {"value": 1})]
    (doc,) = reported.records
    assert doc["status"] == "failed" and doc["error"].startswith("KilledWorker")
    assert json.loads((tmp_path / "o" / "always" / "result.json").read_text()) == doc


def test_energy_and_mvm_runs_equal_the_library_alone(tmp_path):
    import numpy as np

    from imcsim import Macro, MacroConfig, load_preset
    from imcsim.energy import energy_report
    from imcsim.formats import parse_format
    from imcsim.operands import random_operands
    energy = plan_sweep({"command": "energy", "base": {"batch": 8},
                         "grid": {"imc": ["forward", "all"], "gradient_density": [0.1]}},
                        out=tmp_path / "e")
    result = run_sweep(energy)
    assert [r["name"] for r in result.records] == ["imcforward-gradient_density0.1",
                                                   "imcall-gradient_density0.1"]
    for doc, imc in zip(result.records, ("forward", "all")):
        alone = energy_report("vgg-lite", 8, imc=imc, gradient_density=0.1).to_dict()
        assert doc["result"]["ratio"] == alone["comparison"]["ratio"]
        assert doc["result"]["energy_j"] == alone["totals"]["energy_j"]
    mvm = plan_sweep({"command": "mvm", "base": {"preset": "paper-nonideal", "shape": [3, 300, 4],
                                                 "x_format": "radix4:8", "density": 0.2},
                      "grid": {"chip_seed": [5]}}, out=tmp_path / "m")
    (doc,) = run_sweep(mvm).records
    xf, wf = parse_format("radix4:8"), parse_format("binary:5")
    X, W = random_operands(np.random.default_rng(0), xf, wf, 3, 300, 4, 0.2)
    config = MacroConfig.from_dict({**load_preset("paper-nonideal").to_dict(), "chip_seed": 5})
    y = Macro(config).mvm(X, W, xf, wf, seed=0).y
    assert np.array_equal(np.load(tmp_path / "m" / "chip_seed5" / "y.npy"), y)
    assert doc["status"] == "ok" and doc["result"]["outputs"] == 12


def test_without_dask_the_sweep_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.json").write_text(json.dumps(SPEC))
    monkeypatch.setitem(sys.modules, "distributed", None)
    r = CliRunner().invoke(main, ["sweep", "s.json"])
    assert r.exit_code == EXIT_USAGE
    assert r.stderr.splitlines() == ["Error: imcsim sweep needs distributed: "
                                     "pip install 'imcsim[dask]'"]
    assert not (tmp_path / "runs").exists()


def test_energy_sweep_charges_the_first_layer_backward_only_when_asked(tmp_path):
    from imcsim.sweep import COMMANDS
    energy = COMMANDS["energy"]
    default = energy.run(energy.normalize({}), tmp_path)
    charged = energy.run(energy.normalize({"first_layer_backward": True}), tmp_path)
    assert charged["energy_j"] > default["energy_j"]
    with pytest.raises(ValueError, match="first_layer_backward"):
        energy.normalize({"first_layer_backward": "yes"})


def test_local_processes_equal_the_sequential_sweep_and_refuse_mixed_modes(tmp_path,
                                                                          monkeypatch):
    """--processes runs the plan in spawned local processes (no Dask): the same runs, the same
    histories and result records as the sequential sweep; a failed run is a record."""
    monkeypatch.chdir(tmp_path)
    spec = {**SPEC, "configs": {**SPEC["configs"],      # cifar10 without its files: fails
                                "bad": {"dataset": "cifar10", "data_folder": "nowhere"}}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    r = CliRunner().invoke(main, ["sweep", "s.json", "--processes", "2", "--quiet",
                                  "--out", "pool"])
    assert r.exit_code == EXIT_MISMATCH, r.output
    assert "4/6 runs ok" in r.output and "failed bad-seed0" in r.output
    sequential = run_sweep(plan_sweep(SPEC, out="seq"))
    for doc in sequential.records:
        pooled = json.loads((tmp_path / "pool" / doc["name"] / "result.json").read_text())
        assert pooled["status"] == "ok", doc["name"]
        assert {k: v for k, v in pooled["result"].items() if "seconds" not in k} == \
               {k: v for k, v in doc["result"].items() if "seconds" not in k}, doc["name"]
        assert history(tmp_path / "pool" / doc["name"]) == history(tmp_path / "seq" / doc["name"])
    for args in (["--processes", "2", "--sequential"], ["--processes", "2", "--workers", "2"]):
        r = CliRunner().invoke(main, ["sweep", "s.json", *args])
        assert r.exit_code == EXIT_USAGE and "--processes" in r.output, r.output
