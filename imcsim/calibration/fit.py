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
"""
from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np
from scipy import optimize, stats
from scipy.special import logsumexp

import imcsim
from imcsim.atomic import AtomicOutputs
from imcsim.calibration.measured import MeasuredCodes
from imcsim.calibration.model import (
    ChipModel,
    ModelUncertainty,
    code_bits,
    grid_for,
    log_code_prob,
    normalized_cdac,
    path_trials,
    relevant_steps,
    take_steps,
    threshold_shift_rows,
)
from imcsim.config import MacroConfig, NonIdealityConfig
from imcsim.verify.dumps import MIN_REPEAT_CONVERSIONS, check_measurement

REPORT_FORMAT = "imcsim-calibration-report"
TABLES_FORMAT = "imcsim-calibration-tables"
Z95 = 1.959963984540054
LR95 = 0.5 * stats.chi2.ppf(0.95, 1)          # 1.92: likelihood drop of a 95 % interval
#: config ranges of the preset's fields (NonIdealityConfig)
_LIMITS = {"cell_cap_sigma": 0.2, "parasitic_ratio": 10.0, "cdac_unit_sigma": 0.2,
           "comparator_offset_sigma": 64.0, "comparator_noise_sigma": 64.0,
           "sampling_noise_sigma": 64.0}


@dataclass
class Estimate:
    """A fitted value with its 95 % confidence interval [low, high] (same unit)."""

    value: float
    low: float
    high: float
    unit: str = ""
    method: str = ""

    def to_dict(self) -> dict:
        return {"value": _num(self.value), "ci95": [_num(self.low), _num(self.high)],
                "unit": self.unit, "method": self.method}

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def _num(x):
    x = float(x)
    return None if not np.isfinite(x) else x


@dataclass
class FitOptions:
    """Knobs of ``calibrate`` (defaults suit the default stimulus).

    - split : "auto", "fit" or a float in [0, 1]  how sigma_t is split into sampling and
      comparator noise: "fit" always takes the maximum-likelihood f, a float fixes f, "auto"
      takes the fit when its 95 % interval is at most ``split_max_width`` wide, else
      ``split_fallback``.
    - split_fallback : float or None  f used when the split is not identifiable; None: the
      nominal config's split (sampling**2 / total**2), or 0.5 when it has no noise.
    - split_grid : int  points of the profile over f in [0, 1] (refined around the maximum).
    - gh_nodes : int  Gauss-Hermite nodes of the pattern random effect.
    - min_sigma : float  lower bound of every noise sigma [rows] (a noise-free chip puts its
      thresholds between two counts; the fit then reports min_sigma).
    """

    split: str | float = "auto"
    split_fallback: float | None = None
    split_max_width: float = 0.6
    split_grid: int = 6
    gh_nodes: int = 16
    min_sigma: float = 2e-3


def single_thread_blas():
    """A context limiting BLAS to one thread while it is active (threadpoolctl, when installed).

    The fits solve many small problems; L-BFGS-B's bounded steps call BLAS on tiny vectors,
    where thread start-up costs far more than the work (50x slower on a busy machine).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:                                   # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


# --------------------------------------------------------------------------------------------
# data extraction
# --------------------------------------------------------------------------------------------
def _ramp_entries(measured: MeasuredCodes, column: int):
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


# --------------------------------------------------------------------------------------------
# stage 1: per-column ramp fit
# --------------------------------------------------------------------------------------------
class _ColumnFit:
    """Negative log-likelihood of one column's ramps in (G, o, log sigma, e_0..e_{Nb-2})."""

    def __init__(self, config: MacroConfig, entries: np.ndarray):
        self.nb = config.adc_bits
        self.L = config.top_code
        self.F = entries[:, 0].astype(np.float64)
        self.k = entries[:, 1].astype(np.float64)
        self.D = entries[:, 2]
        self.n = entries[:, 3].astype(np.float64)
        self.trials, self.keep = path_trials(self.D, self.nb)
        self.bits = code_bits(self.trials, self.nb)                 # (n, Nb steps, Nb caps)
        self.h = threshold_shift_rows(config, entries[:, 0])
        self.pow2 = 2.0 ** np.arange(self.nb)

    def unpack(self, theta):
        G, o, s = theta[0], theta[1], theta[2]
        e = np.append(theta[3:], 0.0)
        w = self.pow2 * (1.0 + e)
        return G, o, np.exp(s), w

    def __call__(self, theta):
        G, o, sigma, w = self.unpack(theta)
        W = w.sum()
        level = self.bits @ (w / W)                                    # (n, Nb)
        t = self.F[:, None] * level - self.h[:, None]
        u = G * self.k + o
        lp = log_code_prob(u, t, self.keep, sigma, 0.0, grad=True)
        nll = -(self.n * lp.logp).sum()
        d_u = lp.d_u * self.n
        grad = np.empty_like(theta)
        grad[0] = -(d_u * self.k).sum()
        grad[1] = -d_u.sum()
        grad[2] = -(self.n * lp.d_sc).sum() * sigma
        # d t_s / d e_j = F 2**j (bit_j(T_s) - level_s) / W
        dt = lp.d_t * self.n[:, None] * self.F[:, None]                 # (n, Nb)
        g_e = np.einsum("ns,nsj->j", dt, self.bits) - (dt * level).sum() * np.ones(self.nb)
        grad[3:] = -(g_e * self.pow2 / W)[:-1]
        return nll, grad


