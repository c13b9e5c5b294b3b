"""``imcsim train``: exact training with every chosen MVM on the emulated macro, on the CPU or a
CUDA GPU (``--device cuda``)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from imcsim.cli.common import cli_errors

_BACKEND = click.Choice(["fp32", "exact", "imc"])


@click.command("train")
@click.option("--model", default="small-cnn", show_default=True,
              type=click.Choice(["mlp", "small-cnn", "vgg-lite", "resnet-18"]))
@click.option("--data", "dataset", default="digits", show_default=True,
              type=click.Choice(["digits", "digits32", "cifar10", "mnist"]),
              help="digits ships with scikit-learn (digits32: the same as 32x32x3 images, "
                   "for CIFAR-sized models); cifar10/mnist read --data-folder.")
@click.option("--data-folder", type=click.Path(file_okay=False),
              help="Folder with the CIFAR-10 python batches or the MNIST IDX files.")
@click.option("--epochs", default=10, show_default=True, type=int)
@click.option("--batch", "batch_size", default=64, show_default=True, type=int)
@click.option("--lr", default=0.05, show_default=True, type=float)
@click.option("--momentum", default=0.9, show_default=True, type=float)
@click.option("--weight-decay", default=5e-4, show_default=True, type=float)
@click.option("--schedule", default="cosine", show_default=True,
              type=click.Choice(["constant", "step", "cosine"]))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--scheme", default="radix4", show_default=True, type=click.Choice(["radix4", "int8"]),
              help="radix4: PACT/SAWB/radix-4 (Sun et al.); int8: Banner et al. (Fig. 3 foil).")
@click.option("--imc", "imc_kinds", default="", show_default=True,
              help="MVM kinds on the IMC emulator, e.g. forward,backward,update (or 'all').")
@click.option("--other", default=None, type=_BACKEND,
              help="Backend of the hidden layers' MVM kinds not on IMC [default: exact, or "
                   "fp32 when --imc is empty; --other exact with no --imc runs every MVM "
                   "exact-quantized].")
@click.option("--vref", "vref_specs", multiple=True,
              help="ADC reference: variable, fixed[:F], fixed:matched or "
                   "dual[:LOW:HIGH][:column] (rows, or level units with --input-mapping "
                   "multi-level) for every kind, or KIND=SPEC per kind, comma-separated or "
                   "repeated (the grammar of imcsim energy); e.g. --vref "
                   "backward=dual:255:2304.  [default: variable]")
@click.option("--preset", default="paper", show_default=True,
              help="Macro preset (data/presets): paper or paper-nonideal.")
@click.option("--skip-masked-cycles", is_flag=True,
              help="The controller skips array cycles whose rows are all masked (no cycle, "
                   "no conversions, no NMC term); see docs/hardware-model.md.")
@click.option("--first-last-on-imc", is_flag=True, help="Also map the first and last layers.")
@click.option("--augment", is_flag=True, help="Random crop and flip (CIFAR).")
@click.option("--max-steps", "max_steps_per_epoch", type=int, help="Cap steps per epoch.")
@click.option("--trace", "trace_spec",
              help="LAYER:KIND:STEP:FILE.h5 — trace that one MVM through the cycle-level path.")
@click.option("--out", "out_dir", default="runs/train", show_default=True,
              type=click.Path(file_okay=False), help="Metrics, checkpoint and curves go here.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.npz.")
@click.option("--force", is_flag=True,
              help="Replace the run OUT already holds (without it, a folder with a run's "
                   "checkpoint or metrics is refused unless --resume).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="cuda: data, weights, activations and gradients on the GPU (CuPy; the "
                   "'gpu' extra); see docs/training.md for what matches the CPU bit for bit.")
@click.option("--update-rule", default="requantize", show_default=True,
              type=click.Choice(["requantize", "threshold"]),
              help="requantize: SAWB re-quantizes the FP32 weights every step; threshold: the "
                   "array keeps integer weights, a 32-bit register per weight accumulates the "
                   "updates and a weight is rewritten when its register reaches "
                   "--update-threshold LSBs. See docs/training.md, Weight-update rules.")
@click.option("--update-threshold", type=int,
              help="T of --update-rule threshold, in LSBs of the stored weight: an integer in "
                   "1..16 (radix4; 1..128 with --scheme int8).  [default: 1]")
@click.option("--input-mapping", default="one-hot", show_default=True,
              type=click.Choice(["one-hot", "multi-level"]),
              help="How streamed operands drive the rows on IMC: one-hot binary rows (the "
                   "paper's macro) or multi-level (a 3-bit row DAC: radix-4 gradients two "
                   "exponents per cycle as levels 0/1/4, binary activations as signed 3-bit "
                   "digits). See docs/training.md, Multi-level row inputs.")
@click.option("--adc-rounding", type=click.Choice(["floor", "half_up"]),
              help="ADC law of the run's macro, over the preset's: floor (the paper's "
                   "formula) or half_up (a rounding quantizer: thresholds half an LSB lower). "
                   "See docs/hardware-model.md, the ADC law.  [default: the preset's; the "
                   "shipped presets: half_up]")
@click.option("--calibrate-offsets", is_flag=True,
              help="Measure the chip's mean ADC code error per column (ramps at F = L and "
                   "F = rows) and let the NMC subtract it from every code: the calibrated "
                   "chip. See docs/training.md, Noise budgets.")
@click.option("--chip-pool", default=0, show_default=True, type=click.IntRange(min=0),
              help="Hardware-aware training: run each step's IMC MVMs on another of N chips "
                   "of the macro (fresh mismatch per chip, fresh noise per step); 0: the one "
                   "chip. Not with --calibrate-offsets. See docs/training.md, Noise budgets.")
@click.option("--diagnostic-steps", default=2, show_default=True, type=click.IntRange(min=0),
              help="Steps per epoch (chosen by the seed) whose emulator MVMs are compared "
                   "with the exact product (bias, RMS error, cosine, SNR, lossy and clipped "
                   "shares in metrics.json; imcsim report RUN prints them). 0: off.")
@click.option("--noise-scale", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Multiply the preset's non-idealities (those of --noise-scaled) by this "
                   "factor (0: the ideal macro).")
@click.option("--noise-scaled", default="all", show_default=True,
              help="Which non-idealities --noise-scale scales: all, noise (comparator and "
                   "sampling noise), mismatch (static per-chip errors) or one "
                   "NonIdealityConfig field, e.g. comparator_noise_sigma.")
@click.option("--reproducible", is_flag=True,
              help="Bit-identical weights on any x86-64 CPU, BLAS and thread count: FP32 "
                   "products, float sums and the loss in a fixed order (CPU only; slower "
                   "FP32 layers). See docs/training.md, Reproducibility.")
@cli_errors
def train_command(imc_kinds, other, vref_specs, trace_spec, out_dir, resume, force, quiet,
                  update_threshold, **kw):
    """Train a model; chosen MVMs run on the emulated IMC macro (CPU or CUDA GPU)."""
    from imcsim.calibration.montecarlo import trainer_for
    from imcsim.training.backends import scheme_by_name
    from imcsim.training.options import backends_for, train_config
    from imcsim.training.rundir import CHECKPOINT_NAME, METRICS_NAME
    from imcsim.training.xp import array_module
    array_module(kw["device"])                  # without CuPy or a GPU: one line, exit 2
    if update_threshold is not None:
        if kw["update_rule"] != "threshold":
            raise ValueError("--update-threshold: applies to --update-rule threshold only")
        level = scheme_by_name(kw["scheme"]).weight.max_value
        if not 1 <= update_threshold <= 2 * level:
            raise ValueError(f"--update-threshold: expected an integer number of LSBs in "
                             f"1..{2 * level} (the {kw['scheme']} weights span "
                             f"-{level}..{level}), got {update_threshold}")
        kw["update_threshold"] = update_threshold
    trace = None
    if trace_spec:
        parts = trace_spec.split(":", 3)
        if len(parts) != 4 or not all(p.strip() for p in parts):
            raise ValueError(f"--trace: expected LAYER:KIND:STEP:FILE, got {trace_spec!r}")
        if not parts[2].strip().isdigit():
            raise ValueError(f"--trace: STEP must be an integer >= 0, got {parts[2]!r}")
        trace = (parts[0], parts[1], int(parts[2]), parts[3])
    if kw["update_rule"] == "threshold" and dict(backends_for(imc_kinds, other))["forward"] == "fp32":
        raise ValueError("--update-rule: threshold needs integer weights on the array: run the "
                         "forward MVM on the emulator (--imc forward, or all) or on an exact "
                         "backend (--imc with --other exact)")
    # the same front door as a sweep's train keys (imcsim.training.options)
    config = train_config(dict(kw, imc=imc_kinds, other=other, vref=list(vref_specs),
                               trace=trace))
    if resume and force:
        raise ValueError("--resume and --force: give one of them")
    held = [name for name in (CHECKPOINT_NAME, METRICS_NAME) if (Path(out_dir) / name).exists()]
    if held and not (resume or force):
        raise ValueError(f"--out: {out_dir} already holds a run ({', '.join(held)}); continue "
                         "it with --resume, or replace it with --force")
    trainer = trainer_for(config, Path(out_dir), progress=not quiet)   # plain or hardware-aware
    history = trainer.run(resume=resume)
    last = history[-1] if history else {}
    click.echo(json.dumps({"final": {k: v for k, v in last.items()
                                     if not isinstance(v, (list, dict))},
                           "out": str(out_dir)}))


@click.command("report")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--epoch", type=click.IntRange(min=1), help="1-based epoch [default: the last].")
@click.option("--json", "as_json", is_flag=True, help="The epoch's records as JSON.")
@cli_errors
def report_command(run, epoch, as_json):
    """Per-MVM error diagnostics of a training run: each emulator MVM against the exact
    product (bias and RMS error over the exact output's RMS, cosine, SNR, lossy and clipped
    conversion shares), per layer and MVM kind."""
    from imcsim.training.rundir import diagnostics_table, read_metrics
    doc = read_metrics(run)
    text = diagnostics_table(doc, epoch)
    if as_json:
        rows = [r for r in doc["history"] if r.get("mvm_error")]
        row = rows[-1] if epoch is None else next(r for r in rows if r.get("epoch") == epoch)
        click.echo(json.dumps({"epoch": row["epoch"], "mvm_error": row["mvm_error"]}, indent=1))
    else:
        click.echo(text)
