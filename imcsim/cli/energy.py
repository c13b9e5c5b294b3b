"""``imcsim energy``: the analytic energy of one training step on IMC against the GPU.

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
    EnergyReport,
    energy_report,
    load_energy_preset,
    parse_vref_per_kind,
    plot_report,
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


def format_report(report: EnergyReport, scenarios: list[dict] | None = None) -> str:
    """Plain-text rendering of an energy report.

    Parameters
    ----------
    report : EnergyReport
        The report (counts in events, energies in joules; shown in mJ).
    scenarios : list of dict or None
        ``scenario_summary`` rows to list after the report.

    Returns
    -------
    str
        The table and summary lines, newline-separated (no trailing newline).
    """
    s, c = report.settings, report.comparison
    cols = [("layer", 5), ("mvm", 8), ("dev", 3), ("vref", 8), ("density", 7), ("MACs", 10),
            ("bitcell", 10), ("ADC", 10), ("NMC", 10), ("reshape", 10), ("CIMA", 10),
            ("energy_mJ", 10)]
    keys = ["layer", "mvm", "device", "vref", "density", "macs", "bitcell_mults",
            "adc_conversions", "nmc_outputs", "reshape_words", "cima_load_words", "energy_j"]
    lines = [f"model {s['model']}, batch {s['batch']}; MVMs on IMC: "
             f"{','.join(s['imc']) or 'none'}; first/last layers on "
             f"{'IMC' if s['first_last_on_imc'] else 'GPU'}; gradient density "
             f"{s['gradient_density']:g} (x1/4 after max-pool: {s['pool_sparsity']}); "
             f"masked rows charged: {s['charge_masked_rows']}; "
             f"energy preset {s['preset']['name']}; GPU {s['preset']['gpu_name']} at "
             f"{s['preset']['gpu_tops_per_watt']:g} TOPS/W",
             "counts of GPU rows are 0 (they run on the GPU); energy is on the row's device",
             "  ".join(f"{h:>{w}}" for h, w in cols)]
    for r in report.rows + [dict(report.totals, layer="total", mvm="", device="", vref="",
                                 density=None)]:
        cells = []
        for (_, w), k in zip(cols, keys):
            v = r.get(k)
            if k == "energy_j":
                text = _fmt(v * 1e3)
            elif k == "density":
                text = "" if v is None else f"{v:.3g}"
            elif isinstance(v, str):
                text = v
            else:
                text = _fmt(v)
            cells.append(f"{text:>{w}}")
        lines.append("  ".join(cells))
    t = report.totals
    lines.append("IMC energy by event: " + ", ".join(
        f"{e} {t['e_' + e] * 1e3:.4g} mJ" for e in COSTED_EVENTS))
    lines += [
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
        lines.append(f"IMC efficiency on its MVMs: {c['imc_macs_per_joule'] / 1e12:.4g} TMAC/J "
                     f"= {c['imc_tops_per_watt']:.4g} TOPS/W (ops = 2 x MACs)")
        lines.append("high-Vref share of conversions: " + ", ".join(
            f"{k} {v:.3g}" for k, v in c["high_vref_share"].items() if v is not None))
    if scenarios:
        lines.append("")
        lines.append("scenarios (Figs. 9, 10):")
        for d in scenarios:
            lines.append(f"  {d['label']:<40} {d['step_j'] * 1e3:>10.4g} mJ/step  "
                         f"{d['ratio']:>8.4g}x vs GPU")
    return "\n".join(lines)


@click.command("energy")
@click.option("--model", type=click.Choice(sorted(MODELS)), default="vgg-lite", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=128, show_default=True,
              help="Images per training step.")
@click.option("--imc", "imc", default="forward,backward,update", show_default=True,
              help="MVM kinds that run on IMC: comma list of forward, backward, update "
                   "(or 'all', 'none'); the others run on the GPU.")
@click.option("--vref", "vref_specs", multiple=True,
              help="ADC reference: variable, fixed[:F] or dual[:LOW:HIGH] (rows) for every "
                   "kind, or KIND=SPEC per kind, comma-separated or repeated (e.g. "
                   "--vref forward=dual:255:2304); default variable. Changes only the "
                   "high-Vref count: Table II prices an ADC sample whatever its reference.")
@click.option("--gradient-density", type=click.FloatRange(0.0, 1.0),
              default=DEFAULT_GRADIENT_DENSITY, show_default=True,
              help="Assumed fraction of non-zero radix-4 gradient elements.")
@click.option("--no-pool-sparsity", is_flag=True,
              help="Do not scale the gradient density of max-pooled layers by 1/4.")
@click.option("--first-last-on-imc", is_flag=True,
              help="Run the first and last layers on IMC too (paper: GPU, FP32).")
@click.option("--charge-masked-rows", is_flag=True,
              help="Charge a bit-cell multiplication for masked rows too (no sparsity credit; "
                   "the accounting the paper's Table IV implies).")
@click.option("--preset", default=DEFAULT_ENERGY_PRESET, show_default=True,
              help="Energy preset: a name in data/energy/ or a JSON path.")
@click.option("--gpu-tops-per-watt", type=float, default=None,
              help="Override the preset's GPU efficiency (ops per joule / 1e12).")
@click.option("--scenarios", is_flag=True,
              help="Also list the configurations of Figs. 9 and 10.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG bar chart (Figs. 9 and 10 style) to this path (needs "
                   "matplotlib: the 'plot' extra).")
@cli_errors
def energy_command(model: str, batch: int, imc: str, vref_specs: tuple[str, ...],
                   gradient_density: float, no_pool_sparsity: bool, first_last_on_imc: bool,
                   charge_masked_rows: bool, preset: str, gpu_tops_per_watt: float | None,
                   scenarios: bool, as_json: bool, plot: str | None) -> None:
    """Energy per training step on IMC against the GPU, per layer and MVM (analytic counts).

    Bad input (including a --plot path whose folder does not exist, or a missing matplotlib)
    is one error line and exit status 2, found before any work; the PNG is written
    all-or-nothing, and the JSON or the table is printed only once it is in place.
    """
    if plot:                              # refuse a bad --plot before any work
        resolve_output(plot, "--plot")
        load_pyplot()
    kinds = parse_mvm_kinds(imc)
    parse_vref_per_kind(vref_specs)
    energy_preset = load_energy_preset(preset)
    if gpu_tops_per_watt is not None:
        energy_preset = replace(energy_preset, gpu_tops_per_watt=gpu_tops_per_watt)
    common = dict(gradient_density=gradient_density, pool_sparsity=not no_pool_sparsity,
                  charge_masked_rows=charge_masked_rows, preset=energy_preset)
    report = energy_report(model, batch, imc=kinds, vref=vref_specs,
                           first_last_on_imc=first_last_on_imc, **common)
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
