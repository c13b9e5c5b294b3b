"""The calibration fit's knobs and the interval constants its stages share.

``FitOptions`` are ``calibrate``'s options; ``Z95`` and ``LR95`` set the 95 % intervals (Wald and
likelihood ratio); ``single_thread_blas`` keeps the many small fits off BLAS threads.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from scipy import stats

Z95 = 1.959963984540054
LR95 = 0.5 * stats.chi2.ppf(0.95, 1)          # 1.92: likelihood drop of a 95 % interval


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


__all__ = ["LR95", "Z95", "FitOptions", "single_thread_blas"]
