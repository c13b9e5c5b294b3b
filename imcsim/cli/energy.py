"""``imcsim energy``: the energy of one training step on IMC against the GPU, analytic or from
the statistics a training run recorded (``--from-run``).

The click command object is ``energy_command``; the main CLI registers it as ``energy``.
"""
from __future__ import annotations

import json
from dataclasses import replace

import click

from imcsim.atomic import resolve_output
from imcsim.cli.common import cli_errors
from imcsim.config import parse_mvm_kinds
from imcsim.energy import (
    COSTED_EVENTS,
    DEFAULT_ENERGY_PRESET,
    DEFAULT_GRADIENT_DENSITY,
    MODELS,
    PRICED_EVENTS,
    SKIPPED,
    TOPS_CONVENTION,
    EnergyReport,
    LayerSpec,
    RunEnergy,
    energy_report,
    load_energy_preset,
    load_run,
    parse_vref_per_kind,
    plot_report,
    plot_run,
    run_energy,
    scenario_summary,
)
from imcsim.energy.plot import load_pyplot


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    v = float(value)
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-2:
        return f"{v:.3e}"
    return f"{v:.4g}"


def _cell(value, key: str) -> str:
    """One cell of a report table (energies in mJ)."""
    if key == "energy_j":
        return _fmt(value * 1e3)
    if key == "density":
        return "" if value is None else f"{value:.3g}"
    if isinstance(value, str):
        return value
    return _fmt(value)


def _first_layer_backward_text(settings: dict) -> str:
    if settings["first_layer_backward"]:
        return "first layer's backward MVM charged"
    return "first layer's backward MVM not run (input gradient not needed)"


def format_report(report: EnergyReport, scenarios: list[dict] | None = None) -> str:
    """Plain-text rendering of an energy report.

    Parameters
    ----------
    report : EnergyReport
        The report (counts in events per step, energies in joules; shown in mJ).
    scenarios : list of dict or None
        ``scenario_summary`` rows to list after the report.

    Returns
    -------
    str
        The table and summary lines, newline-separated (no trailing newline).  Every TOPS/W
        figure follows ``TOPS_CONVENTION``, stated once at the end.
    """
    s, c = report.settings, report.comparison
    cols = [("layer", 5), ("mvm", 8), ("dev", 4), ("vref", 8), ("stats", 8), ("density", 7),
            ("MACs", 10), ("bitcell", 10), ("ADC", 10), ("NMC", 10), ("reshape", 10),
            ("CIMA", 10), ("energy_mJ", 10)]
    keys = ["layer", "mvm", "device", "vref", "source", "density", "macs", "bitcell_mults",
            "adc_conversions", "nmc_outputs", "reshape_words", "cima_load_words", "energy_j"]
    lines = [f"model {s['model']}, batch {s['batch']}; MVMs on IMC: "
             f"{','.join(s['imc']) or 'none'}; first/last layers on "
             f"{'IMC' if s['first_last_on_imc'] else 'GPU'}; "
             f"{_first_layer_backward_text(s)}; gradient density "
             f"{s['gradient_density']:g} (x1/4 after max-pool: {s['pool_sparsity']}); "
             f"masked rows charged: {s['charge_masked_rows']}; "
             f"energy preset {s['preset']['name']}; GPU {s['preset']['gpu_name']} at "
             f"{s['preset']['gpu_tops_per_watt']:g} TOPS/W",
             f"counts per training step; GPU rows have no counts; '{SKIPPED}' rows are not run; "
             "energy is on the row's device",
             "  ".join(f"{h:>{w}}" for h, w in cols)]
    for r in report.rows + [dict(report.totals, layer="total", mvm="", device="", vref="",
                                 source="", density=None)]:
        lines.append("  ".join(f"{_cell(r.get(k), k):>{w}}" for (_, w), k in zip(cols, keys)))
    t = report.totals
    lines.append("IMC energy by event: " + ", ".join(
        f"{e} {t['e_' + e] * 1e3:.4g} mJ" for e in PRICED_EVENTS
        if e in COSTED_EVENTS or t['e_' + e]))
    lines += _summary_lines(c)
    if scenarios:
        lines.append("")
        lines.append("scenarios (Figs. 9, 10):")
        for d in scenarios:
            lines.append(f"  {d['label']:<40} {d['step_j'] * 1e3:>10.4g} mJ/step  "
                         f"{d['ratio']:>8.4g}x vs GPU")
    lines.append(TOPS_CONVENTION)
    return "\n".join(lines)


