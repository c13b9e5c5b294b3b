"""Fast-path throughput on VGG-lite's layer-sized MVMs, CPU and GPU, in one run.

For each hidden layer (L2..L8 by default) and each training MVM (forward: 6-bit activations
against stored 5-bit weights; backward: radix-4 gradients against stored weights; update:
radix-4 gradients against the activations, stored anew in every call) this times one
``Macro.mvm`` call, packing and encoding included, and prints column conversions per second.

References measured in the same run, on the same machine:
- a bare count-only kernel (XNOR + popcount over the same packed operands, no ADC, no NMC) on
  each device: the ceiling the full path is compared with;
- the CPU rate at 1 thread, for the parallel efficiency at ``--threads``.

Run:  python benchmarks/bench_layers.py [--device cpu,cuda] [--batch 16] [--repeat 3]
      [--layers L2,L4] [--threads 1,2]
Ideal analog, variable Vref (the paper's), radix-4 gradient density ``--density``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
from numba import cuda, get_num_threads, njit, prange, set_num_threads

from imcsim import BinaryFormat, Macro, MacroConfig, Radix4Format
from imcsim.kernels.targets import CPU as hw
from imcsim.workloads import vgg_lite_layers

ACT, WEIGHT, GRAD = BinaryFormat(6), BinaryFormat(5), Radix4Format(8)


@njit(cache=True, parallel=True)
def bare_counts_cpu(xbits, wbits, counts):
    """Reference: XNOR + popcount counts of every (vector, plane, column), nothing else."""
    for b in prange(xbits.shape[0]):
        for p in range(xbits.shape[1]):
            for c in range(wbits.shape[0]):
                m = np.int64(0)
                for w in range(wbits.shape[1]):
                    m += hw.word_mismatches(xbits[b, p, w], wbits[c, w], hw.ALL_ONES)
                counts[b, p, c] = m


@cuda.jit
def bare_counts_gpu(xbits, wbits_t, counts):
    """Reference on the GPU: counts of every (vector, plane, column); wbits_t is (W, C)."""
    c, b = cuda.grid(2)
    if b >= xbits.shape[0] or c >= wbits_t.shape[1]:
        return
    for p in range(xbits.shape[1]):
        m = 0
        for w in range(wbits_t.shape[0]):
            m += cuda.popc(xbits[b, p, w] ^ wbits_t[w, c])
        counts[b, p, c] = m


def layer_operands(layer, kind: str, batch: int, density: float, rng):
    """(X, W, x_format, w_format) of one training MVM of a layer, as the macro sees it."""
    pixels = batch * layer.height * layer.width
    k = 9 if layer.kind == "conv" else 1
    if kind == "forward":
        shape_x, shape_w, xf, wf = (pixels, k * layer.in_channels), None, ACT, WEIGHT
        shape_w = (k * layer.in_channels, layer.out_channels)
    elif kind == "backward":
        xf, wf = GRAD, WEIGHT
        shape_x, shape_w = (pixels, k * layer.out_channels), (k * layer.out_channels,
                                                               layer.in_channels)
    else:
        xf, wf = GRAD, ACT
        shape_x, shape_w = (layer.out_channels, pixels), (pixels, k * layer.in_channels)
    if xf is GRAD:
        sign = np.where(rng.random(shape_x) < 0.5, -1.0, 1.0).astype(np.float32)
        X = np.where(rng.random(shape_x) < density,
                     sign * 4.0 ** rng.integers(-3, 4, shape_x), 0.0).astype(np.float32)
    else:
        X = rng.integers(-16, 17, shape_x, dtype=np.int8)
    lim = wf.max_value
    W = rng.integers(-lim, lim + 1, shape_w, dtype=np.int8)
    return X, W, xf, wf


def time_call(fn, repeat: int, sync=lambda: None):
    times = []
    out = None
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(min(times)), out


def bare_reference(macro, X, W, xf, wf, device, repeat):
    """Rate of the bare count kernel on the first row tile of the same operands."""
    prep = macro.prepare(X if not hasattr(X, "get") else X.get(),
                         W if not hasattr(W, "get") else W.get(), xf, wf)
    packed = prep.pack_tile(0)
    cols = prep.plan.used_columns(0)
    wbits = prep.weights.tile(0, 0, columns=False)["packed"]
    n = packed.xbits.shape[0] * packed.xbits.shape[1] * cols
    if device == "cpu":
        counts = np.empty((packed.xbits.shape[0], packed.xbits.shape[1], cols), dtype=np.int64)
        bare_counts_cpu(packed.xbits, wbits, counts)
        med, _, _ = time_call(lambda: bare_counts_cpu(packed.xbits, wbits, counts), repeat)
        return n / med
    xb = cuda.to_device(packed.xbits)
    wt = cuda.to_device(np.ascontiguousarray(wbits.T))
    counts = cuda.device_array((packed.xbits.shape[0], packed.xbits.shape[1], cols), np.int64)
    grid = ((cols + 127) // 128, packed.xbits.shape[0])
    bare_counts_gpu[grid, (128, 1)](xb, wt, counts)
    med, _, _ = time_call(lambda: bare_counts_gpu[grid, (128, 1)](xb, wt, counts), repeat,
                          cuda.synchronize)
    return n / med


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="comma-separated: cpu, cuda")
    ap.add_argument("--batch", type=int, default=16, help="images per step (paper: 128)")
    ap.add_argument("--layers", default="L2,L3,L4,L5,L6,L7,L8")
    ap.add_argument("--kinds", default="forward,backward,update")
    ap.add_argument("--density", type=float, default=0.25,
                    help="fraction of non-zero radix-4 gradient elements")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", default="", help="CPU thread counts for the scaling table, "
                    "e.g. 1,2,4,8,16 (default: 1 and all)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--resident", action="store_true",
                    help="on cuda, hand the macro CuPy operands already on the GPU (as the "
                         "training engine does: validation, encoding and packing run there); "
                         "default NumPy operands, copied and encoded on the host in the timing")
    args = ap.parse_args()
    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    layers = {spec.name: spec for spec in vgg_lite_layers()}
    chosen = [layers[name] for name in args.layers.split(",")]
    kinds = args.kinds.split(",")
    config = MacroConfig()
    all_threads = get_num_threads()
    thread_list = ([int(t) for t in args.threads.split(",")] if args.threads
                   else sorted({1, all_threads}))
    print(f"host: {platform.processor() or platform.machine()}, {all_threads} Numba threads; "
          f"batch {args.batch}, density {args.density}, median of {args.repeat}")
    rows = []
    for device in devices:
        macro = Macro(config, device=device)
        if device == "cuda":
            from numba import cuda
            sync = cuda.synchronize
        else:
            sync = lambda: None  # noqa: E731
        for layer in chosen:
            rng = np.random.default_rng(0)
            for kind in kinds:
                X, W, xf, wf = layer_operands(layer, kind, args.batch, args.density, rng)
                if device == "cuda" and args.resident:
                    import cupy
                    X, W = cupy.asarray(X), cupy.asarray(W)
                macro.mvm(X[:2], W, xf, wf)              # compile / warm up
                threads = thread_list if device == "cpu" else [None]
                for n_threads in threads:
                    if n_threads is not None:
                        set_num_threads(n_threads)
                    med, best, res = time_call(lambda X=X, W=W, xf=xf, wf=wf, macro=macro: macro.mvm(X, W, xf, wf),
                                               args.repeat, sync)
                    conv = res.events.total()["adc_conversions"]
                    rows.append({"device": device, "layer": layer.name, "kind": kind,
                                 "operands": "device" if device == "cuda" and args.resident
                                 else "host", "threads": n_threads, "conversions": conv, "median_s": med,
                                 "rate": conv / med, "best_rate": conv / best})
                if device == "cpu":
                    set_num_threads(all_threads)
                bare = bare_reference(macro, X, W, xf, wf, device, args.repeat)
                rows[-1]["bare_rate"] = bare
                r = rows[-1]
                print(f"{device:5s} {layer.name} {kind:8s} {conv / 1e6:10.1f} Mconv "
                      f"{r['rate'] / 1e6:9.1f} Mconv/s (best {r['best_rate'] / 1e6:.1f}); bare "
                      f"count kernel {bare / 1e6:9.1f} Mconv/s; full/bare {r['rate'] / bare:.2f}",
                      flush=True)
    print("\nsummary (median rates, Mconv/s)")
    for device in devices:
        full = [r for r in rows if r["device"] == device and r["threads"] in (None, all_threads)]
        for layer in chosen:
            by_kind = {r["kind"]: r["rate"] for r in full if r["layer"] == layer.name}
            if "forward" in by_kind and "update" in by_kind:
                print(f"{device:5s} {layer.name}: update/forward rate {by_kind['update'] / by_kind['forward']:.2f}")
        if device == "cpu" and len(thread_list) > 1:
            for layer in chosen:
                for kind in kinds:
                    one = [r for r in rows if r["device"] == "cpu" and r["layer"] == layer.name
                           and r["kind"] == kind and r["threads"] == 1]
                    if not one:
                        continue
                    for r in rows:
                        if (r["device"], r["layer"], r["kind"]) == ("cpu", layer.name, kind) \
                                and r["threads"] not in (None, 1):
                            eff = r["rate"] / (r["threads"] * one[0]["rate"])
                            print(f"cpu   {layer.name} {kind:8s} {r['threads']:3d} threads: "
                                  f"{r['rate'] / one[0]['rate']:.2f}x of 1 thread, "
                                  f"parallel efficiency {100 * eff:.0f} %")
    if "cpu" in devices and "cuda" in devices:
        for layer in chosen:
            for kind in kinds:
                pick = {r["device"]: r["rate"] for r in rows if r["layer"] == layer.name
                        and r["kind"] == kind and r["threads"] in (None, all_threads)}
                if len(pick) == 2:
                    print(f"{layer.name} {kind:8s}: cuda/cpu {pick['cuda'] / pick['cpu']:.1f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
