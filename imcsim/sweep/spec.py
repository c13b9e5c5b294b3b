"""Sweep files: the format constants, reading a spec and planning its runs (imcsim.sweep)."""
from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from imcsim.optional import require
from imcsim.sweep._util import _flatten, _json_default  # noqa: F401 - re-exported
from imcsim.sweep.commands import COMMANDS

SWEEP_FORMAT = "imcsim-sweep"
SWEEP_VERSION = "1.0"
RESULT_NAME = "result.json"
TABLE_CSV = "results.csv"
TABLE_JSON = "results.json"
SPEC_KEYS = ("command", "description", "out", "base", "configs", "grid", "order")
#: run order of a sweep file's ``order``: every grid point of a config before the next config
#: ("configs", the default), or every config of a grid point before the next point ("grid":
#: all rows of a table for seed 0 first, so a table built in pieces fills row by row)
RUN_ORDERS = ("configs", "grid")
RESERVED_RUN_KEYS = ("label", "name")
#: runs one sweep may have (configs x grid points), checked before the grid is expanded
MAX_RUNS = 100_000
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=',-]*$")

# --- spec and plan --------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One run of a sweep: its name, where its values come from, its complete parameters."""

    name: str
    config: str
    label: str
    grid: dict
    params: dict
    folder: Path


@dataclass
class SweepPlan:
    """Every run of a sweep file, checked; ``out`` is absolute."""

    command: str
    runs: list[Run]
    out: Path
    grid_keys: tuple = ()
    spec_path: Path | None = None
    description: str = ""
    order: str = "configs"

    def execution_order(self) -> list[Run]:
        """The runs in the order they are started (``order``); tables keep :attr:`runs`'."""
        if self.order == "configs":
            return list(self.runs)
        configs = list(dict.fromkeys(r.config for r in self.runs))
        points = list(dict.fromkeys(json.dumps(r.grid, sort_keys=True) for r in self.runs))
        return sorted(self.runs, key=lambda r: (points.index(json.dumps(r.grid, sort_keys=True)),
                                                configs.index(r.config)))

    @property
    def table_paths(self) -> tuple[Path, Path]:
        """(results.csv, results.json) under ``out``."""
        return self.out / TABLE_CSV, self.out / TABLE_JSON