def _summary_lines(c: dict) -> list[str]:
    """The GPU comparison of a report as text lines."""
    lines = [
        f"energy per training step, all on the GPU : {c['gpu_step_j']:.4g} J",
        f"energy per training step, this mapping   : {c['imc_step_j'] * 1e3:.4g} mJ "
        f"(IMC {c['imc_part_j'] * 1e3:.4g} mJ + GPU {c['gpu_part_j'] * 1e3:.4g} mJ)",
        f"GPU / this mapping                       : {c['ratio']:.4g}x",
        f"without the first and last layers        : GPU {c['gpu_without_first_last_j']:.4g} J"
        f" / {c['without_first_last_j'] * 1e3:.4g} mJ = {_fmt(c['ratio_without_first_last'])}x",
        f"first+last layers: {c['first_last_mac_fraction'] * 100:.3g} % of MACs, "
        f"energy x{_fmt(c['first_last_penalty'])} with them",
    ]
    if c["imc_tops_per_watt"] is not None:
        lines.append(f"IMC efficiency on its MVMs: {c['imc_tops_per_watt']:.4g} TOPS/W "
                     f"(GPU: {c['gpu_tops_per_watt']:.4g} TOPS/W)")
        lines.append("high-Vref share of conversions: " + ", ".join(
            f"{k} {v:.3g}" for k, v in c["high_vref_share"].items() if v is not None))
    return lines


