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

Every requested device is set up before anything is timed: a device that cannot be used here
(no CUDA GPU, no numba-cuda, no CuPy for --resident) ends the run at once with one line naming
it and why, exit status 2, like any other bad argument.
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time

import numpy as np
from numba import get_num_threads, njit, prange, set_num_threads

from imcsim import BinaryFormat, Macro, MacroConfig, Radix4Format
from imcsim.atomic import resolve_output, write_text_atomic
from imcsim.gpu import MAX_GRID_Y, load_cuda
from imcsim.kernels.targets import CPU as hw
from imcsim.mapping import plan_tiles
from imcsim.workloads import vgg_lite_layers

ACT, WEIGHT, GRAD = BinaryFormat(6), BinaryFormat(5), Radix4Format(8)
KINDS = ("forward", "backward", "update")
#: threads per block of the GPU count kernel (over columns)
BARE_THREADS = 128
#: CUDA's limits on a grid: x up to 2**31 - 1 blocks, y (and z) up to 65535
MAX_GRID_X = 2 ** 31 - 1


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


#: ``numba.cuda``, imported by :func:`gpu_count_kernel` (a module global, not a closure
#: variable: Numba's CUDA simulator swaps the kernel's global ``cuda`` for its fake module)
cuda = None


@functools.cache
def gpu_count_kernel():
    """The GPU reference kernel, compiled on first use (ValueError, one line, when numba's CUDA
    target is unusable here: ``imcsim.gpu.load_cuda``)."""
    global cuda
    cuda = load_cuda()

    @cuda.jit
    def bare_counts_gpu(xbits, wbits_t, counts):
        """Reference on the GPU: counts of every (vector, plane, column); wbits_t is (W, C).
        Columns on the grid's x, vectors on its y with a grid-stride loop: a conv layer's
        batch x pixels vectors (131072 for L2 at batch 128) exceed the 65535 blocks CUDA
        allows on y, and a launch beyond that fails (CUDA_ERROR_INVALID_VALUE)."""
        c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if c >= wbits_t.shape[1]:
            return
        for b in range(cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y, xbits.shape[0],
                       cuda.gridDim.y * cuda.blockDim.y):
            for p in range(xbits.shape[1]):
                m = 0
                for w in range(wbits_t.shape[0]):
                    m += cuda.popc(xbits[b, p, w] ^ wbits_t[w, c])
                counts[b, p, c] = m
    return bare_counts_gpu


