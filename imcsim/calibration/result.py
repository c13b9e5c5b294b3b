"""What a calibration found, and its files: ``CalibrationResult``, ``Estimate``, the tables.

``CalibrationResult.save(preset_path)`` writes the preset JSON (a ``MacroConfig`` with the fitted
sigmas, which ``imcsim.load_preset`` and ``--preset`` accept), the per-column tables in an HDF5
beside it (``<stem>.h5``, layout in docs/calibration.md), the report ``<stem>.report.json`` and
its PNG plots, all-or-nothing; ``load_calibrated_model`` reads the tables back as a ChipModel,
with the intervals the statistical check uses (``model_uncertainty``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np

from imcsim.atomic import AtomicOutputs
from imcsim.calibration.measured import MeasuredCodes
from imcsim.calibration.model import ChipModel, ModelUncertainty, code_bits, normalized_cdac
from imcsim.config import MacroConfig, NonIdealityConfig
from imcsim.version import __version__

REPORT_FORMAT = "imcsim-calibration-report"
TABLES_FORMAT = "imcsim-calibration-tables"
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
        return {"format": REPORT_FORMAT, "imcsim_version": __version__,
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
            f.attrs["imcsim_version"] = __version__
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


__all__ = ["REPORT_FORMAT", "TABLES_FORMAT", "CalibrationResult", "Estimate", "dnl_inl",
           "load_calibrated_model", "model_uncertainty"]
