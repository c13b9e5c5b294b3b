"""Compare a dump from RTL simulation or silicon with the golden model's expected response.

EXPECTED is a vectors folder (``imcsim vectors``), its ``vectors.h5``, or an HDF5 trace
(``imcsim mvm --trace``).  ACTUAL is one of

- HDF5: another vectors file or trace, or any file with a ``/cycles`` group (or root datasets)
  named after the signals; rows are matched by (tile_row, tile_col, vector, plane) when the
  file has those datasets, else by the ``cycle`` dataset, else by row order;
- CSV: wide (``cycle,column,code,column_count,...``; per-output signals with an ``output``
  column) or long (``cycle,signal,index,value``);
- VCD, sampled on a strobe (default ``eoc``, the trace export's), with a signal-name map;
- a folder of hex files with a ``manifest.json`` (the vectors layout, e.g. ``$writememh``).

``cycle`` always means the index of the array cycle in EXPECTED (its hex line / HDF5 row).
Signals: docs/golden-model.md.  ``compare`` returns a ``CheckReport``; ``imcsim check`` prints it.
"""
from __future__ import annotations

import bisect
import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from imcsim.atomic import check_schema_version
from imcsim.config import MacroConfig
from imcsim.formats import parse_format
from imcsim.verify.dumps import check_actual, read_dataset
from imcsim.verify.golden import (
    COLUMN_SIGNALS,
    OUTPUT_SIGNALS,
    SCALAR_SIGNALS,
    SIGNALS,
    Mismatch,
    pack_decisions,
)
from imcsim.verify.trace import first_message
from imcsim.verify.vcd import read_vcd
from imcsim.verify.vectors import (
    MANIFEST_NAME,
    VECTORS_FORMAT,
    VECTORS_VERSION,
    find_vectors_h5,
    load_manifest,
    read_hex_fields,
)

KEYS = ("tile_row", "tile_col", "vector", "plane")
#: signals that follow from the codes: not compared in tolerance mode
DERIVED_SIGNALS = ("sar_decision", "nmc_acc", "y_int", "column_value")
DEFAULT_VCD_MAP = {"valid": "eoc", "code": "code_{c}", "active_rows": "active_rows",
                   "full_scale": "full_scale"}
INT64_MAX = (1 << 63) - 1
#: largest column / output index a CSV may give (beyond any array's columns)
MAX_INDEX = 1 << 16
#: exceptions that mean a dump or an expected file is malformed, whatever raised them
MALFORMED = (KeyError, IndexError, TypeError, OverflowError, AttributeError, UnicodeError,
             csv.Error, json.JSONDecodeError)


def as_int64(data, where: str) -> np.ndarray:
    """Values of a signal as int64; ValueError naming ``where`` for anything that is not an
    integer in int64's range (1.5, NaN, 1e30, strings), so no value is truncated into a PASS."""
    arr = np.asarray(data)
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.int64)
    if kind == "i":
        return arr.astype(np.int64, copy=False)
    if kind == "u":
        if arr.size and int(arr.max()) > INT64_MAX:
            raise ValueError(f"{where}: value {int(arr.max())} is out of the int64 range")
        return arr.astype(np.int64)
    if kind == "f":
        bad = ~np.isfinite(arr)
        if not bad.any():
            bad = (arr != np.round(arr)) | (np.abs(arr) >= 2.0 ** 63)
        if bad.any():
            at = tuple(int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"{where}: value {arr[at].item()!r} at "
                             f"{at if len(at) > 1 else at[0]} "
                             "is not an integer in the int64 range (codes and counts are "
                             "integers)")
        return arr.astype(np.int64)
    raise ValueError(f"{where}: expected integers, got dtype {arr.dtype}")


def _malformed(source, exc: BaseException) -> ValueError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ValueError(f"{source}: malformed ({type(exc).__name__}{': ' + text if text else ''})")


# --- tables ----------------------------------------------------------------------------
@dataclass
class SignalTable:
    """Per array cycle values of some signals.

    values[name] : int64 (n, width); present[name] : bool (n, width) (False: not given /
    padding).  keys : {tile_row, tile_col, vector, plane: int64 (n,)} when known.
    """

    n: int
    values: dict[str, np.ndarray] = field(default_factory=dict)
    present: dict[str, np.ndarray] = field(default_factory=dict)
    keys: dict[str, np.ndarray] | None = None
    widths: dict[str, int] = field(default_factory=dict)   # element widths, for bus splitting
    signed: dict[str, bool] = field(default_factory=dict)
    source: str = ""

    def add(self, name: str, values, present=None) -> None:
        """Add a signal: values (n,) or (n, width); present: False where not given."""
        values = np.asarray(values, dtype=np.int64)
        if values.ndim == 1:
            values = values[:, None]
        self.values[name] = values
        self.present[name] = (np.ones(values.shape, dtype=bool) if present is None
                              else np.asarray(present, dtype=bool).reshape(values.shape))


