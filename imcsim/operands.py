"""Seeded random operands for demos and test vectors (``imcsim mvm``, ``imcsim vectors``)."""
from __future__ import annotations

import numpy as np


def random_operands(rng: np.random.Generator, x_format, w_format, batch: int, inner: int,
                    outputs: int, density: float) -> tuple[np.ndarray, np.ndarray]:
    """X (batch x inner) of ``x_format`` and W (inner x outputs) of ``w_format``.

    W is uniform over the binary format's integers.  A share ``density`` of X is non-zero:
    uniform integers for a binary format, +/-4**e with a uniform exponent for radix-4.
    """
    W = rng.integers(-w_format.max_value, w_format.max_value + 1, (inner, outputs))
    if x_format.kind == "binary":
        X = rng.integers(-x_format.max_value, x_format.max_value + 1, (batch, inner))
        X = np.where(rng.random((batch, inner)) < density, X, 0)
    else:
        e = rng.integers(-x_format.exponent_bias, x_format.exponent_bias + 1, (batch, inner))
        sign = np.where(rng.random((batch, inner)) < 0.5, -1.0, 1.0)
        X = np.where(rng.random((batch, inner)) < density, sign * 4.0 ** e, 0.0)
    return X, W
