"""The table of a sweep: its rows, the CSV/JSON files, reading them back, --set values
(imcsim.sweep)."""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imcsim.atomic import AtomicOutputs
from imcsim.sweep._util import _flatten, _json_default
from imcsim.sweep.execute import SweepResult
from imcsim.sweep.spec import SWEEP_FORMAT, SWEEP_VERSION, TABLE_CSV, TABLE_JSON, SweepPlan


# --- the table ------------------------------------------------------------------------------
def table_rows(plan: SweepPlan, records: Sequence[dict]) -> tuple[list[str], list[dict]]:
    """The table: (columns, one flat row per run).

    Columns: name, config, label, the grid's parameters, status, every scalar result (in the
    order they first appear), seconds, error.
    """
    result_keys: list[str] = []
    rows = []
    for doc in records:
        res = _flatten(doc.get("result") or {})
        scalars = {k: v for k, v in res.items() if isinstance(v, (int, float, str, bool))
                   or v is None}
        for k in scalars:
            if k not in result_keys:
                result_keys.append(k)
        row = {"name": doc["name"], "config": doc.get("config", ""),
               "label": doc.get("label", ""), **{k: doc.get("grid", {}).get(k)
                                                 for k in plan.grid_keys},
               "status": doc["status"], **scalars, "seconds": doc.get("seconds"),
               "error": doc.get("error") or ""}
        rows.append(row)
    fixed = ["name", "config", "label", *plan.grid_keys, "status"]
    columns = fixed + [k for k in result_keys if k not in fixed + ["seconds", "error"]]
    return columns + ["seconds", "error"], rows


def write_table(result: SweepResult, inputs: Sequence = ()) -> tuple[Path, Path]:
    """Write ``OUT/results.csv`` and ``OUT/results.json``, both all-or-nothing.

    Parameters
    ----------
    result : SweepResult
        From :func:`run_sweep`.
    inputs : sequence of paths
        Files the caller read (the sweep file), never overwritten.

    Returns
    -------
    (Path, Path)
        The CSV and the JSON table.  The JSON holds every record (params, result, error,
        seconds) in plan order, without tracebacks (they stay in each run's result.json).
    """
    plan = result.plan
    csv_path, json_path = plan.table_paths
    columns, rows = table_rows(plan, result.records)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    doc = {"format": SWEEP_FORMAT, "version": SWEEP_VERSION, "command": plan.command,
           "spec": str(plan.spec_path) if plan.spec_path else None,
           "description": plan.description, "out": str(plan.out), "columns": columns,
           "runs": [{k: v for k, v in r.items() if k != "traceback"} for r in result.records]}
    with AtomicOutputs(csv_path, json_path, names=[TABLE_CSV, TABLE_JSON],
                       inputs=inputs) as outputs:
        outputs.temporary(csv_path).write_text(buf.getvalue())
        outputs.temporary(json_path).write_text(
            json.dumps(doc, indent=1, default=_json_default) + "\n")
    return csv_path, json_path


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float) and math.isfinite(v):
        return repr(v)
    return v


def read_table(out) -> dict:
    """The JSON table a sweep wrote to ``out`` (a folder or its results.json)."""
    path = Path(out)
    if path.is_dir():
        path = path / TABLE_JSON
    if not path.is_file():
        raise ValueError(f"{path}: no sweep table (run imcsim sweep first)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not readable as a sweep table ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != SWEEP_FORMAT:
        raise ValueError(f"{path}: not an imcsim sweep table")
    major = str(doc.get("version", "")).split(".")[0]
    if major != SWEEP_VERSION.split(".")[0]:
        raise ValueError(f"{path}: sweep table version {doc.get('version')!r}; this imcsim "
                         f"reads version {SWEEP_VERSION.split('.')[0]}.x")
    return doc


def parse_assignments(items: Sequence[str], name: str = "--set") -> dict[str, Any]:
    """["epochs=2", "imc=all", 'shape=[8,64,8]'] -> {key: value}; a value is JSON if it
    parses as JSON, else the string."""
    out = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"{name}: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out
