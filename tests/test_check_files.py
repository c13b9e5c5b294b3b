"""`imcsim check` on damaged and foreign vectors files (issue 23).

A vectors.h5 given as a file (EXPECTED or ACTUAL) had its schema read without a word -- only a
vectors *folder* was version-checked -- and a chunk that no longer decompresses ended in h5py's
"Can't synchronously read data (filter returned failure during read)", naming no file.  Both
are now one line naming the file, exit 2, and no output is written.
"""
import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from imcsim import BinaryFormat, MacroConfig, VrefConfig, VrefMode
from imcsim.calibration import load_measurement, make_calibration_stimulus, write_measurement
from imcsim.calibration.measured import MeasuredCodes
from imcsim.cli import main
from imcsim.verify.check import check_files, load_actual, load_expected
from imcsim.verify.vectors import make_operands, write_vectors

from cli_helpers import assert_usage_error

CFG = MacroConfig(rows=32, columns=9, adc_bits=4, vref=VrefConfig(
    mode=VrefMode.VARIABLE, full_scale=32, dual_low=15, dual_high=32))


@pytest.fixture(scope="module")
def vec(tmp_path_factory):
    root = tmp_path_factory.mktemp("vec")
    ops = make_operands(CFG, BinaryFormat(4), BinaryFormat(3), inner=40, outputs=3, n_random=2)
    write_vectors(root / "vec", CFG, ops.W, ops.X, BinaryFormat(4), BinaryFormat(3),
                  labels=ops.labels)
    return root / "vec"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def damage_chunk(path, dataset="cycles/code"):
    """Flip every byte of the first chunk of ``dataset``: the file opens, the chunk does not
    decompress."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    for i in range(info.byte_offset, info.byte_offset + info.size):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def copy(vec, tmp_path, name="copy"):
    return shutil.copytree(vec, tmp_path / name)


@pytest.mark.parametrize("version, words", [("2.0", ["2.0", "newer"]), ("999.1", ["999.1", "newer"]),
                                            ("one", ["'one'", "MAJOR.MINOR"]),
                                            (None, ["without a schema_version"])])
def test_a_vectors_file_of_another_schema_is_refused_as_a_file(vec, tmp_path, version, words):
    """Was: a vectors.h5 named directly (not its folder) was read whatever its version."""
    bad = copy(vec, tmp_path)
    h5 = bad / "vectors.h5"
    with h5py.File(h5, "r+") as f:
        if version is None:
            del f.attrs["schema_version"]
        else:
            f.attrs["schema_version"] = version
    report = tmp_path / "report.json"
    for expected, actual in ((h5, vec), (vec, h5), (bad, vec)):
        r = run("check", expected, actual, "--json", report)
        assert_usage_error(r, h5, *words)
        assert not report.exists()                     # all-or-nothing: nothing written
    with pytest.raises(ValueError, match="schema"):
        load_expected(h5)
    with pytest.raises(ValueError, match="schema"):
        load_actual(h5)


def test_a_vectors_file_whose_format_is_stored_as_bytes_is_still_checked(vec, tmp_path):
    bad = copy(vec, tmp_path)
    h5 = bad / "vectors.h5"
    with h5py.File(h5, "r+") as f:
        f.attrs["format"] = np.bytes_(b"imcsim-vectors")
    assert check_files(h5, vec).passed                 # recognised as a vectors file
    with h5py.File(h5, "r+") as f:
        f.attrs["schema_version"] = np.bytes_(b"3.0")
    assert_usage_error(run("check", h5, vec), h5, "3.0")


def test_newer_minor_versions_are_read(vec, tmp_path):
    ok = copy(vec, tmp_path)
    with h5py.File(ok / "vectors.h5", "r+") as f:
        f.attrs["schema_version"] = "1.7"
    assert check_files(ok / "vectors.h5", vec).passed


def test_a_damaged_chunk_names_the_file_and_the_dataset(vec, tmp_path):
    """Was: 'Can't synchronously read data (filter returned failure during read)'."""
    bad = copy(vec, tmp_path)
    h5 = bad / "vectors.h5"
    damage_chunk(h5)
    report = tmp_path / "report.json"
    for expected, actual in ((h5, vec), (bad, vec), (vec, h5)):
        r = run("check", expected, actual, "--json", report)
        assert_usage_error(r, h5, "/cycles/code", "damaged")
        assert not report.exists()
    with pytest.raises(ValueError, match=r"cannot read /cycles/code, the file is damaged"):
        load_expected(h5)


def test_a_truncated_vectors_file_names_the_file(vec, tmp_path):
    bad = copy(vec, tmp_path)
    h5 = bad / "vectors.h5"
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    for expected, actual in ((h5, vec), (vec, h5)):
        assert_usage_error(run("check", expected, actual), h5)


def test_a_damaged_calibration_dump_names_the_dump(tmp_path):
    """The calibration reads dumps through the same loader, and /result/y_int itself."""
    nom = MacroConfig(rows=32, columns=6, adc_bits=4,
                      vref=VrefConfig(full_scale=32, dual_low=15, dual_high=32))
    stim = make_calibration_stimulus(nom, repeat_vectors=8, repeat_counts=2, pattern_subsets=2,
                                     pattern_repeats=1, x_bits=3)
    codes = {b.name: np.zeros((b.n_vectors, stim.n_planes, stim.covered_columns), dtype=np.int64)
             for b in stim.blocks}
    y = {b.name: np.zeros((b.n_vectors, stim.W.shape[1]), dtype=np.int64) for b in stim.blocks}
    paths = write_measurement(tmp_path / "m", MeasuredCodes(stim, codes, y, source="zeros"))
    (tmp_path / "m" / "calibration.json").write_text(json.dumps(stim.to_dict()))
    assert set(load_measurement(tmp_path / "m").codes) == set(codes)
    good = paths[0].read_bytes()
    damage_chunk(paths[0])
    with pytest.raises(ValueError, match=rf"^{paths[0]}: cannot read /cycles/code, the file is damaged"):
        load_measurement(tmp_path / "m")
    paths[0].write_bytes(good)
    # y_int stored in compressed chunks, one of them damaged (was: h5py's message, no file)
    with h5py.File(paths[1], "r+") as f:
        y_block = f["result"]["y_int"][()]
        del f["result"]["y_int"]
        f["result"].create_dataset("y_int", data=y_block, compression="gzip", chunks=True)
    damage_chunk(paths[1], "result/y_int")
    with pytest.raises(ValueError, match=rf"^{paths[1]}: cannot read /result/y_int, the file is damaged"):
        load_measurement(tmp_path / "m")
