"""Hardware-aware training on digits, evaluated on unseen Monte-Carlo chips (issue 12).

Three small CNNs (scikit-learn digits, the configuration of docs/results.md), the same epochs
and seed:
  fp32   all MVMs in FP32;
  ideal  the hidden layers' forward MVMs on the ideal emulated macro (``paper`` preset),
         backward and update in FP32;
  hwa    hardware-aware: the same, but every training step runs on another chip of the
         ``paper-nonideal`` family (a pool of chips, fresh noise per step).
Each is evaluated on the same unseen chips (``imcsim.calibration.montecarlo.evaluate_chips``)
at 0, 0.5, 1 and 2 x the preset's non-idealities.  Writes a JSON and a PNG (accuracy vs noise)
and replaces the hardware-aware section at the end of docs/results.md (between its markers;
``scripts/training_results.py`` rewrites that file, so run this one after it).

Run:  python scripts/hardware_aware_results.py [--epochs 8] [--chips 20] [--out runs/hwa]
"""
import argparse
import json
import time
from pathlib import Path

from imcsim import load_preset
from imcsim.atomic import write_text_atomic
from imcsim.calibration.montecarlo import evaluate_chips, hardware_aware_trainer, save_results
from imcsim.training.engine import TrainConfig, Trainer

BEGIN = "<!-- hardware-aware results: begin (scripts/hardware_aware_results.py) -->"
END = "<!-- hardware-aware results: end -->"
FWD_IMC = (("forward", "imc"), ("backward", "fp32"), ("update", "fp32"))
FP32 = (("forward", "fp32"), ("backward", "fp32"), ("update", "fp32"))
LABELS = {"fp32": "FP32-trained", "ideal": "ideal-IMC-trained",
          "hwa": "hardware-aware-trained (paper-nonideal chips)"}


def train(kind, out, epochs, seed, pool):
    cfg = TrainConfig(model="small-cnn", epochs=epochs, seed=seed,
                      backends=FP32 if kind == "fp32" else FWD_IMC,
                      preset="paper" if kind != "hwa" else "paper-nonideal")
    folder = Path(out) / kind
    t0 = time.perf_counter()
    if kind == "hwa":
        trainer = hardware_aware_trainer(cfg, folder, load_preset("paper-nonideal"), pool=pool,
                                         progress=False)
    else:
        trainer = Trainer(cfg, folder, progress=False)
    history = trainer.run()
    return folder, history[-1]["test_acc"], time.perf_counter() - t0


