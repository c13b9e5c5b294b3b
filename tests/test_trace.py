"""HDF5 traces: content equals the result, selection, atomic writes, reader, VCD round trip."""
import json

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imcsim import BinaryFormat, Macro, MacroConfig, NonIdealityConfig, Radix4Format
from imcsim.cycles import run_cycle_level
from imcsim.verify.trace import SCHEMA_VERSION, TraceFile, TraceSelection, TraceSink
from imcsim.verify.vcd import read_vcd

from test_equivalence import make_config, mvm_cases, x_format  # noqa: E402

NONIDEAL = NonIdealityConfig(cell_cap_sigma=0.01, parasitic_ratio=0.02, cdac_unit_sigma=0.01,
                             comparator_offset_sigma=0.3, comparator_noise_sigma=0.2,
                             sampling_noise_sigma=0.2)


@pytest.fixture(scope="module")
def operands():
    rng = np.random.default_rng(0)
    return rng.integers(-16, 17, (3, 70)), rng.integers(-8, 9, (70, 9))


def small_macro(nonideal=NONIDEAL):
    return Macro(MacroConfig(rows=64, columns=20, adc_bits=6, nonideal=nonideal, chip_seed=1,
                             vref=dict_vref()))


def dict_vref():
    from imcsim import VrefConfig, VrefMode
    return VrefConfig(mode=VrefMode.VARIABLE, full_scale=64, dual_low=63, dual_high=64)


def test_trace_records_every_cycle_consistently_with_the_result(tmp_path, operands):
    X, W = operands
    m = small_macro()
    path = tmp_path / "t.h5"
    res = m.mvm_traced(X, W, BinaryFormat(6), BinaryFormat(5), seed=4, trace=path)
    fast = m.mvm(X, W, BinaryFormat(6), BinaryFormat(5), seed=4, return_codes=True)
    assert np.array_equal(res.y_int, fast.y_int) and np.array_equal(res.codes, fast.codes)
    with TraceFile(path) as tf:
        a = tf.attrs
        assert a["schema_version"] == SCHEMA_VERSION and a["seed"] == 4
        assert json.loads(a["config_json"])["rows"] == 64
        T, U = (int(v) for v in a["tiles"])
        assert (T, U) == (2, 3)                      # 70 rows / 64; 9 outputs / 4 per tile
        assert tf.n_cycles == T * U * 3 * 6
        for i in range(tf.n_cycles):
            rec = tf.cycle(i)
            t, u, b, p = (int(rec[k]) for k in ("tile_row", "tile_col", "vector", "plane"))
            n0 = 4 * u
            n_out = len(rec["output_index"])
            got = rec["code"].reshape(n_out, 5)
            assert np.array_equal(got, res.codes[t, b, p, n0:n0 + n_out])
            assert rec["full_scale"] == res.full_scale[t, b, p]
            assert rec["active_rows"] == rec["row_mask"].sum() == res.active_rows[t, b, p]
            assert np.array_equal(rec["sar_trial"][:, -1] >> 1 << 1,
                                  rec["code"] >> 1 << 1)    # last trial shares the upper bits
        assert np.array_equal(tf.file["result"]["y_int"][()], res.y_int)
        assert int(tf.file["events"]["adc_conversions"][()].sum()) == \
            res.events.total()["adc_conversions"]
        last = tf.cycle(tf.n_cycles - 1)
        # the final accumulator step of the last cycle of the last row tile is the output
        assert last["tile_row"] == T - 1 and last["plane"] == 5


def test_selection_limits_what_is_recorded(tmp_path, operands):
    X, W = operands
    path = tmp_path / "sel.h5"
    sel = TraceSelection(tiles=((1, 2),), vectors="1:3", planes=(0, 5), cycles="0:12")
    small_macro().mvm_traced(X, W, BinaryFormat(6), BinaryFormat(5), trace=path, selection=sel)
    with TraceFile(path) as tf:
        recs = [tf.cycle(i) for i in range(tf.n_cycles)]
    keys = [(int(r["tile_row"]), int(r["tile_col"]), int(r["vector"]), int(r["plane"]))
            for r in recs]
    assert keys == [(1, 2, 1, 0), (1, 2, 1, 5)]       # vector 2 starts at serial cycle 12
    with pytest.raises(ValueError, match="vectors"):
        TraceSelection(vectors="5:2")


def test_failed_run_leaves_no_partial_trace(tmp_path, operands, monkeypatch):
    X, W = operands
    path = tmp_path / "boom.h5"
    import imcsim.cycles as cycles
    kernel, calls = cycles.tile_cycles, []

    def explode_on_the_third_block(*a, **k):
        calls.append(1)
        if len(calls) == 3:            # after two blocks went to the file
            raise RuntimeError("simulated failure")
        return kernel(*a, **k)
    monkeypatch.setattr(cycles, "tile_cycles", explode_on_the_third_block)
    with pytest.raises(RuntimeError):
        small_macro().mvm_traced(X, W, BinaryFormat(6), BinaryFormat(5), trace=path)
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []


