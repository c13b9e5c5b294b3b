"""Issue 23, I/O and file safety: one guarded HDF5 writer, temporaries of killed runs, SIGINT at
the end of a command, unreadable checkpoints, schema versions, and I/O errors that name their
file.  Each test fails without its fix."""
import errno
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import imcsim
import imcsim.atomic as atomic
from imcsim import BinaryFormat, Macro, MacroConfig, VrefConfig, VrefMode
from imcsim.cli import main
from imcsim.cli.common import EXIT_INTERRUPTED, EXIT_USAGE
from imcsim.verify import vectors as vectors_mod
from imcsim.verify.trace import TraceFile

SMALL = ("--rows", "32", "--columns", "9", "--adc-bits", "4")
VEC = ("--shape", "40", "3", "--random", "2")
ENV = dict(os.environ, NUMBA_NUM_THREADS="1")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line(result, code, *names):
    """Exit ``code``, one stderr line naming every one of ``names``, no traceback."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == code, (result.output, result.exception)
    assert len(lines) == 1, result.stderr
    for name in names:
        assert str(name) in lines[0], lines[0]
    assert "Traceback" not in result.output and "Exception ignored" not in result.output
    return lines[0]


def partials(folder) -> list:
    return sorted(str(p) for p in Path(folder).rglob("*.partial"))


def _disk_full_after(monkeypatch, n_files: int):
    """Every HDF5 file from the ``n_files``-th on fails to write (No space left on device)."""
    real_init, real_write = atomic.GuardedFile.__init__, atomic.GuardedFile._raw_write
    opened = []

    def init(self, path):
        real_init(self, path)
        opened.append(path)
        self.doomed = len(opened) >= n_files

    def write(self, data):
        if self.doomed:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, data)
    monkeypatch.setattr(atomic.GuardedFile, "__init__", init)
    monkeypatch.setattr(atomic.GuardedFile, "_raw_write", write)
    return opened


# --- 1. one guarded HDF5 writer ----------------------------------------------------------------
def test_vectors_h5_goes_through_the_guarded_writer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _disk_full_after(monkeypatch, 1)
    line = assert_one_line(run("vectors", "v", *SMALL, *VEC), EXIT_USAGE,
                           tmp_path / "v" / "vectors.h5", "No space left on device")
    assert ".partial" not in line
    assert list(tmp_path.iterdir()) == []            # the folder it created is gone too


def test_calibration_stimulus_on_a_full_disk_is_all_or_nothing(tmp_path, monkeypatch):
    """Blocks 1 and 2 written, block 3's HDF5 fails: one line naming that file, and nothing of
    the stimulus is left (a rerun starts from scratch instead of refusing the folder)."""
    monkeypatch.chdir(tmp_path)
    opened = _disk_full_after(monkeypatch, 3)
    line = assert_one_line(run("vectors", "cal", "--calibration", *SMALL), EXIT_USAGE,
                           "No space left on device")
    assert len(opened) == 3
    assert re.search(rf"{re.escape(str(tmp_path / 'cal'))}/\w+/vectors\.h5", line), line
    assert list(tmp_path.iterdir()) == []
    # an existing stimulus replaced with --force stays as it was when that fails
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert run("vectors", "cal", "--calibration", *SMALL).exit_code == 0
    before = {p: p.read_bytes() for p in (tmp_path / "cal").rglob("*") if p.is_file()}
    _disk_full_after(monkeypatch, 2)
    assert_one_line(run("vectors", "cal", "--calibration", *SMALL, "--seed", "3", "--force"),
                    EXIT_USAGE, "No space left on device")
    after = {p: p.read_bytes() for p in (tmp_path / "cal").rglob("*") if p.is_file()}
    assert after == before


FSIZE_CALIBRATION = """
import resource, sys
from imcsim.cli import main
small = ["--rows", "32", "--columns", "9", "--adc-bits", "4"]
main(["vectors", sys.argv[1] + ".warm", "--calibration", *small], standalone_mode=False)
resource.setrlimit(resource.RLIMIT_FSIZE, (120_000, 120_000))   # after the kernels are cached
main(["vectors", sys.argv[1], "--calibration", *small])
"""


def test_a_real_file_size_limit_on_vectors_calibration_exits_2_without_a_crash(tmp_path):
    """Was: hundreds of lines of HDF5 errors, SIGSEGV, .partial files left behind."""
    proc = subprocess.run([sys.executable, "-c", FSIZE_CALIBRATION, str(tmp_path / "cal")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=ENV)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Numba" not in ln
             and "@njit" not in ln]
    assert proc.returncode == EXIT_USAGE, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot write {tmp_path / 'cal'}/"), \
        lines
    assert lines[0].endswith("File too large"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.warm"]
    assert partials(tmp_path) == []


def test_every_hdf5_file_is_written_through_the_guarded_writer():
    """Writing mode of h5py.File appears only in imcsim.atomic (the H5Writer)."""
    root = Path(imcsim.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel == "atomic.py":
            continue
        for line in path.read_text().splitlines():
            if "h5py.File(" in line and re.search(r"""["'](w|w-|x|a|r\+)["']""", line):
                offenders.append(f"{rel}: {line.strip()}")
    assert offenders == []


# --- 2. temporaries of killed runs -------------------------------------------------------------
KILLED_VECTORS = """
import sys, time
import imcsim.verify.vectors as v
real = v._write_h5
def stall(*args, **kwargs):          # the hex files are written: hang for kill -9
    print("writing", flush=True)
    time.sleep(600)
v._write_h5 = stall
from imcsim.cli import main
main(["vectors", sys.argv[1], "--rows", "32", "--columns", "9", "--adc-bits", "4",
      "--shape", "40", "3", "--random", "2"])
"""


def test_temporaries_of_a_run_killed_with_sigkill_do_not_block_the_rerun(tmp_path):
    out = tmp_path / "v"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_VECTORS, str(out)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait()
    left = partials(out)
    assert left and all(f".{proc.pid}." in p for p in left)
    r = run("vectors", out, *SMALL, *VEC)              # was: "folder exists and is not empty"
    assert r.exit_code == 0, r.output
    assert partials(out) == []
    assert (out / "manifest.json").is_file()


def test_temporaries_of_a_live_process_mean_the_folder_is_busy(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "v"
        out.mkdir()
        (out / f".code.hex.{live.pid}.0badcafe.partial").write_text("x")
        assert_one_line(run("vectors", out, *SMALL, *VEC), EXIT_USAGE, out,
                        f"pid {live.pid}", "writing this folder")
    finally:
        live.kill()
        live.wait()


# --- 3. SIGINT at the end of a command ---------------------------------------------------------
class _InterruptedDestructor:
    """An object whose destructor receives the SIGINT (Python swallows it there)."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100_000):                     # the handler runs in here
            pass


def test_an_interrupt_swallowed_by_a_destructor_still_ends_the_command(tmp_path, monkeypatch):
    """Was: an 'Exception ignored in' traceback and exit 0, with the outputs published."""
    monkeypatch.chdir(tmp_path)
    real = vectors_mod._write_h5

    def write_then_interrupt(*args, **kwargs):
        real(*args, **kwargs)
        _InterruptedDestructor()                     # deleted at once: SIGINT inside __del__
    monkeypatch.setattr(vectors_mod, "_write_h5", write_then_interrupt)
    assert assert_one_line(run("vectors", "v", *SMALL, *VEC), EXIT_INTERRUPTED) == "interrupted"
    assert list(tmp_path.iterdir()) == []            # nothing published after the interrupt


def test_a_sigint_during_the_renames_is_held_until_every_output_is_in_place(tmp_path,
                                                                           monkeypatch):
    targets = [tmp_path / f"{i}.txt" for i in range(3)]
    for t in targets:
        t.write_text("old")
    real = os.replace
    calls = []

    def replace_and_interrupt(src, dst):
        calls.append(dst)
        real(src, dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100_000):
                pass
    monkeypatch.setattr(atomic.os, "replace", replace_and_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with atomic.AtomicOutputs(*targets) as out:
            for t in targets:
                out.temporary(t).write_text("new")
    assert [t.read_text() for t in targets] == ["new"] * 3    # was: new, old, old
    assert partials(tmp_path) == []
    with pytest.raises(KeyboardInterrupt), atomic.deferred_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100_000):
            pass
        held = True
    assert held


# ``python -m imcsim`` as a program: runpy runs imcsim/__main__.py as __main__ (as -m does),
# after this script registered an atexit callback that receives a SIGINT
AT_EXIT = """
import atexit, os, runpy, signal, sys, time
def interrupted_while_exiting():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
atexit.register(interrupted_while_exiting)
sys.argv = ["imcsim"] + sys.argv[1:]
runpy.run_module("imcsim", run_name="__main__", alter_sys=True)
"""


def test_a_sigint_while_the_process_exits_is_interrupted_130(tmp_path):
    """Was: 'Exception ignored in atexit callback' with a KeyboardInterrupt traceback, exit 0."""
    proc = subprocess.run([sys.executable, "-c", AT_EXIT, "vectors", "v", *SMALL, *VEC],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=ENV)
    assert proc.returncode == EXIT_INTERRUPTED, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["interrupted"], proc.stderr[-2000:]
    assert proc.stdout.startswith("wrote v:")


@pytest.mark.parametrize("delay", [0.0, 0.02])
def test_a_sigint_right_after_the_last_line_is_never_a_signal_death(tmp_path, delay):
    """Was: killed by the signal without a message (status -2): Python's half-second teardown
    runs with the default SIGINT action.  Now either the process had ended (0) or it says so."""
    proc = subprocess.Popen([sys.executable, "-m", "imcsim", "vectors", "v", *SMALL, *VEC],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while True:
        line = proc.stdout.readline()
        if not line or "files:" in line:
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err.strip()) in ((0, ""), (EXIT_INTERRUPTED, "interrupted")), \
        (proc.returncode, err[-2000:])


# --- 4. eval on an unreadable checkpoint -------------------------------------------------------
def _checkpoint_bytes() -> bytes:
    import io
    buf = io.BytesIO()
    meta = {"epoch": 1, "config": {"model": "mlp"}, "history": []}
    np.savez(buf, meta=np.array(json.dumps(meta)), **{"param/w": np.zeros(4000)})
    return buf.getvalue()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "no meta"])
def test_eval_on_an_unreadable_checkpoint_is_one_line_naming_it(tmp_path, damage):
    """Was: exit 3, 'internal error: BadZipFile'."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ckpt = run_dir / "checkpoint.npz"
    data = _checkpoint_bytes()
    if damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        ckpt.write_bytes(b"PK\x03\x04" + os.urandom(300))
    elif damage == "empty":
        ckpt.write_bytes(b"")
    else:
        np.savez(ckpt, w=np.zeros(3))
    for target in (run_dir, ckpt):
        assert_one_line(run("eval", target, "--chips", "1"), EXIT_USAGE, ckpt)


def test_eval_on_a_checkpoint_with_a_foreign_config_is_one_line_naming_it(tmp_path):
    ckpt = tmp_path / "checkpoint.npz"
    np.savez(ckpt, meta=np.array(json.dumps({"epoch": 1, "config": "[1, 2]", "history": []})))
    assert_one_line(run("eval", ckpt, "--chips", "1"), EXIT_USAGE, ckpt)


# --- 5. schema versions above the reader's major -----------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("io")
    cfg = MacroConfig(rows=32, columns=9, adc_bits=4, vref=VrefConfig(
        mode=VrefMode.VARIABLE, full_scale=32, dual_low=15, dual_high=32))
    ops = vectors_mod.make_operands(cfg, BinaryFormat(4), BinaryFormat(3), inner=40, outputs=3,
                                    n_random=2)
    Macro(cfg).mvm_traced(ops.X, ops.W, BinaryFormat(4), BinaryFormat(3),
                          trace=root / "trace.h5")
    vectors_mod.write_vectors(root / "vec", cfg, ops.W, ops.X, BinaryFormat(4), BinaryFormat(3),
                              labels=ops.labels)
    return root


def _copy(src: Path, dst: Path) -> Path:
    import shutil
    (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return dst


@pytest.mark.parametrize("version", ["2.0", "999.0", "one", "1"])
def test_traces_of_a_newer_major_schema_are_refused(folders, tmp_path, version):
    """Was: read without a word."""
    trace = _copy(folders / "trace.h5", tmp_path / "t.h5")
    with h5py.File(trace, "r+") as f:
        f.attrs["schema_version"] = version
    with pytest.raises(ValueError, match=rf"^{re.escape(str(trace))}: trace schema version"):
        TraceFile(trace)
    assert_one_line(run("trace", "show", trace), EXIT_USAGE, trace, "schema version")
    assert_one_line(run("check", trace, folders / "vec"), EXIT_USAGE, trace, "schema version")


def test_newer_minor_schemas_are_read():
    assert atomic.check_schema_version("1.9", "1.1", "f.h5") == "1.9"
    assert atomic.check_schema_version(b"1.0", "1.1", "f.h5") == "1.0"
    with pytest.raises(ValueError, match=r"f\.h5: .* 2\.0 is newer than this imcsim reads"):
        atomic.check_schema_version("2.0", "1.1", "f.h5")


def test_vectors_files_of_a_newer_major_schema_are_refused(folders, tmp_path):
    vec = _copy(folders / "vec", tmp_path / "vec")
    with h5py.File(vec / "vectors.h5", "r+") as f:
        f.attrs["schema_version"] = "2.0"
    assert_one_line(run("check", vec, folders / "vec"), EXIT_USAGE, vec / "vectors.h5", "2.0")
    dump = _copy(folders / "vec", tmp_path / "dump")
    man = json.loads((dump / "manifest.json").read_text())
    man["version"] = "999.0"
    (dump / "manifest.json").write_text(json.dumps(man))
    assert_one_line(run("check", folders / "vec", dump), EXIT_USAGE, dump / "manifest.json",
                    "999.0")


def test_calibration_stimulus_of_a_newer_major_version_is_refused(tmp_path):
    from imcsim.calibration.stimulus import load_calibration_stimulus
    assert run("vectors", tmp_path / "cal", "--calibration", *SMALL).exit_code == 0
    index = tmp_path / "cal" / "calibration.json"
    doc = json.loads(index.read_text())
    for version, what in (("2.0", "newer"), (None, "MAJOR.MINOR")):
        doc["version"] = version
        index.write_text(json.dumps(doc))
        with pytest.raises(ValueError, match=rf"^{re.escape(str(index))}: .*{what}"):
            load_calibration_stimulus(tmp_path / "cal")
    index.write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(index))}: not readable as JSON"):
        load_calibration_stimulus(tmp_path / "cal")


# --- 6. every I/O error names its file ---------------------------------------------------------
def test_a_failed_write_of_mvm_outputs_names_the_file(tmp_path, monkeypatch):
    cli_main = importlib.import_module("imcsim.cli.main")     # imcsim.cli.main is the group
    monkeypatch.chdir(tmp_path)
    Path("codes.npy").write_bytes(b"old codes")
    real = cli_main.save_npy

    def full(path, array):
        if ".codes.npy." in str(path):
            Path(path).write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, array)
    monkeypatch.setattr(cli_main, "save_npy", full)
    r = run("mvm", *SMALL, "--random-shape", "2", "40", "3", "-o", "y.npy", "--codes",
            "codes.npy")
    line = assert_one_line(r, EXIT_USAGE, "--codes", tmp_path / "codes.npy",
                           "No space left on device")
    assert ".partial" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.npy"]
    assert Path("codes.npy").read_bytes() == b"old codes"


