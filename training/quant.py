"""Quantizers of the training algorithms (no hardware maths here).

- PACT (Choi et al. 2018) as used by Sun et al. 2020 and the paper (Sec. IV-A): activations
  clipped at a learned alpha and mapped to unsigned integers 0..16 (``ACT_LEVELS``).
- SAWB (Choi et al. 2018): weights clipped at alpha = c1 * sqrt(E[w^2]) - c2 * E[abs(w)] and
  mapped to symmetric integers -8..8 (``WEIGHT_LEVELS``).
- Radix-4 gradients (Sun et al. 2020, Eq. 2): 0 and +/-4**e, e = -3..3, after a per-layer
  power-of-two GradScale; two-phase rounding puts the weight-update copy on a grid offset by 2.
- Banner et al. 2018 8-bit integers, the paper's foil (Fig. 3): symmetric per-tensor linear
  quantization to -64..64 (the range of the 8-bit +/-1 binary format).

Every choice the papers leave open is stated in docs/training.md.  The quantizers run in the
namespace of the array they receive (NumPy or CuPy, see ``training.xp``); their scalar parameters
(clip levels, steps, GradScale) are host floats, each reduced from the tensor by one exact
reduction (a maximum) or a float one (the SAWB moments), so the element-wise arithmetic is the
same IEEE arithmetic on either device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from imcsim.training.xp import namespace_of, to_host

ACT_LEVELS = 16
WEIGHT_LEVELS = 8
INT8_LEVELS = 64
RADIX4_MIN_EXP = -3
RADIX4_MAX_EXP = 3
# SAWB coefficients (alpha = c1 sqrt(E[w^2]) - c2 E[|w|]) for 4-bit weights.  SAWB: Choi et al.,
# "Bridging the Accuracy Gap for 2-bit Quantized Neural Networks (QNN)", arXiv:1807.06964
# (2018), Sec. 3; used for the weights by Sun et al., NeurIPS 2020.  The public
# implementations of the SAWB authors' group give (c1, c2) = (3.212, 2.178) for 2 bits,
# (7.509, 6.892) for 3, (12.68, 12.80) for 4 and (17.74, 18.64) for 5 (IBM
# foundation-model-stack/fms-model-optimizer, fms_mo/quant_refactor/sawb_utils.py,
# sawb_params); the 2-bit pair is the paper's (3.2, 2.1) to its printed precision.  Until
# issue 11 this file used (12.1, 12.2), a pair found in no source.  These 4-bit values were
# fitted for 16 levels without zero; our grid has 17 levels (-8..8, step alpha / 8, the
# binary:5 range): for Gaussian weights they set alpha = 2.47 sigma against a mean-squared-
# error optimum of 2.55 sigma on this grid (+0.9 % error; 12.1 / 12.2 gave 2.37 sigma,
# +4.6 %).  docs/training.md, Quantizers.
SAWB_C1 = 12.68
SAWB_C2 = 12.80


@dataclass
class Quantized:
    """values : integer-valued (or radix-4) array handed to the MVM, in the input's namespace;
    scale : host float so that ``values * scale`` approximates the input; pass_mask : bool
    array where the straight-through estimator passes the gradient (None = everywhere)."""

    values: np.ndarray
    scale: float
    pass_mask: np.ndarray | None = None


def pact_quantize(x, alpha: float, levels: int = ACT_LEVELS) -> Quantized:
    """Unsigned PACT: round(clip(x, 0, alpha) / alpha * levels) in 0..levels.

    The STE passes dL/dx where 0 < x < alpha; dL/dalpha collects dL/dy where x >= alpha.
    """
    if alpha <= 0:
        raise ValueError(f"alpha: PACT clip must be positive, got {alpha}")
    xp = namespace_of(x)
    step = alpha / levels
    q = xp.rint(xp.clip(x, 0.0, alpha) / step)
    return Quantized(q, step, (x > 0) & (x < alpha))


def pact_alpha_sum(x, grad_out, alpha: float, reproducible: bool = False):
    """dL/dalpha of PACT in the gradient's namespace (stays on the device): the sum of the
    selected elements in order (on CuPy the selection's size costs one synchronisation).
    ``reproducible``: a float64 sum in index order (``training.repro``; NumPy only)."""
    if reproducible:
        from imcsim.training.repro import sum_all
        return sum_all(grad_out[x >= alpha])
    return namespace_of(grad_out).sum(grad_out[x >= alpha])


def pact_alpha_grad(x, grad_out, alpha: float) -> float:
    """dL/dalpha of PACT: the sum of the incoming gradient where the input was clipped."""
    return float(pact_alpha_sum(x, grad_out, alpha))


def sawb_alpha(w, reproducible: bool = False) -> float:
    """SAWB clip from the first and second moments; never below 1/levels of max abs(w).

    ``reproducible``: the moments are float64 sums in index order (``training.repro``)."""
    xp = namespace_of(w)
    w = xp.asarray(w, dtype=xp.float64)
    a = xp.abs(w)
    if reproducible:
        from imcsim.training.repro import sum_all
        n = max(1, w.size)
        mean_sq, mean_abs, peak = sum_all(w * w) / n, sum_all(a) / n, float(a.max())
    else:
        # the three reductions come back to the host together (one transfer on a device)
        mean_sq, mean_abs, peak = to_host(xp.stack([xp.mean(w * w), xp.mean(a), xp.max(a)]))
    alpha = SAWB_C1 * np.sqrt(mean_sq) - SAWB_C2 * mean_abs
    floor = peak / WEIGHT_LEVELS
    return float(max(alpha, floor, 1e-12))


def sawb_quantize(w, levels: int = WEIGHT_LEVELS, reproducible: bool = False) -> Quantized:
    """Symmetric weights: round(clip(w, -alpha, alpha) / alpha * levels) in -levels..levels."""
    xp = namespace_of(w)
    alpha = sawb_alpha(w, reproducible=reproducible)
    step = alpha / levels
    q = xp.rint(xp.clip(w, -alpha, alpha) / step)
    return Quantized(q, step, xp.abs(w) <= alpha)


@njit(cache=True, inline="always")
def _radix4_value(x):
    """``radix4_round`` of one float64, operation for operation the array expression below
    (NumPy's ``sign``: 0.0 for both zeros; NaN stays NaN, +/-inf saturates at +/-64)."""
    if x != x:
        return x
    mag = abs(x)
    top = 4.0 ** RADIX4_MAX_EXP
    if mag > top:
        out = top
    else:
        _, k = math.frexp(mag)                                  # k = 0 for mag == 0
        e = min(max((k - 1) // 2, RADIX4_MIN_EXP), RADIX4_MAX_EXP)
        lo = math.ldexp(1.0, 2 * e)
        out = min(4.0 * lo if mag > 2.5 * lo else lo, top)
        if mag < 4.0 ** RADIX4_MIN_EXP / 2:
            out = 0.0
    if x > 0:
        return out
    if x < 0:
        return -out
    return 0.0 * out


@njit(cache=True, parallel=True)
def _radix4_host(values, scale, halve, out):
    """out = radix4_round(values * scale), and ``halve``: of (values * scale) / 2, for a
    host array (C-contiguous, any float dtype; out float64 of the same shape), in one
    parallel pass without temporaries."""
    src = values.ravel()
    dst = out.ravel()
    for i in prange(src.shape[0]):
        v = np.float64(src[i]) * scale
        dst[i] = _radix4_value(v / 2.0 if halve else v)


def radix4_round(x):
    """Nearest radix-4 value: 0 or +/-4**e, e in [-3, 3] (float64, in the namespace of x).

    Nearest in the linear domain: between 4**e and 4**(e+1) the threshold is 2.5 * 4**e;
    below 4**-3 the threshold to 0 is half of 4**-3; above 64 it saturates at 64.

    The octave comes from the exact binary exponent (frexp: abs(x) = m * 2**k, m in [0.5, 1), so
    floor(log2 abs(x)) = k - 1), with no logarithm, so the result is the same bit for bit on any
    device.  (A logarithm can misplace floor(log2 abs(x)) only within an ulp of a power of two;
    there both candidate octaves give the same radix-4 value.)

    A NumPy array goes through a compiled pass (``_radix4_value``, the same operations
    element by element); other namespaces (CuPy) through the array expression.
    """
    xp = namespace_of(x)
    if xp is np:
        return _radix4_host_pass(x, 1.0, False)
    return _radix4_round_xp(x, xp)


def _radix4_host_pass(x, scale: float, halve: bool) -> np.ndarray:
    x = np.ascontiguousarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    out = np.empty(x.shape, dtype=np.float64)
    if x.size:
        _radix4_host(x, float(scale), halve, out)
    return out


def _radix4_round_xp(x, xp):
    """``radix4_round`` as array operations in namespace ``xp`` (CuPy; the compiled host
    pass is tested against it)."""
    x = xp.asarray(x, dtype=xp.float64)
    mag = xp.abs(x)
    lo_val = 4.0 ** RADIX4_MIN_EXP
    top = 4.0 ** RADIX4_MAX_EXP
    _, k = xp.frexp(mag)                                     # int32; 0 for mag == 0
    e = xp.clip((k - 1) // 2, RADIX4_MIN_EXP, RADIX4_MAX_EXP)    # floor(floor(log2 mag) / 2)
    lo = xp.ldexp(xp.ones(e.shape, xp.float64), 2 * e)      # 4**e, exactly
    out = xp.where(mag > 2.5 * lo, 4.0 * lo, lo)
    out = xp.minimum(out, top)
    out = xp.where(mag > top, top, out)                      # +/-inf (frexp gives no exponent)
    out = xp.where(mag < lo_val / 2, 0.0, out)
    return xp.sign(x) * out


def grad_scale(g) -> float:
    """GradScale: the power of two that brings max abs(g) into (32, 64], the radix-4 top octave.

    2**floor(log2(64 / peak)) from the exact binary exponent (frexp), with no logarithm: a
    logarithm's last bit differs between CPUs and could misplace the octave next to a power
    of two.
    """
    xp = namespace_of(g)
    g = xp.asarray(g)
    peak = float(xp.max(xp.abs(g))) if g.size else 0.0
    if peak == 0.0 or not np.isfinite(peak):
        return 1.0
    q = 64.0 / peak
    if not math.isfinite(q):
        return math.ldexp(1.0, 1023)
    _, e = math.frexp(q)                       # q = m 2**e, m in [0.5, 1)
    return math.ldexp(1.0, e - 1)


def radix4_two_phase(g):
    """Two-phase rounding of one gradient tensor.

    Returns (phase1, phase2, scale): ``phase1`` (radix-4 values) for the backward MVM and
    ``phase2`` (radix-4 values, to be multiplied by 2) for the weight-update MVM, both in units
    of ``1 / scale``: g ~= phase1 / scale ~= 2 * phase2 / scale.
    """
    scale = grad_scale(g)
    xp = namespace_of(g)
    if xp is np:            # g * scale is exact (a power of two), so fused with the rounding
        return _radix4_host_pass(g, scale, False), _radix4_host_pass(g, scale, True), scale
    gs = xp.asarray(g, dtype=xp.float64) * scale
    return radix4_round(gs), radix4_round(gs / 2.0), scale


def int8_quantize(x, levels: int = INT8_LEVELS) -> Quantized:
    """Banner et al. style symmetric per-tensor 8-bit: round(x / max abs(x) * levels)."""
    xp = namespace_of(x)
    x = xp.asarray(x, dtype=xp.float64)
    peak = float(xp.max(xp.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return Quantized(xp.zeros_like(x), 1.0, None)
    step = peak / levels
    return Quantized(xp.rint(x / step), step, None)