def _numeric_hessian(fun, theta, steps):
    """Central differences of an analytic gradient, symmetrised."""
    n = theta.size
    H = np.empty((n, n))
    for j in range(n):
        d = np.zeros(n)
        d[j] = steps[j]
        H[:, j] = (fun(theta + d)[1] - fun(theta - d)[1]) / (2 * steps[j])
    return 0.5 * (H + H.T)


def _safe_inverse(H):
    try:
        cov = np.linalg.inv(H)
        if np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0):
            return cov
    except np.linalg.LinAlgError:
        pass
    return np.linalg.pinv(H)


def _initial_guess(config: MacroConfig, entries: np.ndarray, sigma0: float) -> np.ndarray:
    L = config.top_code
    F, k, D, n = (entries[:, i].astype(np.float64) for i in range(4))
    key = F * 1e6 + k
    uk, inv = np.unique(key, return_inverse=True)
    tot = np.bincount(inv, weights=n)
    mean = np.bincount(inv, weights=n * D) / tot
    Fk = np.bincount(inv, weights=n * F) / tot
    kk = np.bincount(inv, weights=n * k) / tot
    inside = (mean > 0.7) & (mean < L - 0.7)
    G, o = 1.0, 0.0
    if inside.sum() >= 3:
        h = threshold_shift_rows(config, Fk[inside].astype(np.int64))
        y = (mean[inside] + 0.5) * Fk[inside] / L - h
        A = np.stack([kk[inside], np.ones(inside.sum())], 1)
        (G, o), *_ = np.linalg.lstsq(A, y, rcond=None)
    theta = np.zeros(3 + config.adc_bits - 1)
    theta[0], theta[1], theta[2] = G, o, np.log(sigma0)
    return theta


def _fit_column(config: MacroConfig, entries: np.ndarray, opts: FitOptions):
    """ML fit of one column; returns (scipy result with x in natural units, covariance)."""
    fit = _ColumnFit(config, entries)
    Fmin, Fmax = float(entries[:, 0].min()), float(entries[:, 0].max())
    L = config.top_code
    theta0 = _initial_guess(config, entries, 0.3 * Fmin / L)
    # optimise in scaled parameters, every one worth about a row of held value
    scale = np.concatenate([[Fmax, 1.0, 1.0], Fmax * 2.0 ** np.arange(config.adc_bits - 1) / L])

    def scaled(p):
        f, g = fit(p / scale)
        return f, g / scale
    bounds = ([(0.05, 20.0), (-float(config.rows), float(config.rows)),
               (np.log(opts.min_sigma), np.log(float(config.rows)))]
              + [(-0.9, 9.0)] * (config.adc_bits - 1))
    pbounds = [(lo * sc, hi * sc) for (lo, hi), sc in zip(bounds, scale)]
    best = None
    for s0 in (theta0[2], np.log(0.1 * Fmin / L)):
        t0 = theta0.copy()
        t0[2] = s0
        res = optimize.minimize(scaled, t0 * scale, jac=True, method="L-BFGS-B", bounds=pbounds,
                                options={"maxiter": 3000, "ftol": 1e-12, "gtol": 1e-6})
        if best is None or res.fun < best.fun:
            best = res
        if res.success:
            break
    best.x = best.x / scale
    steps = np.array([1e-5, 1e-4, 1e-4] + [1e-5] * (config.adc_bits - 1))
    H = _numeric_hessian(fit, best.x, steps)
    cov = _safe_inverse(H)
    return best, cov


# --------------------------------------------------------------------------------------------
# stage 2: dynamic noise from the repeat blocks
# --------------------------------------------------------------------------------------------
class _NoiseFit:
    """NLL of the repeat blocks in (u_g per group, log sigma_t) at a fixed split f."""

    def __init__(self, t, keep, group, n, n_groups):
        self.t, self.keep, self.group, self.n = t, keep, group, n
        self.n_groups = n_groups
        self.f = 0.5
        self.grid = None

    def set_split(self, f):
        self.f = float(f)
        a, b = np.sqrt(self.f), np.sqrt(1.0 - self.f)
        self.grid = grid_for(b, a) if 0 < self.f < 1 else None

    def sigmas(self, sigma_t):
        return np.sqrt(1.0 - self.f) * sigma_t, np.sqrt(self.f) * sigma_t

    def __call__(self, theta):
        u = theta[:-1][self.group]
        sigma_t = np.exp(theta[-1])
        sc, ss = self.sigmas(sigma_t)
        lp = log_code_prob(u, self.t, self.keep, sc, ss, grad=True, grid=self.grid)
        nll = -(self.n * lp.logp).sum()
        grad = np.empty_like(theta)
        grad[:-1] = -np.bincount(self.group, weights=self.n * lp.d_u, minlength=self.n_groups)
        dsig = np.sqrt(1.0 - self.f) * lp.d_sc + np.sqrt(self.f) * lp.d_ss
        grad[-1] = -(self.n * dsig).sum() * sigma_t
        return nll, grad

    def fit(self, theta0, opts: FitOptions):
        lo = np.log(opts.min_sigma)
        bounds = [(None, None)] * self.n_groups + [(lo, np.log(64.0))]
        return optimize.minimize(self, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                                 options={"maxiter": 3000, "ftol": 1e-13, "gtol": 1e-7})

    def log_sigma_stderr(self, theta, delta=1e-4):
        """Std error of log sigma_t, profiling the group values (their Hessian is diagonal)."""
        ng = self.n_groups
        d_all = np.zeros_like(theta)
        d_all[:ng] = delta
        h_uu = (self(theta + d_all)[1][:ng] - self(theta - d_all)[1][:ng]) / (2 * delta)
        d_s = np.zeros_like(theta)
        d_s[-1] = delta
        col = (self(theta + d_s)[1] - self(theta - d_s)[1]) / (2 * delta)
        h_us, h_ss = col[:ng], col[-1]
        info = h_ss - np.sum(np.where(h_uu > 0, h_us ** 2 / np.where(h_uu > 0, h_uu, 1), 0.0))
        return 1.0 / np.sqrt(info) if info > 0 else np.inf


