"""Sharded golden vectors and checks on a Dask LocalCluster of 2 worker processes: the files
and the reports equal an unsharded run's."""
import csv
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from imcsim import BinaryFormat, MacroConfig, NonIdealityConfig, Radix4Format, VrefConfig, VrefMode
from imcsim.cli import main
from imcsim.cli.common import EXIT_USAGE
from imcsim.verify.check import check_files
from imcsim.verify.shard import check_files_sharded, shard_ranges, write_vectors_sharded
from imcsim.verify.vectors import make_operands, write_vectors

# 3 row tiles x 2 column tiles, dual Vref, every noise source: the noise is keyed by the
# global vector index, which sharding must keep
CFG = MacroConfig(rows=32, columns=8, adc_bits=5, chip_seed=4,
                  vref=VrefConfig(mode=VrefMode.DUAL, full_scale=32, dual_low=31, dual_high=32),
                  nonideal=NonIdealityConfig(cell_cap_sigma=0.02, cdac_unit_sigma=0.01,
                                             comparator_offset_sigma=0.2,
                                             comparator_noise_sigma=0.3,
                                             sampling_noise_sigma=0.2))
XF, WF = Radix4Format(8), BinaryFormat(4)


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed")
    from imcsim.sweep import dask_client
    with dask_client(None, workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def vec(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    ops = make_operands(CFG, XF, WF, inner=70, outputs=3, n_random=5, seed=3)
    write_vectors(root / "one", CFG, ops.W, ops.X, XF, WF, seed=11, labels=ops.labels)
    return root, ops


def folder_contents(folder):
    """Every file's bytes but vectors.h5's, and vectors.h5's attributes and data sets."""
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "vectors.h5"}
    data = {}
    with h5py.File(folder / "vectors.h5") as f:
        data.update({f"attr:{k}": v for k, v in f.attrs.items()})
        f.visititems(lambda name, obj: data.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return files, data


def assert_same_folder(a, b):
    fa, da = folder_contents(a)
    fb, db = folder_contents(b)
    assert fa == fb
    assert sorted(da) == sorted(db)
    for k in da:
        assert np.array_equal(da[k], db[k]), k
        assert np.asarray(da[k]).dtype == np.asarray(db[k]).dtype, k


def test_shard_ranges_cover_the_range_in_order():
    assert shard_ranges(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert shard_ranges(2, 5) == [(0, 1), (1, 2)]
    assert shard_ranges(0, 4) == [(0, 0)]
    with pytest.raises(ValueError, match="shards"):
        shard_ranges(5, 0)


def test_sharded_vectors_equal_unsharded_byte_for_byte(client, vec, tmp_path):
    root, ops = vec
    with h5py.File(root / "one" / "vectors.h5") as f:
        tiles = {(int(t), int(u)) for t, u in zip(f["cycles"]["tile_row"], f["cycles"]["tile_col"])}
    assert len(tiles) == 6 and ops.X.shape[0] > 3                 # several tiles, several shards
    man = write_vectors_sharded(tmp_path / "sharded", CFG, ops.W, ops.X, XF, WF, client=client,
                                shards=3, seed=11, labels=ops.labels)
    assert man["geometry"]["vectors_B"] == ops.X.shape[0]
    assert_same_folder(root / "one", tmp_path / "sharded")
    # a folder that may not be written is refused before any task runs
    with pytest.raises(ValueError, match="not empty"):
        write_vectors_sharded(tmp_path / "sharded", CFG, ops.W, ops.X, XF, WF, client=client,
                              shards=2, seed=11)


def test_cli_vectors_and_check_with_shards_on_a_running_scheduler(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    addr = client.scheduler.address
    args = ["--shape", "40", "3", "--random", "5", "--x-format", "radix4:8", "--preset",
            "paper-nonideal", "--rows", "16", "--adc-bits", "4", "--seed", "2"]
    run = CliRunner().invoke
    r1 = run(main, ["vectors", "one", *args])
    r2 = run(main, ["vectors", "two", *args, "--shards", "2", "--scheduler", addr])
    assert r1.exit_code == 0 and r2.exit_code == 0, (r1.output, r2.output)
    assert r1.output.replace("one", "two") == r2.output
    assert_same_folder(tmp_path / "one", tmp_path / "two")
    c1 = run(main, ["check", "one", "two/vectors.h5", "--json", "c1.json"])
    c2 = run(main, ["check", "one", "two/vectors.h5", "--json", "c2.json", "--shards", "3",
                    "--scheduler", addr])
    assert c1.exit_code == c2.exit_code == 0 and c1.output == c2.output, c2.output
    assert (tmp_path / "c1.json").read_bytes() == (tmp_path / "c2.json").read_bytes()


def perturbed_dumps(vec_folder, tmp_path):
    """Dumps with wrong values, missing and extra cycles, in the three pairing modes."""
    with h5py.File(vec_folder / "vectors.h5") as f:
        g = {k: f["cycles"][k][()] for k in ("tile_row", "tile_col", "vector", "plane",
                                               "code", "column_count", "active_rows")}
    n = len(g["code"])
    rng = np.random.default_rng(0)
    code = g["code"].copy()
    bad = rng.choice(n, 9, replace=False)
    code[bad, rng.integers(0, code.shape[1], 9)] += rng.choice([-2, -1, 1, 3], 9)
    # wrong but possible codes: a code outside the ADC's range is refused as unusable input
    code = np.clip(code, 0, int(g["code"].max()))
    order = rng.permutation(n)[: n - 4]                  # 4 cycles missing, rows shuffled
    keyed = tmp_path / "keyed.h5"
    with h5py.File(keyed, "w") as f:
        for k in ("tile_row", "tile_col", "plane", "active_rows"):
            f[k] = np.concatenate([g[k][order], g[k][:2]])
        f["code"] = np.concatenate([code[order], code[:2]])
        f["vector"] = np.concatenate([g["vector"][order], [999, 1000]])   # 2 rows pair nothing
    plain = tmp_path / "plain.h5"                        # no keys: paired by row order
    with h5py.File(plain, "w") as f:
        f["code"] = code[: n - 3]
        f["column_count"] = g["column_count"][: n - 3]
    long_csv = tmp_path / "long.csv"                     # by cycle, some far out of range
    with open(long_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["cycle", "signal", "index", "value"])
        for c in list(order[:40]) + [n + 5, n + 9]:
            for i in range(3):
                w.writerow([c, "code", i, code[min(c, n - 1), i]])
            w.writerow([c, "active_rows", "", g["active_rows"][min(c, n - 1)] + (c % 7 == 0)])
    return keyed, plain, long_csv


@pytest.mark.parametrize("tolerance", [None, 1])
def test_sharded_check_equals_unsharded_in_every_pairing_mode(client, vec, tmp_path, tolerance):
    root, _ = vec
    for actual in perturbed_dumps(root / "one", tmp_path):
        one = check_files(root / "one", actual, tolerance=tolerance)
        for shards in (2, 3, 7):
            rep = check_files_sharded(root / "one", actual, client=client, shards=shards,
                                      tolerance=tolerance)
            assert rep.to_dict(max_report=10**6) == one.to_dict(max_report=10**6), (actual, shards)
            assert rep.format(10**6) == one.format(10**6)
            assert np.array_equal(rep.code_errors, one.code_errors)
        assert tolerance is not None or not one.passed      # the dumps do differ


def test_sharded_check_errors_are_the_unsharded_ones(client, vec, tmp_path):
    root, _ = vec
    dup = tmp_path / "dup.csv"
    dup.write_text("cycle,code,column\n3,1,0\n3,2,0\n")     # one cycle given twice
    nothing = tmp_path / "nothing.csv"
    nothing.write_text("cycle,code,column\n100000,1,0\n")   # no cycle in common
    twice = tmp_path / "twice.h5"                            # rows 30 and 31 the same cycle
    with h5py.File(root / "one" / "vectors.h5") as f, h5py.File(twice, "w") as g:
        rows = list(range(31)) + [30] + list(range(31, f["cycles"]["code"].shape[0]))
        for k in ("tile_row", "tile_col", "vector", "plane", "code"):
            g[k] = f["cycles"][k][()][rows]
    for actual in (dup, nothing, twice):
        with pytest.raises(ValueError) as one:
            check_files(root / "one", actual)
        with pytest.raises(ValueError) as sharded:
            check_files_sharded(root / "one", actual, client=client, shards=3)
        assert str(sharded.value) == str(one.value)


def test_cli_shard_options_without_dask_or_without_shards(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke
    r = run(main, ["vectors", "v", "--shape", "8", "2", "--random", "1", "--scheduler",
                   "tcp://127.0.0.1:1"])
    assert r.exit_code == EXIT_USAGE and "--scheduler: needs --shards" in r.stderr
    assert not (tmp_path / "v").exists()
    monkeypatch.setitem(sys.modules, "distributed", None)
    for args in (["vectors", "v", "--shape", "8", "2", "--shards", "2"],
                 ["check", "a", "b.h5", "--shards", "2"]):
        r = run(main, args)
        assert r.exit_code == EXIT_USAGE, r.output
        if args[0] == "vectors":
            assert r.stderr.strip().splitlines() == [
                "Error: --shards needs distributed: pip install 'imcsim[dask]'"]