def _signal_kind(name):
    if name in SCALAR_SIGNALS:
        return "scalar"
    if name in COLUMN_SIGNALS:
        return "column"
    if name in OUTPUT_SIGNALS:
        return "output"
    raise ValueError(f"signal: unknown signal {name!r}; known: {', '.join(SIGNALS)}")


def _h5_is_vectors(f) -> bool:
    fmt = f.attrs.get("format")
    if isinstance(fmt, (bytes, np.bytes_)):
        fmt = bytes(fmt).decode(errors="replace")
    return fmt == VECTORS_FORMAT


def _check_vectors_schema(f, source) -> None:
    """A vectors file's ``schema_version``: present, MAJOR.MINOR, and not of a newer major
    than this reader's (ValueError naming the file).  Every vectors file imcsim wrote has one;
    a file given directly (not as its folder) used to be read whatever its version."""
    version = f.attrs.get("schema_version")
    if version is None:
        raise ValueError(f"{source}: vectors file without a schema_version attribute")
    if isinstance(version, np.ndarray) or not isinstance(version, (str, bytes, np.bytes_)):
        raise ValueError(f"{source}: vectors schema version {str(version)[:20]!r} is not "
                         "MAJOR.MINOR")
    check_schema_version(version, VECTORS_VERSION, source, "vectors schema version")


def _h5_is_trace(f) -> bool:
    return "config_json" in f.attrs and "cycles" in f and "n_planes" in f.attrs \
        and not _h5_is_vectors(f)


#: /cycles datasets of an imcsim vectors file or trace and their dimensions (1: per cycle)
_IMCSIM_DATASETS = {"tile_row": 1, "tile_col": 1, "vector": 1, "plane": 1, "n_columns": 1,
                    "output_index": 2, "code": 2, "active_rows": 1, "full_scale": 1,
                    "level_sum": 1,
                    "column_count": 2, "column_value": 2, "sar_decision": 3,
                    "group_done": 1, "y_int": 2}
_IMCSIM_REQUIRED = KEYS + ("n_columns", "output_index", "code")


def _check_imcsim_h5(f, source) -> None:
    """The datasets an imcsim vectors file or trace must have, with one row per cycle."""
    if _h5_is_vectors(f):
        # first: a newer major schema may lay out everything below differently
        _check_vectors_schema(f, source)
    if _h5_is_trace(f):
        from imcsim.verify.trace import validate_trace
        validate_trace(f, source)
    g = f["cycles"]
    if not isinstance(g, h5py.Group):
        raise ValueError(f"{source}: /cycles is not a group")
    n = None
    for name, ndim in _IMCSIM_DATASETS.items():
        ds = g.get(name)
        if ds is None:
            if name in _IMCSIM_REQUIRED:
                raise ValueError(f"{source}: imcsim file without /cycles/{name}")
            continue
        if not isinstance(ds, h5py.Dataset) or ds.ndim != ndim:
            raise ValueError(f"{source}: dataset /cycles/{name} must be a {ndim}-D array, got "
                             f"{getattr(ds, 'shape', type(ds).__name__)}")
        if n is None:
            n = ds.shape[0]
        elif ds.shape[0] != n:
            raise ValueError(f"{source}: dataset /cycles/{name} has {ds.shape[0]} rows, "
                             f"/cycles/tile_row has {n}")
    acc = g.get("nmc_acc")
    if acc is not None and (not isinstance(acc, h5py.Dataset) or acc.ndim not in (2, 3)
                            or acc.shape[0] != n):
        raise ValueError(f"{source}: dataset /cycles/nmc_acc must have {n} rows of 2 or 3 "
                         "dimensions")
    if "y_int" in g and "group_done" not in g:
        raise ValueError(f"{source}: /cycles/y_int without /cycles/group_done")
    if g["output_index"].shape[1:] and acc is not None and acc.shape[1] != \
            g["output_index"].shape[1]:
        raise ValueError(f"{source}: /cycles/nmc_acc and /cycles/output_index disagree in "
                         "their outputs")
    if not _h5_is_vectors(f):
        for name in ("tiles", "n_planes"):
            if name not in f.attrs:
                raise ValueError(f"{source}: trace without the attribute {name}")
        if "result" in f and not isinstance(f["result"].get("y_int"), h5py.Dataset):
            raise ValueError(f"{source}: /result without the dataset y_int")