def test_a_failed_hex_write_of_vectors_names_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def full(path, *args):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    monkeypatch.setattr(vectors_mod, "_write_hex", full)
    assert_one_line(run("vectors", "v", *SMALL, *VEC), EXIT_USAGE, tmp_path / "v" / "ctrl.hex",
                    "Disk quota exceeded")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe\x00\x01garbage\n", ("not a text hex file", "0xff")),
    (b"// code\n0a\nzz\n", ("line 3", "'zz'", "not a hex word")),
])
def test_unreadable_hex_dumps_name_the_file(folders, tmp_path, content, words):
    """Was: 'invalid literal for int() with base 16' naming no file."""
    dump = _copy(folders / "vec", tmp_path / "dump")
    (dump / "code.hex").write_bytes(content)
    assert_one_line(run("check", folders / "vec", dump), EXIT_USAGE, dump / "code.hex", *words)


def test_a_trace_with_a_damaged_chunk_names_the_file_and_dataset(folders, tmp_path):
    """Was: 'Can't synchronously read data (filter returned failure during read)'."""
    trace = _copy(folders / "trace.h5", tmp_path / "t.h5")
    with h5py.File(trace, "r") as f:
        info = f["cycles"]["code"].id.get_chunk_info(0)
    data = bytearray(trace.read_bytes())
    for i in range(info.byte_offset, info.byte_offset + info.size):
        data[i] ^= 0x5A
    trace.write_bytes(bytes(data))
    for args in (("trace", "show", trace, "--cycle", "0"),
                 ("trace", "export", trace, "--vcd", tmp_path / "t.vcd")):
        assert_one_line(run(*args), EXIT_USAGE, trace, "/cycles/code", "damaged")
    assert not (tmp_path / "t.vcd").exists() and partials(tmp_path) == []


