"""Per-cell charges of a row tile as exact matrix products (cell or row-DAC mismatch).

With cell-capacitor or row-DAC mismatch a column's charge is the sum of its driven XNOR = 1
cells' own charges (``hw.column_charge`` over the tile's ``cap_table``), which the fast CPU
kernel adds up one active row at a time: a pass over the whole (R, C) table per vector and
sub-plane, bound by memory traffic.  For dense planes the same sums are two matrix products,
which BLAS computes blocked in cache:

    charge[c] = sum_r m_r * T0[r, c] + sum_r m_r * x_r * (T1[r, c] - T0[r, c])

with m the row's active flag, x its input bit and T0 / T1 the charges a cell holds when its
row drives input 0 / 1 (0 where its XNOR output is 0).  Every operand is an integer and every
partial sum an integer below 2**53 in magnitude (``exact_in_float64``), so float64 arithmetic
gives the exact sums in any order, blocking or thread count.  With every row active the first
product is the table's column sums.
"""
from __future__ import annotations

import numpy as np

from imcsim.tuning import GEMM_CHARGE_FRACTION, vector_chunks

#: float64 holds every integer up to 2**53 exactly
FLOAT64_EXACT = 1 << 53
#: the most bytes of unpacked rows (float64) per chunk of vectors
CHARGE_CHUNK_BYTES = 1 << 26


def exact_in_float64(cap_table: np.ndarray) -> bool:
    """Whether every partial sum of a tile's charges stays below 2**53: the rows times the
    largest magnitude of T0 and of T1 - T0 (int64 (S, 2, R, C), ``StoredTile.cap_table``)."""
    if cap_table.size == 0:
        return True
    rows = cap_table.shape[2]
    t0 = np.abs(cap_table[:, 0]).max()
    diff = np.abs(cap_table[:, 1] - cap_table[:, 0]).max()
    return rows * (int(t0) + int(diff)) < FLOAT64_EXACT


def charges_by_gemm(sub_active: np.ndarray, rows: int, cap_table: np.ndarray) -> bool:
    """Whether a tile operation takes its charges from ``cell_charges``: its sub-planes are
    dense enough on average (``tuning.GEMM_CHARGE_FRACTION`` of the tile's rows active, where
    the products beat the row gather) and the products are exact."""
    return (float(sub_active.mean()) >= GEMM_CHARGE_FRACTION * rows
            and exact_in_float64(cap_table))


def charge_chunks(batch: int, sub_planes: int, rows: int) -> list[tuple[int, int]]:
    """[b0, b1) chunks of the batch whose unpacked rows fit ``CHARGE_CHUNK_BYTES``."""
    return vector_chunks(batch, 8 * sub_planes * rows, CHARGE_CHUNK_BYTES)


def unpack_rows(words: np.ndarray, rows: int) -> np.ndarray:
    """uint64 (n, P, W) packed rows (row r at bit r % 64 of word r // 64) -> uint8 (n, P,
    rows) of 0 / 1."""
    n, planes, n_words = words.shape
    raw = np.ascontiguousarray(words, dtype="<u8").view(np.uint8)       # little-endian bytes
    bits = np.unpackbits(raw.reshape(n, planes, n_words * 8), axis=2, bitorder="little")
    return bits[:, :, :rows]


def cell_charges(xbits: np.ndarray, xmask: np.ndarray, cap_table: np.ndarray,
                 level_bits: int) -> np.ndarray:
    """Every (vector, sub-plane, column) charge of a row tile, exactly.

    Parameters
    ----------
    xbits, xmask : uint64 (n, P * S, W)  the tile's packed sub-planes (``CycleInputs``; the
        input bits are already gated by the mask).
    cap_table : int64 (S, 2, R, C)  ``StoredTile.cap_table``; ``exact_in_float64`` must hold.
    level_bits : int  S; sub-plane i is level bit i % S.

    Returns
    -------
    int64 (n, P * S, C)  what ``hw.column_charge`` gives for each, in CAP_UNIT units (scaled by
    the row DAC's drive for level bit k).
    """
    n, n_sub, _ = xbits.shape
    rows, cols = cap_table.shape[2], cap_table.shape[3]
    x = unpack_rows(xbits, rows)
    m = unpack_rows(xmask, rows)
    out = np.empty((n, n_sub, cols), dtype=np.int64)
    for k in range(level_bits):
        t0 = cap_table[k, 0].astype(np.float64)
        diff = (cap_table[k, 1] - cap_table[k, 0]).astype(np.float64)
        mk = m[:, k::level_bits, :].reshape(-1, rows)
        charge = x[:, k::level_bits, :].reshape(-1, rows).astype(np.float64) @ diff
        if mk.all():
            charge += t0.sum(axis=0)            # every row active: exact integer column sums
        else:
            charge += mk.astype(np.float64) @ t0
        out[:, k::level_bits, :] = charge.reshape(n, -1, cols).astype(np.int64)
    return out
