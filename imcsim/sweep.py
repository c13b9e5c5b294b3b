"""Sweeps: many runs of one imcsim command over configs x seeds, as tasks on Dask distributed.

A sweep file (JSON, or YAML with the ``dask`` extra, which brings PyYAML) names a base command
and the runs' parameters (docs/cluster.md)::

    {"command": "train",
     "out": "runs/results",
     "base": {"model": "small-cnn", "epochs": 8},
     "configs": {"a": {"label": "FP32", "imc": ""},
                 "b": {"label": "all on IMC", "imc": "all"}},
     "grid": {"seed": [0, 1, 2]}}

Every run is ``base``, overridden by one entry of ``configs`` (a mapping name -> overrides, or
a list; ``label`` is free text for the table), overridden by one point of the cartesian
``grid``; runs are named ``<config>-<key><value>...`` (``a-seed0``).  Parameters are checked
for every run before anything runs (:func:`plan_sweep`).

Execution (:func:`run_sweep`): every pending run is one task on a Dask client
(:func:`dask_client`: a ``LocalCluster`` with one single-threaded worker process per core by
default, or an existing scheduler); each task limits Numba's (and the BLAS') threads to its
share of the host's cores.  Each run writes its own folder ``OUT/<name>/`` and, once finished,
``OUT/<name>/result.json`` (written by the client, all-or-nothing).  A run whose
``result.json`` says ``ok`` with the same command and parameters is complete and is skipped
when the sweep runs again; a failed run (an exception, or a worker that died running it more
often than the scheduler's ``distributed.scheduler.allowed-failures``) is recorded as failed
and never stops the others.  :func:`write_table` gathers every run into ``OUT/results.csv``
and ``OUT/results.json``.

The commands (:data:`COMMANDS`): ``train`` (``imcsim.training``), ``mvm`` (``Macro.mvm`` on
seeded random operands) and ``energy`` (``imcsim.energy.energy_report``); a task calls the
library, never a subprocess, so a run in a sweep gives the result of the same run alone.
:func:`register_command` adds one.
"""
from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import re
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imcsim.atomic import AtomicOutputs, write_text_atomic
from imcsim.optional import require
from imcsim.version import __version__

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


