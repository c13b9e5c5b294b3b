"""Write the multi-level results block of docs/training.md (issue 13, part 1).

Two parts:
- accuracy: the sweep scripts/multilevel_results.sweep.json (small CNN on digits, all three
  MVMs on IMC, variable Vref, one-hot against multi-level rows, ideal and paper-nonideal
  macros x 3 seeds), with the array cycles and conversions per training step that the runs
  measured;
- VGG-lite at batch 128 (the paper's network and batch): cycles, conversions, DAC events
  and IMC energy per training step from the analytic energy model, one-hot against
  multi-level, and the DAC energy per drive at which multi-level would stop saving energy.
Run:
  NUMBA_NUM_THREADS=1 imcsim sweep scripts/multilevel_results.sweep.json --workers 2
  NUMBA_NUM_THREADS=1 imcsim sweep scripts/multilevel_dac.sweep.json --workers 2
  NUMBA_NUM_THREADS=1 imcsim sweep scripts/multilevel_forward.sweep.json --workers 2
  NUMBA_NUM_THREADS=1 imcsim sweep scripts/multilevel_halfup.sweep.json --workers 2
  python scripts/multilevel_results.py [--out runs/multilevel] [--doc docs/training.md]
         [--plot docs/multilevel-accuracy.png]
"""
import argparse
import json
from pathlib import Path

import numpy as np

from imcsim.atomic import write_text_atomic
from imcsim.energy import energy_report, load_energy_preset
from imcsim.sweep import read_table

ROOT = Path(__file__).resolve().parents[1]      # paths work from any folder
SPEC = str(ROOT / "scripts" / "multilevel_results.sweep.json")
#: the row-DAC mismatch runs (a preset outside the package: scripts/presets), and the runs
#: with only the forward MVM on IMC
EXTRA_SPECS = tuple(str(ROOT / "scripts" / name) for name in (
    "multilevel_dac.sweep.json", "multilevel_forward.sweep.json", "multilevel_halfup.sweep.json"))
BEGIN = "<!-- multilevel results: begin (scripts/multilevel_results.py writes this block) -->"
END = "<!-- multilevel results: end -->"
CONFIG_ORDER = ("onehot-ideal", "multi-ideal", "onehot-nonideal", "multi-nonideal",
                "multi-nonideal-dac", "onehot-nonideal-fwd", "multi-nonideal-fwd",
                "onehot-nonideal-halfup", "multi-nonideal-halfup")


def run_history(folder: Path) -> list:
    return json.loads((folder / "metrics.json").read_text())["history"]


def step_counts(history: list) -> dict:
    """Array cycles and conversions per training step of a run's last epoch (all layers and
    MVM kinds on IMC), and the DAC events where the run recorded them."""
    last = history[-1]
    steps = last["steps"]
    out = dict.fromkeys(("array_cycles", "adc_conversions", "dac_row_drives",
                         "dac_level_sum"), 0.0)
    for kinds in last["mvm_stats"].values():
        for rec in kinds.values():
            for key in out:
                out[key] += rec.get(key, 0) / steps
    return out


def accuracy_table(outs: list) -> tuple[list, dict]:
    by_cfg = {}
    for out in outs:
        if not (out / "results.json").is_file():
            continue
        for r in read_table(out)["runs"]:
            if r.get("status") in ("ok", "failed"):
                by_cfg.setdefault(r["config"], []).append(dict(r, folder=out / r["name"]))
    lines = ["| config | test accuracy (mean ± std, seeds) | array cycles / step | "
             "ADC conversions / step |", "|---|---|---|---|"]
    curves = {}
    for cfg in CONFIG_ORDER:
        runs = by_cfg.get(cfg, [])
        if not runs:
            lines.append(f"| {cfg} | not run | | |")
            continue
        failed = [r for r in runs if r["status"] == "failed"]
        if failed:
            # a run the engine stopped (diverged training): say so, with the epochs it
            # completed and their last accuracy
            done = [run_history(r["folder"]) for r in failed]
            counts = [step_counts(h) for h in done if h]
            last = [100.0 * h[-1]["test_acc"] for h in done if h]
            # "TrainingDiverged: training diverged: conv3.alpha (PACT clip) = -774 ..." ->
            # "conv3.alpha (PACT clip) below 0"; other errors: their first clause
            errors = sorted({str(r["error"]).split("training diverged: ")[-1].split(" = ")[0]
                             .split(",")[0].replace("(PACT clip)", "(PACT clip) below 0")
                             for r in failed})
            lines.append(f"| {runs[0].get('label', cfg)} | diverged in {len(failed)} of "
                         f"{len(runs)} runs after {min(map(len, done))}-{max(map(len, done))} "
                         f"epochs ({'; '.join(errors)}), at {min(last):.1f}-"
                         f"{max(last):.1f} % "
                         f"| {np.mean([c['array_cycles'] for c in counts]):,.0f} | "
                         f"{np.mean([c['adc_conversions'] for c in counts]):,.0f} |")
            continue
        acc = np.array([100.0 * float(r["result"]["test_acc"]) for r in runs])
        histories = [run_history(r["folder"]) for r in runs]
        counts = [step_counts(h) for h in histories]
        curves[cfg] = np.array([[100.0 * h["test_acc"] for h in hist] for hist in histories])
        label = runs[0].get("label", cfg)
        lines.append(f"| {label} | {acc.mean():.2f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.2f} "
                     f"% ({len(acc)}) | {np.mean([c['array_cycles'] for c in counts]):,.0f} | "
                     f"{np.mean([c['adc_conversions'] for c in counts]):,.0f} |")
    return lines, curves


