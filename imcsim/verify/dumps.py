"""Validation of measured dumps, shared by ``imcsim check``, ``check --statistical`` and
``imcsim calibrate``.

Every rule here closes a false PASS or a silent acceptance: a value that no comparison and no
fit looks at used to be dropped without a word, so a dump of the wrong chip, a truncated dump
or a dump full of placeholders passed.  Each rule raises ValueError naming the file (or the
measurement folder) and the block, cycle or column, which the CLI turns into one line and exit
status 2; a dump that satisfies them is one the comparison or the fit uses in full.

- **column range**: no value for a column (or output) the tile does not have (the exact check:
  beyond EXPECTED's width; the calibration: beyond the array's columns);
- **code range**: every code in [0, L] (L = 2**adc_bits - 1): -1 is not a code (it is the
  calibration's internal "no value" mark) and nothing above L can leave the ADC;
- **cycle range** (calibration): every row belongs to a cycle of its block, each cycle once;
- **block completeness** (calibration): a block holds every conversion of every covered column
  -- a block with half its columns would test only that half;
- **enough samples** for what the block is used for: ``MIN_STATISTICAL_CONVERSIONS`` per
  (block, column) for the statistical check, ``MIN_REPEAT_CONVERSIONS`` per repeated row subset
  and column for the noise fit;
- **degenerate ramps** (calibration): a ramp column whose codes never change (a dead chip, a
  stuck column, an all-zero dump) has no transition to fit.

The functions take duck-typed tables (``imcsim.verify.check.SignalTable``) and measurements
(``imcsim.calibration.measured.MeasuredCodes``), so that neither package imports the other here.
"""
from __future__ import annotations

import numpy as np

from imcsim.errors import first_line

#: conversions per (block, column) below which ``statistical_check`` refuses a block.  With n
#: conversions the spread ratio's standard error is about sqrt(2 / n); below 50 it exceeds 0.2,
#: and at the check's Bonferroni z (about 4.5 for the default stimulus and alpha) even a doubled
#: noise power (ratio 2) would pass: such a block claims a test it cannot make.
MIN_STATISTICAL_CONVERSIONS = 50
#: conversions per (repeated row subset, column) below which the noise fit cannot use a subset
#: (its code histogram says nothing about the spread); a repeat block with no usable subset is
#: refused by ``calibrate`` instead of being dropped in silence.
MIN_REPEAT_CONVERSIONS = 8
#: the key datasets that place a row of a dump (as ``imcsim.verify.check.KEYS``)
_KEYS = ("tile_row", "tile_col", "vector", "plane")


def read_dataset(dataset, source) -> np.ndarray:
    """Every value of an HDF5 dataset; ValueError naming ``source`` (the file) and the
    dataset when it cannot be read.

    Opening a file checks its layout, not its data: a chunk that no longer decompresses (a
    damaged file) raises only here, and h5py's message ("filter returned failure during
    read") names neither.
    """
    try:
        return dataset[()]
    except Exception as exc:              # OSError from the HDF5 filters, and others
        raise ValueError(f"{source}: cannot read {dataset.name}, the file is damaged "
                         f"({first_line(exc)})") from None


def _where(table, row: int) -> str:
    """The position of a dump row in the dump's own terms (cycle, keys or row order)."""
    keys = getattr(table, "keys", None) or {}
    if "cycle" in keys:
        return f"cycle {int(keys['cycle'][row])}"
    if all(k in keys for k in _KEYS):
        t = (int(keys["tile_row"][row]), int(keys["tile_col"][row]))
        tile = f"tile {t}, " if t != (0, 0) else ""
        return f"{tile}vector {int(keys['vector'][row])}, plane {int(keys['plane'][row])}"
    return f"row {row}"


def check_index_range(table, signal: str, width: int, what: str, limit: str,
                      block: str = "") -> None:
    """Refuse a value of ``signal`` at an index >= ``width`` (a column or output that does not
    exist); ``limit`` says what sets the width, for the message."""
    present = table.present[signal]
    if present.shape[1] <= width or not present[:, width:].any():
        return
    row, idx = np.argwhere(present[:, width:])[0]
    of = f"block {block}: " if block else ""
    raise ValueError(f"{table.source}: {of}{signal} for {what} {int(idx) + width} "
                     f"({_where(table, int(row))}), but {limit} has {width} {what}s")


