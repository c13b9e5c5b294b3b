"""Compute SNR and bias of the training MVMs at a VGG-lite layer size, per row mapping and ADC
threshold placement (issue 20).

The follow-up work claims its mapping of radix-4 operands to multi-level row inputs improves
robustness to analog noise, and the threshold placement decides what a small noise costs.
This script measures the compute SNR (var(exact) / var(error), the diagnostics' ``snr_db``)
and the bias (mean error over the rms of the exact product) of the three training MVMs'
streamed operands, against the same stored operand, on the paper-nonideal preset at a ladder
of noise scales. Each operand is streamed as one-hot binary rows and as the multi-level mapping
of ``imcsim train --input-mapping multi-level`` (``--mappings``). The ADC thresholds are
placed by the floor law, centred (half_up), or by the floor law on the calibrated chip
(``--placements``).

Beside each measurement it prints the analytic output-referred noise gain of the mapping.
The NMC weights cycle p's code by its cycle weight pw_p, and under the row DAC's reference
(top level D at vdd, docs/hardware-model.md 4.8) a noise of sigma volts is D * sigma level
units. So the output noise of a constant per-conversion noise grows as
sqrt(sum_p (D * pw_p)**2), relative to the format's value unit. The printed gain is this
over the one-hot format's, in dB. It is weighted by which cycles the operand actually uses
(a cycle no element drives is skipped in the sum).

    python scripts/mvm_snr.py [--vectors 64] [--scales 0,0.25,1,4] [--scaled all] [--alone]
                              [--mappings one-hot,multi-level] [--placements half_up]
                              [--out FILE]

Writes JSON (default docs/results/multilevel-snr.json) and a PNG beside it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from imcsim import Macro
from imcsim.calibration.offsets import calibrate_code_offsets
from imcsim.config import Rounding, load_preset, nonideality_names
from imcsim.formats import BinaryFormat, Radix4Format, mapped_format
from imcsim.training.diagnostics import MvmErrorSums
from imcsim.training.quant import pact_quantize, radix4_two_phase, sawb_quantize

#: VGG-lite's L4 (3x3x128 inputs): rows of one MVM
INNER = 1152
OUTPUTS = 64


def operands(vectors: int, seed: int = 0) -> dict:
    """Streamed operands of the three MVMs, with the stored operand of each, as training
    makes them: PACT activations (binary:6), radix-4 two-phase gradients (radix4:8: phase 1
    for backward, phase 2 for update), SAWB weights (binary:5)."""
    rng = np.random.default_rng(seed)
    act = pact_quantize(np.maximum(rng.standard_normal((vectors, INNER)), 0.0), 2.0)
    w = sawb_quantize(rng.standard_normal((INNER, OUTPUTS)))
    # gradients: heavy tailed, as backpropagated errors are
    g = rng.standard_t(3, size=(vectors, INNER)) * 1e-3
    phase1, phase2, _ = radix4_two_phase(g)
    stored_act = pact_quantize(np.maximum(rng.standard_normal((INNER, OUTPUTS)), 0.0), 2.0)
    return {
        "forward": (act.values, BinaryFormat(6), w.values.astype(np.int64), BinaryFormat(5)),
        "backward": (phase1, Radix4Format(8), w.values.astype(np.int64), BinaryFormat(5)),
        "update": (phase2, Radix4Format(8), stored_act.values.astype(np.int64), BinaryFormat(6)),
    }


def used_cycles(fmt, X) -> np.ndarray:
    """Which cycles any element of X drives (bool (P,))."""
    sign, level = fmt.encode_levels(X)
    return (np.asarray(level) > 0).reshape(-1, fmt.n_planes).any(axis=0)


def noise_gain_db(fmt, X, one_hot) -> float:
    """Analytic output-referred noise of ``fmt`` over ``one_hot``'s, both streaming X [dB]."""
    def power(f):
        used = used_cycles(f, X)
        weights = f.plane_weights.astype(np.float64) / float(f.denominator)
        return float(((f.top_level * weights[used]) ** 2).sum())
    return 10 * np.log10(power(fmt) / power(one_hot))


