"""Per-column code offsets for the NMC: a chip's mean ADC code error, measured and subtracted.

Where a SAR ADC's thresholds sit relative to the integer count levels of an SRAM IMC column
is a design and calibration fact (docs/hardware-model.md 4.5, 4.6). Under the paper's floor
law, a count that lands exactly on a threshold reads half a code low on average once any
noise is present, and a count spread over a code bin (F > L) reads half a code low on
average too. Each column's comparator offset adds its own shift. Silicon measures such
errors at test and corrects them digitally. This module does the same with the calibration
stimulus (``imcsim.calibration.stimulus``):

1. Ramp blocks at full scale F = L (the lossless range: one count per code) and F = rows
   (F > L) drive every column with known counts k.
2. ``simulate_measurement`` (synthetic silicon), or any measured dump of the same blocks,
   gives the codes.
3. Per column and range, the mean code error is mean(code - k * L / F). It is taken over the
   conversions whose ideal code lies in [1, L - 1], away from the clipping ends. The NMC
   subtracts it from every non-zero code of that column in that range
   (``NmcConfig.code_offsets_*``, ``hw.nmc_term``).
4. Code 0 has a register of its own: its bin is open below, so under the floor law a count 0
   reads 0 whatever the sign of the noise, while a count n >= 1 reads n - 1 half the time.
   Its offset is the mean code at count 0 (``k = 0``, every ramp), about 0. One offset for
   every code would correct the many all-masked and nearly empty cycles of sparse radix-4
   operands by half a code they never lost.

The correction is digital and per column. It removes a mean error; it cannot remove the
spread that noise adds around that mean.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from imcsim.config import MacroConfig

#: ramp counts per range in the built-in measurement (evenly spaced over 0 .. 1.25 F)
DEFAULT_RAMP_COUNTS = 96
#: fresh row subsets per ramp count
DEFAULT_RAMP_VECTORS = 2


def mean_code_errors(measured) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each column's mean code error in the lossless range (F <= L), above it (F > L), and at
    count 0.

    Parameters
    ----------
    measured : MeasuredCodes
        Codes of a calibration stimulus whose ramp blocks include one at F = L and one or
        more at F > L.

    Returns
    -------
    (lossless, lossy, zero) : float64 (C,) each
        The mean of ``code - k * L / F`` [codes] over the ramp conversions whose ideal code
        ``k * L / F`` lies in [1, L - 1], and the mean code of those with k = 0; C = the
        stimulus's covered columns.
    """
    stimulus = measured.stimulus
    top = stimulus.config.top_code
    sums = {"lossless": 0.0, "lossy": 0.0, "zero": 0.0}
    counts = {"lossless": 0, "lossy": 0, "zero": 0}
    for block in stimulus.blocks_of("ramp"):
        codes = measured.block_codes(block.name).astype(np.float64)    # (B, P, C)
        ideal = block.counts.astype(np.float64) * top / block.full_scale
        at_zero = block.counts == 0
        if at_zero.any():
            sums["zero"] = sums["zero"] + codes[at_zero].sum(axis=(0, 1))
            counts["zero"] += int(at_zero.sum()) * codes.shape[1]
        keep = (ideal >= 1) & (ideal <= top - 1)
        if not keep.any():
            continue
        error = codes[keep] - ideal[keep, None, None]
        key = "lossy" if block.full_scale > top else "lossless"
        sums[key] = sums[key] + error.sum(axis=(0, 1))
        counts[key] += error.shape[0] * error.shape[1]
    names = {"lossless": "F = L and interior codes", "lossy": "F > L and interior codes",
             "zero": "count 0"}
    for key, name in names.items():
        if counts[key] == 0:
            raise ValueError(f"measurement: no ramp conversions with {name} "
                             f"({measured.source}); the code offsets need them all")
    return tuple(sums[key] / counts[key] for key in names)


def code_offset_registers(errors, frac_bits: int, bits: int) -> tuple[int, ...]:
    """Mean code errors [codes] as register values: rounded to ``frac_bits`` fraction bits
    (half away from zero), saturated to a ``bits``-wide two's-complement register."""
    scaled = np.asarray(errors, dtype=np.float64) * (1 << frac_bits)
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return tuple(int(v) for v in np.clip(rounded, lo, hi))


def with_code_offsets(config: MacroConfig, lossless, lossy, zero) -> MacroConfig:
    """``config`` with the NMC's code-offset registers loaded from mean code errors [codes]
    (float (columns,) each, ``mean_code_errors``)."""
    nmc = config.nmc
    regs = [code_offset_registers(e, nmc.code_offset_frac_bits, nmc.code_offset_bits)
            for e in (lossless, lossy, zero)]
    return replace(config, nmc=replace(nmc, code_offsets_lossless=regs[0],
                                       code_offsets_lossy=regs[1], code_offsets_zero=regs[2]))


def measure_code_offsets(chip: MacroConfig, *, seed: int = 0,
                         ramp_counts: int = DEFAULT_RAMP_COUNTS,
                         ramp_vectors: int = DEFAULT_RAMP_VECTORS,
                         device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measure a chip's mean code errors with ramps at F = L and F = rows (synthetic silicon:
    the emulator with every non-ideality and the ``chip_seed`` of ``chip``).

    Parameters
    ----------
    chip : MacroConfig  the chip; its ADC law is the one measured.
    seed : int  dynamic-noise seed of the measurement.
    ramp_counts : int >= 2  counts per ramp, evenly spaced over 0 .. 1.25 F.
    ramp_vectors : int >= 1  fresh row subsets per count.
    device : "cpu" or "cuda".

    Returns
    -------
    (lossless, lossy, zero) : float64 (columns,) each, [codes]; columns the stimulus does
    not cover (fewer than one weight-plane group) get the mean of the covered ones.
    """
    from imcsim.calibration.measured import simulate_measurement
    from imcsim.calibration.stimulus import CalibrationStimulus, make_calibration_stimulus
    full = make_calibration_stimulus(chip, full_scales=(chip.top_code, chip.rows),
                                     ramp_vectors=ramp_vectors, max_ramp_counts=ramp_counts,
                                     repeat_vectors=2, repeat_counts=1, pattern_subsets=2,
                                     pattern_repeats=1, pattern_counts=1, seed=seed)
    ramps = CalibrationStimulus(full.config, full.x_format, full.w_format, full.W,
                                full.blocks_of("ramp"), full.design)
    measured = simulate_measurement(ramps, chip, seed=seed, device=device)
    covered = mean_code_errors(measured)
    out = []
    for errors in covered:
        full_row = np.full(chip.columns, float(errors.mean()), dtype=np.float64)
        full_row[:errors.shape[0]] = errors
        out.append(full_row)
    return out[0], out[1], out[2]


def calibrate_code_offsets(chip: MacroConfig, *, seed: int = 0, **options) -> MacroConfig:
    """The chip with its NMC code offsets measured and loaded (``measure_code_offsets``,
    ``with_code_offsets``): the calibrated chip of docs/training.md, Noise budgets."""
    return with_code_offsets(chip, *measure_code_offsets(chip, seed=seed, **options))