def format_run(energy: RunEnergy) -> str:
    """Plain-text rendering of a run's energy per step: one row per epoch, then the last
    epoch per layer and MVM, assumed next to measured.

    Parameters
    ----------
    energy : RunEnergy
        From ``run_energy`` (events per step, joules per step; shown in mJ and uJ).

    Returns
    -------
    str
        Newline-separated lines (no trailing newline).
    """
    run, a = energy.run, energy.assumed
    s, ca = a.settings, a.comparison
    backends = ", ".join(f"{k}={v}" for k, v in run.backends.items())
    lines = [
        f"run {run.path}: model {run.model} on {run.dataset}, batch {run.batch}, scheme "
        f"{run.scheme}; emulated: {backends}, first/last layers "
        f"{'emulated' if run.config['first_last_on_imc'] else 'FP32'}",
        f"mapping: MVMs on IMC: {','.join(s['imc']) or 'none'}; first/last layers on "
        f"{'IMC' if s['first_last_on_imc'] else 'GPU'}; {_first_layer_backward_text(s)}; "
        f"masked rows charged: {s['charge_masked_rows']}; energy preset {s['preset']['name']}",
        f"assumed: gradient density {s['gradient_density']:g} (x1/4 after max-pool: "
        f"{s['pool_sparsity']}), dense activations, one CIMA load per stored tile and step",
        "measured: IMC rows with an mvm_stats entry; rows without one keep the assumed density "
        "(column 'stats'). Events of measured rows:",
    ]
    lines += [f"  {event:<22} {text}" for event, text in energy.event_sources.items()]
    lines.append("")
    cols = [("epoch", 5), ("steps", 6), ("test_acc", 8), ("measured", 8),
            ("step_mJ:assumed", 15), ("measured", 9), ("IMC_mJ:assumed", 14), ("measured", 9),
            ("GPU_J", 7), ("GPU/step:assumed", 16), ("measured", 9), ("weights_rewritten", 17)]
    lines.append("  ".join(f"{h:>{w}}" for h, w in cols))
    n_imc = sum(ca["sources"].values())
    for e in energy.epochs:
        cm = e.measured.comparison
        rewritten = ("-" if e.weight_rewrite_fraction is None
                     else f"{e.weight_rewrite_fraction * 100:.3g} %")
        cells = [str(e.epoch), str(e.steps), f"{e.test_acc:.4f}",
                 f"{cm['sources']['measured']}/{n_imc}",
                 f"{ca['imc_step_j'] * 1e3:.4g}", f"{cm['imc_step_j'] * 1e3:.4g}",
                 f"{ca['imc_part_j'] * 1e3:.4g}", f"{cm['imc_part_j'] * 1e3:.4g}",
                 f"{cm['gpu_step_j']:.4g}", f"{ca['ratio']:.4g}x", f"{cm['ratio']:.4g}x",
                 rewritten]
        lines.append("  ".join(f"{v:>{w}}" for (_, w), v in zip(cols, cells)))
    lines.append("(measured: IMC rows with measured statistics / IMC rows; weights_rewritten: "
                 "cima_write_words / (steps x one forward weight load of the layers it covers))")

    last = energy.epochs[-1]
    lines += ["", f"epoch {last.epoch} per layer and MVM (events per step; energy on the row's "
                  "device, uJ):"]
    cols = [("layer", 6), ("mvm", 8), ("dev", 4), ("stats", 8), ("density:assumed", 15),
            ("measured", 8), ("bitcell:assumed", 15), ("measured", 10), ("ADC", 10),
            ("CIMA:assumed", 12), ("measured", 10), ("uJ:assumed", 10), ("measured", 10)]
    lines.append("  ".join(f"{h:>{w}}" for h, w in cols))
    assumed = {(r["layer"], r["mvm"]): r for r in a.rows}
    for r in last.measured.rows:
        ra = assumed[(r["layer"], r["mvm"])]
        cells = [r["layer"], r["mvm"], r["device"], r["source"], _cell(ra["density"], "density"),
                 _cell(r["density"], "density") if r["source"] == "measured" else "",
                 _fmt(ra["bitcell_mults"]), _fmt(r["bitcell_mults"]),
                 _fmt(r["adc_conversions"]), _fmt(ra["cima_load_words"]),
                 _fmt(r["cima_load_words"]), _fmt(ra["energy_j"] * 1e6),
                 _fmt(r["energy_j"] * 1e6)]
        lines.append("  ".join(f"{v:>{w}}" for (_, w), v in zip(cols, cells)))
    lines += ["", f"epoch {last.epoch}, assumed:"] + [f"  {x}" for x in _summary_lines(ca)]
    lines += [f"epoch {last.epoch}, measured:"]
    lines += [f"  {x}" for x in _summary_lines(last.measured.comparison)]
    lines.append(TOPS_CONVENTION)
    return "\n".join(lines)


#: Image shape (H, W, C) of each dataset of ``imcsim train --data`` (training/data.py);
#: every one has 10 classes.
DATASET_SHAPES = {"digits": (8, 8, 1), "digits32": (32, 32, 3), "cifar10": (32, 32, 3),
                  "mnist": (28, 28, 1)}
N_CLASSES = 10


