"""The statistical model of a column's conversion that the calibration fits and checks against.

A conversion of column ``c`` at full scale ``F`` holds ``u = v + o_c`` rows (``v`` the
charge-shared column value, ``o_c`` the comparator offset) and runs the SAR of
docs/hardware-model.md 4.5: step ``s`` keeps its trial code ``T`` when
``u + n + e_s >= t(T)``, with the trial level ``t(T) = F * Wsum_c(T) / Wtot_c - h(F)`` rows
(``h`` the half-up law's shift, 0 under the floor law), sampling noise ``n ~ N(0, sigma_s)``
drawn once per conversion and comparator noise ``e_s ~ N(0, sigma_c)`` drawn per step.

The probability of a code ``D`` follows from the one path of trial codes that ends in ``D``
(the SAR never revisits a decision): ``P(D | u) = E_n[ prod_s Phi(+-(u + n - t_s) / sigma_c) ]``
(+ where ``D`` keeps step ``s``'s bit), which :func:`log_code_prob` evaluates exactly (a
trapezoid rule over ``n``; closed forms when either sigma is 0), with its derivatives.  This
holds for any CDAC, monotonic or not.

``ChipModel`` holds one chip's per-column tables (gain, offset, CDAC capacitors) and noise
sigmas, from a fit (``imcsim.calibration.fit``) or from the emulator's own tables
(``ChipModel.from_config``), and predicts the code distribution of every calibration vector.
Gaussian noise is assumed; the emulator draws an Irwin-Hall approximation (12 uniforms, tails
cut at 6 sigma), which differs from it by less than 0.3 % of probability anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import log_ndtr, logsumexp, ndtr

from imcsim.config import MacroConfig
from imcsim.kernels.cycle import charge_share_columns, sar_paths
from imcsim.kernels.hw import ANALOG_FRAC_BITS, CAP_UNIT, CDAC_UNIT, SIGMA_FRAC_BITS

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)
#: probabilities are floored here so that one glitched code cannot dominate a likelihood
PROB_FLOOR = 1e-12
#: trapezoid grid of the sampling-noise integral: +-GRID_SPAN standard deviations
GRID_SPAN = 7.0
MAX_GRID_NODES = 801
_CHUNK = 4096


def _mills(a, log_phi=None):
    """phi(a) / Phi(a), stable for large negative a (``log_phi``: log_ndtr(a) if known)."""
    return np.exp(-0.5 * a * a - _LOG_SQRT_2PI - (log_ndtr(a) if log_phi is None else log_phi))


def path_trials(codes, adc_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The SAR path that ends in each code.

    Parameters
    ----------
    codes : int (n,)  final codes in [0, 2**adc_bits).
    adc_bits : int  Nb.

    Returns
    -------
    trials : int64 (n, Nb)  trial code of step s (s = 0 is the MSB trial).
    keep : bool (n, Nb)  whether step s kept its bit (the code's bit Nb-1-s).
    """
    flat = np.ascontiguousarray(codes, dtype=np.int64).reshape(-1)
    trials = np.empty((flat.shape[0], adc_bits), dtype=np.int64)
    keep = np.empty((flat.shape[0], adc_bits), dtype=np.bool_)
    sar_paths(flat, adc_bits, trials, keep)       # hw.sar_path_trial, as the SAR records it
    return trials, keep


def code_bits(codes, adc_bits: int) -> np.ndarray:
    """float64 (..., Nb): bit k (LSB first) of every code."""
    c = np.asarray(codes, dtype=np.int64)
    return ((c[..., None] >> np.arange(adc_bits, dtype=np.int64)) & 1).astype(np.float64)


def grid_for(sigma_c: float, sigma_s: float, max_nodes: int = MAX_GRID_NODES):
    """Trapezoid nodes (standard units) and log weights for the sampling-noise integral.

    The spacing resolves both the Gaussian (1/3 sigma_s) and the comparator's smooth steps
    (sigma_c / 1.5, in units of sigma_s).  Returns (x float64 (m,), log_w float64 (m,)).
    """
    h = 1.0 / 3.0
    if sigma_s > 0 and sigma_c > 0:
        h = min(h, (sigma_c / sigma_s) / 1.5)
    m = int(min(max_nodes, 2 * np.ceil(GRID_SPAN / h) + 1))
    x = np.linspace(-GRID_SPAN, GRID_SPAN, m)
    logw = -0.5 * x * x
    logw -= logsumexp(logw)
    return x, logw


