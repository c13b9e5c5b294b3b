"""Statistical checking for silicon: compare code distributions, not exact codes.

``statistical_check(expected_model, measured)`` predicts, for every conversion of the
calibration stimulus, the distribution of its code under a model of the chip (a calibration, a
preset, or the emulator's own chip), and tests the measured codes against it per
(block, column):

- **mean** of the code error ``D - E[D]`` [LSB]: fails when it exceeds ``mean_tolerance`` by
  more than the critical z times its standard error;
- **spread**: the observed ``sum (D - E[D])**2`` over its prediction (1 under the model): fails
  when it leaves ``1 +- spread_tolerance`` by more than the critical z times its standard error;
- **goodness of fit**: Pearson's chi-square of the code error's categories (<= -2, -1, 0, +1,
  >= +2 around the predicted median code, sparse categories merged; ``scipy.stats.chi2``):
  fails when significant *and* the total-variation distance between observed and predicted
  category frequencies exceeds ``tv_tolerance``.

Conversions of one row subset share its pattern error (cell mismatch), so the standard errors
and the chi-square carry the design effect ``1 + (m - 1) ICC`` of those clusters.  A chip that
follows the model FAILs with probability at most ``alpha``: half of it bounds the measurement's
sampling error (Bonferroni over every test), half the calibration's own estimation error (the
model is also evaluated with the least and the most dispersion its intervals allow, and a
statistic fails only outside all of them); ``statistical_check`` says how.  So a *new*
measurement of the calibrated chip passes while a different chip or the ideal model fails.

Blocks: the ramp and repeat vectors exercise the ADC (offset, CDAC, noise), the pattern vectors
the array (charge sharing: cell mismatch, parasitic gain); when the dumps carry the NMC output
``y_int``, the NMC is checked exactly against the datapath applied to the measured codes.  With
``diagnose`` a failed check also fits the measurement (``calibrate``) and names the parameters
that differ from the model's (offsets, CDAC -> ADC; gain, cell mismatch -> array; noise ->
ADC/sampling).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import stats

from imcsim.calibration.measured import MeasuredCodes
from imcsim.calibration.model import CATEGORIES, ChipModel, block_predictions, normalized_cdac
from imcsim.calibration.result import REPORT_FORMAT, CalibrationResult, load_calibrated_model
from imcsim.calibration.stimulus import KIND_BLOCK
from imcsim.config import MacroConfig
from imcsim.kernels.targets import CPU as hw
from imcsim.verify.dumps import check_measurement


@dataclass
class CellCheck:
    """The tests of one (block, column)."""

    block: str
    kind: str
    column: int
    conversions: int
    mean_error: float          # LSB
    mean_se: float             # LSB
    spread_ratio: float        # observed / predicted sum of squared errors
    spread_se: float
    chi2: float                # after the design effect
    dof: int
    p_value: float
    tv_distance: float
    design_effect: float
    failed: list[str] = field(default_factory=list)
    mean_band: list[float] = field(default_factory=list)     # accepted mean error [LSB]
    spread_band: list[float] = field(default_factory=list)   # accepted spread ratio

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v)
                for k, v in self.__dict__.items()} | {"passed": self.passed}


@dataclass
class StatisticalReport:
    """The outcome of ``statistical_check``: pass/fail, and where it fails.

    cells : every (block, column) test;  nmc : exact NMC check per block (None: no y_int);
    diagnosis : parameters of a fit of the measurement that differ from the model's (None
    unless ``diagnose`` and the check failed; ``{"blocks": {}, "unfit": reason}`` when the
    measurement cannot be fitted, e.g. an all-zero chip).
    """

    model_source: str
    measurement_source: str
    alpha: float
    cells: list[CellCheck]
    nmc: dict | None = None
    diagnosis: dict | None = None
    settings: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        nmc_ok = self.nmc is None or all(v["mismatches"] == 0 for v in self.nmc.values())
        return bool(self.cells) and all(c.passed for c in self.cells) and nmc_ok

    def failed_columns(self) -> list[int]:
        return sorted({c.column for c in self.cells if not c.passed})

    def failed_blocks(self) -> dict[str, list[str]]:
        """{hardware block: reasons}.

        With a diagnosis, adc / array come from the parameters of a fit of the measurement that
        differ from the model's; without one (or when the measurement cannot be fitted:
        ``diagnosis["unfit"]``), from the stimulus kinds whose cells failed (ramp
        and repeat vectors -> adc, pattern vectors -> array: a symptom, since e.g. an offset
        error shows in every kind).  nmc comes from the exact output check.
        """
        out: dict[str, list[str]] = {}
        if self.diagnosis is not None and not self.diagnosis.get("unfit"):
            for b, items in self.diagnosis.get("blocks", {}).items():
                out.setdefault(b, []).extend(f"fit: {m}" for m in items)
        else:
            for c in self.cells:
                if not c.passed:
                    b = KIND_BLOCK.get(c.kind, c.kind)
                    msg = f"{c.block} column {c.column}: {', '.join(c.failed)}"
                    if msg not in out.setdefault(b, []):
                        out[b].append(msg)
        if self.nmc:
            for name, v in self.nmc.items():
                if v["mismatches"]:
                    out.setdefault("nmc", []).append(f"{name}: {v['mismatches']} of {v['compared']} "
                                                     "outputs differ from the datapath")
        return out

    def to_dict(self) -> dict:
        return {"passed": self.passed, "model": self.model_source,
                "measurement": self.measurement_source, "alpha": self.alpha,
                "settings": self.settings, "failed_columns": self.failed_columns(),
                "failed_blocks": self.failed_blocks(), "nmc": self.nmc,
                "diagnosis": self.diagnosis, "cells": [c.to_dict() for c in self.cells]}

    def format(self, max_lines: int = 30) -> str:
        """The report as text (``imcsim check --statistical``)."""
        lines = [f"statistical check: model {self.model_source}",
                 f"  measurement {self.measurement_source}; family-wise alpha {self.alpha:g}, "
                 f"{len(self.cells)} (block, column) cells"]
        by_block: dict[str, list[CellCheck]] = {}
        for c in self.cells:
            by_block.setdefault(c.block, []).append(c)
        for name, cells in by_block.items():
            n = sum(c.conversions for c in cells)
            bad = [c for c in cells if not c.passed]
            worst = max(cells, key=lambda c: abs(c.mean_error))
            lines.append(f"  {name:14s} {n:9d} conversions: mean error max |{worst.mean_error:+.3f}| "
                         f"LSB (column {worst.column}), spread ratio "
                         f"{min(c.spread_ratio for c in cells):.3f}..{max(c.spread_ratio for c in cells):.3f}; "
                         f"{'PASS' if not bad else f'FAIL in {len(bad)} columns'}")
        if self.nmc is not None:
            for name, v in self.nmc.items():
                lines.append(f"  nmc {name}: {v['compared']} outputs, {v['mismatches']} mismatches")
        if self.passed:
            lines.append("PASS: the measured distributions agree with the model")
            return "\n".join(lines)
        lines.append(f"FAIL: columns {self.failed_columns()}")
        if self.diagnosis is not None and self.diagnosis.get("unfit"):
            lines.append(f"  no fit of the measurement: {self.diagnosis['unfit']}")
        elif self.diagnosis is not None:
            bad = [c for c in self.cells if not c.passed][:5]
            for c in bad:
                lines.append(f"  symptom {c.block} column {c.column}: {', '.join(c.failed)}")
        shown = 0
        for block, reasons in self.failed_blocks().items():
            lines.append(f"  block {block}:")
            for r in reasons:
                if shown >= max_lines:
                    lines.append("    ...")
                    break
                lines.append(f"    {r}")
                shown += 1
        return "\n".join(lines)


def as_chip_model(expected) -> ChipModel:
    """ChipModel from a ChipModel, a CalibrationResult, a MacroConfig, a Macro, or a path.

    A path is a calibration preset (its ``<stem>.h5`` tables beside it) or tables HDF5, or any
    preset / preset name (then the emulator's chip of that config: its ``chip_seed`` tables).
    """
    from imcsim.config import load_preset
    from imcsim.macro import Macro
    if isinstance(expected, ChipModel):
        return expected
    if isinstance(expected, CalibrationResult):
        return expected.model
    if isinstance(expected, Macro):
        return ChipModel.from_config(expected.config, expected)
    if isinstance(expected, MacroConfig):
        return ChipModel.from_config(expected)
    if isinstance(expected, (str, Path)):
        p = Path(expected)
        if p.suffix in (".h5", ".hdf5") or (p.suffix == ".json" and p.with_suffix(".h5").is_file()):
            return load_calibrated_model(p)
        if p.suffix == ".json":
            tables = _calibration_tables(p)
            if tables is not None:
                # a calibration's preset without its tables is not the emulator's chip of that
                # preset: checking against that would diagnose parameters the chip never had
                raise ValueError(f"{p}: calibration tables missing ({tables} not found; "
                                 "`imcsim calibrate` writes them beside the preset)")
        return ChipModel.from_config(load_preset(str(expected)))
    raise TypeError(f"expected_model: expected a ChipModel, CalibrationResult, MacroConfig, Macro "
                    f"or a path, got {type(expected).__name__}")


def _calibration_tables(preset: Path) -> Path | None:
    """``<stem>.h5`` of a calibration preset, None for any other preset.

    A calibration preset is a plain MacroConfig JSON; what tells it apart is the report that
    ``CalibrationResult.save`` writes beside it (``<stem>.report.json``).  A preset copied
    without its report cannot be told from any other preset.
    """
    try:
        doc = json.loads(Path(f"{preset.with_suffix('')}.report.json").read_text())
    except (OSError, UnicodeError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
        return None
    return preset.with_suffix(".h5")


def _cell_moments(block, c, n_b, cl, m_cl, pred, base, L):
    """Under one model ``pred``: the expected mean code error and spread ratio of a cell, both
    measured against the nominal model ``base`` as the observed ones are, with their standard
    errors (design effect of the row-subset clusters included)."""
    slope = L / block.full_scale                                        # LSB per row
    var, d = pred["var"][:, c], pred["mean"][:, c] - base["mean"][:, c]
    n = max(float(n_b.sum()), 1.0)
    cov = (slope * pred["tau"][:, c]) ** 2                              # (B,)
    cov_cl = np.bincount(cl, weights=cov * n_b) / np.maximum(m_cl, 1)
    var_sum = float((var * n_b).sum())
    var_total = var_sum + float((m_cl * (m_cl - 1) * cov_cl).sum())
    deff = var_total / var_sum if var_sum > 0 else 1.0
    base_sq = float((base["var"][:, c] * n_b).sum())
    sq = var + d * d                                     # E (D - E_base D)**2 per conversion
    # (D - E_base D)**4 = (X + d)**4 with X = D - E D
    q4 = pred["m4"][:, c] + 4 * d * pred["m3"][:, c] + 6 * d * d * var + d ** 4
    var_sq = float(((q4 - sq ** 2) * n_b).sum())
    if base_sq > 0:
        spread = float((sq * n_b).sum()) / base_sq
        spread_se = float(np.sqrt(max(var_sq, 0.0) * deff) / base_sq)
    else:
        spread, spread_se = (1.0, 0.0) if var_sum == 0 else (np.inf, np.inf)
    return {"mean": float((d * n_b).sum()) / n, "mean_se": float(np.sqrt(var_total)) / n,
            "spread": spread, "spread_se": spread_se, "deff": deff}


def _categories(codes_c, valid, n_b, pred, c, n, deff):
    """Pearson chi-square of the code-error categories around ``pred``'s median code."""
    rel = np.clip(codes_c - pred["median"][:, c][:, None], -2, 2) + 2
    obs = np.array([(valid & (rel == j)).sum() for j in range(len(CATEGORIES))], dtype=np.float64)
    exp = (pred["cat"][:, c, :] * n_b[:, None]).sum(axis=0)
    exp = exp / max(exp.sum(), 1e-300) * n
    o_m, e_m = _merge_sparse(obs, exp)
    if e_m.size > 1 and np.all(e_m > 0):
        chi2 = float(((o_m - e_m) ** 2 / e_m).sum()) / deff
        dof = e_m.size - 1
        pval = float(stats.chi2.sf(chi2, dof))
    else:
        impossible = bool(np.any((exp <= 0) & (obs > 0)))
        chi2, dof, pval = (np.inf, 0, 0.0) if impossible else (0.0, 0, 1.0)
    tv = 0.5 * float(np.abs(obs - exp).sum() / max(n, 1))
    return chi2, dof, pval, tv


def _check_cell(block, c, codes_c, preds, P, L, opts) -> CellCheck:
    """The three tests of one (block, column); codes_c int64 (B, P).

    ``preds[0]`` is the model's prediction, the others the same model moved within its own
    uncertainty (``_band_models``): a statistic fails only when it is outside what *every* one
    of them predicts, by more than its tolerance plus the critical z times its standard error.
    """
    base = preds[0]
    valid = codes_c >= 0
    n_b = valid.sum(axis=1)                                             # conversions per vector
    n = int(n_b.sum())
    mean = base["mean"][:, c]
    err = np.where(valid, codes_c - mean[:, None], 0.0)
    # clusters: vectors of one row subset share its pattern error
    _, cl = np.unique(block.subset_ids, return_inverse=True)
    m_cl = np.bincount(cl, weights=n_b)
    mom = [_cell_moments(block, c, n_b, cl, m_cl, pr, base, L) for pr in preds]
    mean_err = float(err.sum() / max(n, 1))
    sq = float((err ** 2).sum())
    base_sq = float((base["var"][:, c] * n_b).sum())
    spread = sq / base_sq if base_sq > 0 else (0.0 if sq == 0 else np.inf)
    z = opts["z_crit"]
    mean_band = (min(m["mean"] - z * m["mean_se"] for m in mom) - opts["mean_tolerance"],
                 max(m["mean"] + z * m["mean_se"] for m in mom) + opts["mean_tolerance"])
    spread_band = (min(m["spread"] - z * m["spread_se"] for m in mom) - opts["spread_tolerance"],
                   max(m["spread"] + z * m["spread_se"] for m in mom) + opts["spread_tolerance"])
    deff = mom[0]["deff"]
    cats = [_categories(codes_c, valid, n_b, pr, c, n, m["deff"]) for pr, m in zip(preds, mom)]
    chi2, dof, pval, tv = cats[0]
    failed = []
    if not mean_band[0] <= mean_err <= mean_band[1]:
        failed.append(f"mean error {mean_err:+.3f} LSB outside {mean_band[0]:+.3f}..{mean_band[1]:+.3f} "
                      f"(se {mom[0]['mean_se']:.3f})")
    if not spread_band[0] <= spread <= spread_band[1]:
        failed.append(f"spread ratio {spread:.3f} outside {spread_band[0]:.3f}..{spread_band[1]:.3f}")
    if all(pv * opts["n_tests"] < opts["alpha_sampling"] and t > opts["tv_tolerance"]
           for _, _, pv, t in cats):
        failed.append(f"distribution (chi2 {chi2:.1f}, dof {dof}, TV {tv:.3f})")
    return CellCheck(block.name, block.kind, int(c), n, mean_err, mom[0]["mean_se"], float(spread),
                     mom[0]["spread_se"], float(chi2), int(dof), float(pval), tv, float(deff),
                     failed, [float(v) for v in mean_band], [float(v) for v in spread_band])


def _merge_sparse(obs, exp, min_expected=5.0):
    """Merge categories from the outside in until each expects at least ``min_expected``."""
    o, e = list(obs), list(exp)
    changed = True
    while changed and len(e) > 1:
        changed = False
        for i in (0, len(e) - 1):
            if e[i] < min_expected and len(e) > 1:
                j = 1 if i == 0 else len(e) - 2
                e[j] += e[i]
                o[j] += o[i]
                del e[i], o[i]
                changed = True
                break
    return np.array(o), np.array(e)


def check_nmc(measured: MeasuredCodes) -> dict | None:
    """Exact NMC check: measured y_int against the datapath applied to the measured codes.

    Returns {block: {compared, mismatches}} or None when the measurement has no y_int.
    """
    from imcsim.nmc import accumulator_fraction_bits, nmc_cycle, output_stage
    if not measured.y_int:
        return None
    st = measured.stimulus
    cfg = st.config
    nmc = cfg.nmc
    L, S = cfg.top_code, nmc.scale_frac_bits
    xf, wf = st.x_format, st.w_format
    out = {}
    for name, y in measured.y_int.items():
        block = st.block(name)
        codes = measured.codes[name]
        B, P, C = codes.shape
        scale = int(hw.nmc_scale(block.full_scale, L, S))
        table = cfg.nmc.code_offset_table(cfg.columns)     # the chip's NMC registers
        acc_all = np.zeros((B, y.shape[1]), dtype=np.int64)
        ok = np.ones(B, dtype=bool)
        for b in range(B):
            if (codes[b] < 0).any():
                ok[b] = False
                continue
            acc = np.zeros(y.shape[1], dtype=np.int64)
            for p in range(P):
                acc, _ = nmc_cycle(acc, codes[b, p], cfg.rows, scale, block.full_scale,
                                   int(xf.plane_weights[p]), wf.plane_weights, nmc, L, table)
            acc_all[b] = acc
        y_exp = output_stage(acc_all, nmc, accumulator_fraction_bits(nmc, xf, wf))
        diff = (y_exp != y) & ok[:, None]
        out[name] = {"compared": int(ok.sum() * y.shape[1]), "mismatches": int(diff.sum())}
    return out


def _diagnose(expected: ChipModel, measured: MeasuredCodes, z_crit: float) -> dict:
    """Fit the measurement and name the parameters that differ from the model's."""
    from imcsim.calibration.fit import calibrate
    res = calibrate(measured)
    fit = res.model
    C = fit.columns
    L = measured.stimulus.config.top_code
    cols = res.columns
    blocks: dict[str, list[str]] = {}
    d_off = fit.offset - expected.offset[:C]
    bad_off = np.nonzero((np.abs(d_off) > 0.05) & (np.abs(d_off) > z_crit * cols["offset_se"]))[0]
    if bad_off.size:
        blocks.setdefault("adc", []).append(
            f"comparator offset differs in columns {bad_off.tolist()} (max |diff| "
            f"{np.abs(d_off[bad_off]).max():.3f} rows)")
    inl_fit = normalized_cdac(fit.cdac) * L
    inl_exp = normalized_cdac(expected.cdac[:C]) * L
    d_cap = np.abs(inl_fit - inl_exp)
    bad_cap = np.nonzero(np.any((d_cap > 0.02) & (d_cap > z_crit * cols["cdac_se"]), axis=1))[0]
    if bad_cap.size:
        blocks.setdefault("adc", []).append(
            f"CDAC capacitors differ in columns {bad_cap.tolist()} (max |diff| "
            f"{d_cap[bad_cap].max():.3f} LSB)")
    d_gain = fit.gain - expected.gain[:C]
    bad_gain = np.nonzero((np.abs(d_gain) > 2e-3) & (np.abs(d_gain) > z_crit * cols["gain_se"]))[0]
    if bad_gain.size:
        blocks.setdefault("array", []).append(
            f"column gain (parasitic capacitance) differs in columns {bad_gain.tolist()} "
            f"(mean {fit.gain[bad_gain].mean():.4f} vs {expected.gain[bad_gain].mean():.4f})")
    est = res.estimates
    tot = est["noise_total"]
    if not (0.9 * tot.low <= expected.sigma_total <= 1.1 * tot.high):
        blocks.setdefault("adc", []).append(
            f"dynamic noise {tot.value:.3f} rows [{tot.low:.3f}, {tot.high:.3f}] vs the model's "
            f"{expected.sigma_total:.3f}")
    cell = est["cell_cap_sigma"]
    if not (0.8 * cell.low - 1e-4 <= expected.sigma_cell <= 1.2 * cell.high + 1e-4):
        blocks.setdefault("array", []).append(
            f"cell mismatch {cell.value:.4f} [{cell.low:.4f}, {cell.high:.4f}] vs the model's "
            f"{expected.sigma_cell:.4f}")
    return {"blocks": blocks, "fitted": {k: e.to_dict() for k, e in est.items()}}


#: z of a 95 % interval (the calibration reports 95 % intervals)
_Z95 = 1.959963984540054


def _band_models(model: ChipModel, z_model: float, noise_tolerance: float):
    """The model, and the model with more and with less dispersion, as far as its calibration
    allows: [nominal, more, less] (the nominal alone when there is nothing to move).

    With the model's ``uncertainty`` (a calibration), the total noise moves by ``z_model``
    standard errors of log sigma plus ``noise_tolerance`` (relative), the cell sigma to the
    ends of its interval stretched to ``z_model`` (``statistical_check``: Bonferroni over
    those two quantities for a family-wise ``alpha / 2``).  An exact model (an emulator
    config) moves by ``noise_tolerance`` only.  The held values (offsets, gains, CDAC) stay:
    the ramps fix where each conversion sits between two thresholds to within 0.01-0.03 LSB,
    which ``mean_tolerance`` covers.
    """
    unc = model.uncertainty
    step, cell_hi, cell_lo = noise_tolerance, model.sigma_cell, model.sigma_cell
    if unc is not None:
        lo, hi = unc.sigma_total_ci
        if lo > 0 and hi > 0:
            step += z_model * np.log(hi / lo) / (2 * _Z95)
        c_lo, c_hi = unc.sigma_cell_ci
        cell_hi = model.sigma_cell + (c_hi - model.sigma_cell) * z_model / _Z95
        cell_lo = max(0.0, model.sigma_cell - (model.sigma_cell - c_lo) * z_model / _Z95)
    if step <= 0 and cell_hi == cell_lo == model.sigma_cell:
        return [model]
    r = float(np.exp(step))
    return [model] + [replace(model, sigma_cmp=model.sigma_cmp * f, sigma_sample=model.sigma_sample * f,
                              sigma_cell=cell)
                      for f, cell in ((r, cell_hi), (1.0 / r, cell_lo))]


def statistical_check(expected_model, measured: MeasuredCodes, *, alpha: float = 1e-3,
                      mean_tolerance: float = 0.05, spread_tolerance: float = 0.1,
                      tv_tolerance: float = 0.05, noise_tolerance: float = 0.02,
                      diagnose: bool = False, check_outputs: bool = True) -> StatisticalReport:
    """Compare a chip's measured code distributions with a model of the chip.

    The false-FAIL rate is stated and controlled: a chip that follows the model FAILs with
    probability at most ``alpha`` (family-wise over every test of the report).  Two things
    separate a fresh measurement from a calibrated model's prediction; each gets half of
    ``alpha`` (all of it goes to the first when the model is exact, an emulator config):

    - the measurement's sampling error: the three tests of every (block, column) run at the
      Bonferroni-corrected critical z (``z_crit``) of a family-wise ``alpha / 2`` over all
      ``3 x columns x blocks`` tests;
    - the calibration's estimation error: the model's dispersion (total noise, cell sigma) is
      known only within the calibration's intervals (``ChipModel.uncertainty``), so the model
      is also evaluated with more and with less dispersion, at ``z_model`` standard errors
      (Bonferroni over the two quantities for ``alpha / 2``) plus ``noise_tolerance``, and a
      statistic fails only outside what all of them predict.  Where conversions are nearly
      deterministic (noise a small fraction of an LSB, the pattern block) a 2 % error of the
      noise sigma changes the predicted spread by 30 % and more, which no fixed tolerance
      absorbs.

    The tolerances are allowances for what the model does not describe: ``noise_tolerance``
    the Gaussian noise of the model against a chip's (the emulator's Irwin-Hall noise reads
    1-3 % low in sigma), ``mean_tolerance`` the calibrated held values (the ramps fix them to
    0.01-0.03 LSB), the others small unmodelled effects.  docs/calibration.md (section 3) has
    the rule and the measured false-FAIL rates.

    Parameters
    ----------
    expected_model : ChipModel, CalibrationResult, MacroConfig, Macro or path
        A model, or a path (calibration preset with its tables beside it, tables HDF5, or a
        preset name / JSON: the emulator's chip of that config).
    measured : MeasuredCodes
        The codes of the calibration stimulus (``load_measurement``).
    alpha : float
        Family-wise false-FAIL probability (split between sampling and calibration error as
        above).
    mean_tolerance : float
        Allowed abs(mean code error) per (block, column) [LSB].
    spread_tolerance : float
        Allowed relative deviation of the code-error power.
    tv_tolerance : float
        Allowed total-variation distance of the code-error categories.
    noise_tolerance : float
        Allowed relative error of the model's dynamic noise sigma [1].
    diagnose : bool
        On failure, also fit the measurement and name the differing parameters (costs one
        ``calibrate``).
    check_outputs : bool
        Check the NMC outputs y_int exactly when the measurement has them.

    Returns
    -------
    StatisticalReport
        ``.passed``, ``.failed_columns()``, ``.failed_blocks()``, ``.format()``,
        ``.to_dict()``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: must lie in (0, 1), got {alpha}")
    for name, v in (("mean_tolerance", mean_tolerance), ("spread_tolerance", spread_tolerance),
                    ("tv_tolerance", tv_tolerance), ("noise_tolerance", noise_tolerance)):
        if not v >= 0:
            raise ValueError(f"{name}: must be >= 0, got {v}")
    model = as_chip_model(expected_model)
    st = measured.stimulus
    cfg = st.config
    m = model.config
    # every measured column needs the model's prediction: a model of fewer columns used to
    # check only those it had, and passed
    if (m.rows, m.columns, m.adc_bits) != (cfg.rows, cfg.columns, cfg.adc_bits) \
            or model.columns < st.covered_columns:
        raise ValueError(f"expected_model: {model.source}: geometry {m.rows}x{m.columns} "
                         f"({model.columns} modelled columns), {m.adc_bits} bits differs from "
                         f"the measurement's stimulus {cfg.rows}x{cfg.columns} "
                         f"({st.covered_columns} columns), {cfg.adc_bits} bits")
    check_measurement(measured, "statistical")
    C = st.covered_columns
    L, P = cfg.top_code, st.n_planes
    blocks = [b for b in st.blocks if b.name in measured.codes]
    n_tests = 3 * C * len(blocks)
    alpha_sampling = alpha if model.uncertainty is None else alpha / 2
    alpha_model = alpha - alpha_sampling
    z_crit = float(stats.norm.isf(alpha_sampling / (2 * n_tests)))
    # two quantities (noise, cell sigma), each two-sided
    z_model = float(stats.norm.isf(alpha_model / 4)) if alpha_model > 0 else 0.0
    band = _band_models(model, z_model, noise_tolerance)
    opts = {"alpha": alpha, "alpha_sampling": alpha_sampling, "alpha_model": alpha_model,
            "n_tests": n_tests, "z_crit": z_crit, "z_model": z_model, "band_models": len(band),
            "mean_tolerance": mean_tolerance, "spread_tolerance": spread_tolerance,
            "tv_tolerance": tv_tolerance, "noise_tolerance": noise_tolerance}
    cells = []
    for block in blocks:
        preds = [block_predictions(mod, block, C) for mod in band]
        codes = measured.codes[block.name]
        for c in range(C):
            cells.append(_check_cell(block, c, codes[:, :, c], preds, P, L, opts))
    report = StatisticalReport(model.source, measured.source, alpha, cells,
                               nmc=check_nmc(measured) if check_outputs else None,
                               settings=dict(opts))
    if diagnose and not report.passed:
        try:
            report.diagnosis = _diagnose(model, measured, z_crit)
        except ValueError as exc:
            # e.g. an all-zero chip: its ramps cannot be fitted, and that is the diagnosis of
            # a failed check, not an input error (the cells' symptoms name the blocks)
            report.diagnosis = {"blocks": {}, "unfit": str(exc).splitlines()[0]}
    return report


def statistical_check_files(expected, measured_path, *, stimulus=None, fmt: str = "auto",
                            signal_map: dict | None = None, **options) -> StatisticalReport:
    """``statistical_check`` on files: what ``imcsim check --statistical`` runs.

    Parameters
    ----------
    expected : path or object  as ``expected_model`` of ``statistical_check`` (typically the
        calibration preset ``chip.json`` with ``chip.h5`` beside it).
    measured_path : folder  the chip's dumps, one per stimulus block (``load_measurement``).
    stimulus : calibration folder, CalibrationStimulus or None (then ``measured_path`` must
        hold calibration.json).
    fmt, signal_map : the dumps' layout and VCD map (as ``imcsim check``).
    **options : keyword arguments of ``statistical_check`` (alpha, tolerances, diagnose).
    """
    from imcsim.calibration.measured import load_measurement
    measured = load_measurement(measured_path, stimulus, fmt=fmt, signal_map=signal_map,
                                require_all=False)
    return statistical_check(expected, measured, **options)


__all__ = ["CellCheck", "StatisticalReport", "as_chip_model", "check_nmc", "statistical_check",
           "statistical_check_files"]
