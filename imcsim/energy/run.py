"""Energy per training step from the statistics an ``imcsim train`` run recorded.

A run folder holds ``metrics.json`` = ``{"config": {TrainConfig fields}, "history": [one dict
per epoch]}``.  Besides ``epoch`` and ``test_acc``, an epoch records

- ``steps``: the training steps of the epoch;
- ``mvm_stats``: ``{layer: {kind: entry}}`` for every MVM that ran on the emulator (kinds on
  the 'exact' or 'fp32' backends have no entry); an entry sums the emulator's counts over the
  epoch: ``calls``, ``array_cycles``, ``adc_conversions``, ``high_vref_conversions``,
  ``bitcell_mults`` (ints), ``active_rows_per_plane`` (mean active rows per array cycle of
  each plane), ``inner`` and ``outputs`` (the MVM's M and N) and ``vectors_per_call``;
- ``cima_write_words`` (optional): the 32-bit CIMA words whose content changed when the stored
  weights were rewritten during the epoch: the weights as the forward MVM stores them, of
  every layer whose forward MVM stores integer weights (backend 'imc' or 'exact'), compared
  step by step; ``cima_write_words_by_layer`` (optional) splits it by layer.

``load_run`` reads and validates that file (every problem is one ValueError naming the file
and the entry); ``run_energy`` prices one training step of every epoch with the measured
events next to the assumed densities of ``energy_report`` (docs/energy.md, section 5).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

from imcsim.config import MATCHED_VREF_SPEC, MacroConfig, load_preset
from imcsim.energy.counts import (
    MVM_KINDS,
    SCHEME_FORMATS,
    layer_event_counts,
    layer_mvm_shape,
    mapped_formats,
)
from imcsim.energy.presets import EnergyPreset
from imcsim.energy.report import (
    DEFAULT_GRADIENT_DENSITY,
    EnergyReport,
    MeasuredMvm,
    energy_report,
)
from imcsim.energy.vref import parse_vref_per_kind
from imcsim.formats import INPUT_MAPPINGS, Radix4Format
from imcsim.workloads import LayerSpec

#: The file of a run folder that holds the configuration and the per-epoch history.
RUN_METRICS_FILE = "metrics.json"
#: Integer fields of an ``mvm_stats`` entry.
ENTRY_INT_FIELDS = ("calls", "array_cycles", "adc_conversions", "high_vref_conversions",
                    "bitcell_mults", "inner", "outputs")
#: The ``config`` fields ``run_energy`` reads.
CONFIG_FIELDS = ("model", "dataset", "batch_size", "backends", "vref", "scheme",
                 "first_last_on_imc", "preset")

#: Where each event of a measured row comes from (docs/energy.md, section 5).
EVENT_SOURCES = {
    "bitcell_mults": "measured: the emulator's count / steps (a masked row spends none); with "
                     "charge_masked_rows: analytic, every row of every plane, x calls per step",
    "adc_conversions": "measured: the emulator's count / steps",
    "high_vref_conversions": "measured: the emulator's count / steps (priced at 0)",
    "dac_row_drives": "measured: the emulator's count / steps (multi-level rows; 0 in runs "
                      "recorded before the option existed, which had one-hot rows)",
    "dac_level_sum": "measured: the emulator's count / steps (multi-level rows)",
    "nmc_outputs": "analytic per call x measured calls per step (independent of the data)",
    "reshape_words": "analytic per call x measured calls per step: the mapping's input "
                     "reshape buffer, with window reuse for convolutions (independent of the "
                     "data)",
    "cima_load_words": "analytic per call x calls per step; where the epoch records "
                       "cima_write_words, the stored weights (forward and backward MVMs) "
                       "write only the measured fraction of their words that a step rewrites "
                       "(per layer with cima_write_words_by_layer); the stored activations of "
                       "the update MVM are new every step: one full load per call",
}


# ----------------------------------------------------------------------------------------
# Records and their validation
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MvmRecord:
    """One ``mvm_stats`` entry: the emulator's counts of one MVM summed over an epoch.

    Attributes
    ----------
    calls : int
        MVM calls in the epoch.
    array_cycles, adc_conversions, high_vref_conversions, bitcell_mults : int
        Events in the epoch (docs/hardware-model.md section 6).
    active_rows_per_plane : tuple of float, length P (planes of the streamed format)
        Mean active rows per array cycle of each plane, rows.
    inner, outputs : int
        M (rows of the stored operand) and N (outputs) of the MVM.
    vectors_per_call : float
        Streamed vectors per call.
    dac_row_drives, dac_level_sum : int
        Multi-level row-DAC events in the epoch (0 when the record has none).
    """

    calls: int
    array_cycles: int
    adc_conversions: int
    high_vref_conversions: int
    bitcell_mults: int
    active_rows_per_plane: tuple
    inner: int
    outputs: int
    vectors_per_call: float
    dac_row_drives: int = 0
    dac_level_sum: int = 0


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of ``history``: epoch (1-based int), steps (int >= 1), test_acc (float),
    mvm_stats ({(layer, kind): MvmRecord}), cima_write_words (int words, or None when the
    epoch does not record it), cima_write_words_by_layer ({layer: int words}, or None)."""

    epoch: int
    steps: int
    test_acc: float
    mvm_stats: dict
    cima_write_words: int | None
    cima_write_words_by_layer: dict | None = None


