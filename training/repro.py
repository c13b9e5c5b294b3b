"""Reproducible float arithmetic for ``TrainConfig.reproducible`` (``imcsim train --reproducible``).

The FP32 parts of a training step feed the quantizers, which turn a last-bit difference into a
different integer operand and, over many steps, into different weights.  By default those parts
use NumPy and the BLAS it links: ``sgemm`` picks its kernel per CPU (``OPENBLAS_CORETYPE``) and
splits sums by thread count, and NumPy's ``exp``/``log`` have separate AVX-512, AVX2 and
baseline code paths that differ in the last bit.  Here every such operation is computed with
IEEE-754 basic operations only (``+ - * /``, conversions, ``frexp``/``ldexp``), each sum in one
fixed order, by Numba kernels without fast-math:

- :func:`matmul` -- ``X @ W`` of FP32 operands: every product is exact in float64 (24 + 24 bits
  of mantissa), the products of one output are added in float64 in the order of the inner
  index, and the sum is rounded once to float32.  Threads split the rows of the result only, so
  the order of every sum is independent of the thread count; whether or not the compiler fuses
  a multiply-add does not matter, since the product is exact.
- :func:`sum_rows` / :func:`sum_all` -- float64 sums in index order (BatchNorm statistics and
  gradients, bias gradients, PACT's dL/dalpha, SAWB's moments, data normalisation).
- :func:`softmax_cross_entropy` -- the loss and its gradient with :func:`exp` and :func:`log`
  written here as polynomials (fixed evaluation order), in float64.

The result is a function of the inputs and this code alone: the same on any x86-64 CPU (any
SIMD level), with any BLAS build or core type, and any thread count.  It runs on NumPy arrays
(the host); ``device='cuda'`` with ``reproducible`` is refused by ``TrainConfig``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_LN2_HI = 6.93147180369123816490e-01     # upper bits of ln 2 (k * _LN2_HI is exact, |k| < 2**11)
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e+00
_SQRT_HALF = 0.70710678118654752440


@njit(cache=True, parallel=True)
def _matmul_kernel(a, b, out):
    m, k = a.shape
    n = b.shape[1]
    for i in prange(m):
        acc = np.zeros(n, dtype=np.float64)
        for p in range(k):
            v = np.float64(a[i, p])
            for j in range(n):
                acc[j] += v * np.float64(b[p, j])
        for j in range(n):
            out[i, j] = np.float32(acc[j])


def matmul(X, W) -> np.ndarray:
    """``X @ W`` of float32 operands (others are rounded to float32 first, as the ``fp32``
    backend does), float32 result, bit-identical on any CPU, BLAS and thread count."""
    a = np.ascontiguousarray(X, dtype=np.float32)
    b = np.ascontiguousarray(W, dtype=np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not chain")
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
    if out.size:
        _matmul_kernel(a, b, out)
    return out


@njit(cache=True)
def _sum_rows_kernel(x, out):
    n, c = x.shape
    for j in range(c):
        out[j] = 0.0
    for i in range(n):
        for j in range(c):
            out[j] += np.float64(x[i, j])


def sum_rows(x) -> np.ndarray:
    """Sum over every axis but the last, float64 (C,), in row order: x viewed as (n, C)."""
    a = np.ascontiguousarray(x)
    a = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    out = np.empty(a.shape[1], dtype=np.float64)
    _sum_rows_kernel(a, out)
    return out


def sum_all(x) -> float:
    """Sum of every element, float64, in index order."""
    return float(sum_rows(np.ascontiguousarray(x).reshape(-1, 1))[0])


def mean_rows(x) -> np.ndarray:
    """Mean over every axis but the last, float64 (C,)."""
    n = max(1, int(np.prod(np.shape(x)[:-1])))
    return sum_rows(x) / n


def sum_middle(x) -> np.ndarray:
    """(B, H, W, C) -> float64 (B, C): the sum over H and W of each image, in order."""
    return np.stack([sum_rows(img) for img in x]) if len(x) else np.zeros((0, x.shape[-1]))


@njit(cache=True, inline="always")
def exp(x):
    """e**x in float64 from basic operations: x = k ln2 + r, |r| <= ln2 / 2, a degree-13
    Taylor polynomial of e**r in Horner order, scaled by 2**k (exact)."""
    if x != x:
        return x
    if x > 709.0:
        return np.inf
    if x < -745.0:
        return 0.0
    k = math.floor(x * _INV_LN2 + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return math.ldexp(p, int(k))


@njit(cache=True, inline="always")
def log(x):
    """ln x in float64 for finite x > 0 from basic operations: x = m 2**e with m in
    [sqrt(1/2), sqrt(2)), ln m = 2 atanh(t), t = (m - 1) / (m + 1), a series to t**25."""
    if not x > 0.0 or x == np.inf:
        return np.nan if not x >= 0.0 else (-np.inf if x == 0.0 else x)
    m, e = math.frexp(x)                 # x = m 2**e, m in [0.5, 1)
    if m < _SQRT_HALF:
        m *= 2.0
        e -= 1
    t = (m - 1.0) / (m + 1.0)
    t2 = t * t
    s = 1.0 / 25.0
    for j in range(23, 0, -2):
        s = s * t2 + 1.0 / j
    return 2.0 * t * s + e * _LN2_LO + e * _LN2_HI


@njit(cache=True)
def _xent_kernel(logits, labels, grad):
    b, k = logits.shape
    loss = 0.0
    e = np.empty(k, dtype=np.float64)
    for i in range(b):
        top = np.float64(logits[i, 0])
        for j in range(1, k):
            top = max(top, np.float64(logits[i, j]))
        s = 0.0
        for j in range(k):
            e[j] = exp(np.float64(logits[i, j]) - top)
            s += e[j]
        log_s = log(s)
        loss -= (np.float64(logits[i, labels[i]]) - top) - log_s
        for j in range(k):
            p = e[j] / s
            if j == labels[i]:
                p -= 1.0
            grad[i, j] = np.float32(p / b)
    return loss / b


def softmax_cross_entropy(logits, labels) -> tuple[float, np.ndarray]:
    """Mean cross-entropy (float) and its float32 gradient with respect to the logits."""
    z = np.ascontiguousarray(logits)
    y = np.ascontiguousarray(labels, dtype=np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],) or (y.size and (y.min() < 0
                                                              or y.max() >= z.shape[1])):
        raise ValueError(f"softmax_cross_entropy: logits {z.shape} and labels {y.shape} "
                         "do not match")
    grad = np.empty(z.shape, dtype=np.float32)
    loss = _xent_kernel(z, y, grad) if z.shape[0] else 0.0
    return float(loss), grad


__all__ = ["matmul", "sum_rows", "sum_all", "mean_rows", "sum_middle", "exp", "log",
           "softmax_cross_entropy"]
