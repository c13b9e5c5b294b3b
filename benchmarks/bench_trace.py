"""Throughput of the cycle-level path and its HDF5 trace, against the fast path in the same run.

The workload of issue 21: the paper's 2304 x 256 array, X (B x 2304, ``binary:6``) @ W
(2304 x 51, ``binary:5``: 255 columns), ideal analog, variable Vref; B = 512 by default
(783 k column conversions).  Timed, interleaved, median of ``--repeat`` runs each:

- ``fast``        : ``Macro.mvm`` (the fast path: the reference of every ratio);
- ``stepper``     : the per-cycle stepper (``CycleStepper``, the golden model's path: one
                    Python step per array cycle), no file;
- ``compiled``    : ``Macro.mvm_traced`` without a trace (``kernels.cycle.tile_cycles``);
- ``trace``       : ``Macro.mvm_traced`` writing the full per-cycle trace.

Prints conversions per second, ratios, the trace's bytes per conversion, and the time a full
trace of a layer of ``--layer-conversions`` conversions (503 M: the VGG-lite layer of issue 21)
would take at the measured rate.  Run:  python benchmarks/bench_trace.py [--repeat 5]
"""
import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np

from imcsim import BinaryFormat, Macro, MacroConfig
from imcsim.cycles import run_cycle_level
from imcsim.verify.h5chunks import default_threads, deflate_encoder


class StepperOnly:
    """A sink without block methods that records nothing: the per-cycle stepper runs."""

    def selects(self, rec, n_planes):
        return False

    def add(self, rec):
        raise AssertionError

    def close(self, result):
        pass

    def abort(self):
        pass


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or "unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in info.splitlines()
             if line.startswith("model name")]
    extra = " (AVX-512 VPOPCNTDQ)" if "avx512_vpopcntdq" in info else ""
    return (names[0] if names else platform.processor() or "unknown CPU") + extra


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--layer-conversions", type=float, default=503e6)
    args = ap.parse_args()
    if args.repeat < 1 or args.batch < 1:
        ap.error("--repeat and --batch must be at least 1")
    macro = Macro(MacroConfig())
    rng = np.random.default_rng(0)
    X = rng.integers(-16, 17, (args.batch, 2304))
    W = rng.integers(-8, 9, (2304, 51))
    xf, wf = BinaryFormat(6), BinaryFormat(5)
    folder = tempfile.mkdtemp(prefix="bench_trace")
    path = os.path.join(folder, "trace.h5")

    def stepper():
        prep = macro.prepare(X, W, xf, wf)
        return run_cycle_level(macro, prep, StepperOnly())

    paths = {"fast": lambda: macro.mvm(X, W, xf, wf),
             "stepper": stepper,
             "compiled": lambda: macro.mvm_traced(X, W, xf, wf),
             "trace": lambda: macro.mvm_traced(X, W, xf, wf, trace=path)}
    reference = macro.mvm(X, W, xf, wf, return_codes=True)
    for name, fn in paths.items():                        # compile, and check the bits
        res = fn()
        assert np.array_equal(res.y_int, reference.y_int), name
    times = {name: [] for name in paths}
    for _ in range(args.repeat):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    conversions = int(reference.events.total()["adc_conversions"])
    size = os.path.getsize(path)
    os.remove(path)
    os.rmdir(folder)
    print(f"host: {cpu_name()}, {os.cpu_count()} cores; Numba threads "
          f"{os.environ.get('NUMBA_NUM_THREADS', 'default')}; compression threads "
          f"{default_threads()} ({deflate_encoder()[0]})")
    print(f"MVM {args.batch} x 2304 @ 2304 x 51 (binary:6 x binary:5): {conversions} "
          f"conversions; medians of {args.repeat}")
    rate = {name: conversions / statistics.median(t) for name, t in times.items()}
    for name in paths:
        print(f"  {name:9s} {statistics.median(times[name]):8.3f} s  {rate[name] / 1e6:8.2f} "
              f"M conv/s  / fast {rate[name] / rate['fast']:.3f}  / stepper "
              f"{rate[name] / rate['stepper']:.1f}")
    print(f"trace: {size / 1e6:.1f} MB, {size / conversions:.1f} B per conversion")
    print(f"a full trace of {args.layer_conversions / 1e6:.0f} M conversions at this rate: "
          f"{args.layer_conversions / rate['trace']:.0f} s, about "
          f"{args.layer_conversions * size / conversions / 1e9:.1f} GB")


if __name__ == "__main__":
    main()
