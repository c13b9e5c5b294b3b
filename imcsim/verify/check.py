"""Compare a dump from RTL simulation or silicon with the golden model's expected response.

EXPECTED is a vectors folder (``imcsim vectors``), its ``vectors.h5``, or an HDF5 trace
(``imcsim mvm --trace``).  ACTUAL is one of

- HDF5: another vectors file or trace, or any file with a ``/cycles`` group (or root datasets)
  named after the signals; rows are matched by (tile_row, tile_col, vector, plane) when the
  file has those datasets, else by the ``cycle`` dataset, else by row order;
- CSV: wide (``cycle,column,code,column_count,...``; per-output signals with an ``output``
  column) or long (``cycle,signal,index,value``);
- VCD, sampled on a strobe (default ``eoc``, the trace export's), with a signal-name map;
- a folder of hex files with a ``manifest.json`` (the vectors layout, e.g. ``$writememh``).

``cycle`` always means the index of the array cycle in EXPECTED (its hex line / HDF5 row).
Signals: docs/golden-model.md.  ``compare`` returns a ``CheckReport``; ``imcsim check`` prints it.

Modules: ``table`` (SignalTable, integer conversion), ``load_h5`` (EXPECTED and HDF5 dumps),
``load_text`` (CSV, hex folders), ``load_vcd`` (VCD, signal maps); this module picks the loader
(``load_actual``), aligns and compares, and keeps their public names importable from here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imcsim.verify.dumps import check_actual
from imcsim.verify.golden import COLUMN_SIGNALS, SCALAR_SIGNALS, SIGNALS, Mismatch
from imcsim.verify.load_h5 import load_expected, load_h5_dump
from imcsim.verify.load_text import load_csv_dump, load_hex_dump
from imcsim.verify.load_vcd import DEFAULT_VCD_MAP, load_vcd_dump, parse_signal_map
from imcsim.verify.table import (
    INT64_MAX,
    KEYS,
    MALFORMED,
    MAX_INDEX,
    SignalTable,
    as_int64,
    malformed,
)
from imcsim.verify.vectors import MANIFEST_NAME

#: signals that follow from the codes: not compared in tolerance mode
DERIVED_SIGNALS = ("sar_decision", "nmc_acc", "y_int", "column_value")


def load_actual(path: str | Path, fmt: str = "auto", signal_map: dict[str, str] | None = None,
                expected: SignalTable | None = None) -> SignalTable:
    """ACTUAL: HDF5, CSV, VCD or a hex folder (``fmt``: auto, h5, csv, vcd, hex)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if fmt == "auto":
        if path.is_dir():
            fmt = "hex"
        else:
            fmt = {".h5": "h5", ".hdf5": "h5", ".csv": "csv", ".vcd": "vcd"}.get(
                path.suffix.lower())
            if fmt is None:
                raise ValueError(f"{path}: cannot tell the format from the suffix; use "
                                 "--format h5|csv|vcd|hex")
    if fmt != "hex" and path.is_dir():
        raise ValueError(f"{path}: a folder; only a hex dump (--format hex) is a folder")
    try:
        if fmt == "hex":
            if not (path / MANIFEST_NAME).is_file():
                raise ValueError(f"{path}: a hex dump folder needs a {MANIFEST_NAME}")
            return load_hex_dump(path)
        if fmt == "h5":
            return load_h5_dump(path)
        if fmt == "csv":
            return load_csv_dump(path)
        if fmt == "vcd":
            if expected is None:
                raise ValueError("vcd: needs the expected table for bus widths")
            return load_vcd_dump(path, signal_map or {}, expected)
    except MALFORMED as exc:                          # whatever else a damaged dump raises
        raise malformed(path, exc) from None
    raise ValueError(f"format: expected auto, h5, csv, vcd or hex, got {fmt!r}")


