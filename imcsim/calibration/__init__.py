"""From silicon to model: calibration stimulus, fit, statistical check and Monte-Carlo chips.

- :mod:`~imcsim.calibration.stimulus`: ``make_calibration_stimulus``,
  ``write_calibration_vectors`` (the vectors a chip must convert);
- :mod:`~imcsim.calibration.measured`: ``load_measurement`` (a chip's dumps, in the layouts
  ``imcsim check`` reads), ``simulate_measurement`` (synthetic silicon);
- :mod:`~imcsim.calibration.fit`: ``calibrate`` (maximum likelihood; preset, per-column tables,
  report, plots);
- :mod:`~imcsim.calibration.statistical`: ``statistical_check`` (distributions, not exact codes);
- :mod:`~imcsim.calibration.montecarlo`: accuracy of a trained model over sampled chips.

docs/calibration.md describes the flow.
"""
from imcsim.calibration.fit import CalibrationResult, Estimate, FitOptions, calibrate, load_calibrated_model
from imcsim.calibration.measured import MeasuredCodes, load_measurement, simulate_measurement, write_measurement
from imcsim.calibration.model import ChipModel
from imcsim.calibration.statistical import StatisticalReport, statistical_check, statistical_check_files
from imcsim.calibration.stimulus import (
    CalibrationStimulus,
    load_calibration_stimulus,
    make_calibration_stimulus,
    write_calibration_vectors,
)

__all__ = ["CalibrationResult", "CalibrationStimulus", "ChipModel", "Estimate", "FitOptions",
           "MeasuredCodes", "StatisticalReport", "calibrate", "load_calibrated_model", "load_calibration_stimulus",
           "load_measurement", "make_calibration_stimulus", "simulate_measurement",
           "statistical_check", "statistical_check_files", "write_calibration_vectors",
           "write_measurement"]
