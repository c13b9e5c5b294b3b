"""Energy model: energy = sum over events of (count x energy per event).

The events are the macro's own counters (docs/hardware-model.md section 6); the energy per event
comes from a preset in ``data/energy/`` (default: Table II of Grimm & Verma, 16 nm, 0.8 V).
The same counts are available in three ways:

- from an emulated run: ``energy_from_events(result.events.total(), preset)``;
- analytically for one MVM: ``mvm_event_counts`` reproduces, for the same shapes and the same
  active rows, exactly what ``Macro.mvm`` / ``conv2d`` count (both call
  ``imcsim.events.tile_event_counts``);
- analytically for a whole model: ``energy_report`` maps the three training MVMs of every layer
  of VGG-lite (``imcsim.workloads``) onto the macro (Grimm & Verma Sec. III; docs/hardware-model.md section 3) and compares with a
  GPU baseline (energy = 2 x MACs / ops-per-joule, the T4's 0.116 TOPS/W by default);
- from a training run's recorded statistics: ``run_energy(load_run(folder), layers)`` prices
  every epoch's measured events per step next to the assumed densities.

Every TOPS/W figure counts operations = 2 x MACs on the IMC and the GPU side alike
(``OPS_PER_MAC``, ``TOPS_CONVENTION``).  The first layer's backward MVM (the gradient of the
input image, which training never needs) is left out of every accounting unless
``first_layer_backward=True``.

Modules
-------
presets : ``EnergyPreset``, loading and saving presets.
counts : analytic event counts of an MVM, a convolution, a layer's training MVM.
vref : ``parse_vref_per_kind``, the ``--vref`` syntax shared with ``imcsim train``.
report : energy of events, the GPU baseline, ``energy_report`` and ``scenario_summary``.
run : ``load_run`` (a training run's metrics.json, validated) and ``run_energy``.
plot : ``plot_report``, ``plot_run`` (matplotlib, the ``plot`` extra, is imported only
when plotting).
checks : argument checks.

See docs/energy.md for the model, its assumptions and the comparison with the paper.
"""
from __future__ import annotations

from imcsim.energy.counts import (
    ACT_FORMAT,
    GRAD_FORMAT,
    INT8_FORMATS,
    PAPER_FORMATS,
    SCHEME_FORMATS,
    WEIGHT_FORMAT,
    TrainingFormats,
    conv_event_counts,
    layer_event_counts,
    layer_mvm_shape,
    mapped_formats,
    measured_density,
    mvm_event_counts,
)
from imcsim.energy.plot import plot_report, plot_run
from imcsim.energy.presets import (
    ASSUMED_EVENTS,
    COSTED_EVENTS,
    DEFAULT_ENERGY_PRESET,
    ENERGY_PRESET_DIR,
    FJ,
    PRICED_EVENTS,
    EnergyPreset,
    energy_preset_names,
    load_energy_preset,
    save_energy_preset,
)
from imcsim.energy.report import (
    DEFAULT_GRADIENT_DENSITY,
    MODELS,
    OPS_PER_MAC,
    POOL_GRADIENT_FRACTION,
    SCENARIOS,
    SKIPPED,
    TABLE_COLUMNS,
    TOPS_CONVENTION,
    EnergyReport,
    MeasuredMvm,
    energy_from_events,
    energy_report,
    gpu_energy,
    scenario_summary,
    tops_per_watt,
)
from imcsim.energy.run import (
    RUN_METRICS_FILE,
    EpochRecord,
    MvmRecord,
    RunEnergy,
    RunRecord,
    load_run,
    run_energy,
)
from imcsim.energy.vref import MVM_KINDS, parse_vref_per_kind
from imcsim.workloads import LayerSpec, vgg_lite_layers

#: Former name of ``parse_vref_per_kind``.
parse_vref = parse_vref_per_kind


__all__ = [
    "ACT_FORMAT", "ASSUMED_EVENTS", "COSTED_EVENTS", "PRICED_EVENTS", "DEFAULT_ENERGY_PRESET", "DEFAULT_GRADIENT_DENSITY",
    "ENERGY_PRESET_DIR", "FJ", "GRAD_FORMAT", "INT8_FORMATS", "MODELS", "MVM_KINDS",
    "OPS_PER_MAC", "PAPER_FORMATS", "POOL_GRADIENT_FRACTION", "RUN_METRICS_FILE", "SCENARIOS",
    "SCHEME_FORMATS", "SKIPPED", "TABLE_COLUMNS", "TOPS_CONVENTION", "WEIGHT_FORMAT",
    "EnergyPreset", "EnergyReport", "EpochRecord", "LayerSpec", "MeasuredMvm", "MvmRecord",
    "RunEnergy", "RunRecord", "TrainingFormats", "conv_event_counts", "energy_from_events",
    "energy_preset_names", "energy_report", "gpu_energy", "layer_event_counts", "mapped_formats",
    "layer_mvm_shape", "load_energy_preset", "load_run", "measured_density",
    "mvm_event_counts", "parse_vref", "parse_vref_per_kind", "plot_report", "plot_run",
    "run_energy", "save_energy_preset", "scenario_summary", "tops_per_watt", "vgg_lite_layers",
]