def check_code_range(table, top_code: int, columns: int | None = None, block: str = "") -> None:
    """Refuse a code outside [0, top_code] (among the first ``columns`` columns when given)."""
    vals, pres = table.values["code"], table.present["code"]
    if columns is not None:
        vals, pres = vals[:, :columns], pres[:, :columns]
    bad = pres & ((vals < 0) | (vals > top_code))
    if not bad.any():
        return
    row, col = (int(v) for v in np.argwhere(bad)[0])
    of = f"block {block}: " if block else ""
    raise ValueError(f"{table.source}: {of}code {int(vals[row, col])} at {_where(table, row)}, "
                     f"column {col} is outside the ADC's codes [0, {top_code}]")


def check_actual(expected, actual, names) -> None:
    """``imcsim check``: ACTUAL's values of ``names`` lie inside EXPECTED's tile (columns,
    outputs) and its codes inside the ADC's range.

    EXPECTED's width of a signal is the tile's columns (or the outputs); a dump value past it
    used to be cut off before the comparison, so a dump of a wider array passed.
    """
    for s in names:
        width = expected.values[s].shape[1]
        what = "output" if s in ("nmc_acc", "y_int") else "column"
        check_index_range(actual, s, width, what, f"{expected.source or 'EXPECTED'}'s tile")
    if "code" in names and "code" in getattr(expected, "widths", {}):
        check_code_range(actual, (1 << int(expected.widths["code"])) - 1)


def block_codes(table, block: str, n_vectors: int, n_planes: int, covered: int,
                array_columns: int, top_code: int) -> np.ndarray:
    """The codes of one calibration block from its dump's table: int64 (B, P, covered).

    The dump's rows are placed by (tile_row, tile_col, vector, plane), else by ``cycle``
    (= vector * planes + plane), else by row order.  Refused (ValueError naming the dump and
    the block): a row outside the block's single tile and B * P cycles, a cycle given twice, a
    code for a column past the array's ``array_columns``, a code outside [0, top_code] and a
    missing conversion of a covered column.  Columns ``covered`` .. ``array_columns - 1`` (not
    driven by the stimulus) are ignored.
    """
    src = f"{table.source}: block {block}"
    if "code" not in table.values:
        raise ValueError(f"{src}: the dump has no code signal")
    B, P, n = n_vectors, n_planes, table.n
    keys = table.keys or {}
    if all(k in keys for k in _KEYS):
        tiles = (keys["tile_row"] != 0) | (keys["tile_col"] != 0)
        if tiles.any():
            row = int(np.argmax(tiles))
            raise ValueError(f"{src}: {_where(table, row)}: the calibration stimulus has one "
                             "tile (0, 0)")
        bad = (keys["plane"] < 0) | (keys["plane"] >= P)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"{src}: {_where(table, row)}: plane outside the block's "
                             f"{P} planes")
        cyc = keys["vector"] * P + keys["plane"]
    elif "cycle" in keys:
        cyc = keys["cycle"]
    else:
        cyc = np.arange(n)
    cyc = np.asarray(cyc, dtype=np.int64)
    outside = (cyc < 0) | (cyc >= B * P)
    if outside.any():
        row = int(np.argmax(outside))
        raise ValueError(f"{src}: {_where(table, row)} is outside the block's {B * P} cycles "
                         f"({B} vectors x {P} planes)")
    if np.unique(cyc).size != cyc.size:
        srt = np.sort(cyc)
        dup = int(srt[np.argmax(srt[1:] == srt[:-1])])
        rows = np.nonzero(cyc == dup)[0][:2].tolist()
        raise ValueError(f"{src}: rows {rows[0]} and {rows[1]} both give cycle {dup}; a dump "
                         "gives each cycle once")
    check_index_range(table, "code", array_columns, "column", "the array", block)
    check_code_range(table, top_code, covered, block)
    vals, pres = table.values["code"], table.present["code"]
    w = min(vals.shape[1], covered)
    out = np.zeros((B * P, covered), dtype=np.int64)
    have = np.zeros((B * P, covered), dtype=bool)
    out[cyc, :w] = vals[:, :w]
    have[cyc, :w] = pres[:, :w]
    if not have.all():
        raise ValueError(f"{src}: {_missing(have, P)}; every conversion of the block is needed")
    return out.reshape(B, P, covered)


def _missing(have: np.ndarray, P: int) -> str:
    """Which conversions of a (cycles, columns) block are missing, in one phrase."""
    n_miss, total = int((~have).sum()), have.size
    cols = np.nonzero(~have.any(axis=0))[0]
    cycles = np.nonzero(~have.any(axis=1))[0]
    if cols.size:
        return (f"no code for column{'s' if cols.size > 1 else ''} {_ranges(cols)} of "
                f"{have.shape[1]} ({n_miss} of {total} conversions missing)")
    if cycles.size:
        return (f"{cycles.size} of {have.shape[0]} cycles absent (first: vector "
                f"{int(cycles[0]) // P}, plane {int(cycles[0]) % P}; {n_miss} of {total} "
                "conversions missing)")
    row, col = (int(v) for v in np.argwhere(~have)[0])
    return (f"{n_miss} of {total} conversions missing (first: vector {row // P}, plane "
            f"{row % P}, column {col})")


