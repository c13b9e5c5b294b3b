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

import imcsim
from imcsim.atomic import AtomicOutputs
from imcsim.kernels.hw import ANALOG_FRAC_BITS
from imcsim.verify.vcd import write_trace_vcd

SCHEMA_VERSION = "1.0"
_FLUSH_EVERY = 256


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
            object.__setattr__(self, "tiles", tuple(tuple(int(v) for v in t) for t in self.tiles))
        if self.planes is not None:
            object.__setattr__(self, "planes", tuple(int(p) for p in self.planes))

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


class TraceWriter:
    """Buffers recorded cycles and appends them to chunked, compressed datasets.

    The file appears at ``path`` only on :meth:`close`; :meth:`abort` leaves ``path`` as it
    was.  ``inputs``: files the caller reads, which the trace must not overwrite.
    """

    def __init__(self, path, macro, prep, *, inputs: Iterable = ()) -> None:
        self.files = AtomicOutputs(path, names=["trace"], inputs=inputs)
        self.path: Path = self.files.targets[0]
        self.tmp: Path = self.files.temporary(self.path)
        c, plan = macro.config, prep.plan
        self.rows = min(plan.inner, c.rows)
        self.cols = min(plan.outputs_per_tile, plan.outputs) * plan.weight_planes
        self.outputs = min(plan.outputs_per_tile, plan.outputs)
        self.kw = plan.weight_planes
        self.adc_bits = c.adc_bits
        self.buffer = []
        self.count = 0
        self.file = h5py.File(self.tmp, "w")
        f = self.file
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["imcsim_version"] = imcsim.__version__
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
        f.attrs["out_frac_bits"] = c.nmc.out_frac_bits
        g = f.create_group("cycles")
        packed = -(-self.rows // 8)
        self.spec = {
            "tile_row": ((), np.int32), "tile_col": ((), np.int32), "vector": ((), np.int64),
            "plane": ((), np.int32), "cycle": ((), np.int64),
            "row_input": ((packed,), np.uint8), "row_mask": ((packed,), np.uint8),
            "active_rows": ((), np.int32), "full_scale": ((), np.int32),
            "n_columns": ((), np.int32),
            "column_count": ((self.cols,), np.int32), "column_value": ((self.cols,), np.int64),
            "sar_trial": ((self.cols, self.adc_bits), np.uint16),
            "sar_decision": ((self.cols, self.adc_bits), np.uint8),
            "code": ((self.cols,), np.uint16),
            "nmc_acc": ((self.outputs, self.kw), np.int64),
            "output_index": ((self.outputs,), np.int32),
        }
        for name, (shape, dtype) in self.spec.items():
            chunk_rows = max(1, min(_FLUSH_EVERY, (1 << 20) // max(1, int(np.prod(shape or (1,)))
                                                                   * np.dtype(dtype).itemsize)))
            g.create_dataset(name, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype,
                             chunks=(chunk_rows,) + shape, compression="gzip",
                             compression_opts=4, shuffle=True)
        g["column_value"].attrs["unit"] = f"rows * 2**-{ANALOG_FRAC_BITS}"

    def add_cycle(self, **rec: Any) -> None:
        """Record one array cycle (fields: see docs/trace-format.md)."""
        self.buffer.append(rec)
        if len(self.buffer) >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Append the buffered cycles to the file."""
        if not self.buffer:
            return
        n = len(self.buffer)
        g = self.file["cycles"]
        for name, (shape, dtype) in self.spec.items():
            data = np.zeros((n,) + shape, dtype=dtype)
            if name == "output_index":
                data[...] = -1
            for i, rec in enumerate(self.buffer):
                if name in ("row_input", "row_mask"):
                    bits = np.zeros(self.rows, dtype=np.uint8)
                    bits[: len(rec[name])] = rec[name]
                    data[i] = np.packbits(bits, bitorder="little")
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
            ds = g[name]
            ds.resize(self.count + n, axis=0)
            ds[self.count:] = data
        self.count += n
        self.buffer = []

    def close(self, result) -> Path:
        """Write the MVM's result and events, and move the file to its path."""
        self.flush()
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
        f.close()
        self.files.commit()
        return self.path

    def abort(self) -> None:
        """Close and delete the unfinished file; ``path`` stays as it was."""
        try:
            self.file.close()
        finally:
            self.files.abort()


class TraceFile:
    """Read a trace written by ``Macro.mvm_traced(..., trace=PATH)``."""

    def __init__(self, path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such trace file")
        try:
            self.file = h5py.File(path, "r")
        except OSError as exc:
            raise ValueError(f"{path}: not an HDF5 trace ({exc})") from None
        if self.file.attrs.get("schema_version") is None or "cycles" not in self.file:
            self.file.close()
            raise ValueError(f"{path}: not an imcsim trace (no schema_version or /cycles)")
        self.path: Path = path

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

    def cycle(self, i: int) -> dict[str, Any]:
        """Every recorded field of the i-th recorded cycle, unpacked and trimmed."""
        if not 0 <= i < self.n_cycles:
            raise ValueError(f"cycle: index must lie in [0, {self.n_cycles}), got {i}")
        g = self.file["cycles"]
        rec = {name: g[name][i] for name in g}
        rows = int(min(self.attrs["shape_bmn"][1], json.loads(self.attrs["config_json"])["rows"]))
        for name in ("row_input", "row_mask"):
            rec[name] = np.unpackbits(rec[name], bitorder="little")[:rows]
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
            ev = {k: int(self.file['events'][k][()].sum()) for k in self.file["events"]}
            lines.append("  events: " + ", ".join(f"{k}={v}" for k, v in sorted(ev.items())))
        return "\n".join(lines)

    def format_cycle(self, i: int, max_columns: int = 8) -> str:
        """One cycle in readable form: inputs, column values, SAR steps, NMC steps."""
        rec = self.cycle(i)
        frac = int(self.attrs["analog_frac_bits"])
        vpr = float(self.attrs["volts_per_row"])
        bits = "".join(str(int(v)) for v in rec["row_input"][:64])
        mask = "".join(str(int(v)) for v in rec["row_mask"][:64])
        out = [f"cycle #{i}: tile ({rec['tile_row']}, {rec['tile_col']}), vector {rec['vector']}, "
               f"plane {rec['plane']}, serial cycle {rec['cycle']}",
               f"  row inputs [0:64): {bits}", f"  row mask   [0:64): {mask}",
               f"  active rows {rec['active_rows']}, full scale F = {rec['full_scale']} rows "
               f"(Vref,p = {rec['full_scale'] * vpr:.4f} V)"]
        for c in range(min(max_columns, len(rec["code"]))):
            v = rec["column_value"][c] / (1 << frac)
            steps = " ".join(f"{int(tr):3d}{'+' if d else '-'}"
                             for tr, d in zip(rec["sar_trial"][c], rec["sar_decision"][c]))
            out.append(f"  col {c:3d}: count {rec['column_count'][c]:4d}  v = {v:9.3f} rows "
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
