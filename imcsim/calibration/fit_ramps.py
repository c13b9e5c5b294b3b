"""Stage 1 of the calibration fit: every column's ramps, by maximum likelihood.

Per column: gain ``G_c`` (parasitic capacitance), comparator offset ``o_c``, the ``Nb - 1`` free
CDAC capacitor ratios and one noise sigma (all noise per SAR step here), over the code
histograms of every (full scale, count); a conversion of ``k`` rows holds ``u = G_c k + o_c``
and its code follows the exact SAR path probability of ``imcsim.calibration.model``.  Standard
errors from the Hessian of the log-likelihood (central differences of the analytic gradient).
"""
from __future__ import annotations

import numpy as np
from scipy import optimize

from imcsim.calibration.fit_options import FitOptions
from imcsim.calibration.model import code_bits, log_code_prob, path_trials, threshold_shift_rows
from imcsim.config import MacroConfig


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


def fit_column(config: MacroConfig, entries: np.ndarray, opts: FitOptions):
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


__all__ = ["fit_column"]
