"""``imcsim noise-budget``: accuracy against noise scale, and the largest scale that trains
within 2 and 10 points of FP32 (``imcsim.training.budget``; docs/training.md, Noise budgets).

The click command object is ``budget_command``; the main CLI registers it as ``noise-budget``.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from imcsim.cli.common import MismatchFound, cli_errors
from imcsim.cli.sweep import _progress, local_mode, processes_option, scheduler_option


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated numbers, got {text!r}") from None


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated integers, got {text!r}") from None


@click.command("noise-budget")
@click.option("--model", default="small-cnn", show_default=True,
              type=click.Choice(["mlp", "small-cnn", "vgg-lite", "resnet-18"]))
@click.option("--data", "dataset", default="digits", show_default=True,
              type=click.Choice(["digits", "digits32", "cifar10", "mnist"]))
@click.option("--data-folder", type=click.Path(file_okay=False))
@click.option("--imc", "imc", default="all", show_default=True,
              help="MVM kinds on the emulator (as imcsim train --imc).")
@click.option("--preset", default="paper-nonideal", show_default=True,
              help="The macro whose non-idealities the ladder scales.")
@click.option("--adc-rounding", type=click.Choice(["floor", "half_up"]),
              help="ADC law over the preset's (as imcsim train).")
@click.option("--chip-pool", default=0, show_default=True, type=click.IntRange(min=0),
              help="Training method: 0 plain (one chip); N > 0 hardware-aware, each step on "
                   "another of N chips of the ladder's macro (as imcsim train --chip-pool).")
@click.option("--calibrate-offsets", is_flag=True,
              help="Every run on the calibrated chip: its measured mean code error per "
                   "column subtracted in the NMC (as imcsim train --calibrate-offsets).")
@click.option("--input-mapping", default="one-hot", show_default=True,
              type=click.Choice(["one-hot", "multi-level"]))
@click.option("--scales", default="0,0.125,0.25,0.5,1,2", show_default=True,
              help="The ladder: factors on the preset's non-idealities.")
@click.option("--scaled", default="all", show_default=True,
              help="Comma-separated ladders: all, noise, mismatch or NonIdealityConfig fields "
                   "(each scaled on its own, so the budget says which one matters).")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds.")
@click.option("--epochs", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--batch", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=0.05, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--max-steps", type=click.IntRange(min=1), help="Cap steps per epoch.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Any other imcsim train key for every run (VALUE is JSON, else a string).")
@click.option("--out", "out_dir", default="runs/noise-budget", show_default=True,
              type=click.Path(file_okay=False),
              help="The ladder's runs, budget.json, budget.md and budget.png go here.")
@scheduler_option
@click.option("--workers", type=click.IntRange(min=1),
              help="LocalCluster worker processes (default: one per core).")
@click.option("--sequential", is_flag=True, help="Run here, one run after another, no Dask.")
@processes_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@cli_errors
def budget_command(model, dataset, data_folder, imc, preset, adc_rounding, chip_pool,
                   calibrate_offsets, input_mapping,
                   scales, scaled, seeds, epochs, batch, lr, max_steps, assignments, out_dir,
                   scheduler, workers, sequential, processes, quiet):
    """Train at a ladder of noise scales of a preset and report the noise budget.

    Every run goes through the sweep machinery (OUT/<run>/, skipped when complete, resumed
    from its checkpoint when interrupted).  Prints accuracy against scale per ladder and the
    largest scale within 2 and 10 points of FP32; writes OUT/budget.json, OUT/budget.md and
    OUT/budget.png (matplotlib).  Exit 1 when a run failed.
    """
    from imcsim.atomic import AtomicOutputs
    from imcsim.sweep import dask_client, parse_assignments, plan_sweep, run_sweep
    from imcsim.training.budget import budget_spec, budget_table, format_budget, plot_budget
    local_mode(sequential, processes, scheduler, workers)
    base = {"model": model, "dataset": dataset, "imc": imc, "preset": preset,
            "input_mapping": input_mapping, "epochs": epochs, "batch": batch, "lr": lr}
    if calibrate_offsets:
        base["calibrate_offsets"] = True
    if chip_pool:
        base["chip_pool"] = chip_pool
    for key, value in (("data_folder", data_folder), ("adc_rounding", adc_rounding),
                       ("max_steps", max_steps)):
        if value is not None:
            base[key] = value
    extra = parse_assignments(assignments)
    clash = sorted(set(extra) & (set(base) | {"noise_scale", "noise_scaled", "seed"}))
    if clash:
        raise ValueError(f"--set: {clash[0]} has its own option (or is the ladder's)")
    base.update(extra)
    ladders = [s.strip() for s in scaled.split(",") if s.strip()]
    spec = budget_spec(base, _floats(scales, "--scales"), ladders, _ints(seeds, "--seeds"),
                       description=f"noise budget of {preset}")
    plan = plan_sweep(spec, out=out_dir)           # every run checked before anything runs
    if not (sequential or processes):
        from imcsim.optional import require
        require("distributed", "dask", "imcsim noise-budget (or --sequential, --processes)")
    bar = _progress(len(plan.runs), quiet)
    try:
        if sequential or processes:
            result = run_sweep(plan, processes=processes, on_result=bar)
        else:
            with dask_client(scheduler, workers, feature="imcsim noise-budget") as client:
                result = run_sweep(plan, client=client, on_result=bar)
    finally:
        bar.close()
    table = budget_table(result.records, ladders)
    text = format_budget(table)
    out = Path(plan.out)
    paths = [out / "budget.json", out / "budget.md"]
    with AtomicOutputs(*paths, names=["budget.json", "budget.md"]) as files:
        files.temporary(paths[0]).write_text(
            json.dumps({"spec": spec, "budget": table}, indent=1) + "\n")
        files.temporary(paths[1]).write_text(text + "\n")
    try:
        plot_budget(table, out / "budget.png", title=f"{model}, {preset}, {imc} on IMC")
        wrote = ", budget.png"
    except ImportError:                       # the plot needs matplotlib; the numbers do not
        wrote = ""
    click.echo(text)
    click.echo(f"wrote {out}/budget.json, budget.md{wrote}")
    if result.failed:
        for doc in result.failed:
            click.echo(f"  failed {doc['name']}: {doc['error']}")
        raise MismatchFound(f"{len(result.failed)} of {len(result.records)} runs failed")