def test_unwritable_trace_path_is_rejected_before_running(tmp_path, operands):
    X, W = operands
    with pytest.raises(ValueError, match="does not exist"):
        small_macro().mvm_traced(X, W, BinaryFormat(6), BinaryFormat(5),
                                 trace=tmp_path / "no" / "t.h5")


def test_reader_rejects_non_traces(tmp_path):
    bogus = tmp_path / "x.h5"
    with h5py.File(bogus, "w") as f:
        f["a"] = 1
    with pytest.raises(ValueError, match="not an imcsim trace"):
        TraceFile(bogus)
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(ValueError, match="not an HDF5"):
        TraceFile(tmp_path / "t.txt")


def test_vcd_export_reads_back(tmp_path, operands):
    X, W = operands
    path = tmp_path / "r4.h5"
    rng = np.random.default_rng(1)
    Xr = np.where(rng.random(X.shape) < 0.3, 4.0 ** rng.integers(-3, 4, X.shape), 0.0)
    res = small_macro().mvm_traced(Xr, W, Radix4Format(8), BinaryFormat(5), trace=path,
                                   selection=TraceSelection(tiles=((0, 0),), vectors="0:1"))
    with TraceFile(path) as tf:
        vcd = tf.export_vcd(tmp_path / "r4.vcd", max_columns=6)
        recs = [tf.cycle(i) for i in range(tf.n_cycles)]
    sig = read_vcd(vcd)
    eoc_times = [t for t, v in sig["eoc"] if v == 1]
    assert len(eoc_times) == len(recs) == 7

    def value_at(name, time):
        val = None
        for t, v in sig[name]:
            if t <= time:
                val = v
        return val
    for rec, t_eoc in zip(recs, eoc_times):
        for c in range(6):
            assert value_at(f"code_{c}", t_eoc) == rec["code"][c]
            for s in range(6):
                step_time = t_eoc - 6 + s
                assert value_at(f"trial_{c}", step_time) == rec["sar_trial"][c, s]
                assert value_at(f"cmp_{c}", step_time) == rec["sar_decision"][c, s]
        assert value_at("active_rows", t_eoc) == rec["active_rows"]
        mask = value_at("row_mask", t_eoc)
        assert [(mask >> r) & 1 for r in range(len(rec["row_mask"]))] == rec["row_mask"].tolist()
    assert res.codes.shape[0] == 2


def test_read_vcd_scopes_aliases_and_reals(tmp_path):
    text = """$timescale 1ns $end
$scope module top $end
$var wire 1 ! clk $end
$scope module dut $end
$var wire 4 " code $end
$var wire 4 " code_alias $end
$var real 64 # vref $end
$var wire 1 ! clk $end
$upscope $end
$upscope $end
$enddefinitions $end
#0
0!
b0101 "
r0.8 #
#5
1!
bx1x0 "
"""
    path = tmp_path / "a.vcd"
    path.write_text(text)
    sig = read_vcd(path)
    assert sig["top.dut.code"] == sig["code"] == [(0, 5), (5, -1)]
    assert sig["code_alias"] == [(0, 5), (5, -1)]
    assert sig["vref"] == [(0, 0.8)]
    assert sig["top.clk"] == sig["top.dut.clk"] == [(0, 0), (5, 1)]
    assert "clk" not in sig                      # ambiguous leaf: only hierarchical names


class RecordingSink:
    """A CycleSink of the test's own: keeps every other plane's cycles, counts the calls."""

    def __init__(self, fail_after=None):
        self.records, self.closed, self.aborted, self.fail_after = [], None, False, fail_after

    def selects(self, rec, n_planes):
        return rec.plane % 2 == 0

    def add(self, rec):
        if self.fail_after is not None and len(self.records) == self.fail_after:
            raise RuntimeError("sink full")
        self.records.append((rec.t, rec.u, rec.b, rec.plane, rec.outcome.code.copy()))

    def close(self, result):
        self.closed = result

    def abort(self):
        self.aborted = True