def training_layers(model: str, dataset: str) -> list[LayerSpec]:
    """The layers of a training model (``imcsim.training.models``) as the energy model's specs.

    Parameters
    ----------
    model : str
        A training model name ('mlp', 'small-cnn', 'vgg-lite').
    dataset : str
        A key of ``DATASET_SHAPES``: the input's height, width and channels.

    Returns
    -------
    list of LayerSpec
        The Conv2D and Dense layers, first to last, with the training model's names; a conv
        followed by a 2x2 max-pool has ``pool_after``.

    Raises
    ------
    ValueError
        An unknown model or dataset, or a layer the energy model does not map (a 1x1 or
        stride-2 convolution, a residual block, global pooling: ResNet-18).
    """
    from imcsim.training.layers import (
        BatchNorm,
        Conv2D,
        Dense,
        Flatten,
        MaxPool2,
        ReLU,
    )
    from imcsim.training.models import MODELS as TRAINING_MODELS
    from imcsim.training.models import build_model
    if model not in TRAINING_MODELS:
        raise ValueError(f"model: expected one of {sorted(TRAINING_MODELS)}, got {model!r}")
    if dataset not in DATASET_SHAPES:
        raise ValueError(f"dataset: expected one of {sorted(DATASET_SHAPES)}, got {dataset!r}")
    h, w, c = DATASET_SHAPES[dataset]
    specs: list[LayerSpec] = []
    for layer in build_model(model, (h, w, c), N_CLASSES, seed=0).layers:
        if isinstance(layer, Conv2D):
            if (layer.kernel, layer.stride) != (3, 1):
                raise ValueError(f"model {model}: {layer.name} is a {layer.kernel}x"
                                 f"{layer.kernel} stride-{layer.stride} convolution; the energy "
                                 "model maps 3x3 stride-1 convolutions and dense layers only")
            specs.append(LayerSpec(layer.name, "conv", layer.cin, layer.cout, h, w))
            c = layer.cout
        elif isinstance(layer, MaxPool2):
            h, w = h // 2, w // 2
            specs[-1] = replace(specs[-1], pool_after=True)
        elif isinstance(layer, Flatten):
            h, w, c = 1, 1, h * w * c
        elif isinstance(layer, Dense):
            din, dout = (int(n) for n in layer.weight.shape)
            specs.append(LayerSpec(layer.name, "dense", din, dout))
        elif not isinstance(layer, (BatchNorm, ReLU)):
            raise ValueError(f"model {model}: {type(layer).__name__} {layer.name} is not in the "
                             "energy model's mapping (3x3 stride-1 convolutions, max-pool, "
                             "dense layers)")
    return specs


def _from_run(folder: str, *, plot: str | None, as_json: bool, **mapping) -> None:
    """``imcsim energy --from-run FOLDER``: validate, price every epoch, print, plot."""
    run = load_run(folder, name="--from-run")
    try:
        layers = training_layers(run.model, run.dataset)
    except ValueError as exc:
        raise ValueError(f"{run.path}: config: {exc}") from None
    energy = run_energy(run, layers, **mapping)
    if plot:
        plot_run(energy, plot, name="--plot", inputs=[run.path])
    if as_json:
        out = energy.to_dict()
        if plot:
            out["plot"] = str(plot)
        click.echo(json.dumps(out, indent=1))
    else:
        click.echo(format_run(energy))
        if plot:
            click.echo(f"plot written to {plot}")


#: Options that ``--from-run`` takes from the run's configuration instead.
RUN_OWNED_OPTIONS = ("model", "batch", "vref_specs", "scenarios", "input_mapping")


@click.command("energy")
@click.option("--model", type=click.Choice(sorted(MODELS)), default="vgg-lite", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=128, show_default=True,
              help="Images per training step.")
@click.option("--imc", "imc", default="forward,backward,update", show_default=True,
              help="MVM kinds that run on IMC: comma list of forward, backward, update "
                   "(or 'all', 'none'); the others run on the GPU.")
@click.option("--vref", "vref_specs", multiple=True,
              help="ADC reference: variable, fixed[:F] or dual[:LOW:HIGH][:column] (rows) "
                   "for every kind, or KIND=SPEC per kind, comma-separated or repeated (e.g. "
                   "--vref forward=dual:255:2304); default variable. Changes only the "
                   "high-Vref count: Table II prices an ADC sample whatever its reference.")
@click.option("--gradient-density", type=click.FloatRange(0.0, 1.0),
              default=DEFAULT_GRADIENT_DENSITY, show_default=True,
              help="Assumed fraction of non-zero radix-4 gradient elements.")
@click.option("--no-pool-sparsity", is_flag=True,
              help="Do not scale the assumed gradient density of max-pooled layers by 1/4.")
@click.option("--first-last-on-imc", is_flag=True,
              help="Run the first and last layers on IMC too (paper: GPU, FP32).")
@click.option("--first-layer-backward", is_flag=True,
              help="Charge the first layer's backward MVM (the gradient of the input image, "
                   "which training never needs) on both sides; by default it is not run.")
