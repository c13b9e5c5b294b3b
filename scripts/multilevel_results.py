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
The sweeps' output folders are where ``imcsim sweep`` wrote them (relative to the current
folder, as the sweep takes them); --doc and --plot default to the repository's files,
whatever the current folder.  Every config of the table needs a finished run (ok, or stopped
by the engine): otherwise the script names the missing results in one line, exits with status
2 and leaves --doc and --plot as they were (a table of "not run" rows would replace the
measured one).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from imcsim.atomic import AtomicOutputs
from imcsim.energy import energy_report, load_energy_preset
from imcsim.optional import MissingDependency
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
    """The per-epoch metrics of one run (ValueError naming its metrics.json if unreadable)."""
    path = folder / "metrics.json"
    try:
        return json.loads(path.read_text())["history"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable run's metrics ({type(exc).__name__})") from None


def spec_out(spec: str) -> Path:
    """The output folder a sweep file names (as ``imcsim sweep`` takes it: relative to the
    current folder)."""
    return Path(json.loads(Path(spec).read_text())["out"])


def spec_name(spec: str) -> str:
    """A sweep file as the repository names it (scripts/NAME), for messages."""
    path = Path(spec)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def finished_runs(sources: list) -> dict:
    """{config: [run records with their folder]} of every finished run (status ok, or failed:
    stopped by the engine) of the sweeps ``sources`` ((sweep file, output folder) pairs).

    Raises ValueError, one line, when a config of :data:`CONFIG_ORDER` has no finished run:
    it names those configs, the results file each one's sweep should have written, and the
    command that (re)runs it.
    """
    by_cfg, missing = {}, []
    for spec, out in sources:
        configs = list(json.loads(Path(spec).read_text())["configs"])
        table = Path(out) / "results.json"
        if table.is_file():
            for r in read_table(out)["runs"]:
                if r.get("status") in ("ok", "failed"):
                    by_cfg.setdefault(r["config"], []).append(dict(r, folder=Path(out) / r["name"]))
            why = f"not finished in {table}"
        else:
            why = f"{table} missing"
        absent = [c for c in CONFIG_ORDER if c in configs and c not in by_cfg]
        if absent:
            missing.append(f"{', '.join(absent)} ({why}; run imcsim sweep {spec_name(spec)})")
    if missing:
        raise ValueError(f"no finished runs of {'; '.join(missing)}")
    return by_cfg


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


def accuracy_table(by_cfg: dict) -> tuple[list, dict]:
    """The accuracy table's lines and each config's accuracy curves (epochs x seeds), from
    :func:`finished_runs` (which guarantees a run of every config)."""
    lines = ["| config | test accuracy (mean ± std, seeds) | array cycles / step | "
             "ADC conversions / step |", "|---|---|---|---|"]
    curves = {}
    for cfg in CONFIG_ORDER:
        runs = by_cfg[cfg]
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


def curves_figure(curves: dict):
    """The accuracy curves as a matplotlib figure (MissingDependency without matplotlib)."""
    from imcsim.plotting import pyplot
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
    return fig, plt


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(spec_out(SPEC)),
                    help="output folder of scripts/multilevel_results.sweep.json (default its "
                         "'out', relative to the current folder as imcsim sweep takes it)")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "training.md"),
                    help="the page whose multilevel block is rewritten (default the "
                         "repository's docs/training.md)")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "multilevel-accuracy.png"),
                    help="accuracy curves (PNG; '' for none; default the repository's "
                         "docs/multilevel-accuracy.png)")
    return ap


def doc_parts(path: Path) -> tuple[str, str]:
    """The page's text before and after its multilevel block (ValueError naming --doc)."""
    try:
        doc = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise ValueError(f"--doc: cannot read {path} ({why})") from None
    if BEGIN not in doc or END not in doc.split(BEGIN, 1)[1]:
        raise ValueError(f"--doc: {path} has no multilevel results block (its markers)")
    head, rest = doc.split(BEGIN, 1)
    return head, rest.split(END, 1)[1]


def write_outputs(doc: Path, text: str, plot: Path | None, fig) -> None:
    """The page and the plot (when ``fig`` is a figure), all-or-nothing together."""
    with AtomicOutputs(doc, plot if fig is not None else None,
                       names=["--doc", "--plot"]) as outputs:
        with outputs.writing(doc) as tmp:
            tmp.write_text(text)
        if fig is not None:
            with outputs.writing(plot) as tmp:
                fig.savefig(tmp, dpi=120, format="png")


def main(argv=None) -> int:
    """Write the block; 2 and one line on stderr when the results or the outputs are unusable
    (nothing written then)."""
    args = parser().parse_args(argv)
    try:
        write_block(Path(args.doc), Path(args.out), Path(args.plot) if args.plot else None)
    except (ValueError, OSError, MissingDependency) as exc:
        line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()),
                    type(exc).__name__)
        print(f"Error: {line}", file=sys.stderr)
        return 2
    return 0


def write_block(doc_path: Path, out: Path, plot_path: Path | None) -> None:
    """Check the inputs and outputs, build the block, write --doc and --plot."""
    # every check before the MVMs and energy reports below, so a refusal is immediate
    head, tail = doc_parts(doc_path)
    AtomicOutputs(doc_path, plot_path, names=["--doc", "--plot"])     # folders, same file
    by_cfg = finished_runs([(SPEC, out)] + [(spec, spec_out(spec)) for spec in EXTRA_SPECS])
    acc_lines, curves = accuracy_table(by_cfg)
    fig = plt = None
    if curves and plot_path is not None:
        fig, plt = curves_figure(curves)
    try:
        block = results_block(acc_lines)
        write_outputs(doc_path, head + "\n".join(block) + tail, plot_path, fig)
    finally:
        if fig is not None:
            plt.close(fig)
    print("\n".join(block))


def results_block(acc_lines: list) -> list:
    """The lines of the block, markers included."""
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
             "hidden layers on IMC unless the row says otherwise, variable Vref, the "
             "floor ADC law unless the row says half-up (the presets' law when these ran; "
             "the sweep files name it); "
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
    return block


if __name__ == "__main__":
    sys.exit(main())
