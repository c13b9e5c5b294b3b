"""``imcsim vectors`` and ``imcsim check``: the verification flow (docs/golden-model.md).

Click command objects; ``imcsim.cli`` registers them on the main group.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import click
import numpy as np

from imcsim.cli.common import _config_options, _load_npy, _operand_options
from imcsim.config import MacroConfig, NonIdealityConfig, load_preset
from imcsim.formats import parse_format

EXIT_MISMATCH = 1
EXIT_ERROR = 2


def _errors(exit_code=1):
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (ValueError, TypeError, OSError, KeyError) as exc:
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                err = click.ClickException(text)
                err.exit_code = exit_code
                raise err from None
        return wrapper
    return deco


def config_with_overrides(kw) -> MacroConfig:
    """A MacroConfig from the shared config options plus geometry / NMC overrides.

    With --rows or --adc-bits given, Vref levels that are not given default to what fits the
    new geometry (fixed F = rows, dual levels L and rows).
    """
    data = load_preset(kw.pop("preset")).to_dict()
    geometry = {k: kw.pop(k) for k in ("rows", "columns", "adc_bits")}
    nmc = {k: kw.pop(k) for k in ("scale_frac_bits", "acc_bits", "out_frac_bits")}
    overflow = kw.pop("overflow")
    reshaped = any(geometry[k] is not None for k in ("rows", "adc_bits"))
    for k, v in geometry.items():
        if v is not None:
            data[k] = v
    for k, v in nmc.items():
        if v is not None:
            data["nmc"][k] = v
    if overflow is not None:
        data["nmc"]["overflow"] = overflow
    rows, top = data["rows"], (1 << data["adc_bits"]) - 1
    if isinstance(rows, int) and rows < top:
        raise ValueError(f"rows ({rows}) must be at least the top ADC code "
                         f"2**adc_bits - 1 = {top}")
    vref = data["vref"]
    if reshaped:
        vref.update({"full_scale": rows, "dual_low": top, "dual_high": rows})
    for key, opt in (("mode", "vref_mode"), ("full_scale", "full_scale"),
                     ("dual_low", "dual_low"), ("dual_high", "dual_high")):
        v = kw.pop(opt)
        if v is not None:
            vref[key] = v
    ni = dict(data["nonideal"])
    for key, opt in (("cell_cap_sigma", "cell_mismatch"), ("parasitic_ratio", "parasitic"),
                     ("cdac_unit_sigma", "cdac_mismatch"),
                     ("comparator_offset_sigma", "comparator_offset"),
                     ("comparator_noise_sigma", "comparator_noise"),
                     ("sampling_noise_sigma", "sampling_noise")):
        v = kw.pop(opt)
        if v is not None:
            ni[key] = v
    data["nonideal"] = NonIdealityConfig(**ni).__dict__
    chip_seed, mask = kw.pop("chip_seed"), kw.pop("mask_zeros")
    if chip_seed is not None:
        data["chip_seed"] = chip_seed
    if mask is not None:
        data["mask_zero_inputs"] = mask
    return MacroConfig.from_dict(data)


@click.command("vectors")
@click.argument("outdir", type=click.Path(file_okay=False))
@_config_options
@click.option("--rows", type=int, help="Override the preset's rows (e.g. an RTL's ROWS).")
@click.option("--columns", type=int, help="Override the preset's columns.")
@click.option("--adc-bits", type=int, help="Override the preset's ADC bits.")
@click.option("--scale-frac-bits", type=int, help="Override nmc.scale_frac_bits.")
@click.option("--acc-bits", type=int, help="Override nmc.acc_bits (small values saturate).")
@click.option("--out-frac-bits", type=int, help="Override nmc.out_frac_bits.")
@click.option("--overflow", type=click.Choice(["saturate", "wrap"]), help="NMC overflow rule.")
@_operand_options
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
@_errors(EXIT_ERROR)
def vectors_command(outdir, w_path, x_path, x_format, w_format, shape, n_random, density,
                    corners, seed, force, **kw):
    """Write stimulus and expected response of every array cycle to OUTDIR.

    OUTDIR gets vectors.h5, one $readmemh hex file per field and manifest.json
    (docs/golden-model.md).
    """
    from imcsim.verify.vectors import make_operands, write_vectors
    config = config_with_overrides(kw)
    xf, wf = parse_format(x_format), parse_format(w_format)
    if wf.kind != "binary":
        raise ValueError(f"w-format: the stored operand must be binary:K, got {w_format}")
    W = _load_npy(w_path, "W") if w_path else None
    X = _load_npy(x_path, "X") if x_path else None
    inner, outputs = (W.shape if W is not None and W.ndim == 2 else shape)
    if min(inner, outputs) < 1:
        raise ValueError(f"shape: M, N must be >= 1, got {shape}")
    if n_random < 0:
        raise ValueError(f"random: must be >= 0, got {n_random}")
    if density is not None and not 0.0 <= density <= 1.0:
        raise ValueError(f"density: must lie in [0, 1], got {density}")
    ops = make_operands(config, xf, wf, inner=inner, outputs=outputs, n_random=n_random,
                        seed=seed, corners=corners, density=density, W=W, X=X)
    man = write_vectors(outdir, config, ops.W, ops.X, xf, wf, seed=seed, labels=ops.labels,
                        force=force)
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
@_errors(EXIT_ERROR)
def check_command(expected, actual, fmt, signal_map, tolerance, signals, max_report, json_path):
    """Compare ACTUAL (RTL or silicon dump) with EXPECTED (vectors or trace).

    Exit status: 0 all compared values match, 1 mismatches, 2 unusable input.
    """
    from imcsim.verify.check import check_files, parse_signal_map
    smap = parse_signal_map(signal_map)
    wanted = [s.strip() for s in signals.split(",") if s.strip()] if signals else None
    report = check_files(expected, actual, fmt=fmt, signal_map=smap, tolerance=tolerance,
                         signals=wanted)
    if json_path:
        path = Path(json_path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            tmp.write_text(json.dumps(report.to_dict(), indent=2, default=_json_default) + "\n")
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    click.echo(f"imcsim check: expected {expected}, actual {actual}")
    click.echo(report.format(max_report))
    if not report.passed:
        click.get_current_context().exit(EXIT_MISMATCH)


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