def test_the_cycle_path_feeds_any_sink_and_aborts_it_on_failure(tmp_path, operands):
    """The cycle-level path knows only the CycleSink protocol: a sink of another kind gets the
    selected cycles with the codes of the HDF5 trace, is closed with the result, and is
    aborted when the MVM fails."""
    X, W = operands
    m = small_macro()
    sink = RecordingSink()
    res = m.mvm_traced(X, W, BinaryFormat(6), BinaryFormat(5), seed=4, sink=sink)
    assert sink.closed is res and not sink.aborted
    assert sink.records and all(p % 2 == 0 for _, _, _, p, _ in sink.records)
    path = tmp_path / "t.h5"
    m.mvm_traced(X, W, BinaryFormat(6), BinaryFormat(5), seed=4, trace=path,
                 selection=TraceSelection(planes=(0, 2, 4)))
    with TraceFile(path) as tf:
        traced = [tf.cycle(i) for i in range(tf.n_cycles)]
    assert len(traced) == len(sink.records)
    for rec, (t, u, b, plane, code) in zip(traced, sink.records):
        assert (int(rec["tile_row"]), int(rec["tile_col"]), int(rec["vector"]),
                int(rec["plane"])) == (t, u, b, plane)
        assert np.array_equal(rec["code"].ravel(), code.ravel())
    failing = RecordingSink(fail_after=2)
    with pytest.raises(RuntimeError, match="sink full"):
        m.mvm_traced(X, W, BinaryFormat(6), BinaryFormat(5), seed=4, sink=failing)
    assert failing.aborted and failing.closed is None
    with pytest.raises(ValueError, match="sink"):
        m.mvm_traced(X, W, BinaryFormat(6), BinaryFormat(5), trace=tmp_path / "x.h5",
                     sink=RecordingSink())
    assert not (tmp_path / "x.h5").exists()


class PerCycleTrace:
    """The HDF5 trace sink without its block methods: the per-cycle stepper feeds it."""

    def __init__(self, sink):
        self.sink = sink

    def selects(self, rec, n_planes):
        return self.sink.selects(rec, n_planes)

    def add(self, rec):
        self.sink.add(rec)

    def close(self, result):
        self.sink.close(result)

    def abort(self):
        self.sink.abort()


def _selection(draw_seed: int, B: int, P: int, T: int, U: int):
    rng = np.random.default_rng(draw_seed)
    kind = draw_seed % 5
    if kind == 0:
        return None
    if kind == 1:
        lo = int(rng.integers(0, B))
        return TraceSelection(vectors=(lo, int(rng.integers(lo + 1, B + 1))))
    if kind == 2:
        return TraceSelection(planes=tuple(sorted({int(v) for v in rng.integers(0, P, 2)})))
    if kind == 3:
        lo = int(rng.integers(0, B * P))
        return TraceSelection(cycles=(lo, int(rng.integers(lo + 1, B * P + 1))))
    return TraceSelection(tiles=((int(rng.integers(0, T)), int(rng.integers(0, U))),))


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mvm_cases(), st.integers(0, 2**16), st.sampled_from([0, 5, 2**40]))
def test_compiled_trace_equals_the_per_cycle_trace(tmp_path_factory, case, select_seed,
                                                   vector_offset):
    """The compiled cycle-level path (``run_cycle_blocks``) writes the same trace, dataset
    for dataset, as the per-cycle stepper, at every config extreme the twin's cases reach,
    under every kind of selection; and the same result."""
    X, W, p = case
    macro = Macro(make_config(p))
    fmt = x_format(p)
    prep = macro.prepare(X, W, fmt, BinaryFormat(p["Kw"]), seed=p["seed"],
                         vector_offset=vector_offset)
    plan = prep.plan
    sel = _selection(select_seed, prep.batch, prep.n_planes, plan.row_tiles, plan.col_tiles)
    folder = tmp_path_factory.mktemp("traces")
    results = {}
    for name in ("compiled", "per_cycle"):
        prep = macro.prepare(X, W, fmt, BinaryFormat(p["Kw"]), seed=p["seed"],
                             vector_offset=vector_offset)
        sink = TraceSink(folder / f"{name}.h5", macro, prep, sel)
        try:
            results[name] = run_cycle_level(macro, prep,
                                            sink if name == "compiled" else PerCycleTrace(sink))
        except ValueError as exc:           # a selection of no cycle: refused by both
            assert "recorded no cycle" in str(exc)
            results[name] = None
    if results["compiled"] is None:
        assert results["per_cycle"] is None
        return
    a, b = results["compiled"], results["per_cycle"]
    assert np.array_equal(a.y_int, b.y_int) and np.array_equal(a.codes, b.codes)
    with h5py.File(folder / "compiled.h5") as fa, h5py.File(folder / "per_cycle.h5") as fb:
        assert set(fa["cycles"]) == set(fb["cycles"])
        for name in fb["cycles"]:
            assert np.array_equal(fa["cycles"][name][()], fb["cycles"][name][()]), name
        for group in ("result", "events"):
            for name in fb[group]:
                assert np.array_equal(fa[group][name][()], fb[group][name][()]), name


