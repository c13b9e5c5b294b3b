"""``imcsim vectors`` and ``imcsim check``: the verification flow (docs/golden-model.md).

Click command objects; ``imcsim.cli`` registers them on the main group.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click
import numpy as np

from imcsim.atomic import AtomicOutputs
from imcsim.cli.common import (
    MismatchFound,
    cli_errors,
    device_option,
    load_npy,
    macro_config_from_options,
    macro_config_options,
    operand_options,
    preset_file,
)
from imcsim.cli.sweep import scheduler_option
from imcsim.formats import parse_format


def shard_options(what: str):
    """``--shards N`` and ``--scheduler ADDRESS``: split ``what`` into N Dask tasks."""
    def decorate(fn):
        fn = scheduler_option(fn)
        return click.option("--shards", default=1, show_default=True,
                            type=click.IntRange(min=1),
                            help=f"Split {what} into N Dask tasks (needs the 'dask' extra); "
                                 "the outputs equal an unsharded run's.")(fn)
    return decorate


def sharded(shards: int, scheduler: str | None, feature: str):
    """A Dask client for ``shards`` > 1 (LocalCluster of min(N, cores) workers or
    ``scheduler``), else None."""
    if shards == 1:
        if scheduler:
            raise ValueError("--scheduler: needs --shards N with N > 1")
        return contextlib.nullcontext()
    from imcsim.sweep import available_cores, dask_client
    return dask_client(scheduler, min(shards, available_cores()), feature=feature)


@click.command("vectors")
@click.argument("outdir", type=click.Path(file_okay=False))
@macro_config_options
@operand_options
@click.option("--shape", nargs=2, type=int, default=(64, 8), show_default=True,
              help="M N of the random W when --w is not given.")
@click.option("--random", "n_random", default=8, show_default=True, type=int,
              help="Random vectors when --x is not given.")
@click.option("--density", type=float,
              help="Share of non-zero random inputs (default 1 binary, 0.3 radix-4).")
@click.option("--corners/--no-corners", default=True, show_default=True,
              help="Add the corner-case vectors (masks, code boundaries, NMC extremes).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the random operands and of the dynamic noise.")
@click.option("--force", is_flag=True, help="Replace an existing vectors folder.")
@click.option("--calibration", is_flag=True,
              help="Write the calibration stimulus instead (docs/calibration.md): per column, "
                   "code ramps at several full scales, repeated vectors and row patterns, one "
                   "vectors folder per block plus calibration.json.")
@device_option
@shard_options("the vector range")
@cli_errors
def vectors_command(outdir, w_path, x_path, x_format, w_format, shape, n_random, density,
                    corners, seed, force, calibration, device, shards, scheduler, **kw):
    """Write stimulus and expected response of every array cycle to OUTDIR.

    OUTDIR gets vectors.h5, one $readmemh hex file per field and manifest.json
    (docs/golden-model.md), all-or-nothing.  With --calibration, the calibration stimulus
    (one such folder per block) that `imcsim calibrate` fits a chip's codes to.
    """
    from imcsim.verify.vectors import make_operands, write_vectors
    inputs = [x_path, w_path, preset_file(kw)]
    config = macro_config_from_options(kw)
    if calibration:
        if w_path or x_path or shards != 1:
            raise ValueError("--calibration: the stimulus is designed, not given (no --x, --w "
                             "or --shards)")
        from imcsim.calibration import write_calibration_vectors
        stim = write_calibration_vectors(outdir, config, noise_seed=seed, force=force,
                                         device=device)
        click.echo(f"wrote calibration stimulus to {outdir}: {len(stim.blocks)} blocks "
                   f"({', '.join(b.name for b in stim.blocks)})")
        return
    xf, wf = parse_format(x_format), parse_format(w_format)
    if wf.kind != "binary":
        raise ValueError(f"--w-format: the stored operand must be binary:K, got {w_format}")
    W = load_npy(w_path, "--w") if w_path else None
    X = load_npy(x_path, "--x") if x_path else None
    inner, outputs = (W.shape if W is not None and W.ndim == 2 else shape)
    if min(inner, outputs) < 1:
        raise ValueError(f"--shape: M, N must be >= 1, got {shape}")
    if n_random < 0:
        raise ValueError(f"--random: must be >= 0, got {n_random}")
    if density is not None and not 0.0 <= density <= 1.0:
        raise ValueError(f"--density: must lie in [0, 1], got {density}")
    ops = make_operands(config, xf, wf, inner=inner, outputs=outputs, n_random=n_random,
                        seed=seed, corners=corners, density=density, W=W, X=X)
    with sharded(shards, scheduler, "--shards") as client:
        if client is None:
            man = write_vectors(outdir, config, ops.W, ops.X, xf, wf, seed=seed,
                                labels=ops.labels, force=force, inputs=inputs, device=device)
        else:
            from imcsim.verify.shard import write_vectors_sharded
            man = write_vectors_sharded(outdir, config, ops.W, ops.X, xf, wf, client=client,
                                        shards=shards, seed=seed, labels=ops.labels,
                                        force=force, inputs=inputs, device=device)
    g = man["geometry"]
    kinds = {}
    for lab in ops.labels:
        kind = lab.split(":")[0].split("=")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    click.echo(f"wrote {outdir}: {g['vectors_B']} vectors "
               f"({', '.join(f'{k} {v}' for k, v in kinds.items())}), "
               f"{man['n_cycles']} array cycles")
    click.echo(f"  {config.rows}x{config.columns} array, {config.adc_bits}-bit ADC, vref "
               f"{man['vref']['mode']}; X {g['vectors_B']}x{g['inner_M']} ({xf.spec()}), "
               f"W {g['inner_M']}x{g['outputs_N']} ({wf.spec()}); tiles "
               f"{g['row_tiles_T']} x {g['col_tiles_U']}, R={g['rows_R']} C={g['columns_C']}")
    click.echo("  files: vectors.h5, manifest.json, "
               + ", ".join(f["file"] for f in man["files"]))


@click.command("check")
@click.argument("expected", type=click.Path())
@click.argument("actual", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["auto", "h5", "csv", "vcd", "hex"]),
              default="auto", show_default=True, help="Format of ACTUAL (auto: by suffix).")
@click.option("--map", "signal_map", multiple=True,
              help="VCD signal map: name=signal (e.g. code=code_o, code=code_{c}, "
                   "valid=done, clock=clk) or a JSON file; repeatable.")
@click.option("--tolerance", type=click.IntRange(min=0),
              help="Silicon mode: accept codes within +/-K LSB and print error statistics.")
@click.option("--signals", help="Compare only these signals (comma-separated).")
@click.option("--max-report", default=20, show_default=True, type=click.IntRange(min=0),
              help="Mismatches to print.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the report as JSON.")
@click.option("--statistical", is_flag=True,
              help="Silicon: compare code-error distributions per column with a calibrated "
                   "model (EXPECTED: chip.json from `imcsim calibrate`; ACTUAL: the chip's "
                   "dumps of the calibration stimulus) instead of exact codes.")
@click.option("--stimulus", type=click.Path(file_okay=False),
              help="With --statistical: the calibration stimulus folder (calibration.json, "
                   "`imcsim vectors --calibration`) when ACTUAL does not hold a copy of it.")
@shard_options("EXPECTED's array cycles")
@cli_errors
def check_command(expected, actual, fmt, signal_map, tolerance, signals, max_report, json_path,
                  statistical, stimulus, shards, scheduler):
    """Compare ACTUAL (RTL or silicon dump) with EXPECTED (vectors or trace).

    Exit status: 0 all compared values match, 1 mismatches, 2 unusable input.
    """
    from imcsim.verify.check import check_files, parse_signal_map
    smap = parse_signal_map(signal_map)
    wanted = [s.strip() for s in signals.split(",") if s.strip()] if signals else None
    if stimulus and not statistical:
        raise ValueError("--stimulus: applies to --statistical only")
    inputs = [expected, actual] + [m for m in signal_map if "=" not in m]
    for folder in (expected, actual) + ((stimulus,) if stimulus else ()):
        if Path(folder).is_dir():
            inputs += [p for p in Path(folder).iterdir() if p.is_file()]
    outputs = AtomicOutputs(json_path, names=["--json"], inputs=inputs)
    if statistical:
        if shards != 1 or tolerance is not None or signals:
            raise ValueError("--statistical: compares distributions (no --shards, --tolerance "
                             "or --signals)")
        from imcsim.calibration import statistical_check_files
        report = statistical_check_files(expected, actual, stimulus=stimulus, fmt=fmt,
                                         signal_map=smap, diagnose=True)
        title, text = f"imcsim check --statistical: model {expected}, measured {actual}", \
            report.format()
    else:
        with sharded(shards, scheduler, "--shards") as client:
            if client is None:
                report = check_files(expected, actual, fmt=fmt, signal_map=smap,
                                     tolerance=tolerance, signals=wanted)
            else:
                from imcsim.verify.shard import check_files_sharded
                report = check_files_sharded(expected, actual, client=client, shards=shards,
                                             fmt=fmt, signal_map=smap, tolerance=tolerance,
                                             signals=wanted)
        title, text = f"imcsim check: expected {expected}, actual {actual}", \
            report.format(max_report)
    with outputs:
        if json_path:
            outputs.temporary(json_path).write_text(
                json.dumps(report.to_dict(), indent=2, default=json_default) + "\n")
    click.echo(title)
    click.echo(text)
    if not report.passed:
        raise MismatchFound()


def json_default(obj):
    """JSON encoding of NumPy scalars."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