def load_spec(path) -> dict:
    """Read a sweep file: JSON (``.json``) or YAML (``.yaml``/``.yml``, needs PyYAML).

    Parameters
    ----------
    path : str or Path
        The sweep file.

    Returns
    -------
    dict
        The spec, as written (check it with :func:`plan_sweep`).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such sweep file")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        yaml = require("yaml", "dask", "a YAML sweep file")
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    else:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a sweep file holds a mapping (command, base, configs, grid)")
    return spec


def _slug(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", text).strip("_") or "_"


def plan_sweep(spec: Mapping, *, out=None, overrides: Mapping | None = None,
               spec_path=None) -> SweepPlan:
    """Check a sweep spec and list its runs with complete parameters.

    Parameters
    ----------
    spec : mapping
        ``command`` (a key of :data:`COMMANDS`), optional ``base`` (mapping), ``configs``
        (mapping name -> overrides, or a list of overrides with optional ``name``), ``grid``
        (mapping parameter -> non-empty list), ``out`` (folder), ``description``.
    out : str or Path or None
        Output folder; default the spec's ``out``, else ``runs/<spec file stem>``.  Relative
        paths are relative to the current directory.
    overrides : mapping or None
        Parameters set in every run, over ``base`` and ``configs`` (``--set``); a grid
        parameter cannot be overridden.
    spec_path : str or Path or None
        The sweep file (for the default ``out`` and the table).

    Returns
    -------
    SweepPlan
        Runs in order: configs, then grid points (last grid key fastest).

    Raises
    ------
    ValueError
        Naming the first bad key, parameter or value (and the run it belongs to), or a sweep
        of more than :data:`MAX_RUNS` runs (counted before the grid is expanded).
    """
    if not isinstance(spec, Mapping):
        raise ValueError("sweep: the spec must be a mapping")
    _check_known_keys(spec, SPEC_KEYS, "sweep file")
    name = spec.get("command")
    if name not in COMMANDS:
        raise ValueError(f"command: expected one of {', '.join(sorted(COMMANDS))}, got {name!r}")
    command = COMMANDS[name]
    base = spec.get("base", {})
    if not isinstance(base, Mapping):
        raise ValueError("base: expected a mapping of parameters")
    configs = _configs(spec.get("configs"))
    grid = spec.get("grid", {})
    if not isinstance(grid, Mapping):
        raise ValueError("grid: expected a mapping parameter -> list of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid: {key!r} needs a non-empty list of values")
    order = spec.get("order", "configs")
    if order not in RUN_ORDERS:
        raise ValueError(f"order: expected one of {', '.join(RUN_ORDERS)}, got {order!r}")
    overrides = dict(overrides or {})
    for key in overrides:
        if key in grid:
            raise ValueError(f"set: {key!r} is swept by the grid")
    if out is None:
        out = spec.get("out")
    if out is None:
        stem = Path(spec_path).name.split(".")[0] if spec_path else "sweep"
        out = Path("runs") / stem
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a folder")
    keys = tuple(grid)
    check_sweep_size(len(configs), [len(grid[k]) for k in keys], keys)
    runs, seen = [], {}
    for cname, label, cparams in configs:
        for key in cparams:
            if key in grid:
                raise ValueError(f"config {cname!r}: {key!r} is also swept by the grid")
        for point in itertools.product(*(grid[k] for k in keys)):
            gvals = dict(zip(keys, point))
            parts = ([cname] if cname else []) + [f"{k}{_slug(v)}" for k, v in gvals.items()]
            rname = "-".join(parts) or "run"
            if not NAME_RE.match(rname):
                raise ValueError(f"config {cname!r}: run name {rname!r} is not a usable folder "
                                 "name (letters, digits, . _ + = ' , -)")
            if rname in seen:
                raise ValueError(f"runs {seen[rname]} and {gvals or cname} are both named "
                                 f"{rname!r}")
            seen[rname] = gvals or cname
            raw = {**base, **cparams, **overrides, **gvals}
            try:
                params = command.normalize(raw)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"run {rname}: {str(exc).splitlines()[0]}") from None
            runs.append(Run(rname, cname, label, gvals, params, out / rname))
    return SweepPlan(name, runs, out, keys, Path(spec_path).resolve() if spec_path else None,
                     str(spec.get("description", "")), order)


def check_sweep_size(n_configs: int, lengths: Sequence[int], keys: Sequence[str] = ()) -> int:
    """The number of runs of ``n_configs`` configs x the grid, refused above :data:`MAX_RUNS`.

    Counted from the lengths before any run is built: a 2000 x 2000 grid is four million
    runs, each with its parameters, and expanding it (even for ``--dry-run``) grew past 2 GB.
    """
    total = n_configs * math.prod(lengths)
    if total > MAX_RUNS:
        plural = "s" if n_configs != 1 else ""
        shape = " x ".join([f"{n_configs} config{plural}"]
                           + [f"{n} {k}" for n, k in zip(lengths, keys)])
        raise ValueError(f"grid: {total} runs ({shape}) exceed the limit of {MAX_RUNS} runs per "
                         "sweep; split the sweep into several files")
    return total


def _check_known_keys(spec: Mapping, known: Sequence[str], where: str) -> None:
    unknown = [k for k in spec if k not in known]
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(known)}")


def _configs(configs) -> list[tuple[str, str, dict]]:
    """[(name, label, overrides)] from the spec's ``configs`` (absent: one unnamed config)."""
    if configs is None:
        return [("", "", {})]
    if isinstance(configs, Mapping):
        items = list(configs.items())
    elif isinstance(configs, list):
        items = []
        for i, c in enumerate(configs):
            if not isinstance(c, Mapping):
                raise ValueError(f"configs[{i}]: expected a mapping of parameters")
            items.append((str(c.get("name", i)), c))
    else:
        raise ValueError("configs: expected a mapping name -> parameters, or a list")
    if not items:
        raise ValueError("configs: empty")
    out = []
    for cname, c in items:
        if not isinstance(c, Mapping):
            raise ValueError(f"config {cname!r}: expected a mapping of parameters")
        if not NAME_RE.match(str(cname)):
            raise ValueError(f"config {cname!r}: not a usable folder name")
        label = c.get("label", "")
        params = {k: v for k, v in c.items() if k not in RESERVED_RUN_KEYS}
        out.append((str(cname), str(label), params))
    return out