def _column_samples(measured: MeasuredCodes, kind: str, columns):
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


def _append_code_histogram(rows: list, group: int, column: int, full_scale: int, codes) -> None:
    """Append (group, column, F, code, how often) for every distinct code of ``codes``."""
    vals, cnt = np.unique(codes, return_counts=True)
    for v, m in zip(vals, cnt):
        rows.append((group, column, full_scale, v, m))


def _trial_rows(rows: list, model: ChipModel, adc_bits: int):
    """The histogram rows as int64 (n, 5), with each code's SAR trial levels and decisions."""
    arr = np.array(rows, dtype=np.int64)
    trials, keep = path_trials(arr[:, 3], adc_bits)
    return arr, model.trial_levels(arr[:, 1], arr[:, 2], trials), keep


def _repeat_data(measured: MeasuredCodes, model: ChipModel, columns):
    """Entries (trial levels, keep, group, n) and each group's initial held value."""
    rows = []
    u0 = []
    g = 0
    for b, k, c, d in _column_samples(measured, "repeat", columns):
        if d.size < MIN_REPEAT_CONVERSIONS:
            continue
        _append_code_histogram(rows, g, c, b.full_scale, d)
        u0.append(model.gain[c] * k + model.offset[c])
        g += 1
    if not rows:
        return None
    arr, t, keep = _trial_rows(rows, model, measured.stimulus.config.adc_bits)
    return t, keep, arr[:, 0], arr[:, 4].astype(np.float64), np.array(u0), g, arr


def _fit_noise(measured, model, columns, sigma0, opts: FitOptions, nominal_split, u_se=None):
    data = _repeat_data(measured, model, columns)
    if data is None:
        return None
    t, keep, group, n, u0, n_groups, arr = data
    idx = relevant_steps(u0[group], t, keep, 1.0 + 20.0 * sigma0)
    t, keep = take_steps(t, idx), take_steps(keep, idx)
    nf = _NoiseFit(t, keep, group, n, n_groups)
    theta = np.append(u0, np.log(max(sigma0, 2 * opts.min_sigma)))
    profile = {}

    def run(f):
        nonlocal theta
        nf.set_split(f)
        res = nf.fit(theta, opts)
        theta = res.x
        profile[float(f)] = (-res.fun, res.x.copy())
        return -res.fun

    grid = np.linspace(0.0, 1.0, max(3, opts.split_grid))
    for f in grid:
        run(f)
    # refine around the best grid point (golden section on the profile)
    fs = np.array(sorted(profile))
    best = fs[np.argmax([profile[f][0] for f in fs])]
    lo, hi = max(0.0, best - 1.0 / (len(grid) - 1)), min(1.0, best + 1.0 / (len(grid) - 1))
    optimize.minimize_scalar(lambda f: -run(f), bounds=(lo, hi), method="bounded",
                             options={"xatol": 0.02, "maxiter": 12})
    fs = np.array(sorted(profile))
    ll = np.array([profile[f][0] for f in fs])
    i = int(np.argmax(ll))
    f_hat, ll_max = fs[i], ll[i]
    # 95 % profile interval by linear interpolation of the profile
    f_low = _crossing(fs, ll, ll_max - LR95, i, -1)
    f_high = _crossing(fs, ll, ll_max - LR95, i, +1)
    width = f_high - f_low
    chosen, how = f_hat, "maximum likelihood"
    if isinstance(opts.split, (int, float)) and not isinstance(opts.split, bool):
        chosen, how = float(opts.split), "fixed by the caller"
    elif opts.split == "auto" and width > opts.split_max_width:
        fb = opts.split_fallback if opts.split_fallback is not None else nominal_split
        chosen, how = float(fb), (f"not identifiable (95 % interval of f {f_low:.2f}..{f_high:.2f} "
                                  f"wider than {opts.split_max_width}): documented split")
    nf.set_split(chosen)
    if chosen in profile:
        theta = profile[chosen][1]
    fitres = nf.fit(theta, opts)
    # The free held value of every (subset, column) above is an incidental parameter: with it,
    # the ML sigma_t is biased low (Neyman-Scott; 3-6 % on the issue-23 chips, with the truth
    # outside its interval, and far lower when the noise is a small fraction of an LSB and
    # most subsets give one code).  sigma_t itself comes from a model without them: each
    # subset's held value is stage 1's G k + o plus a random deviation (its pattern error and
    # stage 1's error), integrated out.
    columns_of = np.zeros(n_groups, dtype=np.int64)
    columns_of[arr[:, 0]] = arr[:, 1]
    k_of = (u0 - model.offset[columns_of]) / model.gain[columns_of]
    e = np.zeros(n_groups) if u_se is None else np.asarray(u_se(columns_of, k_of), dtype=np.float64)
    re = _NoiseRandomEffectFit(t, keep, group, n, u0, e, chosen, opts.gh_nodes)
    sigma_t, se_log, omega = re.fit(float(np.exp(fitres.x[-1])), sigma0, opts)
    method = "repeat blocks, random effect per subset, Wald on log sigma"
    sc, ss = np.sqrt(1.0 - chosen) * sigma_t, np.sqrt(chosen) * sigma_t
    return {"sigma_t": sigma_t, "sigma_t_ci": (sigma_t * np.exp(-Z95 * se_log),
                                               sigma_t * np.exp(Z95 * se_log)),
            "sigma_t_method": method, "sigma_t_free_subsets": float(np.exp(fitres.x[-1])),
            "subset_sigma": omega,
            "f_hat": float(f_hat), "f_ci": (float(f_low), float(f_high)), "f_used": float(chosen),
            "split_method": how, "sigma_cmp": float(sc), "sigma_sample": float(ss),
            "profile": {"f": fs.tolist(), "loglik": (ll - ll_max).tolist()},
            "groups": int(n_groups), "conversions": int(n.sum()),
            "group_values": fitres.x[:-1]}


