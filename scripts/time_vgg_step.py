"""Time one VGG-lite training step at batch 128 on CIFAR-shaped data, all MVMs on IMC.

Layers 2-8 run forward, backward and weight update on the emulated macro (fast path, variable
Vref); layers 1 and 9 stay FP32, as in the paper.  Prints wall time, peak resident memory and
the share of time spent inside the emulator, per layer and MVM kind.
With ``--device cuda`` the data, weights, activations and gradients stay on the GPU (CuPy) and
the macro runs its CUDA path; the clock is read after a device synchronisation, and one
untimed warm-up step (kernel compilation) runs first unless ``--warmup 0``.
Run:  python scripts/time_vgg_step.py [--batch 128] [--device cuda] [--steps 3]
      [--preset paper-nonideal]
"""
import argparse
import resource
import sys
import time
from collections import defaultdict

import numpy as np

from imcsim import MacroConfig
from imcsim.config import load_preset, preset_names
from imcsim.training.backends import Fp32Backend, ImcBackend, MvmKind
from imcsim.training.layers import softmax_cross_entropy
from imcsim.training.models import build_model
from imcsim.training.optim import SGD
from imcsim.training.xp import array_module, to_device


def synchronize(xp):
    """Wait for the GPU's queued work (no-op on the CPU), so the clock measures it."""
    if xp is not np:
        xp.cuda.Device().synchronize()


class TimedImc(ImcBackend):
    """ImcBackend that records the wall time of every call."""

    def __init__(self, *a, xp=np, **k):
        super().__init__(*a, **k)
        self.xp = xp
        self.seconds = defaultdict(float)

    def matmul(self, X, W, x_format, w_format, *, layer="", mvm=None, step=0):
        synchronize(self.xp)
        t0 = time.perf_counter()
        out = super().matmul(X, W, x_format, w_format, layer=layer, mvm=mvm, step=step)
        synchronize(self.xp)
        self.seconds[(layer, mvm.value)] += time.perf_counter() - t0
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--steps", type=int, default=1, help="timed steps (the mean is printed)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed steps first (default: 1 on cuda, 0 on cpu)")
    ap.add_argument("--preset", default=None,
                    help=f"the macro's preset, one of {', '.join(preset_names())} (default: "
                         "MacroConfig(), the ideal macro with the library's defaults)")
    args = ap.parse_args(argv)
    if args.preset is not None and args.preset not in preset_names():
        print(f"--preset: unknown preset {args.preset!r}; choose from "
              f"{', '.join(preset_names())}", file=sys.stderr)
        return 2
    for name, value, low in (("--batch", args.batch, 1), ("--steps", args.steps, 1),
                             ("--warmup", args.warmup, 0)):
        if value is not None and value < low:
            print(f"{name}: expected an integer >= {low}, got {value}", file=sys.stderr)
            return 2
    try:
        xp = array_module(args.device)
    except ValueError as exc:              # no CuPy or no GPU: one line, exit 2
        print(f"--device: {exc}", file=sys.stderr)
        return 2
    warmup = args.warmup if args.warmup is not None else int(args.device == "cuda")
    rng = np.random.default_rng(0)
    model = build_model("vgg-lite", (32, 32, 3), 10, seed=0).to_device(xp)
    config = MacroConfig() if args.preset is None else load_preset(args.preset)
    imc = TimedImc(config, device=args.device, xp=xp)
    fp32 = Fp32Backend()
    for layer in model.compute_layers():
        backend = imc if layer.role == "hidden" else fp32
        layer.policy = {k: backend for k in MvmKind}
    x = to_device(rng.standard_normal((args.batch, 32, 32, 3)).astype(np.float32), xp)
    y = to_device(rng.integers(0, 10, args.batch), xp)
    opt = SGD(0.05)

    def step(i):
        model.set_step(i)
        out = model.forward(x, train=True)
        loss, grad = softmax_cross_entropy(out, y)
        model.backward(grad)
        opt.step(model.params, model.grads)
        synchronize(xp)

    for i in range(warmup):
        step(i)
    imc.seconds.clear()
    imc.stats.clear()
    synchronize(xp)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(warmup + i)
    wall = (time.perf_counter() - t0) / args.steps
    emu = sum(imc.seconds.values()) / args.steps
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    conv = sum(s.adc_conversions for s in imc.stats.values()) / args.steps
    print(f"VGG-lite, batch {args.batch}, layers 2-8 all three MVMs on IMC (preset "
          f"{args.preset or 'none: MacroConfig()'}), device {args.device}, mean of {args.steps} step(s) after {warmup} "
          "warm-up")
    gpu = ""
    if xp is not np:
        gpu = f"; GPU memory pool {xp.get_default_memory_pool().total_bytes() / 2**30:.2f} GiB"
    print(f"wall time of one step: {wall:.2f} s; in the emulator: {emu:.2f} s "
          f"({100 * emu / wall:.0f} %); peak RSS {peak_gib:.2f} GiB{gpu}; "
          f"{conv / 1e9:.2f} G column conversions ({conv / emu / 1e6:.1f} M/s in the emulator)")
    for (layer, kind), sec in sorted(imc.seconds.items()):
        st = imc.stats[(layer, kind)]
        print(f"  {layer:4s} {kind:8s} {sec / args.steps:7.2f} s  "
              f"{st.adc_conversions / args.steps / 1e6:9.1f} M conversions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
