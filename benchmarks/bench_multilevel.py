"""Multi-level row inputs against one-hot rows on the fast CPU path, measured in the same run.

Two training MVMs of VGG-lite's size on the paper's 2304 x 256 array (binary:5 weights, 51
outputs x 5 columns), ideal analog, variable Vref:
  forward : binary:6 activations (6 dense +/-1 planes)   vs binary:6/3 (2 cycles of signed
            3-bit digits, 3 level-bit sub-planes each);
  backward: radix4:8 gradients, 50 % non-zero (7 one-hot planes) vs radix4:8/2 (4 cycles, 3
            level-bit sub-planes each).
The one-hot format is the reference: the benchmark prints, per pair, the median and best
wall time of one MVM (2304 rows x 128 vectors), the multi-level/one-hot time ratio and
conversion ratio, and the conversions per second of each.  Workloads are interleaved in
blocks, since these machines drift by tens of percent between runs.  Run:
  python benchmarks/bench_multilevel.py [--repeat 15] [--batch 128]
"""
import argparse
import platform
import time

import numpy as np

from imcsim import BinaryFormat, Macro, MacroConfig, Radix4Format, VrefConfig, VrefMode


def operands(rng, fmt, batch, inner, density):
    if fmt.kind == "radix4":
        e = rng.integers(-fmt.exponent_bias, fmt.exponent_bias + 1, (batch, inner))
        return np.where(rng.random((batch, inner)) < density,
                        rng.choice([-1.0, 1.0], (batch, inner)) * 4.0 ** e, 0.0)
    return rng.integers(-fmt.max_value, fmt.max_value + 1, (batch, inner))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    rng = np.random.default_rng(2)
    macro = Macro(MacroConfig(input_bits=3, vref=VrefConfig(mode=VrefMode.VARIABLE)))
    wf = BinaryFormat(5)
    W = rng.integers(-8, 9, (2304, 51))
    pairs = {"forward": (BinaryFormat(6), BinaryFormat(6, 3), 1.0),
             "backward": (Radix4Format(8), Radix4Format(8, 2), 0.5)}
    work, conv = {}, {}
    for name, (one_hot, multi, density) in pairs.items():
        X = operands(rng, one_hot, args.batch, 2304, density)   # the same values, both ways
        for fmt in (one_hot, multi):
            res = macro.mvm(X, W, fmt, wf)                  # compile, warm caches
            conv[fmt.spec()] = res.events.total()["adc_conversions"]
            work[(name, fmt.spec())] = (X, fmt, [])
    for _ in range(0, args.repeat, 5):                      # interleaved blocks of 5
        for X, fmt, times in work.values():
            for _ in range(5):
                t0 = time.perf_counter()
                macro.mvm(X, W, fmt, wf)
                times.append(time.perf_counter() - t0)
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{__import__('numba').get_num_threads()} Numba threads; batch {args.batch}, "
          f"{args.repeat} runs each")
    for name, (one_hot, multi, _) in pairs.items():
        med = {}
        for fmt in (one_hot, multi):
            times = np.array(work[(name, fmt.spec())][2])
            med[fmt.spec()] = np.median(times)
            c = conv[fmt.spec()]
            print(f"  {name:8s} {fmt.spec():11s}: median {np.median(times) * 1e3:8.1f} ms, best "
                  f"{times.min() * 1e3:8.1f} ms, {c:,} conversions, "
                  f"{c / np.median(times) / 1e6:7.1f} Mconv/s")
        print(f"  {name:8s} multi-level / one-hot: time x{med[multi.spec()] / med[one_hot.spec()]:.2f}, "
              f"conversions x{conv[multi.spec()] / conv[one_hot.spec()]:.2f}")


if __name__ == "__main__":
    main()