class _NoiseRandomEffectFit:
    """NLL of the repeat blocks in (log sigma_t, omega) at a fixed split f, without a free
    held value per (subset, column) group.

    Group g holds ``u0_g + omega_g x`` with ``x ~ N(0, 1)`` integrated by Gauss-Hermite
    quadrature, ``omega_g**2 = omega**2 + e_g**2``: ``u0_g`` and its standard error ``e_g``
    come from stage 1 (the ramps), ``omega`` [rows] is the spread of the subsets' own
    deviations (their pattern error).  Two parameters for all groups, so the ML sigma_t has no
    incidental-parameter bias.
    """

    def __init__(self, t, keep, group, n, u0, e, f, gh_nodes):
        self.t, self.keep, self.group, self.n = t, keep, group, n
        self.u0, self.e = np.asarray(u0, dtype=np.float64), np.asarray(e, dtype=np.float64)
        self.f = float(f)
        self.grid = grid_for(np.sqrt(1.0 - self.f), np.sqrt(self.f)) if 0 < self.f < 1 else None
        x, w = np.polynomial.hermite.hermgauss(gh_nodes)
        self.x = np.sqrt(2.0) * x
        self.logw = np.log(w / np.sqrt(np.pi))
        self.n_groups = self.u0.shape[0]
        Q = self.x.size
        self.t_q = np.repeat(t, Q, axis=0)
        self.keep_q = np.repeat(keep, Q, axis=0)

    def __call__(self, theta):
        sigma, omega = np.exp(theta[0]), max(float(theta[1]), 0.0)
        a, b = np.sqrt(1.0 - self.f), np.sqrt(self.f)
        og = np.sqrt(omega ** 2 + self.e ** 2)                           # (G,)
        g = self.group
        Q = self.x.size
        u = (self.u0[g][:, None] + og[g][:, None] * self.x[None, :]).ravel()
        lp = log_code_prob(u, self.t_q, self.keep_q, a * sigma, b * sigma, grad=True,
                           grid=self.grid)
        E = self.n.shape[0]
        S = np.zeros((self.n_groups, Q))
        np.add.at(S, g, lp.logp.reshape(E, Q) * self.n[:, None])
        Sj = S + self.logw[None, :]
        ell = logsumexp(Sj, axis=1)
        post = np.exp(Sj - ell[:, None])                                # (G, Q)
        d_sig = np.zeros((self.n_groups, Q))
        np.add.at(d_sig, g, ((a * lp.d_sc + b * lp.d_ss) * sigma).reshape(E, Q) * self.n[:, None])
        d_u = np.zeros((self.n_groups, Q))
        np.add.at(d_u, g, lp.d_u.reshape(E, Q) * self.n[:, None])
        d_om = (post * d_u * self.x[None, :]).sum(axis=1) * np.where(og > 0, omega / np.where(og > 0, og, 1.0), 0.0)
        grad = -np.array([(post * d_sig).sum(), d_om.sum()])
        return -ell.sum(), grad

    def fit(self, sigma_start: float, sigma0: float, opts: FitOptions):
        """(sigma_t, standard error of log sigma_t, omega) by maximum likelihood."""
        lo = np.log(opts.min_sigma)
        om_max = max(1.0, 10.0 * sigma0)
        bounds = [(lo, np.log(64.0)), (0.0, om_max)]
        best = None
        for s0 in (sigma_start, sigma0):
            t0 = np.array([np.log(max(s0, 2 * opts.min_sigma)), 0.25 * max(s0, opts.min_sigma)])
            res = optimize.minimize(self, t0, jac=True, method="L-BFGS-B", bounds=bounds,
                                    options={"maxiter": 500, "ftol": 1e-13, "gtol": 1e-8})
            if best is None or res.fun < best.fun:
                best = res
        th = best.x
        h = np.array([1e-4, 1e-4 * max(th[1], 1e-2)])
        H = np.empty((2, 2))
        for j in range(2):
            d = np.zeros(2)
            d[j] = h[j]
            lo_th = th - d
            lo_th[1] = max(lo_th[1], 0.0)
            H[:, j] = (self(th + d)[1] - self(lo_th)[1]) / (th[j] + h[j] - lo_th[j])
        H = 0.5 * (H + H.T)
        # omega on its bound 0: the information of log sigma alone
        if th[1] <= 1e-6 or np.linalg.det(H) <= 0:
            var = 1.0 / H[0, 0] if H[0, 0] > 0 else np.inf
        else:
            var = np.linalg.inv(H)[0, 0]
        se = float(np.sqrt(var)) if np.isfinite(var) and var > 0 else np.inf
        return float(np.exp(th[0])), se, float(th[1])


