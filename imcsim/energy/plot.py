"""PNG figure of an energy report in the spirit of Figs. 9 and 10 (needs matplotlib, the
``plot`` extra)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from imcsim.energy.presets import EnergyPreset
from imcsim.energy.report import EnergyReport, scenario_summary
from imcsim.energy.vref import MVM_KINDS
from imcsim.optional import MissingDependency
from imcsim.plotting import pyplot, save_figure

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
    for j, kind in enumerate(MVM_KINDS):
        gpu = [energy[(layer, kind)]["gpu_energy_j"] for layer in layers]
        imc = [energy[(layer, kind)]["imc_energy_j"] for layer in layers]
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
