"""Noise budgets: how much analog non-ideality training tolerates (``imcsim noise-budget``).

A budget trains one model at a ladder of noise scales of a preset (the preset's
non-idealities, or one group or one of them, times each factor: ``TrainConfig.noise_scale``
and ``noise_scaled``) beside an FP32 baseline, through the sweep machinery (so a ladder runs
as Dask tasks, skips finished runs and resumes interrupted ones), and reports accuracy against
scale with the largest scale that keeps the final test accuracy within 2 and within 10
percentage points of FP32 (the follow-up paper's two figures).

Budget of a ladder: the largest scale s such that s and every smaller scale of the ladder are
within the tolerance (mean over seeds), so that a lucky run above a failing scale does not
extend it; None when even the smallest scale is outside. A run that diverged
(``TrainingDiverged``) is a result, not a missing run: its scale is outside every tolerance.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from imcsim.config import nonideality_names
from imcsim.training.engine import TrainingDiverged

#: the default ladder of factors on the preset's non-idealities
DEFAULT_SCALES = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0)
#: tolerances of the budget [percentage points of test accuracy below FP32]
TOLERANCES = (2.0, 10.0)
#: at most this many runs in one ladder (configs x seeds), checked before anything runs
MAX_RUNS = 2000


def _slug(scale: float) -> str:
    return f"{scale:g}".replace(".", "p")


def budget_spec(base: Mapping, scales: Sequence[float], scaled: Sequence[str],
                seeds: Sequence[int], description: str = "") -> dict:
    """The sweep spec of a budget ladder.

    Parameters
    ----------
    base : mapping
        ``imcsim train`` keys of every run (model, data, imc, preset, adc_rounding, ...; not
        noise_scale, noise_scaled or seed).
    scales : floats >= 0
        The ladder of factors.
    scaled : str
        Which non-idealities each ladder scales: 'all', 'noise', 'mismatch' or field names;
        one ladder per entry, so a budget says which non-ideality matters.
    seeds : ints
        Seeds of every run.

    Returns
    -------
    dict
        A spec for ``imcsim.sweep.plan_sweep``: config ``fp32`` (the baseline: every MVM in
        FP32) and ``<scaled>-x<scale>`` per ladder point, grid ``seed``, order ``grid``.
    """
    base = dict(base)
    for key in ("noise_scale", "noise_scaled", "seed"):
        if key in base:
            raise ValueError(f"{key}: set by the ladder, not by the base parameters")
    scales = [float(s) for s in scales]
    if not scales or any(not (math.isfinite(s) and s >= 0) for s in scales):
        raise ValueError(f"scales: expected finite factors >= 0, got {scales}")
    if len(set(scales)) != len(scales):
        raise ValueError(f"scales: a factor is given twice: {scales}")
    scaled = list(scaled)
    if not scaled:
        raise ValueError("scaled: name at least one group or non-ideality")
    for which in scaled:
        nonideality_names(which)                 # one line naming the bad name
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected distinct seeds, got {seeds}")
    n_runs = (1 + len(scaled) * len(scales)) * len(seeds)
    if n_runs > MAX_RUNS:
        raise ValueError(f"the ladder has {n_runs} runs (more than {MAX_RUNS}); give fewer "
                         "scales, non-idealities or seeds")
    configs = {"fp32": {"label": "FP32 baseline", "imc": "", "other": "fp32"}}
    if base.get("chip_pool"):
        configs["fp32"]["chip_pool"] = 0            # no chip to hop without an IMC MVM
    for which in scaled:
        for s in sorted(scales):
            configs[f"{which}-x{_slug(s)}"] = {"label": f"{which} x {s:g}",
                                              "noise_scale": s, "noise_scaled": which}
    return {"command": "train", "description": description, "base": base,
            "configs": configs, "grid": {"seed": seeds}, "order": "grid"}


def budget_table(records: Sequence[Mapping], scaled: Sequence[str],
                 tolerances: Sequence[float] = TOLERANCES) -> dict:
    """Accuracy against scale and the budgets, from a ladder's sweep records.

    Parameters
    ----------
    records : the sweep's records (``SweepResult.records``: name, config, params, status,
        result with ``test_acc``).
    scaled : the ladders' names, as given to :func:`budget_spec`.
    tolerances : percentage points below FP32.

    Returns
    -------
    dict
        ``fp32``: {mean, sd, n} [%]; ``ladders``: {scaled: {points: [{scale, mean, sd, n,
        accuracies, diverged}], budgets: {"2": scale or None, ...}}} (``mean`` over the
        finished runs, None when every run diverged; ``diverged``: runs that did);
        ``missing``: runs not finished.
    """
    by_config: dict[str, list[float]] = {}
    diverged: dict[str, int] = {}
    missing = []
    scale_of = {}
    for doc in records:
        ok = doc.get("status") == "ok" and isinstance(doc.get("result"), Mapping) \
            and "test_acc" in doc["result"]
        # a sweep records a failure as "<exception class>: <message>"
        failed_by_divergence = doc.get("status") == "failed" and str(
            doc.get("error", "")).startswith(f"{TrainingDiverged.__name__}:")
        if not (ok or failed_by_divergence):
            missing.append(doc.get("name"))
            continue
        if ok:
            by_config.setdefault(doc["config"], []).append(
                100.0 * float(doc["result"]["test_acc"]))
        else:
            by_config.setdefault(doc["config"], [])
            diverged[doc["config"]] = diverged.get(doc["config"], 0) + 1
        scale_of[doc["config"]] = (doc["params"].get("noise_scaled"),
                                   float(doc["params"].get("noise_scale", 1.0)))

    def stats(values, n_diverged=0):
        return {"mean": statistics.mean(values) if values else None,
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values) + n_diverged, "accuracies": values, "diverged": n_diverged}

    base = by_config.get("fp32")
    out = {"fp32": stats(base) if base else None, "ladders": {}, "missing": missing,
           "tolerances": list(tolerances)}
    for which in scaled:
        points = sorted(((scale, stats(by_config[c], diverged.get(c, 0)))
                         for c, (w, scale) in scale_of.items() if c != "fp32" and w == which),
                        key=lambda item: item[0])
        budgets = {}
        for tol in tolerances:
            best = None
            if base:
                for scale, st in points:
                    if st["diverged"] or st["mean"] < out["fp32"]["mean"] - tol:
                        break
                    best = scale
            budgets[f"{tol:g}"] = best
        out["ladders"][which] = {"points": [{"scale": s, **st} for s, st in points],
                                 "budgets": budgets}
    return out


def format_point(point: Mapping) -> str:
    """A ladder point's accuracy as text: mean ± sd [%] over the finished runs, and how many
    runs diverged."""
    text = ""
    if point["mean"] is not None:
        sd = f" ± {point['sd']:.2f}" if point["sd"] is not None else ""
        text = f"{point['mean']:.2f}{sd}"
    if point.get("diverged"):
        text += (", " if text else "") + f"diverged in {point['diverged']} of {point['n']}"
    return text


def format_budget(table: Mapping) -> str:
    """The budget as a Markdown table and one line per ladder."""
    lines = []
    fp = table["fp32"]
    if fp:
        sd = f" ± {fp['sd']:.2f}" if fp["sd"] is not None else ""
        lines.append(f"FP32 baseline: {fp['mean']:.2f}{sd} % (n={fp['n']})")
    else:
        lines.append("FP32 baseline: not finished (no budget without it)")
    tols = [f"{t:g}" for t in table["tolerances"]]
    for which, ladder in table["ladders"].items():
        lines += ["", f"{which}:", "", "| scale | test accuracy [%] | n |", "|---|---|---|"]
        for p in ladder["points"]:
            lines.append(f"| {p['scale']:g} | {format_point(p)} | {p['n']} |")
        budget = ", ".join(
            f"within {t} points: " + ("none" if ladder["budgets"][t] is None
                                      else f"x {ladder['budgets'][t]:g}") for t in tols)
        lines += ["", f"largest scale {budget}"]
    if table["missing"]:
        lines += ["", f"not finished: {', '.join(map(str, table['missing']))}"]
    return "\n".join(lines)


def plot_budget(table: Mapping, path, title: str = "") -> None:
    """Accuracy against noise scale, one line per ladder, FP32 and its tolerances as bands."""
    from imcsim.optional import require
    matplotlib = require("matplotlib", "plot", "the budget plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from imcsim.plotting import save_figure
    fig, ax = plt.subplots(figsize=(7, 4))
    for which, ladder in table["ladders"].items():
        pts = [p for p in ladder["points"] if p["mean"] is not None]
        xs = [p["scale"] for p in pts]
        line = ax.errorbar(xs, [p["mean"] for p in pts], yerr=[p["sd"] or 0 for p in pts],
                           marker="o", capsize=3, label=which)
        gone = [p["scale"] for p in ladder["points"] if p.get("diverged")]
        if gone:                                 # diverged runs: a cross at the bottom
            ax.plot(gone, [0] * len(gone), "x", color=line[0].get_color(), ms=9)
    fp = table["fp32"]
    if fp:
        ax.axhline(fp["mean"], color="k", lw=1, label="FP32")
        for tol in table["tolerances"]:
            ax.axhline(fp["mean"] - tol, color="k", lw=0.8, ls=":")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("noise scale (x the preset's non-idealities)")
    ax.set_ylabel("final test accuracy [%]")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


__all__ = ["DEFAULT_SCALES", "TOLERANCES", "MAX_RUNS", "budget_spec", "budget_table",
           "format_budget", "format_point", "plot_budget"]