def _crossing(x, y, level, i, direction):
    """Where the profile y(x) falls to ``level`` walking from index i (linear interpolation)."""
    j = i
    while 0 <= j + direction < len(x):
        nxt = j + direction
        if y[nxt] < level:
            frac = (y[j] - level) / (y[j] - y[nxt]) if y[j] != y[nxt] else 0.0
            return float(x[j] + frac * (x[nxt] - x[j]))
        j = nxt
    return float(x[j])


# --------------------------------------------------------------------------------------------
# stage 3: cell mismatch from the pattern block
# --------------------------------------------------------------------------------------------
class _CellFit:
    """NLL of the pattern block in (mu per (column, count), sigma_cell); random effect per subset."""

    def __init__(self, t, keep, n, cluster, cluster_group, scale, sigma, gh_nodes):
        self.t, self.keep, self.n = t, keep, n
        # the parameter is tau of a typical group [rows]: sigma_cell = p / ref
        self.ref = float(np.median(scale))
        self.cluster = cluster                  # entry -> cluster (one subset of one column)
        self.cluster_group = cluster_group      # cluster -> group (column, count)
        self.scale = scale                      # group -> tau / sigma_cell [rows]
        self.sigma = sigma
        self.n_groups = scale.shape[0]
        self.n_clusters = cluster_group.shape[0]
        x, w = np.polynomial.hermite.hermgauss(gh_nodes)
        self.x = np.sqrt(2.0) * x                 # standard normal nodes
        self.logw = np.log(w / np.sqrt(np.pi))
        self.entry_group = cluster_group[cluster]

    def __call__(self, theta):
        mu, sc = theta[:-1], theta[-1] / self.ref
        g = self.entry_group
        tau = sc * self.scale[g]                                       # (E,)
        Q = self.x.size
        u = (mu[g][:, None] + tau[:, None] * self.x[None, :]).ravel()  # (E*Q,)
        t = np.repeat(self.t, Q, axis=0)
        keep = np.repeat(self.keep, Q, axis=0)
        lp = log_code_prob(u, t, keep, self.sigma, 0.0, grad=True)
        lpe = lp.logp.reshape(-1, Q) * self.n[:, None]                 # (E, Q)
        due = lp.d_u.reshape(-1, Q) * self.n[:, None]
        S = np.zeros((self.n_clusters, Q))
        np.add.at(S, self.cluster, lpe)
        Sj = S + self.logw[None, :]
        ell = logsumexp(Sj, axis=1)
        post = np.exp(Sj - ell[:, None])                               # (J, Q)
        D = np.zeros((self.n_clusters, Q))
        np.add.at(D, self.cluster, due)
        d_mu_c = (post * D).sum(axis=1)                                # per cluster
        d_tau_c = (post * D * self.x[None, :]).sum(axis=1)
        grad = np.empty_like(theta)
        grad[:-1] = -np.bincount(self.cluster_group, weights=d_mu_c, minlength=self.n_groups)
        grad[-1] = -(d_tau_c * self.scale[self.cluster_group]).sum() / self.ref
        return -ell.sum(), grad

    def fit(self, theta0, fixed_sigma=None):
        """Minimise over (mu, sigma_cell); theta holds sigma_cell (converted internally)."""
        bounds = [(None, None)] * self.n_groups + [(0.0, 0.5 * self.ref)]
        t0 = theta0.copy()
        t0[-1] *= self.ref
        if fixed_sigma is not None:
            bounds[-1] = (fixed_sigma * self.ref, fixed_sigma * self.ref)
            t0[-1] = fixed_sigma * self.ref
        res = optimize.minimize(self, t0, jac=True, method="L-BFGS-B", bounds=bounds,
                                options={"maxiter": 2000, "ftol": 1e-11, "gtol": 1e-6})
        res.x = res.x.copy()
        res.x[-1] /= self.ref
        return res

    def nll_grad(self, theta):
        """(nll, gradient) with theta holding sigma_cell (gradient per unit sigma_cell)."""
        t = theta.copy()
        t[-1] *= self.ref
        f, g = self(t)
        g = g.copy()
        g[-1] *= self.ref
        return f, g

    def sigma_stderr(self, theta, delta=1e-5):
        ng = self.n_groups
        d_all = np.zeros_like(theta)
        d_all[:ng] = 1e-4
        h_uu = (self.nll_grad(theta + d_all)[1][:ng] - self.nll_grad(theta - d_all)[1][:ng]) / 2e-4
        d_s = np.zeros_like(theta)
        d_s[-1] = delta
        col = (self.nll_grad(theta + d_s)[1] - self.nll_grad(theta - d_s)[1]) / (2 * delta)
        h_us, h_ss = col[:ng], col[-1]
        info = h_ss - np.sum(np.where(h_uu > 0, h_us ** 2 / np.where(h_uu > 0, h_uu, 1), 0.0))
        return 1.0 / np.sqrt(info) if info > 0 else np.inf


