"""CIMA write words: which 32-bit load words of a stored operand change between two versions.

The array is written through 32-bit CIMA-load words (``events`` counts a full load as
``cima_load_words``).  A stored operand W (inner x outputs) occupies, per output, one column
per bit plane of its format (``BinaryFormat(b)``: b columns, the planes of
``formats.plane_lookup_tables``, the same tables the macro packs with); the inner dimension
is cut into row tiles of ``rows`` array rows, and one word is 32 consecutive rows of one
column within one row tile (the last word of a tile may be partial: ``ceil(rows_in_tile /
32)`` words per column and tile, as ``events.tile_event_counts`` counts a load).

Rewriting a stored operand in place only needs the words whose content changed: a word is
changed when any of its 32 bits differs.  :func:`changed_cima_words` counts them; which
column of which column tile a (output, plane) pair lands in does not change the count, so the
column tiling is not needed.

The functions take NumPy arrays, or arrays of another namespace with NumPy's array methods
(CuPy): the count runs where the arrays are and comes back as one integer.
"""
from __future__ import annotations

import numpy as np

from imcsim.array_namespace import namespace_of
from imcsim.formats import BinaryFormat, plane_lookup_tables

#: bits of one CIMA-load word: 32 consecutive rows of one column
WORD_ROWS = 32




def changed_cima_words(old_int_weights, new_int_weights, w_format: BinaryFormat,
                       rows: int = 2304) -> int:
    """Number of 32-bit CIMA-load words whose content differs between two stored operands.

    Parameters
    ----------
    old_int_weights, new_int_weights : integer-valued array (inner, outputs), any int or
        float dtype
        The stored operand before and after (values of ``w_format``, in its range
        ``[-w_format.max_value, w_format.max_value]``); NumPy, or both of one device
        namespace (CuPy).
    w_format : BinaryFormat
        The stored format: ``w_format.n_planes`` columns per output.
    rows : int
        Array rows (the row-tile height), >= 1; 2304 for the paper's macro.

    Returns
    -------
    int
        Words (32 rows x 1 column within a row tile) with at least one changed bit, summed
        over every row tile, output and bit plane.  0 when the operands are equal.

    Raises
    ------
    ValueError
        Shapes differ or are not 2-D, a value is not an integer of the format's range, or
        ``rows`` is not a positive integer.
    TypeError
        ``w_format`` is not a BinaryFormat.
    """
    if not isinstance(w_format, BinaryFormat):
        raise TypeError(f"w_format: the stored operand's format must be a BinaryFormat, got "
                        f"{w_format!r}")
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise ValueError(f"rows: expected a positive integer (array rows), got {rows!r}")
    old_shape, new_shape = tuple(old_int_weights.shape), tuple(new_int_weights.shape)
    if len(old_shape) != 2 or old_shape != new_shape:
        raise ValueError(f"weights: expected two 2-D arrays (inner, outputs) of one shape, got "
                         f"{old_shape} and {new_shape}")
    xp = namespace_of(old_int_weights, new_int_weights)
    lim = w_format.max_value
    offset, pattern, _ = plane_lookup_tables(w_format)   # pattern[v + offset], bit p = plane p
    lut = xp.asarray(pattern.astype(np.int64))
    ints = []
    for name, a in (("old_int_weights", old_int_weights), ("new_int_weights", new_int_weights)):
        a = xp.asarray(a)
        # one check per operand (one transfer on a device): integers of the format's range;
        # NaN fails the integer test
        bad = ((a < -lim) | (a > lim) | (a != a.round())).any() if a.dtype.kind == "f" \
            else ((a < -lim) | (a > lim)).any()
        if bool(bad):
            raise ValueError(f"{name}: {w_format.spec()} holds integers in [{-lim}, {lim}]")
        ints.append(a.astype(np.int64) + offset)
    diff = lut[ints[0]] ^ lut[ints[1]]                   # (inner, outputs): changed cells
    inner, outputs = old_shape
    total = xp.zeros((), dtype=np.int64)
    for r0 in range(0, inner, int(rows)):
        r1 = min(inner, r0 + int(rows))
        words = -(-(r1 - r0) // WORD_ROWS)
        # rows past the tile's end (a partial last word) hold no change
        block = xp.zeros((words * WORD_ROWS, outputs), dtype=np.int64)
        block[: r1 - r0] = diff[r0:r1]
        # OR over each word's 32 rows, per column: one word = one (plane, output) column
        orred = block.reshape(words, WORD_ROWS, outputs)
        for p in range(w_format.n_planes):
            total = total + ((orred >> p) & 1).max(axis=1).sum()
    return int(total)


__all__ = ["WORD_ROWS", "changed_cima_words"]
