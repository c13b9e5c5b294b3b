"""The near-memory-computing datapath (docs/hardware-model.md 4.6).

Per array cycle the NMC offsets and scales each ADC code back into a signed dot product,
weights it by its input and weight planes and adds it to the output's accumulator
(``hw.nmc_term``, ``hw.accumulate``); after the last row tile the output stage shifts, rounds,
saturates and optionally scales and offsets (``hw.output_value``).  This module wraps those
compiled functions for the NumPy-level paths; the batched kernels call them directly.
"""
from __future__ import annotations

import numpy as np

from imcsim.config import NmcConfig, Overflow
from imcsim.kernels.cycle import nmc_cycle as _nmc_cycle_kernel
from imcsim.kernels.cycle import output_stage as _output_stage_kernel
from imcsim.mapping import ROUNDING_CODES

_EMPTY = np.zeros(0, dtype=np.int64)


def accumulator_fraction_bits(nmc: NmcConfig, x_format, w_format) -> int:
    """Fraction bits of the accumulator: S + log2(den_x) + log2(den_w)."""
    return (nmc.scale_frac_bits + int(x_format.denominator).bit_length() - 1
            + int(w_format.denominator).bit_length() - 1)


def nmc_cycle(acc, codes, active_rows: int, scale_fx, full_scale, x_plane_weight: int,
              w_plane_weights, nmc: NmcConfig, top_code: int, code_offsets):
    """The NMC's work for one array cycle of one column group.

    acc : int64 (G,) accumulators of the group's outputs; codes : (G * Kw,) ADC codes;
    scale_fx, full_scale : int or int64 (G * Kw,) the NMC scale F / L and F of the cycle or
    of each column; top_code : L; code_offsets : int64 (3, >= G * Kw) the NMC's code-offset
    registers of the group's columns (``Macro.code_offsets``: half-LSB reconstruction is in
    them).
    Returns the new accumulators int64 (G,) and the accumulator after each weight plane,
    int64 (G, Kw).
    """
    acc = np.array(acc, dtype=np.int64)
    pw_w = np.ascontiguousarray(w_plane_weights, dtype=np.int64)
    steps = np.empty((acc.shape[0], pw_w.shape[0]), dtype=np.int64)
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    scales = np.broadcast_to(np.asarray(scale_fx, dtype=np.int64), codes.shape).copy()
    full_scales = np.broadcast_to(np.asarray(full_scale, dtype=np.int64), codes.shape).copy()
    _nmc_cycle_kernel(acc, codes, int(active_rows), scales, full_scales, int(top_code),
                      np.ascontiguousarray(code_offsets, dtype=np.int64),
                      int(x_plane_weight), pw_w, nmc.scale_frac_bits, nmc.acc_bits,
                      nmc.overflow is Overflow.SATURATE, steps)
    return acc, steps


def output_stage(acc, nmc: NmcConfig, acc_frac_bits: int, out_scale=None, out_offset=None,
                 out=None):
    """Accumulator -> output register ``y_int`` (out_frac_bits, out_bits, rounding).

    Parameters
    ----------
    acc : int64 (B, N)  accumulator after the last row tile.
    out_scale : int64 (N,) or None  per-output scale with ``out_scale_frac_bits``.
    out_offset : int64 (N,) or None  per-output offset in output LSBs.
    out : int64 (B, N) C-contiguous, or None  where to write the outputs; ``acc`` itself is
        allowed (each output reads only its own accumulator), which spares a new array the
        size of the MVM's outputs when the accumulators are not needed afterwards.

    Returns int64 (B, N) (``out`` when given).
    """
    acc = np.ascontiguousarray(acc, dtype=np.int64)
    if out is None:
        y = np.empty(acc.shape, dtype=np.int64)
    elif out.shape != acc.shape or out.dtype != np.int64 or not out.flags.c_contiguous:
        raise ValueError(f"out: expected C-contiguous int64 {acc.shape}, got {out.dtype} "
                         f"{out.shape}")
    else:
        y = out
    scale = _EMPTY if out_scale is None else np.ascontiguousarray(out_scale, dtype=np.int64)
    offset = _EMPTY if out_offset is None else np.ascontiguousarray(out_offset, dtype=np.int64)
    _output_stage_kernel(acc, acc_frac_bits - nmc.out_frac_bits, ROUNDING_CODES[nmc.out_rounding],
                         nmc.out_bits, out_scale is not None, scale, nmc.out_scale_frac_bits,
                         out_offset is not None, offset, y)
    return y