def _table_from_imcsim_h5(f, source) -> SignalTable:
    """A vectors file or a trace -> SignalTable with every signal and the keys."""
    _check_imcsim_h5(f, source)
    g = f["cycles"]
    n = int(g["n_columns"].shape[0])
    try:
        config = MacroConfig.from_json(f.attrs["config_json"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: attribute config_json is not a macro config "
                         f"({first_message(exc)})") from None

    def read(name):
        return as_int64(read_dataset(g[name], source), f"{source}: /cycles/{name}")

    tab = SignalTable(n, keys={k: read(k) for k in KEYS}, source=source)
    n_cols = read("n_columns")
    C = g["code"].shape[1]
    col_ok = np.arange(C)[None, :] < n_cols[:, None]
    out_idx = read("output_index")
    out_ok = out_idx >= 0
    for name in ("active_rows", "full_scale", "level_sum"):
        if name in g:
            tab.add(name, read(name))
    for name in ("column_count", "code", "column_value"):
        if name in g:
            tab.add(name, read(name), col_ok)
    if "sar_decision" in g:
        tab.add("sar_decision", pack_decisions(read("sar_decision")), col_ok)
    acc = read("nmc_acc") if "nmc_acc" in g else None
    if _h5_is_vectors(f):
        if acc is not None:
            tab.add("nmc_acc", acc, out_ok)
        if "y_int" in g:
            done = read("group_done").astype(bool)
            tab.add("y_int", read("y_int"), out_ok & done[:, None])
    else:                                             # trace: (n, G, Kw) steps
        if acc is not None:
            tab.add("nmc_acc", acc[:, :, -1] if acc.ndim == 3 else acc, out_ok)
        T, _ = (int(v) for v in f.attrs["tiles"])
        P = int(f.attrs["n_planes"])
        done = (tab.keys["tile_row"] == T - 1) & (tab.keys["plane"] == P - 1)
        if "result" in f:
            y_all = as_int64(read_dataset(f["result"]["y_int"], source), f"{source}: /result/y_int")
            if y_all.ndim != 2 or not y_all.size:
                raise ValueError(f"{source}: /result/y_int must be a non-empty (B, N) array")
            b = tab.keys["vector"] - int(f.attrs.get("vector_offset", 0))
            rows = np.clip(b, 0, y_all.shape[0] - 1)
            cols = np.clip(out_idx, 0, y_all.shape[1] - 1)
            y = np.where(out_ok, y_all[rows[:, None], cols], 0)
            tab.add("y_int", y, out_ok & done[:, None])
    # counts 0..rows * D in level units (docs/hardware-model.md 4.8; D = 1: rows)
    top_level = parse_format(str(f.attrs["x_format"])).top_level \
        if "x_format" in f.attrs else 1
    cnt_bits = (config.rows * top_level).bit_length()
    tab.widths = {"active_rows": config.rows.bit_length(), "full_scale": cnt_bits,
                  "level_sum": cnt_bits, "column_count": cnt_bits, "code": config.adc_bits,
                  "sar_decision": config.adc_bits, "column_value": 64,
                  "nmc_acc": config.nmc.acc_bits, "y_int": config.nmc.out_bits}
    tab.signed = {"column_value": True, "nmc_acc": True, "y_int": True}
    return tab


def load_expected(path: str | Path) -> SignalTable:
    """EXPECTED: a vectors folder, its vectors.h5, or an HDF5 trace."""
    path = Path(path)
    if path.is_dir():
        path = find_vectors_h5(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")

    def table(f):
        if not (_h5_is_vectors(f) or _h5_is_trace(f)):
            raise ValueError(f"{path}: neither an imcsim vectors file nor a trace")
        return _table_from_imcsim_h5(f, str(path))
    return _read_h5(path, table)


def _load_actual_h5(path) -> SignalTable:
    def table(f):
        if _h5_is_vectors(f) or _h5_is_trace(f):
            return _table_from_imcsim_h5(f, str(path))
        return _table_from_plain_h5(f, path)
    return _read_h5(path, table)


def _read_h5(path, table) -> SignalTable:
    """``table(f)`` of the open HDF5 file ``path``; whatever a malformed or damaged file
    raises becomes one ValueError naming it."""
    try:
        f = h5py.File(path, "r")
    except Exception as exc:                  # OSError, and whatever a damaged file raises
        raise ValueError(f"{path}: not an HDF5 file ({first_message(exc)})") from None
    with f:
        try:
            return table(f)
        except MALFORMED as exc:
            raise _malformed(path, exc) from None
        except (OSError, RuntimeError) as exc:    # h5py on a damaged object header or heap
            raise ValueError(f"{path}: cannot read it, the file is damaged "
                             f"({first_message(exc)})") from None


#: dimensions a signal dataset of a plain HDF5 dump may have (per cycle: scalar, per column)
_PLAIN_NDIM = {"sar_decision": (1, 2, 3), "nmc_acc": (1, 2, 3)}


def _table_from_plain_h5(f, path) -> SignalTable:
    g = f["cycles"] if isinstance(f.get("cycles"), h5py.Group) else f
    where = "/cycles" if g is not f else ""
    names = [k for k in g if isinstance(g[k], h5py.Dataset)]
    sig = [k for k in names if k in SIGNALS]
    if not sig:
        raise ValueError(f"{path}: no signal datasets ({', '.join(SIGNALS)}) in "
                         f"{where or '/'}")
    n = None
    for name in sig + [k for k in KEYS + ("cycle",) if k in names]:
        ds = g[name]
        allowed = _PLAIN_NDIM.get(name, (1, 2) if name in SIGNALS else (1,))
        if ds.ndim not in allowed:
            raise ValueError(f"{path}: dataset {where}/{name} has shape {ds.shape}; expected "
                             f"one row per cycle ({' or '.join(f'{d}-D' for d in allowed)})")
        if n is None:
            n, first = ds.shape[0], name
        elif ds.shape[0] != n:
            raise ValueError(f"{path}: dataset {where}/{name} has {ds.shape[0]} rows, "
                             f"{first} has {n}")

    def read(name):
        return as_int64(read_dataset(g[name], path), f"{path}: dataset {where}/{name}")

    keys = {k: read(k) for k in KEYS if k in names}
    tab = SignalTable(n, keys=keys if len(keys) == len(KEYS) else None, source=str(path))
    if tab.keys is None and "cycle" in names:
        tab.keys = {"cycle": read("cycle")}
    for name in sig:
        data = read(name)
        if name == "sar_decision" and data.ndim == 3:
            if data.size and (data.min() < 0 or data.max() > 1):
                raise ValueError(f"{path}: dataset {where}/sar_decision (n, C, Nb) must hold "
                                 "0/1 decisions")
            data = pack_decisions(data)
        if name == "nmc_acc" and data.ndim == 3:
            data = data[:, :, -1]
        tab.add(name, data)
    return tab


def _load_actual_csv(path) -> SignalTable:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or []) if h is not None]
            rows = [{k.strip(): (v or "").strip() for k, v in r.items()
                     if k is not None and isinstance(v, (str, type(None)))} for r in reader]
    except (UnicodeError, csv.Error) as exc:
        raise ValueError(f"{path}: not a readable CSV file ({first_message(exc)})") from None
    if "cycle" not in header:
        raise ValueError(f"{path}: CSV needs a 'cycle' column, got {header}")
    entries = {}                                     # signal -> {(cycle, index): value}
    lines = {}                                       # (signal, cycle, index) -> first line

    def number(text, what, line, signal):
        try:
            v = int(text, 0)
        except (ValueError, TypeError):
            raise ValueError(f"{path}: line {line}: {what} {text!r} of {signal} is not an "
                             "integer") from None
        if not -INT64_MAX - 1 <= v <= INT64_MAX:
            raise ValueError(f"{path}: line {line}: {what} {text} of {signal} is out of the "
                             "int64 range")
        return v

    def put(signal, cycle, index, value, line):
        try:
            kind = _signal_kind(signal)
        except ValueError as exc:
            raise ValueError(f"{path}: line {line}: {exc}") from None
        c = number(cycle, "cycle", line, signal)
        if c < 0:
            raise ValueError(f"{path}: line {line}: negative cycle {c}")
        if kind == "scalar":
            if index not in (None, "", "-1", "0"):
                raise ValueError(f"{path}: line {line}: {signal} is one value per cycle; "
                                 f"got index {index!r}")
            i = -1
        else:
            i = number(index, "index", line, signal)
            if not 0 <= i < MAX_INDEX:
                raise ValueError(f"{path}: line {line}: index {i} of {signal} must lie in "
                                 f"[0, {MAX_INDEX})")
        v = number(value, "value", line, signal)
        key = (c, i)
        table = entries.setdefault(signal, {})
        if key in table and table[key] != v:
            where = f"cycle {c}" + ("" if i < 0 else f", index {i}")
            raise ValueError(f"{path}: lines {lines[(signal, c, i)]} and {line} give "
                             f"{signal} at {where} two values ({table[key]} and {v})")
        table[key] = v
        lines.setdefault((signal, c, i), line)

    if "signal" in header and "value" in header:     # long format
        for line, r in enumerate(rows, start=2):
            put(r.get("signal", ""), r.get("cycle", ""), r.get("index") or None,
                r.get("value", ""), line)
    else:                                            # wide format
        signals = [h for h in header if h in SIGNALS]
        extra = [h for h in header if h not in SIGNALS and h not in
                 ("cycle", "column", "output") + KEYS]
        if extra:
            raise ValueError(f"{path}: unknown CSV columns {extra}; signals are "
                             f"{', '.join(SIGNALS)}")
        for line, r in enumerate(rows, start=2):
            for s in signals:
                if not r.get(s):
                    continue
                kind = _signal_kind(s)
                key = {"column": "column", "output": "output"}.get(kind)
                if key and not r.get(key):
                    raise ValueError(f"{path}: line {line}: {s} needs a '{key}' column value")
                put(s, r.get("cycle", ""), r[key] if key else None, r[s], line)
    return _table_from_entries(entries, str(path))


