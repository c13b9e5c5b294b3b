"""The reference-model API (imcsim.verify.golden) and the vectors writer (imcsim.verify.vectors, `imcsim vectors`)."""
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from imcsim import (
    BinaryFormat,
    Macro,
    MacroConfig,
    NmcConfig,
    NonIdealityConfig,
    Radix4Format,
    VrefConfig,
    VrefMode,
)
from imcsim.cli.verify import vectors_command
from imcsim.verify.golden import GoldenModel, Mismatch, assert_cycle, compare_cycle, pack_decisions
from imcsim.verify.trace import TraceFile
from imcsim.verify.vectors import (
    load_manifest,
    make_operands,
    pack_words,
    read_hex_fields,
    run_golden,
    unpack_words,
    write_vectors,
)

NONIDEAL = NonIdealityConfig(cell_cap_sigma=0.01, parasitic_ratio=0.02, cdac_unit_sigma=0.01,
                             comparator_offset_sigma=0.3, comparator_noise_sigma=0.2,
                             sampling_noise_sigma=0.2)


def config(mode="variable", nonideal=None, rows=64, columns=20, adc_bits=6,
           **nmc):
    top = (1 << adc_bits) - 1
    nonideal = NonIdealityConfig() if nonideal is None else nonideal
    return MacroConfig(rows=rows, columns=columns, adc_bits=adc_bits, nonideal=nonideal,
                       chip_seed=3, nmc=NmcConfig(**nmc),
                       vref=VrefConfig(mode=VrefMode(mode), full_scale=(top + rows) // 2,
                                       dual_low=top, dual_high=rows))