@dataclass(frozen=True)
class RunRecord:
    """A validated run: path (its metrics.json), config (dict), epochs (tuple of EpochRecord)."""

    path: Path
    config: dict
    epochs: tuple

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def dataset(self) -> str:
        return self.config["dataset"]

    @property
    def batch(self) -> int:
        return self.config["batch_size"]

    @property
    def scheme(self) -> str:
        return self.config["scheme"]

    @property
    def backends(self) -> dict:
        """{kind: 'fp32' | 'exact' | 'imc'} of the run's hidden layers."""
        return dict(self.config["backends"])

    @property
    def vref(self) -> dict:
        """{kind: the run's --vref spec}."""
        return dict(self.config["vref"])


class _Where:
    """Builds one-line errors that name the file and the entry: ``PATH: LOC: problem``."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, loc: str, problem: str) -> ValueError:
        return ValueError(f"{self.path}: {loc}: {problem}" if loc else f"{self.path}: {problem}")

    def mapping(self, value, loc: str) -> dict:
        if not isinstance(value, dict):
            raise self.error(loc, f"expected an object, got {_kind(value)}")
        return value

    def field(self, obj: dict, key: str, loc: str):
        if key not in obj:
            raise self.error(loc, f"missing key {key!r}")
        return obj[key]

    def integer(self, value, loc: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(loc, f"expected an integer, got {_kind(value)}")
        if value < minimum:
            raise self.error(loc, f"must be >= {minimum}, got {value}")
        return value

    def number(self, value, loc: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise self.error(loc, f"expected a finite number, got {_kind(value)}")
        return float(value)

    def string(self, value, loc: str) -> str:
        if not isinstance(value, str):
            raise self.error(loc, f"expected a string, got {_kind(value)}")
        return value


def _kind(value) -> str:
    """A short description of a JSON value for error messages."""
    if value is None:
        return "null"
    text = json.dumps(value) if isinstance(value, (bool, int, float, str)) else ""
    name = {dict: "an object", list: "a list", bool: "a boolean", str: "a string",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)
    return f"{name} {text}".strip() if text and len(text) <= 40 else name


def _kind_pairs(w: _Where, value, loc: str) -> dict:
    """``[["forward", X], ...]`` (or an object) -> {kind: X} with the three MVM kinds."""
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
        pairs = [tuple(p) for p in value]
    else:
        raise w.error(loc, f"expected [[kind, value], ...], got {_kind(value)}")
    out = {}
    for kind, item in pairs:
        if kind not in MVM_KINDS:
            raise w.error(loc, f"unknown MVM kind {kind!r}; expected {', '.join(MVM_KINDS)}")
        out[kind] = w.string(item, f"{loc}.{kind}")
    if set(out) != set(MVM_KINDS):
        raise w.error(loc, f"expected every MVM kind ({', '.join(MVM_KINDS)}), got "
                           f"{', '.join(out) or 'none'}")
    return out


def _check_config(w: _Where, config) -> dict:
    config = w.mapping(config, "config")
    out = {}
    for key in CONFIG_FIELDS:
        out[key] = w.field(config, key, "config")
    # optional (runs written before the option existed did not skip any cycle)
    out["skip_masked_cycles"] = config.get("skip_masked_cycles", False)
    out["input_mapping"] = config.get("input_mapping", "one-hot")       # optional, likewise
    if out["input_mapping"] not in INPUT_MAPPINGS:
        raise w.error("config.input_mapping", f"expected one of {', '.join(INPUT_MAPPINGS)}, "
                                              f"got {_kind(out['input_mapping'])}")
    if not isinstance(out["skip_masked_cycles"], bool):
        raise w.error("config.skip_masked_cycles",
                      f"expected a bool, got {_kind(out['skip_masked_cycles'])}")
    for key in ("model", "dataset", "preset"):
        w.string(out[key], f"config.{key}")
    w.integer(out["batch_size"], "config.batch_size", minimum=1)
    if out["scheme"] not in SCHEME_FORMATS:
        raise w.error("config.scheme", f"expected one of {', '.join(sorted(SCHEME_FORMATS))}, "
                                       f"got {_kind(out['scheme'])}")
    if not isinstance(out["first_last_on_imc"], bool):
        raise w.error("config.first_last_on_imc",
                      f"expected a boolean, got {_kind(out['first_last_on_imc'])}")
    out["backends"] = sorted(_kind_pairs(w, out["backends"], "config.backends").items(),
                             key=lambda kv: MVM_KINDS.index(kv[0]))
    out["vref"] = sorted(_kind_pairs(w, out["vref"], "config.vref").items(),
                         key=lambda kv: MVM_KINDS.index(kv[0]))
    return out


def _check_entry(w: _Where, value, loc: str) -> MvmRecord:
    entry = w.mapping(value, loc)
    ints = {key: w.integer(w.field(entry, key, loc), f"{loc}.{key}",
                           minimum=1 if key in ("calls", "inner", "outputs") else 0)
            for key in ENTRY_INT_FIELDS}
    planes = w.field(entry, "active_rows_per_plane", loc)
    if not isinstance(planes, list) or not planes:
        raise w.error(f"{loc}.active_rows_per_plane",
                      f"expected a non-empty list of numbers, got {_kind(planes)}")
    rows = tuple(w.number(v, f"{loc}.active_rows_per_plane[{i}]") for i, v in enumerate(planes))
    if any(r < 0 for r in rows):
        raise w.error(f"{loc}.active_rows_per_plane", "active rows must be >= 0")
    vectors = w.number(w.field(entry, "vectors_per_call", loc), f"{loc}.vectors_per_call")
    for key in ("dac_row_drives", "dac_level_sum"):      # optional: multi-level rows only
        if key in entry:
            ints[key] = w.integer(entry[key], f"{loc}.{key}", minimum=0)
    if ints["high_vref_conversions"] > ints["adc_conversions"]:
        raise w.error(loc, f"high_vref_conversions {ints['high_vref_conversions']} exceed "
                           f"adc_conversions {ints['adc_conversions']}")
    return MvmRecord(active_rows_per_plane=rows, vectors_per_call=vectors, **ints)


def _check_epoch(w: _Where, value, i: int) -> EpochRecord:
    loc = f"history[{i}]"
    row = w.mapping(value, loc)
    epoch = w.integer(w.field(row, "epoch", loc), f"{loc}.epoch", minimum=1)
    test_acc = w.number(w.field(row, "test_acc", loc), f"{loc}.test_acc")
    if "steps" not in row or "mvm_stats" not in row:
        raise w.error(loc, "no 'steps' or 'mvm_stats': the run was written before imcsim train "
                           "recorded MVM statistics")
    steps = w.integer(row["steps"], f"{loc}.steps", minimum=1)
    stats = {}
    for layer, kinds in w.mapping(row["mvm_stats"], f"{loc}.mvm_stats").items():
        lloc = f"{loc}.mvm_stats.{layer}"
        for kind, entry in w.mapping(kinds, lloc).items():
            if kind not in MVM_KINDS:
                raise w.error(lloc, f"unknown MVM kind {kind!r}; expected "
                                    f"{', '.join(MVM_KINDS)}")
            stats[(layer, kind)] = _check_entry(w, entry, f"{lloc}.{kind}")
    cima = row.get("cima_write_words")
    if cima is not None:
        cima = w.integer(cima, f"{loc}.cima_write_words")
    by_layer = row.get("cima_write_words_by_layer")
    if by_layer is not None:
        bloc = f"{loc}.cima_write_words_by_layer"
        by_layer = {name: w.integer(v, f"{bloc}.{name}")
                    for name, v in w.mapping(by_layer, bloc).items()}
        if cima is None or sum(by_layer.values()) != cima:
            raise w.error(bloc, f"sums to {sum(by_layer.values())}, not cima_write_words "
                                f"{cima}")
    return EpochRecord(epoch, steps, test_acc, stats, cima, by_layer)


def load_run(folder: str | os.PathLike, *, name: str = "folder") -> RunRecord:
    """Read and validate the ``metrics.json`` of a training run folder.

    Parameters
    ----------
    folder : str or PathLike
        The run folder (``imcsim train --out``).
    name : str
        The argument's name in error messages (e.g. '--from-run').

    Returns
    -------
    RunRecord
        The configuration fields ``run_energy`` reads and one ``EpochRecord`` per epoch.

    Raises
    ------
    ValueError
        One line naming the folder or file and the problem: no such folder, no metrics.json,
        unreadable or invalid JSON, a missing or malformed key, an empty history, an epoch
        without MVM statistics (a run written before they were recorded).
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a path, got {type(folder).__name__}")
    folder = Path(folder)
    if not folder.exists():
        raise ValueError(f"{name}: no such folder {folder}")
    if not folder.is_dir():
        raise ValueError(f"{name}: {folder} is not a folder (give the run folder that holds "
                         f"{RUN_METRICS_FILE})")
    path = folder / RUN_METRICS_FILE
    if not path.is_file():
        raise ValueError(f"{name}: no {RUN_METRICS_FILE} in {folder} (not an imcsim train "
                         "--out folder?)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno})") from None
    w = _Where(path)
    doc = w.mapping(doc, "")
    config = _check_config(w, w.field(doc, "config", ""))
    history = w.field(doc, "history", "")
    if not isinstance(history, list):
        raise w.error("history", f"expected a list, got {_kind(history)}")
    if not history:
        raise w.error("history", "empty: the run has no finished epoch")
    epochs = tuple(_check_epoch(w, row, i) for i, row in enumerate(history))
    return RunRecord(path, config, epochs)


