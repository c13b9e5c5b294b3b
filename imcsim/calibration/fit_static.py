"""The static mismatch sigmas from the per-column values of stage 1, by maximum likelihood.

Comparator offsets ``o_c ~ N(0, sigma_off**2 + se_c**2)``; CDAC ratios with capacitor ``k`` made
of ``2**k`` unit capacitors (relative error variance ``sigma_cdac**2 / 2**k``), each column's
estimate with its own covariance.  Profile-likelihood 95 % intervals.
"""
from __future__ import annotations

import numpy as np
from scipy import optimize

from imcsim.calibration.fit_options import LR95


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


def offset_sigma(offsets, se):
    ok = np.isfinite(offsets) & np.isfinite(se)
    o, v = offsets[ok], se[ok] ** 2

    def nll(s):
        var = s * s + v
        return 0.5 * np.sum(np.log(var) + o * o / var)
    return _sigma_ml(nll, max(1e-3, 10 * float(np.sqrt(np.mean(o * o))) + 1e-3))


def cdac_sigma(e_list, cov_list, nb):
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


__all__ = ["cdac_sigma", "offset_sigma"]
