"""CLI: the demo runs, files round-trip, bad input exits 2 with one line and no output."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from imcsim.cli import main
from imcsim.verify.trace import TraceFile


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    return invoke


def test_demo_without_files_runs_and_writes_a_trace(run, tmp_path):
    r = run("mvm", "--trace", "demo.h5", "--trace-vectors", "0:1", "-o", "y.npy")
    assert r.exit_code == 0, r.output
    assert "Y = X @ W" in r.output and "wrote trace" in r.output
    assert np.load(tmp_path / "y.npy").shape == (8, 12)
    with TraceFile(tmp_path / "demo.h5") as tf:
        assert tf.n_cycles == 6
    r = run("trace", "show", "demo.h5", "--cycle", "2")
    assert r.exit_code == 0 and "SAR" in r.output and "full scale F" in r.output
    r = run("trace", "export", "demo.h5", "--vcd", "demo.vcd")
    assert r.exit_code == 0 and (tmp_path / "demo.vcd").read_text().startswith("$comment")


def test_mvm_from_files_is_exact_when_lossless(run, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(-16, 17, (4, 200))
    W = rng.integers(-8, 9, (200, 7))
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "w.npy", W)
    r = run("mvm", "--x", "x.npy", "--w", "w.npy", "--vref", "variable", "-o", "y.npy",
            "--codes", "c.npy")
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(tmp_path / "y.npy"), X @ W)
    assert np.load(tmp_path / "c.npy").shape == (1, 4, 6, 7, 5)
    r = run("mvm", "--x", "x.npy", "--w", "w.npy", "--vref", "fixed", "--full-scale", "2304",
            "--comparator-noise", "0.5", "-o", "y2.npy")
    assert r.exit_code == 0
    assert not np.array_equal(np.load(tmp_path / "y2.npy"), X @ W)


@pytest.mark.parametrize("args,match", [
    (("mvm", "--full-scale", "100", "--vref", "fixed"), "full scale must lie in [255, 2304]"),
    (("mvm", "--x", "x.npy", "--w", "w.npy"), "inner dimensions differ"),
    (("mvm", "--x", "bad.npy", "--w", "w.npy"), "cannot read"),
    (("mvm", "--x", "big.npy", "--w", "w.npy"), "[-16, 16]"),
    (("mvm", "--x-format", "radix4:7"), "even K"),
    (("mvm", "--x-format", "ternary:3"), "binary:K"),
    (("mvm", "-o", "missing/y.npy"), "does not exist"),
    (("mvm", "--x", "x.npy"), "both files"),
    (("mvm", "--comparator-noise", "-1"), "comparator_noise_sigma"),
    (("trace", "show", "nothere.h5"), "no such trace"),
])
def test_bad_input_exits_2_with_one_line_and_no_output(run, tmp_path, args, match):
    np.save(tmp_path / "x.npy", np.zeros((2, 5), dtype=np.int64))
    np.save(tmp_path / "w.npy", np.zeros((6, 3), dtype=np.int64))
    np.save(tmp_path / "big.npy", np.full((2, 6), 40))
    (tmp_path / "bad.npy").write_text("not numpy")
    before = set(p.name for p in tmp_path.iterdir())
    r = run(*args, "-o", "out.npy") if args[0] == "mvm" and "-o" not in args else run(*args)
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    assert match in lines[0]
    assert set(p.name for p in tmp_path.iterdir()) == before


def test_adc_command_writes_json_and_png(run, tmp_path):
    r = run("adc", "--cdac-mismatch", "0.03", "--steps-per-lsb", "8", "--plot", "adc.png", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["max_abs_dnl_lsb"] > 0.1
    assert (tmp_path / "adc.png").read_bytes()[:4] == b"\x89PNG"


def test_config_command_prints_the_effective_config(run):
    r = run("config", "--vref", "dual", "--dual-high", "1152")
    cfg = json.loads(r.output)
    assert cfg["vref"]["mode"] == "dual" and cfg["vref"]["dual_high"] == 1152