# ----------------------------------------------------------------------------------------
# Energy of every epoch
# ----------------------------------------------------------------------------------------
@dataclass
class EpochEnergy:
    """One epoch priced with its measured statistics.

    - epoch, steps, test_acc : as recorded.
    - measured : EnergyReport, events and energies per training step.
    - cima_write_words : int or None, as recorded (words in the epoch).
    - weight_rewrite_fraction : float or None: cima_write_words / (steps x the words of one
      forward weight load of every layer it covers): the fraction of the stored weight words
      a step rewrites (1 = all of them, as the analytic model assumes); None when not
      recorded.
    """

    epoch: int
    steps: int
    test_acc: float
    measured: EnergyReport
    cima_write_words: int | None
    weight_rewrite_fraction: float | None

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "steps": self.steps, "test_acc": self.test_acc,
                "cima_write_words": self.cima_write_words,
                "weight_rewrite_fraction": self.weight_rewrite_fraction,
                "measured": self.measured.to_dict()}


@dataclass
class RunEnergy:
    """A run priced per training step: the assumed densities and every epoch's measurements.

    run : RunRecord.
    assumed : EnergyReport with the assumed densities (the same for every epoch).
    epochs : list of EpochEnergy.
    event_sources : {event: where a measured row's count comes from}.
    """

    run: RunRecord
    assumed: EnergyReport
    epochs: list
    event_sources: dict

    def to_dict(self) -> dict:
        """A JSON-ready dict: run (path, config), event_sources, assumed, epochs."""
        return {"run": {"path": str(self.run.path), "config": self.run.config},
                "event_sources": self.event_sources, "assumed": self.assumed.to_dict(),
                "epochs": [e.to_dict() for e in self.epochs]}


