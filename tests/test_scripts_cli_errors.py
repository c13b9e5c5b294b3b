"""Bad input at the scripts' and the benchmark's boundary, and ``imcsim --debug``'s exit status
(issues 23 and 24).

- scripts/multilevel_results.py and scripts/training_results.py without (all) their sweep
  results: one line naming the missing results, exit 2, their outputs as they were; their
  page defaults are the repository's files, whatever the current folder;
- benchmarks/bench_layers.py with a device it cannot use: one line naming the device and
  why, exit 2, before anything is timed; its GPU reference kernel's launch grid stays inside
  CUDA's limits for every VGG-lite layer at batch 128, and its counts equal the CPU's (Numba's
  CUDA simulator, set up in conftest.py);
- ``imcsim --debug``: the traceback, and the same exit status as without the flag.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from imcsim.cli import main as cli
from imcsim.cli.common import EXIT_INTERNAL, EXIT_USAGE
from imcsim.sweep.spec import SWEEP_FORMAT, SWEEP_VERSION

ROOT = Path(__file__).resolve().parents[1]


def load(relpath: str):
    """A script of the repository as a module (scripts/ and benchmarks/ are no packages)."""
    name = Path(relpath).stem
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def multilevel():
    return load("scripts/multilevel_results.py")


@pytest.fixture(scope="module")
def training():
    return load("scripts/training_results.py")


@pytest.fixture(scope="module")
def bench():
    return load("benchmarks/bench_layers.py")


def err_lines(text: str) -> list:
    return [ln for ln in text.splitlines() if ln.strip()]


def write_table(out: Path, runs: list) -> None:
    """A sweep table as imcsim sweep writes it (the fields the scripts read)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"format": SWEEP_FORMAT, "version": SWEEP_VERSION, "runs": runs}))


def run_record(config: str, seed: int, status: str = "ok") -> dict:
    return {"name": f"{config}-seed={seed}", "config": config, "label": config,
            "grid": {"seed": seed}, "status": status,
            "params": {"epochs": 8, "batch_size": 64, "momentum": 0.9, "lr": 0.05,
                       "schedule": "cosine", "weight_decay": 0.0005},
            "result": {"test_acc": 0.9, "train_seconds": 1.0} if status == "ok" else None,
            "error": None if status == "ok" else "RuntimeError: boom"}


# --- scripts/multilevel_results.py ----------------------------------------------------------
@pytest.fixture
def page(tmp_path, monkeypatch):
    """A copy of docs/training.md's block (the page the script rewrites) in an empty current
    folder; returns (doc, plot) paths."""
    monkeypatch.chdir(tmp_path)
    doc = tmp_path / "training.md"
    doc.write_text((ROOT / "docs" / "training.md").read_text())
    return doc, tmp_path / "acc.png"


