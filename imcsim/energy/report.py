"""Energy of counted events, the GPU baseline, and the whole-model report of one training step.

``energy_report`` maps the three training MVMs of every layer of a model (``MODELS``) onto the
macro (Grimm & Verma Sec. III; docs/hardware-model.md section 3), prices their event counts
with an ``EnergyPreset`` and compares with a GPU baseline (energy = 2 x MACs / ops per joule).
Every TOPS/W figure counts operations = 2 x MACs (``OPS_PER_MAC``, ``TOPS_CONVENTION``), on
the IMC and the GPU side alike.  The first layer's backward MVM (the gradient of the input
image) is not run, hence not charged, unless ``first_layer_backward``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from imcsim.config import MacroConfig, VrefConfig, parse_mvm_kinds
from imcsim.energy.checks import check_density, check_number, check_pos_int, check_str
from imcsim.energy.counts import (
    MVM_KINDS,
    SCHEME_FORMATS,
    TrainingFormats,
    layer_event_counts,
    mapped_formats,
)
from imcsim.energy.presets import ASSUMED_EVENTS, COSTED_EVENTS, PRICED_EVENTS, EnergyPreset, resolve_energy_preset
from imcsim.energy.vref import parse_vref_per_kind
from imcsim.events import EVENT_NAMES, EventCounts
from imcsim.formats import BinaryFormat
from imcsim.macro import MvmResult
from imcsim.workloads import LayerSpec, vgg_lite_layers

#: Models ``energy_report`` knows: name -> function returning its list of ``LayerSpec``.
MODELS = {"vgg-lite": vgg_lite_layers}

#: Default fraction of radix-4 gradient elements that are non-zero (see docs/energy.md, 3).
DEFAULT_GRADIENT_DENSITY = 0.5
#: Fraction of a max-pooled conv output's gradient that max-pool backward can leave non-zero.
POOL_GRADIENT_FRACTION = 0.25

#: Operations per MAC in every TOPS/W figure, on the IMC and the GPU side alike (a MAC is a
#: multiply and an add; the GPU's FP32 FLOPS count them so).
OPS_PER_MAC = 2
#: The TOPS/W convention, stated once in every report.
TOPS_CONVENTION = "TOPS/W = tera-operations per joule, operations = 2 x MACs (IMC and GPU alike)"

#: Count columns of a report row (besides the energies).
TABLE_COLUMNS = ("macs", "bitcell_mults", "adc_conversions", "nmc_outputs", "reshape_words",
                 "cima_load_words", "high_vref_conversions", "array_cycles", "dac_row_drives",
                 "dac_level_sum")


# ----------------------------------------------------------------------------------------
# Energy of counted events; GPU baseline
# ----------------------------------------------------------------------------------------
def _event_totals(event_totals) -> dict:
    if isinstance(event_totals, MvmResult):
        event_totals = event_totals.events
    if isinstance(event_totals, EventCounts):
        event_totals = event_totals.total()
    if not isinstance(event_totals, dict):
        raise TypeError("event_totals: expected a dict of event counts, an EventCounts or an "
                        f"MvmResult, got {type(event_totals).__name__}")
    unknown = set(event_totals) - set(EVENT_NAMES)
    if unknown:
        raise ValueError(f"event_totals: unknown events {sorted(unknown)}; known: {EVENT_NAMES}")
    missing = [e for e in COSTED_EVENTS if e not in event_totals]
    if missing:
        raise ValueError(f"event_totals: missing costed events {missing}")
    return {name: check_number(f"event_totals[{name!r}]", value)
            for name, value in event_totals.items()}


def energy_from_events(event_totals: dict | EventCounts | MvmResult,
                       preset: EnergyPreset | str | None = None) -> dict[str, float]:
    """Energy of counted macro events.

    Parameters
    ----------
    event_totals : dict or EventCounts or MvmResult
        Event counts keyed by name (``res.events.total()``); the five Table II events must be
        present, other names must be in ``EVENT_NAMES``.
    preset : EnergyPreset or str or None
        Energy per event (default: the Table II preset).

    Returns
    -------
    dict of str to float
        Joules per costed event (keys of ``COSTED_EVENTS``), per assumed multi-level row-DAC
        event (``ASSUMED_EVENTS``, 0 where the totals have none) and ``"total"`` (J).
    """
    totals = _event_totals(event_totals)
    per = resolve_energy_preset(preset).joules_per_event()
    out = {name: totals[name] * per[name] for name in COSTED_EVENTS}
    out.update({name: totals.get(name, 0) * per[name] for name in ASSUMED_EVENTS})
    out["total"] = float(sum(out.values()))
    return out


def gpu_energy(macs: int | float, tops_per_watt: float | EnergyPreset | None = None) -> float:
    """GPU baseline energy in joules: ``OPS_PER_MAC`` x MACs / (ops per joule).

    Parameters
    ----------
    macs : int or float
        Multiply-accumulates (>= 0).
    tops_per_watt : float or EnergyPreset or None
        Tera-operations per joule (> 0), operations = 2 x MACs (default: the default preset's
        0.116 of the T4).

    Returns
    -------
    float
        Joules.
    """
    macs = check_number("macs", macs)
    if tops_per_watt is None or isinstance(tops_per_watt, EnergyPreset):
        tops_per_watt = resolve_energy_preset(tops_per_watt).gpu_tops_per_watt
    tops_per_watt = check_number("tops_per_watt", tops_per_watt, positive=True)
    return OPS_PER_MAC * macs / (tops_per_watt * 1e12)


def tops_per_watt(macs: int | float, joules: float) -> float:
    """Efficiency in TOPS/W (tera-operations per joule), operations = ``OPS_PER_MAC`` x MACs.

    The inverse of ``gpu_energy``: ``tops_per_watt(m, gpu_energy(m, t)) == t``.

    Parameters
    ----------
    macs : int or float
        Multiply-accumulates (>= 0).
    joules : float
        Energy spent on them (> 0), J.

    Returns
    -------
    float
        Tera-operations per joule.
    """
    macs = check_number("macs", macs)
    joules = check_number("joules", joules, positive=True)
    return OPS_PER_MAC * macs / joules / 1e12


# ----------------------------------------------------------------------------------------
# The whole-model report
# ----------------------------------------------------------------------------------------
#: Device of the row of an MVM that is not run at all: the first layer's backward MVM (the
#: gradient of the input image, which no weight needs) unless ``first_layer_backward``.
SKIPPED = "skip"


@dataclass(frozen=True)
class MeasuredMvm:
    """Events of one training MVM per training step, measured by the emulator in a run.

    The values are an epoch's totals divided by its training steps, so they are floats.

    Attributes
    ----------
    calls : float
        MVM calls per step (1 when the engine runs the MVM once per step).
    bitcell_mults, adc_conversions, high_vref_conversions : float
        Events per step, as ``Macro.mvm`` counted them (masked rows spend no bit-cell
        multiplication).
    density : float in [0, 1]
        Measured density of the streamed operand (the analytic model's ``density``: the
        fraction of non-zero radix-4 elements, or of active rows per plane for binary ones).
    dac_row_drives, dac_level_sum : float
        Multi-level row-DAC events per step (docs/hardware-model.md 4.8; 0 for one-hot rows).
    """

    calls: float
    bitcell_mults: float
    adc_conversions: float
    high_vref_conversions: float
    density: float
    dac_row_drives: float = 0.0
    dac_level_sum: float = 0.0

    def __post_init__(self):
        for name in ("calls", "bitcell_mults", "adc_conversions", "high_vref_conversions",
                     "dac_row_drives", "dac_level_sum"):
            check_number(name, getattr(self, name))
        check_density("density", self.density)


@dataclass
class EnergyReport:
    """Per-layer x per-MVM counts and energies, totals and the GPU comparison.

    - rows : list of dict, one per (layer, MVM kind): layer, mvm, device ('imc', 'gpu', or
      'skip' for the first layer's backward MVM, which is not run), vref, density, source
      ('assumed' or 'measured' statistics; '-' on the GPU and for skipped rows), the counts
      of ``TABLE_COLUMNS`` (0 on the GPU and when skipped), energy_j (on its device),
      imc_energy_j (had it run on IMC), gpu_energy_j (had it run on the GPU), and for IMC
      rows the energy split by event (``e_<event>``); energies in joules, counts in events
      per training step.
    - totals : dict of summed counts and energies.
    - comparison : dict: gpu_step_j, imc_step_j, ratio, imc_part_j, gpu_part_j, imc_macs,
      imc_tops_per_watt, gpu_tops_per_watt (both ops = 2 x MACs, ``OPS_PER_MAC``),
      first_last_j, without_first_last_j, gpu_without_first_last_j,
      ratio_without_first_last, first_last_penalty, first_last_mac_fraction,
      high_vref_share, sources (IMC rows with assumed and measured statistics).
    - settings : dict of the inputs and the stated assumptions.
    """

    rows: list
    totals: dict
    comparison: dict
    settings: dict

    def to_dict(self) -> dict:
        """settings, rows, totals and comparison as one JSON-ready dict."""
        return {"settings": self.settings, "rows": self.rows, "totals": self.totals,
                "comparison": self.comparison}


def _streamed_density(layer, kind, densities, activation_density, gradient_density,
                      pool_sparsity, formats: TrainingFormats, config: MacroConfig) -> float:
    """Assumed density of the streamed operand of one training MVM of ``layer``."""
    if (layer.name, kind) in densities:
        return check_density(f"densities[{(layer.name, kind)}]", densities[(layer.name, kind)])
    if kind == "forward":
        return activation_density
    if isinstance(formats.gradient, BinaryFormat) and not config.mask_zero_inputs:
        return 1.0              # a zero binary gradient still drives +/-1 rows: nothing masked
    return gradient_density * (POOL_GRADIENT_FRACTION if pool_sparsity and layer.pool_after
                               else 1.0)


def _high_share(rows: list, kind: str) -> float | None:
    conv = sum(r["adc_conversions"] for r in rows if r["mvm"] == kind and r["device"] == "imc")
    high = sum(r["high_vref_conversions"] for r in rows
               if r["mvm"] == kind and r["device"] == "imc")
    return high / conv if conv else None


def _comparison(rows: list, totals: dict, edge: set, kinds_on_imc: tuple,
                preset: EnergyPreset) -> dict:
    """The GPU comparison of ``EnergyReport.comparison``."""
    def total(key, where=lambda r: True):
        return sum(r[key] for r in rows if where(r))

    def on_edge(r):
        return r["layer"] in edge

    imc_part = float(total("energy_j", lambda r: r["device"] == "imc"))
    gpu_step = float(total("gpu_energy_j"))
    imc_macs = total("macs", lambda r: r["device"] == "imc")
    without_edge = totals["energy_j"] - float(total("energy_j", on_edge))
    gpu_without_edge = gpu_step - float(total("gpu_energy_j", on_edge))
    return {
        "gpu_step_j": gpu_step,
        "imc_step_j": totals["energy_j"],
        "ratio": gpu_step / totals["energy_j"],
        "imc_part_j": imc_part,
        "gpu_part_j": float(total("energy_j", lambda r: r["device"] == "gpu")),
        "imc_macs": imc_macs,
        "imc_tops_per_watt": tops_per_watt(imc_macs, imc_part) if imc_part > 0 else None,
        "gpu_tops_per_watt": preset.gpu_tops_per_watt,
        "first_last_j": float(total("energy_j", on_edge)),
        "without_first_last_j": without_edge,
        "gpu_without_first_last_j": gpu_without_edge,
        "first_last_penalty": totals["energy_j"] / without_edge if without_edge > 0 else None,
        "first_last_mac_fraction": total("macs", on_edge) / totals["macs"],
        "high_vref_share": {k: _high_share(rows, k) for k in kinds_on_imc},
        "ratio_without_first_last": gpu_without_edge / without_edge if without_edge > 0 else None,
        "sources": {src: sum(1 for r in rows if r["device"] == "imc" and r["source"] == src)
                    for src in ("assumed", "measured")},
    }


def _check_layers(model, layers) -> list[LayerSpec]:
    """The layers of the report: ``layers`` if given, else ``MODELS[model]()``."""
    if layers is None:
        if not isinstance(model, str) or model not in MODELS:
            raise ValueError(f"model: must be one of {sorted(MODELS)}, got {model!r}")
        return MODELS[model]()
    check_str("model", model)
    layers = list(layers)
    if not layers or not all(isinstance(la, LayerSpec) for la in layers):
        raise TypeError("layers: expected a non-empty list of LayerSpec")
    names = [la.name for la in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"layers: names must be unique, got {names}")
    return layers


def _row_events(layer, kind, batch, *, config, vref, density, formats, measured,
                charge_masked_rows, rewrite) -> tuple[dict, str, float]:
    """Events per step of one MVM on IMC: (counts, source, density shown).

    Without a measurement every event is analytic.  With one, the events that depend on the
    data (bit-cell multiplications, high-Vref conversions) and the ADC samples are the
    emulator's counts; NMC outputs, reshape words and CIMA words, which do not depend on the
    data, are analytic per call times the measured calls per step.  ``rewrite`` (a fraction,
    or None) scales the CIMA words of the stored weights (forward, backward) to the words a
    step rewrites, whatever the source of the other events.
    """
    ev = layer_event_counts(layer, kind, batch, config=config, vref=vref, formats=formats,
                            density=None if density == 1.0 and kind == "forward" else density)
    tot = {k: float(v) for k, v in ev.total().items()}
    calls, source = 1.0, "assumed"
    if measured is not None:
        calls, source, density = measured.calls, "measured", measured.density
        tot = {k: v * calls for k, v in tot.items()}
        tot.update(bitcell_mults=measured.bitcell_mults,
                   adc_conversions=measured.adc_conversions,
                   high_vref_conversions=measured.high_vref_conversions,
                   dac_row_drives=measured.dac_row_drives,
                   dac_level_sum=measured.dac_level_sum)
    if rewrite is not None and kind != "update":        # forward, backward: stored weights
        tot["cima_load_words"] *= rewrite
    if charge_masked_rows:
        full = layer_event_counts(layer, kind, batch, config=config, vref=vref, formats=formats)
        tot["bitcell_mults"] = float(full.total()["bitcell_mults"]) * calls
    return tot, source, density


def energy_report(model: str = "vgg-lite", batch: int = 128, *,
                  imc: str | Iterable[str] = "forward,backward,update",
                  vref: str | Iterable[str] | Mapping | VrefConfig | None = None,
                  gradient_density: float = DEFAULT_GRADIENT_DENSITY,
                  activation_density: float = 1.0, pool_sparsity: bool = True,
                  first_last_on_imc: bool = False, charge_masked_rows: bool = False,
                  first_layer_backward: bool = False,
                  preset: EnergyPreset | str | None = None, config: MacroConfig | None = None,
                  densities: dict | None = None, layers: Iterable[LayerSpec] | None = None,
                  scheme: str = "radix4",
                  measured: Mapping[tuple[str, str], MeasuredMvm] | None = None,
                  weight_rewrite: Mapping[str, float] | None = None,
                  input_mapping: str = "one-hot") -> EnergyReport:
    """Energy of one training step of a model: IMC for the chosen MVMs, GPU elsewhere.

    Parameters
    ----------
    model : str
        A key of ``MODELS`` ('vgg-lite'), or with ``layers`` only a label.
    batch : int
        Images per training step.
    imc : str or iterable of str
        MVM kinds that run on the macro ('forward,backward,update', 'all', 'none', ...).
    vref : str or list of str or dict or VrefConfig or None
        ADC reference per kind (``parse_vref_per_kind``: 'dual', 'forward=dual:255:2304', ...;
        levels default to ``config.vref``'s); it changes only the count of high-Vref
        conversions, not the energy (Table II prices an ADC sample whatever its reference).
    gradient_density : float in [0, 1]
        Assumed fraction of non-zero radix-4 gradient elements (docs/energy.md, 3).
    activation_density : float in [0, 1]
        Fraction of active binary activation rows; below 1 only with ``mask_zero_inputs``.
    pool_sparsity : bool
        Multiply the gradient density of a layer followed by max-pool by 1/4.
    first_last_on_imc : bool
        Run the first and last layers on IMC too (the paper keeps them on the GPU in FP32).
    charge_masked_rows : bool
        Accounting variant: charge a bit-cell multiplication for every row of every plane,
        masked or not (no credit for sparsity).  Default False: a masked row spends no
        bit-cell multiplication (docs/energy.md, 4).
    first_layer_backward : bool
        Accounting variant: charge the first layer's backward MVM, on both the IMC and the
        GPU side.  Default False: that MVM computes the gradient of the input image, which
        training never needs, so its row is 'skip' with no MACs and no energy.
    preset : EnergyPreset or str or None
        Energy per event and GPU baseline (default: Table II / T4).
    config : MacroConfig or None
        Array geometry (default: the paper's).
    densities : dict or None
        {(layer name, kind): density}: assumed densities for those MVMs instead of the
        defaults.
    layers : iterable of LayerSpec or None
        The model's layers, first to last (default ``MODELS[model]()``), e.g. those of a
        training model (``imcsim energy --from-run``).
    scheme : str
        Operand formats: 'radix4' (the paper's) or 'int8' (``SCHEME_FORMATS``).
    measured : mapping or None
        {(layer name, kind): MeasuredMvm}: events per step measured in a run; those MVMs use
        the measured counts (``source`` 'measured'), the others the assumed density.
    weight_rewrite : mapping or None
        {layer name: fraction in [0, 1] of the words of a weight load that one step
        rewrites}, measured in a run (``cima_write_words``); the forward and backward MVMs of
        those layers write that fraction of their stored words per call instead of all of
        them (an update rule that rewrites only changed words; docs/energy.md, 5).
    input_mapping : str
        'one-hot' (binary rows, the paper's) or 'multi-level' (a 3-bit row DAC: radix-4
        operands two exponents per cycle, binary ones as signed 3-bit digits;
        ``imcsim.formats.mapped_format``); the DAC's drives cost the preset's assumed
        energies (docs/energy.md, 6).

    Returns
    -------
    EnergyReport
        Counts in events per step, energies in joules per step.
    """
    layers = _check_layers(model, layers)
    batch = check_pos_int("batch", batch)
    kinds_on_imc = parse_mvm_kinds(imc)
    config = MacroConfig() if config is None else config
    if not isinstance(config, MacroConfig):
        raise TypeError(f"config: expected MacroConfig, got {type(config).__name__}")
    vrefs = parse_vref_per_kind(vref, config.vref)
    gradient_density = check_density("gradient_density", gradient_density)
    activation_density = check_density("activation_density", activation_density)
    if activation_density < 1.0 and not config.mask_zero_inputs:
        raise ValueError("activation_density: below 1 needs a config with mask_zero_inputs=True "
                         "(the paper's macro does not mask zero activations)")
    for name, flag in (("first_last_on_imc", first_last_on_imc), ("pool_sparsity", pool_sparsity),
                       ("charge_masked_rows", charge_masked_rows),
                       ("first_layer_backward", first_layer_backward)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool")
    if scheme not in SCHEME_FORMATS:
        raise ValueError(f"scheme: must be one of {sorted(SCHEME_FORMATS)}, got {scheme!r}")
    formats = mapped_formats(SCHEME_FORMATS[scheme], input_mapping)
    preset = resolve_energy_preset(preset)
    densities = {} if densities is None else dict(densities)
    measured = {} if measured is None else dict(measured)
    for key, value in measured.items():
        if not isinstance(value, MeasuredMvm):
            raise TypeError(f"measured[{key}]: expected MeasuredMvm, got {type(value).__name__}")
    unknown = set(measured) - {(la.name, k) for la in layers for k in MVM_KINDS}
    if unknown:
        raise ValueError(f"measured: no such (layer, kind) in the model: {sorted(unknown)}")
    weight_rewrite = {} if weight_rewrite is None else dict(weight_rewrite)
    unknown = set(weight_rewrite) - {la.name for la in layers}
    if unknown:
        raise ValueError(f"weight_rewrite: no such layer in the model: {sorted(unknown)}")
    for name, fraction in weight_rewrite.items():
        check_density(f"weight_rewrite[{name!r}]", fraction)
    per_event = preset.joules_per_event()
    edge = {layers[0].name, layers[-1].name}

    rows = []
    for layer in layers:
        for kind in MVM_KINDS:
            row = {"layer": layer.name, "mvm": kind}
            if layer is layers[0] and kind == "backward" and not first_layer_backward:
                row.update({"device": SKIPPED, "vref": "-", "density": None, "source": "-",
                            "macs": 0, **dict.fromkeys(TABLE_COLUMNS[1:], 0.0),
                            "energy_j": 0.0, "imc_energy_j": 0.0, "gpu_energy_j": 0.0,
                            **{f"e_{n}": 0.0 for n in PRICED_EVENTS}})
                rows.append(row)
                continue
            macs = layer.macs(batch)
            dens = _streamed_density(layer, kind, densities, activation_density,
                                     gradient_density, pool_sparsity, formats, config)
            tot, source, dens = _row_events(layer, kind, batch, config=config,
                                            vref=vrefs[kind], density=dens, formats=formats,
                                            measured=measured.get((layer.name, kind)),
                                            charge_masked_rows=charge_masked_rows,
                                            rewrite=weight_rewrite.get(layer.name))
            e_split = {f"e_{name}": tot.get(name, 0) * per_event[name]
                       for name in PRICED_EVENTS}
            imc_e = float(sum(e_split.values()))
            gpu_e = gpu_energy(macs, preset)
            on_imc = kind in kinds_on_imc and (first_last_on_imc or layer.name not in edge)
            row.update({"device": "imc" if on_imc else "gpu",
                        "vref": vrefs[kind].mode.value if on_imc else "-", "density": dens,
                        "source": source if on_imc else "-", "macs": macs})
            for col in TABLE_COLUMNS[1:]:
                row[col] = tot[col] if on_imc else 0.0
            row.update({"energy_j": imc_e if on_imc else gpu_e, "imc_energy_j": imc_e,
                        "gpu_energy_j": gpu_e})
            row.update({k: (v if on_imc else 0.0) for k, v in e_split.items()})
            rows.append(row)

    totals = {"macs": sum(r["macs"] for r in rows)}
    for col in TABLE_COLUMNS[1:] + tuple(f"e_{n}" for n in PRICED_EVENTS):
        totals[col] = float(sum(r[col] for r in rows))
    totals["energy_j"] = float(sum(r["energy_j"] for r in rows))

    settings = {
        "model": model, "batch": batch, "imc": list(kinds_on_imc),
        "vref": {k: v.mode.value for k, v in vrefs.items()},
        "gradient_density": gradient_density, "activation_density": activation_density,
        "pool_sparsity": pool_sparsity, "first_last_on_imc": first_last_on_imc,
        "charge_masked_rows": charge_masked_rows, "first_layer_backward": first_layer_backward,
        "weight_rewrite": weight_rewrite,
        "tops_convention": TOPS_CONVENTION,
        "preset": preset.to_dict(),
        "geometry": {"rows": config.rows, "columns": config.columns,
                     "adc_bits": config.adc_bits},
        "scheme": scheme, "input_mapping": input_mapping,
        "formats": {"activations": formats.activation.spec(), "weights": formats.weight.spec(),
                    "gradients": formats.gradient.spec(),
                    "stored_activations": formats.stored_activation.spec()},
        "layers": [asdict(la) for la in layers],
    }
    return EnergyReport(rows, totals, _comparison(rows, totals, edge, kinds_on_imc, preset),
                        settings)


#: The configurations of Figs. 9 and 10: (label, imc kinds, vref, first_last_on_imc).
SCENARIOS = (
    ("GPU only", "none", "variable", False),
    ("IMC forward (dual Vref)", "forward", "dual", False),
    ("IMC forward+backward (dual Vref)", "forward,backward", "dual", False),
    ("IMC all three (variable Vref)", "forward,backward,update", "variable", False),
    ("IMC all three, first+last on IMC too", "forward,backward,update", "variable", True),
)


def scenario_summary(model: str = "vgg-lite", batch: int = 128, **kwargs) -> list[dict]:
    """Energy per step of the configurations of Figs. 9 and 10 (``SCENARIOS``).

    Parameters
    ----------
    model, batch
        As in ``energy_report``.
    **kwargs
        Go to ``energy_report`` (not imc, vref, first_last_on_imc).

    Returns
    -------
    list of dict
        One per scenario: label, imc, vref, first_last_on_imc, step_j, gpu_step_j, ratio,
        imc_part_j, gpu_part_j, imc_tops_per_watt, first_last_penalty,
        ratio_without_first_last (energies in joules).
    """
    out = []
    for label, kinds, vref, fl in SCENARIOS:
        c = energy_report(model, batch, imc=kinds, vref=vref, first_last_on_imc=fl,
                          **kwargs).comparison
        out.append({"label": label, "imc": kinds, "vref": vref, "first_last_on_imc": fl,
                    "step_j": c["imc_step_j"],
                    **{k: c[k] for k in ("gpu_step_j", "ratio", "imc_part_j", "gpu_part_j",
                                         "imc_tops_per_watt", "first_last_penalty",
                                         "ratio_without_first_last")}})
    return out
