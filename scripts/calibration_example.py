"""The synthetic-silicon example of docs/calibration.md: calibrate a hidden chip, check it.

A hidden chip (the paper's 2304-row array and 8-bit ADC, 32 columns, non-idealities of the
``paper-nonideal`` preset times --scale, a random chip_seed) converts the calibration stimulus
in the emulator; ``calibrate`` fits it; the script prints true vs fitted values as a Markdown
table, writes the calibration's preset, tables, report and plots to --out (runs/, ignored by
git), with ``--docs docs`` copies the plots to docs/ (calibration-*.png, to regenerate the
documentation's figures), and runs the statistical check against a fresh measurement of the same
chip, the ideal macro and another chip.

Run:  python scripts/calibration_example.py [--columns 32] [--scale 2] [--out runs/calibration]
      [--docs docs]
"""
import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from imcsim import load_preset
from imcsim.calibration import ChipModel, calibrate, make_calibration_stimulus, simulate_measurement
from imcsim.calibration.montecarlo import scaled_config
from imcsim.calibration.statistical import statistical_check
from imcsim.config import VrefConfig


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--columns", type=int, default=32)
    ap.add_argument("--scale", type=float, default=2.0, help="factor on paper-nonideal's sigmas")
    ap.add_argument("--out", default="runs/calibration")
    ap.add_argument("--docs", default="", help="where the PNGs are copied (default: nowhere; "
                    "'docs' regenerates the documentation's figures)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    base = load_preset("paper-nonideal")
    nominal = replace(load_preset("paper"), columns=args.columns,
                      vref=VrefConfig(full_scale=base.rows, dual_low=base.top_code,
                                      dual_high=base.rows))
    hidden_seed = int(np.random.default_rng(args.seed).integers(1, 2 ** 40))
    chip = replace(scaled_config(base, args.scale, chip_seed=hidden_seed), columns=args.columns,
                   vref=nominal.vref)
    stim = make_calibration_stimulus(nominal, repeat_vectors=256)
    print(f"stimulus: {stim.summary()}")
    t0 = time.perf_counter()
    meas = simulate_measurement(stim, chip, seed=1)
    t1 = time.perf_counter()
    res = calibrate(meas)
    t2 = time.perf_counter()
    print(f"measurement {t1 - t0:.1f} s, calibration {t2 - t1:.1f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = res.save(out / "chip.json")
    truth = ChipModel.from_config(chip)
    err = res.parameter_errors(truth)
    ni = chip.nonideal
    rows = [("cell_cap_sigma", ni.cell_cap_sigma), ("parasitic_ratio", ni.parasitic_ratio),
            ("cdac_unit_sigma", ni.cdac_unit_sigma),
            ("comparator_offset_sigma", ni.comparator_offset_sigma),
            ("comparator_noise_sigma", ni.comparator_noise_sigma),
            ("sampling_noise_sigma", ni.sampling_noise_sigma),
            ("noise_total", float(np.hypot(ni.comparator_noise_sigma, ni.sampling_noise_sigma)))]
    print("\n| parameter | hidden chip | fitted | 95 % interval |\n|---|---|---|---|")
    for name, true in rows:
        e = res.estimates[name]
        print(f"| {name} | {true:.4g} | {e.value:.4g} | {e.low:.4g} .. {e.high:.4g} |")
    rms = float(np.sqrt(np.mean(truth.offset[:args.columns] ** 2)))
    print(f"\nthis chip's offsets: rms {rms:.4g} rows; fitted offsets max |error| "
          f"{np.abs(err['offset_rows']).max():.4f} rows (= LSB at F = L), gains max |error| "
          f"{np.abs(err['gain']).max():.2e}, CDAC max |error| {np.abs(err['cdac_lsb']).max():.4f} LSB")
    for n in res.notes:
        print(f"note: {n}")
    fresh = simulate_measurement(stim, chip, seed=2)
    other = simulate_measurement(stim, replace(chip, chip_seed=hidden_seed + 1), seed=2)
    for label, model, m in (("calibrated model vs a fresh measurement", res, fresh),
                            ("ideal macro vs the chip", nominal, fresh),
                            ("calibrated model vs another chip", res, other)):
        rep = statistical_check(model, m)
        print(f"statistical check, {label}: {'PASS' if rep.passed else 'FAIL'} "
              f"({len(rep.failed_columns())} of {args.columns} columns fail)")
    if args.docs:
        for what in ("transfer", "dnl-inl", "residuals"):
            shutil.copyfile(paths[what], Path(args.docs) / f"calibration-{what}.png")


if __name__ == "__main__":
    main()
