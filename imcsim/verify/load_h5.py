"""HDF5 files as signal tables: EXPECTED (a vectors file or a trace) and HDF5 dumps.

An imcsim vectors file or trace gives every signal and the keys of each row; its layout is
checked before anything is read (a vectors file's schema version first, a trace's through
``verify.trace.validate_trace``).  Any other HDF5 file is a plain dump: datasets named after the
signals in ``/cycles`` (or the root), one row per cycle, placed by the keys, a ``cycle``
dataset, or row order.  Whatever a malformed or damaged file raises ends in one ValueError
naming it (a chunk that does not decompress: naming the dataset too).
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from imcsim.atomic import check_schema_version
from imcsim.config import MacroConfig
from imcsim.errors import first_line
from imcsim.formats import parse_format
from imcsim.verify.dumps import read_dataset
from imcsim.verify.golden import SIGNALS, pack_decisions
from imcsim.verify.table import KEYS, MALFORMED, SignalTable, as_int64, malformed
from imcsim.verify.vectors import VECTORS_FORMAT, VECTORS_VERSION, find_vectors_h5


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
                         f"({first_line(exc)})") from None

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


def load_h5_dump(path) -> SignalTable:
    """ACTUAL as HDF5: a vectors file, a trace, or a plain dump of signal datasets."""
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
        raise ValueError(f"{path}: not an HDF5 file ({first_line(exc)})") from None
    with f:
        try:
            return table(f)
        except MALFORMED as exc:
            raise malformed(path, exc) from None
        except (OSError, RuntimeError) as exc:    # h5py on a damaged object header or heap
            raise ValueError(f"{path}: cannot read it, the file is damaged "
                             f"({first_line(exc)})") from None


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



__all__ = ["load_expected", "load_h5_dump"]
