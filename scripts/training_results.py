"""Reproduce the training comparison of issue 3 on scikit-learn's digits; writes docs/results.md.

Configurations (small CNN, same epochs, mean and std over seeds):
  (a)  FP32 baseline;
  (b)  all three MVMs on IMC, variable Vref;
  (c)  forward and backward on IMC, dual Vref 0.8 V / 0.089 V (F = 2304 / 255 rows),
       weight update exact-quantized;
  (c') as (c) with the high level matched to this CNN's layers (F = 576 rows, 0.2 V);
  (d)  Banner et al. 8-bit integer training, forward and backward on IMC under the 8-bit ADC
       at full scale 2304, weight update FP32 (the paper's Fig. 3 foil);
  (d0) the same 8-bit scheme with exact MVMs (no ADC), to separate scheme from ADC.
Run:  python scripts/training_results.py [--epochs 8] [--seeds 0 1 2] [--out runs/results]
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from imcsim.training.engine import TrainConfig, Trainer

IMC3 = (("forward", "imc"), ("backward", "imc"), ("update", "imc"))
FWD_BWD = (("forward", "imc"), ("backward", "imc"), ("update", "exact"))
FWD_BWD_FP32_UPD = (("forward", "imc"), ("backward", "imc"), ("update", "fp32"))
FP32 = (("forward", "fp32"), ("backward", "fp32"), ("update", "fp32"))
EXACT_FWD_BWD = (("forward", "exact"), ("backward", "exact"), ("update", "fp32"))


def vref(fwd, bwd, upd="variable"):
    return (("forward", fwd), ("backward", bwd), ("update", upd))


CONFIGS = {
    "a": ("FP32", dict(backends=FP32)),
    "b": ("all three MVMs on IMC, variable Vref", dict(backends=IMC3)),
    "c": ("forward + backward on IMC, dual Vref 0.8 V / 0.089 V",
          dict(backends=FWD_BWD, vref=vref("dual:255:2304", "dual:255:2304"))),
    "c'": ("forward + backward on IMC, dual Vref 0.2 V / 0.089 V",
           dict(backends=FWD_BWD, vref=vref("dual:255:576", "dual:255:576"))),
    "d": ("8-bit integer (Banner), fwd + bwd on IMC, fixed F = 2304",
          dict(backends=FWD_BWD_FP32_UPD, scheme="int8", vref=vref("fixed:2304", "fixed:2304"))),
    "d0": ("8-bit integer (Banner), exact MVMs (no ADC)",
           dict(backends=EXACT_FWD_BWD, scheme="int8")),
}


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


def previous_run(run_dir, cfg, epochs):
    """The history of a finished run with the same configuration in run_dir, else None."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    doc["config"].setdefault("device", "cpu")          # runs from before TrainConfig.device
    if doc["config"] != json.loads(cfg.to_json()) or len(doc["history"]) != epochs:
        return None
    return doc["history"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/results")
    ap.add_argument("--doc", default="docs/results.md")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: train on the GPU (see docs/training.md, 'CPU and GPU')")
    args = ap.parse_args()
    rows = {}
    for key, (label, kw) in CONFIGS.items():
        accs, times, extra = [], [], []
        for seed in args.seeds:
            cfg = TrainConfig(model="small-cnn", epochs=args.epochs, batch_size=64, lr=0.05,
                              seed=seed, device=args.device, **kw)
            run_dir = Path(args.out) / f"{key}-seed{seed}"
            hist = previous_run(run_dir, cfg, args.epochs)
            if hist is None:
                t0 = time.perf_counter()
                hist = Trainer(cfg, run_dir, progress=False).run()
                times.append(time.perf_counter() - t0)
            else:
                times.append(sum(h["seconds"] for h in hist))
            accs.append(hist[-1]["test_acc"])
            extra.append(hist)
            print(f"({key}) seed {seed}: test accuracy {accs[-1]:.4f} ({times[-1]:.0f} s)",
                  flush=True)
        rows[key] = (label, accs, times, extra)
    write_doc(args, rows)


def write_doc(args, rows):
    lines = ["# Training results on digits (issue 3)", "",
             f"Small CNN (16C-32C-MP-64C-MP-128FC-10FC, first and last layer FP32), scikit-learn "
             f"digits (1437 train / 360 test, 8x8), {args.epochs} epochs, batch 64, SGD momentum "
             f"0.9, lr 0.05 cosine, weight decay 5e-4; seeds {args.seeds}.",
             "Reproduce: `python scripts/training_results.py --epochs "
             f"{args.epochs} --seeds {' '.join(map(str, args.seeds))}`.", "",
             "| config | MVM mapping | test accuracy (mean +/- std) | per seed | training seconds / run |",
             "|---|---|---|---|---|"]
    for key, (label, accs, times, _) in rows.items():
        lines.append(f"| ({key}) | {label} | {100 * np.mean(accs):.2f} % +/- "
                     f"{100 * np.std(accs):.2f} | {', '.join(f'{100 * a:.1f}' for a in accs)} | "
                     f"{np.mean(times):.0f} |")
    lines += ["", "## Emulator statistics (last epoch, seed of the first run)", ""]
    for key, (_label, _, _, hists) in rows.items():
        last = hists[0][-1]
        stats = {k: v for k, v in last.items() if any(s in k for s in ("share", "clip", "plane"))}
        if stats:
            lines.append(f"- ({key}) {json.dumps(stats)}")
    c_hist = rows.get("c", (None, None, None, [[]]))[3][0]
    share = [round(h.get("backward_high_vref_share", 0.0), 4) for h in c_hist]
    fshare = [round(h.get("forward_high_vref_share", 0.0), 4) for h in c_hist]
    lines += ["", f"(c) high-Vref share per epoch, backward (Fig. 8b): {share}; "
              f"forward: {fshare}", ""]
    lines += ANALYSIS
    Path(args.doc).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