@dataclass
class CodeLogProb:
    """log P(code) of n conversions and its derivatives.

    logp : float64 (n,);  d_t : float64 (n, Nb) d logp / d t_s (the trial levels, rows);
    d_u = -d_t.sum(1) (u enters only as u - t);  d_sc, d_ss : float64 (n,) d logp / d sigma_c,
    d sigma_s.  Derivatives are None unless asked for.
    """

    logp: np.ndarray
    d_t: np.ndarray | None = None
    d_sc: np.ndarray | None = None
    d_ss: np.ndarray | None = None

    @property
    def d_u(self) -> np.ndarray:
        return -self.d_t.sum(axis=1)


def log_code_prob(u, t, keep, sigma_c: float, sigma_s: float, *, grad: bool = False,
                  grid=None) -> CodeLogProb:
    """log P(code | u) of SAR conversions with comparator and sampling noise.

    Parameters
    ----------
    u : float64 (n,)  held value plus offset [rows].
    t : float64 (n, Nb)  trial levels of the code's path [rows] (``path_trials`` ->
        ``ChipModel.trial_levels``).
    keep : bool (n, Nb)  the path's decisions.
    sigma_c : float  comparator noise per SAR step [rows], >= 0.
    sigma_s : float, or float64 (n,)  sampling noise per conversion [rows], >= 0 (any other
        per-conversion Gaussian term, e.g. a marginalised pattern error, adds here in
        quadrature).
    grad : bool  also return the derivatives.
    grid : (x, log_w) or None  trapezoid nodes of the sampling-noise integral (default
        ``grid_for(sigma_c, max(sigma_s))``; pass a fixed grid while optimising the sigmas).

    Probabilities below ``PROB_FLOOR`` are raised to it (a glitch allowance).
    """
    u = np.asarray(u, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    sgn = np.where(keep, 1.0, -1.0)
    n = u.shape[0]
    out = CodeLogProb(np.empty(n))
    if grad:
        out.d_t, out.d_sc, out.d_ss = np.empty(t.shape), np.empty(n), np.empty(n)
    ss_arr = np.ndim(sigma_s) > 0
    if ss_arr:
        sigma_s = np.broadcast_to(np.asarray(sigma_s, dtype=np.float64), (n,))
        if not np.any(sigma_s > 0):
            sigma_s = 0.0
            ss_arr = False
        elif sigma_c <= 0 and np.any(sigma_s <= 0):
            raise ValueError("sigma_s: an array of sampling sigmas needs sigma_c > 0 or all > 0")
    if sigma_c <= 0 and not ss_arr and sigma_s <= 0:
        held = u[:, None] - t
        ok = np.all(np.where(sgn > 0, held >= 0, held < 0), axis=1)
        out.logp[:] = np.where(ok, 0.0, np.log(PROB_FLOOR))
        if grad:
            out.d_t[:] = 0.0
            out.d_sc[:] = 0.0
            out.d_ss[:] = 0.0
        return out
    if not ss_arr and sigma_s <= 0:
        z = (u[:, None] - t) / sigma_c
        a = sgn * z
        la = log_ndtr(a)
        lp = la.sum(axis=1)
        floor = lp < np.log(PROB_FLOOR)
        out.logp[:] = np.maximum(lp, np.log(PROB_FLOOR))
        if grad:
            lam = sgn * _mills(a, la)
            out.d_t[:] = np.where(floor[:, None], 0.0, -lam / sigma_c)
            out.d_sc[:] = np.where(floor, 0.0, -(lam * z).sum(axis=1) / sigma_c)
            out.d_ss[:] = 0.0
        return out
    if sigma_c <= 0:
        lo = np.where(sgn > 0, t, -np.inf).max(axis=1)
        hi = np.where(sgn < 0, t, np.inf).min(axis=1)
        za, zb = (lo - u) / sigma_s, (hi - u) / sigma_s
        # P = Phi(zb) - Phi(za), computed on the side of the smaller tail
        upper = za > 0
        p = np.where(upper, ndtr(-za) - ndtr(-zb), ndtr(zb) - ndtr(za))
        floor = ~(p > PROB_FLOOR)
        p = np.where(floor, PROB_FLOOR, p)
        out.logp[:] = np.log(p)
        if grad:
            fa = np.where(np.isfinite(za), np.exp(-0.5 * np.where(np.isfinite(za), za, 0) ** 2
                                                  - _LOG_SQRT_2PI), 0.0)
            fb = np.where(np.isfinite(zb), np.exp(-0.5 * np.where(np.isfinite(zb), zb, 0) ** 2
                                                  - _LOG_SQRT_2PI), 0.0)
            d_lo = np.where(floor, 0.0, -fa / (sigma_s * p))
            d_hi = np.where(floor, 0.0, fb / (sigma_s * p))
            i_lo = np.argmax(np.where(sgn > 0, t, -np.inf), axis=1)
            i_hi = np.argmin(np.where(sgn < 0, t, np.inf), axis=1)
            out.d_t[:] = 0.0
            rows = np.arange(n)
            has_lo, has_hi = np.isfinite(lo), np.isfinite(hi)
            out.d_t[rows[has_lo], i_lo[has_lo]] += d_lo[has_lo]
            out.d_t[rows[has_hi], i_hi[has_hi]] += d_hi[has_hi]
            zza = np.where(np.isfinite(za), za, 0.0)
            zzb = np.where(np.isfinite(zb), zb, 0.0)
            out.d_ss[:] = np.where(floor, 0.0, (fa * zza - fb * zzb) / (sigma_s * p))
            out.d_sc[:] = 0.0
        return out
    x, logw = grid if grid is not None else grid_for(sigma_c, float(np.max(sigma_s)))
    ratio = (sigma_s / sigma_c) if not ss_arr else sigma_s / sigma_c
    chunk = max(16, min(_CHUNK, int(4e6 // (x.size * max(t.shape[1], 1)))))
    for i0 in range(0, n, chunk):
        sl = slice(i0, min(n, i0 + chunk))
        base = (u[sl, None] - t[sl]) / sigma_c                     # (c, Nb)
        r = ratio[sl, None, None] if ss_arr else ratio
        z = base[:, None, :] + r * x[None, :, None]                # (c, m, Nb)
        a = sgn[sl, None, :] * z
        la = log_ndtr(a)
        lj = la.sum(axis=2) + logw[None, :]                         # (c, m)
        lp = logsumexp(lj, axis=1)
        floor = lp < np.log(PROB_FLOOR)
        out.logp[sl] = np.maximum(lp, np.log(PROB_FLOOR))
        if grad:
            post = np.exp(lj - lp[:, None])                        # (c, m)
            post[floor] = 0.0
            lam = sgn[sl, None, :] * _mills(a, la)                  # d log Phi / d z
            out.d_t[sl] = -(post[:, :, None] * lam).sum(axis=1) / sigma_c
            out.d_sc[sl] = -(post * (lam * z).sum(axis=2)).sum(axis=1) / sigma_c
            out.d_ss[sl] = (post * lam.sum(axis=2) * x[None, :]).sum(axis=1) / sigma_c
    return out


def relevant_steps(u, t, keep, reach: float, at_least: int = 2) -> np.ndarray:
    """Indices (n, K) of the SAR steps that can matter for each conversion.

    A step whose decision agrees with ``u`` by more than ``reach`` rows contributes
    log Phi(> reach / sigma) ~ 0 and is dropped; the K steps kept per conversion are those
    with the smallest signed margin ``+-(u - t_s)``, so a code that contradicts ``u`` keeps
    its contradicting steps (and its small probability).  K is the largest number of steps
    within ``reach`` over all conversions (at least ``at_least``).
    """
    margin = np.where(keep, 1.0, -1.0) * (np.asarray(u)[:, None] - t)
    K = int(min(t.shape[1], max(at_least, (margin < reach).sum(axis=1).max(initial=0))))
    return np.argsort(margin, axis=1, kind="stable")[:, :K]


def take_steps(arr, idx):
    """arr (n, Nb, ...) -> arr (n, K, ...) at the steps ``idx`` (n, K)."""
    return np.take_along_axis(arr, idx.reshape(idx.shape + (1,) * (arr.ndim - 2)), axis=1)


def normalized_cdac(cdac) -> np.ndarray:
    """CDAC capacitors (C, Nb), any unit -> fractions of the column's total (C, Nb)."""
    w = np.asarray(cdac, dtype=np.float64)
    return w / w.sum(axis=1, keepdims=True)


def threshold_shift_rows(config: MacroConfig, full_scale) -> np.ndarray:
    """The ADC law's threshold shift h(F) [rows] (0 under the floor law), float64."""
    return config.adc_threshold_shift(np.asarray(full_scale)).astype(np.float64) / (1 << ANALOG_FRAC_BITS)


@dataclass(frozen=True)
class ModelUncertainty:
    """How precisely a calibration knows its chip's dispersion: the fit's 95 % intervals
    (``statistical_check`` moves the model within them; an emulator config's model is exact
    and has none).

    Attributes
    ----------
    sigma_total_ci : (low, high)  95 % interval of the total dynamic noise [rows].
    sigma_cell_ci : (low, high)  95 % interval of the relative cell-capacitor sigma [1].
    """

    sigma_total_ci: tuple[float, float]
    sigma_cell_ci: tuple[float, float]


@dataclass
class ChipModel:
    """One chip as the calibration sees it: per-column tables and noise sigmas.

    Attributes
    ----------
    config : MacroConfig  geometry and ADC law (its sigmas are not used by the model).
    gain : float64 (C,)  expected column value per charged row (1 / (1 + parasitic ratio)
        for a nominal column) [rows / row].
    offset : float64 (C,)  comparator offset [rows].
    cdac : float64 (C, Nb)  CDAC capacitors, LSB first, in units of an ideal unit capacitor
        (ideal: 2**k); only their ratios matter (the DAC is ratiometric).
    sigma_cmp, sigma_sample : float  comparator noise per SAR step, sampling noise per
        conversion [rows].
    sigma_cell : float  relative bit-cell capacitor mismatch: a conversion of k charged rows
        carries a static, pattern-dependent error of sigma_cell * gain * sqrt(k (R - k) /
        (R - 1)) rows (zero for k = 0 and k = R).
    cell_caps : int64 (R, C) or None  exact cell capacitors (CAP_UNIT units) when the model
        comes from an emulator config: then column values are exact, pattern by pattern.
    column_caps : int64 (C,) or None  total column capacitance with those cells.
    source : str  where the model comes from.
    uncertainty : ModelUncertainty or None  the fit's intervals (None: the model is exact, an
        emulator config's chip, or a calibration saved without them).
    """

    config: MacroConfig
    gain: np.ndarray
    offset: np.ndarray
    cdac: np.ndarray
    sigma_cmp: float
    sigma_sample: float
    sigma_cell: float = 0.0
    cell_caps: np.ndarray | None = None
    column_caps: np.ndarray | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)
    uncertainty: ModelUncertainty | None = None

    @property
    def columns(self) -> int:
        return int(self.gain.shape[0])

    @property
    def sigma_total(self) -> float:
        """Dynamic noise of one conversion, sqrt(sigma_cmp**2 + sigma_sample**2) [rows]."""
        return float(np.hypot(self.sigma_cmp, self.sigma_sample))

    @classmethod
    def from_config(cls, config: MacroConfig, macro=None) -> ChipModel:
        """The emulator's own chip: the tables ``Macro(config)`` draws from ``chip_seed``.

        Column values are then exact for every row pattern (``column_values``), so the only
        randomness left is the dynamic noise.
        """
        from imcsim.macro import Macro
        macro = Macro(config) if macro is None else macro
        c = config
        caps = macro.cell_capacitance
        col = macro.column_capacitance
        gain = c.rows * caps.mean(axis=0) / col
        ni = c.nonideal
        return cls(c, gain.astype(np.float64),
                   macro.comparator_offsets.astype(np.float64) / (1 << ANALOG_FRAC_BITS),
                   macro.cdac_weights.astype(np.float64) / CDAC_UNIT,
                   float(macro.fx["sigma_cmp_fx"]) / (1 << SIGMA_FRAC_BITS),
                   float(macro.fx["sigma_sample_fx"]) / (1 << SIGMA_FRAC_BITS),
                   float(macro.fx["sigma_cell_fx"]) / (1 << SIGMA_FRAC_BITS),
                   cell_caps=caps, column_caps=col,
                   source=f"emulator config (chip_seed {c.chip_seed}, cell {ni.cell_cap_sigma}, "
                          f"parasitic {ni.parasitic_ratio}, cdac {ni.cdac_unit_sigma}, offset "
                          f"{ni.comparator_offset_sigma}, noise {ni.comparator_noise_sigma} / "
                          f"{ni.sampling_noise_sigma})")

    def trial_levels(self, columns, full_scale, trials) -> np.ndarray:
        """Trial levels t(T) = F * Wsum(T) / Wtot - h(F) [rows], float64 (n, Nb).

        columns : int (n,);  full_scale : int (n,) or scalar;  trials : int (n, Nb).
        """
        beta = normalized_cdac(self.cdac)[np.asarray(columns)]          # (n, Nb)
        bits = code_bits(trials, self.config.adc_bits)                  # (n, Nb, Nb)
        level = np.einsum("nsk,nk->ns", bits, beta)
        f = np.broadcast_to(np.asarray(full_scale, dtype=np.float64), (level.shape[0],))
        return f[:, None] * level - threshold_shift_rows(self.config, f)[:, None]

    def thresholds(self, full_scale: int) -> np.ndarray:
        """Code transition levels t(D), D = 1..L, of every column at F [rows], (C, L).

        For a monotonic CDAC this is where the code steps from D-1 to D (in u = v + offset).
        """
        L = self.config.top_code
        codes = np.arange(1, L + 1)
        beta = normalized_cdac(self.cdac)                                # (C, Nb)
        bits = code_bits(codes, self.config.adc_bits)                    # (L, Nb)
        return full_scale * (beta @ bits.T) - threshold_shift_rows(self.config, full_scale)

    def pattern_sigma(self, counts, columns=None) -> np.ndarray:
        """Std of the pattern-dependent error of k charged rows [rows], float64 (n,)."""
        R = self.config.rows
        k = np.asarray(counts, dtype=np.float64)
        g = self.gain if columns is None else self.gain[np.asarray(columns)]
        return self.sigma_cell * g * np.sqrt(np.clip(k * (R - k) / max(R - 1, 1), 0, None))

    def column_values(self, rows_on, counts) -> tuple[np.ndarray, np.ndarray]:
        """Expected held value (plus offset) and pattern sigma of calibration vectors.

        Parameters
        ----------
        rows_on : bool (B, R)  charged rows of each vector;  counts : int (B,).

        Returns u float64 (B, C) [rows] and tau float64 (B, C) [rows]: exact column values
        (tau 0) for an emulator model, gain * k + offset with the marginal pattern sigma for a
        fitted one.
        """
        counts = np.asarray(counts, dtype=np.float64)
        C = self.columns
        if self.cell_caps is not None:
            q = rows_on.astype(np.int64) @ self.cell_caps[:, :C]              # (B, C)
            v = np.empty(q.shape, dtype=np.int64)
            charge_share_columns(self.config.rows, np.ascontiguousarray(q, dtype=np.int64),
                                 np.ascontiguousarray(self.column_caps[:C], dtype=np.int64), v)
            u = v.astype(np.float64) / (1 << ANALOG_FRAC_BITS) + self.offset[None, :]
            return u, np.zeros_like(u)
        u = counts[:, None] * self.gain[None, :] + self.offset[None, :]
        tau = self.pattern_sigma(np.repeat(counts[:, None], C, axis=1).ravel(),
                                 np.tile(np.arange(C), counts.shape[0])).reshape(u.shape)
        return u, tau

    def code_window(self, u, tau, columns, full_scale, half_width: int = 4):
        """Probabilities of the codes around each conversion's expected code.

        Parameters
        ----------
        u, tau : float64 (n,)  held value plus offset, pattern sigma [rows].
        columns : int (n,);  full_scale : int (n,) or scalar.
        half_width : int  codes on each side of the nominal code.

        Returns (codes int64 (n, 2w+1), prob float64 (n, 2w+1)); probability outside the window
        is the remainder 1 - prob.sum(1).
        """
        L = self.config.top_code
        u = np.asarray(u, dtype=np.float64)
        n = u.shape[0]
        f = np.broadcast_to(np.asarray(full_scale, dtype=np.float64), (n,))
        centre = np.clip(np.floor(u * L / f), 0, L).astype(np.int64)
        offs = np.arange(-half_width, half_width + 1)
        codes = np.clip(centre[:, None] + offs[None, :], 0, L)
        dup = np.zeros(codes.shape, dtype=bool)
        dup[:, 1:] = codes[:, 1:] == codes[:, :-1]
        flat = codes.ravel()
        trials, keep = path_trials(flat, self.config.adc_bits)
        cols = np.repeat(np.asarray(columns), codes.shape[1])
        t = self.trial_levels(cols, np.repeat(f, codes.shape[1]), trials)
        uu = np.repeat(u, codes.shape[1])
        tt = np.repeat(np.asarray(tau, dtype=np.float64), codes.shape[1])
        prob = np.zeros(flat.shape[0])
        # the pattern error is a per-conversion Gaussian (marginally): add it to the sampling noise
        ss = np.hypot(self.sigma_sample, tt)
        if self.sigma_cmp <= 0 and np.any(ss <= 0):
            for zero in (True, False):
                sel = (ss <= 0) == zero
                if sel.any():
                    s_sel = 0.0 if zero else ss[sel]
                    prob[sel] = np.exp(log_code_prob(uu[sel], t[sel], keep[sel], 0.0, s_sel).logp)
        else:
            prob[:] = np.exp(log_code_prob(uu, t, keep, self.sigma_cmp, ss).logp)
        prob = prob.reshape(codes.shape)
        prob[dup] = 0.0
        prob[prob <= PROB_FLOOR * 1.0001] = 0.0
        return codes, prob

    def to_macro_tables(self) -> dict:
        """Integer tables for an emulator macro of this chip (``CalibratedMacro``)."""
        R = self.config.rows
        cdac_total = self.cdac / self.cdac.sum(axis=1, keepdims=True) * self.config.top_code
        return {"column_capacitance": np.round(R * CAP_UNIT / self.gain).astype(np.int64),
                "cdac_weights": np.round(cdac_total * CDAC_UNIT).astype(np.int64),
                "comparator_offsets": np.round(self.offset * (1 << ANALOG_FRAC_BITS)).astype(np.int64)}


__all__ = ["ChipModel", "CodeLogProb", "ModelUncertainty", "PROB_FLOOR", "code_bits", "grid_for", "log_code_prob",
           "normalized_cdac", "path_trials", "relevant_steps", "take_steps",
           "threshold_shift_rows"]


#: code-error categories around the predicted median code (the statistical check's bins)
CATEGORIES = (-2, -1, 0, 1, 2)


def block_predictions(model: ChipModel, block, C: int):
    """Per vector and column of a stimulus block, the model's code distribution: mean,
    variance, third and fourth central moments, median, the probabilities of
    :data:`CATEGORIES` around the median, and the pattern sigma ``tau`` (the statistical
    check and the calibration plots both read them)."""
    u, tau = model.column_values(block.rows_on, block.counts)          # (B, C)
    u, tau = u[:, :C], tau[:, :C]
    B = u.shape[0]
    # evaluate each distinct (u, tau, column) once
    key = np.stack([np.round(u, 9), np.round(tau, 9),
                    np.broadcast_to(np.arange(C), (B, C)).astype(np.float64)], -1).reshape(-1, 3)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    codes, prob = model.code_window(uniq[:, 0], uniq[:, 1], uniq[:, 2].astype(np.int64),
                                    block.full_scale)
    inv = inv.reshape(-1)
    mass = prob.sum(axis=1, keepdims=True)
    p = prob / np.where(mass > 0, mass, 1.0)
    mean = (p * codes).sum(axis=1)
    dev2 = (codes - mean[:, None]) ** 2
    var = (p * dev2).sum(axis=1)
    m3 = (p * (codes - mean[:, None]) ** 3).sum(axis=1)
    m4 = (p * dev2 ** 2).sum(axis=1)
    cdf = np.cumsum(p, axis=1)
    median = codes[np.arange(codes.shape[0]), np.argmax(cdf >= 0.5, axis=1)]
    cat = np.zeros((codes.shape[0], len(CATEGORIES)))
    rel = np.clip(codes - median[:, None], -2, 2) + 2
    for j in range(len(CATEGORIES)):
        cat[:, j] = np.where(rel == j, p, 0.0).sum(axis=1)
    shape = (B, C)
    return {"mean": mean[inv].reshape(shape), "var": var[inv].reshape(shape),
            "m3": m3[inv].reshape(shape), "m4": m4[inv].reshape(shape),
            "median": median[inv].reshape(shape), "cat": cat[inv].reshape(shape + (len(CATEGORIES),)),
            "tau": tau}
