"""Helpers shared by the command-line modules (options, config overrides, .npy I/O)."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import click
import numpy as np

from imcsim.config import (MacroConfig, NonIdealityConfig, VrefConfig, VrefMode, load_preset,
                           preset_names)


def _friendly_errors(fn):
    """Turn the library's validation errors into one-line CLI errors (exit status 1)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, OSError) as exc:
            raise click.ClickException(str(exc).splitlines()[0]) from None
    return wrapper


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _load_npy(path, name) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{name}: cannot read {path} as .npy ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name}: {path} holds no single array")
    return arr


def build_config(preset, vref_mode, full_scale, dual_low, dual_high, nonideal_overrides,
                 chip_seed, mask_zeros, adc_rounding=None) -> MacroConfig:
    """A MacroConfig from a preset plus command-line overrides."""
    base = load_preset(preset)
    v = base.vref
    vref = VrefConfig(mode=VrefMode(vref_mode) if vref_mode else v.mode,
                      full_scale=v.full_scale if full_scale is None else full_scale,
                      dual_low=v.dual_low if dual_low is None else dual_low,
                      dual_high=v.dual_high if dual_high is None else dual_high)
    ni = base.nonideal.__dict__.copy()
    ni.update({k: v for k, v in nonideal_overrides.items() if v is not None})
    data = base.to_dict()
    data["vref"] = {"mode": vref.mode.value, "full_scale": vref.full_scale,
                    "dual_low": vref.dual_low, "dual_high": vref.dual_high}
    data["nonideal"] = NonIdealityConfig(**ni).__dict__
    if chip_seed is not None:
        data["chip_seed"] = chip_seed
    if mask_zeros is not None:
        data["mask_zero_inputs"] = mask_zeros
    if adc_rounding is not None:
        data["adc_rounding"] = adc_rounding
    return MacroConfig.from_dict(data)


def _config_options(fn):
    """Options shared by commands that build a macro."""
    opts = [
        click.option("--preset", default="paper", show_default=True,
                     help=f"Macro preset from data/presets ({', '.join(preset_names())}) or a JSON path."),
        click.option("--vref", "vref_mode", type=click.Choice([m.value for m in VrefMode]),
                     help="ADC reference mode (default: the preset's)."),
        click.option("--full-scale", type=int, help="Fixed-mode full scale F in rows (255..2304)."),
        click.option("--dual-low", type=int, help="Dual mode low full scale in rows."),
        click.option("--dual-high", type=int, help="Dual mode high full scale in rows."),
        click.option("--cell-mismatch", type=float, help="Relative sigma of bit-cell capacitors."),
        click.option("--parasitic", type=float, help="Column parasitic / total cell capacitance."),
        click.option("--cdac-mismatch", type=float, help="Relative sigma of a CDAC unit capacitor."),
        click.option("--comparator-offset", type=float, help="Comparator offset sigma [rows]."),
        click.option("--comparator-noise", type=float, help="Comparator noise sigma [rows]."),
        click.option("--sampling-noise", type=float, help="Sampling (kT/C) noise sigma [rows]."),
        click.option("--chip-seed", type=int, help="Seed of the chip's static mismatch."),
        click.option("--mask-zeros/--no-mask-zeros", default=None,
                     help="Mask rows whose binary input is 0."),
        click.option("--adc-rounding", type=click.Choice(["floor", "half_up"]),
                     help="ADC law: floor (the paper's) or half_up (thresholds half an LSB "
                          "lower)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _config_from_kwargs(kw) -> MacroConfig:
    return build_config(
        kw.pop("preset"), kw.pop("vref_mode"), kw.pop("full_scale"), kw.pop("dual_low"),
        kw.pop("dual_high"),
        {"cell_cap_sigma": kw.pop("cell_mismatch"), "parasitic_ratio": kw.pop("parasitic"),
         "cdac_unit_sigma": kw.pop("cdac_mismatch"),
         "comparator_offset_sigma": kw.pop("comparator_offset"),
         "comparator_noise_sigma": kw.pop("comparator_noise"),
         "sampling_noise_sigma": kw.pop("sampling_noise")},
        kw.pop("chip_seed"), kw.pop("mask_zeros"), kw.pop("adc_rounding"))


def random_operands(rng, x_format, w_format, batch, inner, outputs, density):
    """Seeded random operands for a demo: X (batch x inner) and W (inner x outputs)."""
    W = rng.integers(-w_format.max_value, w_format.max_value + 1, (inner, outputs))
    if x_format.kind == "binary":
        X = rng.integers(-x_format.max_value, x_format.max_value + 1, (batch, inner))
        X = np.where(rng.random((batch, inner)) < density, X, 0)
    else:
        e = rng.integers(-x_format.exponent_bias, x_format.exponent_bias + 1, (batch, inner))
        sign = np.where(rng.random((batch, inner)) < 0.5, -1.0, 1.0)
        X = np.where(rng.random((batch, inner)) < density, sign * 4.0 ** e, 0.0)
    return X, W


def _operand_options(fn):
    """--w/--x .npy operands and their formats (shared by mvm and vectors)."""
    opts = [
        click.option("--w", "w_path", type=click.Path(dir_okay=False),
                     help="W (M x N) integers, .npy."),
        click.option("--x", "x_path", type=click.Path(dir_okay=False),
                     help="X (B x M) values, .npy."),
        click.option("--x-format", default="binary:6", show_default=True,
                     help="Streamed operand format: binary:K or radix4:K."),
        click.option("--w-format", default="binary:5", show_default=True,
                     help="Stored operand format: binary:K."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn
