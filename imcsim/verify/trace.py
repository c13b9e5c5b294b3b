"""Per-cycle traces in HDF5: selection, writer, reader and VCD export.

Schema: docs/trace-format.md.  Files are written all-or-nothing (``imcsim.atomic``), so an
interrupted run never leaves a partial trace behind.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from imcsim.atomic import (
    AtomicOutputs,
    GuardedFile,  # noqa: F401 - re-exported: it lived here before imcsim.atomic
    H5Writer,
    check_schema_version,
    temporary_target,
)
from imcsim.cycles import new_trace_records
from imcsim.errors import first_line
from imcsim.kernels.hw import ANALOG_FRAC_BITS
from imcsim.verify.h5chunks import DEFLATE_LEVEL, ChunkAppender
from imcsim.verify.vcd import write_trace_vcd
from imcsim.version import __version__

SCHEMA_VERSION = "1.1"
#: datasets added by schema 1.1 (multi-level rows); a 1.0 trace has binary rows without them
DATASETS_SINCE_1_1 = ("row_level", "level_sum")
_FLUSH_EVERY = 256
#: datasets of /cycles and their number of dimensions (shapes: ``cycle_dataset_spec``)
CYCLE_DATASETS = {"tile_row": 1, "tile_col": 1, "vector": 1, "plane": 1, "cycle": 1,
                  "row_input": 2, "row_mask": 2, "row_level": 2, "active_rows": 1,
                  "level_sum": 1, "full_scale": 1,
                  "n_columns": 1, "column_count": 2, "column_value": 2, "sar_trial": 3,
                  "sar_decision": 3, "code": 2, "nmc_acc": 3, "output_index": 2}


def parse_range(text: str | tuple | None, name: str) -> tuple[int, int] | None:
    """'a:b' -> (a, b); 'a' -> (a, a+1); None -> None."""
    if text is None:
        return None
    if isinstance(text, tuple):
        lo, hi = text
    else:
        parts = str(text).split(":")
        try:
            if len(parts) == 1:
                lo = int(parts[0])
                hi = lo + 1
            elif len(parts) == 2:
                lo, hi = int(parts[0] or 0), int(parts[1])
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"{name}: expected 'start:stop' or an index, got {text!r}") from None
    if lo < 0 or hi <= lo:
        raise ValueError(f"{name}: need 0 <= start < stop, got {lo}:{hi}")
    return (int(lo), int(hi))


@dataclass(frozen=True)
class TraceSelection:
    """What a trace records; ``None`` means everything.

    tiles : ((row_tile, col_tile), ...)  tile operations to record.
    vectors : (start, stop)  vector indices within the call.
    planes : (plane, ...)  input planes.
    cycles : (start, stop)  serial cycle index within a tile operation (vector * P + plane).
    """

    tiles: tuple[tuple[int, int], ...] | None = None
    vectors: tuple[int, int] | str | None = None
    planes: tuple[int, ...] | None = None
    cycles: tuple[int, int] | str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "vectors", parse_range(self.vectors, "vectors"))
        object.__setattr__(self, "cycles", parse_range(self.cycles, "cycles"))
        if self.tiles is not None:
            tiles = tuple(tuple(int(v) for v in t) for t in self.tiles)
            bad = [t for t in tiles if len(t) != 2 or min(t) < 0]
            if bad or not tiles:
                raise ValueError(f"tiles: expected (row_tile, col_tile) pairs of indices >= 0, "
                                 f"got {bad[0] if bad else 'none'}")
            object.__setattr__(self, "tiles", tiles)
        if self.planes is not None:
            planes = tuple(int(p) for p in self.planes)
            if not planes or min(planes) < 0:
                raise ValueError(f"planes: expected plane indices >= 0, got {planes}")
            object.__setattr__(self, "planes", planes)

    def check_against(self, batch: int, n_planes: int, tiles: tuple[int, int],
                      names: dict[str, str] | None = None) -> None:
        """Refuse a selection that reaches outside the MVM (it would record nothing or less
        than asked): ValueError naming the option (``names`` maps field -> option name)."""
        names = names or {}
        T, U = tiles
        if self.vectors is not None and self.vectors[1] > batch:
            raise ValueError(f"{names.get('vectors', 'vectors')}: {self.vectors[0]}:"
                             f"{self.vectors[1]} reaches past the {batch} vectors (0:{batch})")
        if self.cycles is not None and self.cycles[1] > batch * n_planes:
            raise ValueError(f"{names.get('cycles', 'cycles')}: {self.cycles[0]}:"
                             f"{self.cycles[1]} reaches past the {batch * n_planes} serial "
                             f"cycles of a tile operation (0:{batch * n_planes})")
        if self.planes is not None and max(self.planes) >= n_planes:
            raise ValueError(f"{names.get('planes', 'planes')}: plane {max(self.planes)} does "
                             f"not exist; the input format has planes 0..{n_planes - 1}")
        if self.tiles is not None:
            for t, u in self.tiles:
                if t >= T or u >= U:
                    raise ValueError(f"{names.get('tiles', 'tiles')}: tile ({t}, {u}) does not "
                                     f"exist; the MVM has {T} x {U} tiles")

    def selects(self, t: int, u: int, b: int, p: int, n_planes: int) -> bool:
        """Whether the cycle of tile (t, u), vector b, plane p is recorded."""
        if self.tiles is not None and (t, u) not in self.tiles:
            return False
        if self.vectors is not None and not self.vectors[0] <= b < self.vectors[1]:
            return False
        if self.planes is not None and p not in self.planes:
            return False
        cyc = b * n_planes + p
        return self.cycles is None or self.cycles[0] <= cyc < self.cycles[1]

    def block_mask(self, t: int, u: int, b0: int, b1: int, n_planes: int) -> np.ndarray:
        """``selects`` of every cycle of vectors [b0, b1) of tile (t, u) at once: bool
        (b1 - b0, n_planes)."""
        b = np.arange(b0, b1, dtype=np.int64)[:, None]
        p = np.arange(n_planes, dtype=np.int64)[None, :]
        mask = np.ones((b1 - b0, n_planes), dtype=bool)
        if self.tiles is not None and (t, u) not in self.tiles:
            mask[:] = False
        if self.vectors is not None:
            mask &= (self.vectors[0] <= b) & (b < self.vectors[1])
        if self.planes is not None:
            mask &= np.isin(p, self.planes)
        if self.cycles is not None:
            cyc = b * n_planes + p
            mask &= (self.cycles[0] <= cyc) & (cyc < self.cycles[1])
        return mask


class TraceWriter:
    """Buffers recorded cycles and appends them to chunked, compressed datasets.

    The file appears at ``path`` only on :meth:`close`; :meth:`abort` leaves ``path`` as it
    was.  ``inputs``: files the caller reads, which the trace must not overwrite.  ``path``
    may be a temporary of the caller's ``AtomicOutputs`` (then the caller renames it, and
    errors name its target).  A failed write (full disk, file size limit) raises an OSError
    naming the target, and leaves nothing behind.
    """

    def __init__(self, path, macro, prep, *, inputs: Iterable = ()) -> None:
        target = temporary_target(path)
        if target is not None:                      # the caller's temporary: write it directly
            self.files = None
            self.tmp: Path = Path(path)
            self.path: Path = target
        else:
            self.files = AtomicOutputs(path, names=["trace"], inputs=inputs)
            self.path = self.files.targets[0]
            self.tmp = self.files.temporary(self.path)
        c, plan = macro.config, prep.plan
        self.rows = min(plan.inner, c.rows)
        self.cols = min(plan.outputs_per_tile, plan.outputs) * plan.weight_planes
        self.outputs = min(plan.outputs_per_tile, plan.outputs)
        self.kw = plan.weight_planes
        self.adc_bits = c.adc_bits
        self.n_planes = prep.n_planes
        self.vector_offset = prep.vector_offset
        self.buffer = []
        self.count = 0
        self.appender: ChunkAppender | None = None
        self.h5: H5Writer | None = None
        self.file = None
        try:
            self.h5 = H5Writer(self.tmp, self.path, "trace")
            self.file = self.h5.file
            self._create(c, prep, plan)
            self._check_written()
        except BaseException:
            self.abort()
            raise

    def _create(self, c, prep, plan) -> None:
        f = self.file
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["imcsim_version"] = __version__
        f.attrs["config_json"] = c.to_json()
        f.attrs["seed"] = prep.seed
        f.attrs["vector_offset"] = prep.vector_offset
        f.attrs["x_format"] = prep.x_format.spec()
        f.attrs["w_format"] = prep.w_format.spec()
        f.attrs["vref_json"] = json.dumps({"mode": prep.vref.mode.value,
                                           "full_scale": prep.vref.full_scale,
                                           "dual_low": prep.vref.dual_low,
                                           "dual_high": prep.vref.dual_high})
        f.attrs["shape_bmn"] = np.array([prep.batch, plan.inner, plan.outputs], dtype=np.int64)
        f.attrs["tiles"] = np.array([plan.row_tiles, plan.col_tiles], dtype=np.int64)
        f.attrs["n_planes"] = prep.n_planes
        f.attrs["analog_frac_bits"] = ANALOG_FRAC_BITS
        f.attrs["volts_per_row"] = c.volts_per_row
        f.attrs["top_level"] = prep.x_format.top_level     # column values in level units
        f.attrs["out_frac_bits"] = c.nmc.out_frac_bits
        g = f.create_group("cycles")
        packed = -(-self.rows // 8)
        self.spec = cycle_dataset_spec(packed, self.cols, self.adc_bits, self.outputs, self.kw)
        for name, (shape, dtype) in self.spec.items():
            chunk_rows = max(1, min(_FLUSH_EVERY, (1 << 20) // max(1, int(np.prod(shape or (1,)))
                                                                   * np.dtype(dtype).itemsize)))
            g.create_dataset(name, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype,
                             chunks=(chunk_rows,) + shape, compression="gzip",
                             compression_opts=DEFLATE_LEVEL, shuffle=True)
        g["column_value"].attrs["unit"] = f"rows * 2**-{ANALOG_FRAC_BITS}"
        self.appender = ChunkAppender(g, list(self.spec))

    def _check_written(self) -> None:
        """Raise the first failed write as an OSError naming the target."""
        if self.h5 is not None:
            self.h5.check()

    def add_cycle(self, **rec: Any) -> None:
        """Record one array cycle (fields: see docs/trace-format.md)."""
        self.buffer.append(rec)
        if len(self.buffer) >= _FLUSH_EVERY:
            self.flush()

    def packed_rows(self, bits: np.ndarray) -> np.ndarray:
        """Row bits (n, R) of one tile, R <= the trace's rows, as the datasets' bytes:
        uint8 (n, ceil(rows / 8)), little-endian, padded with 0."""
        padded = np.zeros((bits.shape[0], -(-self.rows // 8) * 8), dtype=np.uint8)
        padded[:, :bits.shape[1]] = bits
        return np.packbits(padded, axis=1, bitorder="little")

    def flush(self) -> None:
        """Append the buffered cycles to the file."""
        if not self.buffer:
            return
        n = len(self.buffer)
        rows = {}
        for name, (shape, dtype) in self.spec.items():
            data = np.zeros((n,) + shape, dtype=dtype)
            if name == "output_index":
                data[...] = -1
            for i, rec in enumerate(self.buffer):
                if name in ("row_input", "row_mask"):
                    data[i] = self.packed_rows(np.asarray(rec[name])[None])[0]
                elif name == "row_level":
                    data[i, : len(rec[name])] = rec[name]
                elif name == "tile_row":
                    data[i] = rec["t"]
                elif name == "tile_col":
                    data[i] = rec["u"]
                elif name == "n_columns":
                    data[i] = len(rec["code"])
                elif not shape:
                    data[i] = rec[name]
                else:
                    value = np.asarray(rec[name])
                    data[i][tuple(slice(0, s) for s in value.shape)] = value
            rows[name] = data
        self.buffer = []
        self.append(rows)

    def append(self, rows: dict[str, np.ndarray]) -> None:
        """Append whole datasets' worth of cycles at once (the compiled path's blocks):
        ``rows`` maps every /cycles dataset to an array of its dtype, (n,) + its row shape."""
        self.flush()
        self.appender.append(rows)
        self.count += len(rows["tile_row"])
        self._check_written()

    def close(self, result) -> Path:
        """Write the MVM's result and events, and move the file to its path.

        A selection that recorded no cycle is refused (ValueError): the trace would be empty.
        """
        self.flush()
        if not self.count:
            raise ValueError(f"trace: the selection recorded no cycle of this MVM; "
                             f"{self.path} was not written")
        self.appender.close()
        f = self.file
        r = f.create_group("result")
        r["y_int"] = result.y_int
        r["y"] = result.y
        r["full_scale"] = result.full_scale
        r["active_rows"] = result.active_rows
        e = f.create_group("events")
        for name, arr in result.events.per_tile.items():
            e[name] = arr
        f.attrs["n_cycles"] = self.count
        self.file = None
        self.h5.close()                   # raises a failed write, naming the target
        if self.files is not None:
            self.files.commit()
        return self.path

    def abort(self) -> None:
        """Close and delete the unfinished file; ``path`` stays as it was."""
        try:
            self.file = None
            if getattr(self, "appender", None) is not None:
                self.appender.abort()
            if self.h5 is not None:
                self.h5.abort()
        finally:
            if self.files is not None:
                self.files.abort()
            else:
                try:
                    self.tmp.unlink()
                except FileNotFoundError:
                    pass


class TraceSink:
    """The HDF5 trace as the cycle-level path's sink (``imcsim.cycles.CycleSink``): the cycles
    that ``selection`` picks go to a ``TraceWriter`` at ``path``; the file appears only when
    the MVM completes (``close``), never half-written (``abort``)."""

    def __init__(self, path, macro, prep, selection: TraceSelection | None = None, *,
                 inputs: Iterable = ()) -> None:
        self.selection = TraceSelection() if selection is None else selection
        self.writer = TraceWriter(path, macro, prep, inputs=inputs)

    def selects(self, rec, n_planes: int) -> bool:
        return self.selection.selects(rec.t, rec.u, rec.b, rec.plane, n_planes)

    def add(self, rec) -> None:
        out = rec.outcome
        self.writer.add_cycle(t=rec.t, u=rec.u, vector=rec.vector, plane=rec.plane,
                              cycle=rec.tile_cycle, row_input=rec.row_input,
                              row_mask=rec.row_mask, row_level=rec.row_level,
                              active_rows=rec.active_rows, level_sum=rec.level_sum,
                              full_scale=rec.full_scale, column_count=out.column_count,
                              column_value=out.column_value, sar_trial=out.sar_trial,
                              sar_decision=out.sar_decision, code=out.code,
                              nmc_acc=rec.nmc_steps, output_index=np.arange(*rec.output_range))

    # the compiled path's blocks (imcsim.cycles.BlockSink)
    def block_slots(self, t, u, b0, b1, n_planes):
        return self.selection.block_mask(t, u, b0, b1, n_planes)

    def new_records(self, n):
        w = self.writer
        return new_trace_records(n, w.cols, w.adc_bits, w.outputs, w.kw)

    def add_block(self, block) -> None:
        w = self.writer
        n = len(block.vectors)
        g0, g1 = block.output_range
        levels = np.zeros((n,) + w.spec["row_level"][0], dtype=np.uint8)
        levels[:, :block.row_level.shape[1]] = block.row_level
        index = np.full((n, w.outputs), -1, dtype=np.int32)
        index[:, :g1 - g0] = np.arange(g0, g1, dtype=np.int32)
        r = block.records
        w.append({"tile_row": np.full(n, block.t, np.int32),
                  "tile_col": np.full(n, block.u, np.int32),
                  "vector": block.vectors + w.vector_offset,
                  "plane": block.planes.astype(np.int32),
                  "cycle": block.vectors * w.n_planes + block.planes,
                  "row_input": w.packed_rows(block.row_input),
                  "row_mask": w.packed_rows(block.row_mask),
                  "row_level": levels, "active_rows": block.active_rows.astype(np.int32),
                  "level_sum": block.level_sum.astype(np.int32),
                  "full_scale": block.full_scale.astype(np.int32),
                  "n_columns": np.full(n, block.n_columns, np.int32),
                  "column_count": r.column_count, "column_value": r.column_value,
                  "sar_trial": r.sar_trial, "sar_decision": r.sar_decision, "code": r.code,
                  "nmc_acc": r.nmc_acc, "output_index": index})

    def close(self, result) -> None:
        self.writer.close(result)

    def abort(self) -> None:
        self.writer.abort()


def cycle_dataset_spec(packed: int, cols: int, adc_bits: int, outputs: int,
                       kw: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """{dataset: (shape of one row, dtype)} of /cycles (docs/trace-format.md)."""
    return {
        "tile_row": ((), np.int32), "tile_col": ((), np.int32), "vector": ((), np.int64),
        "plane": ((), np.int32), "cycle": ((), np.int64),
        "row_input": ((packed,), np.uint8), "row_mask": ((packed,), np.uint8),
        "row_level": ((packed * 8,), np.uint8),
        "active_rows": ((), np.int32), "level_sum": ((), np.int32), "full_scale": ((), np.int32),
        "n_columns": ((), np.int32),
        "column_count": ((cols,), np.int32), "column_value": ((cols,), np.int64),
        "sar_trial": ((cols, adc_bits), np.uint16),
        "sar_decision": ((cols, adc_bits), np.uint8),
        "code": ((cols,), np.uint16),
        "nmc_acc": ((outputs, kw), np.int64),
        "output_index": ((outputs,), np.int32),
    }


def validate_trace(f: h5py.File, path) -> None:
    """Check every attribute and dataset a trace reader uses (ValueError naming the file and
    the attribute or dataset), so a damaged trace fails in one line, not in a KeyError later."""
    a = f.attrs

    def attr(name, kind):
        if name not in a:
            raise ValueError(f"{path}: attribute {name} is missing")
        value = a[name]
        try:
            if kind == "json":
                out = json.loads(value if isinstance(value, str) else bytes(value).decode())
                if not isinstance(out, dict):
                    raise ValueError
                return out
            if kind == "str":
                return str(value if not isinstance(value, bytes) else value.decode())
            if kind == "float":
                return float(np.asarray(value).reshape(()))
            arr = np.asarray(value)
            if arr.dtype.kind not in "iu":
                raise ValueError
            if kind == "int":
                return int(arr.reshape(()))
            if arr.shape != (kind,) or (arr < 0).any():
                raise ValueError
            return [int(v) for v in arr]
        except (ValueError, TypeError, UnicodeDecodeError):
            what = {"json": "a JSON object", "str": "a string", "float": "a number",
                    "int": "an integer"}.get(kind, f"{kind} non-negative integers")
            raise ValueError(f"{path}: attribute {name} must be {what}, got "
                             f"{str(value)[:40]!r}") from None

    # first: a newer major schema may lay out everything below differently
    version = check_schema_version(attr("schema_version", "str"), SCHEMA_VERSION, path,
                                   "trace schema version")
    cfg = attr("config_json", "json")
    for key in ("rows", "columns", "adc_bits"):
        if not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise ValueError(f"{path}: attribute config_json has no valid {key!r}")
    if "mode" not in attr("vref_json", "json"):
        raise ValueError(f"{path}: attribute vref_json has no 'mode'")
    for name in ("schema_version", "imcsim_version", "x_format", "w_format"):
        attr(name, "str")
    for name in ("seed", "n_planes", "analog_frac_bits"):
        attr(name, "int")
    attr("volts_per_row", "float")
    _, m, _ = attr("shape_bmn", 3)
    attr("tiles", 2)
    g = f["cycles"]
    if not isinstance(g, h5py.Group):
        raise ValueError(f"{path}: /cycles is not a group")
    shapes = {}
    old_schema = version == "1.0"
    for name in CYCLE_DATASETS:
        ds = g.get(name)
        if ds is None and old_schema and name in DATASETS_SINCE_1_1:
            continue                               # binary rows: level = mask, A = active
        if not isinstance(ds, h5py.Dataset):
            raise ValueError(f"{path}: dataset /cycles/{name} is missing")
        if ds.dtype.kind not in "iu" or ds.ndim != CYCLE_DATASETS[name]:
            raise ValueError(f"{path}: dataset /cycles/{name} must be an integer array "
                             f"with {CYCLE_DATASETS[name]} dimensions, got {ds.dtype} "
                             f"{ds.shape}")
        shapes[name] = ds.shape
    n = shapes["cycle"][0]
    rows = min(m, cfg["rows"])
    packed = shapes["row_input"][1]
    cols, nb = shapes["sar_trial"][1:]
    outs, kw = shapes["nmc_acc"][1:]
    expect = cycle_dataset_spec(packed, cols, nb, outs, kw)
    for name, (shape, _) in expect.items():
        if name in shapes and shapes[name] != (n,) + shape:
            raise ValueError(f"{path}: dataset /cycles/{name} has shape {shapes[name]}, "
                             f"expected {(n,) + shape}")
    if packed * 8 < rows:
        raise ValueError(f"{path}: dataset /cycles/row_input holds {packed * 8} rows, the "
                         f"MVM uses {rows}")
    if n:
        used = g["n_columns"][()]
        if used.min() < 0 or used.max() > cols:
            raise ValueError(f"{path}: dataset /cycles/n_columns must lie in [0, {cols}]")
    for group in ("events", "result"):
        if group in f:
            if not isinstance(f[group], h5py.Group):
                raise ValueError(f"{path}: /{group} is not a group")
            for name, ds in f[group].items():
                if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "iuf":
                    raise ValueError(f"{path}: /{group}/{name} is not a numeric dataset")


class TraceFile:
    """Read a trace written by ``Macro.mvm_traced(..., trace=PATH)``."""

    def __init__(self, path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such trace file")
        try:
            self.file = h5py.File(path, "r")
        except Exception as exc:                  # OSError, and whatever a damaged file raises
            raise ValueError(f"{path}: not an HDF5 trace ({first_line(exc)})") from None
        self.path: Path = path
        try:
            if self.file.attrs.get("schema_version") is None or "cycles" not in self.file:
                raise ValueError(f"{path}: not an imcsim trace (no schema_version or /cycles)")
            self._validate()
        except BaseException as exc:
            self.file.close()
            if isinstance(exc, ValueError):
                raise
            if isinstance(exc, Exception):
                raise ValueError(f"{path}: unreadable trace ({type(exc).__name__}: "
                                 f"{first_line(exc)})") from None
            raise

    def _validate(self) -> None:
        validate_trace(self.file, self.path)

    def __enter__(self) -> TraceFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def close(self) -> None:
        self.file.close()

    @property
    def attrs(self) -> dict:
        return dict(self.file.attrs)

    @property
    def n_cycles(self) -> int:
        return int(self.file["cycles"]["cycle"].shape[0])

    def _read(self, where: str, key=()):
        """Dataset ``/where`` at ``key``.  Opening checked the layout, not the data: a chunk
        that does not decompress raises here (ValueError naming the file and dataset)."""
        try:
            return self.file[where][key]
        except Exception as exc:                  # OSError from the HDF5 filters, and others
            raise ValueError(f"{self.path}: cannot read /{where}, the file is damaged "
                             f"({first_line(exc)})") from None

    def cycle(self, i: int) -> dict[str, Any]:
        """Every recorded field of the i-th recorded cycle, unpacked and trimmed."""
        if not 0 <= i < self.n_cycles:
            raise ValueError(f"cycle: index must lie in [0, {self.n_cycles}), got {i}")
        g = self.file["cycles"]
        rec = {name: self._read(f"cycles/{name}", i) for name in g}
        rows = int(min(self.attrs["shape_bmn"][1], json.loads(self.attrs["config_json"])["rows"]))
        for name in ("row_input", "row_mask"):
            rec[name] = np.unpackbits(rec[name], bitorder="little")[:rows]
        if "row_level" in rec:
            rec["row_level"] = rec["row_level"][:rows]
        else:                                       # a schema-1.0 trace: binary rows
            rec["row_level"] = rec["row_mask"].copy()
            rec["level_sum"] = rec["active_rows"]
        n = int(rec["n_columns"])
        for name in ("column_count", "column_value", "sar_trial", "sar_decision", "code"):
            rec[name] = rec[name][:n]
        keep = rec["output_index"] >= 0
        rec["output_index"] = rec["output_index"][keep]
        rec["nmc_acc"] = rec["nmc_acc"][keep]
        return rec

    def summary(self) -> str:
        """A few lines: the MVM, the array, the recorded cycles and the event totals."""
        a = self.attrs
        cfg = json.loads(a["config_json"])
        b, m, n = (int(v) for v in a["shape_bmn"])
        lines = [
            f"imcsim trace {self.path} (schema {a['schema_version']}, imcsim {a['imcsim_version']})",
            f"  MVM: X {b}x{m} ({a['x_format']}) @ W {m}x{n} ({a['w_format']}), seed {a['seed']}",
            f"  array {cfg['rows']}x{cfg['columns']}, {cfg['adc_bits']}-bit ADC, "
            f"vref {json.loads(a['vref_json'])['mode']}, tiles {tuple(int(v) for v in a['tiles'])}",
            f"  recorded cycles: {self.n_cycles}",
        ]
        if "events" in self.file:
            ev = {k: int(self._read(f"events/{k}").sum()) for k in self.file["events"]}
            lines.append("  events: " + ", ".join(f"{k}={v}" for k, v in sorted(ev.items())))
        return "\n".join(lines)

    def format_cycle(self, i: int, max_columns: int = 8) -> str:
        """One cycle in readable form: inputs, column values, SAR steps, NMC steps."""
        rec = self.cycle(i)
        frac = int(self.attrs["analog_frac_bits"])
        top_level = int(self.attrs.get("top_level", 1))
        unit = "rows" if top_level == 1 else "level units"
        vpr = float(self.attrs["volts_per_row"]) / top_level     # volts of one unit
        bits = "".join(str(int(v)) for v in rec["row_input"][:64])
        mask = "".join(str(int(v)) for v in rec["row_mask"][:64])
        out = [f"cycle #{i}: tile ({rec['tile_row']}, {rec['tile_col']}), vector {rec['vector']}, "
               f"plane {rec['plane']}, serial cycle {rec['cycle']}",
               f"  row inputs [0:64): {bits}", f"  row mask   [0:64): {mask}"]
        if top_level > 1:
            levels = "".join(f"{int(v):x}" for v in rec["row_level"][:64])
            out.append(f"  row levels [0:64): {levels} (hex; top level {top_level})")
        out.append(f"  active rows {rec['active_rows']}, level sum A = {rec['level_sum']}, "
                   f"full scale F = {rec['full_scale']} {unit} "
                   f"(Vref,p = {rec['full_scale'] * vpr:.4f} V)")
        for c in range(min(max_columns, len(rec["code"]))):
            v = rec["column_value"][c] / (1 << frac)
            steps = " ".join(f"{int(tr):3d}{'+' if d else '-'}"
                             for tr, d in zip(rec["sar_trial"][c], rec["sar_decision"][c]))
            out.append(f"  col {c:3d}: count {rec['column_count'][c]:4d}  v = {v:9.3f} {unit} "
                       f"({v * vpr * 1e3:7.3f} mV)  SAR {steps}  -> code {rec['code'][c]}")
        if len(rec["code"]) > max_columns:
            out.append(f"  ... {len(rec['code']) - max_columns} more columns")
        for g in range(min(max_columns, len(rec["output_index"]))):
            out.append(f"  NMC output {rec['output_index'][g]}: accumulator after each weight "
                       f"plane {rec['nmc_acc'][g].tolist()}")
        return "\n".join(out)

    def export_vcd(self, path, max_columns: int | None = None, *, name: str = "vcd") -> Path:
        """Write the recorded cycles as a VCD waveform (one SAR step per clock)."""
        return write_trace_vcd(self, path, max_columns, name=name)
