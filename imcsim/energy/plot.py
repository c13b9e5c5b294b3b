"""PNG figures of an energy report in the spirit of Figs. 9 and 10, and of a training run's
energy per step over its epochs (needs matplotlib, the ``plot`` extra)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from imcsim.energy.presets import EnergyPreset
from imcsim.energy.report import SKIPPED, EnergyReport, scenario_summary
from imcsim.energy.run import RunEnergy
from imcsim.energy.vref import MVM_KINDS
from imcsim.optional import MissingDependency
from imcsim.plotting import pyplot, save_figure
from imcsim.workloads import LayerSpec

MATPLOTLIB_MISSING = "plot: needs matplotlib: pip install 'imcsim[plot]'"

_SHORT = {"forward": "fwd", "forward,backward": "fwd+bwd", "forward,backward,update": "all 3",
          "none": "none"}


def load_pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (``imcsim.plotting.pyplot``).

    Raises
    ------
    ValueError
        matplotlib is not installed (the message says how to install it).
    """
    try:
        return pyplot("--plot")
    except MissingDependency:
        raise ValueError(MATPLOTLIB_MISSING) from None


def _scenario_panel(ax, scenarios: list, settings: dict) -> None:
    """Fig. 9: energy per step of each configuration (log scale)."""
    labels = ["GPU only" if d["imc"] == "none" else
              f"IMC {_SHORT.get(d['imc'], d['imc'])}\n{d['vref']} Vref"
              + ("\nL1, L9 on IMC" if d["first_last_on_imc"] else "\nL1, L9 on GPU")
              for d in scenarios]
    vals = [d["step_j"] for d in scenarios]
    ax.bar(range(len(vals)), vals, color=["tab:gray"] + ["tab:blue"] * (len(vals) - 1))
    ax.set_yscale("log")
    ax.set_ylim(min(vals) / 3, max(vals) * 4)
    ax.axhline(0.1, color="tab:red", ls="--", lw=1, label="100 mJ")
    for i, (v, d) in enumerate(zip(vals, scenarios)):
        ax.text(i, v * 1.15, f"{v * 1e3:.3g} mJ\n{d['ratio']:.3g}x", ha="center", va="bottom",
                fontsize=8)
    ax.set_xticks(range(len(vals)), labels, fontsize=7)
    ax.set_ylabel("energy per training step (J)")
    ax.set_title(f"(Fig. 9) {settings['model']}, batch {settings['batch']}: per step")
    ax.legend(fontsize=8)


def _layer_panel(ax, rows: list) -> None:
    """Fig. 10: energy of each layer and MVM on the GPU and on IMC (log scale)."""
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    energy = {(r["layer"], r["mvm"]): r for r in rows}
    width = 0.13
    x = np.arange(len(layers))
    def value(layer, kind, key):
        row = energy[(layer, kind)]
        return np.nan if row["device"] == SKIPPED else row[key]     # not run: no bar

    for j, kind in enumerate(MVM_KINDS):
        gpu = [value(layer, kind, "gpu_energy_j") for layer in layers]
        imc = [value(layer, kind, "imc_energy_j") for layer in layers]
        ax.bar(x + (2 * j - 2.5) * width, gpu, width, color=f"C{j}", alpha=0.35,
               label=f"{kind} on GPU")
        ax.bar(x + (2 * j - 1.5) * width, imc, width, color=f"C{j}", label=f"{kind} on IMC")
    ax.set_yscale("log")
    ax.set_xticks(x, layers)
    ax.set_ylabel("energy per training step (J)")
    ax.set_title("(Fig. 10) per layer and MVM: GPU vs IMC")
    ax.legend(fontsize=7, ncol=3)