# --- commands --------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """A command a sweep can run.

    Parameters
    ----------
    name : str
        The name a sweep file gives as ``command``.
    normalize : callable(dict) -> dict
        Checks one run's parameters and returns them complete and canonical (JSON types,
        defaults filled in); raises ValueError naming a bad parameter.  Runs on the client.
    run : callable(dict, Path) -> dict
        Runs one normalized parameter set, writing its outputs into the given folder (which
        exists); returns the result (JSON types; its scalars become table columns).  Runs in
        a task on a worker.
    help : str
        One line for the docs.
    """

    name: str
    normalize: Callable[[dict], dict]
    run: Callable[[dict, Path], dict]
    help: str = ""


def _check_known(params: Mapping, known: Sequence[str], command: str) -> None:
    unknown = [k for k in params if k not in known]
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} for {command}; known: "
                         f"{', '.join(sorted(known))}")


def _train_normalize(params: dict) -> dict:
    """The sweep's ``train`` keys go through the CLI's own front door
    (``training.options.train_config``), so each key means what the flag means."""
    from imcsim.training.options import train_config
    params = dict(params)
    if "trace" in params:
        if params["trace"] is not None:
            raise ValueError("unknown parameter 'trace' for train: a sweep does not trace")
        del params["trace"]                 # canonical parameters carry trace: null
    return json.loads(train_config(params).to_json())


#: per-layer keys of a training history row that the sweep table leaves to metrics.json
PER_LAYER_METRICS = ("mvm_stats", "cima_write_words_by_layer", "mvm_error")


def _train_run(params: dict, folder: Path) -> dict:
    """Train one run in ``folder``; a checkpoint left there by an interrupted run of the same
    parameters is resumed (the run then equals an uninterrupted one, docs/training.md)."""
    from imcsim.training.engine import TrainConfig, Trainer
    from imcsim.training.rundir import resumable_checkpoint
    config = TrainConfig.from_json(json.dumps(params))
    trainer = Trainer(config, folder, progress=False)
    history = trainer.run(resume=resumable_checkpoint(folder, config))
    out = dict(history[-1]) if history else {}       # the last epoch's metrics
    # per-layer detail stays in the run's metrics.json: as table columns it would add ~170
    for key in PER_LAYER_METRICS:
        out.pop(key, None)
    out["train_seconds"] = float(sum(h.get("seconds", 0.0) for h in history))
    return out


#: parameters of an mvm run other than MacroConfig fields, with their defaults (imcsim mvm's)
MVM_DEFAULTS = {"preset": "paper", "seed": 0, "shape": [8, 600, 12], "density": 1.0,
                "x_format": "binary:6", "w_format": "binary:5", "device": "cpu"}


def _set_path(data: dict, path: str, value) -> None:
    """data[a][b] = value for path 'a.b'; a mapping value merges into a mapping there."""
    keys = path.split(".")
    cur = data
    for i, key in enumerate(keys):
        if not isinstance(cur, dict) or key not in cur:
            raise ValueError(f"unknown parameter {path!r} for mvm (no config field "
                             f"{'.'.join(keys[:i + 1])!r}; known top level: "
                             f"{', '.join(sorted(set(data) | set(MVM_DEFAULTS)))})")
        if i == len(keys) - 1:
            if isinstance(cur[key], dict):
                if not isinstance(value, Mapping):
                    raise ValueError(f"{path}: expected a mapping, got {value!r}")
                for k, v in value.items():
                    _set_path(cur[key], k, v)
            else:
                cur[key] = value
        cur = cur[key]


def _mvm_normalize(params: dict) -> dict:
    from imcsim.config import MacroConfig, load_preset
    from imcsim.formats import parse_format
    p = {**MVM_DEFAULTS, **params}
    preset = p["preset"]
    if isinstance(preset, str) and Path(preset).suffix:
        preset = p["preset"] = str(Path(preset).expanduser().resolve())
    data = load_preset(preset).to_dict()
    for key, value in p.items():
        if key not in MVM_DEFAULTS:
            _set_path(data, key, value)
    try:
        config = MacroConfig.from_dict(data)
    except TypeError as exc:
        raise ValueError(f"mvm: {exc}") from None
    xf, wf = parse_format(p["x_format"]), parse_format(p["w_format"])
    if wf.kind != "binary":
        raise ValueError(f"w_format: the stored operand must be binary:K, got {p['w_format']}")
    shape = p["shape"]
    if (not isinstance(shape, Sequence) or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
        raise ValueError(f"shape: expected [B, M, N] of positive ints, got {shape!r}")
    if not isinstance(p["density"], (int, float)) or not 0.0 <= p["density"] <= 1.0:
        raise ValueError(f"density: must lie in [0, 1], got {p['density']!r}")
    if not isinstance(p["seed"], int) or isinstance(p["seed"], bool) or p["seed"] < 0:
        raise ValueError(f"seed: must be a non-negative int, got {p['seed']!r}")
    if p["device"] not in ("cpu", "cuda"):
        raise ValueError(f"device: expected cpu or cuda, got {p['device']!r}")
    return {"preset": preset, "seed": p["seed"], "shape": list(shape),
            "density": float(p["density"]), "x_format": xf.spec(), "w_format": wf.spec(),
            "device": p["device"], "config": config.to_dict()}


def _mvm_run(params: dict, folder: Path) -> dict:
    from imcsim.config import MacroConfig
    from imcsim.formats import parse_format
    from imcsim.macro import Macro
    from imcsim.operands import random_operands
    xf, wf = parse_format(params["x_format"]), parse_format(params["w_format"])
    B, M, N = params["shape"]
    X, W = random_operands(np.random.default_rng(params["seed"]), xf, wf, B, M, N,
                           params["density"])
    macro = Macro(MacroConfig.from_dict(params["config"]), device=params["device"])
    res = macro.mvm(X, W, xf, wf, seed=params["seed"])
    y = np.asarray(res.y.get() if hasattr(res.y, "get") else res.y)
    with AtomicOutputs(folder / "y.npy", names=["y.npy"]) as outputs:
        with open(outputs.temporary(folder / "y.npy"), "wb") as fh:
            np.save(fh, y, allow_pickle=False)
    err = np.abs(y - np.asarray(X, dtype=np.float64) @ np.asarray(W, dtype=np.float64))
    ev = res.events.total()
    out = {"max_abs_error": float(err.max()), "mean_abs_error": float(err.mean()),
           "exact_outputs": int((err == 0).sum()), "outputs": int(err.size)}
    out.update({k: int(ev[k]) for k in ("adc_conversions", "clipped_conversions",
                                         "high_vref_conversions", "bitcell_mults",
                                         "array_cycles")})
    return out


def _energy_defaults() -> dict:
    from imcsim.energy import DEFAULT_ENERGY_PRESET, DEFAULT_GRADIENT_DENSITY
    return {"model": "vgg-lite", "batch": 128, "imc": "forward,backward,update", "vref": [],
            "gradient_density": DEFAULT_GRADIENT_DENSITY, "activation_density": 1.0,
            "pool_sparsity": True, "first_last_on_imc": False, "charge_masked_rows": False,
            "first_layer_backward": False, "preset": DEFAULT_ENERGY_PRESET,
            "gpu_tops_per_watt": None}


def _energy_normalize(params: dict) -> dict:
    from imcsim.config import parse_mvm_kinds
    from imcsim.energy import MODELS, load_energy_preset, parse_vref_per_kind
    defaults = _energy_defaults()
    _check_known(params, list(defaults), "energy")
    p = {**defaults, **params}
    if p["model"] not in MODELS:
        raise ValueError(f"model: expected one of {', '.join(sorted(MODELS))}, got {p['model']!r}")
    if not isinstance(p["batch"], int) or isinstance(p["batch"], bool) or p["batch"] < 1:
        raise ValueError(f"batch: must be a positive int, got {p['batch']!r}")
    p["imc"] = ",".join(parse_mvm_kinds(p["imc"])) or "none"
    p["vref"] = [p["vref"]] if isinstance(p["vref"], str) else list(p["vref"])
    parse_vref_per_kind(p["vref"])
    if isinstance(p["preset"], str) and Path(p["preset"]).suffix:
        p["preset"] = str(Path(p["preset"]).expanduser().resolve())
    load_energy_preset(p["preset"])
    for name in ("gradient_density", "activation_density"):
        if not isinstance(p[name], (int, float)) or not 0.0 <= p[name] <= 1.0:
            raise ValueError(f"{name}: must lie in [0, 1], got {p[name]!r}")
    for name in ("pool_sparsity", "first_last_on_imc", "charge_masked_rows",
                 "first_layer_backward"):
        if not isinstance(p[name], bool):
            raise ValueError(f"{name}: expected true or false, got {p[name]!r}")
    tops = p["gpu_tops_per_watt"]
    if tops is not None and (isinstance(tops, bool) or not isinstance(tops, (int, float))
                             or not tops > 0):
        raise ValueError(f"gpu_tops_per_watt: must be a positive number, got {tops!r}")
    return p


def _energy_run(params: dict, folder: Path) -> dict:
    from dataclasses import replace

    from imcsim.energy import energy_report, load_energy_preset
    p = dict(params)
    preset = load_energy_preset(p.pop("preset"))
    tops = p.pop("gpu_tops_per_watt")
    if tops is not None:
        preset = replace(preset, gpu_tops_per_watt=tops)
    model, batch = p.pop("model"), p.pop("batch")
    report = energy_report(model, batch, preset=preset, **p).to_dict()
    write_text_atomic(folder / "report.json", json.dumps(report, indent=1, default=_json_default)
                      + "\n", "report.json")
    return {**_flatten(report["comparison"]), "energy_j": report["totals"]["energy_j"]}


COMMANDS: dict[str, Command] = {}


def register_command(command: Command) -> Command:
    """Make ``command`` available to sweep files (``"command": command.name``); returns it."""
    COMMANDS[command.name] = command
    return command


register_command(Command("train", _train_normalize, _train_run,
                         "imcsim train: TrainConfig fields, or the CLI's imc/other/batch/max_steps"))
register_command(Command("mvm", _mvm_normalize, _mvm_run,
                         "imcsim mvm on seeded random operands: preset, seed, shape, density, "
                         "x_format, w_format, device, and MacroConfig fields (dotted paths)"))
register_command(Command("energy", _energy_normalize, _energy_run,
                         "imcsim energy: model, batch, imc, vref, densities, preset, ..."))


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


# --- results of runs ----------------------------------------------------------------------
def stored_result(run: Run, command: str) -> dict | None:
    """The complete result of ``run`` left by an earlier sweep, else None.

    Complete: ``<folder>/result.json`` exists, says ``ok`` and holds the same command and
    parameters.
    """
    path = run.folder / RESULT_NAME
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(doc, dict) and doc.get("status") == "ok" and doc.get("command") == command
            and isinstance(doc.get("params"), dict)):
        return None
    if doc["params"] == run.params:
        return doc
    # written by an older imcsim whose commands had fewer parameters: the same run if its
    # parameters, completed with today's defaults, are this run's
    try:
        if COMMANDS[command].normalize(dict(doc["params"])) == run.params:
            return doc
    except (ValueError, TypeError, KeyError):
        pass
    return None


def _record(run: Run, command: str, status: str, **extra) -> dict:
    doc = {"format": SWEEP_FORMAT, "version": SWEEP_VERSION, "name": run.name,
           "config": run.config, "label": run.label, "grid": run.grid, "command": command,
           "params": run.params, "status": status, "result": None, "error": None,
           "seconds": None, "worker": None, "imcsim_version": __version__}
    doc.update(extra)
    return doc


def _this_worker() -> str:
    """This task's Dask worker address, else host:pid."""
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def task_threads(threads: int | Mapping | None) -> Iterator[int | None]:
    """Limit Numba's and the BLAS' threads in this (task) thread, restoring them on exit.

    Parameters
    ----------
    threads : int or mapping or None
        Threads; or a mapping worker address -> threads (:func:`worker_threads`), looked up
        with this task's worker (1 if absent); None leaves everything as it is.

    Yields
    ------
    int or None
        The limit applied.
    """
    if isinstance(threads, Mapping):
        threads = threads.get(_this_worker(), 1)
    if not threads:
        yield None
        return
    import numba
    n = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield n
        else:
            with threadpool_limits(limits=n):
                yield n
    finally:
        numba.set_num_threads(before)


