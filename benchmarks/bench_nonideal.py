"""Throughput of the fast path under the non-ideal presets, against the ideal macro in the same run.

The MVM of ``bench_trace.py`` (512 x 2304 @ 2304 x 51, ``binary:6`` x ``binary:5``) under the
``half_up`` law on four macros: the ideal one (the reference of the ratios),
``paper-nonideal``, ``paper-nonideal`` without cell-capacitor mismatch, and cell mismatch
alone.  Medians of ``--repeat`` runs, interleaved.  docs/performance.md, "The non-ideal fast
path", quotes it.  Run:  python benchmarks/bench_nonideal.py [--repeat 3]
"""
import argparse
import os
import statistics
import time
from dataclasses import replace

import numpy as np

from imcsim import BinaryFormat, Macro
from imcsim.config import Rounding, load_preset

STATIC = ("cell_cap_sigma", "cdac_unit_sigma", "comparator_offset_sigma")


def macros() -> dict:
    base = replace(load_preset("paper-nonideal"), adc_rounding=Rounding.HALF_UP)
    ni = base.nonideal
    quiet = dict.fromkeys(STATIC + ("comparator_noise_sigma", "sampling_noise_sigma"), 0.0)
    cases = {"ideal": replace(ni, **quiet),
             "paper-nonideal": ni,
             "without cell mismatch": replace(ni, cell_cap_sigma=0.0),
             "cell mismatch alone": replace(ni, **{**quiet, "cell_cap_sigma": ni.cell_cap_sigma})}
    return {name: Macro(replace(base, nonideal=n)) for name, n in cases.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    rng = np.random.default_rng(0)
    X = rng.integers(-16, 17, (512, 2304))
    W = rng.integers(-8, 9, (2304, 51))
    xf, wf = BinaryFormat(6), BinaryFormat(5)
    chips = macros()
    conversions = {name: m.mvm(X, W, xf, wf).events.total()["adc_conversions"]
                   for name, m in chips.items()}                     # compiles too
    times = {name: [] for name in chips}
    for _ in range(args.repeat):
        for name, m in chips.items():
            t0 = time.perf_counter()
            m.mvm(X, W, xf, wf)
            times[name].append(time.perf_counter() - t0)
    print(f"Numba threads {os.environ.get('NUMBA_NUM_THREADS', 'default')}; medians of "
          f"{args.repeat}; half_up")
    rate = {n: conversions[n] / statistics.median(t) for n, t in times.items()}
    for name in chips:
        print(f"  {name:22s} {rate[name] / 1e6:7.2f} M conv/s  / ideal "
              f"{rate[name] / rate['ideal']:.3f}")


if __name__ == "__main__":
    main()
