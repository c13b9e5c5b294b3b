"""Validation of float operands: BinaryFormat.validate's fused kernel against the NumPy
expression it replaced, measured side by side in the same run (issue 21).

A training step hands the macro float64 operands (quantized activations, 6-bit) of VGG-lite's
sizes: L2's forward X at batch 64 is 65536 x 1152 values (604 MB).  The NumPy check made five
passes with as many temporaries (isfinite, round, !=, two range tests, the int64 copy); the
kernel makes one.  Run:  python benchmarks/bench_validate.py [--rows 16384] [--repeat 7]
(medians; the ratio is the number to compare between machines).
"""
import argparse
import os
import platform
import statistics
import time

import numba
import numpy as np

from imcsim import BinaryFormat


def numpy_reference(arr, fmt):
    """The expression BinaryFormat.validate used before the fused kernel."""
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise ValueError("not integers")
    lim = fmt.max_value
    if int(((arr < -lim) | (arr > lim)).sum()):
        raise ValueError("out of range")
    return arr.astype(np.int64, copy=False)


def median_seconds(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=16384, help="vectors (rows of X)")
    ap.add_argument("--inner", type=int, default=1152, help="inner dimension (columns of X)")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    if min(args.rows, args.inner, args.repeat) < 1:
        raise SystemExit("bench_validate.py: --rows, --inner and --repeat must be >= 1")
    fmt = BinaryFormat(6)
    rng = np.random.default_rng(0)
    X = rng.integers(-fmt.max_value, fmt.max_value + 1, (args.rows, args.inner)).astype(
        np.float64)
    assert np.array_equal(fmt.validate(X), numpy_reference(X, fmt))     # same answer; compiles
    ref = median_seconds(lambda: numpy_reference(X, fmt), args.repeat)
    fused = median_seconds(lambda: fmt.validate(X), args.repeat)
    mb = X.nbytes / 1e6
    print(f"host: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"{numba.get_num_threads()} Numba threads; X {args.rows} x {args.inner} float64 "
          f"({mb:.0f} MB), median of {args.repeat}")
    print(f"numpy expression : {1e3 * ref:8.1f} ms  ({mb / ref / 1e3:6.2f} GB/s)")
    print(f"fused kernel     : {1e3 * fused:8.1f} ms  ({mb / fused / 1e3:6.2f} GB/s)")
    print(f"speed-up         : {ref / fused:8.2f} x")


if __name__ == "__main__":
    main()
