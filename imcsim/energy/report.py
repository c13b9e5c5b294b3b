"""Energy of counted events, the GPU baseline, and the whole-model report of one training step.

``energy_report`` maps the three training MVMs of every layer of a model (``MODELS``) onto the
macro (Grimm & Verma Sec. III; docs/hardware-model.md section 3), prices their event counts with an ``EnergyPreset`` and compares
with a GPU baseline (energy = 2 x MACs / ops per joule).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from imcsim.config import MacroConfig, VrefConfig, parse_mvm_kinds
from imcsim.energy.checks import check_density, check_number, check_pos_int
from imcsim.energy.counts import ACT_FORMAT, GRAD_FORMAT, MVM_KINDS, WEIGHT_FORMAT, layer_event_counts
from imcsim.energy.presets import COSTED_EVENTS, EnergyPreset, resolve_energy_preset
from imcsim.energy.vref import parse_vref_per_kind
from imcsim.events import EVENT_NAMES, EventCounts
from imcsim.macro import MvmResult
from imcsim.workloads import vgg_lite_layers

#: Models ``energy_report`` knows: name -> function returning its list of ``LayerSpec``.
MODELS = {"vgg-lite": vgg_lite_layers}

#: Default fraction of radix-4 gradient elements that are non-zero (see docs/energy.md, 3).
DEFAULT_GRADIENT_DENSITY = 0.5
#: Fraction of a max-pooled conv output's gradient that max-pool backward can leave non-zero.
POOL_GRADIENT_FRACTION = 0.25

#: Count columns of a report row (besides the energies).
TABLE_COLUMNS = ("macs", "bitcell_mults", "adc_conversions", "nmc_outputs", "reshape_words",
                 "cima_load_words", "high_vref_conversions")


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
        Joules per costed event (keys of ``COSTED_EVENTS``) and ``"total"`` (J).
    """
    totals = _event_totals(event_totals)
    per = resolve_energy_preset(preset).joules_per_event()
    out = {name: totals[name] * per[name] for name in COSTED_EVENTS}
    out["total"] = float(sum(out.values()))
    return out


def gpu_energy(macs: int | float, tops_per_watt: float | EnergyPreset | None = None) -> float:
    """GPU baseline energy in joules: 2 x MACs / (ops per joule).

    Parameters
    ----------
    macs : int or float
        Multiply-accumulates (>= 0).
    tops_per_watt : float or EnergyPreset or None
        Tera-operations per joule (> 0; default: the default preset's 0.116 of the T4).

    Returns
    -------
    float
        Joules.
    """
    macs = check_number("macs", macs)
    if tops_per_watt is None or isinstance(tops_per_watt, EnergyPreset):
        tops_per_watt = resolve_energy_preset(tops_per_watt).gpu_tops_per_watt
    tops_per_watt = check_number("tops_per_watt", tops_per_watt, positive=True)
    return 2.0 * macs / (tops_per_watt * 1e12)