def _table_from_entries(entries: dict, source: str) -> SignalTable:
    """One table row per distinct cycle (keys ``cycle``), so a sparse or far-out cycle number
    costs nothing; values absent from the dump are marked not present."""
    if not entries:
        raise ValueError(f"{source}: no values")
    cycles = np.array(sorted({c for e in entries.values() for c, _ in e}), dtype=np.int64)
    row_of = {int(c): r for r, c in enumerate(cycles)}
    tab = SignalTable(len(cycles), source=source, keys={"cycle": cycles})
    for s, e in entries.items():
        width = 1 + max(max(i for _, i in e), 0)
        vals = np.zeros((len(cycles), width), dtype=np.int64)
        pres = np.zeros((len(cycles), width), dtype=bool)
        for (c, i), v in e.items():
            vals[row_of[c], max(i, 0)] = v
            pres[row_of[c], max(i, 0)] = True
        tab.add(s, vals, pres)
    return tab


def parse_signal_map(items: Iterable[str] | None) -> dict[str, str]:
    """``name=signal`` pairs and/or JSON files -> {name: vcd signal}."""
    out = {}
    for item in items or ():
        p = Path(item)
        if "=" not in item and (p.suffix == ".json" or p.is_file()):
            try:
                data = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"map: cannot read {item} as JSON ({exc})") from None
            if not isinstance(data, dict):
                raise ValueError(f"map: {item} must hold an object {{name: signal}}")
            out.update({str(k): str(v) for k, v in data.items()})
            continue
        name, sep, sig = item.partition("=")
        if not sep or not name.strip() or not sig.strip():
            raise ValueError(f"map: expected name=signal or a JSON file, got {item!r}")
        out[name.strip()] = sig.strip()
    for name in out:
        if name not in ("valid", "clock") and name not in SIGNALS:
            raise ValueError(f"map: unknown name {name!r}; use valid, clock or one of "
                             f"{', '.join(SIGNALS)}")
    return out


