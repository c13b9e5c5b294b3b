"""Write docs/results-table3.md (and docs/table3-accuracy.png) from the Table III runs.

Usage::

    imcsim sweep scripts/table3.sweep.json             # CPU, resumable; finished runs skipped
    bash scripts/device_check.sh                       # GPU machine: every config, by seed
    imcsim sweep scripts/table3-adc-bits.sweep.json    # the ADC-resolution ablation
    python scripts/table3_results.py

Reads three sources, each a folder of run folders named ``<config>-seed<N>`` (finished or not:
an unfinished run shows the epochs it has done): the GPU runs (``docs/results/table3-gpu``,
the sweep's parameters with ``--device cuda``, brought back from a device run), the CPU sweep
(``docs/results/table3``) and the ADC-resolution ablation (``docs/results/table3-adc-bits``).
A run is finished when the sweep recorded it so (``result.json``) or its history holds every
epoch of the sweep's schedule.  Writes the tables (mean and spread of the final test accuracy
over the finished seeds, the paper's figure beside each row), the per-epoch accuracy of every
run, and the per-layer error diagnostics (``imcsim report``'s records) of the IMC rows.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "scripts" / "table3.sweep.json"
ABLATION_SPEC = ROOT / "scripts" / "table3-adc-bits.sweep.json"
GPU_OUT = ROOT / "docs" / "results" / "table3-gpu"

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
            # a run trained outside the sweep (a GPU machine without Dask) has no result.json:
            # finished when its history holds the schedule's every epoch
            finished = finished or len(history) >= {**spec["base"], **cfg}["epochs"]
            runs.append({"config": cname, "seed": seed, "label": cfg["label"],
                         "history": history, "finished": finished})
    return runs


def _pct(v):
    return f"{100 * v:.2f}"


def _finals(items) -> list[float]:
    return [r["history"][-1]["test_acc"] for r in items if r["finished"]]


def table(runs, spec, epochs) -> list[str]:
    """Mean ± sd of the finished seeds' final test accuracy per config, with the distance to
    FP32 and to the training scheme with exact MVMs (both of the same source)."""
    by_config = {}
    for r in runs:
        by_config.setdefault(r["config"], []).append(r)
    bases = {name: (statistics.mean(_finals(by_config[name])) if _finals(by_config.get(name, []))
                    else None) for name in ("fp32", "exact") if name in by_config}
    lines = ["| row | paper (CIFAR-10) | final test accuracy per seed [%] | mean ± sd [%] | "
             "vs FP32 [points] | vs exact MVMs [points] |", "|---|---|---|---|---|---|"]
    for cname, items in by_config.items():
        finals, cells = _finals(items), []
        for r in items:
            h = r["history"]
            if r["finished"]:
                cells.append(f"s{r['seed']}: {_pct(h[-1]['test_acc'])}")
            elif h:
                cells.append(f"s{r['seed']}: ({_pct(h[-1]['test_acc'])} after {len(h)}/{epochs})")
        mean = (f"{_pct(statistics.mean(finals))} ± "
                f"{_pct(statistics.stdev(finals)) if len(finals) > 1 else '-'} (n={len(finals)})"
                if finals else "-")
        deltas = [f"{100 * (statistics.mean(finals) - bases[k]):+.2f}"
                  if finals and bases.get(k) is not None else "-" for k in ("fp32", "exact")]
        paper = PAPER[PAPER_ROW[cname]] if cname in PAPER_ROW else "-"
        lines.append(f"| {items[0]['label']} | {paper} | {'; '.join(cells) or 'not run yet'} | "
                     f"{mean} | {deltas[0]} | {deltas[1]} |")
    return lines


def same_seed(cpu_runs, gpu_runs, seed: int = 0) -> list[str]:
    """The CPU sweep's finished runs beside the GPU runs of the same config and seed: the
    macro's MVMs are the same bits on both, the FP32 layers round differently."""
    gpu = {r["config"]: r for r in gpu_runs if r["seed"] == seed and r["finished"]}
    lines = ["| row | CPU [%] | GPU [%] |", "|---|---|---|"]
    for r in cpu_runs:
        if r["seed"] == seed and r["finished"] and r["config"] in gpu:
            lines.append(f"| {r['label']} | {_pct(r['history'][-1]['test_acc'])} | "
                         f"{_pct(gpu[r['config']]['history'][-1]['test_acc'])} |")
    return lines if len(lines) > 2 else []


def _last_diagnostics(run) -> dict:
    rows = [h for h in run["history"] if h.get("mvm_error")]
    return rows[-1]["mvm_error"] if rows else {}


def _span(values, spec) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return spec.format(lo) if lo == hi else f"{spec.format(lo)} to {spec.format(hi)}"


