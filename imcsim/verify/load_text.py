"""Text dumps as signal tables: CSV (wide or long) and folders of hex files with a manifest.

CSV: ``cycle`` plus one column per signal (per-column and per-output signals with a ``column`` /
``output`` column), or long rows ``cycle,signal,index,value``; every row placed by its cycle.
Hex: the vectors folder layout (``$writememh``; ``manifest.json`` names each file's fields), the
keys from ``ctrl.hex`` when present.  Every error names the file and, for CSV, the line.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from imcsim.errors import first_line
from imcsim.verify.golden import SIGNALS
from imcsim.verify.table import INT64_MAX, KEYS, MAX_INDEX, SignalTable, signal_kind
from imcsim.verify.vectors import MANIFEST_NAME, load_manifest, read_hex_fields


def load_csv_dump(path) -> SignalTable:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or []) if h is not None]
            rows = [{k.strip(): (v or "").strip() for k, v in r.items()
                     if k is not None and isinstance(v, (str, type(None)))} for r in reader]
    except (UnicodeError, csv.Error) as exc:
        raise ValueError(f"{path}: not a readable CSV file ({first_line(exc)})") from None
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
            kind = signal_kind(signal)
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
                kind = signal_kind(s)
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


def load_hex_dump(folder) -> SignalTable:
    try:
        man = load_manifest(folder)
    except (OSError, UnicodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{folder}/{MANIFEST_NAME}: cannot read it as JSON "
                         f"({first_line(exc)})") from None
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


__all__ = ["load_csv_dump", "load_hex_dump"]
