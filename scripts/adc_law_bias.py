"""The floor ADC law's bias, predicted from the conversions and measured on the macro.

For each hidden VGG-lite layer's forward MVM (its inner dimension and outputs, a batch of
vectors of PACT-like activations: non-negative, half of them zero, against SAWB-like 5-bit
weights), the macro's output is compared with the exact product under the `floor` and the
`half_up` ADC laws.  The prediction for `floor`: a conversion at full scale F reads the
count low by (F - gcd(F, L)) / (2 L) counts on average (its code sits at its bin's lower
edge; the count's position in the bin is uniform over the gcd(F, L) / F grid), so the
signed dot product (2 count - A) of that cycle is low by (F - gcd(F, L)) / L, and the output,
a weighted sum of cycles, by

    sum over row tiles t and input planes p of  pw_x[p] * sum_q pw_w[q] * (F - gcd(F, L)) / L
    / (den_x * den_w).

Under `half_up` the same model predicts no bias.  Prints both against the measured mean
error, and the bias over the exact output's RMS (the diagnostics' ``bias``).

Run:  python scripts/adc_law_bias.py [--batch 64] [--seed 0]
"""
from __future__ import annotations

import argparse
import math

import numpy as np

from imcsim import BinaryFormat, Macro, MacroConfig
from imcsim.config import Rounding
from imcsim.workloads import vgg_lite_layers


def predicted_floor_bias(res, x_format, w_format, top: int) -> np.ndarray:
    """Predicted mean output error of each vector under the floor law, float64 (B,)."""
    fs = res.full_scale.astype(np.int64)                           # (T, B, P)
    g = np.gcd(fs, top)
    lossy = np.where(res.active_rows > 0, (fs - g) / top, 0.0)     # dot deficit per cycle
    pw_x = x_format.plane_weights.astype(np.float64)
    pw_w = w_format.plane_weights.astype(np.float64).sum()
    per_vector = (lossy * pw_x[None, None, :]).sum(axis=(0, 2)) * pw_w
    return -per_vector / (x_format.denominator * w_format.denominator)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    xf, wf = BinaryFormat(6), BinaryFormat(5)
    print("| layer | rows | law | lossy share | measured mean error | predicted | bias/rms |")
    print("|---|---|---|---|---|---|---|")
    for spec in vgg_lite_layers()[1:-1]:
        inner = spec.in_channels * (9 if spec.kind == "conv" else 1)
        X = rng.integers(0, 17, (args.batch, inner)) * (rng.random((args.batch, inner)) < 0.5)
        W = np.clip(np.round(rng.normal(0, 3, (inner, spec.out_channels))), -8, 8).astype(np.int64)
        exact = X @ W
        rms = math.sqrt(float(np.mean(exact.astype(np.float64) ** 2)))
        for law in (Rounding.FLOOR, Rounding.HALF_UP):
            macro = Macro(MacroConfig(adc_rounding=law))
            res = macro.mvm(X, W, xf, wf)
            err = res.y - exact
            lossy = float(np.mean((res.full_scale > 255) & (res.active_rows > 0)))
            pred = (float(predicted_floor_bias(res, xf, wf, 255).mean())
                    if law is Rounding.FLOOR else 0.0)
            print(f"| {spec.name} | {inner} | {law.value} | {lossy:.3f} | {err.mean():+.2f} | "
                  f"{pred:+.2f} | {err.mean() / rms:+.3f} |")


if __name__ == "__main__":
    main()
