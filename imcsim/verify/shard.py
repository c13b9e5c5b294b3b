"""Sharded golden vectors and checks on Dask: the same files and the same report as one process.

Vectors (:func:`write_vectors_sharded`).  X's vectors are split into N contiguous ranges; each
range is one task that runs the golden model with ``vector_offset`` = the range's first global
vector index (``GoldenModel`` keys every noise draw by the global index, so a vector's cycles do
not depend on the split) and returns its cycle table.  The client puts the cycles back in the
unsharded order (row tile, column tile, vector, plane), renumbers ``cycle`` and ``tile_cycle``,
and writes the folder with ``write_vectors(table=...)``: every data set of vectors.h5, every
hex file and the manifest equal an unsharded run's.

Checks (:func:`check_files_sharded`).  The client loads EXPECTED and ACTUAL once
(``imcsim.verify.check.load_expected`` / ``load_actual``), splits EXPECTED's array cycles into
N contiguous ranges and hands every ACTUAL row to the range of the expected cycle it pairs
with (the pairing rule of ``imcsim.verify.check.compare``: by tile_row/tile_col/vector/plane
when ACTUAL has them, else by its ``cycle``, else by row order); each range is compared in a
task (``compare``), and the reports are merged -- mismatches, counts, code errors -- in the
unsharded order.  Where a shard raises (a malformed dump) or nothing was compared, the check
runs unsharded here, so the error is exactly the unsharded one.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from imcsim.verify.check import KEYS, CheckReport, SignalTable, check_files, compare, load_actual, load_expected
from imcsim.verify.vectors import check_vectors_folder, cycle_table, run_golden, write_vectors


def shard_ranges(n: int, shards: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``shards`` contiguous, non-empty, near-equal ranges.

    Parameters
    ----------
    n : int
        Items (vectors or array cycles), >= 0.
    shards : int
        Wanted ranges, >= 1.

    Returns
    -------
    list of (int, int)
        [(start, stop)] in order; one (0, 0) range when ``n`` is 0.
    """
    if shards < 1:
        raise ValueError(f"shards: must be >= 1, got {shards}")
    k = max(1, min(shards, n))
    edges = [round(i * n / k) for i in range(k + 1)]
    return [(edges[i], edges[i + 1]) for i in range(k)]