# --- comparison --------------------------------------------------------------------------
@dataclass
class CheckReport:
    """The outcome of a comparison: what was compared, every mismatch, code error statistics."""

    expected_cycles: int
    actual_cycles: int
    compared: dict[str, int]             # signal -> values compared
    mismatches: list[Mismatch]           # in (cycle, signal, index) order
    extra_cycles: int = 0                # actual rows that match no expected cycle
    code_errors: np.ndarray | None = None    # got - expected of every compared code
    tolerance: int | None = None
    skipped: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.mismatches and not self.extra_cycles and sum(self.compared.values()) > 0

    def by_signal(self) -> dict[str, int]:
        out = {}
        for m in self.mismatches:
            out[m.signal] = out.get(m.signal, 0) + 1
        return out

    def by_column(self) -> dict[tuple[str, int], int]:
        """{(kind, index): mismatches} for per-column ('column') and per-output signals."""
        out = {}
        for m in self.mismatches:
            if m.index >= 0:
                key = ("column" if m.signal in COLUMN_SIGNALS else "output", m.index)
                out[key] = out.get(key, 0) + 1
        return out

    def code_error_stats(self) -> dict | None:
        """n, mean, sigma, max abs(e) and histogram of the code errors (got - expected)."""
        e = self.code_errors
        if e is None or not e.size:
            return None
        values, counts = np.unique(e, return_counts=True)
        return {"n": int(e.size), "mean": float(e.mean()), "sigma": float(e.std()),
                "max_abs": int(np.abs(e).max()),
                "histogram": {int(v): int(c) for v, c in zip(values, counts)}}

    def to_dict(self, max_report: int = 100) -> dict:
        """JSON-ready summary (``imcsim check --json``)."""
        return {"passed": self.passed, "expected_cycles": self.expected_cycles,
                "actual_cycles": self.actual_cycles, "compared": self.compared,
                "mismatch_count": len(self.mismatches), "extra_cycles": self.extra_cycles,
                "by_signal": self.by_signal(),
                "by_column": {f"{k} {i}": v for (k, i), v in sorted(self.by_column().items())},
                "first_mismatches": [m.__dict__ for m in self.mismatches[:max_report]],
                "tolerance": self.tolerance, "skipped_signals": list(self.skipped),
                "code_errors": self.code_error_stats()}

    def format(self, max_report: int = 20) -> str:
        """The report as text: compared counts, statistics, PASS or the first mismatches."""
        lines = [f"compared {self.actual_cycles} actual against {self.expected_cycles} "
                 "expected array cycles: " + ", ".join(f"{k} {v}" for k, v in
                                                      self.compared.items())]
        if self.skipped:
            lines.append(f"not compared in tolerance mode: {', '.join(self.skipped)}")
        if self.tolerance is not None:
            lines.append(f"tolerance: codes within +/-{self.tolerance} LSB")
        st = self.code_error_stats()
        if st is not None and (self.tolerance is not None or st["max_abs"]):
            lines.append(f"code error (got - expected): n {st['n']}, mean {st['mean']:+.4f}, "
                         f"sigma {st['sigma']:.4f}, max |e| {st['max_abs']}")
            peak = max(st["histogram"].values())
            for v, c in st["histogram"].items():
                bar = "#" * max(1, round(40 * c / peak))
                lines.append(f"  {v:+4d} LSB: {c:8d} {bar}")
        if self.passed:
            lines.append("PASS: no mismatches")
            return "\n".join(lines)
        if not sum(self.compared.values()):
            lines.append("FAIL: nothing was compared (no common signals or cycles)")
        if self.extra_cycles:
            lines.append(f"FAIL: {self.extra_cycles} actual cycles have no expected cycle")
        if self.mismatches:
            lines.append(f"FAIL: {len(self.mismatches)} mismatches; first "
                         f"{min(max_report, len(self.mismatches))}:")
            lines.append(f"  {'cycle':>7} {'vector':>6} {'plane':>5} {'column':>10} "
                         f"{'signal':>13} {'expected':>14} {'got':>14}")
            for m in self.mismatches[:max_report]:
                where = "-" if m.index < 0 else (f"{m.index}" if m.signal in COLUMN_SIGNALS
                                                 else f"out {m.index}")
                got = "missing" if m.got is None else m.got
                lines.append(f"  {m.cycle:>7} {m.vector:>6} {m.plane:>5} {where:>10} "
                             f"{m.signal:>13} {m.expected:>14} {got!s:>14}")
            lines.append("summary by signal: " + ", ".join(
                f"{s} {c}/{self.compared.get(s, 0)}" for s, c in self.by_signal().items()))
            cols = sorted(self.by_column().items())
            if cols:
                lines.append("summary by column: " + ", ".join(
                    f"{k} {i}: {c}" for (k, i), c in cols))
        return "\n".join(lines)


def _align(expected: SignalTable, actual: SignalTable):
    """Expected row of every actual row (-1: none).

    Two actual rows for one expected cycle are refused (ValueError naming both): otherwise the
    last would silently win.
    """
    ek, ak = expected.keys, actual.keys
    if ek is not None and ak is not None and all(k in ak for k in KEYS):
        index = {tuple(int(ek[k][i]) for k in KEYS): i for i in range(expected.n)}
        rows = np.array([index.get(tuple(int(ak[k][j]) for k in KEYS), -1)
                         for j in range(actual.n)], dtype=np.int64)
        how = "tile_row/tile_col/vector/plane"
    elif ak is not None and "cycle" in ak:
        rows = ak["cycle"].astype(np.int64)
        rows = np.where((rows >= 0) & (rows < expected.n), rows, -1)
        how = "cycle"
    else:
        rows = np.arange(actual.n, dtype=np.int64)
        return np.where(rows < expected.n, rows, -1)
    matched = rows[rows >= 0]
    if matched.size != np.unique(matched).size:
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        dup = np.nonzero((srt[1:] == srt[:-1]) & (srt[1:] >= 0))[0][0]
        a, b = sorted((int(order[dup]), int(order[dup + 1])))
        raise ValueError(f"{actual.source}: rows {a} and {b} are both expected cycle "
                         f"{int(srt[dup])} (same {how}); a dump must give each cycle once")
    return rows