# ----------------------------------------------------------------------------------------
# The whole-model report
# ----------------------------------------------------------------------------------------
@dataclass
class EnergyReport:
    """Per-layer x per-MVM counts and energies, totals and the GPU comparison.

    rows : list of dict, one per (layer, MVM kind): layer, mvm, device ('imc' or 'gpu'), vref,
        density, the counts of ``TABLE_COLUMNS`` (0 on the GPU), energy_j (on its device),
        imc_energy_j (had it run on IMC), gpu_energy_j (had it run on the GPU), and for IMC rows
        the energy split by event (``e_<event>``); energies in joules.
    totals : dict of summed counts and energies.
    comparison : dict: gpu_step_j, imc_step_j, ratio, imc_part_j, gpu_part_j, imc_macs,
        imc_tops_per_watt, imc_macs_per_joule, first_last_j, without_first_last_j,
        gpu_without_first_last_j, ratio_without_first_last, first_last_penalty,
        first_last_mac_fraction, high_vref_share.
    settings : dict of the inputs and the stated assumptions.
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
                      pool_sparsity) -> float:
    """Density of the streamed operand of one training MVM of ``layer``."""
    if (layer.name, kind) in densities:
        return check_density(f"densities[{(layer.name, kind)}]", densities[(layer.name, kind)])
    if kind == "forward":
        return activation_density
    return gradient_density * (POOL_GRADIENT_FRACTION if pool_sparsity and layer.pool_after
                               else 1.0)


def _high_share(rows: list, kind: str) -> float | None:
    conv = sum(r["adc_conversions"] for r in rows if r["mvm"] == kind and r["device"] == "imc")
    high = sum(r["high_vref_conversions"] for r in rows
               if r["mvm"] == kind and r["device"] == "imc")
    return high / conv if conv else None


def _comparison(rows: list, totals: dict, edge: set, kinds_on_imc: tuple) -> dict:
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
        "imc_tops_per_watt": (2.0 * imc_macs / imc_part / 1e12) if imc_part > 0 else None,
        "imc_macs_per_joule": (imc_macs / imc_part) if imc_part > 0 else None,
        "first_last_j": float(total("energy_j", on_edge)),
        "without_first_last_j": without_edge,
        "gpu_without_first_last_j": gpu_without_edge,
        "first_last_penalty": totals["energy_j"] / without_edge if without_edge > 0 else None,
        "first_last_mac_fraction": total("macs", on_edge) / totals["macs"],
        "high_vref_share": {k: _high_share(rows, k) for k in kinds_on_imc},
        "ratio_without_first_last": gpu_without_edge / without_edge if without_edge > 0 else None,
    }


def energy_report(model: str = "vgg-lite", batch: int = 128, *,
                  imc: str | Iterable[str] = "forward,backward,update",
                  vref: str | Iterable[str] | Mapping | VrefConfig | None = None,
                  gradient_density: float = DEFAULT_GRADIENT_DENSITY,
                  activation_density: float = 1.0, pool_sparsity: bool = True,
                  first_last_on_imc: bool = False, charge_masked_rows: bool = False,
                  preset: EnergyPreset | str | None = None, config: MacroConfig | None = None,
                  densities: dict | None = None) -> EnergyReport:
    """Analytic energy of one training step of a model: IMC for the chosen MVMs, GPU elsewhere.

    Parameters
    ----------
    model : str
        A key of ``MODELS`` ('vgg-lite').
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
        masked or not (no credit for sparsity; what the paper's Table IV figure implies, see
        docs/energy.md).  Default False: a masked row spends no bit-cell multiplication.
    preset : EnergyPreset or str or None
        Energy per event and GPU baseline (default: Table II / T4).
    config : MacroConfig or None
        Array geometry (default: the paper's).
    densities : dict or None
        {(layer name, kind): density}, e.g. measured in a training run with
        ``measured_density``; overrides the assumptions for those MVMs.

    Returns
    -------
    EnergyReport
        Counts in events, energies in joules.
    """
    if not isinstance(model, str) or model not in MODELS:
        raise ValueError(f"model: must be one of {sorted(MODELS)}, got {model!r}")
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
                       ("charge_masked_rows", charge_masked_rows)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool")
    preset = resolve_energy_preset(preset)
    densities = {} if densities is None else dict(densities)
    per_event = preset.joules_per_event()
    layers = MODELS[model]()
    edge = {layers[0].name, layers[-1].name}

    rows = []
    for layer in layers:
        for kind in MVM_KINDS:
            macs = layer.macs(batch)
            dens = _streamed_density(layer, kind, densities, activation_density,
                                     gradient_density, pool_sparsity)
            ev = layer_event_counts(layer, kind, batch, config=config, vref=vrefs[kind],
                                    density=None if dens == 1.0 and kind == "forward" else dens)
            tot = {k: float(v) for k, v in ev.total().items()}
            if charge_masked_rows:
                full = layer_event_counts(layer, kind, batch, config=config, vref=vrefs[kind])
                tot["bitcell_mults"] = float(full.total()["bitcell_mults"])
            e_split = {f"e_{name}": tot[name] * per_event[name] for name in COSTED_EVENTS}
            imc_e = float(sum(e_split.values()))
            gpu_e = gpu_energy(macs, preset)
            on_imc = kind in kinds_on_imc and (first_last_on_imc or layer.name not in edge)
            row = {"layer": layer.name, "mvm": kind, "device": "imc" if on_imc else "gpu",
                   "vref": vrefs[kind].mode.value if on_imc else "-", "density": dens,
                   "macs": macs}
            for col in TABLE_COLUMNS[1:]:
                row[col] = tot[col] if on_imc else 0.0
            row.update({"energy_j": imc_e if on_imc else gpu_e, "imc_energy_j": imc_e,
                        "gpu_energy_j": gpu_e})
            row.update({k: (v if on_imc else 0.0) for k, v in e_split.items()})
            rows.append(row)

    totals = {"macs": sum(r["macs"] for r in rows)}
    for col in TABLE_COLUMNS[1:] + tuple(f"e_{n}" for n in COSTED_EVENTS):
        totals[col] = float(sum(r[col] for r in rows))
    totals["energy_j"] = float(sum(r["energy_j"] for r in rows))

    settings = {
        "model": model, "batch": batch, "imc": list(kinds_on_imc),
        "vref": {k: v.mode.value for k, v in vrefs.items()},
        "gradient_density": gradient_density, "activation_density": activation_density,
        "pool_sparsity": pool_sparsity, "first_last_on_imc": first_last_on_imc,
        "charge_masked_rows": charge_masked_rows,
        "preset": preset.to_dict(),
        "geometry": {"rows": config.rows, "columns": config.columns,
                     "adc_bits": config.adc_bits},
        "formats": {"activations": ACT_FORMAT.spec(), "weights": WEIGHT_FORMAT.spec(),
                    "gradients": GRAD_FORMAT.spec()},
    }
    return EnergyReport(rows, totals, _comparison(rows, totals, edge, kinds_on_imc), settings)


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