def execute_run(command: Command, run: Run, threads: int | Mapping | None = None) -> dict:
    """Run one run here and return its record (a failure is a record, never an exception).

    Parameters
    ----------
    command : Command
        The sweep's command.
    run : Run
        The run; its folder is created.
    threads : int or mapping or None
        Numba/BLAS threads for this run: an int, a mapping worker address -> int (looked up
        with this task's worker), or None to leave the process's settings alone.

    Returns
    -------
    dict
        The record: name, config, label, grid, command, params, status ("ok" or "failed"),
        result, error (one line), traceback, seconds (wall time of the run) and worker.
    """
    worker = _this_worker()
    t0 = time.perf_counter()
    try:
        run.folder.mkdir(parents=True, exist_ok=True)
        with task_threads(threads):
            result = command.run(run.params, run.folder)
        result = json.loads(json.dumps(result, default=_json_default))
    except Exception as exc:                      # the run failed: report it, lose nothing else
        return _record(run, command.name, "failed", error=_one_line(exc),
                       traceback=traceback.format_exc(), seconds=time.perf_counter() - t0,
                       worker=worker)
    return _record(run, command.name, "ok", result=result, seconds=time.perf_counter() - t0,
                   worker=worker)


def _one_line(exc: BaseException) -> str:
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --- Dask ---------------------------------------------------------------------------------
def available_cores() -> int:
    """Cores this process may use (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                        # not on Linux
        return os.cpu_count() or 1


def _host_cores() -> tuple[str, int]:
    return socket.gethostname(), available_cores()


#: how long ``--scheduler`` waits for a scheduler to answer [s] (Dask's default is 30 s)
SCHEDULER_TIMEOUT = 20.0


def scheduler_address(scheduler: str) -> str:
    """The address of ``--scheduler``: the argument itself, or the ``address`` of a scheduler
    file (``.json``, or any existing file), read here.

    Dask's own reading of a scheduler file waits, without a word and without end, for the
    file to appear, and fails with an AssertionError on a JSON file without an address; a
    scheduler file is therefore read here, so that a wrong one fails at once with one line.
    """
    if not scheduler.strip():                     # Dask would start a LocalCluster instead
        raise ValueError("--scheduler: empty; give tcp://host:8786 or a scheduler file")
    path = Path(scheduler).expanduser()
    if not (scheduler.endswith(".json") or path.is_file()):
        return scheduler
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--scheduler: {scheduler}: no such scheduler file (`dask scheduler "
                         "--scheduler-file FILE` writes it)") from None
    except (OSError, UnicodeError, ValueError) as exc:
        raise ValueError(f"--scheduler: {scheduler}: not a Dask scheduler file "
                         f"({_one_line(exc)})") from None
    address = doc.get("address") if isinstance(doc, dict) else None
    if not isinstance(address, str) or "://" not in address:
        raise ValueError(f"--scheduler: {scheduler}: not a Dask scheduler file (no 'address' "
                         "such as tcp://host:8786)")
    return address


def probe_scheduler(address: str, scheduler: str, timeout: float | None = None) -> None:
    """Refuse a tcp:// ``address`` where no Dask scheduler greets within ``timeout`` seconds
    (default :data:`SCHEDULER_TIMEOUT`).

    Dask bounds its connect but not the handshake after it: a server that accepts and stays
    silent holds ``distributed.Client`` forever.  A Dask scheduler writes its handshake as
    soon as it accepts, so a connection on which nothing arrives in time is not one.  Refused
    connections are retried until the deadline, as Dask does (a scheduler may be starting).
    Other schemes (tls://, ...) are left to Dask.
    """
    from distributed.comm.addressing import parse_address, parse_host_port
    try:
        scheme, loc = parse_address(address)
        host, port = parse_host_port(loc)
    except (ValueError, TypeError):
        return                                    # Dask's own message (caught by the caller)
    if scheme != "tcp":
        return
    timeout = SCHEDULER_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = max(0.1, deadline - time.monotonic())
            sock = socket.create_connection((host, port), timeout=left)
            break
        except OSError as exc:
            if time.monotonic() + 0.2 >= deadline:
                raise ValueError(f"--scheduler: {scheduler}: nothing answers at {address} "
                                 f"within {timeout:g} s ({_one_line(exc)})") from None
            time.sleep(0.2)
    with sock:
        sock.settimeout(max(0.5, deadline - time.monotonic()))
        try:
            greeting = sock.recv(1)
        except TimeoutError:
            raise ValueError(f"--scheduler: {scheduler}: {address} accepts connections but sent "
                             f"nothing in {timeout:g} s; a Dask scheduler greets at once") from None
        except OSError as exc:
            greeting, why = b"", f" ({_one_line(exc)})"
        else:
            why = ""
    if not greeting:
        raise ValueError(f"--scheduler: {scheduler}: {address} closed the connection without "
                         f"a Dask greeting{why}")


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None,
                threads_per_worker: int = 1, feature: str = "imcsim sweep") -> Iterator:
    """A ``distributed.Client``: on an existing scheduler, or on a new ``LocalCluster``.

    Parameters
    ----------
    scheduler : str or None
        Address of a running scheduler (``tcp://host:8786``), or its scheduler file (a path
        ending in ``.json``, or any existing file; :func:`scheduler_address`); None starts a
        LocalCluster here, closed on exit.  A wrong one is a ValueError within
        :data:`SCHEDULER_TIMEOUT` seconds (:func:`probe_scheduler`), never a hang.
    workers : int or None
        LocalCluster worker processes (default one per available core).
    threads_per_worker : int
        LocalCluster threads per worker (tasks a worker runs at once).
    feature : str
        Named in the message when Dask is not installed.

    Yields
    ------
    distributed.Client
    """
    distributed = require("distributed", "dask", feature)
    if scheduler is not None:
        address = scheduler_address(scheduler)
        probe_scheduler(address, scheduler)
        try:
            client = distributed.Client(address=address, timeout=f"{SCHEDULER_TIMEOUT:g}s")
        except Exception as exc:
            # Dask reads whatever answers as its own frames: an HTTP server's reply becomes a
            # frame length of exabytes (MemoryError), a short reply an assertion or a decoding
            # error; none of them names the address
            raise ValueError(f"--scheduler: {scheduler}: no Dask scheduler answered at {address} "
                             f"({_one_line(exc)})") from None
        with client:
            yield client
        return
    import logging
    n = workers if workers is not None else available_cores()
    if n < 1 or threads_per_worker < 1:
        raise ValueError(f"workers: need at least one worker and thread, got {n} x "
                         f"{threads_per_worker}")
    # Numba's threads are set per task (numba.set_num_threads in execute_run), not through
    # NUMBA_NUM_THREADS: a spawned worker may import Numba before the Nanny applies its env
    # (spawn re-imports the main module, e.g. the imcsim script), and Numba refuses a changed
    # value once its threads run; setting it before the spawn would change this process too.
    # Dask's nanny.pre-spawn-environ already starts workers with OMP/MKL/OPENBLAS threads 1.
    with distributed.LocalCluster(n_workers=n, threads_per_worker=threads_per_worker,
                                  processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def worker_threads(client) -> dict[str, int]:
    """Numba/BLAS threads per task on each worker: its host's cores over the task slots
    (worker threads) of every worker on that host, at least 1.

    Parameters
    ----------
    client : distributed.Client

    Returns
    -------
    dict
        Worker address -> threads.
    """
    info = _workers(client)
    hosts = client.run(_host_cores)               # address -> (hostname, cores)
    slots: dict[str, int] = {}
    for addr, (host, _) in hosts.items():
        slots[host] = slots.get(host, 0) + int(info.get(addr, {}).get("nthreads", 1))
    return {addr: max(1, cores // max(1, slots[host])) for addr, (host, cores) in hosts.items()}


def _workers(client) -> dict:
    """Worker address -> the scheduler's information on it (every worker)."""
    try:
        return client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:                             # distributed before 2025
        return client.scheduler_info()["workers"]


def task_slots(client) -> int:
    """Tasks the cluster runs at once now: the sum of its workers' threads (at least 1)."""
    return max(1, sum(int(w.get("nthreads", 1)) for w in _workers(client).values()))


# --- running a sweep ----------------------------------------------------------------------
@dataclass
class SweepResult:
    """Records of every run of a plan, in plan order; ``skipped``: names found complete."""

    plan: SweepPlan
    records: list[dict]
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict]:
        """Records of the runs that failed."""
        return [r for r in self.records if r["status"] != "ok"]


