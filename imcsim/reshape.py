"""The input reshape buffer: convolution input vectors from a feature map, with window reuse.

docs/hardware-model.md section 7.  The buffer takes in each input pixel's channel vector once
per image (as 32-bit words) and serves every 3x3 window that overlaps it; a buffer without
reuse would take in each window's 9 pixels separately.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcsim.mapping import words32

KERNEL = 3


@dataclass(frozen=True)
class ReshapeResult:
    """vectors : (B * Ho * Wo, 9 * C) input vectors, element order (ky, kx, c), padding 0.
    out_shape : (B, Ho, Wo).  words_in : 32-bit words the buffer took in (with reuse).
    words_without_reuse : words a buffer without window reuse would take in.
    """

    vectors: np.ndarray
    out_shape: tuple
    words_in: int
    words_without_reuse: int


def conv_output_size(size: int, stride: int) -> int:
    """Output height/width of a 3x3 'same' convolution (pad 1)."""
    return (size + 2 - KERNEL) // stride + 1


def reshape_conv_inputs(fmap, stride: int, bits_per_element: int) -> ReshapeResult:
    """Build the input vectors of a 3x3, pad-1 convolution from a feature map.

    Parameters
    ----------
    fmap : (B, H, W, C) integer or float array  the feature map (already in the input format).
    stride : 1 or 2.
    bits_per_element : bits one element occupies in a 32-bit input word (the format's K).
    """
    fmap = np.asarray(fmap)
    if fmap.ndim != 4:
        raise ValueError(f"fmap: expected (B, H, W, C), got shape {fmap.shape}")
    if fmap.dtype.kind not in "iuf":
        raise TypeError(f"fmap: expected a numeric dtype, got {fmap.dtype}")
    if stride not in (1, 2):
        raise ValueError(f"stride: must be 1 or 2, got {stride}")
    if isinstance(bits_per_element, bool) or not isinstance(bits_per_element, int) \
            or not 1 <= bits_per_element <= 32:
        raise ValueError(f"bits_per_element: must be an int in [1, 32], got {bits_per_element}")
    B, H, W, C = fmap.shape
    ho, wo = conv_output_size(H, stride), conv_output_size(W, stride)
    padded = np.zeros((B, H + 2, W + 2, C), dtype=fmap.dtype)
    padded[:, 1:H + 1, 1:W + 1, :] = fmap
    windows = np.empty((B, ho, wo, KERNEL, KERNEL, C), dtype=fmap.dtype)
    for ky in range(KERNEL):
        for kx in range(KERNEL):
            windows[:, :, :, ky, kx, :] = padded[:, ky:ky + stride * (ho - 1) + 1:stride,
                                                 kx:kx + stride * (wo - 1) + 1:stride, :]
    pixel_words = words32(C, bits_per_element)
    return ReshapeResult(
        vectors=windows.reshape(B * ho * wo, KERNEL * KERNEL * C),
        out_shape=(B, ho, wo),
        words_in=B * H * W * pixel_words,
        words_without_reuse=B * ho * wo * KERNEL * KERNEL * pixel_words,
    )


def conv_weights_to_matrix(weights) -> np.ndarray:
    """(3, 3, C, F) convolution weights -> (9 * C, F) matrix matching the vector order."""
    weights = np.asarray(weights)
    if weights.ndim != 4 or weights.shape[:2] != (KERNEL, KERNEL):
        raise ValueError(f"weights: expected (3, 3, C, F), got shape {weights.shape}")
    return weights.reshape(KERNEL * KERNEL * weights.shape[2], weights.shape[3])
