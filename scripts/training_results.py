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
"""
import argparse
import json
import shlex
from pathlib import Path

import numpy as np

from imcsim.atomic import write_text_atomic
from imcsim.sweep import read_table

SPEC = "scripts/digits_results.sweep.json"

ANALYSIS = [
    "## What the numbers say, and why they differ from the paper where they do",
    "",
    "- (b) vs (a): all three training MVMs through the bit-accurate macro with variable Vref "
    "stay within about a point of FP32, as the paper finds for VGG-lite (Table III). Variable "
    "Vref sets F = max(active rows, 255), so every conversion of this small CNN (inner "
    "dimensions 144 to 576) keeps at least 255 codes for its reachable range.",
    "- (c) loses far more than the paper's 89.89 % vs 92.87 %. The cause is the forward MVM: "
    "conv3 (288 rows) and fc4 (256 rows) have more active rows than the low level's 255, so "
    "they take the 0.8 V level (F = 2304; 36 % of forward conversions) and one ADC code spans "
    "9 rows: the reachable range of a 288-row column uses 32 of the 256 codes (conv2, 144 "
    "rows, stays on the lossless low level). In VGG-lite the hidden layers have 1152 to "
    "2304 rows per column, so the 0.8 V level fits them. With the high level matched to this "
    "CNN (c', 0.2 V = 576 rows) forward + backward on IMC is back within a couple of points "
    "of FP32. The backward MVM is not the problem: its radix-4 planes rarely exceed 255 active "
    "rows, so almost every backward conversion uses the lossless 0.089 V level (the "
    "high-Vref share above; the paper reports 4-10 % on CIFAR-10's larger layers).",
    "- (d) collapses, as in Fig. 3: every plane of an 8-bit Eq. 1 operand is a dense +/-1 "
    "vector (no masks: 331 active rows per backward cycle on average, against 3 to 29 per "
    "radix-4 plane), so each column count sits near half the active rows and an LSB of 9 rows "
    "at F = 2304 resolves its variation into a handful of codes, in the forward and in the "
    "backward MVM. (d0), the same 8-bit scheme with exact MVMs, trains normally, so the loss "
    "is the ADC's, not the quantization scheme's.",
    "",
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
    """The per-epoch metrics of one run (its folder's metrics.json)."""
    return json.loads((Path(out) / rec["name"] / "metrics.json").read_text())["history"]


def write_doc(out, doc_path):
    table = read_table(out)
    rows = group_runs(table)
    first = table["runs"][0]["params"]
    seeds = sorted({rec["grid"]["seed"] for rec in table["runs"]})
    epochs = first["epochs"]
    sets = f" --set epochs={epochs}" if epochs != 8 else ""
    lines = ["# Training results on digits (issue 3)", "",
             f"Small CNN (16C-32C-MP-64C-MP-128FC-10FC, first and last layer FP32), scikit-learn "
             f"digits (1437 train / 360 test, 8x8), {epochs} epochs, batch "
             f"{first['batch_size']}, SGD momentum {first['momentum']}, lr {first['lr']} "
             f"{first['schedule']}, weight decay {first['weight_decay']}; seeds {seeds}.",
             f"Reproduce: `imcsim sweep {SPEC}{sets}` (Dask, one worker per core; "
             f"docs/cluster.md), then `python scripts/training_results.py"
             f"{' --out ' + shlex.quote(str(out)) if str(out) != 'runs/results' else ''}`.", "",
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
    write_text_atomic(doc_path, "\n".join(lines) + "\n", "--doc")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/results",
                    help="The sweep's output folder (its results.json and run folders).")
    ap.add_argument("--doc", default="docs/results.md")
    args = ap.parse_args()
    write_doc(args.out, args.doc)


if __name__ == "__main__":
    main()
