"""Write docs/results-noise-budget.md and docs/noise-budget.png from the noise-budget ladders.

Usage::

    imcsim noise-budget --model small-cnn --imc all --preset paper-nonideal \\
        --adc-rounding floor|half_up [--calibrate-offsets] --input-mapping one-hot|multi-level \\
        --scales 0,0.25,1,4 --seeds 0,1 --epochs 4 --out docs/results/noise-budget/LADDER
    python scripts/mvm_snr.py ...             # the MVM-level SNR files (docs/results/mvm-snr)
    python scripts/noise_budget_results.py

A ladder folder is named ``<model>-<mapping>-<placement>``: its mapping is ``one-hot`` or
``multi-level``, its threshold placement ``floor`` (the paper's law), ``half_up`` (centred
thresholds), ``calibrated`` (floor law, with the measured code offsets subtracted in the
NMC) or ``half_up-calibrated`` (both); a suffix ``-skip`` marks a controller that skips
all-masked cycles, ``-aware`` hardware-aware training (``--chip-pool``). The page holds, per ladder, the final test accuracy
at every scale (mean over the finished seeds), the 2- and 10-point budgets
(``imcsim.training.budget``), and the per-MVM compute SNR that training recorded (median over
layers, last epoch, first seed). It also
holds the MVM-level SNR tables of ``scripts/mvm_snr.py``. A ladder still running
shows what it has.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from imcsim.training.budget import format_point

ROOT = Path(__file__).resolve().parents[1]
LADDERS = ROOT / "docs" / "results" / "noise-budget"
SNR = ROOT / "docs" / "results" / "mvm-snr"
PLACEMENTS = ("floor", "half_up", "calibrated", "half_up-calibrated")
PLACEMENT_TEXT = {"floor": "paper's floor law", "half_up": "centred thresholds (half_up)",
                  "calibrated": "calibrated chip (floor law + NMC code offsets)",
                  "half_up-calibrated": "centred thresholds + NMC code offsets"}
MAPPINGS = ("one-hot", "multi-level")
KINDS = ("forward", "backward", "update")


def ladder_name(folder: Path) -> tuple[str, str, str, bool, bool] | None:
    """(model, mapping, placement, skip, aware) of a ladder folder, or None when it is not
    one; a folder name ending in ``-aware`` is a hardware-aware ladder (``--chip-pool``), one
    ending in ``-skip`` (before any ``-aware``) a ladder whose controller skips all-masked
    cycles (``skip_masked_cycles``, docs/hardware-model.md 4.7)."""
    name = folder.name
    aware = name.endswith("-aware")
    if aware:
        name = name[: -len("-aware")]
    skip = name.endswith("-skip")
    if skip:
        name = name[: -len("-skip")]
    for mapping in MAPPINGS:
        for placement in PLACEMENTS:
            tail = f"-{mapping}-{placement}"
            if name.endswith(tail):
                return name[: -len(tail)], mapping, placement, skip, aware
    return None


def median_snr(folder: Path, config: str) -> dict:
    """Median over layers of each kind's compute SNR [dB] and bias (mean error over the rms
    of the exact product) in the last epoch of the first seed's run of ``config``
    (``metrics.json``'s ``mvm_error``): {kind: (snr, bias)}; {} when not recorded."""
    runs = sorted(folder.glob(f"{config}-seed*/metrics.json"))
    if not runs:
        return {}
    history = json.loads(runs[0].read_text()).get("history", [])
    errors = history[-1].get("mvm_error", {}) if history else {}
    out = {}
    for kind in KINDS:
        values = [rec[kind]["snr_db"] for rec in errors.values()
                  if kind in rec and rec[kind].get("snr_db") is not None]
        biases = [rec[kind]["bias"] for rec in errors.values()
                  if kind in rec and rec[kind].get("bias") is not None] or [0.0]
        if values:
            out[kind] = (statistics.median(values), statistics.median(biases))
    return out


def load_ladders(root: Path) -> list[dict]:
    ladders = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        key = ladder_name(folder)
        budget = folder / "budget.json"
        if key is None or not budget.is_file():
            continue
        doc = json.loads(budget.read_text())
        table = doc["budget"]
        points = table["ladders"].get("all", {}).get("points", [])
        for p in points:
            slug = f"{p['scale']:g}".replace(".", "p")
            p["snr"] = median_snr(folder, f"all-x{slug}")
        ladders.append({"model": key[0], "mapping": key[1], "placement": key[2], "skip": key[3],
                        "aware": doc["spec"]["base"].get("chip_pool", 0) if key[4] else 0,
                        "fp32": table["fp32"], "points": points,
                        "budgets": table["ladders"].get("all", {}).get("budgets", {}),
                        "missing": table.get("missing", []), "spec": doc["spec"]})
    return ladders


def order(lad: dict) -> tuple:
    return (MAPPINGS.index(lad["mapping"]), lad["skip"], bool(lad["aware"]),
            PLACEMENTS.index(lad["placement"]))


def placement_text(lad: dict, short: bool = False) -> str:
    text = lad["placement"] if short else PLACEMENT_TEXT[lad["placement"]]
    return (text + (", all-masked cycles skipped" if lad["skip"] else "")
            + (f", hardware-aware ({lad['aware']} chips)" if lad["aware"] else ""))


def fmt_acc(p) -> str:
    return f"{format_point({'diverged': 0, **p})} (n={p['n']})"


def budget_text(value) -> str:
    return "none" if value is None else f"x {value:g}"


def ladder_section(ladders: list[dict]) -> list[str]:
    lines = []
    if not ladders:
        return ["No ladder has finished a run yet."]
    scales = sorted({p["scale"] for lad in ladders for p in lad["points"]})
    head = "| mapping | threshold placement | " + " | ".join(f"x {s:g}" for s in scales) + \
        " | budget 2 pts | budget 10 pts |"
    lines += [head, "|" + "---|" * (len(scales) + 4)]
    for lad in sorted(ladders, key=order):
        by_scale = {p["scale"]: p for p in lad["points"]}
        cells = [fmt_acc(by_scale[s]) if s in by_scale else "—" for s in scales]
        lines.append(f"| {lad['mapping']} | {placement_text(lad)} | "
                     + " | ".join(cells) + f" | {budget_text(lad['budgets'].get('2'))} | "
                     f"{budget_text(lad['budgets'].get('10'))} |")
    fp = [lad["fp32"] for lad in ladders if lad["fp32"]]
    if fp:
        accs = [a for f in fp for a in f["accuracies"]]
        lines += ["", f"FP32 baseline (every ladder's own runs): "
                  f"{statistics.mean(accs):.2f} % over {len(accs)} runs."]
    missing = sorted({m for lad in ladders for m in lad["missing"]})
    if missing:
        lines += ["", f"Not finished yet: {len(missing)} runs "
                  f"({', '.join(sorted({lad['mapping'] + '/' + lad['placement'] for lad in ladders if lad['missing']}))})."]
    lines += ["", "Compute SNR of the training MVMs [dB] / bias (mean error over the rms of "
              "the exact product), medians over layers, last epoch, seed 0 (`imcsim report RUN` "
              "prints every layer):", "",
              "| mapping | placement | scale | forward | backward | update |",
              "|---|---|---|---|---|---|"]
    for lad in sorted(ladders, key=order):
        for p in lad["points"]:
            if p["scale"] == 0 or not p.get("snr"):
                continue
            cells = [f"{p['snr'][k][0]:.1f} / {p['snr'][k][1]:+.3f}" if k in p["snr"] else "—"
                     for k in KINDS]
            lines.append(f"| {lad['mapping']} | {placement_text(lad, short=True)} | "
                         f"x {p['scale']:g} | "
                         + " | ".join(cells) + " |")
    return lines


def snr_section(root: Path) -> list[str]:
    """One table per ``scripts/mvm_snr.py`` file: a column per (mapping, placement, schedule)
    it measured, a row per (MVM, scale); cells SNR [dB] / bias."""
    lines = []
    for path in sorted(root.glob("*.json")):
        doc = json.loads(path.read_text())
        rows = doc["rows"]
        columns = sorted({(r["mapping"], r.get("placement", "half_up"), r["skip_masked_cycles"])
                          for r in rows},
                         key=lambda c: (MAPPINGS.index(c[0]), PLACEMENTS.index(c[1]), c[2]))
        head = [f"{m}, {p}{', skip' if k else ''}" for m, p, k in columns]
        lines += ["", f"**{path.stem}**: `{doc.get('scaled', 'all')}` scaled, the other "
                  f"non-idealities at {doc.get('others', 'the preset' + chr(39) + 's')}; "
                  f"{doc['vectors']} vectors of {doc['inner']} rows x {doc['outputs']} outputs "
                  f"(`{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`).", "",
                  "| MVM | scale | " + " | ".join(head) + " |",
                  "|---|---|" + "---|" * len(columns)]
        keys = sorted({(r["kind"], r["scale"]) for r in rows},
                      key=lambda k: (KINDS.index(k[0]), k[1]))
        for kind, scale in keys:
            cell = {(r["mapping"], r.get("placement", "half_up"), r["skip_masked_cycles"]): r
                    for r in rows if r["kind"] == kind and r["scale"] == scale}
            vals = []
            for c in columns:
                r = cell.get(c)
                if r is None:
                    vals.append("—")
                    continue
                snr = "exact" if r["snr_db"] is None else f"{r['snr_db']:.1f}"
                vals.append(snr + (f" / {r['bias']:+.3f}" if r.get("bias") is not None else ""))
            lines.append(f"| {kind} | x {scale:g} | " + " | ".join(vals) + " |")
    return lines


def plot(ladders: list[dict], png: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    styles = {"floor": "o", "half_up": "s", "calibrated": "^", "half_up-calibrated": "D"}
    colours = {"floor": "tab:orange", "half_up": "tab:green", "calibrated": "tab:blue",
               "half_up-calibrated": "tab:purple"}
    for ax, mapping in zip(axes, MAPPINGS):
        fp = [a for lad in ladders if lad["mapping"] == mapping and lad["fp32"]
              for a in lad["fp32"]["accuracies"]]
        for lad in ladders:
            if lad["mapping"] != mapping or not lad["points"]:
                continue
            shown = [p for p in lad["points"] if p["mean"] is not None]
            xs = [max(p["scale"], 1 / 16) for p in shown]                # 0 drawn at 1/16
            line = ":" if lad["skip"] else "--" if lad["aware"] else "-"
            ax.semilogx(xs, [p["mean"] for p in shown], styles[lad["placement"]] + line,
                        color=colours[lad["placement"]], mfc="white" if lad["skip"] else None,
                        label=placement_text(lad))
            gone = [max(p["scale"], 1 / 16) for p in lad["points"] if p.get("diverged")]
            if gone:                                       # diverged runs: crosses at 0
                ax.plot(gone, [0] * len(gone), "x", color=colours[lad["placement"]], ms=9)
        if fp:
            base = statistics.mean(fp)
            for tol, alpha in ((2, 0.25), (10, 0.1)):
                ax.axhspan(base - tol, base, color="green", alpha=alpha)
            ax.axhline(base, color="green", lw=1, label="FP32 (bands: -2, -10 points)")
        ax.set_title(f"{mapping} rows")
        ax.set_xlabel("scale of paper-nonideal's non-idealities (0 drawn at 1/16; x: diverged)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("final test accuracy [%]")
    for ax in axes:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ladders", default=str(LADDERS))
    ap.add_argument("--snr", default=str(SNR))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results-noise-budget.md"))
    args = ap.parse_args(argv)
    ladders_root, snr_root = Path(args.ladders), Path(args.snr)
    for name, path in (("--ladders", ladders_root), ("--snr", snr_root)):
        if not path.is_dir():
            print(f"{name}: no folder {path}", file=sys.stderr)
            return 2
    ladders = load_ladders(ladders_root)
    if not ladders:
        print(f"--ladders: no ladder with a budget.json under {ladders_root}", file=sys.stderr)
        return 2
    out = Path(args.out)
    png = out.parent / "noise-budget.png"
    spec = ladders[0]["spec"]
    base = spec["base"]
    lines = ["# Noise budgets: results", "",
             "Generated by `python scripts/noise_budget_results.py` from the ladders in "
             f"`{ladders_root.relative_to(ROOT) if ladders_root.is_relative_to(ROOT) else ladders_root}` "
             "and the MVM-level SNR files; the analysis is in docs/noise-budget-analysis.md.", "",
             f"Setup: `{base['model']}` on `{base['dataset']}`, MVMs on the macro: "
             f"`{base['imc']}`, preset `{base['preset']}` with all its non-idealities times the "
             f"scale, {base['epochs']} epochs, batch {base['batch']}, lr {base['lr']}; seeds "
             f"{', '.join(str(s) for s in spec['grid']['seed'])}. Final test accuracy [%], mean "
             "± sd over seeds; the budget is the largest scale at which that scale and every "
             "smaller one are within 2 (10) points of FP32.", ""]
    lines += ladder_section(ladders)
    if plot(ladders, png):
        lines += ["", f"![accuracy against noise scale]({png.name})"]
    lines += ["", "## MVM-level compute SNR and bias at VGG-lite's L4 size",
              "`python scripts/mvm_snr.py` (SNR [dB] / bias of one MVM against the exact "
              "product of the same quantized operands; `skip`: the controller skips "
              "all-masked cycles, docs/hardware-model.md 4.7):"]
    lines += snr_section(snr_root)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)
    print(f"wrote {out}" + (f" and {png}" if png.exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
