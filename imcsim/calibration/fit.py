"""Fit the non-ideality model to a chip's codes for the calibration stimulus (maximum likelihood).

``calibrate(measured)`` fits, in three stages (docs/calibration.md):

1. **ramps, per column** -- gain ``G_c`` (parasitic capacitance), comparator offset ``o_c`` and
   the CDAC capacitors (``Nb - 1`` free ratios; the DAC is ratiometric, so only ratios are
   identifiable) and one noise sigma, by maximum likelihood over the code histograms of every
   (full scale, count): a conversion of ``k`` rows holds ``u = G_c k + o_c`` and its code follows
   the exact SAR path probability of ``imcsim.calibration.model`` (all noise per step here).
2. **repeats, global** -- total dynamic noise ``sigma_t`` and its split
   ``f = sigma_sample**2 / sigma_t**2`` from identical vectors: comparator noise acts per SAR
   step (a wrong early decision is never revisited), sampling noise once per conversion; the
   two give slightly different code distributions (a second-order effect), so ``f`` is profiled
   on a grid, with one free held value per (column, subset), and reported with its
   likelihood-ratio interval.  When that interval is wider than ``split_max_width`` the split is
   not identifiable from the data, and the documented split of ``split_fallback`` is used.
   ``sigma_t`` at that split comes from a model without the free held values (incidental
   parameters, which bias it low): each subset holds stage 1's ``G_c k + o_c`` plus a random
   deviation, integrated out; where the repeats do not bound it, from the ramps.
3. **patterns, global** -- bit-cell capacitor mismatch ``sigma_cell`` from the extra spread
   between different row subsets of one count (a random effect per subset of variance
   ``sigma_cell**2 G_c**2 k (R - k) / (R - 1)``, integrated by Gauss-Hermite quadrature), with one
   free mean per (column, count).

The sigmas of the static mismatches follow from the per-column values: comparator offset
sigma from the offsets, CDAC unit sigma from the capacitor ratios (capacitor ``k`` holds
``2**k`` units, so its relative error has variance ``sigma**2 / 2**k``), both by maximum
likelihood with each value's own standard error; the parasitic ratio is ``1 / mean(G) - 1``.
Confidence intervals are 95 %: Wald intervals from the observed information (the Hessian) for
the per-column values and ``sigma_t``, likelihood-ratio (profile) intervals for the split,
the offset and CDAC sigmas, and ``sigma_cell`` when it is near 0.

``CalibrationResult.save(preset_path)`` writes the preset JSON (a ``MacroConfig`` with the fitted
sigmas, which ``imcsim.load_preset`` and ``--preset`` accept), the per-column tables in an HDF5
beside it (``<stem>.h5``), the report ``<stem>.report.json`` and its PNG plots.

Modules: ``fit_options`` (FitOptions, interval constants), ``fit_data`` (code histograms),
``fit_ramps``, ``fit_noise``, ``fit_cells`` (stages 1-3), ``fit_static`` (the static sigmas),
``result`` (CalibrationResult, its files, ``load_calibrated_model``); this module runs them in
order (``calibrate``) and keeps their public names importable from here.
"""
from __future__ import annotations

import warnings

import numpy as np

from imcsim.calibration.fit_cells import fit_cells
from imcsim.calibration.fit_data import ramp_entries
from imcsim.calibration.fit_noise import fit_noise
from imcsim.calibration.fit_options import (  # noqa: F401  (LR95: kept importable)
    LR95,
    Z95,
    FitOptions,
    single_thread_blas,
)
from imcsim.calibration.fit_ramps import fit_column
from imcsim.calibration.fit_static import cdac_sigma, offset_sigma
from imcsim.calibration.measured import MeasuredCodes
from imcsim.calibration.model import ChipModel
from imcsim.calibration.result import (  # noqa: F401  (kept importable from here)
    REPORT_FORMAT,
    TABLES_FORMAT,
    CalibrationResult,
    Estimate,
    dnl_inl,
    load_calibrated_model,
    model_uncertainty,
)
from imcsim.config import MacroConfig
from imcsim.verify.dumps import check_measurement