def _ranges(idx) -> str:
    """[0, 1, 2, 5] -> '0..2, 5'."""
    out, start = [], None
    idx = [int(i) for i in idx]
    for i, v in enumerate(idx):
        if start is None:
            start = v
        if i + 1 == len(idx) or idx[i + 1] != v + 1:
            out.append(f"{start}" if start == v else f"{start}..{v}")
            start = None
    return ", ".join(out)


def check_measurement(measured, purpose: str) -> None:
    """The codes of a measurement are complete, in range and enough for ``purpose``.

    Parameters
    ----------
    measured : MeasuredCodes  (``load_measurement`` has checked its dumps; a measurement built
        in code -- ``calibrate({block: codes}, stimulus)`` -- is checked here only).
    purpose : "calibrate" or "statistical"  what the codes feed: the fit needs ramps that
        cross the codes and repeat subsets of ``MIN_REPEAT_CONVERSIONS``; the statistical check
        ``MIN_STATISTICAL_CONVERSIONS`` per (block, column).
    """
    if purpose not in ("calibrate", "statistical"):
        raise ValueError(f"purpose: expected calibrate or statistical, got {purpose!r}")
    st = measured.stimulus
    src = measured.source or "measurement"
    if not measured.codes:
        raise ValueError(f"{src}: no block of the calibration stimulus was measured")
    P, C, L = st.n_planes, st.covered_columns, st.config.top_code
    for name, codes in measured.codes.items():
        block = st.block(name) if name in st.block_names else None
        if block is None:
            raise ValueError(f"{src}: block {name!r} is not in the stimulus "
                             f"({', '.join(st.block_names)})")
        arr = np.asarray(codes)
        shape = (block.n_vectors, P, C)
        if arr.shape != shape:
            raise ValueError(f"{src}: block {name}: codes of shape {arr.shape}; the stimulus "
                             f"gives (vectors, planes, columns) = {shape}")
        if arr.dtype.kind not in "iu":
            raise ValueError(f"{src}: block {name}: codes must be integers, got {arr.dtype}")
        if (arr < 0).any():
            have = (arr >= 0).reshape(-1, C)
            raise ValueError(f"{src}: block {name}: {_missing(have, P)} (code -1); every "
                             "conversion of the block is needed")
        if (arr > L).any():
            b, p, c = (int(v) for v in np.argwhere(arr > L)[0])
            raise ValueError(f"{src}: block {name}: code {int(arr[b, p, c])} at vector {b}, "
                             f"plane {p}, column {c} is outside the ADC's codes [0, {L}]")
        if purpose == "statistical" and block.n_vectors * P < MIN_STATISTICAL_CONVERSIONS:
            raise ValueError(f"{src}: block {name}: {block.n_vectors * P} conversions per "
                             f"column; the statistical check needs at least "
                             f"{MIN_STATISTICAL_CONVERSIONS} to test anything")
        if purpose == "calibrate" and block.kind == "repeat":
            per_subset = np.bincount(np.unique(block.subset_ids, return_inverse=True)[1]) * P
            if per_subset.max() < MIN_REPEAT_CONVERSIONS:
                raise ValueError(f"{src}: block {name}: {int(per_subset.max())} conversions per "
                                 f"row subset and column; the noise fit needs at least "
                                 f"{MIN_REPEAT_CONVERSIONS} (more repeat_vectors)")
    if purpose == "calibrate":
        ramps = [b for b in st.blocks_of("ramp") if b.name in measured.codes]
        if not ramps:
            raise ValueError(f"{src}: no ramp block; calibrate fits the ramps first")
        for b in ramps:
            codes = np.asarray(measured.codes[b.name]).reshape(-1, C)
            flat = (codes == codes[:1]).all(axis=0)
            if flat.any():
                cols = np.nonzero(flat)[0]
                values = sorted({int(codes[0, c]) for c in cols})
                what = (f"every code is {values[0]}" if len(values) == 1 else
                        "its codes never change")
                raise ValueError(f"{src}: block {b.name} is degenerate: in column"
                                 f"{'s' if cols.size > 1 else ''} {_ranges(cols)} {what}, so "
                                 "the ramp crosses no code transition (a dead chip or column, or "
                                 "a dump of constant codes?)")


__all__ = ["MIN_REPEAT_CONVERSIONS", "MIN_STATISTICAL_CONVERSIONS", "block_codes",
           "check_actual", "check_code_range", "check_index_range", "check_measurement",
           "read_dataset"]