def adc_law_error_table() -> list:
    """Error of one radix-4 MVM under paper-nonideal against the exact product: the floor and
    the half-up ADC law, one-hot and multi-level rows (a seeded random 64 x 576 @ 576 x 64,
    30 % non-zero gradients, binary:5 weights, variable Vref)."""
    from dataclasses import replace

    from imcsim import BinaryFormat, Macro, Radix4Format
    from imcsim.config import Rounding, load_preset
    rng = np.random.default_rng(0)
    W = rng.integers(-8, 9, (576, 64))
    e = rng.integers(-3, 4, (64, 576))
    X = np.where(rng.random((64, 576)) < 0.3, rng.choice([-1.0, 1.0], (64, 576)) * 4.0 ** e,
                 0.0)
    exact = X @ W
    lines = ["| paper-nonideal, one 64 x 576 @ 576 x 64 radix-4 MVM | mean error | RMS error | "
             "mean abs(exact) |", "|---|---|---|---|"]
    for law in (Rounding.FLOOR, Rounding.HALF_UP):
        config = replace(load_preset("paper-nonideal"), adc_rounding=law, input_bits=3)
        for fmt in (Radix4Format(8), Radix4Format(8, 2)):
            err = Macro(config).mvm(X, W, fmt, BinaryFormat(5)).y - exact
            lines.append(f"| {law.value} ADC law, {fmt.spec()} | {err.mean():.1f} | "
                         f"{np.sqrt((err ** 2).mean()):.1f} | {np.abs(exact).mean():.1f} |")
    return lines


VGG_RUNS = Path("runs/multilevel-vgg")
#: the measured VGG-lite steps (2 training steps at batch 128 on digits32, all MVMs on IMC):
#:   imcsim train --model vgg-lite --data digits32 --imc all --epochs 1 --max-steps 2 \
#:       --batch 128 --input-mapping MAPPING --out runs/multilevel-vgg/MAPPING
VGG_COMMAND = ("imcsim train --model vgg-lite --data digits32 --imc all --epochs 1 "
               "--max-steps 2 --batch 128 --input-mapping MAPPING --out "
               "runs/multilevel-vgg/MAPPING")


def vgg_reports(preset) -> dict:
    """{(source, mapping): EnergyReport} of VGG-lite: analytic, and measured where the runs
    of VGG_COMMAND exist."""
    from imcsim.cli.energy import training_layers
    from imcsim.energy import load_run, run_energy
    out = {}
    for m in ("one-hot", "multi-level"):
        out[("analytic", m)] = energy_report("vgg-lite", 128, input_mapping=m, preset=preset)
        folder = VGG_RUNS / m
        if (folder / "metrics.json").is_file():
            run = load_run(folder)
            out[("measured", m)] = run_energy(run, training_layers("vgg-lite", "digits32"),
                                              preset=preset).epochs[-1].measured
    return out


