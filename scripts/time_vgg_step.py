"""Time one VGG-lite training step at batch 128 on CIFAR-shaped data, all MVMs on IMC.

Layers 2-8 run forward, backward and weight update on the emulated macro (fast path, variable
Vref); layers 1 and 9 stay FP32, as in the paper.  Prints wall time, peak resident memory and
the share of time spent inside the emulator, per layer and MVM kind.
Run:  python scripts/time_vgg_step.py [--batch 128]
"""
import argparse
import resource
import time
from collections import defaultdict

import numpy as np

from imcsim import MacroConfig
from imcsim.training.backends import Fp32Backend, ImcBackend, MvmKind
from imcsim.training.layers import softmax_cross_entropy
from imcsim.training.models import build_model
from imcsim.training.optim import SGD


class TimedImc(ImcBackend):
    """ImcBackend that records the wall time of every call."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.seconds = defaultdict(float)

    def matmul(self, X, W, x_format, w_format, *, layer="", mvm=None, step=0):
        t0 = time.perf_counter()
        out = super().matmul(X, W, x_format, w_format, layer=layer, mvm=mvm, step=step)
        self.seconds[(layer, mvm.value)] += time.perf_counter() - t0
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    model = build_model("vgg-lite", (32, 32, 3), 10, seed=0)
    imc = TimedImc(MacroConfig())
    fp32 = Fp32Backend()
    for layer in model.compute_layers():
        backend = imc if layer.role == "hidden" else fp32
        layer.policy = {k: backend for k in MvmKind}
    x = rng.standard_normal((args.batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    opt = SGD(0.05)
    t0 = time.perf_counter()
    out = model.forward(x, train=True)
    loss, grad = softmax_cross_entropy(out, y)
    model.backward(grad)
    opt.step(model.params, model.grads)
    wall = time.perf_counter() - t0
    emu = sum(imc.seconds.values())
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    conv = sum(s.adc_conversions for s in imc.stats.values())
    print(f"VGG-lite, batch {args.batch}, layers 2-8 all three MVMs on IMC (variable Vref)")
    print(f"wall time of one step: {wall:.1f} s; in the emulator: {emu:.1f} s "
          f"({100 * emu / wall:.0f} %); peak RSS {peak_gib:.2f} GiB; "
          f"{conv / 1e9:.2f} G column conversions ({conv / emu / 1e6:.1f} M/s in the emulator)")
    for (layer, kind), sec in sorted(imc.seconds.items()):
        st = imc.stats[(layer, kind)]
        print(f"  {layer:4s} {kind:8s} {sec:7.1f} s  {st.adc_conversions / 1e6:9.1f} M conversions")


if __name__ == "__main__":
    main()