def plot_report(report: EnergyReport, path: str | os.PathLike, scenarios: list | None = None,
                *, name: str = "path") -> Path:
    """Write a PNG in the spirit of Figs. 9 and 10, all-or-nothing.

    Left: energy per step (J, log scale) of each configuration of ``scenarios``; right: the
    energy of each layer and MVM on IMC against the GPU (J, log scale).

    Parameters
    ----------
    report : EnergyReport
        The report whose rows make the right panel.
    path : str or PathLike
        The PNG to write (its folder must exist); written all-or-nothing with\n        ``imcsim.plotting.save_figure`` (``imcsim.atomic.AtomicOutputs``).
    scenarios : list of dict or None
        ``scenario_summary`` rows (default: computed with the report's settings).
    name : str
        The argument name used in error messages (e.g. '--plot').

    Returns
    -------
    Path
        The resolved PNG path.

    Raises
    ------
    ValueError
        matplotlib is missing, or the path's folder does not exist or is not writable.
    """
    if not isinstance(report, EnergyReport):
        raise TypeError(f"report: expected EnergyReport, got {type(report).__name__}")
    plt = load_pyplot()
    s = report.settings
    if scenarios is None:
        scenarios = scenario_summary(s["model"], s["batch"],
                                     gradient_density=s["gradient_density"],
                                     pool_sparsity=s["pool_sparsity"],
                                     charge_masked_rows=s["charge_masked_rows"],
                                     first_layer_backward=s["first_layer_backward"],
                                     layers=[LayerSpec(**d) for d in s["layers"]],
                                     scheme=s["scheme"],
                                     preset=EnergyPreset.from_dict(s["preset"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw={"width_ratios": [1, 1.6]})
    try:
        _scenario_panel(ax1, scenarios, s)
        _layer_panel(ax2, report.rows)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return save_figure(fig, path, name=name)


def _run_epoch_panel(ax, energy: RunEnergy) -> None:
    """Energy per step over the epochs: measured (per epoch) against assumed (flat)."""
    epochs = [e.epoch for e in energy.epochs]
    c = energy.assumed.comparison
    step = [e.measured.comparison["imc_step_j"] * 1e3 for e in energy.epochs]
    part = [e.measured.comparison["imc_part_j"] * 1e3 for e in energy.epochs]
    ax.plot(epochs, step, "o-", color="tab:blue", label="step, measured")
    ax.axhline(c["imc_step_j"] * 1e3, color="tab:blue", ls="--", lw=1, label="step, assumed")
    ax.plot(epochs, part, "s-", color="tab:orange", label="IMC part, measured")
    ax.axhline(c["imc_part_j"] * 1e3, color="tab:orange", ls="--", lw=1,
               label="IMC part, assumed")
    ax.set_xlabel("epoch")
    ax.set_ylabel("energy per training step (mJ)")
    ax.set_ylim(bottom=0)
    acc = ax.twinx()
    acc.plot(epochs, [e.test_acc for e in energy.epochs], ":", color="tab:gray")
    acc.set_ylabel("test accuracy (dotted)")
    s = energy.assumed.settings
    ax.set_title(f"{s['model']}, batch {s['batch']}: energy per step over the run")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7, loc="best")


def _run_layer_panel(ax, energy: RunEnergy) -> None:
    """IMC energy of each layer and MVM in the last epoch: assumed against measured."""
    last = energy.epochs[-1]
    assumed = {(r["layer"], r["mvm"]): r for r in energy.assumed.rows}
    rows = [r for r in last.measured.rows if r["device"] == "imc"]
    labels = [f"{r['layer']}\n{r['mvm'][:3]}" for r in rows]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [assumed[(r["layer"], r["mvm"])]["energy_j"] * 1e6 for r in rows], 0.4,
           color="tab:gray", label="assumed density")
    ax.bar(x + 0.2, [r["energy_j"] * 1e6 for r in rows], 0.4,
           color=["tab:blue" if r["source"] == "measured" else "tab:cyan" for r in rows],
           label="measured (light: no statistics, assumed)")
    ax.set_yscale("log")
    ax.set_xticks(x, labels, fontsize=6)
    ax.set_ylabel("IMC energy per training step (uJ)")
    ax.set_title(f"epoch {last.epoch}: per layer and MVM on IMC")
    ax.legend(fontsize=7)


def plot_run(energy: RunEnergy, path: str | os.PathLike, *, name: str = "path",
             inputs=()) -> Path:
    """Write a PNG of a run's energy per training step, all-or-nothing.

    Left: energy per step (mJ) of each epoch, measured, against the assumed densities (flat
    lines), with the test accuracy; right: the IMC energy (uJ, log scale) of each layer and
    MVM on IMC in the last epoch, assumed against measured.

    Parameters
    ----------
    energy : RunEnergy
        From ``run_energy``.
    path : str or PathLike
        The PNG to write (its folder must exist).
    name : str
        The argument name used in error messages (e.g. '--plot').
    inputs : iterable of paths
        Files read to make the figure (the run's metrics.json): writing over one is refused.

    Returns
    -------
    Path
        The resolved PNG path.

    Raises
    ------
    ValueError
        matplotlib is missing, the path's folder does not exist or is not writable, or the
        path is one of ``inputs``.
    """
    if not isinstance(energy, RunEnergy):
        raise TypeError(f"energy: expected RunEnergy, got {type(energy).__name__}")
    plt = load_pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw={"width_ratios": [1, 1.6]})
    try:
        _run_epoch_panel(ax1, energy)
        _run_layer_panel(ax2, energy)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return save_figure(fig, path, name=name, inputs=inputs)