def _load_actual_vcd(path, signal_map, expected: SignalTable) -> SignalTable:
    try:
        return _vcd_table(path, signal_map, expected)
    except ValueError as exc:                         # every message names the dump
        if str(path) in str(exc) or str(exc).startswith("map:"):
            raise
        raise ValueError(f"{path}: {exc}") from None


def _vcd_table(path, signal_map, expected: SignalTable) -> SignalTable:
    changes = read_vcd(path)
    user = bool(signal_map)
    smap = dict(signal_map) if user else dict(DEFAULT_VCD_MAP)
    smap.setdefault("valid", "eoc")
    series = {name: ([t for t, _ in ch], [v for _, v in ch]) for name, ch in changes.items()}

    def need(sig):
        if sig not in series:
            raise ValueError(f"{path}: VCD has no signal {sig!r} (map it with --map)")
        return series[sig]

    vt, vv = need(smap["valid"])
    if "clock" in smap:                               # sample at rising clock edges, valid=1
        ct, cv = need(smap["clock"])
        edges = [t for i, (t, v) in enumerate(zip(ct, cv)) if v == 1 and (i == 0 or cv[i - 1] != 1)]
        samples = [t for t in edges if _value_before(vt, vv, t) == 1]
        at = _value_before
    else:                                             # sample when valid rises
        samples = [t for i, (t, v) in enumerate(zip(vt, vv)) if v == 1 and (i == 0 or vv[i - 1] != 1)]
        at = _value_at
    n = len(samples)
    tab = SignalTable(max(n, 1), source=str(path))
    tab.n = n
    for name, sig in smap.items():
        if name in ("valid", "clock"):
            continue
        kind = _signal_kind(name)
        spec, _, width_txt = sig.partition(":")
        try:
            width = int(width_txt) if width_txt else expected.widths.get(name, 64)
        except ValueError:
            raise ValueError(f"map: {name}={sig}: the width after ':' must be an integer"
                             ) from None
        if not 1 <= width <= 64:
            raise ValueError(f"map: {name}={sig}: the width must lie in [1, 64]")
        if name not in expected.values:
            raise ValueError(f"map: {name}: EXPECTED has no signal {name}")
        signed = expected.signed.get(name, False)
        count = 1 if kind == "scalar" else expected.values[name].shape[1]
        if "{" in spec:                               # one VCD signal per column / output
            try:
                names = [spec.format(c=i, g=i, i=i) for i in range(count)]
            except (KeyError, IndexError, ValueError):
                raise ValueError(f"map: {name}={sig}: use {{c}} (or {{g}}, {{i}}) for the "
                                 "column / output index") from None
            present = [nm in series for nm in names]
            if not any(present):
                if user:
                    raise ValueError(f"{path}: VCD has none of {names[0]} .. {names[-1]}")
                continue
            vals = np.zeros((n, count), dtype=np.int64)
            pres = np.zeros((n, count), dtype=bool)
            for i, nm in enumerate(names):
                if not present[i]:
                    continue
                st, sv = series[nm]
                for j, t in enumerate(samples):
                    v = at(st, sv, t)
                    # x/z (read as -1) or no value yet: not a value -- a missing one, never
                    # the number -1 (which a tolerance could pass, or a signed signal hold)
                    if v is not None and v >= 0:
                        vals[j, i] = _signed(v, width, signed)
                        pres[j, i] = True
        else:
            if spec not in series:
                if user:
                    need(spec)
                continue
            st, sv = series[spec]
            vals = np.zeros((n, count), dtype=np.int64)
            pres = np.zeros((n, count), dtype=bool)
            for j, t in enumerate(samples):
                v = at(st, sv, t)
                if v is not None and v >= 0:              # x/z or no value: missing, as above
                    v = _signed(v, 64, False)
                    for i in range(count):
                        vals[j, i] = _signed((v >> (i * width)) & ((1 << width) - 1), width,
                                             signed)
                    pres[j] = True
        tab.add(name, vals, pres)
    if not tab.values:
        raise ValueError(f"{path}: no mapped signal found in the VCD")
    return tab


