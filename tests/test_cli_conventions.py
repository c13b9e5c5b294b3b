"""The one CLI convention (imcsim.cli.common): exit statuses, one-line errors, --debug, and
all-or-nothing outputs that never overwrite an input."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from imcsim.cli import main
from imcsim.cli.common import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_USAGE,
    MismatchFound,
    as_cli_error,
    cli_errors,
)

cli_main = importlib.import_module("imcsim.cli.main")   # the module (imcsim.cli.main is the group)


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMCSIM_DEBUG", raising=False)

    def invoke(*args, catch=True):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=catch)
    return invoke


def stderr_lines(result) -> list:
    return [ln for ln in result.stderr.splitlines() if ln.strip()]


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# --- every command: bad input -> exit 2, one stderr line naming the argument or file ------
BAD_INPUT = [
    (("mvm", "--x", "missing.npy", "--w", "w.npy"), "missing.npy"),
    (("mvm", "--x", "x.npy"), "--w"),
    (("trace", "show", "nothere.h5"), "nothere.h5"),
    (("trace", "export", "nothere.h5", "--vcd", "out.vcd"), "nothere.h5"),
    (("adc", "--preset", "nothere.json"), "nothere.json"),
    (("config", "--preset", "nothere"), "preset"),
    (("config", "--comparator-noise", "-1"), "comparator_noise_sigma"),
    (("vectors", "vec", "--w", "missing.npy"), "missing.npy"),
    (("check", "missing_expected", "missing_actual.h5"), "missing_expected"),
    (("energy", "--imc", "sideways"), "sideways"),
    (("train", "--vref", "nokind"), "nokind"),
]


@pytest.mark.parametrize("args, names", BAD_INPUT, ids=[" ".join(a[:2]) for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_naming_it(run, tmp_path, args, names):
    np.save(tmp_path / "x.npy", np.zeros((2, 5), dtype=np.int64))
    np.save(tmp_path / "w.npy", np.zeros((5, 3), dtype=np.int64))
    before = snapshot(tmp_path)
    r = run(*args)
    assert r.exit_code == EXIT_USAGE, (r.output, r.exception)
    lines = stderr_lines(r)
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert names in lines[0], lines[0]
    assert "Traceback" not in r.output
    assert snapshot(tmp_path) == before and not (tmp_path / "vec").exists()


def test_debug_shows_the_traceback(run, tmp_path):
    r = run("--debug", "config", "--preset", "nothere")
    assert r.exit_code == EXIT_USAGE                    # --debug adds the traceback only
    assert "Traceback (most recent call last)" in r.stderr and "ValueError" in r.stderr
    proc = subprocess.run([sys.executable, "-c", "from imcsim.cli import main; main()",
                           "--debug", "config", "--preset", "nothere"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "IMCSIM_DEBUG"})
    assert proc.returncode == EXIT_USAGE
    assert "Traceback (most recent call last)" in proc.stderr and "ValueError" in proc.stderr
    proc = subprocess.run([sys.executable, "-c", "from imcsim.cli import main; main()",
                           "config", "--preset", "nothere"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "IMCSIM_DEBUG"})
    assert proc.returncode == EXIT_USAGE and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_closed_stdout_pipe_ends_silently_with_141(tmp_path):
    """`imcsim ... | head` : the reader leaves before the output ends.  The read end is closed
    before the command starts and stdout is unbuffered, so its first write fails."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if k != "IMCSIM_DEBUG"}
    env["PYTHONUNBUFFERED"] = "1"
    try:
        proc = subprocess.run([sys.executable, "-m", "imcsim", "config"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=120,
                              env=env)
    finally:
        os.close(write_end)
    assert proc.returncode == EXIT_BROKEN_PIPE, proc.stderr
    assert proc.stderr == ""                            # no "Error: [Errno 32] Broken pipe"


def test_broken_pipe_elsewhere_stays_an_error(capsys):
    """A BrokenPipeError while stdout is fine (a socket's, say) is not the reader leaving."""
    with capsys.disabled():                             # stdout: the terminal or pytest's file
        error = as_cli_error(BrokenPipeError(32, "Broken pipe"))
    assert error.exit_code == EXIT_USAGE and "Broken pipe" in error.message


def test_internal_error_exits_3_and_interrupt_130(run, monkeypatch):
    def boom(kw):
        raise RuntimeError("boom\nsecond line")
    monkeypatch.setattr(cli_main, "macro_config_from_options", boom)
    r = run("config")
    assert r.exit_code == EXIT_INTERNAL
    assert stderr_lines(r) == ["internal error: RuntimeError: boom (rerun with --debug for the "
                               "traceback)"]
    r = run("--debug", "config")
    assert r.exit_code == EXIT_INTERNAL and "RuntimeError: boom" in r.stderr

    def interrupt(kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli_main, "macro_config_from_options", interrupt)
    r = run("config")
    assert r.exit_code == EXIT_INTERRUPTED and stderr_lines(r) == ["interrupted"]


def test_mismatch_found_exits_1_and_click_usage_errors_exit_2():
    import click

    @click.command()
    @click.option("--n", type=int, default=0)
    @cli_errors
    def cmd(n):
        if n == 1:
            raise MismatchFound()
        if n == 2:
            raise click.BadParameter("must be small", param_hint="'--n'")
        click.echo("ok")

    runner = CliRunner()
    assert runner.invoke(cmd, []).exit_code == 0
    r = runner.invoke(cmd, ["--n", "1"])
    assert r.exit_code == EXIT_MISMATCH and r.stderr == ""
    r = runner.invoke(cmd, ["--n", "2"])
    assert r.exit_code == EXIT_USAGE
    assert stderr_lines(r) == ["Error: Invalid value for '--n': must be small"]


def test_main_help_documents_the_exit_codes(run):
    r = run("--help")
    assert r.exit_code == 0
    for text in ("0 success", "1 a check found mismatches", "2 bad input or usage",
                 "3 internal error", "--debug"):
        assert text in r.output, r.output


# --- outputs: never over an input, never two names for one file, all-or-nothing ---------
def test_output_equal_to_an_input_is_refused_and_the_input_untouched(run, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 5), dtype=np.int64))
    np.save(tmp_path / "w.npy", np.ones((5, 3), dtype=np.int64))
    before = snapshot(tmp_path)
    for args in (("mvm", "--x", "x.npy", "--w", "w.npy", "-o", "x.npy"),
                 ("mvm", "--x", "x.npy", "--w", "w.npy", "--codes", str(tmp_path / "w.npy")),
                 ("mvm", "--x", "./x.npy", "--w", "w.npy", "--trace", "../" + tmp_path.name
                  + "/x.npy")):
        r = run(*args)
        assert r.exit_code == EXIT_USAGE, r.output
        lines = stderr_lines(r)
        assert len(lines) == 1 and "would overwrite the input" in lines[0], r.stderr
    assert snapshot(tmp_path) == before