def run_sweep(plan: SweepPlan, *, client=None, rerun: bool = False,
              on_result: Callable[[dict, int, int], None] | None = None) -> SweepResult:
    """Run every pending run of a plan: as Dask tasks on ``client``, or here one by one.

    Parameters
    ----------
    plan : SweepPlan
        From :func:`plan_sweep`.
    client : distributed.Client or None
        Where the tasks run (see :func:`dask_client`); None runs them in this process, one
        after another, with the process's thread settings (a baseline, and for debugging).
    rerun : bool
        Run complete runs again instead of skipping them.
    on_result : callable(record, done, total) or None
        Called on this thread after every run that finishes (and once per skipped run):
        ``done`` of ``total`` runs are done.

    Returns
    -------
    SweepResult
        Every run's record in plan order; each finished run's record is also in
        ``<run folder>/result.json`` (written as it arrives, all-or-nothing).

    Notes
    -----
    On a client, as many runs are in flight as the cluster has worker threads (re-read as runs
    finish, so workers that join get work): a run never waits behind another on a busy
    worker, and a worker that dies takes only its own run with it.  Dask reschedules that run
    on another worker; after ``distributed.scheduler.allowed-failures`` deaths (default 3) it
    is recorded as failed (``KilledWorker``).
    """
    t0 = time.perf_counter()
    command = COMMANDS[plan.command]
    plan.out.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    skipped = []
    if not rerun:
        for run in plan.runs:
            doc = stored_result(run, plan.command)
            if doc is not None:
                records[run.name] = doc
                skipped.append(run.name)
    total = len(plan.runs)
    done = 0
    for name in skipped:
        done += 1
        if on_result is not None:
            on_result(records[name], done, total)
    pending = [r for r in plan.execution_order() if r.name not in records]

    def finish(run: Run, doc: dict) -> None:
        nonlocal done
        run.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run.folder / RESULT_NAME,
                          json.dumps(doc, indent=1, default=_json_default) + "\n", RESULT_NAME)
        records[run.name] = doc
        done += 1
        if on_result is not None:
            on_result(doc, done, total)

    if client is None:
        for run in pending:
            finish(run, execute_run(command, run, None))
    elif pending:
        distributed = require("distributed", "dask", "imcsim sweep")
        threads = worker_threads(client)
        queue = list(pending)
        inflight: dict = {}
        running = distributed.as_completed()

        def submit_more() -> None:                 # one task per worker thread, no more
            while queue and len(inflight) < task_slots(client):
                run = queue.pop(0)
                fut = client.submit(execute_run, command, run, threads, pure=False,
                                    key=f"imcsim-sweep-{run.name}-{os.getpid()}-"
                                        f"{time.time_ns()}")
                inflight[fut] = run
                running.add(fut)

        try:
            submit_more()
            for fut in running:
                run = inflight.pop(fut)
                if fut.status == "finished":
                    doc = fut.result()
                else:                              # the task never returned: a worker died
                    try:
                        exc = fut.exception()
                    except Exception as e:         # cancelled futures raise here
                        exc = e
                    doc = _record(run, plan.command, "failed", error=_one_line(exc))
                fut.release()
                finish(run, doc)
                submit_more()
        except BaseException:
            client.cancel(list(inflight))
            raise
    ordered = [records[r.name] for r in plan.runs]
    return SweepResult(plan, ordered, skipped, time.perf_counter() - t0)


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