# --- vectors ------------------------------------------------------------------------------
def vector_shard(config, W, X, x_format, w_format, *, seed: int = 0, vref=None,
                 start: int = 0, threads: Any = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The cycle table and y_int of vectors ``start`` to ``start + len(X) - 1`` (a task).

    Parameters
    ----------
    config, W, x_format, w_format, seed, vref
        As ``write_vectors``.
    X : ndarray (b, M)
        This shard's vectors.
    start : int
        Global index of X's first vector.
    threads : int or mapping or None
        Numba/BLAS threads (see ``imcsim.sweep.execute_run``).

    Returns
    -------
    (dict, ndarray)
        ``cycle_table`` rows with ``tile_cycle`` made global, and y_int int64 (b, N).
    """
    from imcsim.sweep import task_threads
    with task_threads(threads):
        golden, records = run_golden(config, W, X, x_format, w_format, seed=seed, vref=vref,
                                     vector_offset=start)
        tab = cycle_table(golden, records)
    tab["tile_cycle"] = tab["tile_cycle"] + start * golden.n_planes
    return tab, golden.expected_outputs()["y_int"]


def merge_vector_shards(parts: Sequence[tuple[dict[str, np.ndarray], np.ndarray]]
                        ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Shard tables (in vector order) -> the unsharded cycle table and y_int.

    Cycles are ordered by (tile_row, tile_col, vector, plane), the golden model's order for one
    batch; ``cycle`` is renumbered 0..n-1.
    """
    tabs = [t for t, _ in parts]
    tab = {k: np.concatenate([t[k] for t in tabs]) for k in tabs[0]}
    order = np.lexsort((tab["plane"], tab["vector"], tab["tile_col"], tab["tile_row"]))
    tab = {k: v[order] for k, v in tab.items()}
    tab["cycle"] = np.arange(len(order), dtype=tab["cycle"].dtype)
    return tab, np.concatenate([y for _, y in parts])


def write_vectors_sharded(outdir, config, W, X, x_format, w_format, *, client, shards: int,
                          seed: int = 0, vref=None, labels: Iterable[str] | None = None,
                          force: bool = False, inputs: Iterable = (),
                          device: str = "cpu") -> dict[str, Any]:
    """``write_vectors`` with the golden model run in ``shards`` Dask tasks.

    Parameters
    ----------
    outdir, config, W, X, x_format, w_format, seed, vref, labels, force, inputs, device
        As ``imcsim.verify.vectors.write_vectors`` (the folder is checked before any task).
    client : distributed.Client
        Where the shards run (``imcsim.sweep.dask_client``).
    shards : int
        Vector ranges (at most one per vector).

    Returns
    -------
    dict
        The manifest, equal to an unsharded run's.
    """
    from imcsim.sweep import worker_threads
    check_vectors_folder(outdir, force)
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X: expected a 2-D array, got shape {X.shape}")
    threads = worker_threads(client)
    futures = [client.submit(vector_shard, config, W, X[a:b], x_format, w_format, seed=seed,
                             vref=vref, start=a, threads=threads, pure=False)
               for a, b in shard_ranges(X.shape[0], shards)]
    table = merge_vector_shards(client.gather(futures))
    return write_vectors(outdir, config, W, X, x_format, w_format, seed=seed, vref=vref,
                         labels=labels, force=force, inputs=inputs, device=device, table=table)


# --- checks -------------------------------------------------------------------------------
def _take(tab: SignalTable, rows: np.ndarray, keys: dict | None) -> SignalTable:
    out = SignalTable(len(rows), keys=keys, widths=dict(tab.widths), signed=dict(tab.signed),
                      source=tab.source)
    for name, vals in tab.values.items():
        out.values[name] = vals[rows]
        out.present[name] = tab.present[name][rows]
    return out


def _row_keys(keys: dict, n: int) -> np.ndarray:
    """(tile_row, tile_col, vector, plane) of every row as one comparable (void) value."""
    a = np.ascontiguousarray(np.stack([np.asarray(keys[k], dtype=np.int64) for k in KEYS],
                                      axis=1).reshape(n, len(KEYS)))
    return a.view(np.dtype((np.void, a.dtype.itemsize * len(KEYS)))).ravel()


def pair_rows(expected: SignalTable, actual: SignalTable) -> tuple[np.ndarray, bool]:
    """The expected row each actual row pairs with (-1: none), and whether pairing is keyed.

    Follows ``imcsim.verify.check.compare``: by (tile_row, tile_col, vector, plane) when both
    tables have them (a key given twice in EXPECTED pairs with its last row), else by ACTUAL's
    ``cycle``, else by row order.
    """
    ek, ak = expected.keys, actual.keys
    if ek is not None and ak is not None and all(k in ak for k in KEYS):
        ev, av = _row_keys(ek, expected.n), _row_keys(ak, actual.n)
        uniq, first_rev = np.unique(ev[::-1], return_index=True)
        last = expected.n - 1 - first_rev
        if not uniq.size:
            return np.full(actual.n, -1, dtype=np.int64), True
        pos = np.minimum(np.searchsorted(uniq, av), uniq.size - 1)
        return np.where(uniq[pos] == av, last[pos], -1).astype(np.int64), True
    rows = (np.asarray(ak["cycle"], dtype=np.int64) if ak is not None and "cycle" in ak
            else np.arange(actual.n, dtype=np.int64))
    return np.where((rows >= 0) & (rows < expected.n), rows, -1), False


def split_check(expected: SignalTable, actual: SignalTable, shards: int
                ) -> list[tuple[int, SignalTable, SignalTable]]:
    """[(first expected row, expected part, actual part)]: EXPECTED's cycles in contiguous
    ranges, every ACTUAL row with the range of its paired cycle (unpaired rows: the first)."""
    rows, keyed = pair_rows(expected, actual)
    ranges = shard_ranges(expected.n, shards)
    starts = np.array([a for a, _ in ranges], dtype=np.int64)
    part = np.where(rows >= 0, np.searchsorted(starts, rows, side="right") - 1, 0)
    out = []
    for k, (a, b) in enumerate(ranges):
        erows = np.arange(a, b)
        ekeys = None if expected.keys is None else {k2: v[a:b] for k2, v in expected.keys.items()}
        arows = np.nonzero(part == k)[0]
        if keyed:
            akeys = {k2: np.asarray(v)[arows] for k2, v in actual.keys.items()}
        else:                                     # pair by cycle within the part
            local = rows[arows]
            akeys = {"cycle": np.where(local >= 0, local - a, -1)}
        out.append((a, _take(expected, erows, ekeys), _take(actual, arows, akeys)))
    return out


def merge_check_reports(parts: Sequence[tuple[int, CheckReport]], expected_cycles: int,
                        actual_cycles: int) -> CheckReport:
    """Reports of contiguous expected ranges [(first row, report)] -> the unsharded report."""
    compared: dict[str, int] = {}
    mismatches, errors = [], []
    for start, rep in parts:
        for s, v in rep.compared.items():
            compared[s] = compared.get(s, 0) + v
        mismatches.extend(replace(m, cycle=m.cycle + start) for m in rep.mismatches)
        if rep.code_errors is not None:
            errors.append(rep.code_errors)
    first = parts[0][1]
    return CheckReport(expected_cycles, actual_cycles, compared, mismatches,
                       sum(rep.extra_cycles for _, rep in parts),
                       np.concatenate(errors) if errors else None, first.tolerance,
                       first.skipped)


def _compare_task(expected, actual, tolerance, signals):
    return compare(expected, actual, tolerance=tolerance, signals=signals)


def check_files_sharded(expected_path: str | Path, actual_path: str | Path, *, client,
                        shards: int, fmt: str = "auto", signal_map: dict[str, str] | None = None,
                        tolerance: int | None = None,
                        signals: Sequence[str] | None = None) -> CheckReport:
    """``imcsim.verify.check.check_files`` with the comparison in ``shards`` Dask tasks.

    Parameters
    ----------
    expected_path, actual_path, fmt, signal_map, tolerance, signals
        As ``check_files``.
    client : distributed.Client
        Where the shards run.
    shards : int
        Ranges of EXPECTED's array cycles.

    Returns
    -------
    CheckReport
        Equal to ``check_files``' report (same mismatches in the same order, counts, code
        error statistics); its errors are ``check_files``' too.
    """
    def unsharded():
        return check_files(expected_path, actual_path, fmt=fmt, signal_map=signal_map,
                           tolerance=tolerance, signals=signals)

    expected = load_expected(expected_path)
    actual = load_actual(actual_path, fmt, signal_map, expected)
    parts = split_check(expected, actual, shards)
    if len(parts) < 2:
        return unsharded()
    futures = [client.submit(_compare_task, e, a, tolerance, signals, pure=False)
               for _, e, a in parts]
    try:
        reports = client.gather(futures)
    except ValueError:                             # bad input: the unsharded check's own error
        return unsharded()
    report = merge_check_reports([(start, rep) for (start, _, _), rep in zip(parts, reports)],
                                 expected.n, actual.n)
    if not sum(report.compared.values()):          # check_files refuses it: same message
        return unsharded()
    return report
