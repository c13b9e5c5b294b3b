"""Energy presets: the energy of one macro event and the GPU baseline (``data/energy/*.json``)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path

from imcsim.atomic import write_text_atomic
from imcsim.config import JsonRoundTrip, packaged_json_names
from imcsim.energy.checks import check_number, check_str
from imcsim.events import EVENT_NAMES

#: Joules per femtojoule.
FJ = 1e-15

#: Events that cost energy in Table II, and the preset field holding each one's energy (fJ).
COSTED_EVENTS = {
    "bitcell_mults": "bitcell_mult_fj",
    "adc_conversions": "adc_sample_fj",
    "nmc_outputs": "nmc_output_fj",
    "reshape_words": "reshape_word_fj",
    "cima_load_words": "cima_load_word_fj",
}

#: Events of multi-level row inputs (docs/hardware-model.md 4.8), which Table II does not
#: measure, and the preset field holding each one's assumed energy (fJ; docs/energy.md 6).
ASSUMED_EVENTS = {
    "dac_row_drives": "row_dac_drive_fj",
    "dac_level_sum": "row_dac_level_fj",
}
#: Every priced event: Table II's, then the assumed ones.
PRICED_EVENTS = {**COSTED_EVENTS, **ASSUMED_EVENTS}

ENERGY_PRESET_DIR = resources.files("imcsim.data").joinpath("energy")
DEFAULT_ENERGY_PRESET = "table2-16nm"


@dataclass(frozen=True)
class EnergyPreset(JsonRoundTrip):
    """Energy per macro event and the GPU baseline.

    Parameters
    ----------
    name : str
        Short identifier (the JSON file's stem for shipped presets).
    bitcell_mult_fj, adc_sample_fj, nmc_output_fj, reshape_word_fj, cima_load_word_fj : float
        Energy in femtojoules (>= 0) of one bit-cell multiplication (active row x used column
        x array cycle), one ADC sample (conversion), one NMC output (per output and row tile),
        one 32-bit word into the input reshape buffer, one 32-bit word written into the CIMA.
        The Table II values do not depend on the ADC reference (Vref) mode.
    row_dac_drive_fj, row_dac_level_fj : float
        Assumed energy in femtojoules (>= 0) of a multi-level row DAC (Table II has none;
        binary row drivers are inside ``bitcell_mult_fj``): per row driven at a non-zero
        level in one array cycle, and per level unit of that drive, so a drive at level d
        costs ``row_dac_drive_fj + d * row_dac_level_fj`` (docs/energy.md, section 6).
    gpu_tops_per_watt : float
        GPU baseline efficiency in tera-operations per joule (> 0), operations = 2 x MACs
        (0.116 for the NVIDIA T4 in FP32, Table IV).
    gpu_name, technology, source, description : str
        Labels only.
    voltage : float
        Supply voltage in volts the energies were measured at (> 0; a label).
    """

    name: str = DEFAULT_ENERGY_PRESET
    bitcell_mult_fj: float = 0.734
    adc_sample_fj: float = 346.0
    nmc_output_fj: float = 243.0
    reshape_word_fj: float = 14.9
    cima_load_word_fj: float = 7360.0
    row_dac_drive_fj: float = 20.0
    row_dac_level_fj: float = 5.0
    gpu_tops_per_watt: float = 0.116
    gpu_name: str = "NVIDIA T4 (FP32)"
    technology: str = "16 nm CMOS"
    voltage: float = 0.8
    source: str = "Grimm & Verma, TCAS-I 2022, Table II (IMC) and Table IV (GPU)"
    description: str = "16 nm IMC chip of Jia et al. ISSCC 2021 at 0.8 V; T4 GPU baseline"

    def __post_init__(self):
        for name in ("name", "gpu_name", "technology", "source", "description"):
            check_str(name, getattr(self, name))
        if not self.name:
            raise ValueError("name: must not be empty")
        for fname in PRICED_EVENTS.values():
            check_number(fname, getattr(self, fname))
        check_number("gpu_tops_per_watt", self.gpu_tops_per_watt, positive=True)
        check_number("voltage", self.voltage, positive=True)

    def joules_per_event(self) -> dict[str, float]:
        """Energy per event in joules, keyed by event name (all of ``EVENT_NAMES``).

        Events that Table II does not price (array_cycles, sar_steps, clipped and high-Vref
        conversions) cost 0: the ADC energy is per sample, whatever its reference.  The
        multi-level row DAC's events cost the preset's assumed energies (``ASSUMED_EVENTS``).
        """
        out = {name: 0.0 for name in EVENT_NAMES}
        for event, fname in PRICED_EVENTS.items():
            out[event] = float(getattr(self, fname)) * FJ
        return out

    @property
    def gpu_ops_per_joule(self) -> float:
        """GPU operations (2 x MACs) per joule."""
        return float(self.gpu_tops_per_watt) * 1e12

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (``from_dict`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EnergyPreset:
        """A preset from a dict of fields (unknown keys are refused, missing ones default)."""
        if not isinstance(data, dict):
            raise TypeError(f"preset: expected a mapping, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"preset: unknown keys {sorted(unknown)}")
        return cls(**data)


def energy_preset_names() -> list[str]:
    """Names of the presets shipped in ``data/energy/``."""
    return packaged_json_names(ENERGY_PRESET_DIR)


def load_energy_preset(name: str | os.PathLike | EnergyPreset = DEFAULT_ENERGY_PRESET) -> EnergyPreset:
    """An energy preset by name or path.

    Parameters
    ----------
    name : str or PathLike or EnergyPreset
        A name in ``data/energy/`` (no suffix), a path to a JSON file (with a suffix), or a
        preset (returned as it is).

    Returns
    -------
    EnergyPreset

    Raises
    ------
    ValueError
        No such preset or file (the message lists the shipped names).
    """
    if isinstance(name, EnergyPreset):
        return name
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"preset: expected a name or path, got {type(name).__name__}")
    path = Path(name)
    if not path.suffix:
        path = ENERGY_PRESET_DIR.joinpath(f"{name}.json")
    if not path.is_file():
        raise ValueError(f"preset: no energy preset {str(name)!r}; known: "
                         f"{', '.join(energy_preset_names())}")
    return EnergyPreset.from_json(path.read_text())


def resolve_energy_preset(preset: str | os.PathLike | EnergyPreset | None) -> EnergyPreset:
    """``preset`` loaded with ``load_energy_preset``; None: the default (Table II) preset."""
    return load_energy_preset() if preset is None else load_energy_preset(preset)


def save_energy_preset(preset: EnergyPreset, path: str | os.PathLike) -> Path:
    """Write a preset as JSON, all-or-nothing (``imcsim.atomic.write_text_atomic``).

    Returns
    -------
    Path
        The resolved file written.
    """
    if not isinstance(preset, EnergyPreset):
        raise TypeError(f"preset: expected EnergyPreset, got {type(preset).__name__}")
    return write_text_atomic(path, preset.to_json() + "\n", "preset")