def _value_at(times, values, t):
    i = bisect.bisect_right(times, t) - 1
    return values[i] if i >= 0 else None


def _value_before(times, values, t):
    i = bisect.bisect_left(times, t) - 1
    return values[i] if i >= 0 else None


def _signed(v, width, signed):
    if v is None or v < 0:
        return -1
    if isinstance(v, float):                          # a real VCD value: integers only
        if v != int(v):
            raise ValueError(f"VCD value {v} is not an integer (codes and counts are "
                             "integers)")
        v = int(v)
    if signed and width < 64 and v >> (width - 1):
        return v - (1 << width)
    return v


def _check_manifest(folder, man) -> None:
    """The manifest entries the hex reader uses, with sane sizes (ValueError otherwise)."""
    def bad(what):
        return ValueError(f"{folder}/{MANIFEST_NAME}: {what}")

    if not isinstance(man, dict) or not isinstance(man.get("files"), list):
        raise bad("needs a list 'files'")
    n = man.get("n_cycles")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise bad("needs 'n_cycles', an integer >= 0")
    for entry in man["files"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) \
                or not isinstance(entry.get("fields"), list):
            raise bad("every entry of 'files' needs 'file' and a list 'fields'")
        if Path(entry["file"]).name != entry["file"]:
            raise bad(f"file {entry['file']!r} must be a plain name in the folder")
        for fld in entry["fields"]:
            if not isinstance(fld, dict) or not isinstance(fld.get("name"), str):
                raise bad(f"{entry['file']}: every field needs a 'name'")
            for key, lo, hi in (("lsb", 0, 1 << 20), ("count", 1, MAX_INDEX),
                                ("width", 1, 64)):
                v = fld.get(key)
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise bad(f"{entry['file']}: field {fld['name']}: {key} must be an "
                              f"integer in [{lo}, {hi}], got {v!r}")


def _load_actual_hex(folder) -> SignalTable:
    try:
        man = load_manifest(folder)
    except (OSError, UnicodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{folder}/{MANIFEST_NAME}: cannot read it as JSON "
                         f"({first_message(exc)})") from None
    _check_manifest(folder, man)
    names = {f["file"]: [x["name"] for x in f["fields"]] for f in man["files"]}
    n = int(man["n_cycles"])
    tab = SignalTable(n, source=str(folder))
    for fname, fields in names.items():
        present = [s for s in fields if s in SIGNALS]
        if not present or not (Path(folder) / fname).is_file():
            continue
        data = read_hex_fields(folder, fname)
        for s in present:
            if data[s].shape[0] != n:
                raise ValueError(f"{folder}/{fname}: {data[s].shape[0]} lines, the manifest "
                                 f"says {n}")
            tab.add(s, data[s])
    ctrl = Path(folder) / "ctrl.hex"
    if ctrl.is_file():
        c = read_hex_fields(folder, "ctrl.hex")
        tab.keys = {k: c[k][:, 0] for k in KEYS}
        if "y_int" in tab.values:                     # valid on group_done lines only
            tab.present["y_int"] &= c["group_done"].astype(bool)
    if not tab.values:
        raise ValueError(f"{folder}: no signal hex files")
    return tab