def bare_grid(vectors: int, columns: int, max_y: int = MAX_GRID_Y) -> tuple[int, int]:
    """Launch grid of the GPU count kernel (blocks of ``(BARE_THREADS, 1)`` threads): columns
    on x, vectors on y capped at ``max_y`` (the kernel strides over the rest)."""
    grid = (max(1, -(-columns // BARE_THREADS)), max(1, min(vectors, max_y)))
    assert grid[0] <= MAX_GRID_X and grid[1] <= MAX_GRID_Y, grid
    return grid


def mvm_shape(layer, kind: str, batch: int):
    """((B, M) of X, (M, N) of W, x_format, w_format) of one training MVM of a layer."""
    pixels = batch * layer.height * layer.width
    k = 9 if layer.kind == "conv" else 1
    if kind == "forward":
        return (pixels, k * layer.in_channels), (k * layer.in_channels, layer.out_channels), \
            ACT, WEIGHT
    if kind == "backward":
        return (pixels, k * layer.out_channels), (k * layer.out_channels, layer.in_channels), \
            GRAD, WEIGHT
    if kind == "update":
        return (layer.out_channels, pixels), (pixels, k * layer.in_channels), GRAD, ACT
    raise ValueError(f"--kinds: unknown MVM kind {kind!r}; choose from {', '.join(KINDS)}")


def bare_launch(layer, kind: str, batch: int, config: MacroConfig) -> tuple[int, int]:
    """The grid ``bare_reference`` launches for a layer's MVM: vectors of X, and the columns of
    the first column tile (arithmetic only, no GPU needed)."""
    shape_x, shape_w, _, wf = mvm_shape(layer, kind, batch)
    plan = plan_tiles(config, shape_w[0], shape_w[1], wf)
    return bare_grid(shape_x[0], plan.used_columns(0))


def layer_operands(layer, kind: str, batch: int, density: float, rng):
    """(X, W, x_format, w_format) of one training MVM of a layer, as the macro sees it."""
    shape_x, shape_w, xf, wf = mvm_shape(layer, kind, batch)
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
    kernel = gpu_count_kernel()
    xb = cuda.to_device(packed.xbits)
    wt = cuda.to_device(np.ascontiguousarray(wbits.T))
    counts = cuda.device_array((packed.xbits.shape[0], packed.xbits.shape[1], cols), np.int64)
    grid = bare_grid(packed.xbits.shape[0], cols)
    kernel[grid, (BARE_THREADS, 1)](xb, wt, counts)
    med, _, _ = time_call(lambda: kernel[grid, (BARE_THREADS, 1)](xb, wt, counts), repeat,
                          cuda.synchronize)
    return n / med


def parser() -> argparse.ArgumentParser:
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
    return ap


def names(text: str, arg: str, choices) -> list[str]:
    """A comma-separated list of names, each one of ``choices`` (ValueError naming ``arg``)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in choices]
    if unknown or not items:
        raise ValueError(f"{arg}: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                         f"choose from {', '.join(choices)}")
    return items


def check_args(args):
    """The arguments' values, checked before anything runs: (devices, layers, kinds,
    thread counts)."""
    devices = names(args.device, "--device", ("cpu", "cuda"))
    layers = {spec.name: spec for spec in vgg_lite_layers()}
    chosen = [layers[name] for name in names(args.layers, "--layers", tuple(layers))]
    kinds = names(args.kinds, "--kinds", KINDS)
    for arg, value in (("--batch", args.batch), ("--repeat", args.repeat)):
        if value < 1:
            raise ValueError(f"{arg}: must be at least 1, got {value}")
    if not 0.0 <= args.density <= 1.0:
        raise ValueError(f"--density: must be in [0, 1], got {args.density}")
    try:
        threads = [int(t) for t in args.threads.split(",")] if args.threads else []
    except ValueError:
        raise ValueError(f"--threads: expected comma-separated integers, got {args.threads!r}") from None
    if any(t < 1 for t in threads):
        raise ValueError(f"--threads: thread counts must be at least 1, got {args.threads!r}")
    if args.json:
        resolve_output(args.json, "--json")
    return devices, chosen, kinds, threads


def setup_devices(devices, config: MacroConfig, resident: bool) -> dict:
    """{device: (Macro, sync, array module or None)} for every requested device, built before
    anything is timed.  ValueError, one line naming the device and why, when one is unusable
    here (the CUDA checks are ``imcsim.gpu.load_cuda``'s, CuPy's those of the training
    engine's ``array_module``)."""
    out = {}
    for device in devices:
        macro = Macro(config, device=device)        # on cuda: load_cuda's one-line ValueError
        if device == "cpu":
            out[device] = (macro, lambda: None, None)
            continue
        gpu_count_kernel()                          # the reference kernel's target as well
        xp = None
        if resident:
            from imcsim.training.xp import array_module
            xp = array_module("cuda")               # CuPy and a GPU it can see
        out[device] = (macro, load_cuda().synchronize, xp)
    return out


def main(argv=None) -> int:
    """Run the benchmark; 2 and one line on stderr for an unusable argument or device (before
    anything is timed)."""
    args = parser().parse_args(argv)
    config = MacroConfig()
    try:
        devices, chosen, kinds, threads = check_args(args)
        prepared = setup_devices(devices, config, args.resident)
    except ValueError as exc:
        line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()),
                    type(exc).__name__)
        print(f"Error: {line}", file=sys.stderr)
        return 2
    rows = run(args, prepared, chosen, kinds, threads)
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=1), "--json")
    return 0


def run(args, prepared: dict, chosen, kinds, threads) -> list:
    """Time every (device, layer, kind) and print the tables; returns the rows."""
    devices = list(prepared)
    all_threads = get_num_threads()
    thread_list = threads or sorted({1, all_threads})
    print(f"host: {platform.processor() or platform.machine()}, {all_threads} Numba threads; "
          f"batch {args.batch}, density {args.density}, median of {args.repeat}")
    rows = []
    for device, (macro, sync, xp) in prepared.items():
        for layer in chosen:
            rng = np.random.default_rng(0)
            for kind in kinds:
                X, W, xf, wf = layer_operands(layer, kind, args.batch, args.density, rng)
                if xp is not None:
                    X, W = xp.asarray(X), xp.asarray(W)
                macro.mvm(X[:2], W, xf, wf)              # compile / warm up
                for n_threads in (thread_list if device == "cpu" else [None]):
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
    return rows


if __name__ == "__main__":
    sys.exit(main())
