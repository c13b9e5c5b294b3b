"""PNG plots of a calibration: transfer curves, DNL/INL, residual code errors (matplotlib).

Each function draws one figure into ``path`` (normally an ``AtomicOutputs.temporary`` path of
``CalibrationResult.save``) and closes it.  matplotlib is optional (``imcsim[plot]``).
"""
from __future__ import annotations

import numpy as np

from imcsim.plotting import pyplot


def _save(fig, path, plt):
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=110, format="png")
    finally:
        plt.close(fig)


def _shown_columns(result, n: int = 4) -> list[int]:
    """The columns with the largest |offset| first (the most telling), at most n."""
    off = np.nan_to_num(np.abs(result.columns["offset"]), nan=-1.0)
    return [int(c) for c in np.argsort(-off)[:n]]


def _crossings(ks, mean_code, top_code):
    """Counts where a mean-code curve crosses D - 1/2, D = 1..L (nan outside the curve)."""
    m = np.maximum.accumulate(np.nan_to_num(mean_code, nan=-1.0))
    levels = np.arange(1, top_code + 1) - 0.5
    out = np.interp(levels, m + 1e-9 * np.arange(m.size), ks, left=np.nan, right=np.nan)
    out[(levels < m[0]) | (levels > m[-1])] = np.nan
    return out


def plot_transfer(result, path) -> None:
    """Per ramp: measured mean code vs count (dots) and the fitted model's (lines), top; the
    code transitions' deviation from the ideal ADC law, bottom [LSB] (offset, gain and INL)."""
    from imcsim.calibration.model import block_predictions
    plt = pyplot("calibration plots")
    st, model, meas = result.stimulus, result.model, result.measured
    L = st.config.top_code
    ramps = st.blocks_of("ramp")
    cols = _shown_columns(result)
    fig, axes = plt.subplots(2, len(ramps), figsize=(4.2 * len(ramps), 6.4), squeeze=False)
    codes_axis = np.arange(1, L + 1)
    for j, block in enumerate(ramps):
        top, bottom = axes[0][j], axes[1][j]
        pred = block_predictions(model, block, model.columns)
        ks = np.unique(block.counts).astype(np.float64)
        for i, c in enumerate(cols):
            colour = f"C{i}"
            mean_fit = np.array([pred["mean"][block.counts == k, c].mean() for k in ks])
            top.plot(ks, mean_fit, "-", color=colour, lw=1.0, label=f"column {c}")
            dev_fit = _crossings(ks, mean_fit, L) * L / block.full_scale - codes_axis
            bottom.plot(codes_axis, dev_fit, "-", color=colour, lw=1.0)
            if meas is not None and block.name in meas.codes:
                codes = meas.codes[block.name][:, :, c].astype(np.float64)
                codes[codes < 0] = np.nan
                mean_meas = np.array([np.nanmean(codes[block.counts == k]) for k in ks])
                top.plot(ks, mean_meas, ".", color=colour, ms=2)
                dev = _crossings(ks, mean_meas, L) * L / block.full_scale - codes_axis
                bottom.plot(codes_axis, dev, ".", color=colour, ms=2)
        ideal = np.clip(np.floor(ks * L / block.full_scale), 0, L)
        top.plot(ks, ideal, ":", color="k", lw=0.8, label="ideal")
        top.set_title(f"{block.name}: F = {block.full_scale} rows")
        top.set_xlabel("charged rows k")
        top.set_ylabel("mean code")
        bottom.set_xlabel("code D")
        bottom.set_ylabel("transition D-1 -> D: deviation [LSB]")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("transfer curves: measured (dots) vs fitted model (lines)", fontsize=10)
    _save(fig, path, plt)