def _fit_cells(measured, model: ChipModel, columns, sigma_dyn, opts: FitOptions):
    st = measured.stimulus
    R = st.config.rows
    rows, u0, scale, cluster_group = [], [], [], []
    group_of, cl = {}, 0
    for b, k, c, d in _column_samples(measured, "pattern", columns):
        if not d.size:
            continue
        key = (b.name, c, k)
        if key not in group_of:
            group_of[key] = len(u0)
            u0.append(model.gain[c] * k + model.offset[c])
            scale.append(model.gain[c] * np.sqrt(k * (R - k) / max(R - 1, 1)))
        _append_code_histogram(rows, cl, c, b.full_scale, d)
        cluster_group.append(group_of[key])
        cl += 1
    if not rows:
        return None
    arr, t, keep = _trial_rows(rows, model, st.config.adc_bits)
    cl_u = np.array(u0)[np.array(cluster_group)][arr[:, 0]]
    reach = 1.0 + 10.0 * sigma_dyn + 3.0 * max(scale) * 0.05
    idx = relevant_steps(cl_u, t, keep, reach)
    t, keep = take_steps(t, idx), take_steps(keep, idx)
    cf = _CellFit(t, keep, arr[:, 4].astype(np.float64), arr[:, 0], np.array(cluster_group),
                  np.array(scale), max(sigma_dyn, opts.min_sigma), opts.gh_nodes)
    best = cf.fit(np.append(np.array(u0), 0.01))
    s_hat = float(best.x[-1])
    se = cf.sigma_stderr(best.x)
    method = "Wald (observed information)"
    low, high = max(0.0, s_hat - Z95 * se), s_hat + Z95 * se
    if not np.isfinite(se) or s_hat < 2 * se:
        # near the boundary: profile-likelihood upper bound
        method = "profile likelihood"
        nll0 = best.fun

        def excess(s):
            # each fixed sigma_cell refitted from the optimum's means and from stage 1's: from
            # the optimum's alone a smaller sigma can leave a nearly deterministic count's
            # codes impossible (probabilities at PROB_FLOOR, no gradient to move its mean)
            fits = (cf.fit(x0, fixed_sigma=s).fun for x0 in (best.x, np.append(np.array(u0), s)))
            return min(fits) - nll0 - LR95
        low, high = _profile_interval(excess, s_hat)
    return {"sigma_cell": s_hat, "ci": (low, high), "method": method,
            "subsets": int(cf.n_clusters), "groups": int(cf.n_groups),
            "conversions": int(arr[:, 4].sum())}


def _profile_interval(excess, s_hat: float, top: float = 0.5, points: int = 4):
    """The 95 % profile interval of sigma_cell: where ``excess(s)`` (the profile's drop below
    its optimum, minus the 95 % level) is <= 0.

    The profile of a poorly identified sigma_cell is not smooth (each point is a refit of
    many free means), so a root search from the optimum stopped at the first bump: 0.030 ..
    0.038 around an optimum of 0.034, for a true 0.0045 whose own drop was within 1 of the
    level (issue 23).  A scan from 0 to past the optimum takes the outermost points inside,
    interpolated linearly towards their outer neighbours.
    """
    grid = list(np.linspace(0.0, s_hat, points + 1)) if s_hat > 0 else [0.0]
    grid.append(max(2 * s_hat, 1e-3))
    values = [excess(v) for v in grid]
    while values[-1] <= 0 and grid[-1] < top:
        grid.append(min(top, 2 * grid[-1]))
        values.append(excess(grid[-1]))
    inside = [i for i, v in enumerate(values) if v <= 0] or [int(np.argmin(values))]

    def edge(i, j):                      # from grid[i] (inside) towards grid[j] (outside)
        if not 0 <= j < len(grid) or values[j] <= 0 or values[i] > 0:
            return grid[i]
        return grid[i] + (grid[j] - grid[i]) * (0.0 - values[i]) / (values[j] - values[i])
    return float(edge(min(inside), min(inside) - 1)), float(edge(max(inside), max(inside) + 1))


# --------------------------------------------------------------------------------------------
# static mismatch sigmas from the per-column values
# --------------------------------------------------------------------------------------------
def _sigma_ml(nll, upper):
    """ML of a scale sigma >= 0 for a 1-D nll(sigma), with its profile 95 % interval."""
    res = optimize.minimize_scalar(nll, bounds=(0.0, upper), method="bounded",
                                   options={"xatol": upper * 1e-7})
    s, m = float(res.x), float(res.fun)
    if nll(0.0) <= m:
        s, m = 0.0, float(nll(0.0))

    def excess(x):
        return nll(x) - m - LR95
    hi = upper if excess(upper) < 0 else optimize.brentq(excess, s, upper, xtol=upper * 1e-7)
    lo = 0.0 if s == 0.0 or excess(0.0) < 0 else optimize.brentq(excess, 0.0, s, xtol=upper * 1e-7)
    return s, lo, hi


def _offset_sigma(offsets, se):
    ok = np.isfinite(offsets) & np.isfinite(se)
    o, v = offsets[ok], se[ok] ** 2

    def nll(s):
        var = s * s + v
        return 0.5 * np.sum(np.log(var) + o * o / var)
    return _sigma_ml(nll, max(1e-3, 10 * float(np.sqrt(np.mean(o * o))) + 1e-3))


def _cdac_sigma(e_list, cov_list, nb):
    """Unit-capacitor sigma from the capacitor ratios e (relative to the MSB) of every column."""
    k = np.arange(nb - 1)
    A = np.diag(2.0 ** -k) + 2.0 ** -(nb - 1)

    def nll(s):
        tot = 0.0
        for e, V in zip(e_list, cov_list):
            S = s * s * A + V + 1e-14 * np.eye(nb - 1)
            sign, logdet = np.linalg.slogdet(S)
            tot += 0.5 * (logdet + e @ np.linalg.solve(S, e))
        return tot
    scale = float(np.sqrt(np.mean([np.mean(e * e * 2.0 ** k) for e in e_list]))) if e_list else 0.1
    return _sigma_ml(nll, max(1e-3, 10 * scale + 1e-3))


