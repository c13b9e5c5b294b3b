"""Write docs/results.md from the digits training sweep (the comparison of issue 3).

The runs are a sweep file, scripts/digits_results.sweep.json (small CNN, same epochs, seeds
0 1 2):
  (a)  FP32 baseline;
  (b)  all three MVMs on IMC, variable Vref;
  (c)  forward and backward on IMC, dual Vref 0.8 V / 0.089 V (F = 2304 / 255 rows),
       weight update exact-quantized;
  (c') as (c) with the high level matched to this CNN's layers (F = 576 rows, 0.2 V);
  (d)  Banner et al. 8-bit integer training, forward and backward on IMC under the 8-bit ADC
       at full scale 2304, weight update FP32 (the paper's Fig. 3 foil);
  (d0) the same 8-bit scheme with exact MVMs (no ADC), to separate scheme from ADC.
Run them as Dask tasks (resumable: finished runs are skipped), then write the table:
  imcsim sweep scripts/digits_results.sweep.json [--set epochs=8] [--set device=cuda]
  python scripts/training_results.py [--out runs/results] [--doc docs/results.md]
--out is where ``imcsim sweep`` wrote the runs (relative to the current folder, as the sweep
takes it); --doc defaults to the repository's docs/results.md, whatever the current folder.
Without a sweep table, or with no run of it finished, the script says so in one line, exits
with status 2 and leaves --doc as it was.
"""
import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from imcsim.atomic import resolve_output, write_text_atomic
from imcsim.sweep import read_table

ROOT = Path(__file__).resolve().parents[1]      # the repository's files from any folder
SPEC = "scripts/digits_results.sweep.json"      # as the page shows it (from the repository)
VGG_RESULTS = ROOT / "scripts" / "vgg_digits32_results.json"
#: the ADC law of this page's runs, and where Table III lives
LAW_NOTE = (
    "The IMC rows of this page ran under the floor ADC law, the presets' law when they "
    "were measured (the sweep file names it, so the command above reproduces them); the "
    "presets use half_up since Table III at the paper's layer sizes, which has its own "
    "page: [results-table3.md](results-table3.md) (three seeds, both ADC laws, per-layer "
    "diagnostics and the ablation behind each gap).")

#: where the sections of docs/results.md that other scripts write begin (their markers); kept
#: verbatim when this one rewrites the page
KEPT_SECTIONS = ("<!-- hardware-aware results: begin", "<!-- table3: begin")

ANALYSIS = [
    "## What the numbers say, and why they differ from the paper where they do",
    "",
    "- (b) vs (a): all three training MVMs through the bit-accurate macro with variable Vref "
    "stay within noise of FP32 (the paper finds the same for VGG-lite, Table III). Variable "
    "Vref sets F = max(active rows, 255), so every conversion of this small CNN (inner "
    "dimensions 144 to 576) keeps at least 255 codes for its reachable range.",
    "- (c) loses far more than the paper's 89.89 % vs 92.87 %, and the cause is this CNN's "
    "layer sizes, not the dual Vref as such: conv3 (288 rows) and fc4 (256 rows) have more "
    "active rows than the low level's 255, so their forward cycles take the 0.8 V level "
    "(F = 2304; 36 % of forward conversions) and one ADC code spans 9 rows: the reachable "
    "range of a 288-row column uses 32 of the 256 codes. With the high level matched to this "
    "CNN (c', 0.2 V = 576 rows) forward + backward on IMC is back within about two points. The "
    "backward MVM is not the problem: its radix-4 planes never exceed 255 active rows here "
    "(0 % high-Vref share), against 9.5-10.5 % on VGG-lite's 1152-2304-row layers (second "
    "table below; the paper reports 4-10 %).",
    "- (c-col), (c'-col): with each column's ADC choosing its own level after sampling (the "
    "option `dual:LOW:HIGH:column`, one more comparator decision per conversion), no column "
    "of this CNN ever holds more than 255 rows' worth, so every conversion stays on the "
    "lossless low level (0 % high-Vref share) and the high level's value does not matter: "
    "both are identical, and as accurate as (c'). The per-cycle choice converts a whole cycle "
    "at the high level as soon as its active rows exceed 255, although a column's count "
    "(about half its active rows for uncorrelated data) rarely does.",
    "- (d) collapses, as in Fig. 3: every plane of an 8-bit Eq. 1 operand is a dense +/-1 "
    "vector (no masks: 331 active rows per backward cycle on average, against 3 to 29 per "
    "radix-4 plane), so each column count sits near half the active rows and an LSB of 9 rows "
    "at F = 2304 resolves its variation into a handful of codes. (d0), the same 8-bit scheme "
    "with exact MVMs, trains normally.",
    "- (d-m), F matched to each layer (F = its inner dimension, at least 255), recovers most of "
    "the loss: on these layers the mismatched full scale, not the 8-bit format, costs the "
    "accuracy of (d). (d-v), variable Vref, is bit-identical to (d-m): the 8-bit operands mask "
    "no row, so every cycle's active rows are the tile's rows and F = max(rows, 255) is the "
    "matched full scale. The remaining 2.7 points against (d0) are the 8-bit ADC's "
    "quantization of 288- and 576-row columns. The paper's Fig. 3 compares both effects: the "
    "8-bit scheme under the 8-bit ADC, then 'recovery ... by increasing the ADC precision and "
    "greatly reducing the dynamic range mismatch', full recovery only with both (a 12-bit "
    "ADC); (d) corresponds to its degraded case, (d-m) to removing the mismatch at 8 bits.",
    "",
]


