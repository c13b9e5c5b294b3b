"""Energy model: energy = sum over events of (count x energy per event).

The events are the macro's own counters (docs/hardware-model.md section 6); the energy per event
comes from a preset in ``data/energy/`` (default: Table II of Grimm & Verma, 16 nm, 0.8 V).
The same counts are available in three ways:

- from an emulated run: ``energy_from_events(result.events.total(), preset)``;
- analytically for one MVM: ``mvm_event_counts`` reproduces, for the same shapes and the same
  active rows, exactly what ``Macro.mvm`` / ``conv2d`` count;
- analytically for a whole model: ``energy_report`` maps the three training MVMs of every layer
  of VGG-lite onto the macro (HARDWARE.md section 3) and compares with a GPU baseline
  (energy = 2 x MACs / ops-per-joule, the T4's 0.116 TOPS/W by default).

See docs/energy.md for the model, its assumptions and the comparison with the paper.
"""
from __future__ import annotations

import math
import os
from importlib import resources
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from imcsim.mapping import plan_tiles, select_full_scale, words32
from imcsim.config import (JsonRoundTrip, packaged_json_names, MacroConfig, MvmKind, VrefConfig, VrefMode,
                           parse_mvm_kinds as parse_imc_kinds)
from imcsim.formats import BinaryFormat, Radix4Format
from imcsim.workloads import LayerSpec, vgg_lite_layers
from imcsim.events import EVENT_NAMES, EventCounts
from imcsim.macro import MvmResult

FJ = 1e-15

#: Events that cost energy in Table II, and the preset field holding each one's energy (fJ).
COSTED_EVENTS = {
    "bitcell_mults": "bitcell_mult_fj",
    "adc_conversions": "adc_sample_fj",
    "nmc_outputs": "nmc_output_fj",
    "reshape_words": "reshape_word_fj",
    "cima_load_words": "cima_load_word_fj",
}

ENERGY_PRESET_DIR = resources.files("imcsim.data").joinpath("energy")
DEFAULT_ENERGY_PRESET = "table2-16nm"

MVM_KINDS = tuple(k.value for k in MvmKind)

#: Operand formats of the paper (Sec. IV-A): activations binary:6, weights binary:5,
#: gradients radix4:8.
ACT_FORMAT = BinaryFormat(6)
WEIGHT_FORMAT = BinaryFormat(5)
GRAD_FORMAT = Radix4Format(8)

#: Default fraction of radix-4 gradient elements that are non-zero (see docs/energy.md, 3).
DEFAULT_GRADIENT_DENSITY = 0.5
#: Fraction of a max-pooled conv output's gradient that max-pool backward can leave non-zero.
POOL_GRADIENT_FRACTION = 0.25


# ----------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------
def _check_positive_float(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: must be a finite number {'>=' if allow_zero else '>'} 0, "
                         f"got {value}")


def _check_str(name, value):
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a str, got {type(value).__name__}")