# --------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------
@dataclass
class CalibrationResult:
    """What ``calibrate`` found.

    Attributes
    ----------
    model : ChipModel  the fitted chip (per-column tables, sigmas); ``statistical_check`` and
        ``CalibratedMacro`` use it.
    stimulus : CalibrationStimulus
    estimates : {name: Estimate}  the preset's six sigmas (NonIdealityConfig names) plus
        ``noise_total`` [rows] and ``sampling_fraction`` (sigma_sample**2 / total**2).
    columns : {name: array}  per column: offset, offset_se [rows]; gain, gain_se [1];
        cdac, cdac_se (C, Nb) [LSB, ideal 2**k]; noise [rows] (stage 1); dnl (C, L-1) and
        inl (C, L) [LSB] of the fitted CDAC (offset not included: it is ``offset``).
    notes : list of str  what was and was not identifiable.
    diagnostics : dict  convergence, profile of the split, data used.
    """

    model: ChipModel
    stimulus: object
    estimates: dict[str, Estimate]
    columns: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)
    #: the measurement it was fitted to (for the plots; not saved)
    measured: MeasuredCodes | None = field(default=None, repr=False)

    def preset(self, base: MacroConfig | None = None) -> MacroConfig:
        """A MacroConfig with the fitted sigmas (clipped to the config's ranges).

        base : the config whose geometry, Vref, NMC and chip_seed it keeps (default the
        stimulus's).  The per-column tables are NOT in it (they live in the HDF5): an emulator
        with this preset draws *a* chip with these statistics, ``CalibratedMacro`` *this* chip.
        """
        base = base or self.stimulus.config
        vals = {k: float(min(max(self.estimates[k].value, 0.0), _LIMITS[k])) for k in _LIMITS}
        return replace(base, nonideal=NonIdealityConfig(**vals))

    def summary(self) -> str:
        lines = []
        for k, e in self.estimates.items():
            lines.append(f"  {k:26s} {e.value:10.5g}  [{e.low:.5g}, {e.high:.5g}] {e.unit}")
        return "\n".join(lines)

    def report(self) -> dict:
        """The JSON report (``<stem>.report.json``)."""
        cols = self.columns
        per_col = []
        for c in range(self.model.columns):
            per_col.append({"column": c, "offset_rows": _num(cols["offset"][c]),
                            "offset_se": _num(cols["offset_se"][c]),
                            "gain": _num(cols["gain"][c]), "gain_se": _num(cols["gain_se"][c]),
                            "noise_rows": _num(cols["noise"][c]),
                            "cdac_lsb": [_num(v) for v in cols["cdac"][c]],
                            "max_abs_dnl_lsb": _num(np.nanmax(np.abs(cols["dnl"][c]))),
                            "max_abs_inl_lsb": _num(np.nanmax(np.abs(cols["inl"][c])))})
        return {"format": REPORT_FORMAT, "imcsim_version": imcsim.__version__,
                "estimates": {k: e.to_dict() for k, e in self.estimates.items()},
                "preset": self.preset().to_dict(), "columns": per_col, "notes": self.notes,
                "diagnostics": _jsonable(self.diagnostics),
                "stimulus": self.stimulus.to_dict(),
                "units": {"rows": "column value of one charged cell, vdd / rows",
                          "LSB": "F / L rows at full scale F"}}

    def save(self, preset_path, *, tables_path=None, report_path=None, plots: bool = True,
             inputs=()) -> dict[str, Path]:
        """Write preset JSON, tables HDF5, report JSON and PNGs, all-or-nothing.

        Defaults beside the preset: ``<stem>.h5``, ``<stem>.report.json``,
        ``<stem>.transfer.png``, ``<stem>.dnl-inl.png``, ``<stem>.residuals.png``.
        Returns {what: path}.
        """
        preset_path = Path(preset_path)
        stem = preset_path.with_suffix("")
        paths = {"preset": preset_path,
                 "tables": Path(tables_path) if tables_path else stem.with_suffix(".h5"),
                 "report": Path(report_path) if report_path else Path(f"{stem}.report.json")}
        if plots:
            from imcsim.plotting import pyplot
            pyplot("calibration plots")                    # MissingDependency before writing
            for what in ("transfer", "dnl-inl", "residuals"):
                paths[what] = Path(f"{stem}.{what}.png")
        with AtomicOutputs(*paths.values(), names=list(paths), inputs=inputs) as out:
            out.temporary(paths["preset"]).write_text(self.preset().to_json() + "\n")
            self.write_tables(out.temporary(paths["tables"]))
            rep = self.report()
            rep["files"] = {k: str(v) for k, v in paths.items()}
            out.temporary(paths["report"]).write_text(json.dumps(rep, indent=1) + "\n")
            if plots:
                from imcsim.calibration.plots import plot_dnl_inl, plot_residuals, plot_transfer
                plot_transfer(self, out.temporary(paths["transfer"]))
                plot_dnl_inl(self, out.temporary(paths["dnl-inl"]))
                plot_residuals(self, out.temporary(paths["residuals"]))
        return paths

    def write_tables(self, path) -> None:
        """The per-column tables (HDF5; layout in docs/calibration.md)."""
        m = self.model
        from imcsim.atomic import H5Writer
        with H5Writer(path, name="tables") as f:      # the one guarded HDF5 writer
            f.attrs["format"] = TABLES_FORMAT
            f.attrs["imcsim_version"] = imcsim.__version__
            f.attrs["config_json"] = m.config.to_json()
            f.attrs["preset_json"] = self.preset().to_json()
            f.attrs["estimates_json"] = json.dumps({k: e.to_dict() for k, e in self.estimates.items()})
            f.attrs["sigma_cmp"] = m.sigma_cmp
            f.attrs["sigma_sample"] = m.sigma_sample
            f.attrs["sigma_cell"] = m.sigma_cell
            f.attrs["units"] = ("offset, offset_se, noise: rows; gain: rows per charged row; "
                                "cdac: LSB (ideal 2**k, LSB first); dnl, inl: LSB")
            for k, v in self.columns.items():
                f.create_dataset(k, data=np.asarray(v, dtype=np.float64))
            f["column"] = np.arange(m.columns)

    # convenience for tests and the CLI
    def parameter_errors(self, truth: ChipModel) -> dict:
        """Per-column differences from a known chip (synthetic silicon): offsets [LSB at F = L
        and rows], gains, CDAC capacitors [LSB]."""
        C = self.model.columns
        d_off = self.model.offset - truth.offset[:C]
        cd_t = normalized_cdac(truth.cdac[:C]) * self.stimulus.config.top_code
        cd_f = normalized_cdac(self.model.cdac) * self.stimulus.config.top_code
        return {"offset_rows": d_off, "gain": self.model.gain - truth.gain[:C],
                "cdac_lsb": cd_f - cd_t}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return _num(obj)
    return obj