VGG_ANALYSIS = [
    "What this partial table shows (seed 0; the runs were cut off by the device time, so no "
    "config finished its 6-epoch schedule except FP32; compare configs at the same epoch):",
    "",
    "- The backward MVM's high-Vref share is 9.5-10.5 % in every epoch at VGG-lite's sizes, "
    "against 0 % on the small CNN's 144-576-row layers: the paper's 4-10 % of backward MVMs "
    "(Fig. 8) concerns these layer sizes. The forward MVM uses the high level for every "
    "conversion (dense activations on 1152-4096 rows per column).",
    "- Dual Vref (c) was 6 points behind FP32 after 4 of 6 epochs (92.8 % vs 98.6 %) and "
    "closing (80.5, 89.4, 92.8 %); whether it ends within the paper's few points is "
    "unmeasured. All three MVMs on IMC with variable Vref (b; CPU run, current SAWB "
    "coefficients) was at 80.2 % after 3 of 6 epochs, against 98.3 % for FP32: far from the "
    "paper's Table III parity at this point of its schedule; its final accuracy is "
    "unmeasured. (The same config on the small CNN matches FP32.)",
    "- 8-bit integers under the 8-bit ADC after 3 of 6 epochs: fixed F = 2304 35.4 %, F "
    "matched to each layer 59.9 %, variable Vref 53.2 %, FP32 98.3 %. VGG-lite's matched F "
    "is 2304 for most MVMs (lower only for the 1024- and 1152-row ones: L2, L3 and L8 "
    "forward, L2, L7 and L8 backward), so here most of the loss is the format's under an "
    "8-bit ADC, not the mismatched Vref; on the small CNN (144-576 rows) the mismatch is most "
    "of it (table above). (d-v) differs from (d-m) only in L7's partial second row tile "
    "(1792 rows: variable F = 1792, matched 2304). The paper's Fig. 3 compares "
    "both: the 8-bit scheme under the 8-bit ADC degrades, 'recovery was achieved by "
    "increasing the ADC precision and greatly reducing the dynamic range mismatch', and full "
    "recovery needed both (a 12-bit ADC).",
]


def group_runs(table):
    """{config: (label, [records in seed order])} in the sweep's order; failed runs dropped."""
    rows = {}
    for rec in table["runs"]:
        label, recs = rows.setdefault(rec["config"], (rec["label"], []))
        if rec["status"] == "ok":
            recs.append(rec)
        else:
            print(f"({rec['config']}) {rec['name']} failed: {rec['error']}")
    return rows


