"""Write docs/results-table3.md (and docs/table3-accuracy.png) from the Table III sweep's runs.

Usage::

    imcsim sweep scripts/table3.sweep.json          # resumable; finished runs are skipped
    python scripts/table3_results.py [--out docs/results/table3]

Reads every run folder of the sweep (finished or not: an unfinished run shows the epochs it
has done) and writes: the table (mean and spread of the final test accuracy over the finished
seeds, the paper's figure beside each row), the per-epoch accuracy of every run, and the
per-layer error diagnostics (``imcsim report``'s records) of every IMC row.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "scripts" / "table3.sweep.json"

#: Table III of the paper (variable Vref, VGG-lite on CIFAR-10), test accuracy [%]
PAPER = {"baseline": 92.87, "forward": 92.02, "backward": 92.47, "update": 91.97, "all": 92.30}
PAPER_ROW = {"fp32": "baseline", "exact": "baseline", "all-halfup": "all", "all-floor": "all",
             "fwd-floor": "forward", "fwd-halfup": "forward", "bwd-floor": "backward",
             "bwd-halfup": "backward", "upd-floor": "update", "upd-halfup": "update"}


def load_runs(out: Path, spec: dict) -> list[dict]:
    """One record per planned run: config, seed, label, history so far, finished flag."""
    runs = []
    for cname, cfg in spec["configs"].items():
        for seed in spec["grid"]["seed"]:
            folder = out / f"{cname}-seed{seed}"
            history, finished = [], False
            metrics = folder / "metrics.json"
            if metrics.is_file():
                history = json.loads(metrics.read_text())["history"]
            result = folder / "result.json"
            if result.is_file():
                finished = json.loads(result.read_text()).get("status") == "ok"
            runs.append({"config": cname, "seed": seed, "label": cfg["label"],
                         "history": history, "finished": finished})
    return runs


def _pct(v):
    return f"{100 * v:.2f}"


def table(runs, spec, epochs) -> list[str]:
    by_config = {}
    for r in runs:
        by_config.setdefault(r["config"], []).append(r)
    base = [r["history"][-1]["test_acc"] for r in by_config.get("fp32", []) if r["finished"]]
    base_mean = statistics.mean(base) if base else None
    lines = ["| row | paper (CIFAR-10) | final test accuracy per seed [%] | mean ± sd [%] | "
             "vs FP32 [points] |", "|---|---|---|---|---|"]
    for cname, items in by_config.items():
        finals, cells = [], []
        for r in items:
            h = r["history"]
            if r["finished"]:
                finals.append(h[-1]["test_acc"])
                cells.append(f"s{r['seed']}: {_pct(h[-1]['test_acc'])}")
            elif h:
                cells.append(f"s{r['seed']}: ({_pct(h[-1]['test_acc'])} after {len(h)}/{epochs})")
        mean = (f"{_pct(statistics.mean(finals))} ± "
                f"{_pct(statistics.stdev(finals)) if len(finals) > 1 else '-'} (n={len(finals)})"
                if finals else "-")
        delta = (f"{100 * (statistics.mean(finals) - base_mean):+.2f}"
                 if finals and base_mean is not None else "-")
        paper = PAPER[PAPER_ROW[cname]] if cname in PAPER_ROW else "-"
        lines.append(f"| {items[0]['label']} | {paper} | {'; '.join(cells) or 'not run yet'} | "
                     f"{mean} | {delta} |")
    return lines


def curves(runs) -> list[str]:
    lines = ["| run | test accuracy per epoch [%] | seconds per epoch |", "|---|---|---|"]
    for r in runs:
        if not r["history"]:
            continue
        acc = " / ".join(_pct(h["test_acc"]) for h in r["history"])
        sec = " / ".join(f"{h['seconds']:.0f}" for h in r["history"])
        state = "" if r["finished"] else " (unfinished)"
        lines.append(f"| {r['config']}-seed{r['seed']}{state} | {acc} | {sec} |")
    return lines


def _fmt(v, spec):
    return "-" if v is None else spec.format(v)


def diagnostics(runs) -> list[str]:
    """Per-layer records of the first epoch and the last recorded epoch of each IMC run."""
    lines = []
    for r in runs:
        rows = [h for h in r["history"] if h.get("mvm_error")]
        if not rows:
            continue
        for h in (rows[0], rows[-1]) if len(rows) > 1 else (rows[0],):
            lines += [f"**{r['config']}-seed{r['seed']}, epoch {h['epoch']}** "
                      f"(test accuracy {_pct(h['test_acc'])} %)", "",
                      "| layer | MVM | bias/rms | rmse/rms | cos | cos centred | SNR dB | lossy | "
                      "clipped |", "|---|---|---|---|---|---|---|---|---|"]
            for layer, kinds in h["mvm_error"].items():
                for kind, rec in kinds.items():
                    snr = ("exact" if rec.get("exact_match") else _fmt(rec.get("snr_db"), "{:.1f}"))
                    lines.append(
                        f"| {layer} | {kind} | {_fmt(rec['bias'], '{:+.3f}')} | "
                        f"{_fmt(rec['rms_error'], '{:.3f}')} | {_fmt(rec['cosine'], '{:.3f}')} | "
                        f"{_fmt(rec['cosine_centred'], '{:.3f}')} | {snr} | "
                        f"{_fmt(rec['lossy_share'], '{:.3f}')} | "
                        f"{_fmt(rec['clipped_share'], '{:.4f}')} |")
            lines.append("")
    return lines


def diagnostics_side_by_side(runs, seed: int = 0) -> list[str]:
    """One table: per (layer, MVM kind), each IMC run's bias/rms and SNR at its last recorded
    epoch (seed ``seed``), so the ADC laws and the MVM kinds read side by side."""
    cols = [r for r in runs if r["seed"] == seed and any(h.get("mvm_error") for h in r["history"])]
    if not cols:
        return []
    last = {r["config"]: [h for h in r["history"] if h.get("mvm_error")][-1] for r in cols}
    keys = []
    for r in cols:
        for layer, kinds in last[r["config"]]["mvm_error"].items():
            for kind in kinds:
                if (layer, kind) not in keys:
                    keys.append((layer, kind))
    head = "| layer | MVM | " + " | ".join(
        f"{r['config']} (ep {last[r['config']]['epoch']})" for r in cols) + " |"
    lines = [head, "|---|---|" + "---|" * len(cols)]
    for layer, kind in keys:
        cells = []
        for r in cols:
            rec = last[r["config"]]["mvm_error"].get(layer, {}).get(kind)
            if rec is None:
                cells.append("")
                continue
            snr = "exact" if rec.get("exact_match") else _fmt(rec.get("snr_db"), "{:.1f} dB")
            cells.append(f"{_fmt(rec['bias'], '{:+.2f}')} / {snr} / "
                         f"{_fmt(rec['lossy_share'], '{:.2f}')}")
        lines.append(f"| {layer} | {kind} | " + " | ".join(cells) + " |")
    return lines


def plot(runs, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in runs:
        if r["seed"] != 0 or not r["history"]:
            continue
        ep = [h["epoch"] for h in r["history"]]
        ax.plot(ep, [100 * h["test_acc"] for h in r["history"]], marker="o",
                linestyle="-" if "halfup" in r["config"] or r["config"] in ("fp32", "exact")
                else "--", label=r["config"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy [%]")
    ax.set_title("VGG-lite on digits32, seed 0 (dashed: floor ADC law)")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="the sweep's output folder")
    ap.add_argument("--analysis", type=Path, default=ROOT / "docs" / "table3-analysis.md",
                    help="hand-written analysis appended to the page (kept as is)")
    args = ap.parse_args()
    spec = json.loads(SPEC.read_text())
    out = args.out or ROOT / spec["out"]
    runs = load_runs(out, spec)
    epochs = spec["base"]["epochs"]
    page = ["# Table III at the paper's layer sizes: VGG-lite on digits32 (issue 19)", "",
            "Generated by `python scripts/table3_results.py` from the runs of "
            "`imcsim sweep scripts/table3.sweep.json` (their metrics are committed under "
            f"`{spec['out']}`; the sweep skips finished runs and resumes interrupted ones).", "",
            spec["description"], "",
            "The paper's figures are VGG-lite on CIFAR-10 after 200 epochs; here the question "
            "is the distance of each row from its baseline, not the absolute accuracy.", "",
            "## The table", ""]
    page += table(runs, spec, epochs)
    page += ["", "![test accuracy per epoch](table3-accuracy.png)", "",
             "## Every run, per epoch", ""]
    page += curves(runs)
    if args.analysis.is_file():
        page += ["", args.analysis.read_text().rstrip()]
    side = diagnostics_side_by_side(runs)
    if side:
        page += ["", "## The diagnostics side by side (seed 0)", "",
                 "Each cell: bias over the exact output's RMS / compute SNR / share of lossy "
                 "conversions of that layer's MVM on the macro, at the run's last recorded "
                 "epoch (blank: that MVM ran exact in that run).", ""] + side
    page += ["", "## Per-layer error diagnostics of each IMC run", "",
             "Each emulator MVM of two sampled steps per epoch against the exact product of "
             "the same operands (docs/training.md, Per-MVM error diagnostics): bias and RMS "
             "error over the exact output's RMS, cosine (raw and per-output centred), compute "
             "SNR, shares of lossy and clipped conversions; first and last recorded epoch.", ""]
    page += diagnostics(runs)
    (ROOT / "docs" / "results-table3.md").write_text("\n".join(page).rstrip() + "\n")
    plot(runs, ROOT / "docs" / "table3-accuracy.png")
    print(f"wrote docs/results-table3.md and docs/table3-accuracy.png from {out}")


if __name__ == "__main__":
    main()
