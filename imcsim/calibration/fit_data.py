"""What the calibration fit reads of a measurement: code histograms per column, count and subset.

``ramp_entries`` gives one column's (F, count, code, how often) over the ramps (stage 1);
``column_samples`` the codes of every repeated row subset of a block kind (stages 2 and 3), which
``append_code_histogram`` and ``trial_rows`` turn into histogram rows with each code's SAR path.
"""
from __future__ import annotations

import numpy as np

from imcsim.calibration.measured import MeasuredCodes
from imcsim.calibration.model import ChipModel, path_trials


def ramp_entries(measured: MeasuredCodes, column: int):
    """(F, k, code, n) int64 arrays of one column over every ramp block."""
    st = measured.stimulus
    L = st.config.top_code
    out = []
    for b in st.blocks_of("ramp"):
        if b.name not in measured.codes:
            continue
        codes = measured.codes[b.name][:, :, column]               # (B, P)
        k = np.repeat(b.counts, codes.shape[1])
        d = codes.ravel()
        ok = d >= 0
        key = k[ok] * (L + 1) + d[ok]
        u, cnt = np.unique(key, return_counts=True)
        out.append(np.stack([np.full(u.shape, b.full_scale), u // (L + 1), u % (L + 1), cnt], 1))
    if not out:
        return np.zeros((0, 4), dtype=np.int64)
    return np.concatenate(out).astype(np.int64)

def column_samples(measured: MeasuredCodes, kind: str, columns):
    """(block, XNOR count k, column c, valid codes) of every row subset of every measured block
    of ``kind``; the codes are int64 (n,), the subset's repeated conversions of column c."""
    for b in measured.stimulus.blocks_of(kind):
        if b.name not in measured.codes:
            continue
        codes = measured.codes[b.name]
        for sid in np.unique(b.subset_ids):
            sel = b.subset_ids == sid
            k = int(b.counts[sel][0])
            subset = codes[sel]
            for c in columns:
                d = subset[:, :, c].ravel()
                yield b, k, c, d[d >= 0]


def append_code_histogram(rows: list, group: int, column: int, full_scale: int, codes) -> None:
    """Append (group, column, F, code, how often) for every distinct code of ``codes``."""
    vals, cnt = np.unique(codes, return_counts=True)
    for v, m in zip(vals, cnt):
        rows.append((group, column, full_scale, v, m))


def trial_rows(rows: list, model: ChipModel, adc_bits: int):
    """The histogram rows as int64 (n, 5), with each code's SAR trial levels and decisions."""
    arr = np.array(rows, dtype=np.int64)
    trials, keep = path_trials(arr[:, 3], adc_bits)
    return arr, model.trial_levels(arr[:, 1], arr[:, 2], trials), keep


__all__ = ["append_code_histogram", "column_samples", "ramp_entries", "trial_rows"]