def section(levels, trained, args, test_samples) -> str:
    """The Markdown section; levels: {kind: [(factor, mean, std)]}, trained: {kind: test_acc}."""
    scales = [f for f, _, _ in next(iter(levels.values()))]
    # the FP32-trained model on the ideal macro (scale 0), quoted in the analysis
    fp32_ideal = next((m for f, m, _ in levels.get("fp32", []) if f == 0), float("nan"))
    lines = [BEGIN, "", "## Monte-Carlo chips and hardware-aware training (issue 12)", "",
             f"Small CNN on digits, {args.epochs} epochs, seed {args.seed}, batch 64, SGD "
             "momentum 0.9, lr 0.05 cosine; hidden layers' forward MVMs on the macro, backward "
             "and update in FP32, variable Vref.  Hardware-aware: every step on another chip of a "
             f"pool of {args.pool} `paper-nonideal` chips, fresh noise per step.  Evaluation: the "
             f"same {args.chips} unseen chips (chip seeds disjoint from the training pool) of "
             "`paper-nonideal` with every non-ideality scaled by the factor, mean +/- std over "
             f"chips of the test accuracy on the {test_samples} test digits "
             "(`imcsim eval`).  Reproduce: "
             f"`python scripts/hardware_aware_results.py --epochs {args.epochs} "
             f"--chips {args.chips}`.", "",
             "| model | end of training (its own training macro) | "
             + " | ".join(f"{s:g} x paper-nonideal" for s in scales) + " |",
             "|---|---|" + "---|" * len(scales)]
    for kind, lv in levels.items():
        cells = [f"{100 * m:.2f} % +/- {100 * sd:.2f}" for _, m, sd in lv]
        lines.append(f"| {LABELS[kind]} | {100 * trained[kind]:.2f} % | " + " | ".join(cells) + " |")
    lines += ["", "![accuracy versus non-ideality scale](hardware-aware-chips.png)", "",
              "- 0 x is the ideal macro (no chip to sample, so no spread); 2 x is twice every "
              "sigma of `paper-nonideal`.",
              "- Under the paper's floor ADC law an integer column count sits exactly on a code "
              "threshold whenever F = L (variable Vref: every cycle with at most 255 active rows), "
              "so any non-ideality, however small, drops about half the codes by one "
              "(data/presets/README.md): a systematic bias of about -1/2 LSB per conversion, on "
              "top of the noise. A model whose BatchNorm statistics were learned without it "
              "(FP32- or ideal-IMC-trained) loses most of its accuracy on every chip, and the loss "
              "hardly depends on the scale: the bias, not the size of the noise, breaks it.",
              "- The ideal macro differs from the exact quantized MVMs only where a conversion "
              "is lossy: conv3 (288 rows) and fc4 (256 rows) convert at F = A > L = 255, where "
              "the floor law also loses about 1/2 LSB on average.  The FP32-trained model's "
              f"statistics do not absorb that ({100 * fp32_ideal:.1f} % on the ideal macro "
              f"against its own {100 * trained['fp32']:.1f} % in FP32); training with the ideal "
              "macro in the loop does, but not the non-idealities.",
              "- Hardware-aware training sees the bias and the chip-to-chip spread in every step "
              "and keeps its accuracy on unseen chips at 0.5 to 2 x; it is the one model that "
              "expects the bias, so it is the one that loses a little on the ideal macro.  The "
              "half-up ADC law (`--adc-rounding half_up`) removes the bias at its source.",
              "", END, ""]
    return "\n".join(lines)


def write_section(doc, text):
    doc = Path(doc)
    old = doc.read_text() if doc.is_file() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        new = head.rstrip("\n") + "\n\n" + text + tail.lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    write_text_atomic(doc, new, "--doc")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--chips", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", type=int, default=64)
    ap.add_argument("--scales", default="0,0.5,1,2")
    ap.add_argument("--out", default="runs/hwa")
    ap.add_argument("--doc", default="docs/results.md")
    ap.add_argument("--plot", default="docs/hardware-aware-chips.png")
    ap.add_argument("--doc-only", action="store_true",
                    help="Rewrite the section from OUT/chips.json and OUT/trained.json.")
    args = ap.parse_args()
    out = Path(args.out)
    if args.doc_only:
        chips = json.loads((out / "chips.json").read_text())
        trained = {k: v["test_acc"] for k, v in json.loads((out / "trained.json").read_text()).items()}
        levels = {k: [(lv["factor"], lv["mean"], lv["std"]) for lv in chips[LABELS[k]]["levels"]]
                  for k in LABELS}
        samples = chips[LABELS["fp32"]]["test_samples"]
        write_section(args.doc, section(levels, trained, args, samples))
        return
    scales = [float(s) for s in args.scales.split(",")]
    chip_family = load_preset("paper-nonideal")
    trained, results = {}, {}
    for kind in ("fp32", "ideal", "hwa"):
        trained[kind] = train(kind, out, args.epochs, args.seed, args.pool)
        print(f"{kind}: trained in {trained[kind][2]:.0f} s, test accuracy {trained[kind][1]:.4f}",
              flush=True)
        results[kind] = evaluate_chips(trained[kind][0], chip_family, chips=args.chips,
                                       noise_scales=scales, seed=args.seed)
        print(results[kind].format(), flush=True)
    save_results({LABELS[k]: r for k, r in results.items()}, out / "chips.json", args.plot)
    (out / "trained.json").write_text(json.dumps(
        {k: {"folder": str(v[0]), "test_acc": v[1], "seconds": v[2]} for k, v in trained.items()},
        indent=1))
    levels = {k: [(lv.factor, lv.mean, lv.std) for lv in r.levels] for k, r in results.items()}
    write_section(args.doc, section(levels, {k: v[1] for k, v in trained.items()}, args,
                                    results["fp32"].test_samples))


if __name__ == "__main__":
    main()