def compare(expected: SignalTable, actual: SignalTable, *, tolerance: int | None = None,
            signals: Sequence[str] | None = None) -> CheckReport:
    """Compare every signal ACTUAL has (or ``signals``) with EXPECTED."""
    names = [s for s in SIGNALS if s in actual.values and s in expected.values]
    if signals:
        unknown = [s for s in signals if s not in SIGNALS]
        if unknown:
            raise ValueError(f"signals: unknown {unknown}; known: {', '.join(SIGNALS)}")
        missing = [s for s in signals if s not in actual.values]
        if missing:
            raise ValueError(f"signals: {', '.join(missing)} not in {actual.source}")
        names = [s for s in names if s in signals]
    skipped = ()
    if tolerance is not None:
        skipped = tuple(s for s in names if s in DERIVED_SIGNALS)
        names = [s for s in names if s not in DERIVED_SIGNALS]
    # a value past the tile or a code outside [0, L] is bad input, never cut off or compared
    # within a tolerance (both passed before; imcsim.verify.dumps)
    check_actual(expected, actual, names)
    rows = _align(expected, actual)
    extra = int((rows < 0).sum())
    keys = expected.keys or {}
    mismatches, compared, code_err = [], {}, None
    for s in names:
        ev, ep = expected.values[s], expected.present[s]
        av, ap = actual.values[s], actual.present[s]
        w = ev.shape[1]
        if av.shape[1] > w:                           # nothing is present there (checked)
            av, ap = av[:, :w], ap[:, :w]
        # gather actual onto expected rows
        got = np.zeros(ev.shape, dtype=np.int64)
        have = np.zeros(ev.shape, dtype=bool)
        ok = rows >= 0
        got[rows[ok], :av.shape[1]] = av[ok]
        have[rows[ok], :ap.shape[1]] = ap[ok]
        check = ep & have
        missing = ep & ~have
        tol = tolerance if (s == "code" and tolerance is not None) else 0
        diff = got - ev
        bad = check & (np.abs(diff) > tol)
        compared[s] = int(check.sum())
        if s == "code":
            code_err = diff[check]
        for i, j in zip(*np.nonzero(bad | missing)):
            mismatches.append(Mismatch(
                int(i), s, -1 if s in SCALAR_SIGNALS else int(j), int(ev[i, j]),
                None if missing[i, j] else int(got[i, j]),
                int(keys["vector"][i]) if keys else -1, int(keys["plane"][i]) if keys else -1,
                int(keys["tile_row"][i]) if keys else 0, int(keys["tile_col"][i]) if keys else 0))
    order = {s: k for k, s in enumerate(SIGNALS)}
    mismatches.sort(key=lambda m: (m.cycle, order[m.signal], m.index))
    return CheckReport(expected.n, actual.n, compared, mismatches, extra, code_err, tolerance,
                       skipped)


def check_files(expected_path: str | Path, actual_path: str | Path, *, fmt: str = "auto",
                signal_map: dict[str, str] | None = None, tolerance: int | None = None,
                signals: Sequence[str] | None = None) -> CheckReport:
    """Load EXPECTED and ACTUAL and compare them.

    A dump with nothing to compare (no signal or no cycle in common) is bad input
    (ValueError), not a mismatch: ``imcsim check`` exits 1 only for mismatches.
    """
    expected = load_expected(expected_path)
    actual = load_actual(actual_path, fmt, signal_map, expected)
    report = compare(expected, actual, tolerance=tolerance, signals=signals)
    if not sum(report.compared.values()):
        common = [s for s in SIGNALS if s in actual.values and s in expected.values]
        why = ("no signal in common" if not common else
               f"no cycle in common (signals {', '.join(common)})")
        raise ValueError(f"{actual_path}: nothing to compare with {expected_path}: {why}")
    return report


__all__ = ["DEFAULT_VCD_MAP", "DERIVED_SIGNALS", "INT64_MAX", "KEYS", "MALFORMED", "MAX_INDEX",
           "CheckReport", "SignalTable", "as_int64", "check_files", "compare", "load_actual",
           "load_expected", "parse_signal_map"]
