"""Hypothesis fuzz of the public API and of ``imcsim check`` inputs (issue 10).

Whatever the arguments, ``Macro.mvm`` / ``mvm_traced`` / ``store_weights`` either return or
raise ValueError / TypeError; whatever the dump, ``imcsim check`` exits 0, 1 or 2, and with 2
prints exactly one line.  Bounded for CI (``IMCSIM_FUZZ_EXAMPLES``, default 25 per test); set it
higher to search longer.
"""
import csv
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from imcsim.cli.verify import check_command
from imcsim.config import Overflow, Rounding
from imcsim.verify.golden import SIGNALS
from imcsim.verify.vectors import make_operands, write_vectors

EXAMPLES = int(os.environ.get("IMCSIM_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize="IMCSIM_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# --- the public API ---------------------------------------------------------------------------
@st.composite
def configs(draw):
    adc_bits = draw(st.integers(3, 6))
    top = (1 << adc_bits) - 1
    rows = draw(st.integers(top, 80))
    mode = draw(st.sampled_from(list(VrefMode)))
    low = draw(st.integers(top, rows))
    vref = VrefConfig(mode=mode, full_scale=draw(st.integers(top, rows)), dual_low=low,
                      dual_high=draw(st.integers(low, rows)))
    nmc = NmcConfig(scale_frac_bits=draw(st.sampled_from([0, 8, 16, 24])),
                    acc_bits=draw(st.sampled_from([8, 20, 48, 62])),
                    overflow=draw(st.sampled_from(list(Overflow))),
                    half_lsb_reconstruction=draw(st.booleans()),
                    out_frac_bits=draw(st.sampled_from([0, 12, 40])),
                    out_bits=draw(st.sampled_from([8, 48, 62])),
                    out_rounding=draw(st.sampled_from(list(Rounding))))
    sigma = draw(st.sampled_from([0.0, 0.3]))
    return MacroConfig(rows=rows, columns=draw(st.integers(3, 24)), adc_bits=adc_bits,
                       chip_seed=draw(st.integers(0, 3)), vref=vref, nmc=nmc,
                       mask_zero_inputs=draw(st.booleans()),
                       nonideal=NonIdealityConfig(comparator_noise_sigma=sigma,
                                                  cell_cap_sigma=sigma / 10))


FORMATS = st.one_of(st.builds(BinaryFormat, st.integers(3, 8)),
                    st.builds(Radix4Format, st.sampled_from([4, 6, 8])),
                    st.sampled_from([None, "binary:6", 6, BinaryFormat]))
DTYPES = ["int8", "int16", "int64", "uint8", "uint64", "float16", "float32", "float64",
          ">i8", ">f8", "bool", "complex128", "object", "<U2"]
VALUES = st.one_of(st.integers(-70, 70), st.sampled_from([0, 1, -1, 0.25, 4.0, 1.5, 2 ** 40,
                                                          float("nan"), float("inf")]))


@st.composite
def operands(draw, name):
    """Mostly plausible 2-D arrays, sometimes anything: wrong rank, dtype, layout, a list."""
    kind = draw(st.sampled_from(["array"] * 8 + ["list", "scalar", "1-D", "3-D", "empty"]))
    rows, cols = draw(st.integers(1, 5)), draw(st.integers(1, 90))
    if kind == "list":
        return [[1, 2], [3, 4]]
    if kind == "scalar":
        return np.int64(3)
    shape = {"1-D": (cols,), "3-D": (rows, cols, 2), "empty": (0, cols)}.get(kind, (rows, cols))
    dtype = draw(st.sampled_from(DTYPES))
    n = int(np.prod(shape))
    vals = draw(st.lists(VALUES, min_size=min(n, 1), max_size=min(n, 6)))
    base = np.resize(np.array(vals or [0], dtype=object), shape)
    try:
        arr = base.astype(dtype)
    except (ValueError, OverflowError, TypeError):
        arr = np.zeros(shape, dtype=dtype)
    if draw(st.booleans()) and arr.ndim == 2:
        arr = np.asfortranarray(arr)
    if draw(st.booleans()) and arr.ndim == 2 and arr.shape[1] > 1:
        arr = np.concatenate([arr, arr], axis=1)[:, ::2]          # strided view
    return arr


@st.composite
def mvm_calls(draw):
    config = draw(configs())
    X = draw(operands("X"))
    W = draw(operands("W"))
    if draw(st.booleans()) and isinstance(X, np.ndarray) and isinstance(W, np.ndarray) \
            and X.ndim == 2 and W.ndim == 2:
        W = np.resize(W, (X.shape[1], max(1, W.shape[1] % 7)))   # matching inner dimension
    kw = {}
    if draw(st.booleans()):
        kw["seed"] = draw(st.one_of(st.integers(-5, 2 ** 64), st.sampled_from([True, 1.5])))
    if draw(st.booleans()):
        kw["vector_offset"] = draw(st.integers(-2, 2 ** 63))
    if draw(st.booleans()):
        kw["vref"] = draw(st.sampled_from([None, "variable", config.vref]))
    return config, X, W, draw(FORMATS), draw(FORMATS), kw, draw(st.sampled_from(
        ["mvm", "codes", "traced", "stored"]))


@FUZZ
@given(call=mvm_calls())
def test_fuzz_public_api_raises_only_value_or_type_errors(call):
    config, X, W, xf, wf, kw, how = call
    macro = Macro(config)
    try:
        if how == "traced":
            res = macro.mvm_traced(X, W, xf, wf, **kw)
        elif how == "stored":
            stored = macro.store_weights(W, wf)
            res = macro.mvm(X, stored, xf, **kw)
        else:
            res = macro.mvm(X, W, xf, wf, return_codes=how == "codes", **kw)
    except (ValueError, TypeError) as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip(), repr(exc)
        return
    assert res.y.shape == (X.shape[0], W.shape[1]) and np.isfinite(res.y).all()


# --- imcsim check -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    cfg = MacroConfig(rows=32, columns=8, adc_bits=4,
                      vref=VrefConfig(mode=VrefMode.VARIABLE, full_scale=32, dual_low=15,
                                      dual_high=32))
    xf, wf = BinaryFormat(4), BinaryFormat(4)
    ops = make_operands(cfg, xf, wf, inner=32, outputs=2, n_random=1, seed=1, corners=False)
    root = tmp_path_factory.mktemp("fuzz")
    write_vectors(root / "vec", cfg, ops.W, ops.X, xf, wf, seed=2, labels=ops.labels)
    return root / "vec"


def _check(expected, actual, *extra):
    res = CliRunner().invoke(check_command, [str(expected), str(actual), *extra])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code in (0, 1, 2), (res.exit_code, res.output, res.exception)
    if res.exit_code == 2:
        assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    else:
        assert not lines, res.stderr
    assert "Traceback" not in res.output
    return res


CELLS = st.one_of(st.integers(-3, 40).map(str),
                  st.sampled_from(["", "1.5", "1e30", "1" + "0" * 30, "-0", "0x1f", "nan",
                                   "abc", " 7 ", "99999999999999999999", "-1", "3;4", '"5"']),
                  st.text(max_size=4))
HEADERS = st.lists(st.sampled_from(["cycle", "column", "output", "signal", "index", "value",
                                    "tile_row", "vector", "bogus", ""] + list(SIGNALS)),
                   min_size=1, max_size=6)


@FUZZ
@given(header=HEADERS, rows=st.lists(st.lists(CELLS, max_size=7), max_size=12),
       raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_fuzz_check_csv_exits_0_1_2_with_one_error_line(expected, header, rows, raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "actual.csv"
        if raw is not None and not rows:
            path.write_bytes(raw)
        else:
            with open(path, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(header)
                w.writerows(rows)
        _check(expected, path)


H5_DTYPES = ["int8", "int64", "uint64", "float64", "bool", ">i4", "S3"]


@st.composite
def h5_dumps(draw):
    names = draw(st.lists(st.sampled_from(list(SIGNALS) + ["tile_row", "tile_col", "vector",
                                                           "plane", "cycle", "other"]),
                          min_size=1, max_size=6, unique=True))
    n = draw(st.integers(0, 8))
    out = {}
    for name in names:
        shape = draw(st.sampled_from([(), (n,), (n, 8), (n, 8, 4), (n + 1, 2), (n, 1, 1, 1)]))
        dtype = draw(st.sampled_from(H5_DTYPES))
        vals = draw(st.lists(VALUES, min_size=1, max_size=5))
        base = np.resize(np.array(vals, dtype=object), shape)
        try:
            out[name] = base.astype(dtype)
        except (ValueError, OverflowError, TypeError):
            out[name] = np.zeros(shape, dtype=dtype)
    return draw(st.sampled_from(["/", "/cycles"])), out, draw(st.sampled_from(
        [None, "vectors", "trace"]))


@FUZZ
@given(dump=h5_dumps())
def test_fuzz_check_hdf5_exits_0_1_2_with_one_error_line(expected, dump):
    group, datasets, pretend = dump
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "actual.h5"
        with h5py.File(path, "w") as f:
            g = f if group == "/" or pretend else f.create_group("cycles")
            if pretend:                       # claims to be an imcsim file, holds anything
                g = f.create_group("cycles")
                f.attrs["config_json"] = "{}" if pretend == "trace" else "{\"rows\": 3}"
                f.attrs["n_planes"] = 4
                f.attrs["schema_version"] = "1.0"
                if pretend == "vectors":
                    f.attrs["format"] = "imcsim-vectors"
            for name, data in datasets.items():
                g[name] = data
        _check(expected, path)


VCD_LINES = st.one_of(
    st.sampled_from(["$var wire 1 ! eoc $end", "$var wire 4 \" code_0 $end",
                     "$var real 64 # code_1 $end", "$scope module m $end", "$upscope $end",
                     "$enddefinitions $end", "#0", "#1", "#2", "1!", "0!", "b1010 \"",
                     "b1x \"", "r2.0 #", "r0.5 #", "x!", "$dumpvars", "#-1", "b2 \"", "q"]),
    st.text(max_size=6))


@FUZZ
@given(lines=st.lists(VCD_LINES, max_size=14),
       smap=st.sampled_from([(), ("--map", "code=code_{c}"), ("--map", "code=code_{q}:4"),
                             ("--map", "code=code_0:0"), ("--map", "y_int=code_0")]))
def test_fuzz_check_vcd_exits_0_1_2_with_one_error_line(expected, lines, smap):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "actual.vcd"
        path.write_text("\n".join(lines) + "\n")
        _check(expected, path, *smap)


# --- mutations of a valid dump: a value that is not an integer never passes ----------------------
@FUZZ
@given(data=st.data())
def test_fuzz_mutated_vectors_never_pass_a_non_integer_or_conflicting_value(expected, data):
    with h5py.File(expected / "vectors.h5") as f:
        valid = {k: f["cycles"][k][()] for k in ("code", "column_count", "active_rows",
                                                   "nmc_acc")}
    name = data.draw(st.sampled_from(sorted(valid)))
    arr = valid[name].astype(np.float64)
    at = tuple(data.draw(st.integers(0, s - 1)) for s in arr.shape)
    arr[at] += data.draw(st.sampled_from([0.5, -0.25, 1e-9, float("nan"), 2.0 ** 70]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "actual.h5"
        with h5py.File(path, "w") as f:
            for k, v in valid.items():
                f[k] = arr if k == name else v
        assert _check(expected, path).exit_code == 2
        # the same cycle twice with two values, in a CSV: refused, never the last one winning
        code = valid["code"]
        rows = [[c, k, int(code[c, k])] for c in range(code.shape[0])
                for k in range(code.shape[1])]
        i = data.draw(st.integers(0, len(rows) - 1))
        dup = [rows[i][0], rows[i][1], rows[i][2] + data.draw(st.sampled_from([1, -1, 7]))]
        rows.insert(data.draw(st.integers(0, len(rows))), dup)
        path = Path(tmp) / "actual.csv"
        with open(path, "w", newline="") as fh:
            csv.writer(fh).writerows([["cycle", "column", "code"]] + rows)
        assert _check(expected, path).exit_code == 2
