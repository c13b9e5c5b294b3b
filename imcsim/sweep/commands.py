"""The commands a sweep runs (train, mvm, energy): each normalises its parameters and runs
one set of them in a folder (imcsim.sweep)."""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imcsim.atomic import AtomicOutputs, write_text_atomic
from imcsim.sweep._util import _flatten, _json_default


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
    from imcsim.calibration.montecarlo import trainer_for
    from imcsim.training.engine import TrainConfig
    from imcsim.training.rundir import resumable_checkpoint
    config = TrainConfig.from_json(json.dumps(params))
    trainer = trainer_for(config, folder, progress=False)      # plain or hardware-aware
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