def ablation(runs, reference_runs) -> list[str]:
    """The ADC-resolution ablation: each run's final accuracy with its MVMs' bias, compute SNR
    and lossy share at the last recorded epoch (ranges over the hidden layers), beside the
    8-bit runs of the same config and seed (``reference_runs``)."""
    lines = ["| run | ADC bits | final test accuracy [%] | MVM | bias/rms | SNR [dB] | "
             "lossy share |", "|---|---|---|---|---|---|---|"]
    ref = {(r["config"], r["seed"]): r for r in reference_runs}
    rows = []
    for r in runs:
        if not r["history"]:
            continue
        base, _, bits = r["config"].rpartition("-adc")
        eight = ref.get((base, r["seed"]))
        if eight is not None and eight["history"] and (eight, "8") not in rows:
            rows.append((eight, "8"))
        rows.append((r, bits))
    rows.sort(key=lambda item: (item[0]["config"].rpartition("-adc")[0] or item[0]["config"],
                                item[0]["seed"], int(item[1])))
    for r, bits in rows:
        diag = _last_diagnostics(r)
        acc = _pct(r["history"][-1]["test_acc"])
        if not r["finished"]:
            acc = f"({acc} after {len(r['history'])} epochs)"
        for kind in ("forward", "backward", "update"):
            recs = [k[kind] for k in diag.values() if kind in k]
            if not recs:
                continue
            snr = _span([None if x.get("exact_match") else x.get("snr_db") for x in recs],
                        "{:.1f}")
            lines.append(f"| {r['source']} {r['config']}-seed{r['seed']} | {bits} | {acc} | "
                         f"{kind} | "
                         f"{_span([x['bias'] for x in recs], '{:+.2f}')} | {snr} | "
                         f"{_span([x['lossy_share'] for x in recs], '{:.2f}')} |")
    return lines


def curves(runs) -> list[str]:
    lines = ["| run | test accuracy per epoch [%] | seconds per epoch |", "|---|---|---|"]
    for r in runs:
        if not r["history"]:
            continue
        acc = " / ".join(_pct(h["test_acc"]) for h in r["history"])
        sec = " / ".join(f"{h['seconds']:.0f}" for h in r["history"])
        state = "" if r["finished"] else " (unfinished)"
        lines.append(f"| {r['source']} {r['config']}-seed{r['seed']}{state} | {acc} | {sec} |")
    return lines


def _fmt(v, spec):
    return "-" if v is None else spec.format(v)