@click.option("--charge-masked-rows", is_flag=True,
              help="Charge a bit-cell multiplication for masked rows too (no sparsity credit).")
@click.option("--preset", default=DEFAULT_ENERGY_PRESET, show_default=True,
              help="Energy preset: a name in data/energy/ or a JSON path.")
@click.option("--gpu-tops-per-watt", type=float, default=None,
              help="Override the preset's GPU efficiency: tera-operations per joule, "
                   "operations = 2 x MACs.")
@click.option("--scenarios", is_flag=True,
              help="Also list the configurations of Figs. 9 and 10.")
@click.option("--from-run", "from_run", type=click.Path(), default=None,
              help="A training run folder (imcsim train --out): energy per step of every "
                   "epoch from its recorded MVM statistics, next to the assumed densities. "
                   "Model, batch, scheme and Vref come from the run.")
@click.option("--input-mapping", default="one-hot", show_default=True,
              type=click.Choice(["one-hot", "multi-level"]),
              help="How streamed operands drive the rows: one-hot binary rows, or a 3-bit row "
                   "DAC (radix-4 two exponents per cycle, binary as signed 3-bit digits), "
                   "whose drives cost the preset's assumed DAC energies.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG to this path (Figs. 9 and 10 style; with --from-run, energy "
                   "per step over the epochs). Needs matplotlib: the 'plot' extra.")
@cli_errors
def energy_command(model: str, batch: int, imc: str, vref_specs: tuple[str, ...],
                   gradient_density: float, no_pool_sparsity: bool, first_last_on_imc: bool,
                   first_layer_backward: bool, charge_masked_rows: bool, preset: str,
                   gpu_tops_per_watt: float | None, scenarios: bool, from_run: str | None,
                   input_mapping: str, as_json: bool, plot: str | None) -> None:
    """Energy per training step on IMC against the GPU, per layer and MVM.

    Analytic counts with assumed densities, or (--from-run) the statistics a training run
    recorded, epoch by epoch.  Bad input (including a --plot path whose folder does not
    exist, a missing matplotlib, a run folder without a valid metrics.json) is one error line
    and exit status 2, found before any output; the PNG is written all-or-nothing, and the
    JSON or the table is printed only once it is in place.
    """
    if from_run is not None:
        ctx = click.get_current_context()
        given = [name for name in RUN_OWNED_OPTIONS
                 if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE]
        if given:
            flags = ", ".join("--" + ("vref" if n == "vref_specs" else n) for n in given)
            raise ValueError(f"{flags}: not with --from-run (the run's configuration sets "
                             "model, batch and Vref; --scenarios is the analytic report's)")
    if plot:                              # refuse a bad --plot before any work
        resolve_output(plot, "--plot")
        load_pyplot()
    kinds = parse_mvm_kinds(imc)
    parse_vref_per_kind(vref_specs)
    energy_preset = load_energy_preset(preset)
    if gpu_tops_per_watt is not None:
        energy_preset = replace(energy_preset, gpu_tops_per_watt=gpu_tops_per_watt)
    common = dict(gradient_density=gradient_density, pool_sparsity=not no_pool_sparsity,
                  charge_masked_rows=charge_masked_rows,
                  first_layer_backward=first_layer_backward, preset=energy_preset)
    if from_run is not None:
        _from_run(from_run, plot=plot, as_json=as_json, imc=kinds,
                  first_last_on_imc=first_last_on_imc, **common)
        return
    report = energy_report(model, batch, imc=kinds, vref=vref_specs,
                           first_last_on_imc=first_last_on_imc, input_mapping=input_mapping,
                           **common)
    summary = scenario_summary(model, batch, **common) if (scenarios or plot) else None
    if plot:
        plot_report(report, plot, summary, name="--plot")
    if as_json:
        out = report.to_dict()
        if scenarios:
            out["scenarios"] = summary
        if plot:
            out["plot"] = str(plot)
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(format_report(report, summary if scenarios else None))
        if plot:
            click.echo(f"plot written to {plot}")