def test_trace_export_and_check_refuse_to_overwrite_their_inputs(run, tmp_path):
    (tmp_path / "t.h5").write_bytes(b"not a trace")
    (tmp_path / "actual.csv").write_text("cycle,code\n")
    before = snapshot(tmp_path)
    r = run("trace", "export", "t.h5", "--vcd", "t.h5")
    assert r.exit_code == EXIT_USAGE
    r = run("check", "t.h5", "actual.csv", "--json", "actual.csv")
    assert r.exit_code == EXIT_USAGE and "would overwrite the input" in r.stderr, r.stderr
    assert snapshot(tmp_path) == before


def test_two_names_for_one_output_file_are_refused(run, tmp_path):
    r = run("mvm", "--random-shape", "2", "16", "3", "-o", tmp_path / "a.npy",
            "--trace", "./a.npy")
    assert r.exit_code == EXIT_USAGE
    lines = stderr_lines(r)
    assert len(lines) == 1 and "same file" in lines[0] and "--trace" in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_failed_second_output_leaves_the_first_unchanged(run, tmp_path, monkeypatch):
    (tmp_path / "y.npy").write_bytes(b"previous Y")
    real = cli_main.save_npy

    def failing(path, array):
        if "c.npy" in Path(path).name:
            raise OSError(f"No space left on device: {path}")
        real(path, array)
    monkeypatch.setattr(cli_main, "save_npy", failing)
    r = run("mvm", "--random-shape", "2", "16", "3", "-o", "y.npy", "--codes", "c.npy")
    assert r.exit_code == EXIT_USAGE, r.output
    assert len(stderr_lines(r)) == 1
    assert (tmp_path / "y.npy").read_bytes() == b"previous Y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.npy"]       # no partial files


def test_missing_matplotlib_is_one_line_exit_2(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    r = run("adc", "--steps-per-lsb", "2", "--plot", "adc.png")
    assert r.exit_code == EXIT_USAGE
    assert stderr_lines(r) == ["Error: --plot needs matplotlib: pip install 'imcsim[plot]'"]
    assert not (tmp_path / "adc.png").exists()


def test_require_names_the_extra():
    from imcsim.plotting import MissingDependency, require
    assert require("json", "plot").dumps([1]) == "[1]"
    with pytest.raises(MissingDependency, match=r"--x needs no_such_mod: pip install "
                                                r"'imcsim\[train\]'"):
        require("no_such_mod.sub", "train", "--x")


def test_vectors_folder_is_written_all_or_nothing(run, tmp_path, monkeypatch):
    import imcsim.verify.vectors as vectors
    small = ("--rows", "32", "--columns", "8", "--adc-bits", "4", "--shape", "32", "2",
             "--random", "2", "--w-format", "binary:4")
    r = run("vectors", "vec", *small)
    assert r.exit_code == 0, r.output
    before = snapshot(tmp_path / "vec")
    assert "manifest.json" in before and "vectors.h5" in before

    def fail(*a, **k):
        raise OSError("No space left on device")
    monkeypatch.setattr(vectors, "_write_h5", fail)
    r = run("vectors", "vec", *small, "--seed", "1", "--force")
    assert r.exit_code == EXIT_USAGE and len(stderr_lines(r)) == 1, r.output
    assert snapshot(tmp_path / "vec") == before                # every old file unchanged
    r = run("vectors", "new", *small)
    assert r.exit_code == EXIT_USAGE and not (tmp_path / "new").exists()