def diagnostics(runs) -> list[str]:
    """Per-layer records of the last recorded epoch of each IMC run."""
    lines = []
    for r in runs:
        rows = [h for h in r["history"] if h.get("mvm_error")]
        if not rows:
            continue
        for h in (rows[-1],):
            lines += [f"**{r['source']} {r['config']}-seed{r['seed']}, epoch {h['epoch']}** "
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
    """Test accuracy per epoch: the mean over the finished seeds of each config (thick) and
    every seed (thin)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    by_config = {}
    for r in runs:
        if r["finished"]:
            by_config.setdefault(r["config"], []).append(r)
    for i, (cname, items) in enumerate(by_config.items()):
        color = f"C{i % 10}"
        style = "--" if "floor" in cname else "-"
        for r in items:
            ax.plot([h["epoch"] for h in r["history"]],
                    [100 * h["test_acc"] for h in r["history"]], color=color, lw=0.6,
                    alpha=0.4, linestyle=style)
        epochs = [h["epoch"] for h in items[0]["history"]]
        mean = [statistics.mean(100 * r["history"][e]["test_acc"] for r in items)
                for e in range(len(epochs))]
        ax.plot(epochs, mean, color=color, lw=2, marker="o", linestyle=style,
                label=f"{cname} (n={len(items)})")
    ax.set_xlabel("epoch")
    ax.set_xticks(range(1, 1 + max(len(r["history"]) for r in runs)))
    ax.set_ylabel("test accuracy [%]")
    ax.set_ylim(0, 100)
    ax.set_title("VGG-lite on digits32, Table III rows (dashed: floor ADC law)")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


RESULTS_BEGIN = "<!-- table3: begin (scripts/table3_results.py) -->"
RESULTS_END = "<!-- table3: end -->"


def results_section(table_lines: list[str], source: str) -> list[str]:
    """The Table III section of docs/results.md: the table and where the rest lives."""
    return [RESULTS_BEGIN, "", "## Table III at the paper's layer sizes (issue 19)", "",
            f"VGG-lite on digits32, 4-epoch cosine schedule, three seeds, {source}; every row "
            "under the paper's printed floor ADC law and under half_up. Per-layer "
            "diagnostics, the CPU runs, the ADC-resolution ablation and the analysis: "
            "[results-table3.md](results-table3.md).", "", *table_lines, "", RESULTS_END]


def write_results_section(lines: list[str], path: Path) -> None:
    """Replace the section between its markers in ``path`` (or append it), atomically."""
    from imcsim.atomic import write_text_atomic
    text = path.read_text() if path.is_file() else ""
    section = "\n".join(lines)
    if RESULTS_BEGIN in text and RESULTS_END in text:
        head, rest = text.split(RESULTS_BEGIN, 1)
        text = head + section + rest.split(RESULTS_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    write_text_atomic(path, text, str(path))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="the CPU sweep's output folder")
    ap.add_argument("--gpu", type=Path, default=GPU_OUT, help="the GPU runs' folder")
    ap.add_argument("--analysis", type=Path, default=ROOT / "docs" / "table3-analysis.md",
                    help="hand-written analysis appended to the page (kept as is)")
    args = ap.parse_args()
    spec = json.loads(SPEC.read_text())
    ablation_spec = json.loads(ABLATION_SPEC.read_text())
    out = args.out or ROOT / spec["out"]
    cpu = [dict(r, source="CPU") for r in load_runs(out, spec)]
    gpu = [dict(r, source="GPU") for r in load_runs(args.gpu, spec)] if args.gpu.is_dir() else []
    adc = [dict(r, source="CPU") for r in load_runs(ROOT / ablation_spec["out"], ablation_spec)]
    if not any(r["history"] for r in cpu + gpu):
        raise SystemExit(f"table3_results.py: no Table III run has results in {out} or "
                         f"{args.gpu}; run the sweep first")
    epochs = spec["base"]["epochs"]
    machine = args.gpu / "machine.txt"
    gpu_machine = machine.read_text().splitlines()[1].split(",")[0] if machine.is_file() else "?"
    page = ["# Table III at the paper's layer sizes: VGG-lite on digits32 (issue 19)", "",
            "Generated by `python scripts/table3_results.py` from the runs of "
            "`scripts/table3.sweep.json`: on a GPU machine by `scripts/device_check.sh` "
            f"(metrics under `{args.gpu.relative_to(ROOT)}`) and on the CPU by `imcsim sweep` "
            f"(under `{spec['out']}`; the sweep skips finished runs and resumes interrupted "
            "ones).", "", spec["description"], "",
            "The paper's figures are VGG-lite on CIFAR-10 after 200 epochs; here the question "
            "is the distance of each row from its baselines, not the absolute accuracy.", ""]
    if gpu:
        page += [f"## The table (GPU: {gpu_machine}, `--device cuda`)", ""]
        gpu_table = table(gpu, spec, epochs)
        page += gpu_table
        write_results_section(results_section(gpu_table, f"on one {gpu_machine}"),
                              ROOT / "docs" / "results.md")
        page += ["", "The macro's MVMs are the same bits on the GPU as on the CPU (tested); the "
                 "FP32 layers, the loss and the optimizer run in CuPy and round differently "
                 "from NumPy, so a GPU run and a CPU run of the same seed are two samples of "
                 "the same experiment, not the same bits. The GPU runs are therefore reported "
                 "in their own table.", ""]
    page += ["## The CPU sweep", ""] + table(cpu, spec, epochs)
    side = same_seed(cpu, gpu)
    if side:
        page += ["", "The same seed on both (seed 0):", ""] + side
    page += ["", "![test accuracy per epoch](table3-accuracy.png)", ""]
    if any(r["history"] for r in adc):
        page += ["## Ablation: the ADC's resolution", "", ablation_spec["description"], "",
                 "Each MVM kind's bias over the exact output's RMS, compute SNR and share of "
                 "lossy conversions at the run's last recorded epoch, as ranges over the "
                 "hidden layers L2-L8 (the 8-bit rows: the CPU sweep's run of the same config "
                 "and seed where it exists, else the GPU run's).", ""]
        reference = [r for r in gpu if r["seed"] == 0]
        reference = [r for r in cpu if r["finished"]] + [
            r for r in reference if not any(c["config"] == r["config"] and c["finished"]
                                            for c in cpu)]
        page += ablation(adc, reference) + [""]
    page += ["## Every run, per epoch", ""]
    page += curves(gpu + cpu + adc)
    if args.analysis.is_file():
        page += ["", args.analysis.read_text().rstrip()]
    side = diagnostics_side_by_side(gpu or cpu)
    if side:
        page += ["", f"## The diagnostics side by side (seed 0, {'GPU' if gpu else 'CPU'})", "",
                 "Each cell: bias over the exact output's RMS / compute SNR / share of lossy "
                 "conversions of that layer's MVM on the macro, at the run's last recorded "
                 "epoch (blank: that MVM ran exact in that run).", ""] + side
    page += ["", "## Per-layer error diagnostics of the seed-0 IMC runs", "",
             "Each emulator MVM of two sampled steps per epoch against the exact product of "
             "the same operands (docs/training.md, Per-MVM error diagnostics): bias and RMS "
             "error over the exact output's RMS, cosine (raw and per-output centred), compute "
             "SNR, shares of lossy and clipped conversions; last recorded epoch.", ""]
    page += diagnostics([r for r in gpu + cpu + adc if r["seed"] == 0])
    (ROOT / "docs" / "results-table3.md").write_text("\n".join(page).rstrip() + "\n")
    plot(gpu or cpu, ROOT / "docs" / "table3-accuracy.png")
    print(f"wrote docs/results-table3.md and docs/table3-accuracy.png from {out}, {args.gpu}")


if __name__ == "__main__":
    main()
