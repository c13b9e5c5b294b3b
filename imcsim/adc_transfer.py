"""The SAR ADC characterised: one column's static transfer curve (DNL, INL, PNG plot) with the
chip's CDAC mismatch and comparator offset, for ``imcsim adc``.

Each conversion is ``hw.sar_convert`` (MSB first, a binary-weighted CDAC of mismatched unit
capacitors, comparator offset and noise), run over many held values by
``sar_convert_columns``; the MVM paths convert through ``hw.column_conversion`` in their
kernels, not through this module.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcsim.kernels.cycle import sar_columns as _sar_columns_kernel
from imcsim.kernels.hw import ANALOG_FRAC_BITS


def sar_convert_columns(values, offsets, cdac, cdac_total, full_scale: int,
                        threshold_shift: int = 0, sigma_cmp_fx: int = 0, noise_keys=None):
    """Successive approximation of held column values, every step recorded.

    Parameters
    ----------
    values, offsets : int64 (n,)  held values and comparator offsets, analog fixed point.
    cdac : int64 (n, Nb)  CDAC capacitors (CDAC_UNIT units), LSB first; cdac_total : int64 (n,).
    full_scale : int  F in rows.  threshold_shift : int  the ADC law's shift (analog fixed point).
    sigma_cmp_fx : int  comparator-noise sigma (2**-16 fixed point); noise_keys : uint64 (n,)
        the columns' comparator-noise keys (required when sigma_cmp_fx != 0).

    Returns codes int64 (n,), trial codes int64 (n, Nb) and decisions uint8 (n, Nb), MSB first.
    """
    values = np.ascontiguousarray(values, dtype=np.int64)
    n, nb = values.shape[0], np.shape(cdac)[1]
    if noise_keys is None:
        if sigma_cmp_fx:
            raise ValueError("noise_keys: required when sigma_cmp_fx is not 0")
        noise_keys = np.zeros(n, dtype=np.uint64)
    codes = np.empty(n, dtype=np.int64)
    trials = np.zeros((n, nb), dtype=np.int64)
    decisions = np.zeros((n, nb), dtype=np.uint8)
    _sar_columns_kernel(values, np.ascontiguousarray(offsets, dtype=np.int64),
                        np.ascontiguousarray(cdac, dtype=np.int64),
                        np.ascontiguousarray(cdac_total, dtype=np.int64), int(full_scale),
                        int(threshold_shift), int(sigma_cmp_fx),
                        np.ascontiguousarray(noise_keys, dtype=np.uint64), trials, decisions,
                        codes)
    return codes, trials, decisions


@dataclass
class TransferCurve:
    """inputs_rows : float64 (S,) held column values in rows; codes : int64 (S,).
    thresholds_rows : float64 (L,) lowest input giving each code 1..L (nan if missing).
    dnl, inl : float64 (L,) in LSB for codes 1..L (code L's width is unbounded: dnl[L-1] = nan).
    """

    full_scale: int
    column: int
    inputs_rows: np.ndarray
    codes: np.ndarray
    thresholds_rows: np.ndarray
    dnl: np.ndarray
    inl: np.ndarray

    @property
    def missing_codes(self) -> list[int]:
        return [k + 1 for k in range(len(self.thresholds_rows)) if np.isnan(self.thresholds_rows[k])]

    def summary(self) -> dict:
        return {"full_scale": self.full_scale, "column": self.column,
                "max_abs_dnl_lsb": float(np.nanmax(np.abs(self.dnl))) if np.any(~np.isnan(self.dnl)) else 0.0,
                "max_abs_inl_lsb": float(np.nanmax(np.abs(self.inl))) if np.any(~np.isnan(self.inl)) else 0.0,
                "missing_codes": self.missing_codes}


def transfer_curve(macro, full_scale: int, column: int = 0, steps_per_lsb: int = 64) -> TransferCurve:
    """Sweep one column's ADC from 0 to 1.02 * F rows.

    Parameters
    ----------
    macro : Macro  supplies the static CDAC weights and comparator offset of the column.
    full_scale : int  F in rows, within [L, rows].
    column : int  physical column in [0, columns).
    steps_per_lsb : int  input samples per ideal LSB (F / L rows), 4..4096.
    """
    c = macro.config
    if isinstance(full_scale, bool) or not isinstance(full_scale, (int, np.integer)) \
            or not c.top_code <= full_scale <= c.rows:
        raise ValueError(f"full_scale: must be an int in [{c.top_code}, {c.rows}], got {full_scale}")
    if isinstance(column, bool) or not isinstance(column, (int, np.integer)) \
            or not 0 <= column < c.columns:
        raise ValueError(f"column: must be an int in [0, {c.columns}), got {column}")
    if isinstance(steps_per_lsb, bool) or not isinstance(steps_per_lsb, int) \
            or not 4 <= steps_per_lsb <= 4096:
        raise ValueError(f"steps_per_lsb: must be an int in [4, 4096], got {steps_per_lsb}")
    L = c.top_code
    lsb_fx = (int(full_scale) << ANALOG_FRAC_BITS) / L
    n = int(np.ceil(1.02 * L * steps_per_lsb))
    v = np.floor(np.arange(n) * lsb_fx / steps_per_lsb).astype(np.int64)
    cdac = np.repeat(macro.cdac_weights[column][None, :], n, axis=0)
    total = np.full(n, macro.cdac_totals[column], dtype=np.int64)
    offset = np.full(n, macro.comparator_offsets[column], dtype=np.int64)
    codes, _, _ = sar_convert_columns(v, offset, cdac, total, int(full_scale),
                                      int(c.adc_threshold_shift(full_scale)))
    inputs = v / float(1 << ANALOG_FRAC_BITS)
    lsb = full_scale / L
    thresholds = np.full(L, np.nan)
    for k in range(1, L + 1):
        hit = np.nonzero(codes >= k)[0]
        if hit.size:
            thresholds[k - 1] = inputs[hit[0]]
    # a code k is missing when no input produces exactly k
    present = np.zeros(L + 1, dtype=bool)
    present[np.unique(codes)] = True
    thresholds[~present[1:]] = np.nan
    widths = np.full(L, np.nan)
    for k in range(1, L):
        lo = thresholds[k - 1] if present[k] else np.nan
        nxt = np.nonzero(codes > k)[0]
        if present[k] and nxt.size:
            widths[k - 1] = inputs[nxt[0]] - lo
        elif not present[k]:
            widths[k - 1] = 0.0
    dnl = widths / lsb - 1.0
    inl = (thresholds - np.arange(1, L + 1) * lsb) / lsb
    return TransferCurve(int(full_scale), int(column), inputs, codes.astype(np.int64),
                         thresholds, dnl, inl)


def plot_transfer_curve(curve: TransferCurve, path) -> None:
    """Write a PNG: transfer curve, DNL and INL of one column."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from imcsim.plotting import save_figure
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=False)
    axes[0].step(curve.inputs_rows, curve.codes, where="post", lw=0.8)
    axes[0].set_xlabel("held column value [rows]")
    axes[0].set_ylabel("code")
    axes[0].set_title(f"column {curve.column} SAR ADC, F = {curve.full_scale} rows")
    k = np.arange(1, len(curve.dnl) + 1)
    axes[1].bar(k, np.nan_to_num(curve.dnl), width=1.0)
    axes[1].set_ylabel("DNL [LSB]")
    axes[2].plot(k, curve.inl, lw=0.8)
    axes[2].set_ylabel("INL [LSB]")
    axes[2].set_xlabel("code")
    fig.tight_layout()
    save_figure(fig, path)