def load_actual(path: str | Path, fmt: str = "auto", signal_map: dict[str, str] | None = None,
                expected: SignalTable | None = None) -> SignalTable:
    """ACTUAL: HDF5, CSV, VCD or a hex folder (``fmt``: auto, h5, csv, vcd, hex)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if fmt == "auto":
        if path.is_dir():
            fmt = "hex"
        else:
            fmt = {".h5": "h5", ".hdf5": "h5", ".csv": "csv", ".vcd": "vcd"}.get(
                path.suffix.lower())
            if fmt is None:
                raise ValueError(f"{path}: cannot tell the format from the suffix; use "
                                 "--format h5|csv|vcd|hex")
    if fmt != "hex" and path.is_dir():
        raise ValueError(f"{path}: a folder; only a hex dump (--format hex) is a folder")
    try:
        if fmt == "hex":
            if not (path / MANIFEST_NAME).is_file():
                raise ValueError(f"{path}: a hex dump folder needs a {MANIFEST_NAME}")
            return _load_actual_hex(path)
        if fmt == "h5":
            return _load_actual_h5(path)
        if fmt == "csv":
            return _load_actual_csv(path)
        if fmt == "vcd":
            if expected is None:
                raise ValueError("vcd: needs the expected table for bus widths")
            return _load_actual_vcd(path, signal_map or {}, expected)
    except MALFORMED as exc:                          # whatever else a damaged dump raises
        raise _malformed(path, exc) from None
    raise ValueError(f"format: expected auto, h5, csv, vcd or hex, got {fmt!r}")


# --- comparison --------------------------------------------------------------------------
@dataclass
class CheckReport:
    """The outcome of a comparison: what was compared, every mismatch, code error statistics."""

    expected_cycles: int
    actual_cycles: int
    compared: dict[str, int]             # signal -> values compared
    mismatches: list[Mismatch]           # in (cycle, signal, index) order
    extra_cycles: int = 0                # actual rows that match no expected cycle
    code_errors: np.ndarray | None = None    # got - expected of every compared code
    tolerance: int | None = None
    skipped: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.mismatches and not self.extra_cycles and sum(self.compared.values()) > 0

    def by_signal(self) -> dict[str, int]:
        out = {}
        for m in self.mismatches:
            out[m.signal] = out.get(m.signal, 0) + 1
        return out

    def by_column(self) -> dict[tuple[str, int], int]:
        """{(kind, index): mismatches} for per-column ('column') and per-output signals."""
        out = {}
        for m in self.mismatches:
            if m.index >= 0:
                key = ("column" if m.signal in COLUMN_SIGNALS else "output", m.index)
                out[key] = out.get(key, 0) + 1
        return out

    def code_error_stats(self) -> dict | None:
        """n, mean, sigma, max abs(e) and histogram of the code errors (got - expected)."""
        e = self.code_errors
        if e is None or not e.size:
            return None
        values, counts = np.unique(e, return_counts=True)
        return {"n": int(e.size), "mean": float(e.mean()), "sigma": float(e.std()),
                "max_abs": int(np.abs(e).max()),
                "histogram": {int(v): int(c) for v, c in zip(values, counts)}}

    def to_dict(self, max_report: int = 100) -> dict:
        """JSON-ready summary (``imcsim check --json``)."""
        return {"passed": self.passed, "expected_cycles": self.expected_cycles,
                "actual_cycles": self.actual_cycles, "compared": self.compared,
                "mismatch_count": len(self.mismatches), "extra_cycles": self.extra_cycles,
                "by_signal": self.by_signal(),
                "by_column": {f"{k} {i}": v for (k, i), v in sorted(self.by_column().items())},
                "first_mismatches": [m.__dict__ for m in self.mismatches[:max_report]],
                "tolerance": self.tolerance, "skipped_signals": list(self.skipped),
                "code_errors": self.code_error_stats()}

    def format(self, max_report: int = 20) -> str:
        """The report as text: compared counts, statistics, PASS or the first mismatches."""
        lines = [f"compared {self.actual_cycles} actual against {self.expected_cycles} "
                 "expected array cycles: " + ", ".join(f"{k} {v}" for k, v in
                                                      self.compared.items())]
        if self.skipped:
            lines.append(f"not compared in tolerance mode: {', '.join(self.skipped)}")
        if self.tolerance is not None:
            lines.append(f"tolerance: codes within +/-{self.tolerance} LSB")
        st = self.code_error_stats()
        if st is not None and (self.tolerance is not None or st["max_abs"]):
            lines.append(f"code error (got - expected): n {st['n']}, mean {st['mean']:+.4f}, "
                         f"sigma {st['sigma']:.4f}, max |e| {st['max_abs']}")
            peak = max(st["histogram"].values())
            for v, c in st["histogram"].items():
                bar = "#" * max(1, round(40 * c / peak))
                lines.append(f"  {v:+4d} LSB: {c:8d} {bar}")
        if self.passed:
            lines.append("PASS: no mismatches")
            return "\n".join(lines)
        if not sum(self.compared.values()):
            lines.append("FAIL: nothing was compared (no common signals or cycles)")
        if self.extra_cycles:
            lines.append(f"FAIL: {self.extra_cycles} actual cycles have no expected cycle")
        if self.mismatches:
            lines.append(f"FAIL: {len(self.mismatches)} mismatches; first "
                         f"{min(max_report, len(self.mismatches))}:")
            lines.append(f"  {'cycle':>7} {'vector':>6} {'plane':>5} {'column':>10} "
                         f"{'signal':>13} {'expected':>14} {'got':>14}")
            for m in self.mismatches[:max_report]:
                where = "-" if m.index < 0 else (f"{m.index}" if m.signal in COLUMN_SIGNALS
                                                 else f"out {m.index}")
                got = "missing" if m.got is None else m.got
                lines.append(f"  {m.cycle:>7} {m.vector:>6} {m.plane:>5} {where:>10} "
                             f"{m.signal:>13} {m.expected:>14} {got!s:>14}")
            lines.append("summary by signal: " + ", ".join(
                f"{s} {c}/{self.compared.get(s, 0)}" for s, c in self.by_signal().items()))
            cols = sorted(self.by_column().items())
            if cols:
                lines.append("summary by column: " + ", ".join(
                    f"{k} {i}: {c}" for (k, i), c in cols))
        return "\n".join(lines)


def _align(expected: SignalTable, actual: SignalTable):
    """Expected row of every actual row (-1: none).

    Two actual rows for one expected cycle are refused (ValueError naming both): otherwise the
    last would silently win.
    """
    ek, ak = expected.keys, actual.keys
    if ek is not None and ak is not None and all(k in ak for k in KEYS):
        index = {tuple(int(ek[k][i]) for k in KEYS): i for i in range(expected.n)}
        rows = np.array([index.get(tuple(int(ak[k][j]) for k in KEYS), -1)
                         for j in range(actual.n)], dtype=np.int64)
        how = "tile_row/tile_col/vector/plane"
    elif ak is not None and "cycle" in ak:
        rows = ak["cycle"].astype(np.int64)
        rows = np.where((rows >= 0) & (rows < expected.n), rows, -1)
        how = "cycle"
    else:
        rows = np.arange(actual.n, dtype=np.int64)
        return np.where(rows < expected.n, rows, -1)
    matched = rows[rows >= 0]
    if matched.size != np.unique(matched).size:
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        dup = np.nonzero((srt[1:] == srt[:-1]) & (srt[1:] >= 0))[0][0]
        a, b = sorted((int(order[dup]), int(order[dup + 1])))
        raise ValueError(f"{actual.source}: rows {a} and {b} are both expected cycle "
                         f"{int(srt[dup])} (same {how}); a dump must give each cycle once")
    return rows


def compare(expected: SignalTable, actual: SignalTable, *, tolerance: int | None = None,
            signals: Sequence[str] | None = None) -> CheckReport:
    """Compare every signal ACTUAL has (or ``signals``) with EXPECTED."""
    names = [s for s in SIGNALS if s in actual.values and s in expected.values]
    if signals:
        unknown = [s for s in signals if s not in SIGNALS]
        if unknown:
            raise ValueError(f"signals: unknown {unknown}; known: {', '.join(SIGNALS)}")
        missing = [s for s in signals if s not in actual.values]
        if missing:
            raise ValueError(f"signals: {', '.join(missing)} not in {actual.source}")
        names = [s for s in names if s in signals]
    skipped = ()
    if tolerance is not None:
        skipped = tuple(s for s in names if s in DERIVED_SIGNALS)
        names = [s for s in names if s not in DERIVED_SIGNALS]
    # a value past the tile or a code outside [0, L] is bad input, never cut off or compared
    # within a tolerance (both passed before; imcsim.verify.dumps)
    check_actual(expected, actual, names)
    rows = _align(expected, actual)
    extra = int((rows < 0).sum())
    keys = expected.keys or {}
    mismatches, compared, code_err = [], {}, None
    for s in names:
        ev, ep = expected.values[s], expected.present[s]
        av, ap = actual.values[s], actual.present[s]
        w = ev.shape[1]
        if av.shape[1] > w:                           # nothing is present there (checked)
            av, ap = av[:, :w], ap[:, :w]
        # gather actual onto expected rows
        got = np.zeros(ev.shape, dtype=np.int64)
        have = np.zeros(ev.shape, dtype=bool)
        ok = rows >= 0
        got[rows[ok], :av.shape[1]] = av[ok]
        have[rows[ok], :ap.shape[1]] = ap[ok]
        check = ep & have
        missing = ep & ~have
        tol = tolerance if (s == "code" and tolerance is not None) else 0
        diff = got - ev
        bad = check & (np.abs(diff) > tol)
        compared[s] = int(check.sum())
        if s == "code":
            code_err = diff[check]
        for i, j in zip(*np.nonzero(bad | missing)):
            mismatches.append(Mismatch(
                int(i), s, -1 if s in SCALAR_SIGNALS else int(j), int(ev[i, j]),
                None if missing[i, j] else int(got[i, j]),
                int(keys["vector"][i]) if keys else -1, int(keys["plane"][i]) if keys else -1,
                int(keys["tile_row"][i]) if keys else 0, int(keys["tile_col"][i]) if keys else 0))
    order = {s: k for k, s in enumerate(SIGNALS)}
    mismatches.sort(key=lambda m: (m.cycle, order[m.signal], m.index))
    return CheckReport(expected.n, actual.n, compared, mismatches, extra, code_err, tolerance,
                       skipped)


def check_files(expected_path: str | Path, actual_path: str | Path, *, fmt: str = "auto",
                signal_map: dict[str, str] | None = None, tolerance: int | None = None,
                signals: Sequence[str] | None = None) -> CheckReport:
    """Load EXPECTED and ACTUAL and compare them.

    A dump with nothing to compare (no signal or no cycle in common) is bad input
    (ValueError), not a mismatch: ``imcsim check`` exits 1 only for mismatches.
    """
    expected = load_expected(expected_path)
    actual = load_actual(actual_path, fmt, signal_map, expected)
    report = compare(expected, actual, tolerance=tolerance, signals=signals)
    if not sum(report.compared.values()):
        common = [s for s in SIGNALS if s in actual.values and s in expected.values]
        why = ("no signal in common" if not common else
               f"no cycle in common (signals {', '.join(common)})")
        raise ValueError(f"{actual_path}: nothing to compare with {expected_path}: {why}")
    return report