# The stages, the result and its files live in modules of their own (fit_options, fit_data,
# fit_ramps, fit_noise, fit_cells, fit_static, result); the names this module had stay
# importable from it, as does _cdac_sigma (the tests').
_cdac_sigma = cdac_sigma


def calibrate(measured, stimulus=None, *, options: FitOptions | None = None,
              nominal: MacroConfig | None = None) -> CalibrationResult:
    """Fit the non-ideality model to a chip's codes for the calibration stimulus.

    Parameters
    ----------
    measured : MeasuredCodes, or {block name: int (B, P, C) codes} with ``stimulus``
        the codes of every measured block (``load_measurement`` or ``simulate_measurement``),
        complete and in [0, L]; the ramps must cross the codes (``imcsim.verify.dumps``).
    stimulus : CalibrationStimulus or None  needed only when ``measured`` is a plain dict.
    options : FitOptions or None
    nominal : MacroConfig or None  the config the preset is based on (geometry, Vref, NMC,
        chip_seed) and whose noise split is the documented fallback; default the stimulus's.

    Returns a CalibrationResult (``.save(path)`` writes preset, tables, report and plots).
    """
    if isinstance(measured, dict):
        if stimulus is None:
            raise TypeError("stimulus: required when measured is a dict of codes")
        measured = MeasuredCodes(stimulus, {k: np.asarray(v, dtype=np.int64)
                                            for k, v in measured.items()}, source="codes")
    elif stimulus is not None and stimulus is not measured.stimulus:
        raise ValueError("stimulus: the measurement carries its own stimulus")
    # incomplete, out-of-range or degenerate codes end in one line naming the block, not in
    # a fit of whatever is left (or a SciPy message about NaN that names no input)
    check_measurement(measured, "calibrate")
    with single_thread_blas():
        return _calibrate(measured, options or FitOptions(), nominal)


