"""Command-line interface: ``imcsim mvm``, ``imcsim trace``, ``imcsim adc``, ``imcsim config``.

Every command follows ``imcsim.cli.common``: one error line and a fixed exit status
(``cli_errors``), one set of config flags, all-or-nothing outputs (``imcsim.atomic``).
"""
from __future__ import annotations

import json

import click
import numpy as np

from imcsim.atomic import AtomicOutputs
from imcsim.checks import check_memory, check_seed, mvm_memory_bytes
from imcsim.cli.common import (
    cli_errors,
    device_option,
    load_npy,
    macro_config_from_options,
    macro_config_options,
    operand_options,
    preset_file,
    save_npy,
)
from imcsim.config import VrefMode
from imcsim.formats import parse_format
from imcsim.operands import random_operands


@click.group()
@click.version_option(package_name="imcsim")
@click.option("--debug", is_flag=True,
              help="Show the full traceback of any error before its one line (same exit "
                   "status).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """imcsim: bit-accurate emulator of the 2304 x 256 charge-domain IMC macro.

    \b
    Exit status: 0 success, 1 a check found mismatches, 2 bad input or usage,
    3 internal error (rerun with --debug for the traceback, same status), 130 interrupted,
    141 (silent) stdout's reader went away, as in `imcsim ... | head`.
    """
    ctx.ensure_object(dict)["debug"] = debug


#: TraceSelection field -> the mvm option that sets it
TRACE_OPTION_NAMES = {"vectors": "--trace-vectors", "cycles": "--trace-cycles",
                      "tiles": "--trace-tiles", "planes": "--trace-planes"}


def mvm_command_bytes(config, shape, x_format, w_format, codes: bool, traced: bool, *,
                      random: bool = False, x_float: bool = True) -> int:
    """Peak memory of ``imcsim mvm`` on a (B, M) x (M, N) problem, roughly: the operands (and
    the temporaries of drawing them), the MVM (``imcsim.checks.mvm_memory_bytes``) and the
    float64 exact product of the summary."""
    B, M, N = shape
    operands = B * M * 8 + M * N * 8
    drawing = 2 * B * M * 8 if random else 0
    mvm_peak = mvm_memory_bytes(config, B, M, N, x_format, w_format, codes=codes,
                                traced=traced, x_float=x_float)
    result = B * N * 16                       # y and y_int, kept for the summary
    if codes or traced:
        result += -(-M // config.rows) * B * x_format.n_planes * N * w_format.n_planes * 2
    exact = result + B * M * 8 + M * N * 8 + 3 * B * N * 8
    return operands + max(drawing, mvm_peak, exact)


def parse_tiles(text: str | None) -> tuple | None:
    """'t,u;t,u' -> ((t, u), ...)."""
    if not text:
        return None
    try:
        tiles = tuple(tuple(int(v) for v in t.split(",")) for t in text.split(";"))
    except ValueError:
        raise ValueError(f"--trace-tiles: expected 't,u;t,u', got {text!r}") from None
    if any(len(t) != 2 or min(t) < 0 for t in tiles):
        raise ValueError(f"--trace-tiles: expected 't,u;t,u' with indices >= 0, got {text!r}")
    return tiles


def parse_planes(text: str | None) -> tuple | None:
    """'0,3' -> (0, 3)."""
    if not text:
        return None
    try:
        planes = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"--trace-planes: expected 'p,p,...', got {text!r}") from None
    if min(planes) < 0:
        raise ValueError(f"--trace-planes: plane indices must be >= 0, got {text!r}")
    return planes


@main.command()
@operand_options
@macro_config_options
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the dynamic noise.")
@click.option("--random-shape", nargs=3, type=int, default=(8, 600, 12), show_default=True,
              help="B M N of the seeded random operands used when --x/--w are not given.")
@click.option("--density", default=1.0, show_default=True, type=float,
              help="Share of non-zero elements in random X (radix-4: try 0.1).")
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False), help="Write Y (.npy).")
@click.option("--codes", "codes_path", type=click.Path(dir_okay=False),
              help="Write every ADC code (.npy, shape row_tiles x B x planes x N x Kw).")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False),
              help="Run the cycle-level path and write an HDF5 trace.")
@click.option("--trace-vectors", help="Vectors to record, start:stop.")
@click.option("--trace-cycles", help="Serial cycles within a tile operation, start:stop.")
@click.option("--trace-tiles", help="Tile operations to record, e.g. '0,0;1,0'.")
@click.option("--trace-planes", help="Input planes to record, e.g. '0,3'.")
@click.option("--traced/--fast", default=False, help="Use the cycle-level path even without a trace.")
@device_option
@cli_errors
def mvm(w_path, x_path, x_format, w_format, seed, random_shape, density, out_path, codes_path,
        trace_path, trace_vectors, trace_cycles, trace_tiles, trace_planes, traced, device, **kw):
    """Run Y = X @ W on the macro; with no --x/--w, on seeded random operands.

    The outputs (-o, --codes, --trace) are written all-or-nothing.
    """
    from imcsim.macro import Macro
    from imcsim.mapping import plan_tiles
    from imcsim.verify.trace import TraceSelection
    inputs = [x_path, w_path, preset_file(kw)]
    config = macro_config_from_options(kw)
    xf, wf = parse_format(x_format), parse_format(w_format)
    if wf.kind != "binary":
        raise ValueError(f"--w-format: the stored operand must be binary:K, got {w_format}")
    if (w_path is None) != (x_path is None):
        raise ValueError("--x, --w: give both files or neither")
    check_seed("--seed", seed)
    outputs = AtomicOutputs(out_path, codes_path, trace_path,
                            names=["--out", "--codes", "--trace"], inputs=inputs)
    cycle_level = bool(trace_path or traced)
    selection = None
    if cycle_level:
        selection = TraceSelection(tiles=parse_tiles(trace_tiles), vectors=trace_vectors,
                                   planes=parse_planes(trace_planes), cycles=trace_cycles)
    if w_path:
        W, X = load_npy(w_path, "--w", ndim=2), load_npy(x_path, "--x", ndim=2)
        shape = (X.shape[0], W.shape[0], W.shape[1])
        if X.shape[1] != W.shape[0]:
            raise ValueError(f"--x, --w: inner dimensions differ: X is {X.shape}, W is {W.shape}")
        check_memory("--x, --w", mvm_command_bytes(config, shape, xf, wf, codes_path is not None,
                                                   cycle_level, x_float=X.dtype.kind == "f"))
        source = f"X from {x_path}, W from {w_path}"
    else:
        B, M, N = shape = tuple(random_shape)
        if min(B, M, N) < 1:
            raise ValueError(f"--random-shape: B, M, N must be >= 1, got {random_shape}")
        if not 0.0 <= density <= 1.0:
            raise ValueError(f"--density: must lie in [0, 1], got {density}")
        check_memory("--random-shape", mvm_command_bytes(config, shape, xf, wf,
                                                         codes_path is not None, cycle_level,
                                                         random=True))
        X = W = None
        source = f"seeded random operands (seed {seed}, density {density})"
    if selection is not None:                 # a selection outside the MVM would record nothing
        plan = plan_tiles(config, shape[1], shape[2], wf)
        selection.check_against(shape[0], xf.n_planes, (plan.row_tiles, plan.col_tiles),
                                names=TRACE_OPTION_NAMES)
    if X is None:
        X, W = random_operands(np.random.default_rng(seed), xf, wf, *shape, density)
    macro = Macro(config, device=device)
    with outputs:
        if cycle_level:
            res = macro.mvm_traced(X, W, xf, wf, seed=seed, selection=selection,
                                   trace=outputs.temporary(trace_path) if trace_path else None)
        else:
            res = macro.mvm(X, W, xf, wf, seed=seed, return_codes=codes_path is not None)
        if out_path:
            with outputs.writing(out_path) as tmp:
                save_npy(tmp, res.y)
        if codes_path:
            with outputs.writing(codes_path) as tmp:
                save_npy(tmp, res.codes)
    exact = np.asarray(X, dtype=np.float64) @ np.asarray(W, dtype=np.float64)
    ev = res.events.total()
    err = np.abs(res.y - exact)
    click.echo(f"Y = X @ W: X {X.shape[0]}x{X.shape[1]} ({xf.spec()}), W {W.shape[0]}x{W.shape[1]} "
               f"({wf.spec()}); {source}")
    click.echo(f"  path {res.meta['path']}, vref {res.meta['vref']}, seed {seed}, "
               f"tiles {res.full_scale.shape[0]} x {res.events.per_tile['array_cycles'].shape[1]}")
    click.echo(f"  |Y - exact|: max {err.max():.6g}, mean {err.mean():.6g}; "
               f"exact outputs {int((err == 0).sum())}/{err.size}")
    click.echo(f"  ADC conversions {ev['adc_conversions']}, clipped {ev['clipped_conversions']}, "
               f"high-Vref {ev['high_vref_conversions']}; bit-cell mults {ev['bitcell_mults']}; "
               f"array cycles {ev['array_cycles']}")
    for label, path in (("Y", out_path), ("codes", codes_path), ("trace", trace_path)):
        if path:
            click.echo(f"  wrote {label}: {path}")


@main.group()
def trace():
    """Inspect and convert HDF5 traces."""


@trace.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--cycle", "cycle_index", type=int, help="Print one recorded cycle in readable form.")
@click.option("--columns", default=8, show_default=True, type=int, help="Columns to print.")
@cli_errors
def trace_show(file, cycle_index, columns):
    """Summary of a trace, and optionally one cycle."""
    from imcsim.verify.trace import TraceFile
    if columns < 0:
        raise ValueError(f"--columns: must be >= 0, got {columns}")
    with TraceFile(file) as tf:
        click.echo(tf.summary())
        if cycle_index is not None:
            click.echo(tf.format_cycle(cycle_index, max_columns=columns))


@trace.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--vcd", "vcd_path", required=True, type=click.Path(dir_okay=False),
              help="Write a VCD waveform here.")
@click.option("--columns", type=int, help="Export only the first N columns.")
@cli_errors
def trace_export(file, vcd_path, columns):
    """Export a trace for waveform viewers (VCD)."""
    from imcsim.verify.trace import TraceFile
    if columns is not None and columns < 0:
        raise ValueError(f"--columns: must be >= 0, got {columns}")
    with TraceFile(file) as tf:
        tf.export_vcd(vcd_path, max_columns=columns)
    click.echo(f"wrote {vcd_path}")


@main.command()
@macro_config_options
@click.option("--column", default=0, show_default=True, type=int, help="Physical column.")
@click.option("--steps-per-lsb", default=64, show_default=True, type=int)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@cli_errors
def adc(column, steps_per_lsb, plot_path, as_json, **kw):
    """Static transfer curve, DNL and INL of one column's SAR ADC."""
    from imcsim.adc_transfer import plot_transfer_curve, transfer_curve
    from imcsim.macro import Macro
    from imcsim.plotting import require
    inputs = [preset_file(kw)]
    config = macro_config_from_options(kw)
    if plot_path:
        require("matplotlib", "plot", "--plot")
    outputs = AtomicOutputs(plot_path, names=["--plot"], inputs=inputs)
    fs = config.vref.full_scale if config.vref.mode is VrefMode.FIXED else config.vref.dual_high
    curve = transfer_curve(Macro(config), fs, column, steps_per_lsb)
    summary = curve.summary()
    with outputs:
        if plot_path:
            plot_transfer_curve(curve, outputs.temporary(plot_path))
            summary["plot"] = plot_path
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"column {column}, F = {fs} rows: max |DNL| {summary['max_abs_dnl_lsb']:.3f} LSB, "
                   f"max |INL| {summary['max_abs_inl_lsb']:.3f} LSB, missing codes "
                   f"{summary['missing_codes'] or 'none'} (resolution 1/{steps_per_lsb} LSB)")
        if plot_path:
            click.echo(f"wrote {plot_path}")


@main.command("config")
@macro_config_options
@cli_errors
def show_config(**kw):
    """Print the effective macro configuration as JSON."""
    click.echo(macro_config_from_options(kw).to_json())


def register_subcommands() -> None:
    """Commands that live beside their subsystem (imported here: they use this module)."""
    from imcsim.cli.budget import budget_command
    from imcsim.cli.calibrate import calibrate_command, eval_command
    from imcsim.cli.energy import energy_command
    from imcsim.cli.sweep import sweep_command
    from imcsim.cli.train import report_command, train_command
    from imcsim.cli.verify import check_command, vectors_command
    main.add_command(energy_command, "energy")
    main.add_command(calibrate_command, "calibrate")
    main.add_command(eval_command, "eval")
    main.add_command(train_command, "train")
    main.add_command(report_command, "report")
    main.add_command(vectors_command, "vectors")
    main.add_command(check_command, "check")
    main.add_command(sweep_command, "sweep")
    main.add_command(budget_command, "noise-budget")


register_subcommands()

if __name__ == "__main__":
    main()
