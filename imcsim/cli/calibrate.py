"""``imcsim calibrate`` (measured chip -> preset) and ``imcsim eval`` (Monte-Carlo chips).

Click command objects; ``imcsim.cli.main`` registers them on the main group.  The flow is in
docs/calibration.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from imcsim.cli.common import (
    CONFIG_OPTION_NAMES,
    cli_errors,
    device_option,
    macro_config_from_options,
    macro_config_options,
    preset_file,
)


def _config_given(kw: dict) -> bool:
    """True when any MacroConfig flag was given (the preset default 'paper' counts as not given)."""
    return any(kw.get(k) is not None for k in CONFIG_OPTION_NAMES if k != "preset") \
        or kw.get("preset") not in (None, "paper")


def _parse_split(text: str):
    if text in ("auto", "fit"):
        return text
    try:
        f = float(text)
    except ValueError:
        raise ValueError(f"--split: expected auto, fit or a number in [0, 1], got {text!r}") from None
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"--split: must lie in [0, 1], got {f}")
    return f


def _dir_files(folder) -> list[Path]:
    p = Path(folder)
    return [q for q in p.rglob("*") if q.is_file()] if p.is_dir() else []


@click.command("calibrate")
@click.argument("measured", type=click.Path())
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Preset JSON to write; the per-column tables (<stem>.h5), the report "
                   "(<stem>.report.json) and its plots (<stem>.*.png) go beside it.")
@click.option("--stimulus", type=click.Path(file_okay=False),
              help="The calibration stimulus folder (calibration.json; `imcsim vectors "
                   "--calibration`). Default: MEASURED itself.")
@click.option("--format", "fmt", type=click.Choice(["auto", "h5", "csv", "vcd", "hex"]),
              default="auto", show_default=True, help="Layout of the dumps (auto: by suffix).")
@click.option("--map", "signal_map", multiple=True,
              help="VCD signal map, as for `imcsim check` (name=signal or a JSON file).")
@click.option("--split", default="auto", show_default=True,
              help="Noise split f = sampling**2 / total**2: auto (the fit when identifiable, "
                   "else the nominal preset's), fit, or a number in [0, 1].")
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="Write the report's PNG plots (needs matplotlib).")
@click.option("--json", "as_json", is_flag=True, help="Print the estimates as JSON.")
@macro_config_options
@cli_errors
def calibrate_command(measured, out_path, stimulus, fmt, signal_map, split, plots, as_json, **kw):
    """Fit the non-ideality model to a chip's codes for the calibration stimulus.

    MEASURED is a folder with one dump per stimulus block (<block>.h5 / .csv / .vcd or a
    <block>/ hex folder; the layouts `imcsim check` reads).  The config flags (--preset ...)
    set the base of the written preset (Vref, NMC, chip_seed); its geometry must be the
    stimulus's.  Default base: the stimulus's config.
    """
    from imcsim.calibration.fit import FitOptions, calibrate
    from imcsim.calibration.measured import load_measurement
    from imcsim.calibration.stimulus import load_calibration_stimulus
    from imcsim.verify.check import parse_signal_map
    given = _config_given(kw)
    inputs = [preset_file(kw)] + _dir_files(measured) + (_dir_files(stimulus) if stimulus else [])
    base = macro_config_from_options(kw)
    stim = load_calibration_stimulus(stimulus if stimulus else measured)
    if not given:
        base = stim.config
    elif (base.rows, base.columns, base.adc_bits) != (stim.config.rows, stim.config.columns,
                                                       stim.config.adc_bits):
        raise ValueError(f"--preset: geometry {base.rows}x{base.columns}, {base.adc_bits} bits "
                         f"differs from the stimulus's {stim.config.rows}x{stim.config.columns}, "
                         f"{stim.config.adc_bits} bits")
    from imcsim.progress import stderr_is_terminal
    say = stderr_is_terminal()              # stage lines on a terminal; silent in a pipe
    if say:
        click.echo(f"imcsim calibrate: reading {measured}", err=True)
    data = load_measurement(measured, stimulus if stimulus else None, fmt=fmt,
                            signal_map=parse_signal_map(signal_map))
    if say:
        click.echo(f"imcsim calibrate: fitting {data.n_conversions()} conversions "
                   "(typically under a minute)", err=True)
    result = calibrate(data, options=FitOptions(split=_parse_split(split)), nominal=base)
    paths = result.save(out_path, plots=plots, inputs=inputs)
    if as_json:
        click.echo(json.dumps({"estimates": {k: e.to_dict() for k, e in result.estimates.items()},
                               "notes": result.notes,
                               "files": {k: str(v) for k, v in paths.items()}}))
        return
    click.echo(f"imcsim calibrate: {data.n_conversions()} conversions of {len(data.codes)} blocks, "
               f"{result.model.columns} columns ({data.source})")
    click.echo("  fitted (95 % interval):")
    click.echo(result.summary())
    off = result.columns["offset"]
    click.echo(f"  per column: offsets {float(min(off)):+.3f} .. {float(max(off)):+.3f} rows, "
               f"max |INL| {float(abs(result.columns['inl']).max()):.3f} LSB, "
               f"max |DNL| {float(abs(result.columns['dnl']).max()):.3f} LSB")
    for note in result.notes:
        click.echo(f"  note: {note}")
    for what, path in paths.items():
        click.echo(f"  wrote {what}: {path}")


@click.command("eval")
@click.argument("trained", type=click.Path())
@macro_config_options
@click.option("--chips", default=20, show_default=True, type=click.IntRange(min=1),
              help="Sampled chips (chip_seeds) per noise scale.")
@click.option("--noise-scale", "noise_scales", default="1", show_default=True,
              help="Comma-separated factors on the preset's non-idealities, e.g. 0,0.5,1,2.")
@click.option("--scale", "scale", type=click.Choice(["all", "noise", "mismatch"]), default="all",
              show_default=True, help="Which non-idealities the factor multiplies.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Selects the chips and their dynamic noise.")
@click.option("--max-test", type=click.IntRange(min=1), help="Evaluate on the first N test samples.")
@click.option("--calibrated", type=click.Path(dir_okay=False),
              help="Also evaluate on one calibrated chip (a calibration preset with its "
                   "<stem>.h5 tables).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Write per-chip accuracies and the accuracy-vs-noise curve (PNG).")
@device_option
@cli_errors
def eval_command(trained, chips, noise_scales, scale, seed, max_test, calibrated, json_path,
                 plot_path, device, **kw):
    """Test accuracy of a trained model (TRAINED: an `imcsim train --out` folder or its
    checkpoint.npz) on sampled chips of a preset, with mean and spread per noise scale."""
    from imcsim.atomic import AtomicOutputs
    from imcsim.calibration.montecarlo import evaluate_chips, save_results
    inputs = [preset_file(kw), calibrated] + _dir_files(trained)
    if Path(trained).is_file():
        inputs.append(trained)
    preset = kw.get("preset") or "paper"
    config = macro_config_from_options(kw)
    try:
        factors = [float(v) for v in noise_scales.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--noise-scale: expected comma-separated numbers, got {noise_scales!r}") from None
    if not factors or min(factors) < 0:
        raise ValueError(f"--noise-scale: expected factors >= 0, got {noise_scales!r}")
    if plot_path:
        from imcsim.plotting import require
        require("matplotlib", "plot", "--plot")
    AtomicOutputs(json_path, plot_path, names=["--json", "--plot"], inputs=inputs)  # checks paths
    from imcsim.progress import stderr_is_terminal
    res = evaluate_chips(trained, config, chips=chips, noise_scales=factors, scale=scale,
                         seed=seed, max_test=max_test, device=device, calibrated=calibrated,
                         progress=stderr_is_terminal())     # a line per chip, on a terminal
    save_results({res.model: res}, json_path, plot_path, inputs=inputs)
    click.echo(f"imcsim eval: {trained} on {chips} chips of {preset}")
    click.echo(res.format())
    for label, path in (("results", json_path), ("plot", plot_path)):
        if path:
            click.echo(f"  wrote {label}: {path}")