def test_multilevel_without_results_refuses_in_one_line(multilevel, page, capsys):
    doc, plot = page
    before = doc.read_bytes()
    assert multilevel.main(["--doc", str(doc), "--plot", str(plot)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err_lines(err)) == 1 and err.startswith("Error: "), err
    for folder in ("runs/multilevel/", "runs/multilevel-dac/", "runs/multilevel-fwd/",
                   "runs/multilevel-halfup/"):
        assert f"{folder}results.json missing" in err, err
    for config in multilevel.CONFIG_ORDER:
        assert config in err
    assert "not run" not in doc.read_text() and doc.read_bytes() == before
    assert not plot.exists() and sorted(p.name for p in doc.parent.iterdir()) == ["training.md"]


def test_multilevel_names_only_the_missing_sweeps(multilevel, page, capsys):
    doc, plot = page
    before = doc.read_bytes()
    main_configs = ("onehot-ideal", "multi-ideal", "onehot-nonideal", "multi-nonideal")
    write_table(Path("runs/multilevel"), [run_record(c, 0) for c in main_configs])
    # the forward sweep's table exists, with one config failed before it finished nothing
    write_table(Path("runs/multilevel-fwd"), [run_record("onehot-nonideal-fwd", 0)])
    assert multilevel.main(["--doc", str(doc), "--plot", str(plot)]) == 2
    err = capsys.readouterr().err
    assert len(err_lines(err)) == 1, err
    assert "runs/multilevel/" not in err and not any(f"{c} " in err or f"{c}," in err
                                                     for c in main_configs)
    assert "multi-nonideal-fwd (not finished in runs/multilevel-fwd/results.json" in err, err
    assert "onehot-nonideal-fwd" not in err
    assert "run imcsim sweep scripts/multilevel_forward.sweep.json" in err
    assert "runs/multilevel-dac/results.json missing" in err
    assert doc.read_bytes() == before and not plot.exists()


def test_multilevel_unusable_doc_and_defaults(multilevel, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    doc = tmp_path / "page.md"
    doc.write_text("# no block here\n")
    assert multilevel.main(["--doc", str(doc)]) == 2
    err = capsys.readouterr().err
    assert len(err_lines(err)) == 1 and "--doc" in err and "page.md" in err
    assert doc.read_text() == "# no block here\n"
    args = multilevel.parser().parse_args([])
    assert Path(args.doc) == ROOT / "docs" / "training.md"
    assert Path(args.plot) == ROOT / "docs" / "multilevel-accuracy.png"
    assert args.out == "runs/multilevel"        # where imcsim sweep wrote it: the current folder


def test_multilevel_script_exits_2_as_a_program(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "multilevel_results.py"),
                           "--doc", str(tmp_path / "none.md")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(err_lines(proc.stderr)) == 1 and "none.md" in proc.stderr


# --- scripts/training_results.py ------------------------------------------------------------
def test_training_results_without_a_sweep_refuses_in_one_line(training, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.chdir(tmp_path)
    doc = tmp_path / "results.md"
    doc.write_text("kept\n")
    assert training.main(["--doc", str(doc)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err_lines(err)) == 1 and err.startswith("Error: --out: "), err
    assert "runs/results/results.json missing" in err
    assert "imcsim sweep scripts/digits_results.sweep.json" in err
    # a table whose runs all failed: no page of "failed" rows either
    write_table(tmp_path / "runs" / "results", [run_record("a", 0, "failed")])
    assert training.main(["--doc", str(doc)]) == 2
    err = capsys.readouterr().err
    assert len(err_lines(err)) == 1 and "no finished run" in err, err
    # an unreadable table names its file
    (tmp_path / "runs" / "results" / "results.json").write_text("{not json")
    assert training.main(["--doc", str(doc)]) == 2
    err = capsys.readouterr().err
    assert len(err_lines(err)) == 1 and "results.json" in err, err
    assert doc.read_text() == "kept\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "results.md", "runs"]
    assert Path(training.parser().parse_args([]).doc) == ROOT / "docs" / "results.md"


def test_training_results_script_exits_2_as_a_program(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "training_results.py"),
                           "--doc", str(tmp_path / "r.md")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(err_lines(proc.stderr)) == 1 and not (tmp_path / "r.md").exists()


# --- benchmarks/bench_layers.py -------------------------------------------------------------
BENCH_ARGS = ["--layers", "L8", "--kinds", "forward", "--batch", "1", "--repeat", "1"]


def test_bench_without_a_gpu_refuses_before_timing(bench, monkeypatch, capsys, tmp_path):
    from numba import cuda
    monkeypatch.setattr(cuda, "is_available", lambda: False)      # no GPU here
    json_out = tmp_path / "rows.json"
    assert bench.main(["--device", "cpu,cuda", "--json", str(json_out), *BENCH_ARGS]) == 2
    out, err = capsys.readouterr()
    assert out == "", out                       # nothing timed, not even the header
    assert err_lines(err) == [err.strip()] and "cuda" in err and "no CUDA GPU found" in err
    assert not json_out.exists()


def test_bench_without_numba_cuda_refuses(bench, monkeypatch, capsys):
    import numba
    monkeypatch.delattr(numba, "cuda", raising=False)
    monkeypatch.setitem(sys.modules, "numba.cuda", None)         # numba-cuda not importable
    assert bench.main(["--device", "cuda", *BENCH_ARGS]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err_lines(err)) == 1
    assert "cuda" in err and "failed to import" in err, err


def test_bench_resident_without_cupy_refuses(bench, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)               # CuPy not installed
    assert bench.main(["--device", "cuda", "--resident", *BENCH_ARGS]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err_lines(err)) == 1
    assert "--device cuda" in err and "CuPy" in err, err


@pytest.mark.parametrize("args, name", [
    (["--layers", "L2,L10"], "--layers"), (["--kinds", "sideways"], "--kinds"),
    (["--device", "tpu"], "--device"), (["--threads", "1,x"], "--threads"),
    (["--batch", "0"], "--batch"), (["--json", "/nonexistent-folder/rows.json"], "--json")])
def test_bench_bad_arguments_exit_2(bench, capsys, args, name):
    assert bench.main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err_lines(err)) == 1 and name in err, err


def test_bench_gpu_grid_inside_cuda_limits_for_every_vgg_layer(bench):
    from imcsim import MacroConfig
    from imcsim.workloads import vgg_lite_layers
    config = MacroConfig()
    for layer in vgg_lite_layers():
        for kind in bench.KINDS:
            (vectors, _), _, _, _ = bench.mvm_shape(layer, kind, 128)
            gx, gy = bench.bare_launch(layer, kind, 128, config)
            assert 1 <= gx <= 2 ** 31 - 1 and 1 <= gy <= 65535, (layer.name, kind, gx, gy)
            # every vector is counted: the grid's threads on y, striding, cover them
            assert gy == min(vectors, 65535)
    # L2 at batch 128 is the launch that failed on the H100 (131072 blocks on y)
    l2 = next(layer for layer in vgg_lite_layers() if layer.name == "L2")
    assert bench.mvm_shape(l2, "forward", 128)[0][0] == 131072
    assert bench.bare_launch(l2, "forward", 128, config) == (2, 65535)


@pytest.mark.filterwarnings("ignore::numba.NumbaPerformanceWarning")
def test_bench_gpu_counts_equal_the_cpu_counts(bench):
    from numba import cuda, njit
    rng = np.random.default_rng(3)
    B, P, W, C = 5, 2, 3, 7
    xbits = rng.integers(0, 2 ** 63, (B, P, W), dtype=np.uint64) * np.uint64(2) + \
        rng.integers(0, 2, (B, P, W), dtype=np.uint64)
    wbits = rng.integers(0, 2 ** 63, (C, W), dtype=np.uint64) * np.uint64(3)
    expected = np.empty((B, P, C), dtype=np.int64)
    # the CPU bare count, compiled here without its on-disk cache: Numba's cache cannot
    # reload a function of a module loaded from a file path (it records no importable name)
    njit(bench.bare_counts_cpu.py_func)(xbits, wbits, expected)
    kernel = bench.gpu_count_kernel()
    xb, wt = cuda.to_device(xbits), cuda.to_device(np.ascontiguousarray(wbits.T))
    for max_y in (65535, 2):                    # one block row per vector, and a grid stride
        counts = cuda.to_device(np.full((B, P, C), -1, dtype=np.int64))
        grid = bench.bare_grid(B, C, max_y=max_y)
        assert grid == (1, min(B, max_y))
        kernel[grid, (bench.BARE_THREADS, 1)](xb, wt, counts)
        assert np.array_equal(counts.copy_to_host(), expected), max_y


# --- imcsim --debug: the same exit status, with the traceback --------------------------------
def test_debug_usage_error_exits_2_with_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMCSIM_DEBUG", raising=False)
    np.save(tmp_path / "w.npy", np.zeros((5, 3), dtype=np.int64))
    r = CliRunner().invoke(cli, ["--debug", "mvm", "--x", "missing.npy", "--w", "w.npy"])
    assert r.exit_code == EXIT_USAGE, (r.output, r.exception)
    assert "Traceback (most recent call last)" in r.stderr and "ValueError" in r.stderr
    assert err_lines(r.stderr)[-1] == "Error: --x: no such file missing.npy"
    r = CliRunner().invoke(cli, ["mvm", "--x", "missing.npy", "--w", "w.npy"])
    assert r.exit_code == EXIT_USAGE and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npy"]


def test_debug_internal_error_exits_3_with_the_traceback(monkeypatch):
    import importlib
    cli_main = importlib.import_module("imcsim.cli.main")
    monkeypatch.delenv("IMCSIM_DEBUG", raising=False)

    def boom(kw):
        raise RuntimeError("boom")
    monkeypatch.setattr(cli_main, "macro_config_from_options", boom)
    r = CliRunner().invoke(cli, ["--debug", "config"])
    assert r.exit_code == EXIT_INTERNAL
    assert "Traceback (most recent call last)" in r.stderr and "RuntimeError: boom" in r.stderr


def test_debug_program_exits_2(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros((5, 3), dtype=np.int64))
    env = {k: v for k, v in os.environ.items() if k != "IMCSIM_DEBUG"}
    for debug in (["--debug"], []):
        proc = subprocess.run([sys.executable, "-m", "imcsim", *debug, "mvm", "--x",
                               "missing.npy", "--w", "w.npy"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == EXIT_USAGE, (debug, proc.stderr)
        assert ("Traceback" in proc.stderr) == bool(debug)
        assert err_lines(proc.stderr)[-1] == "Error: --x: no such file missing.npy"


def test_noise_budget_results_page_from_ladders_and_its_bad_input(tmp_path, capsys):
    """scripts/noise_budget_results.py: a ladder folder named <model>-<mapping>-<placement>
    becomes a table row with its budgets; missing folders are one line and exit 2."""
    nb = load("scripts/noise_budget_results.py")
    ladders, snr = tmp_path / "ladders", tmp_path / "snr"
    snr.mkdir()
    folder = ladders / "mlp-one-hot-calibrated"
    folder.mkdir(parents=True)
    points = [{"scale": s, "mean": a, "sd": None, "n": 1, "accuracies": [a]}
              for s, a in ((0.0, 95.0), (1.0, 90.0), (4.0, 40.0))]
    budget = {"fp32": {"mean": 96.0, "sd": None, "n": 1, "accuracies": [96.0]},
              "ladders": {"all": {"points": points, "budgets": {"2": 0.0, "10": 1.0}}},
              "missing": [], "tolerances": [2.0, 10.0]}
    spec = {"base": {"model": "mlp", "dataset": "digits", "imc": "all",
                     "preset": "paper-nonideal", "epochs": 1, "batch": 32, "lr": 0.05},
            "grid": {"seed": [0]}}
    (folder / "budget.json").write_text(json.dumps({"spec": spec, "budget": budget}))
    out = tmp_path / "page.md"
    assert nb.main(["--ladders", str(ladders), "--snr", str(snr), "--out", str(out)]) == 0
    page = out.read_text()
    assert "| one-hot | calibrated chip" in page and "| x 0 | x 1 |" in page
    assert nb.ladder_name(ladders / "vgg-lite-multi-level-half_up-skip") == (
        "vgg-lite", "multi-level", "half_up", True, False)
    assert nb.ladder_name(ladders / "small-cnn-one-hot-half_up-aware") == (
        "small-cnn", "one-hot", "half_up", False, True)
    capsys.readouterr()
    assert nb.main(["--ladders", str(tmp_path / "none"), "--snr", str(snr),
                    "--out", str(out)]) == 2
    assert len(err_lines(capsys.readouterr().err)) == 1 and out.read_text() == page


def test_mvm_snr_refuses_bad_options_in_one_line(capsys):
    ml = load("scripts/mvm_snr.py")
    for argv in (["--scales", "x"], ["--scaled", "colour"], ["--vectors", "1"],
                 ["--placements", "round"], ["--mappings", ""]):
        assert ml.main(argv) == 2
        assert len(err_lines(capsys.readouterr().err)) == 1


def test_time_vgg_step_refuses_bad_options_in_one_line(capsys):
    """scripts/time_vgg_step.py: a bad count, or a device this machine cannot use, is one
    line and exit 2 (it exited 1 with SystemExit before)."""
    tv = load("scripts/time_vgg_step.py")
    for argv in (["--batch", "0"], ["--steps", "0"], ["--warmup", "-1"], ["--device", "cuda"],
                 ["--preset", "paper-ideal"]):
        if argv[0] == "--device" and importlib.util.find_spec("cupy") is not None:
            continue                       # a machine with CuPy may well have a GPU
        assert tv.main(argv) == 2
        assert len(err_lines(capsys.readouterr().err)) == 1