def _calibrate(measured: MeasuredCodes, opts: FitOptions, nominal) -> CalibrationResult:
    st = measured.stimulus
    cfg = st.config
    nominal = nominal or cfg
    nb, L = cfg.adc_bits, cfg.top_code
    C = st.covered_columns
    notes, diag = [], {"columns": []}
    # --- stage 1 ------------------------------------------------------------------------
    offset = np.full(C, np.nan)
    offset_se = np.full(C, np.nan)
    gain = np.full(C, np.nan)
    gain_se = np.full(C, np.nan)
    noise = np.full(C, np.nan)
    e_hat = np.zeros((C, nb - 1))
    e_cov = np.zeros((C, nb - 1, nb - 1))
    fitted = []
    for c in range(C):
        entries = ramp_entries(measured, c)
        if entries.shape[0] < nb + 3:
            notes.append(f"column {c}: too few ramp codes; not fitted")
            diag["columns"].append({"column": c, "fitted": False})
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res, cov = fit_column(cfg, entries, opts)
        th = res.x
        gain[c], offset[c], noise[c] = th[0], th[1], np.exp(th[2])
        sd = np.sqrt(np.clip(np.diag(cov), 0, None))
        gain_se[c], offset_se[c] = sd[0], sd[1]
        e_hat[c] = th[3:]
        e_cov[c] = cov[3:, 3:]
        fitted.append(c)
        diag["columns"].append({"column": c, "fitted": True, "converged": bool(res.success),
                                "nll": float(res.fun), "iterations": int(res.nit),
                                "conversions": int(entries[:, 3].sum())})
    if not fitted:
        ramps = ", ".join(b.name for b in st.blocks_of("ramp") if b.name in measured.codes)
        raise ValueError(f"{measured.source}: no column could be fitted: the ramps ({ramps}) "
                         f"give fewer than {nb + 3} distinct (count, code) pairs per column")
    w = (2.0 ** np.arange(nb))[None, :] * (1.0 + np.concatenate([e_hat, np.zeros((C, 1))], 1))
    cdac_lsb = w / w.sum(axis=1, keepdims=True) * L
    # standard errors of the capacitors in LSB, by the delta method through the normalisation
    cdac_se = np.full((C, nb), np.nan)
    for c in fitted:
        J = np.zeros((nb, nb - 1))
        W = w[c].sum()
        for j in range(nb - 1):
            dw = np.zeros(nb)
            dw[j] = 2.0 ** j
            J[:, j] = L * (dw / W - w[c] * dw.sum() / W ** 2)
        cdac_se[c] = np.sqrt(np.clip(np.diag(J @ e_cov[c] @ J.T), 0, None))
    ok = np.array(fitted)
    sigma_col = float(np.median(noise[ok]))
    gain_f = np.where(np.isfinite(gain), gain, np.nanmean(gain))
    offset_f = np.where(np.isfinite(offset), offset, 0.0)
    cdac_f = np.where(np.isfinite(cdac_lsb), cdac_lsb, 2.0 ** np.arange(nb))
    stage1 = ChipModel(cfg, gain_f, offset_f, cdac_f, sigma_col, 0.0, 0.0,
                       source="calibration stage 1")
    offset_se_f = np.where(np.isfinite(offset_se), offset_se, 0.0)
    gain_se_f = np.where(np.isfinite(gain_se), gain_se, 0.0)
    # --- stage 2 ------------------------------------------------------------------------
    ni = nominal.nonideal
    tot2 = ni.comparator_noise_sigma ** 2 + ni.sampling_noise_sigma ** 2
    nominal_split = ni.sampling_noise_sigma ** 2 / tot2 if tot2 > 0 else 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        noise_fit = fit_noise(measured, stage1, fitted, sigma_col, opts, nominal_split,
                               u_se=lambda c, k: np.hypot(offset_se_f[c], k * gain_se_f[c]))
    if noise_fit is None:
        notes.append("no repeat block: dynamic noise from the ramps (all noise per step; the "
                     "split is not identifiable)")
        f_used = float(opts.split) if isinstance(opts.split, float) else nominal_split
        sigma_t = sigma_col
        noise_fit = {"sigma_t": sigma_t, "sigma_t_ci": (np.nanmin(noise), np.nanmax(noise)),
                     "f_hat": np.nan, "f_ci": (0.0, 1.0), "f_used": f_used,
                     "split_method": "not identifiable: no repeat block",
                     "sigma_cmp": np.sqrt(1 - f_used) * sigma_t,
                     "sigma_sample": np.sqrt(f_used) * sigma_t}
    st_lo, st_hi = noise_fit["sigma_t_ci"]
    if not (0 < st_lo and np.isfinite(st_hi)):
        # the repeats did not bound sigma_t: the ramps' per-column values do (stage 1, all
        # noise per step), with their spread over the columns as the interval
        logs = np.log(noise[ok])
        se = max(float(np.std(logs, ddof=1) / np.sqrt(ok.size)) if ok.size > 1 else 0.0, 0.05)
        f = noise_fit["f_used"]
        noise_fit.update(sigma_t=sigma_col, sigma_t_ci=(sigma_col * np.exp(-Z95 * se),
                                                        sigma_col * np.exp(Z95 * se)),
                         sigma_t_method="ramps (stage 1): the repeats did not bound it",
                         sigma_cmp=float(np.sqrt(1 - f) * sigma_col),
                         sigma_sample=float(np.sqrt(f) * sigma_col))
        notes.append("dynamic noise from the ramps: the repeat blocks did not bound it")
    sigma_t = noise_fit["sigma_t"]
    f_used = noise_fit["f_used"]
    diag["noise"] = {k: v for k, v in noise_fit.items() if k != "group_values"}
    if noise_fit["split_method"] != "maximum likelihood":
        notes.append(f"noise split: {noise_fit['split_method']}; f = {f_used:.3f} "
                     "(sampling**2 / total**2) of the total sigma, which is identified")
    # --- stage 3 ------------------------------------------------------------------------
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cell = fit_cells(measured, stage1, fitted, sigma_t, opts)
    if cell is None:
        notes.append("no pattern block: cell mismatch not identified (set to 0)")
        cell = {"sigma_cell": 0.0, "ci": (0.0, np.inf), "method": "not identified"}
    diag["cells"] = cell
    # --- global sigmas --------------------------------------------------------------------
    s_off, lo_off, hi_off = offset_sigma(offset[ok], offset_se[ok])
    s_cdac, lo_cdac, hi_cdac = cdac_sigma([e_hat[c] for c in fitted],
                                           [e_cov[c] for c in fitted], nb)
    g_mean = float(np.mean(gain[ok]))
    g_sem = float(np.sqrt(np.std(gain[ok], ddof=1) ** 2 / ok.size + np.mean(gain_se[ok] ** 2) / ok.size)) \
        if ok.size > 1 else float(gain_se[ok][0])
    par = 1.0 / g_mean - 1.0
    par_lo, par_hi = 1.0 / (g_mean + Z95 * g_sem) - 1.0, 1.0 / (g_mean - Z95 * g_sem) - 1.0
    if par_hi < 0:
        notes.append(f"mean column gain {g_mean:.5f} > 1: no parasitic attenuation (a Vref "
                     "scale error?); preset parasitic_ratio = 0")
    if ok.size < 8:
        notes.append(f"only {ok.size} columns: the static-mismatch sigmas (offset, CDAC) rest "
                     "on few samples (wide intervals)")
    st_lo, st_hi = noise_fit["sigma_t_ci"]
    f_lo, f_hi = noise_fit["f_ci"]
    est = {
        "cell_cap_sigma": Estimate(cell["sigma_cell"], cell["ci"][0], cell["ci"][1], "relative",
                                   f"pattern random effect, {cell['method']}"),
        "parasitic_ratio": Estimate(par, par_lo, par_hi, "c_par / cells",
                                    "1 / mean column gain - 1"),
        "cdac_unit_sigma": Estimate(s_cdac, lo_cdac, hi_cdac, "relative",
                                    "ML over the CDAC ratios of all columns, profile interval"),
        "comparator_offset_sigma": Estimate(s_off, lo_off, hi_off, "rows",
                                            "ML over the column offsets (mean 0), profile interval"),
        "comparator_noise_sigma": Estimate(noise_fit["sigma_cmp"],
                                           np.sqrt(max(0.0, 1 - f_hi)) * st_lo,
                                           np.sqrt(max(0.0, 1 - f_lo)) * st_hi, "rows",
                                           "sqrt(1 - f) sigma_total"),
        "sampling_noise_sigma": Estimate(noise_fit["sigma_sample"], np.sqrt(max(0.0, f_lo)) * st_lo,
                                         np.sqrt(max(0.0, f_hi)) * st_hi, "rows",
                                         "sqrt(f) sigma_total"),
        "noise_total": Estimate(sigma_t, st_lo, st_hi, "rows",
                                noise_fit.get("sigma_t_method", "ramps (stage 1)")),
        "sampling_fraction": Estimate(noise_fit["f_hat"], f_lo, f_hi, "sampling**2 / total**2",
                                      f"profile likelihood; used {f_used:.3f} "
                                      f"({noise_fit['split_method']})"),
    }
    dnl, inl = dnl_inl(cdac_f, L)
    columns = {"offset": offset, "offset_se": offset_se, "gain": gain, "gain_se": gain_se,
               "cdac": cdac_lsb, "cdac_se": cdac_se, "noise": noise, "dnl": dnl, "inl": inl}
    model = ChipModel(cfg, gain_f, offset_f, cdac_f, float(noise_fit["sigma_cmp"]),
                      float(noise_fit["sigma_sample"]), float(max(cell["sigma_cell"], 0.0)),
                      source=f"calibrated from {measured.source}",
                      uncertainty=model_uncertainty(est))
    diag["data"] = {"conversions": measured.n_conversions(), "columns": C,
                    "blocks": list(measured.codes)}
    return CalibrationResult(model, st, est, columns, notes, diag, measured)


# the stages' names stay importable from here (from before the split: the imports above);
# __all__ lists what this module defines, so the API reference documents each name once
__all__ = ["calibrate"]