def measure(preset, args, kind, X, W, fmt, w_fmt, exact, scale, mapping, placement, skip,
            gain) -> dict:
    """One MVM on the chip of (scale, placement, skip): its SNR, bias and conversions."""
    nonideal = preset.nonideal.scaled(scale, args.scaled)
    if args.alone:
        nonideal = replace(nonideal, **{f: 0.0 for f in nonideality_names("all")
                                        if f not in nonideality_names(args.scaled)})
    law = Rounding.HALF_UP if placement == "half_up" else Rounding.FLOOR
    chip = replace(preset, adc_rounding=law, skip_masked_cycles=skip, nonideal=nonideal,
                   input_bits=max(1, int(fmt.top_level).bit_length()))
    if placement == "calibrated":
        chip = calibrate_code_offsets(chip)
    t0 = time.perf_counter()
    res = Macro(chip).mvm(X, W, fmt, w_fmt, seed=1)
    # the training diagnostics' statistics (imcsim report, metrics.json's mvm_error)
    errors = MvmErrorSums()
    errors.add_outputs(exact, res.y)
    stats = errors.summary()                 # snr_db None: the exact product everywhere
    r = {"kind": kind, "mapping": mapping, "format": fmt.spec(), "placement": placement,
         "skip_masked_cycles": skip, "scale": scale, "snr_db": stats["snr_db"],
         "bias": stats["bias"], "conversions": int(res.events.total()["adc_conversions"]),
         "noise_gain_db": gain if mapping == "multi-level" else 0.0}
    snr = "  exact" if r["snr_db"] is None else f"{r['snr_db']:6.2f} dB"
    print(f"{kind:8s} {mapping:11s} {fmt.spec():12s} {placement:10s} "
          f"{'skip ' if skip else 'every'} x{scale:<6g} SNR {snr}  "
          f"bias {r['bias']:+.4f}  conversions {r['conversions']:>8d}  "
          f"analytic gain {r['noise_gain_db']:+.1f} dB  ({time.perf_counter() - t0:.1f} s)",
          flush=True)
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=64)
    ap.add_argument("--scales", default="0,0.25,1,4")
    ap.add_argument("--scaled", default="all",
                    help="which non-idealities the scales multiply (as imcsim train "
                         "--noise-scaled): all, noise, mismatch or one field")
    ap.add_argument("--alone", action="store_true",
                    help="the other non-idealities at 0 (default: at the preset's values)")
    ap.add_argument("--mappings", default="one-hot,multi-level")
    ap.add_argument("--placements", default="half_up",
                    help="comma-separated: floor, half_up, calibrated (floor law with the "
                         "measured code offsets in the NMC)")
    ap.add_argument("--out", default="docs/results/multilevel-snr/all.json")
    args = ap.parse_args(argv)
    try:
        scales = [float(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        print(f"--scales: expected comma-separated numbers, got {args.scales!r}", file=sys.stderr)
        return 2
    if args.vectors < 2 or not scales or min(scales) < 0:
        print("--vectors: at least 2; --scales: factors >= 0", file=sys.stderr)
        return 2
    mappings = [m for m in args.mappings.split(",") if m]
    placements = [p for p in args.placements.split(",") if p]
    bad = [m for m in mappings if m not in ("one-hot", "multi-level")] + [
        p for p in placements if p not in ("floor", "half_up", "calibrated")]
    if bad or not mappings or not placements:
        print(f"--mappings / --placements: unknown or none: {bad}", file=sys.stderr)
        return 2
    preset = load_preset("paper-nonideal")
    try:
        preset.nonideal.scaled(1.0, args.scaled)
    except ValueError as exc:
        print(f"--scaled: {exc}", file=sys.stderr)
        return 2
    ops = operands(args.vectors)
    rows = []
    for kind, (X, x_fmt, W, w_fmt) in ops.items():
        exact = np.asarray(X, dtype=np.float64) @ np.asarray(W, dtype=np.float64)
        ml = mapped_format(x_fmt, "multi-level")
        gain = noise_gain_db(ml, X, x_fmt)
        for scale in scales:
            for mapping in mappings:
                fmt = x_fmt if mapping == "one-hot" else ml
                for placement in placements:
                    for skip in (False, True):
                        rows.append(measure(preset, args, kind, X, W, fmt, w_fmt, exact, scale,
                                            mapping, placement, skip, gain))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"description": __doc__.splitlines()[0], "inner": INNER, "outputs": OUTPUTS,
           "vectors": args.vectors, "preset": "paper-nonideal, half_up", "scaled": args.scaled,
           "others": "0" if args.alone else "the preset's",
           "rows": rows}
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"wrote {out} (no matplotlib: no plot)")
        return 0
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, kind in zip(axes, ops):
        for mapping, skip, style in (("one-hot", False, "o-"), ("multi-level", False, "s-"),
                                     ("one-hot", True, "o--"), ("multi-level", True, "s--")):
            for placement in placements:
                pts = [(r["scale"], r["snr_db"]) for r in rows
                       if r["kind"] == kind and r["mapping"] == mapping
                       and r["placement"] == placement
                       and r["skip_masked_cycles"] == skip and r["scale"] > 0
                       and r["snr_db"] is not None]
                if pts:
                    ax.semilogx(*zip(*pts), style,
                                label=f"{mapping}, {placement}"
                                      f"{', skip all-masked cycles' if skip else ''}")
        ax.set_title(kind)
        ax.set_xlabel(f"scale of {args.scaled} (x paper-nonideal)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("compute SNR [dB]")
    axes[0].legend()
    fig.tight_layout()
    png = out.with_suffix(".png")
    fig.savefig(png, dpi=110)
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