def code_density_dnl(result, column: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Nonparametric DNL [LSB] of codes 1..L-1 from the code histogram of the densest ramp.

    The ramp's counts are equally spaced, so every code's share of conversions is its width
    (noise and the pattern error smear it, they do not bias it).  Returns (codes, dnl) or None.
    """
    meas = result.measured
    if meas is None:
        return None
    st = result.stimulus
    L = st.config.top_code
    best = max(st.blocks_of("ramp"), key=lambda b: b.full_scale)
    if best.name not in meas.codes:
        return None
    codes = meas.codes[best.name][:, :, column].ravel()
    codes = codes[codes >= 0]
    hist = np.bincount(codes, minlength=L + 1).astype(np.float64)
    inner = hist[1:L]
    if inner.sum() == 0:
        return None
    return np.arange(1, L), inner / inner.mean() - 1.0


def plot_dnl_inl(result, path) -> None:
    """Fitted DNL and INL of every column (heat maps when there are many) with code-density DNL."""
    plt = pyplot("calibration plots")
    dnl, inl = result.columns["dnl"], result.columns["inl"]
    C, L = inl.shape
    fig, axes = plt.subplots(2, 1, figsize=(8, 6.5))
    if C <= 16:
        for c in range(C):
            axes[0].plot(np.arange(1, L), dnl[c], lw=0.7)
            axes[1].plot(np.arange(1, L + 1), inl[c], lw=0.7)
        col = _shown_columns(result, 1)[0]
        cd = code_density_dnl(result, col)
        if cd is not None:
            axes[0].plot(cd[0], cd[1], "k.", ms=2.5, label=f"column {col}: code density (measured)")
            axes[0].legend(fontsize=7)
        axes[0].set_ylabel("DNL [LSB]")
        axes[1].set_ylabel("INL [LSB]")
        axes[1].set_xlabel("code")
    else:
        for ax, data, name in ((axes[0], dnl, "DNL"), (axes[1], inl, "INL")):
            lim = float(np.nanmax(np.abs(data))) or 1.0
            im = ax.imshow(data, aspect="auto", cmap="coolwarm", vmin=-lim, vmax=lim,
                           interpolation="nearest")
            fig.colorbar(im, ax=ax, label=f"{name} [LSB]")
            ax.set_ylabel("column")
        axes[1].set_xlabel("code - 1")
    axes[0].set_title("CDAC from the fit (per column; offset not included)")
    _save(fig, path, plt)


def plot_residuals(result, path) -> None:
    """Histogram of measured code minus the model's median code, per block kind, vs the model."""
    from imcsim.calibration.model import CATEGORIES, block_predictions
    plt = pyplot("calibration plots")
    st, model, meas = result.stimulus, result.model, result.measured
    kinds = [k for k in ("ramp", "repeat", "pattern") if st.blocks_of(k)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.4), squeeze=False)
    x = np.array(CATEGORIES)
    for ax, kind in zip(axes[0], kinds):
        obs = np.zeros(len(x))
        exp = np.zeros(len(x))
        for block in st.blocks_of(kind):
            if meas is None or block.name not in meas.codes:
                continue
            pred = block_predictions(model, block, model.columns)
            codes = meas.codes[block.name][:, :, :model.columns]
            valid = codes >= 0
            rel = np.clip(codes - pred["median"][:, None, :], -2, 2) + 2
            for j in range(len(x)):
                obs[j] += (valid & (rel == j)).sum()
            exp += (pred["cat"] * valid.sum(axis=1)[:, :, None]).sum(axis=(0, 1))
        tot = max(obs.sum(), 1.0)
        ax.bar(x, obs / tot, width=0.6, label="measured")
        ax.plot(x, exp / max(exp.sum(), 1.0), "ko", ms=4, label="model")
        ax.set_yscale("log")
        ax.set_xticks(x, ["<=-2", "-1", "0", "+1", ">=+2"])
        ax.set_xlabel("code - model median [LSB]")
        ax.set_title(f"{kind} blocks")
    axes[0][0].set_ylabel("share of conversions")
    axes[0][0].legend(fontsize=7)
    _save(fig, path, plt)


__all__ = ["code_density_dnl", "plot_dnl_inl", "plot_residuals", "plot_transfer"]