def dnl_inl(cdac, top_code: int) -> tuple[np.ndarray, np.ndarray]:
    """DNL (C, L-1) of codes 1..L-1 and INL (C, L) of codes 1..L [LSB] of CDAC capacitors (C, Nb).

    The DAC is ratiometric, so both are independent of the full scale; the comparator offset is
    not included (INL_D = L * Wsum(D) / Wtot - D).
    """
    beta = normalized_cdac(cdac)
    nb = beta.shape[1]
    codes = np.arange(1, top_code + 1)
    level = beta @ code_bits(codes, nb).T * top_code                      # (C, L)
    inl = level - codes[None, :]
    dnl = np.diff(level, axis=1) - 1.0
    return dnl, inl


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------
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
        entries = _ramp_entries(measured, c)
        if entries.shape[0] < nb + 3:
            notes.append(f"column {c}: too few ramp codes; not fitted")
            diag["columns"].append({"column": c, "fitted": False})
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res, cov = _fit_column(cfg, entries, opts)
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
        noise_fit = _fit_noise(measured, stage1, fitted, sigma_col, opts, nominal_split,
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
        cell = _fit_cells(measured, stage1, fitted, sigma_t, opts)
    if cell is None:
        notes.append("no pattern block: cell mismatch not identified (set to 0)")
        cell = {"sigma_cell": 0.0, "ci": (0.0, np.inf), "method": "not identified"}
    diag["cells"] = cell
    # --- global sigmas --------------------------------------------------------------------
    s_off, lo_off, hi_off = _offset_sigma(offset[ok], offset_se[ok])
    s_cdac, lo_cdac, hi_cdac = _cdac_sigma([e_hat[c] for c in fitted],
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


def model_uncertainty(estimates: dict) -> ModelUncertainty:
    """The fit's precision as the statistical check uses it: the 95 % intervals of the total
    noise and of the cell sigma (an interval that is not finite -- a quantity the stimulus
    did not identify -- collapses to the fitted value)."""
    def ci(e):
        lo = e.low if np.isfinite(e.low) else e.value
        hi = e.high if np.isfinite(e.high) else e.value
        return (float(min(lo, e.value)), float(max(hi, e.value)))
    return ModelUncertainty(ci(estimates["noise_total"]), ci(estimates["cell_cap_sigma"]))


def load_calibrated_model(path) -> ChipModel:
    """The ChipModel of a saved calibration: a preset JSON (its ``<stem>.h5`` beside it) or the
    tables HDF5 itself."""
    path = Path(path)
    h5 = path if path.suffix in (".h5", ".hdf5") else path.with_suffix(".h5")
    if not h5.is_file():
        raise ValueError(f"{path}: calibration tables missing ({h5} not found; `imcsim "
                         "calibrate` writes them beside the preset)")
    with h5py.File(h5, "r") as f:
        if f.attrs.get("format") != TABLES_FORMAT:
            raise ValueError(f"{h5}: not calibration tables")
        cfg = MacroConfig.from_json(f.attrs["config_json"])
        gain, offset, cdac = f["gain"][()], f["offset"][()], f["cdac"][()]
        s_c, s_s, s_cell = (float(f.attrs[k]) for k in ("sigma_cmp", "sigma_sample", "sigma_cell"))
        uncertainty = _stored_uncertainty(f)
    nb = cfg.adc_bits
    gain = np.where(np.isfinite(gain), gain, np.nanmean(gain))
    offset = np.where(np.isfinite(offset), offset, 0.0)
    cdac = np.where(np.isfinite(cdac), cdac, 2.0 ** np.arange(nb))
    return ChipModel(cfg, gain, offset, cdac, s_c, s_s, s_cell, source=f"calibration {h5}",
                     uncertainty=uncertainty)


def _stored_uncertainty(f) -> ModelUncertainty | None:
    """The ModelUncertainty of saved tables (their ``estimates_json``), None without it."""
    try:
        est = json.loads(f.attrs["estimates_json"])
        loaded = {}
        for name in ("noise_total", "cell_cap_sigma"):
            lo, hi = (np.nan if v is None else float(v) for v in est[name]["ci95"])
            loaded[name] = Estimate(float(est[name]["value"]), lo, hi)
    except (KeyError, TypeError, ValueError):
        return None
    return model_uncertainty(loaded)


__all__ = ["CalibrationResult", "Estimate", "FitOptions", "calibrate", "dnl_inl",
           "load_calibrated_model"]