@pytest.mark.parametrize("content, reason", [
    (b"1 2 3\n4 5 6\n", "no NumPy header"),
    (b"PK\x03\x04" + b"garbage" * 20, "zip archive"),
])
def test_text_npy_and_garbage_npz_name_the_file_and_what_it_is(tmp_path, monkeypatch, content,
                                                                reason):
    """Was, for a text file: 'This file contains pickled (object) data'."""
    monkeypatch.chdir(tmp_path)
    Path("x.npy").write_bytes(content)
    np.save("w.npy", np.ones((40, 3)))
    for command in (("mvm", *SMALL), ("vectors", "v", *SMALL)):
        assert_one_line(run(*command, "--x", "x.npy", "--w", "w.npy"), EXIT_USAGE, "--x",
                        "x.npy", reason)


def test_an_oserror_on_the_temporary_names_the_target(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(OSError) as info:
        with atomic.AtomicOutputs(target, names=["--out"]) as out:
            tmp = out.temporary(target)
            raise OSError(errno.EACCES, "Permission denied", str(tmp))
    assert str(info.value) == f"--out: cannot write {target}: Permission denied"
    assert info.value.errno == errno.EACCES
    # a failed write of an open file names no file: the output being written is named
    other = tmp_path / "report.json"
    with pytest.raises(OSError) as info:
        with atomic.AtomicOutputs(target, other, names=["--out", "--json"]) as out:
            out.temporary(target).write_text("done")
            out.temporary(other)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value) == f"--json: cannot write {other}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_the_docs_describe_the_guarded_writer_and_the_version_rule():
    docs = Path(__file__).resolve().parent.parent / "docs"
    trace_doc = (docs / "trace-format.md").read_text()
    golden_doc = (docs / "golden-model.md").read_text()
    assert "newer major" in trace_doc and "newer major" in golden_doc
    assert ".NAME.PID.TOKEN.partial" in trace_doc and "killed" in golden_doc