def history(out, rec):
    """The per-epoch metrics of one run (its folder's metrics.json; ValueError naming it when
    unreadable)."""
    path = Path(out) / rec["name"] / "metrics.json"
    try:
        return json.loads(path.read_text())["history"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable run's metrics ({type(exc).__name__})") from None


def sweep_table(out) -> dict:
    """The sweep's table under ``out``, with at least one finished run (ValueError, one line
    naming --out and the command to run, otherwise: a page of "failed" rows would replace the
    measured one)."""
    table_path = Path(out) / "results.json"
    if not table_path.is_file():
        raise ValueError(f"--out: {table_path} missing: no sweep results in {out} "
                         f"(run imcsim sweep {SPEC} first)")
    table = read_table(out)
    runs = table.get("runs") or []
    if not any(r.get("status") == "ok" for r in runs):
        raise ValueError(f"--out: {table_path}: no finished run ({len(runs)} listed, none ok; "
                         f"run imcsim sweep {SPEC})")
    return table


def write_doc(out, doc_path):
    resolve_output(doc_path, "--doc")               # its folder, before reading the runs
    table = sweep_table(out)
    rows = group_runs(table)
    first = table["runs"][0]["params"]
    seeds = sorted({rec["grid"]["seed"] for rec in table["runs"]})
    epochs = first["epochs"]
    sets = f" --set epochs={epochs}" if epochs != 8 else ""
    from imcsim.training.data import load_digits
    data = load_digits()                    # the split's sizes come from the data, not by hand
    lines = ["# Training results on digits (issue 3)", "",
             f"Small CNN (16C-32C-MP-64C-MP-128FC-10FC, first and last layer FP32), scikit-learn "
             f"digits ({data.n_train} train / {data.n_test} test, 8x8), {epochs} epochs, batch "
             f"{first['batch_size']}, SGD momentum {first['momentum']}, lr {first['lr']} "
             f"{first['schedule']}, weight decay {first['weight_decay']}; seeds {seeds}.",
             f"Reproduce: `imcsim sweep {SPEC}{sets}` (Dask, one worker per core; "
             f"docs/cluster.md), then `python scripts/training_results.py"
             f"{' --out ' + shlex.quote(str(out)) if str(out) != 'runs/results' else ''}`.", "",
             LAW_NOTE, "",
             "| config | MVM mapping | test accuracy (mean +/- std) | per seed | "
             "training seconds / run |",
             "|---|---|---|---|---|"]
    for key, (label, recs) in rows.items():
        if not recs:
            lines.append(f"| ({key}) | {label} | failed | - | - |")
            continue
        accs = [r["result"]["test_acc"] for r in recs]
        times = [r["result"]["train_seconds"] for r in recs]
        lines.append(f"| ({key}) | {label} | {100 * np.mean(accs):.2f} % +/- "
                     f"{100 * np.std(accs):.2f} | {', '.join(f'{100 * a:.1f}' for a in accs)} | "
                     f"{np.mean(times):.0f} |")
    lines += ["", "## Emulator statistics (last epoch, seed of the first run)", ""]
    for key, (_label, recs) in rows.items():
        if not recs:
            continue
        last = recs[0]["result"]
        stats = {k: v for k, v in last.items() if any(s in k for s in ("share", "clip", "plane"))}
        if stats:
            lines.append(f"- ({key}) {json.dumps(stats)}")
    if rows.get("c", (None, []))[1]:
        c_hist = history(out, rows["c"][1][0])
        share = [round(h.get("backward_high_vref_share", 0.0), 4) for h in c_hist]
        fshare = [round(h.get("forward_high_vref_share", 0.0), 4) for h in c_hist]
        lines += ["", f"(c) high-Vref share per epoch, backward (Fig. 8b): {share}; "
                  f"forward: {fshare}", ""]
    lines += ANALYSIS
    lines += vgg_section(VGG_RESULTS)
    lines += kept_sections(doc_path)
    write_text_atomic(doc_path, "\n".join(lines) + "\n", "--doc")
    print("\n".join(lines))


def vgg_section(path):
    """The VGG-lite-on-digits32 table from the device run recorded in ``path``."""
    doc = json.loads(Path(path).read_text())
    cfgs = doc["configs"]
    epochs = max(len(c["history"]) for c in cfgs.values())
    lines = ["## VGG-lite, the paper's layer sizes, on digits32 (issue 11)", "",
             doc["description"], "",
             f"Machine: {doc['machine']}. Code: {doc['code']}.",
             f"Command: `{doc['command']}`.", "",
             "| config | MVM mapping | " + " | ".join(f"epoch {e}" for e in range(1, epochs + 1))
             + " |", "|---|---|" + "---|" * epochs]
    for key, c in cfgs.items():
        accs = [f"{100 * h[1]:.1f} %" for h in c["history"]]
        accs += ["-"] * (epochs - len(accs))
        lines.append(f"| ({key}) | {c['label']} | " + " | ".join(accs) + " |")
    lines.append("")
    for key, why in doc.get("not_run", {}).items():
        lines.append(f"- ({key}): {why}.")
    share = cfgs["c"].get("backward_high_vref_share")
    if share:
        lines += [f"- (c) backward MVM, share of conversions at the high level per epoch: "
                  f"{', '.join(f'{100 * s:.1f} %' for s in share)}; forward: "
                  f"{cfgs['c']['forward_high_vref_share_note']}."]
    lines += ["", *VGG_ANALYSIS, ""]
    return lines


def kept_sections(doc_path):
    """Sections of the current page that other scripts wrote (``KEPT_SECTIONS``), verbatim."""
    path = Path(doc_path)
    if not path.exists():
        return []
    text = path.read_text()
    starts = [text.find(h) for h in KEPT_SECTIONS if h in text]
    return [text[min(starts):].rstrip("\n")] if starts else []


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/results",
                    help="The sweep's output folder (its results.json and run folders; "
                         "relative to the current folder, as imcsim sweep takes it).")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "results.md"),
                    help="The page to write (default the repository's docs/results.md).")
    return ap


def main(argv=None) -> int:
    """Write the page; 2 and one line on stderr when the results or --doc are unusable
    (--doc then left as it was)."""
    args = parser().parse_args(argv)
    try:
        write_doc(args.out, args.doc)
    except (ValueError, OSError) as exc:
        line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()),
                    type(exc).__name__)
        print(f"Error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