def _measured_density(rec: MvmRecord, streamed, rows: int) -> float:
    """The analytic model's density of the streamed operand from mean active rows per plane."""
    tiles = -(-rec.inner // rows)
    mean_rows = rec.inner / tiles              # mean rows of a row tile
    per_plane = rec.active_rows_per_plane
    # A radix-4 element is active in at most one plane (one-hot): the planes add up; a binary
    # element is active in all of them or none.
    active = sum(per_plane) if isinstance(streamed, Radix4Format) else sum(per_plane) / len(
        per_plane)
    return active / mean_rows


def _measured_mvm(w: _Where, loc: str, rec: MvmRecord, layer: LayerSpec, kind: str,
                  batch: int, steps: int, config: MacroConfig, formats) -> MeasuredMvm:
    """A record checked against the layer's mapping, as events per step."""
    inner, outputs, vectors = layer_mvm_shape(layer, kind, batch)
    if (rec.inner, rec.outputs) != (inner, outputs) or not math.isclose(
            rec.vectors_per_call, vectors, rel_tol=1e-12):
        raise w.error(loc, f"inner {rec.inner}, outputs {rec.outputs}, vectors_per_call "
                           f"{rec.vectors_per_call:g} differ from the {layer.name} {kind} MVM "
                           f"of the model at batch {batch} ({inner}, {outputs}, {vectors})")
    streamed = formats.streamed(kind)
    if len(rec.active_rows_per_plane) != streamed.n_planes:
        raise w.error(f"{loc}.active_rows_per_plane",
                      f"{len(rec.active_rows_per_plane)} planes; the {kind} MVM streams "
                      f"{streamed.spec()} ({streamed.n_planes} planes)")
    one = layer_event_counts(layer, kind, batch, config=config, formats=formats).total()
    # conversions and array cycles do not depend on the data: a mismatch means another
    # model, batch, scheme or macro geometry than the configuration says; a controller that
    # skips all-masked cycles (skip_masked_cycles) runs at most that many
    for key in ("adc_conversions", "array_cycles"):
        full = one[key] * rec.calls
        ok = getattr(rec, key) <= full if config.skip_masked_cycles else getattr(rec, key) == full
        if not ok:
            relation = "exceeds" if config.skip_masked_cycles else "is not"
            raise w.error(f"{loc}.{key}", f"{getattr(rec, key)} {relation} calls x {one[key]}, "
                                          f"the {key} of one {layer.name} {kind} MVM")
    if rec.bitcell_mults > one["bitcell_mults"] * rec.calls:
        raise w.error(f"{loc}.bitcell_mults", f"{rec.bitcell_mults} exceed calls x "
                                              f"{one['bitcell_mults']} (every row active)")
    density = _measured_density(rec, streamed, config.rows)
    if density > 1.0 + 1e-9:
        raise w.error(f"{loc}.active_rows_per_plane", "more active rows than the rows of a "
                                                      "row tile")
    return MeasuredMvm(calls=rec.calls / steps, bitcell_mults=rec.bitcell_mults / steps,
                       adc_conversions=rec.adc_conversions / steps,
                       high_vref_conversions=rec.high_vref_conversions / steps,
                       dac_row_drives=rec.dac_row_drives / steps,
                       dac_level_sum=rec.dac_level_sum / steps,
                       density=min(density, 1.0))   # 1 + rounding of a mean: dense


def _weight_rewrite(w: _Where, i: int, ep: EpochRecord, run: RunRecord, layers: list,
                    load_words: dict) -> tuple[dict | None, float | None]:
    """({layer: fraction of its weight words a step rewrites}, overall fraction) of an epoch.

    ``cima_write_words`` counts the weights as the forward MVM stores them, over the layers
    whose forward stores integer weights: the run's hidden layers (and its first and last
    ones with ``first_last_on_imc``) when its forward backend is 'imc' or 'exact'.  By layer
    where the epoch records it, else one fraction for every covered layer.
    """
    if ep.cima_write_words is None:
        return None, None
    loc = f"history[{i}].cima_write_words"
    if ep.cima_write_words_by_layer is not None:
        words = ep.cima_write_words_by_layer
        unknown = sorted(set(words) - set(load_words))
        if unknown:
            raise w.error(f"{loc}_by_layer", f"no layer {unknown[0]!r} in {run.model}")
    else:
        edge = {layers[0].name, layers[-1].name}
        covered = [la.name for la in layers if run.config["first_last_on_imc"]
                   or la.name not in edge] if run.backends["forward"] != "fp32" else []
        words = None
    full = sum(load_words[n] for n in (words if words is not None else covered)) * ep.steps
    if full == 0:
        if ep.cima_write_words > 0:
            raise w.error(loc, f"{ep.cima_write_words} words, but no layer stores integer "
                               "weights (forward backend fp32)")
        return {}, None
    fraction = ep.cima_write_words / full
    if words is not None:
        rewrite = {n: v / (load_words[n] * ep.steps) for n, v in words.items()}
    else:
        rewrite = dict.fromkeys(covered, fraction)
    for name, f in rewrite.items():
        if f > 1.0:
            raise w.error(loc, f"{name}: more words rewritten than {ep.steps} steps x "
                               f"{load_words[name]} (a full load per step)")
    return rewrite, fraction


def _run_vref(w: _Where, run: RunRecord, config: MacroConfig) -> dict:
    # ``imcsim train --vref fixed:matched`` programs a fixed F per layer; only the mode matters
    # here (a fixed reference converts no cycle at the high level of the dual mode)
    specs = {k: ("fixed" if v.strip() == MATCHED_VREF_SPEC else v) for k, v in run.vref.items()}
    try:
        vref = parse_vref_per_kind(specs, config.vref)
    except ValueError as exc:
        raise w.error("config.vref", str(exc)) from None
    # the analytic (assumed) column has no model of the per-column dual choice, which depends
    # on the stored data: it uses the per-cycle rule with the same levels; the measured rows
    # hold the run's own conversions and high-level counts
    return {k: replace(v, per_column=False) for k, v in vref.items()}


def run_energy(run: RunRecord, layers: list[LayerSpec], *,
               imc: str = "forward,backward,update", first_last_on_imc: bool = False,
               gradient_density: float = DEFAULT_GRADIENT_DENSITY, pool_sparsity: bool = True,
               charge_masked_rows: bool = False, first_layer_backward: bool = False,
               preset: EnergyPreset | str | None = None,
               config: MacroConfig | None = None) -> RunEnergy:
    """Energy per training step of every epoch of a run: measured events and assumed densities.

    The mapping (which MVM kinds run on IMC, where the first and last layers run, the
    accounting variants) is this function's; the run supplies the model, batch, scheme,
    Vref and the statistics.  An MVM mapped to IMC with an ``mvm_stats`` entry uses the
    measured events (``EVENT_SOURCES``); one without (its kind ran on 'exact' or 'fp32', or
    the first/last layers ran on the GPU) uses the assumed density, row by row ('source').

    Parameters
    ----------
    run : RunRecord
        From ``load_run``.
    layers : list of LayerSpec
        The training model's layers, first to last, with the names of ``mvm_stats``.
    imc, first_last_on_imc, gradient_density, pool_sparsity, charge_masked_rows, first_layer_backward, preset
        As in ``energy_report``.
    config : MacroConfig or None
        Array geometry (default: the run's macro preset, ``config.preset``).

    Returns
    -------
    RunEnergy
        The assumed report and one measured report per epoch (events and joules per step).

    Raises
    ------
    ValueError
        A statistic that does not fit the model (unknown layer, another shape, plane count or
        conversion count than the mapping's), naming the file and the entry.
    """
    if not isinstance(run, RunRecord):
        raise TypeError(f"run: expected RunRecord, got {type(run).__name__}")
    layers = list(layers)
    if not layers or not all(isinstance(la, LayerSpec) for la in layers):
        raise TypeError("layers: expected a non-empty list of LayerSpec")
    w = _Where(run.path)
    if config is None:
        try:
            config = load_preset(run.config["preset"])
        except ValueError as exc:
            raise w.error("config.preset", str(exc)) from None
    # the run's controller option: skipped all-masked cycles make conversions data-dependent
    config = replace(config, skip_masked_cycles=run.config["skip_masked_cycles"])
    vref = _run_vref(w, run, config)
    mapping = run.config["input_mapping"]
    formats = mapped_formats(SCHEME_FORMATS[run.scheme], mapping)
    by_name = {la.name: la for la in layers}
    common = dict(layers=layers, imc=imc, vref=vref, gradient_density=gradient_density,
                  pool_sparsity=pool_sparsity, first_last_on_imc=first_last_on_imc,
                  charge_masked_rows=charge_masked_rows,
                  first_layer_backward=first_layer_backward, preset=preset, config=config,
                  scheme=run.scheme, input_mapping=mapping)
    assumed = energy_report(run.model, run.batch, **common)

    # one forward weight load of each layer, in words: what a step rewrites at most
    load_words = {la.name: int(layer_event_counts(la, "forward", run.batch, config=config,
                                                  formats=formats).total()["cima_load_words"])
                  for la in layers}
    epochs = []
    for i, ep in enumerate(run.epochs):
        measured = {}
        for (name, kind), rec in ep.mvm_stats.items():
            loc = f"history[{i}].mvm_stats.{name}.{kind}"
            if name not in by_name:
                raise w.error(loc, f"no layer {name!r} in {run.model} (its layers: "
                                   f"{', '.join(by_name)})")
            measured[(name, kind)] = _measured_mvm(w, loc, rec, by_name[name], kind, run.batch,
                                                   ep.steps, config, formats)
        rewrite, fraction = _weight_rewrite(w, i, ep, run, layers, load_words)
        report = energy_report(run.model, run.batch, measured=measured, weight_rewrite=rewrite,
                               **common)
        epochs.append(EpochEnergy(ep.epoch, ep.steps, ep.test_acc, report,
                                  ep.cima_write_words, fraction))
    return RunEnergy(run, assumed, epochs, dict(EVENT_SOURCES))


__all__ = ["RUN_METRICS_FILE", "EVENT_SOURCES", "MvmRecord", "EpochRecord", "RunRecord",
           "EpochEnergy", "RunEnergy", "load_run", "run_energy"]