def test_records_without_a_trace_have_the_trace_datasets_dtypes(tmp_path, operands):
    """A run without a trace allocates its (empty) records in the trace's dtypes, so both
    use one compiled specialisation of ``kernels.cycle.tile_cycles``."""
    from imcsim.cycles import NoRecords
    X, W = operands
    m = small_macro()
    prep = m.prepare(X, W, BinaryFormat(6), BinaryFormat(5))
    sink = TraceSink(tmp_path / "t.h5", m, prep)
    traced = sink.new_records(2)
    spec = sink.writer.spec               # the /cycles datasets' row shapes and dtypes
    sink.abort()
    assert list(tmp_path.iterdir()) == []
    untraced = NoRecords(m, prep).new_records(2)
    for records in (traced, untraced):
        for name in records._fields:
            got, (shape, dtype) = getattr(records, name), spec[name]
            assert got.dtype == np.dtype(dtype) and got.shape == (2,) + shape, name


def test_both_deflate_encoders_write_the_same_trace_data(tmp_path, operands, monkeypatch):
    """ISA-L (extra ``trace``) and zlib write different bytes but the same datasets, which
    HDF5's own deflate filter reads back; a chunk either encoder wrote is a zlib stream."""
    import zlib

    import imcsim.verify.h5chunks as h5chunks
    pytest.importorskip("isal")
    X, W = operands
    data = {}
    for encoder in ("isal", "zlib"):
        if encoder == "zlib":
            monkeypatch.setattr(h5chunks, "deflate_encoder", lambda: ("zlib", zlib.compress))
        path = tmp_path / f"{encoder}.h5"
        small_macro().mvm_traced(X, W, BinaryFormat(6), BinaryFormat(5), seed=2, trace=path)
        with h5py.File(path) as f:
            data[encoder] = {name: f["cycles"][name][()] for name in f["cycles"]}
            ds = f["cycles"]["sar_trial"]
            _, chunk = ds.id.read_direct_chunk((0,) * ds.ndim)
            assert len(zlib.decompress(chunk)) == np.prod(ds.chunks) * ds.dtype.itemsize
    assert data["isal"].keys() == data["zlib"].keys()
    for name in data["zlib"]:
        assert np.array_equal(data["isal"][name], data["zlib"][name]), name
    assert h5chunks.deflate_encoder()[0] == "zlib"
    monkeypatch.undo()
    assert h5chunks.deflate_encoder()[0] == "isal"


def reference_row_signals(prep, t):
    """Row inputs, active flags and levels of every cycle of tile t, (B, P, R) each, in plain
    NumPy from the format's lookup tables: the reference of ``record_row_signals``."""
    r0, r1 = prep.plan.row_range(t)
    S, P = prep.level_bits, prep.n_planes
    idx = prep.x_units[:, r0:r1].astype(np.int64) + prep.lut_offset
    pattern = prep.pattern_lut[idx].astype(np.int64)[:, None, :]
    gate = prep.gate_lut[idx].astype(np.int64)[:, None, :]
    first = (S * np.arange(P))[None, :, None]
    bits = ((pattern >> first) & 1).astype(np.uint8)
    levels = sum(((gate >> (first + k)) & 1) << k for k in range(S)).astype(np.uint8)
    return bits, levels > 0, levels


@pytest.mark.parametrize("fmt", [BinaryFormat(6), BinaryFormat(9, 4), Radix4Format(8),
                                 Radix4Format(8, 3), Radix4Format(12, 3)])
def test_record_row_signals_equal_the_lookup_tables(fmt):
    """The compiled row-driver signals of any set of cycles, against the plain NumPy
    reference, for binary, multi-level and radix-4 rows (masked zeros included)."""
    rng = np.random.default_rng(7)
    from imcsim import VrefConfig
    cfg = MacroConfig(rows=200, columns=20, adc_bits=6, input_bits=max(1, fmt.top_level.bit_length()),
                      vref=VrefConfig(full_scale=200, dual_low=100, dual_high=200))
    if isinstance(fmt, Radix4Format):
        e = fmt.exponent_bias
        X = np.where(rng.random((5, 450)) < 0.4,
                     rng.choice([-1.0, 1.0], (5, 450)) * 4.0 ** rng.integers(-e, e + 1, (5, 450)),
                     0.0)
    else:
        X = rng.integers(-fmt.max_value, fmt.max_value + 1, (5, 450))
    prep = Macro(cfg).prepare(X, rng.integers(-8, 9, (450, 3)), fmt, BinaryFormat(5))
    for t in range(prep.plan.row_tiles):
        want = reference_row_signals(prep, t)
        got = prep.row_signals(t)
        for a, b in zip(want, got):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        vectors = rng.integers(0, 5, 11)
        planes = rng.integers(0, prep.n_planes, 11)
        for a, b in zip(want, prep.record_row_signals(t, vectors, planes)):
            assert np.array_equal(a[vectors, planes], b)