def operands(x_format, B=3, M=70, N=9, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.integers(-8, 9, (M, N))
    if x_format.kind == "binary":
        X = rng.integers(-x_format.max_value, x_format.max_value + 1, (B, M)).astype(float)
    else:
        e = rng.integers(-3, 4, (B, M))
        X = np.where(rng.random((B, M)) < 0.4, rng.choice([-1.0, 1.0], (B, M)) * 4.0 ** e, 0.0)
    return X, W


@pytest.mark.parametrize("mode", ["fixed", "variable", "dual"])
@pytest.mark.parametrize("x_format", [BinaryFormat(6), Radix4Format(8)])
def test_golden_agrees_with_macro_mvm_bit_for_bit(mode, x_format):
    cfg = config(mode, NONIDEAL)
    X, W = operands(x_format)
    g = GoldenModel(cfg, W, BinaryFormat(5), x_format, seed=7, vector_offset=4)
    g.load_vectors(X)
    recs = g.run()
    res = Macro(cfg).mvm(X, W, x_format, BinaryFormat(5), seed=7, vector_offset=4,
                         return_codes=True)
    out = g.expected_outputs()
    assert np.array_equal(out["y_int"], res.y_int)
    assert np.array_equal(out["y"], res.y)
    assert out["vectors"].tolist() == [4, 5, 6]
    assert len(recs) == 2 * 3 * 3 * x_format.n_planes          # T x U x B x P
    for r in recs:
        t, b, p = r["tile_row"], r["vector"] - 4, r["plane"]
        n0 = r["output_index"][0]
        got = r["code"].reshape(len(r["output_index"]), 5)
        assert np.array_equal(got, res.codes[t, b, p, n0:n0 + len(r["output_index"])])
        assert r["full_scale"] == res.full_scale[t, b, p]
        assert r["active_rows"] == res.active_rows[t, b, p] == r["row_mask"].sum()
    # y_int appears exactly once per vector, on its last cycle
    finals = [r for r in recs if r["y_int"] is not None]
    assert [r["vector"] for r in finals] == [4, 5, 6]
    assert np.array_equal(np.stack([r["y_int"] for r in finals]), res.y_int)


def test_streaming_one_vector_at_a_time_gives_the_same_results():
    cfg = config("dual", NONIDEAL)
    xf = Radix4Format(8)
    X, W = operands(xf, B=4)
    batch = GoldenModel(cfg, W, "binary:5", xf, seed=2)
    batch.load_vectors(X)
    by_key = {(r["tile_row"], r["tile_col"], r["vector"], r["plane"]): r for r in batch.run()}
    stream = GoldenModel(cfg, W, "binary:5", "radix4:8", seed=2)
    finals = []
    for x in X:
        idx = stream.load_vector(x)
        assert stream.pending_cycles == stream.cycles_per_vector == 2 * 3 * 7
        for r in stream.iter_cycles():
            ref = by_key[(r["tile_row"], r["tile_col"], r["vector"], r["plane"])]
            assert np.array_equal(r["code"], ref["code"])
            assert np.array_equal(r["sar_decision"], ref["sar_decision"])
            if r["y_int"] is not None:
                assert r["vector"] == idx
                finals.append(r["y_int"])
    assert np.array_equal(np.stack(finals), batch.expected_outputs()["y_int"])
    assert np.array_equal(stream.expected_outputs()["y_int"], batch.expected_outputs()["y_int"])


def test_records_equal_the_cycle_level_trace(tmp_path):
    cfg = config("variable", NONIDEAL)
    xf = BinaryFormat(6)
    X, W = operands(xf, B=2)
    path = tmp_path / "t.h5"
    Macro(cfg).mvm_traced(X, W, xf, BinaryFormat(5), seed=5, trace=path)
    g = GoldenModel(cfg, W, "binary:5", xf, seed=5)
    g.load_vectors(X)
    recs = g.run()
    with TraceFile(path) as tf:
        assert tf.n_cycles == len(recs)
        for i, r in enumerate(recs):                 # same order as the trace
            t = tf.cycle(i)
            assert (t["tile_row"], t["tile_col"], t["vector"], t["plane"], t["cycle"]) == \
                (r["tile_row"], r["tile_col"], r["vector"], r["plane"], r["tile_cycle"])
            for name in ("column_count", "column_value", "sar_trial", "sar_decision", "code"):
                assert np.array_equal(t[name], r[name]), name
            assert np.array_equal(t["nmc_acc"], r["nmc_steps"])
            rows = len(r["row_input"])                   # the trace pads the last row tile
            assert np.array_equal(t["row_input"][:rows], r["row_input"])
            assert not t["row_mask"][rows:].any()


def test_model_errors_are_clear():
    g = GoldenModel(config(), np.zeros((10, 3), dtype=int), "binary:5", "binary:6")
    with pytest.raises(RuntimeError, match="no vector loaded"):
        g.step()
    with pytest.raises(ValueError, match="10 values"):
        g.load_vector(np.zeros(9))
    with pytest.raises(ValueError, match="binary:6"):
        g.load_vector(np.full(10, 17))
    with pytest.raises(TypeError, match="BinaryFormat"):
        GoldenModel(config(), np.zeros((10, 3), dtype=int), "radix4:8", "binary:6")


def test_scoreboard_messages_name_cycle_vector_plane_and_column():
    g = GoldenModel(config(), np.ones((10, 4), dtype=int), "binary:5", "binary:6")
    g.load_vector(np.arange(10) - 5)
    rec = g.step()
    actual = {"code": rec["code"].copy(), "column_count": rec["column_count"],
              "sar_decision": pack_decisions(rec["sar_decision"]), "nmc_acc": rec["nmc_acc"],
              "active_rows": rec["active_rows"], "full_scale": rec["full_scale"]}
    assert compare_cycle(rec, actual) == []
    assert_cycle(rec, actual)
    actual["code"][3] += 1
    bad = compare_cycle(rec, actual)
    assert bad == [Mismatch(0, "code", 3, int(rec["code"][3]), int(rec["code"][3]) + 1, 0, 0)]
    assert compare_cycle(rec, actual, tolerance=1) == []
    with pytest.raises(AssertionError, match=r"cycle 0 \(vector 0, plane 0\) column 3: code "
                                             r"expected \d+, got \d+"):
        assert_cycle(rec, actual)
    with pytest.raises(ValueError, match="unknown signal"):
        compare_cycle(rec, {"codes": [0]})


def test_ideal_packed_decisions_equal_the_code():
    g = GoldenModel(config(), np.ones((64, 4), dtype=int), "binary:5", "radix4:8")
    g.load_vectors(make_operands(g.config, Radix4Format(8), BinaryFormat(5), inner=64,
                                 outputs=4, n_random=2).X)
    for r in g.run():
        assert np.array_equal(pack_decisions(r["sar_decision"]), r["code"])


# --- corner cases ------------------------------------------------------------------------
def test_corner_cases_hit_masks_thresholds_code_boundaries_and_saturation():
    cfg = config("dual", rows=64, columns=8, adc_bits=5, scale_frac_bits=8, acc_bits=20)
    xf, wf = Radix4Format(8), BinaryFormat(4)
    ops = make_operands(cfg, xf, wf, inner=64, outputs=2, n_random=0, seed=1)
    kinds = {lab.split(":")[0].split("=")[0] for lab in ops.labels}
    assert {"all_masked", "all_active", "active_L", "active_L_plus_1", "code_boundary",
            "nmc_extreme"} <= kinds
    _, recs = run_golden(cfg, ops.W, ops.X, xf, wf)
    actives = {r["active_rows"] for r in recs}
    assert {0, 31, 32, 64} <= actives
    exact = sum(int(((r["column_count"] * 31) == (r["full_scale"] * r["code"])).sum())
                for r in recs if r["active_rows"])
    assert exact > 20                                # comparator ties: where >= vs > matters
    assert any((np.abs(r["nmc_acc"]) >= (1 << 19) - 1).any() for r in recs)   # saturation
    assert {r["full_scale"] for r in recs} == {31, 64}


def test_binary_corner_cases_with_zero_masking():
    cfg = MacroConfig(rows=64, columns=8, adc_bits=5, mask_zero_inputs=True,
                      vref=VrefConfig(mode=VrefMode.VARIABLE, full_scale=64, dual_low=31,
                                      dual_high=64))
    ops = make_operands(cfg, BinaryFormat(6), BinaryFormat(4), inner=50, outputs=2,
                        n_random=1, seed=4)
    assert ops.labels[0] == "all_masked"
    _, recs = run_golden(cfg, ops.W, ops.X, BinaryFormat(6), BinaryFormat(4))
    assert {0, 31, 32, 50} <= {r["active_rows"] for r in recs}


# --- hex packing and the vectors folder ---------------------------------------------------
def test_pack_and_unpack_words_round_trip_signed_values():
    vals = np.array([[-1, 5, -8], [7, 0, 3]])
    words = pack_words(vals, 4)
    assert words[0] == (0xF | 5 << 4 | 8 << 8)
    assert np.array_equal(unpack_words(words, 3, 4, signed=True), vals)


@pytest.fixture(scope="module")
def vectors_dir(tmp_path_factory):
    cfg = config("dual", NONIDEAL, rows=64, columns=20, adc_bits=6)
    xf, wf = BinaryFormat(6), BinaryFormat(5)
    X, W = operands(xf, B=2, M=70, N=9)
    out = tmp_path_factory.mktemp("vec") / "v"
    man = write_vectors(out, cfg, W, X, xf, wf, seed=3, labels=["a", "b"])
    return out, man, cfg, X, W


def test_vectors_folder_holds_every_field_in_hex_and_hdf5(vectors_dir):
    out, man, cfg, X, W = vectors_dir
    assert load_manifest(out) == man
    assert man["n_cycles"] == 2 * 3 * 2 * 6 and man["geometry"]["row_tiles_T"] == 2
    with h5py.File(out / "vectors.h5") as f:
        cyc = {k: f["cycles"][k][()] for k in f["cycles"]}
        res = Macro(cfg).mvm(X, W, BinaryFormat(6), BinaryFormat(5), seed=3)
        assert np.array_equal(f["result"]["y_int"][()], res.y_int)
        assert json.loads(f.attrs["labels_json"]) == ["a", "b"]
    for entry in man["files"]:
        text = (out / entry["file"]).read_text().splitlines()
        assert text[0].startswith("//")
        assert len(text) - 1 == entry["depth"]
        assert all(len(line) == entry["hex_digits"] for line in text[1:])
        assert entry["word_bits"] <= 4 * entry["hex_digits"]
        ends = [f["lsb"] + f["width"] * f["count"] for f in entry["fields"]]
        assert max(ends) == entry["word_bits"]
        if entry["file"] == "weights.hex":
            continue
        fields = read_hex_fields(out, entry["file"])
        for name, data in fields.items():
            ref = {"sar_decision": cyc["sar_decision_packed"],
                   "sar_trial": cyc["sar_trial"].reshape(len(data), -1),
                   "x_shift": np.log2(cyc["x_plane_weight"]).astype(int)}.get(name, cyc.get(name))
            assert np.array_equal(data.reshape(np.shape(ref)), ref), name
    wl = read_hex_fields(out, "weights.hex")["weight_bit"]
    assert wl.shape == (2 * 3 * 64, 20)
    assert np.array_equal(wl[64 * 3 + 0, :5], BinaryFormat(5).encode(W[64, 0])[0])  # t=1,u=0


def test_vectors_folder_is_written_atomically(tmp_path, monkeypatch):
    import imcsim.verify.vectors as vec
    cfg = config()
    X, W = operands(BinaryFormat(6), B=1, M=20, N=3)

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(vec, "_write_h5", boom)
    with pytest.raises(OSError):
        write_vectors(tmp_path / "v", cfg, W, X, BinaryFormat(6), BinaryFormat(5))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_vectors(tmp_path / "v", cfg, W, X, BinaryFormat(6), BinaryFormat(5))
    with pytest.raises(ValueError, match="not empty"):
        write_vectors(tmp_path / "v", cfg, W, X, BinaryFormat(6), BinaryFormat(5))
    write_vectors(tmp_path / "v", cfg, W, X, BinaryFormat(6), BinaryFormat(5), force=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not a vectors folder"):
        write_vectors(tmp_path / "other", cfg, W, X, BinaryFormat(6), BinaryFormat(5),
                      force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "v"]


def test_vectors_command_from_files_and_random(tmp_path):
    runner = CliRunner()
    out = tmp_path / "rand"
    res = runner.invoke(vectors_command, [str(out), "--rows", "64", "--columns", "8",
                                          "--adc-bits", "5", "--x-format", "radix4:8",
                                          "--w-format", "binary:4", "--shape", "64", "2",
                                          "--vref", "dual", "--acc-bits", "20",
                                          "--random", "3"])
    assert res.exit_code == 0, res.output
    assert "array cycles" in res.output and "code_boundary" in res.output
    man = load_manifest(out)
    assert man["vref"] == {"mode": "dual", "full_scale": 64, "dual_low": 31, "dual_high": 64}
    assert man["config"]["nmc"]["acc_bits"] == 20
    rng = np.random.default_rng(0)
    np.save(tmp_path / "w.npy", rng.integers(-8, 9, (30, 4)))
    np.save(tmp_path / "x.npy", rng.integers(-16, 17, (2, 30)))
    res = runner.invoke(vectors_command, [str(tmp_path / "files"), "--w", str(tmp_path / "w.npy"),
                                          "--x", str(tmp_path / "x.npy"), "--no-corners"])
    assert res.exit_code == 0, res.output
    man = load_manifest(tmp_path / "files")
    assert [v["label"] for v in man["vectors"]] == ["given", "given"]
    assert man["n_cycles"] == 2 * 6


@pytest.mark.parametrize("args, match", [
    (["--x-format", "binary:2"], "bits"),
    (["--w-format", "radix4:8"], "w-format"),
    (["--rows", "16"], "rows"),
    (["--random", "-1"], "random"),
])
def test_vectors_command_errors_are_one_line_and_leave_nothing(tmp_path, args, match):
    res = CliRunner().invoke(vectors_command, [str(tmp_path / "v")] + args)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and match in lines[0], res.output
    assert not (tmp_path / "v").exists()
    assert list(tmp_path.iterdir()) == []
