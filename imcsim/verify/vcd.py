"""Value Change Dump (IEEE 1364) export of traces, and a small reader for checking dumps.

Timeline of one recorded array cycle (``adc_bits + 2`` time steps of ``TIMESCALE``):
step 0 samples the column (row inputs, mask, active rows, full scale appear); steps 1..Nb are
the SAR trials MSB first (``sar_step``, per column ``trial_<c>`` and comparator ``cmp_<c>``);
the last step raises ``eoc`` with the final ``code_<c>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imcsim.atomic import AtomicOutputs

TIMESCALE = "1ns"


class _Signal:
    def __init__(self, ident, name, width):
        self.ident, self.name, self.width = ident, name, width
        self.last = None


def _identifier(index: int) -> str:
    chars = [chr(c) for c in range(33, 127)]
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, len(chars))
        out = chars[rem] + out
    return out


def _value(sig: _Signal, value: int) -> str:
    if sig.width == 1:
        return f"{int(value) & 1}{sig.ident}"
    return f"b{int(value) & ((1 << sig.width) - 1):b} {sig.ident}"


def write_trace_vcd(trace, path, max_columns: int | None = None, *, name: str = "vcd") -> Path:
    """Write the cycles of an open ``TraceFile`` as VCD to ``path`` (all-or-nothing).

    Writing over the trace itself is refused (ValueError naming ``name``).
    """
    outputs = AtomicOutputs(path, names=[name], inputs=[getattr(trace, "path", None)])
    attrs = trace.attrs
    n = trace.n_cycles
    first = trace.cycle(0) if n else None
    n_cols = 0 if first is None else len(first["code"])
    if max_columns is not None:
        n_cols = min(n_cols, max_columns)
    adc_bits = first["sar_trial"].shape[1] if first is not None and n_cols else 8
    rows = 0 if first is None else len(first["row_input"])
    # multi-level rows (docs/hardware-model.md 4.8): the level sum and a row_level bus of
    # level_bits per row (row r at bits [r*level_bits, (r+1)*level_bits))
    level_bits = int(attrs.get("top_level", 1)).bit_length()
    specs = [("cycle", 32), ("tile_row", 16), ("tile_col", 16), ("vector", 32), ("plane", 8),
             ("active_rows", 17), ("full_scale", 17 if level_bits == 1 else 21),
             ("sar_step", 8), ("eoc", 1)]
    if level_bits > 1:
        specs += [("level_sum", 21)]
    if rows:
        specs += [("row_input", rows), ("row_mask", rows)]
        if level_bits > 1:
            specs += [("row_level", rows * level_bits)]
    for c in range(n_cols):
        specs += [(f"trial_{c}", adc_bits), (f"cmp_{c}", 1), (f"code_{c}", adc_bits)]
    signals = {name: _Signal(_identifier(i), name, w) for i, (name, w) in enumerate(specs)}
    with outputs, outputs.writing(path) as tmp, open(tmp, "w") as fh:
        fh.write(f"$comment imcsim trace {attrs['x_format']} x {attrs['w_format']}, "
                 f"seed {attrs['seed']} $end\n$timescale {TIMESCALE} $end\n"
                 "$scope module imc_macro $end\n")
        for s in signals.values():
            fh.write(f"$var wire {s.width} {s.ident} {s.name} $end\n")
        fh.write("$upscope $end\n$enddefinitions $end\n")
        time = 0

        def emit(changes):
            lines = []
            for name, value in changes:
                s = signals[name]
                if s.last != int(value):
                    s.last = int(value)
                    lines.append(_value(s, value))
            if lines:
                fh.write(f"#{time}\n" + "\n".join(lines) + "\n")

        for i in range(n):
            rec = trace.cycle(i)
            changes = [("cycle", rec["cycle"]), ("tile_row", rec["tile_row"]),
                       ("tile_col", rec["tile_col"]), ("vector", rec["vector"]),
                       ("plane", rec["plane"]), ("active_rows", rec["active_rows"]),
                       ("full_scale", rec["full_scale"]), ("sar_step", 0), ("eoc", 0)]
            if rows:
                weights = 1 << np.arange(rows, dtype=object)
                changes.append(("row_input", int((rec["row_input"].astype(object) * weights).sum())))
                changes.append(("row_mask", int((rec["row_mask"].astype(object) * weights).sum())))
                if level_bits > 1:
                    lw = 1 << (level_bits * np.arange(rows, dtype=object))
                    changes.append(("row_level",
                                    int((rec["row_level"].astype(object) * lw).sum())))
            if level_bits > 1:
                changes.append(("level_sum", rec["level_sum"]))
            emit(changes)
            for s in range(adc_bits):
                time += 1
                ch = [("sar_step", s + 1)]
                for c in range(n_cols):
                    ch += [(f"trial_{c}", rec["sar_trial"][c, s]),
                           (f"cmp_{c}", rec["sar_decision"][c, s])]
                emit(ch)
            time += 1
            emit([("eoc", 1)] + [(f"code_{c}", rec["code"][c]) for c in range(n_cols)])
            time += 1
        fh.write(f"#{time}\n")
    return outputs.targets[0]


def _parse_line(raw: str, in_defs: bool, time: int, scope: list, ident_names: dict,
                changes: dict) -> tuple[bool, int, list]:
    """One VCD line: updates ``ident_names`` / ``changes``; returns (in_defs, time, scope).
    Raises ValueError (or IndexError) for a line it cannot read."""
    line = raw.strip()
    if not line:
        return in_defs, time, scope
    if in_defs:
        parts = line.split()
        if parts[0] == "$scope" and len(parts) >= 3:
            scope = scope + [parts[2]]
        elif parts[0] == "$upscope":
            scope = scope[:-1]
        elif parts[0] == "$var" and len(parts) >= 5:
            full = ".".join(scope + [parts[4]])
            ident_names.setdefault(parts[3], []).append(full)
            changes[full] = []
        elif parts[0] == "$enddefinitions":
            in_defs = False
        return in_defs, time, scope
    if line[0] == "#":
        new_time = int(line[1:])
        if new_time < time:
            raise ValueError("time goes backwards")
        return in_defs, new_time, scope
    if line[0] in "bBrR":
        text, ident = line[1:].split()
        if line[0] in "rR":
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("not a finite real")
        else:
            value = -1 if any(ch in "xXzZ" for ch in text) else int(text, 2)
    elif line[0] in "01xXzZ":
        ident = line[1:]
        value = int(line[0]) if line[0] in "01" else -1
    elif line.startswith("$"):
        return in_defs, time, scope
    else:
        raise ValueError("unknown line")
    if ident not in ident_names:
        raise ValueError(f"value change for undeclared identifier {ident!r}")
    for name in ident_names[ident]:
        changes[name].append((time, value))
    return in_defs, time, scope


def read_vcd(path) -> dict[str, list[tuple[int, Any]]]:
    """Parse a VCD into ``{signal: [(time, value), ...]}``.

    Every signal is listed under its hierarchical name (``top.dut.code_0``) and, when that leaf
    name is unique in the file, under its plain name (``code_0``) too.  Identifiers shared by
    several variables (aliases) feed all of them.  Vector values are ints (x/z -> -1), real
    values (``r1.5``) floats.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such VCD file")
    ident_names: dict[str, list[str]] = {}
    changes: dict[str, list] = {}
    scope: list[str] = []
    time = 0
    in_defs = True
    try:
        with open(path, encoding="utf-8") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    in_defs, time, scope = _parse_line(raw, in_defs, time, scope, ident_names,
                                                       changes)
                except (ValueError, IndexError, KeyError) as exc:
                    why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise ValueError(f"{path}: line {number}: cannot parse VCD line "
                                     f"{raw.strip()[:60]!r}" + (f" ({why})" if why else "")
                                     ) from None
    except UnicodeError as exc:
        raise ValueError(f"{path}: not a text VCD file ({exc.reason})") from None
    leaves: dict[str, list[str]] = {}
    for full in changes:
        leaves.setdefault(full.rsplit(".", 1)[-1], []).append(full)
    for leaf, fulls in leaves.items():
        if len(fulls) == 1 and leaf not in changes:
            changes[leaf] = changes[fulls[0]]
    return changes