def vgg_table(preset, reports, source) -> list:
    reports = {m: reports[(source, m)] for m in ("one-hot", "multi-level")}
    lines = [f"| per training step (VGG-lite, batch 128, {source}) | one-hot rows | "
             "multi-level rows | ratio |", "|---|---|---|---|"]

    def imc(rep, key, kinds=("forward", "backward", "update")):
        return sum(r[key] for r in rep.rows if r["device"] == "imc" and r["mvm"] in kinds)

    radix4_kinds = ("backward", "update")        # the MVMs that stream radix-4 gradients
    for key, label, scale, unit in (
            ("array_cycles", "array cycles of the radix-4 MVMs (backward + update)", 1e6, "M"),
            ("adc_conversions", "ADC conversions of the radix-4 MVMs", 1e9, "G"),
            ("imc_energy_j", "IMC energy of the radix-4 MVMs", 1e-3, "mJ")):
        a = imc(reports["one-hot"], key, radix4_kinds)
        b = imc(reports["multi-level"], key, radix4_kinds)
        lines.append(f"| {label} | {a / scale:.4g} {unit} | {b / scale:.4g} {unit} | "
                     f"{b / a:.3f} |")
    for key, label, scale, unit in (
            ("array_cycles", "array cycles, all three MVMs", 1e6, "M"),
            ("adc_conversions", "ADC conversions, all three MVMs", 1e9, "G"),
            ("dac_row_drives", "row-DAC drives", 1e9, "G"),
            ("e_adc_conversions", "ADC energy", 1e-3, "mJ"),
            ("e_bitcell_mults", "bit-cell energy", 1e-3, "mJ"),
            ("e_dac_row_drives", "row-DAC energy (assumed, drive part)", 1e-3, "mJ"),
            ("e_dac_level_sum", "row-DAC energy (assumed, level part)", 1e-3, "mJ"),
            ("imc_energy_j", "IMC energy", 1e-3, "mJ")):
        a, b = imc(reports["one-hot"], key), imc(reports["multi-level"], key)
        ratio = f"{b / a:.3f}" if a else "-"
        lines.append(f"| {label} | {a / scale:.4g} {unit} | {b / scale:.4g} {unit} | {ratio} |")
    # the DAC energy per drive (at the run's mean level) at which multi-level saves nothing
    dac = (imc(reports["multi-level"], "e_dac_row_drives")
           + imc(reports["multi-level"], "e_dac_level_sum"))
    saved = imc(reports["one-hot"], "imc_energy_j") - (imc(reports["multi-level"],
                                                           "imc_energy_j") - dac)
    drives = imc(reports["multi-level"], "dac_row_drives")
    mean_level = imc(reports["multi-level"], "dac_level_sum") / drives
    assumed = dac / drives
    lines.append("")
    lines.append(f"Break-even: multi-level rows save IMC energy as long as one row-DAC drive "
                 f"costs less than {saved / drives / 1e-15:.0f} fJ; the preset assumes "
                 f"{assumed / 1e-15:.1f} fJ ({preset.row_dac_drive_fj:g} fJ + "
                 f"{preset.row_dac_level_fj:g} fJ x the mean level {mean_level:.2f}).")
    return lines


def plot_curves(curves: dict, path: Path) -> None:
    from imcsim.plotting import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for cfg, acc in curves.items():
        epochs = np.arange(1, acc.shape[1] + 1)
        ax.errorbar(epochs, acc.mean(axis=0), yerr=acc.std(axis=0), label=cfg, capsize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy [%]")
    ax.set_title("small CNN on digits: one-hot vs multi-level rows (configs: docs/training.md)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=json.loads(Path(SPEC).read_text())["out"])
    ap.add_argument("--doc", default="docs/training.md")
    ap.add_argument("--plot", default="docs/multilevel-accuracy.png")
    args = ap.parse_args()
    acc_lines, curves = accuracy_table([Path(args.out)] + [
        Path(json.loads(Path(spec).read_text())["out"]) for spec in EXTRA_SPECS])
    preset = load_energy_preset()
    reports = vgg_reports(preset)
    measured = []
    if ("measured", "multi-level") in reports and ("measured", "one-hot") in reports:
        measured = ["", "**Measured on two VGG-lite training steps** (batch 128, digits32, all "
                    f"MVMs on IMC; `{VGG_COMMAND}`, then `imcsim energy --from-run`; the "
                    "first steps of training, whose activations after ReLU are sparse):", "",
                    *vgg_table(preset, reports, "measured")]
    block = [BEGIN, "",
             "**Accuracy on digits** (small CNN, 8 epochs, batch 64, all three MVMs of the "
             "hidden layers on IMC unless the row says otherwise, variable Vref; "
             "`imcsim sweep` of `scripts/multilevel_results.sweep.json`, "
             "`multilevel_dac.sweep.json`, `multilevel_forward.sweep.json` and "
             "`multilevel_halfup.sweep.json`, then "
             "`python scripts/multilevel_results.py`):", "", *acc_lines, "",
             "**Why paper-nonideal fails with all three MVMs on IMC**: the error of one "
             "backward-like MVM against the exact product (this script):", "",
             *adc_law_error_table(), "",
             "**Cost per training step on VGG-lite** (`imcsim energy --input-mapping "
             "one-hot|multi-level`: the analytic model at its default densities; row-DAC "
             "energies are the preset's assumptions, docs/energy.md 6):", "",
             *vgg_table(preset, reports, "analytic"), *measured, "", END]
    doc = Path(args.doc).read_text()
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    write_text_atomic(Path(args.doc), head + "\n".join(block) + tail)
    if curves and args.plot:
        plot_curves(curves, Path(args.plot))
    print("\n".join(block))


if __name__ == "__main__":
    main()