@dataclass(frozen=True)
class EnergyPreset(JsonRoundTrip):
    """Energy per macro event and the GPU baseline.

    Parameters
    ----------
    name : str
        Short identifier (the JSON file's stem for shipped presets).
    bitcell_mult_fj, adc_sample_fj, nmc_output_fj, reshape_word_fj, cima_load_word_fj : float
        Energy in femtojoules of one bit-cell multiplication (active row x used column x
        array cycle), one ADC sample (conversion), one NMC output (per output and row tile),
        one 32-bit word into the input reshape buffer, one 32-bit word written into the CIMA.
        The Table II values do not depend on the ADC reference (Vref) mode.
    gpu_tops_per_watt : float
        GPU baseline efficiency in tera-operations per joule, operations = 2 x MACs
        (0.116 for the NVIDIA T4 in FP32, Table IV).
    gpu_name, technology, source, description : str
        Labels only.
    voltage : float
        Supply voltage the energies were measured at (label).
    """

    name: str = DEFAULT_ENERGY_PRESET
    bitcell_mult_fj: float = 0.734
    adc_sample_fj: float = 346.0
    nmc_output_fj: float = 243.0
    reshape_word_fj: float = 14.9
    cima_load_word_fj: float = 7360.0
    gpu_tops_per_watt: float = 0.116
    gpu_name: str = "NVIDIA T4 (FP32)"
    technology: str = "16 nm CMOS"
    voltage: float = 0.8
    source: str = "Grimm & Verma, TCAS-I 2022, Table II (IMC) and Table IV (GPU)"
    description: str = "16 nm IMC chip of Jia et al. ISSCC 2021 at 0.8 V; T4 GPU baseline"

    def __post_init__(self):
        for name in ("name", "gpu_name", "technology", "source", "description"):
            _check_str(name, getattr(self, name))
        if not self.name:
            raise ValueError("name: must not be empty")
        for fname in COSTED_EVENTS.values():
            _check_positive_float(fname, getattr(self, fname), allow_zero=True)
        _check_positive_float("gpu_tops_per_watt", self.gpu_tops_per_watt)
        _check_positive_float("voltage", self.voltage)

    def joules_per_event(self) -> dict:
        """Energy per event in joules, keyed by event name (all of ``EVENT_NAMES``).

        Events that Table II does not price (array_cycles, sar_steps, clipped and high-Vref
        conversions) cost 0: the ADC energy is per sample, whatever its reference.
        """
        out = {name: 0.0 for name in EVENT_NAMES}
        for event, fname in COSTED_EVENTS.items():
            out[event] = float(getattr(self, fname)) * FJ
        return out

    @property
    def gpu_ops_per_joule(self) -> float:
        return float(self.gpu_tops_per_watt) * 1e12

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data) -> "EnergyPreset":
        if not isinstance(data, dict):
            raise TypeError(f"preset: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"preset: unknown keys {sorted(unknown)}")
        return cls(**data)



def energy_preset_names() -> list[str]:
    """Names of the presets shipped in ``data/energy/``."""
    return packaged_json_names(ENERGY_PRESET_DIR)


def load_energy_preset(name: str = DEFAULT_ENERGY_PRESET) -> EnergyPreset:
    """Load ``data/energy/<name>.json``, or a JSON file when ``name`` is a path with a suffix."""
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


def save_energy_preset(preset: EnergyPreset, path) -> None:
    """Write a preset as JSON (atomically: temporary name, then rename)."""
    if not isinstance(preset, EnergyPreset):
        raise TypeError(f"preset: expected EnergyPreset, got {type(preset).__name__}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(preset.to_json() + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------
# Energy of counted events; GPU baseline
# ----------------------------------------------------------------------------------------
def _event_totals(event_totals) -> dict:
    if isinstance(event_totals, MvmResult):
        event_totals = event_totals.events
    if isinstance(event_totals, EventCounts):
        event_totals = event_totals.total()
    if not isinstance(event_totals, dict):
        raise TypeError("event_totals: expected a dict of event counts, an EventCounts or an "
                        f"MvmResult, got {type(event_totals).__name__}")
    unknown = set(event_totals) - set(EVENT_NAMES)
    if unknown:
        raise ValueError(f"event_totals: unknown events {sorted(unknown)}; known: {EVENT_NAMES}")
    missing = [e for e in COSTED_EVENTS if e not in event_totals]
    if missing:
        raise ValueError(f"event_totals: missing costed events {missing}")
    out = {}
    for name, value in event_totals.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"event_totals[{name!r}]: expected a number, got "
                            f"{type(value).__name__}")
        if not math.isfinite(float(value)) or value < 0:
            raise ValueError(f"event_totals[{name!r}]: must be a finite count >= 0, got {value}")
        out[name] = value
    return out


def energy_from_events(event_totals, preset: EnergyPreset | str | None = None) -> dict:
    """Energy of counted macro events.

    Parameters
    ----------
    event_totals : dict or EventCounts or MvmResult
        Event counts keyed by name (``res.events.total()``); the five Table II events must be
        present, other names must be in ``EVENT_NAMES``.
    preset : EnergyPreset or str or None
        Energy per event (default: the Table II preset).

    Returns
    -------
    dict
        Joules per costed event (keys of ``COSTED_EVENTS``) and ``"total"``.
    """
    totals = _event_totals(event_totals)
    preset = load_energy_preset() if preset is None else load_energy_preset(preset)
    per = preset.joules_per_event()
    out = {name: float(totals[name]) * per[name] for name in COSTED_EVENTS}
    out["total"] = float(sum(out.values()))
    return out


def gpu_energy(macs, tops_per_watt: float | EnergyPreset | None = None) -> float:
    """GPU baseline energy in joules: 2 x MACs / (ops per joule).

    Parameters
    ----------
    macs : int or float
        Multiply-accumulates (>= 0).
    tops_per_watt : float or EnergyPreset or None
        Tera-operations per joule (default: the preset's 0.116 of the T4).
    """
    if isinstance(macs, bool) or not isinstance(macs, (int, float, np.integer, np.floating)):
        raise TypeError(f"macs: expected a number, got {type(macs).__name__}")
    if not math.isfinite(float(macs)) or macs < 0:
        raise ValueError(f"macs: must be a finite number >= 0, got {macs}")
    if tops_per_watt is None:
        tops_per_watt = load_energy_preset().gpu_tops_per_watt
    elif isinstance(tops_per_watt, EnergyPreset):
        tops_per_watt = tops_per_watt.gpu_tops_per_watt
    _check_positive_float("tops_per_watt", tops_per_watt)
    return 2.0 * float(macs) / (float(tops_per_watt) * 1e12)


# ----------------------------------------------------------------------------------------
# Analytic event counts of one MVM (mirrors Macro.count_events and conv2d exactly)
# ----------------------------------------------------------------------------------------
def _check_pos_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: must be >= 1, got {value}")
    return int(value)


def _check_density(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}: must lie in [0, 1], got {value}")
    return float(value)


def mvm_event_counts(inner, outputs, vectors, x_format, w_format, *, config=None, vref=None,
                     active_rows=None, density=None, reshape_words=None) -> EventCounts:
    """Event counts of ``Y = X @ W`` on the macro without running it.

    The counts are those of docs/hardware-model.md section 6 and equal, for the same shapes
    and active rows, what ``Macro.mvm`` counts (``conv2d`` when ``reshape_words`` is given),
    except ``clipped_conversions``, which depends on the data and is reported as 0.

    Parameters
    ----------
    inner, outputs : int
        M (rows of the stored matrix) and N (its columns, the outputs).
    vectors : int
        B, the number of streamed vectors.
    x_format : BinaryFormat or Radix4Format
        Format of the streamed operand (P planes = array cycles per vector).
    w_format : BinaryFormat
        Format of the stored operand (Kw columns per output).
    config : MacroConfig or None
        Array geometry (default: the paper's 2304 x 256, 8-bit ADC).
    vref : VrefConfig or None
        ADC reference (default ``config.vref``); decides only ``high_vref_conversions``.
    active_rows : int array (row_tiles, vectors, P) or None
        Active rows of every array cycle, as a run reports in ``MvmResult.active_rows``.
    density : float in [0, 1] or None
        Instead of ``active_rows``: the fraction of streamed elements that are active (not
        masked).  A binary element is active in all P planes, a radix-4 one (one-hot) in at
        most one; the analytic model spreads radix-4 activity evenly over the P planes, so a
        cycle of a tile with R rows has ``density * R`` (binary) or ``density * R / P``
        (radix-4) active rows.  Counts are then expected values (float64).
        With neither: every row of every tile is active in every cycle (dense inputs).
    reshape_words : int or None
        Words a convolution's input reshape buffer takes in per column tile (``conv2d``
        books them on row tile 0); None: a plain MVM streams ``ceil(R * K / 32)`` words per
        vector and tile.

    Returns
    -------
    EventCounts
        ``per_tile[name]`` arrays (row_tiles, col_tiles); int64, or float64 with ``density``.
    """
    config = MacroConfig() if config is None else config
    if not isinstance(config, MacroConfig):
        raise TypeError(f"config: expected MacroConfig, got {type(config).__name__}")
    inner = _check_pos_int("inner", inner)
    outputs = _check_pos_int("outputs", outputs)
    vectors = _check_pos_int("vectors", vectors)
    if not isinstance(x_format, (BinaryFormat, Radix4Format)):
        raise TypeError(f"x_format: expected BinaryFormat or Radix4Format, got {x_format!r}")
    if not isinstance(w_format, BinaryFormat):
        raise TypeError(f"w_format: the stored operand must be a BinaryFormat, got {w_format!r}")
    vref = config.vref if vref is None else vref
    if not isinstance(vref, VrefConfig):
        raise TypeError(f"vref: expected VrefConfig, got {type(vref).__name__}")
    vref.check_against(config.rows, config.top_code)
    if active_rows is not None and density is not None:
        raise ValueError("active_rows, density: give at most one")
    plan = plan_tiles(config, inner, outputs, w_format)
    T, U, P = plan.row_tiles, plan.col_tiles, x_format.n_planes
    R = np.array([plan.row_range(t)[1] - plan.row_range(t)[0] for t in range(T)], dtype=np.int64)
    C = np.array([plan.used_columns(u) for u in range(U)], dtype=np.int64)
    n_out = np.array([plan.output_range(u)[1] - plan.output_range(u)[0] for u in range(U)],
                     dtype=np.int64)
    dual = vref.mode is VrefMode.DUAL

    if active_rows is not None:
        a = np.asarray(active_rows)
        if a.dtype.kind not in "iu":
            raise TypeError(f"active_rows: expected integers, got dtype {a.dtype}")
        if a.shape != (T, vectors, P):
            raise ValueError(f"active_rows: expected shape {(T, vectors, P)}, got {a.shape}")
        a = a.astype(np.int64)
        if (a < 0).any() or (a > R[:, None, None]).any():
            raise ValueError("active_rows: every count must lie in [0, rows of its tile]")
        active_sum = a.sum(axis=(1, 2))
        fs = select_full_scale(a, vref, config.top_code)
        high = ((fs == vref.dual_high).sum(axis=(1, 2)) if dual
                else np.zeros(T, dtype=np.int64))
    else:
        if density is None:
            per_cycle = R.astype(np.int64)
        else:
            d = _check_density("density", density)
            per_cycle = d * R / (P if isinstance(x_format, Radix4Format) else 1)
        active_sum = per_cycle * (vectors * P)
        if dual:
            high = np.where(per_cycle > vref.dual_low, vectors * P, 0).astype(np.int64)
            if vref.dual_low == vref.dual_high:   # the emulator compares F with dual_high
                high[:] = vectors * P
        else:
            high = np.zeros(T, dtype=np.int64)

    dtype = np.float64 if np.asarray(active_sum).dtype.kind == "f" else np.int64
    ones = np.ones((T, U), dtype=np.int64)
    per_tile = {
        "array_cycles": ones * (vectors * P),
        "bitcell_mults": (np.asarray(active_sum)[:, None] * C[None, :]).astype(dtype),
        "adc_conversions": ones * (vectors * P) * C[None, :],
        "sar_steps": ones * (vectors * P * config.adc_bits) * C[None, :],
        "nmc_outputs": ones * vectors * n_out[None, :],
        "cima_load_words": C[None, :] * np.array([words32(int(r), 1) for r in R])[:, None],
        "clipped_conversions": np.zeros((T, U), dtype=np.int64),
        "high_vref_conversions": high[:, None] * C[None, :],
    }
    if reshape_words is None:
        per_tile["reshape_words"] = (vectors * np.array(
            [words32(int(r), x_format.bits_per_element) for r in R]))[:, None] * ones
    else:
        words = np.zeros((T, U), dtype=np.int64)
        words[0, :] = _check_pos_int("reshape_words", reshape_words)
        per_tile["reshape_words"] = words
    return EventCounts({name: per_tile[name] for name in EVENT_NAMES})


def conv_event_counts(batch, height, width, in_channels, out_channels, x_format, w_format, *,
                      stride=1, config=None, vref=None, active_rows=None,
                      density=None) -> EventCounts:
    """Event counts of ``conv2d`` (3x3, pad 1) on a (batch, height, width, in_channels) map.

    Equals what ``imcsim.macro.conv2d`` counts: one input vector of 9 * in_channels elements
    per output pixel, ``out_channels`` outputs, and the input reshape buffer's words with
    window reuse (``batch * height * width * ceil(in_channels * K / 32)`` per column tile).
    Other parameters as in ``mvm_event_counts``.
    """
    from imcsim.reshape import KERNEL, conv_output_size
    for name, v in (("batch", batch), ("height", height), ("width", width),
                    ("in_channels", in_channels), ("out_channels", out_channels)):
        _check_pos_int(name, v)
    if stride not in (1, 2) or isinstance(stride, bool):
        raise ValueError(f"stride: must be 1 or 2, got {stride}")
    if not isinstance(x_format, (BinaryFormat, Radix4Format)):
        raise TypeError(f"x_format: expected BinaryFormat or Radix4Format, got {x_format!r}")
    vectors = batch * conv_output_size(height, stride) * conv_output_size(width, stride)
    words = batch * height * width * words32(in_channels, x_format.bits_per_element)
    return mvm_event_counts(KERNEL * KERNEL * in_channels, out_channels, vectors, x_format,
                            w_format, config=config, vref=vref, active_rows=active_rows,
                            density=density, reshape_words=words)


def measured_density(result: MvmResult, inner: int) -> float:
    """Measured fraction of active streamed elements of a run, for the analytic model.

    For radix-4 inputs (one-hot: an element is active in at most one plane) this is the
    fraction of non-zero elements; for binary inputs the fraction of rows active per plane.

    Parameters
    ----------
    result : MvmResult
        A run of ``Macro.mvm`` or ``conv2d``.
    inner : int
        M, the rows of the stored matrix (the length of one streamed vector).
    """
    if not isinstance(result, MvmResult):
        raise TypeError(f"result: expected MvmResult, got {type(result).__name__}")
    inner = _check_pos_int("inner", inner)
    a = np.asarray(result.active_rows)
    _, B, P = a.shape
    radix4 = str(result.meta.get("x_format", "")).startswith("radix4")
    return float(a.sum()) / float(B * inner * (1 if radix4 else P))


# ----------------------------------------------------------------------------------------
# Models: layers and the three training MVMs
# ----------------------------------------------------------------------------------------
MODELS = {"vgg-lite": vgg_lite_layers}


def layer_event_counts(layer: LayerSpec, kind: str, batch: int, *, config=None, vref=None,
                       density=None, active_rows=None) -> EventCounts:
    """Event counts of one training MVM of a layer mapped onto the macro (HARDWARE.md sec. 3).

    forward : weights stored (binary:5), activations streamed (binary:6), one vector per
        output pixel and image; convolutions go through the reshape buffer.
    backward : transposed weights stored (inner 9 * out_channels for a conv, out_channels for
        dense; outputs in_channels), gradients streamed (radix4:8); a conv's backward is the
        transposed convolution of the output-gradient map through the reshape buffer.
    update : activations stored (binary:6; inner batch x pixels, outputs 9 * in_channels
        for a conv, in_channels for dense), gradients streamed (radix4:8), one vector per
        output channel.

    ``density`` / ``active_rows`` describe the streamed operand (see ``mvm_event_counts``).
    """
    if not isinstance(layer, LayerSpec):
        raise TypeError(f"layer: expected LayerSpec, got {type(layer).__name__}")
    if kind not in MVM_KINDS:
        raise ValueError(f"kind: must be one of {MVM_KINDS}, got {kind!r}")
    batch = _check_pos_int("batch", batch)
    kw = dict(config=config, vref=vref, density=density, active_rows=active_rows)
    L = layer
    if L.kind == "conv":
        if kind == "forward":
            return conv_event_counts(batch, L.height, L.width, L.in_channels, L.out_channels,
                                     ACT_FORMAT, WEIGHT_FORMAT, **kw)
        if kind == "backward":
            return conv_event_counts(batch, L.height, L.width, L.out_channels, L.in_channels,
                                     GRAD_FORMAT, WEIGHT_FORMAT, **kw)
        return mvm_event_counts(batch * L.height * L.width, 9 * L.in_channels, L.out_channels,
                                GRAD_FORMAT, ACT_FORMAT, **kw)
    if kind == "forward":
        return mvm_event_counts(L.in_channels, L.out_channels, batch, ACT_FORMAT, WEIGHT_FORMAT,
                                **kw)
    if kind == "backward":
        return mvm_event_counts(L.out_channels, L.in_channels, batch, GRAD_FORMAT, WEIGHT_FORMAT,
                                **kw)
    return mvm_event_counts(batch, L.in_channels, L.out_channels, GRAD_FORMAT, ACT_FORMAT, **kw)


# ----------------------------------------------------------------------------------------
# The whole-model report
# ----------------------------------------------------------------------------------------
TABLE_COLUMNS = ("macs", "bitcell_mults", "adc_conversions", "nmc_outputs", "reshape_words",
                 "cima_load_words", "high_vref_conversions")


def parse_vref(value, base: VrefConfig | None = None) -> dict:
    """Vref mode per MVM kind from 'dual' or 'forward=dual,backward=variable' or a dict.

    Kinds not named keep ``base``'s mode (default: variable).  Returns {kind: VrefConfig}.
    """
    base = VrefConfig() if base is None else base
    if not isinstance(base, VrefConfig):
        raise TypeError(f"vref: base must be a VrefConfig, got {type(base).__name__}")
    out = {k: base for k in MVM_KINDS}
    if value is None:
        return out
    if isinstance(value, VrefConfig):
        return {k: value for k in MVM_KINDS}
    if isinstance(value, str):
        value = value.strip()
        if "=" not in value:
            mapping = {k: value for k in MVM_KINDS}
        else:
            mapping = {}
            for part in value.split(","):
                if not part.strip():
                    continue
                if "=" not in part:
                    raise ValueError(f"vref: expected 'kind=mode' items, got {part!r}")
                k, m = (s.strip() for s in part.split("=", 1))
                mapping[k] = m
    elif isinstance(value, dict):
        mapping = dict(value)
    else:
        raise TypeError(f"vref: expected a str, dict or VrefConfig, got {type(value).__name__}")
    for k, m in mapping.items():
        if k not in MVM_KINDS:
            raise ValueError(f"vref: unknown MVM kind {k!r}; choose from {MVM_KINDS}")
        if isinstance(m, VrefConfig):
            out[k] = m
            continue
        if isinstance(m, VrefMode):
            out[k] = replace(base, mode=m)
        elif ":" in str(m):
            out[k] = VrefConfig.parse(m)
        else:
            try:
                out[k] = replace(base, mode=VrefMode(m))
            except ValueError:
                raise ValueError(f"vref: unknown mode {m!r} for {k}; choose from "
                                 f"{[v.value for v in VrefMode]}") from None
    return out


@dataclass
class EnergyReport:
    """Per-layer x per-MVM counts and energies, totals and the GPU comparison.

    rows : list of dict, one per (layer, MVM kind): layer, mvm, device ('imc' or 'gpu'), vref,
        density, the counts of ``TABLE_COLUMNS`` (0 on the GPU), energy_j (on its device),
        imc_energy_j (had it run on IMC), gpu_energy_j (had it run on the GPU), and for IMC rows
        the energy split by event (``e_<event>``).
    totals : dict of summed counts and energies.
    comparison : dict: gpu_step_j, imc_step_j, ratio, imc_part_j, gpu_part_j, imc_macs,
        imc_tops_per_watt, imc_macs_per_joule, first_last_gpu_j, without_first_last_j,
        first_last_penalty, first_last_mac_fraction.
    settings : dict of the inputs and the stated assumptions.
    """

    rows: list
    totals: dict
    comparison: dict
    settings: dict

    def to_dict(self) -> dict:
        return {"settings": self.settings, "rows": self.rows, "totals": self.totals,
                "comparison": self.comparison}


def energy_report(model: str = "vgg-lite", batch: int = 128, *, imc="forward,backward,update",
                  vref=None, gradient_density: float = DEFAULT_GRADIENT_DENSITY,
                  activation_density: float = 1.0, pool_sparsity: bool = True,
                  first_last_on_imc: bool = False, charge_masked_rows: bool = False,
                  preset=None, config=None, densities: dict | None = None) -> EnergyReport:
    """Analytic energy of one training step of a model: IMC for the chosen MVMs, GPU elsewhere.

    Parameters
    ----------
    model : str
        A key of ``MODELS`` ('vgg-lite').
    batch : int
        Images per training step.
    imc : str or iterable
        MVM kinds that run on the macro ('forward,backward,update', 'all', 'none', ...).
    vref : str or dict or None
        ADC reference mode per kind (see ``parse_vref``); it changes only the count of high-Vref
        conversions, not the energy (Table II prices an ADC sample whatever its reference).
    gradient_density : float in [0, 1]
        Assumed fraction of non-zero radix-4 gradient elements (docs/energy.md, 3).
    activation_density : float in [0, 1]
        Fraction of active binary activation rows; below 1 only with ``mask_zero_inputs``.
    pool_sparsity : bool
        Multiply the gradient density of a layer followed by max-pool by 1/4.
    first_last_on_imc : bool
        Run the first and last layers on IMC too (the paper keeps them on the GPU in FP32).
    charge_masked_rows : bool
        Accounting variant: charge a bit-cell multiplication for every row of every plane,
        masked or not (no credit for sparsity; what the paper's Table IV figure implies, see
        docs/energy.md).  Default False: a masked row spends no bit-cell multiplication.
    preset : EnergyPreset or str or None
        Energy per event and GPU baseline (default: Table II / T4).
    config : MacroConfig or None
        Array geometry (default: the paper's).
    densities : dict or None
        {(layer name, kind): density}, e.g. measured in a training run with
        ``measured_density``; overrides the assumptions for those MVMs.
    """
    if not isinstance(model, str) or model not in MODELS:
        raise ValueError(f"model: must be one of {sorted(MODELS)}, got {model!r}")
    batch = _check_pos_int("batch", batch)
    kinds_on_imc = parse_imc_kinds(imc)
    config = MacroConfig() if config is None else config
    if not isinstance(config, MacroConfig):
        raise TypeError(f"config: expected MacroConfig, got {type(config).__name__}")
    vrefs = parse_vref(vref, config.vref)
    gradient_density = _check_density("gradient_density", gradient_density)
    activation_density = _check_density("activation_density", activation_density)
    if activation_density < 1.0 and not config.mask_zero_inputs:
        raise ValueError("activation_density: below 1 needs a config with mask_zero_inputs=True "
                         "(the paper's macro does not mask zero activations)")
    if not isinstance(first_last_on_imc, bool):
        raise TypeError("first_last_on_imc: expected a bool")
    if not isinstance(pool_sparsity, bool):
        raise TypeError("pool_sparsity: expected a bool")
    if not isinstance(charge_masked_rows, bool):
        raise TypeError("charge_masked_rows: expected a bool")
    preset = load_energy_preset() if preset is None else load_energy_preset(preset)
    densities = {} if densities is None else dict(densities)
    per_event = preset.joules_per_event()
    layers = MODELS[model]()
    edge = {layers[0].name, layers[-1].name}

    rows = []
    for layer in layers:
        for kind in MVM_KINDS:
            macs = layer.macs(batch)
            if (layer.name, kind) in densities:
                dens = _check_density(f"densities[{(layer.name, kind)}]",
                                      densities[(layer.name, kind)])
            elif kind == "forward":
                dens = activation_density
            else:
                dens = gradient_density * (POOL_GRADIENT_FRACTION
                                           if pool_sparsity and layer.pool_after else 1.0)
            ev = layer_event_counts(layer, kind, batch, config=config, vref=vrefs[kind],
                                    density=None if dens == 1.0 and kind == "forward" else dens)
            tot = {k: float(v) for k, v in ev.total().items()}
            if charge_masked_rows:
                full = layer_event_counts(layer, kind, batch, config=config, vref=vrefs[kind])
                tot["bitcell_mults"] = float(full.total()["bitcell_mults"])
            e_split = {f"e_{name}": tot[name] * per_event[name] for name in COSTED_EVENTS}
            imc_e = float(sum(e_split.values()))
            gpu_e = gpu_energy(macs, preset)
            on_imc = kind in kinds_on_imc and (first_last_on_imc or layer.name not in edge)
            row = {"layer": layer.name, "mvm": kind, "device": "imc" if on_imc else "gpu",
                   "vref": vrefs[kind].mode.value if on_imc else "-", "density": dens,
                   "macs": macs}
            for col in TABLE_COLUMNS[1:]:
                row[col] = tot[col] if on_imc else 0.0
            row.update({"energy_j": imc_e if on_imc else gpu_e, "imc_energy_j": imc_e,
                        "gpu_energy_j": gpu_e})
            row.update({k: (v if on_imc else 0.0) for k, v in e_split.items()})
            rows.append(row)

    totals = {"macs": sum(r["macs"] for r in rows)}
    for col in TABLE_COLUMNS[1:] + tuple(f"e_{n}" for n in COSTED_EVENTS):
        totals[col] = float(sum(r[col] for r in rows))
    totals["energy_j"] = float(sum(r["energy_j"] for r in rows))

    imc_rows = [r for r in rows if r["device"] == "imc"]
    imc_part = float(sum(r["energy_j"] for r in imc_rows))
    gpu_part = float(sum(r["energy_j"] for r in rows if r["device"] == "gpu"))
    gpu_step = float(sum(r["gpu_energy_j"] for r in rows))
    imc_macs = sum(r["macs"] for r in imc_rows)
    first_last_gpu = float(sum(r["energy_j"] for r in rows if r["layer"] in edge))
    without_edge = totals["energy_j"] - first_last_gpu
    edge_macs = sum(r["macs"] for r in rows if r["layer"] in edge)
    comparison = {
        "gpu_step_j": gpu_step,
        "imc_step_j": totals["energy_j"],
        "ratio": gpu_step / totals["energy_j"],
        "imc_part_j": imc_part,
        "gpu_part_j": gpu_part,
        "imc_macs": imc_macs,
        "imc_tops_per_watt": (2.0 * imc_macs / imc_part / 1e12) if imc_part > 0 else None,
        "imc_macs_per_joule": (imc_macs / imc_part) if imc_part > 0 else None,
        "first_last_j": first_last_gpu,
        "without_first_last_j": without_edge,
        "gpu_without_first_last_j": gpu_step - float(sum(r["gpu_energy_j"] for r in rows
                                                         if r["layer"] in edge)),
        "first_last_penalty": totals["energy_j"] / without_edge if without_edge > 0 else None,
        "first_last_mac_fraction": edge_macs / totals["macs"],
        "high_vref_share": {k: _high_share(rows, k) for k in kinds_on_imc},
    }
    comparison["ratio_without_first_last"] = (comparison["gpu_without_first_last_j"]
                                              / without_edge if without_edge > 0 else None)
    settings = {
        "model": model, "batch": batch, "imc": list(kinds_on_imc),
        "vref": {k: v.mode.value for k, v in vrefs.items()},
        "gradient_density": gradient_density, "activation_density": activation_density,
        "pool_sparsity": pool_sparsity, "first_last_on_imc": first_last_on_imc,
        "charge_masked_rows": charge_masked_rows,
        "preset": preset.to_dict(),
        "geometry": {"rows": config.rows, "columns": config.columns,
                     "adc_bits": config.adc_bits},
        "formats": {"activations": ACT_FORMAT.spec(), "weights": WEIGHT_FORMAT.spec(),
                    "gradients": GRAD_FORMAT.spec()},
    }
    return EnergyReport(rows, totals, comparison, settings)


def _high_share(rows, kind):
    conv = sum(r["adc_conversions"] for r in rows if r["mvm"] == kind and r["device"] == "imc")
    high = sum(r["high_vref_conversions"] for r in rows
               if r["mvm"] == kind and r["device"] == "imc")
    return high / conv if conv else None


#: The configurations of Figs. 9 and 10: (label, imc kinds, vref, first_last_on_imc).
SCENARIOS = (
    ("GPU only", "none", "variable", False),
    ("IMC forward (dual Vref)", "forward", "dual", False),
    ("IMC forward+backward (dual Vref)", "forward,backward", "dual", False),
    ("IMC all three (variable Vref)", "forward,backward,update", "variable", False),
    ("IMC all three, first+last on IMC too", "forward,backward,update", "variable", True),
)


def scenario_summary(model: str = "vgg-lite", batch: int = 128, **kwargs) -> list[dict]:
    """Energy per step of the configurations of Figs. 9 and 10 (``SCENARIOS``).

    Keyword arguments go to ``energy_report`` (not imc, vref, first_last_on_imc).
    """
    out = []
    for label, kinds, vref, fl in SCENARIOS:
        rep = energy_report(model, batch, imc=kinds, vref=vref, first_last_on_imc=fl, **kwargs)
        c = rep.comparison
        out.append({"label": label, "imc": kinds, "vref": vref, "first_last_on_imc": fl,
                    "step_j": c["imc_step_j"], "gpu_step_j": c["gpu_step_j"],
                    "ratio": c["ratio"], "imc_part_j": c["imc_part_j"],
                    "gpu_part_j": c["gpu_part_j"], "imc_tops_per_watt": c["imc_tops_per_watt"],
                    "first_last_penalty": c["first_last_penalty"],
                    "ratio_without_first_last": c["ratio_without_first_last"]})
    return out


def plot_report(report: EnergyReport, path, scenarios: list | None = None) -> Path:
    """Write a PNG in the spirit of Figs. 9 and 10: energy per step per configuration, and
    per layer and MVM on IMC against the GPU (log scales)."""
    if not isinstance(report, EnergyReport):
        raise TypeError(f"report: expected EnergyReport, got {type(report).__name__}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    s = report.settings
    if scenarios is None:
        scenarios = scenario_summary(s["model"], s["batch"],
                                     gradient_density=s["gradient_density"],
                                     pool_sparsity=s["pool_sparsity"],
                                     charge_masked_rows=s["charge_masked_rows"],
                                     preset=EnergyPreset.from_dict(s["preset"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw={"width_ratios": [1, 1.6]})
    short = {"forward": "fwd", "forward,backward": "fwd+bwd",
             "forward,backward,update": "all 3", "none": "none"}
    labels = ["GPU only" if d["imc"] == "none" else
              f"IMC {short.get(d['imc'], d['imc'])}\n{d['vref']} Vref"
              + ("\nL1, L9 on IMC" if d["first_last_on_imc"] else "\nL1, L9 on GPU")
              for d in scenarios]
    vals = [d["step_j"] for d in scenarios]
    colors = ["tab:gray"] + ["tab:blue"] * (len(vals) - 1)
    ax1.bar(range(len(vals)), vals, color=colors)
    ax1.set_yscale("log")
    ax1.set_ylim(min(vals) / 3, max(vals) * 4)
    ax1.axhline(0.1, color="tab:red", ls="--", lw=1, label="100 mJ")
    for i, (v, d) in enumerate(zip(vals, scenarios)):
        ax1.text(i, v * 1.15, f"{v * 1e3:.3g} mJ\n{d['ratio']:.3g}x", ha="center", va="bottom", fontsize=8)
    ax1.set_xticks(range(len(vals)), labels, fontsize=7)
    ax1.set_ylabel("energy per training step (J)")
    ax1.set_title(f"(Fig. 9) {s['model']}, batch {s['batch']}: per step")
    ax1.legend(fontsize=8)

    layers = list(dict.fromkeys(r["layer"] for r in report.rows))
    width = 0.13
    x = np.arange(len(layers))
    for j, kind in enumerate(MVM_KINDS):
        imc = [next(r["imc_energy_j"] for r in report.rows
                    if r["layer"] == L and r["mvm"] == kind) for L in layers]
        gpu = [next(r["gpu_energy_j"] for r in report.rows
                    if r["layer"] == L and r["mvm"] == kind) for L in layers]
        ax2.bar(x + (2 * j - 2.5) * width, gpu, width, color=f"C{j}", alpha=0.35,
                label=f"{kind} on GPU")
        ax2.bar(x + (2 * j - 1.5) * width, imc, width, color=f"C{j}", label=f"{kind} on IMC")
    ax2.set_yscale("log")
    ax2.set_xticks(x, layers)
    ax2.set_ylabel("energy per training step (J)")
    ax2.set_title("(Fig. 10) per layer and MVM: GPU vs IMC")
    ax2.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
