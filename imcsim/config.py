"""Configuration of the macro: frozen, validated dataclasses; presets live in ``data/presets``.

Every register width, rounding and saturation rule of docs/hardware-model.md is a named field
here.  ``MacroConfig.to_dict`` / ``from_dict`` round-trip through JSON.
"""
from __future__ import annotations

import enum
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path

import numpy as np

from imcsim.kernels.hw import CODE_OFFSET_FRAC_BITS, SIGMA_FRAC_BITS
from imcsim.kernels.targets import CPU as hw_cpu

MAX_ROWS = 16384


class VrefMode(enum.Enum):
    """How the ADC's Vref,p (full scale F, in rows) is chosen for each array cycle."""

    FIXED = "fixed"
    VARIABLE = "variable"
    DUAL = "dual"


class MvmKind(enum.Enum):
    """The three training MVMs: forward, backward and weight update (Grimm & Verma Sec. III)."""

    FORWARD = "forward"
    BACKWARD = "backward"
    UPDATE = "update"


_KIND_NAMES = tuple(k.value for k in MvmKind)


def parse_mvm_kinds(value) -> tuple:
    """'forward,backward' or an iterable -> tuple of MVM kinds in canonical order ('' = none)."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
        if len(items) == 1 and items[0] in ("all", "none"):
            items = list(_KIND_NAMES) if items[0] == "all" else []
    else:
        try:
            items = list(value)
        except TypeError:
            raise TypeError(f"imc: expected a comma-separated str or an iterable, got "
                            f"{type(value).__name__}") from None
    bad = [v for v in items if v not in _KIND_NAMES]
    if bad:
        raise ValueError(f"imc: unknown MVM kinds {bad}; choose from {_KIND_NAMES}")
    return tuple(k for k in _KIND_NAMES if k in items)


class Overflow(enum.Enum):
    """What an NMC accumulator does when a sum leaves its range."""

    SATURATE = "saturate"
    WRAP = "wrap"


class Rounding(enum.Enum):
    """Rounding of the NMC output shift."""

    FLOOR = "floor"
    HALF_UP = "half_up"
    HALF_EVEN = "half_even"


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}: must lie in [{lo}, {hi}], got {value}")


def _check_float(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not (lo <= float(value) <= hi):
        raise ValueError(f"{name}: must lie in [{lo}, {hi}], got {value}")


def _check_enum(name, value, enum_type):
    if not isinstance(value, enum_type):
        raise TypeError(f"{name}: expected {enum_type.__name__}, got {value!r}")


#: the ``--vref`` spec of a fixed full scale programmed per layer to its inner dimension (the
#: training engine's matched-F control, ``imcsim.training.backends.MatchedFullScale``); the
#: energy model reads it back from a run's configuration
MATCHED_VREF_SPEC = "fixed:matched"


@dataclass(frozen=True)
class VrefConfig:
    """ADC reference mode and levels, all as full scales F in rows (Vref,p = F * vdd / rows);
    with multi-level rows in level units, vdd / (rows * D) (docs/hardware-model.md 4.8)."""

    #: how F is chosen per array cycle: fixed, variable (F = max(active rows, L)) or dual
    mode: VrefMode = VrefMode.VARIABLE
    #: F of the fixed mode [rows]; 2304 rows = 0.8 V in the paper's macro
    full_scale: int = 2304
    #: the dual mode's low level [rows], used while the cycle has at most this many active
    #: rows; 255 rows = V_prec = 0.0885 V
    dual_low: int = 255
    #: the dual mode's high level [rows]
    dual_high: int = 2304
    #: dual mode only: each column's ADC chooses its own level (the low one unless its held
    #: value exceeds it, one extra comparator decision) instead of one level per array cycle
    #: from the active-row count (docs/hardware-model.md 4.3)
    per_column: bool = False

    def __post_init__(self):
        _check_enum("vref.mode", self.mode, VrefMode)
        if not isinstance(self.per_column, bool):
            raise TypeError("vref.per_column: expected a bool")
        if self.per_column and self.mode is not VrefMode.DUAL:
            raise ValueError(f"vref.per_column: applies to the dual mode only, got mode "
                             f"{self.mode.value!r}")
        for name in ("full_scale", "dual_low", "dual_high"):
            _check_int(f"vref.{name}", getattr(self, name), 1, 1 << 20)
        if self.dual_low > self.dual_high:
            raise ValueError(f"vref.dual_low ({self.dual_low}) must not exceed "
                             f"vref.dual_high ({self.dual_high})")

    @classmethod
    def parse(cls, text: str) -> VrefConfig:
        """'variable', 'fixed[:F]' or 'dual[:LOW:HIGH][:column]' (full scales in rows; a final
        ':column' makes the choice per column) -> VrefConfig."""
        parts = str(text).strip().split(":")
        if len(parts) > 1 and parts[0] == VrefMode.DUAL.value and parts[-1] == "column":
            return replace(cls.parse(":".join(parts[:-1])), per_column=True)
        try:
            mode = VrefMode(parts[0])
            nums = [int(p) for p in parts[1:]]
        except ValueError:
            nums = None
        if nums is not None:
            if mode is VrefMode.FIXED and len(nums) <= 1:
                return cls(mode=mode, **({"full_scale": nums[0]} if nums else {}))
            if mode is VrefMode.DUAL and len(nums) in (0, 2):
                return cls(mode=mode, **({"dual_low": nums[0], "dual_high": nums[1]}
                                         if nums else {}))
            if mode is VrefMode.VARIABLE and not nums:
                return cls(mode=mode)
        raise ValueError(f"vref: expected 'variable', 'fixed[:F]' or 'dual[:LOW:HIGH][:column]', "
                         f"got {text!r}")

    def levels_in_use(self) -> tuple[str, ...]:
        """The fields of the levels this mode programs (variable mode programs none: its F
        follows the active rows)."""
        if self.mode is VrefMode.FIXED:
            return ("full_scale",)
        if self.mode is VrefMode.DUAL:
            return ("dual_low", "dual_high")
        return ()

    def check_against(self, rows: int, top_code: int, top_level: int = 1):
        """Cross-check with the array: every level the mode programs must lie in
        [L, rows * top_level] (level units of a streamed format whose top row level is
        ``top_level``; rows when 1).  Levels the mode leaves unused are not checked: the
        defaults (dual_low = 255 rows) would otherwise refuse the variable mode on an ADC of
        more than 8 bits."""
        hi = rows * top_level
        unit = "rows" if top_level == 1 else f"level units (top row level {top_level})"
        for name in self.levels_in_use():
            value = getattr(self, name)
            if not top_code <= value <= hi:
                raise ValueError(f"vref.{name}: full scale must lie in [{top_code}, {hi}] {unit}, "
                                 f"got {value}")


# --- the one Vref grammar of every command and sweep key ----------------------------------
def split_kind_items(specs, name: str = "vref") -> list[tuple[str | None, object]]:
    """``[KIND=]SPEC`` items -> [(kind or None for every kind, spec)], in the order given.

    ``specs`` is a string of comma-separated items, a list of such strings (a repeated
    option) or of ``[KIND, SPEC]`` pairs, or a mapping {kind (str or MvmKind): spec}.  A bare
    SPEC names every kind; later items win.  Kinds are checked here, specs by the caller.
    """
    if isinstance(specs, dict):
        raw = list(specs.items())
    else:
        texts = [specs] if isinstance(specs, str) else list(specs)
        raw = []
        for text in texts:
            if isinstance(text, (list, tuple)) and len(text) == 2:
                raw.append(tuple(text))
                continue
            if not isinstance(text, str):
                raise ValueError(f"{name}: expected KIND=SPEC or [KIND, SPEC], got {text!r}")
            for part in text.split(","):
                part = part.strip()
                if not part:
                    continue
                kind, sep, spec = (v.strip() for v in part.partition("="))
                if sep and not spec:
                    raise ValueError(f"{name}: expected KIND=SPEC, got {part!r}")
                raw.append((kind, spec) if sep else (None, part))
    out = []
    for kind, spec in raw:
        kind = kind.value if isinstance(kind, MvmKind) else kind
        if kind is not None and kind not in _KIND_NAMES:
            raise ValueError(f"{name}: unknown MVM kind {kind!r}; choose from "
                             f"{', '.join(_KIND_NAMES)}")
        out.append((kind, spec))
    return out


def vref_level(spec, base: VrefConfig, where: str = "every kind") -> VrefConfig:
    """One level spec (str, VrefMode or VrefConfig) -> VrefConfig; a text without numbers
    (``dual``, ``dual:column``) keeps ``base``'s levels."""
    if isinstance(spec, VrefConfig):
        return spec
    if isinstance(spec, VrefMode):
        return replace(base, mode=spec, per_column=False)
    if not isinstance(spec, str):
        raise TypeError(f"vref: expected a str, VrefMode or VrefConfig for {where}, got "
                        f"{type(spec).__name__}")
    try:
        parsed = VrefConfig.parse(spec)
    except ValueError as exc:
        raise ValueError(f"{exc} (for {where})") from None
    numbers = any(p.strip().isdigit() for p in spec.split(":")[1:])
    return parsed if numbers else replace(base, mode=parsed.mode, per_column=parsed.per_column)


def parse_vref_per_kind(specs, base: VrefConfig | None = None) -> dict[str, VrefConfig]:
    """ADC reference of each MVM kind from ``--vref`` specs (every command's grammar).

    Parameters
    ----------
    specs : str or iterable of str or mapping or VrefConfig or None
        ``'dual'``, ``'forward=dual:255:2304,backward=fixed:1024'``, a list of such strings
        (a repeated option), a mapping {kind (str or MvmKind): spec or VrefMode or
        VrefConfig}, one VrefConfig for every kind, or None (every kind keeps ``base``).
        One SPEC is what ``VrefConfig.parse`` reads: ``variable``, ``fixed[:F]`` or
        ``dual[:LOW:HIGH][:column]`` (full scales in rows).
    base : VrefConfig or None
        The reference of kinds not named, and the levels of a spec without numbers
        (default ``VrefConfig()``: variable).

    Returns
    -------
    dict of str to VrefConfig
        One entry per MVM kind ('forward', 'backward', 'update'), in that order.
    """
    base = VrefConfig() if base is None else base
    if not isinstance(base, VrefConfig):
        raise TypeError(f"vref: base must be a VrefConfig, got {type(base).__name__}")
    if specs is None:
        return dict.fromkeys(_KIND_NAMES, base)
    if isinstance(specs, VrefConfig):
        return dict.fromkeys(_KIND_NAMES, specs)
    if not isinstance(specs, (str, dict, list, tuple)):
        raise TypeError(f"vref: expected a str, list, dict or VrefConfig, got "
                        f"{type(specs).__name__}")
    out = dict.fromkeys(_KIND_NAMES, base)
    for kind, spec in split_kind_items(specs):
        if kind is None:
            out.update(dict.fromkeys(_KIND_NAMES, vref_level(spec, base)))
        else:
            out[kind] = vref_level(spec, base, kind)
    return out


def vref_texts_per_kind(specs, default: str = "variable") -> tuple[tuple[str, str], ...]:
    """The same grammar, kept as text per kind ((kind, spec) in forward/backward/update
    order; kinds not named: ``default``), for configs that store the spec (a training run's
    ``vref``, whose specs the run checks, ``fixed:matched`` included)."""
    given = dict.fromkeys(_KIND_NAMES, default)
    for kind, spec in split_kind_items(specs):
        if not isinstance(spec, str) or not spec:
            raise ValueError(f"vref: expected a level spec text for {kind or 'every kind'}, "
                             f"got {spec!r}")
        given.update(dict.fromkeys(_KIND_NAMES if kind is None else (kind,), spec))
    return tuple(given.items())


@dataclass(frozen=True)
class NmcConfig:
    """Fixed-point datapath after the ADC (docs/hardware-model.md 4.6)."""

    #: fraction bits S of the per-cycle scale F / L [bits], 0..24
    scale_frac_bits: int = 16
    #: width of each output's accumulator register [bits, two's complement], 8..62
    acc_bits: int = 48
    #: what the accumulator does on overflow: saturate or wrap
    overflow: Overflow = Overflow.SATURATE
    #: reconstruct a code as the middle of its bin (code + 1/2) instead of its lower edge
    half_lsb_reconstruction: bool = False
    #: fraction bits of the output register y_int [bits], 0..40
    out_frac_bits: int = 12
    #: width of the output register [bits, two's complement, saturating], 8..62
    out_bits: int = 48
    #: rounding of the accumulator -> output shift (and of the per-output scale)
    out_rounding: Rounding = Rounding.HALF_EVEN
    #: fraction bits of the optional per-output scale [bits], 0..30
    out_scale_frac_bits: int = 16
    #: fraction bits of the per-column code-offset registers [bits], 0..8
    code_offset_frac_bits: int = 4
    #: width of a code-offset register [bits, two's complement], 2..12
    code_offset_bits: int = 8
    #: per-column code offsets for the lossless range (F <= L) [2**-code_offset_frac_bits
    #: code]: the column's measured mean code error, which the NMC subtracts from each code
    #: (docs/hardware-model.md 4.6, ``imcsim.calibration.offsets``); () = none
    code_offsets_lossless: tuple = ()
    #: the same for conversions with F > L [2**-code_offset_frac_bits code]; () = none
    code_offsets_lossy: tuple = ()
    #: the same for code 0, in either range [2**-code_offset_frac_bits code]; () = none
    code_offsets_zero: tuple = ()

    def __post_init__(self):
        _check_int("nmc.scale_frac_bits", self.scale_frac_bits, 0, 24)
        _check_int("nmc.acc_bits", self.acc_bits, 8, 62)
        _check_enum("nmc.overflow", self.overflow, Overflow)
        if not isinstance(self.half_lsb_reconstruction, bool):
            raise TypeError("nmc.half_lsb_reconstruction: expected a bool")
        _check_int("nmc.out_frac_bits", self.out_frac_bits, 0, 40)
        _check_int("nmc.out_bits", self.out_bits, 8, 62)
        _check_enum("nmc.out_rounding", self.out_rounding, Rounding)
        _check_int("nmc.out_scale_frac_bits", self.out_scale_frac_bits, 0, 30)
        _check_int("nmc.code_offset_frac_bits", self.code_offset_frac_bits, 0,
                   CODE_OFFSET_FRAC_BITS)
        _check_int("nmc.code_offset_bits", self.code_offset_bits, 2, 12)
        lo, hi = -(1 << (self.code_offset_bits - 1)), (1 << (self.code_offset_bits - 1)) - 1
        for name in ("code_offsets_lossless", "code_offsets_lossy", "code_offsets_zero"):
            value = getattr(self, name)
            if isinstance(value, (list, np.ndarray)):        # JSON lists, measured arrays
                value = tuple(value)
                object.__setattr__(self, name, value)
            if not isinstance(value, tuple):
                raise TypeError(f"nmc.{name}: expected a tuple of ints, got "
                                f"{type(value).__name__}")
            value = tuple(int(v) if isinstance(v, np.integer) else v for v in value)
            object.__setattr__(self, name, value)
            for v in value:
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise ValueError(f"nmc.{name}: each offset must be an int in [{lo}, {hi}] "
                                     f"(a {self.code_offset_bits}-bit register), got {v!r}")
        lengths = {len(self.code_offsets_lossless), len(self.code_offsets_lossy),
                   len(self.code_offsets_zero)}
        if len(lengths) > 1:
            raise ValueError(f"nmc.code_offsets_lossless, code_offsets_lossy and "
                             f"code_offsets_zero: expected one offset per column in each, got "
                             f"{len(self.code_offsets_lossless)}, {len(self.code_offsets_lossy)} "
                             f"and {len(self.code_offsets_zero)}")

    @property
    def has_code_offsets(self) -> bool:
        """Does the NMC correct any code (per-column offsets or half-LSB reconstruction)?"""
        return self.half_lsb_reconstruction or any(self.code_offsets_lossless) or any(
            self.code_offsets_lossy) or any(self.code_offsets_zero)

    def code_offset_table(self, columns: int) -> np.ndarray:
        """The offsets the kernels subtract, int64 (3, columns) in 2**-CODE_OFFSET_FRAC_BITS
        code: row 0 for a non-zero code at F <= L, row 1 at F > L, row 2 for code 0
        (``hw.column_code_offset``); half-LSB reconstruction is an offset of -1/2 code on
        every column and code."""
        table = np.zeros((3, columns), dtype=np.int64)
        if self.code_offsets_lossless:
            up = CODE_OFFSET_FRAC_BITS - self.code_offset_frac_bits
            table[0] = np.asarray(self.code_offsets_lossless, dtype=np.int64) << up
            table[1] = np.asarray(self.code_offsets_lossy, dtype=np.int64) << up
            table[2] = np.asarray(self.code_offsets_zero, dtype=np.int64) << up
        if self.half_lsb_reconstruction:
            table -= 1 << (CODE_OFFSET_FRAC_BITS - 1)
        return table


@dataclass(frozen=True)
class NonIdealityConfig:
    """Analog non-idealities; all zero is the ideal macro.

    cell_cap_sigma, cdac_unit_sigma, dac_unit_sigma: relative sigma of one cell / one CDAC unit
    capacitor / one row-DAC unit source.
    parasitic_ratio: column parasitic capacitance over the total cell capacitance.
    comparator_offset_sigma, comparator_noise_sigma, sampling_noise_sigma: in rows
    (1 row = vdd / rows, 347 uV in the paper preset).
    """

    #: relative sigma of one bit cell's capacitor (static, per cell) [1], 0..0.2
    cell_cap_sigma: float = 0.0
    #: column parasitic capacitance over the column's total cell capacitance [1], 0..10
    parasitic_ratio: float = 0.0
    #: relative sigma of one CDAC unit capacitor (static, per column) [1], 0..0.2
    cdac_unit_sigma: float = 0.0
    #: sigma of each column comparator's static offset [rows], 0..64
    comparator_offset_sigma: float = 0.0
    #: sigma of the comparator noise, drawn per SAR step [rows], 0..64
    comparator_noise_sigma: float = 0.0
    #: sigma of the kT/C sampling noise, drawn per conversion [rows], 0..64
    sampling_noise_sigma: float = 0.0
    #: relative sigma of one unit source of a row DAC (static, per row and DAC bit; bit k
    #: has 2**k units) [1], 0..0.2 (docs/hardware-model.md 4.8)
    dac_unit_sigma: float = 0.0

    def __post_init__(self):
        _check_float("nonideal.cell_cap_sigma", self.cell_cap_sigma, 0.0, 0.2)
        _check_float("nonideal.dac_unit_sigma", self.dac_unit_sigma, 0.0, 0.2)
        _check_float("nonideal.parasitic_ratio", self.parasitic_ratio, 0.0, 10.0)
        _check_float("nonideal.cdac_unit_sigma", self.cdac_unit_sigma, 0.0, 0.2)
        for name in ("comparator_offset_sigma", "comparator_noise_sigma", "sampling_noise_sigma"):
            _check_float(f"nonideal.{name}", getattr(self, name), 0.0, 64.0)

    @property
    def is_ideal(self) -> bool:
        return all(v == 0 for v in self.fixed_point().values())

    def fixed_point(self) -> dict:
        """The sigmas as fixed-point integers (scaled by 2**16), the only form the model uses."""
        scale = 1 << SIGMA_FRAC_BITS
        return {
            "sigma_cell_fx": round(self.cell_cap_sigma * scale),
            "parasitic_fx": round(self.parasitic_ratio * scale),
            "sigma_cdac_fx": round(self.cdac_unit_sigma * scale),
            "sigma_offset_fx": round(self.comparator_offset_sigma * scale),
            "sigma_cmp_fx": round(self.comparator_noise_sigma * scale),
            "sigma_sample_fx": round(self.sampling_noise_sigma * scale),
            "sigma_dac_fx": round(self.dac_unit_sigma * scale),
        }

    def scaled(self, factor: float, which: str = "all") -> NonIdealityConfig:
        """These non-idealities with the group or field ``which`` multiplied by ``factor``
        (clipped to each field's range; the others unchanged).

        which : a key of :data:`NONIDEALITY_GROUPS` ('all', 'noise': the dynamic noise drawn
            per conversion, 'mismatch': the static per-chip errors) or one field's name.
        """
        names = nonideality_names(which)
        if not (isinstance(factor, (int, float)) and not isinstance(factor, bool)
                and factor >= 0 and np.isfinite(factor)):
            raise ValueError(f"noise_scale: expected a finite factor >= 0, got {factor!r}")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in names:
            values[name] = min(values[name] * float(factor), NONIDEALITY_LIMITS[name])
        return NonIdealityConfig(**values)


#: each non-ideality's upper limit (its unit as in NonIdealityConfig)
NONIDEALITY_LIMITS = {"cell_cap_sigma": 0.2, "parasitic_ratio": 10.0, "cdac_unit_sigma": 0.2,
                      "comparator_offset_sigma": 64.0, "comparator_noise_sigma": 64.0,
                      "sampling_noise_sigma": 64.0, "dac_unit_sigma": 0.2}
#: groups of non-idealities that scale together (NonIdealityConfig.scaled, noise budgets)
NONIDEALITY_GROUPS = {
    "all": tuple(NONIDEALITY_LIMITS),
    "noise": ("comparator_noise_sigma", "sampling_noise_sigma"),
    "mismatch": ("cell_cap_sigma", "parasitic_ratio", "cdac_unit_sigma",
                 "comparator_offset_sigma", "dac_unit_sigma"),
}


def nonideality_names(which: str) -> tuple:
    """The non-ideality fields of a group name or a single field name; ValueError otherwise."""
    if which in NONIDEALITY_GROUPS:
        return NONIDEALITY_GROUPS[which]
    if which in NONIDEALITY_LIMITS:
        return (which,)
    raise ValueError(f"noise_scaled: expected one of {', '.join(NONIDEALITY_GROUPS)} or a "
                     f"non-ideality ({', '.join(NONIDEALITY_LIMITS)}), got {which!r}")


class JsonRoundTrip:
    """JSON on top of a class's ``to_dict`` / ``from_dict``."""

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class MacroConfig(JsonRoundTrip):
    """The whole macro. Defaults are the paper's (see ``data/presets/paper.json``)."""

    #: bit-cell rows of the array (the most rows one array cycle sums) [rows], L..16384
    rows: int = 2304
    #: columns of the array, one SAR ADC each [columns], 1..4096
    columns: int = 256
    #: ADC resolution Nb [bits]; the top code is L = 2**Nb - 1
    adc_bits: int = 8
    #: resolution of each row's input DAC [bits], 1..5: rows take levels 0 .. 2**bits - 1
    #: (docs/hardware-model.md 4.8); 1 = the paper's binary rows
    input_bits: int = 1
    #: the ADC law: floor (the paper's) or half_up (thresholds half an LSB lower)
    adc_rounding: Rounding = Rounding.FLOOR
    #: supply and full-range reference [V]; sets only the volts-per-row reporting
    vdd: float = 0.8
    #: mask rows whose binary input element is 0 (an option the macro's masks allow)
    mask_zero_inputs: bool = False
    #: the controller skips an array cycle whose rows are all masked (0 active rows): no
    #: cycle, no conversions, no NMC term (docs/hardware-model.md 4.7); off = the paper's
    #: schedule, which converts every plane
    skip_masked_cycles: bool = False
    #: ADC reference choice
    vref: VrefConfig = field(default_factory=VrefConfig)
    #: near-memory datapath registers and rounding
    nmc: NmcConfig = field(default_factory=NmcConfig)
    #: analog non-idealities (all zero: ideal)
    nonideal: NonIdealityConfig = field(default_factory=NonIdealityConfig)
    #: the chip: seed of every static mismatch table [0, 2**63)
    chip_seed: int = 0

    def __post_init__(self):
        # 16384 rows keep the charge-sharing and SAR products inside int64 (hardware-model.md 4.4)
        _check_int("rows", self.rows, 1, MAX_ROWS)
        _check_int("columns", self.columns, 1, 4096)
        _check_int("adc_bits", self.adc_bits, 2, 12)
        _check_int("input_bits", self.input_bits, 1, 5)
        if self.rows * self.max_input_level > MAX_ROWS:
            raise ValueError(f"input_bits: rows * (2**input_bits - 1) must not exceed {MAX_ROWS} "
                             f"(64-bit charge and SAR products), got {self.rows} * "
                             f"{self.max_input_level}")
        if self.adc_rounding not in (Rounding.FLOOR, Rounding.HALF_UP):
            raise ValueError(f"adc_rounding: must be Rounding.FLOOR (the paper's law) or "
                             f"Rounding.HALF_UP (thresholds half an LSB lower), got "
                             f"{self.adc_rounding!r}")
        _check_float("vdd", self.vdd, 1e-3, 10.0)
        if not isinstance(self.mask_zero_inputs, bool):
            raise TypeError("mask_zero_inputs: expected a bool")
        if not isinstance(self.skip_masked_cycles, bool):
            raise TypeError("skip_masked_cycles: expected a bool")
        for name, typ in (("vref", VrefConfig), ("nmc", NmcConfig), ("nonideal", NonIdealityConfig)):
            if not isinstance(getattr(self, name), typ):
                raise TypeError(f"{name}: expected {typ.__name__}")
        _check_int("chip_seed", self.chip_seed, 0, (1 << 63) - 1)
        if self.rows < self.top_code:
            raise ValueError(f"rows ({self.rows}) must be at least the top ADC code "
                             f"2**adc_bits - 1 = {self.top_code}")
        self.vref.check_against(self.rows, self.top_code, self.max_input_level)
        n_offsets = len(self.nmc.code_offsets_lossless)
        if n_offsets and n_offsets != self.columns:
            raise ValueError(f"nmc.code_offsets_lossless: expected one offset per column "
                             f"({self.columns}), got {n_offsets}")

    @property
    def top_code(self) -> int:
        """L = 2**adc_bits - 1."""
        return (1 << self.adc_bits) - 1

    @property
    def max_input_level(self) -> int:
        """The row DAC's top level 2**input_bits - 1."""
        return (1 << self.input_bits) - 1

    def check_input_format(self, x_format, name: str = "x_format") -> None:
        """Refuse a streamed format whose row levels the row DAC cannot drive."""
        if x_format.top_level > self.max_input_level:
            raise ValueError(f"{name}: {x_format.spec()} drives row levels up to "
                             f"{x_format.top_level}, but the row DAC has input_bits = "
                             f"{self.input_bits} (levels up to {self.max_input_level}); "
                             f"set input_bits >= {x_format.top_level.bit_length()}")

    def adc_threshold_shift(self, full_scale):
        """Half an LSB in analog fixed point when ``adc_rounding`` is HALF_UP, else 0 (int64).

        ``((F << 20) + L) // (2 L)``: the comparator sees the held value raised by this much,
        so an integer count sits mid-code instead of on a threshold.
        """
        f = np.asarray(full_scale, dtype=np.int64)
        half_up = self.adc_rounding is Rounding.HALF_UP
        shift = [hw_cpu.adc_threshold_shift(int(v), self.top_code, half_up) for v in f.ravel()]
        return np.array(shift, dtype=np.int64).reshape(f.shape)

    @property
    def volts_per_row(self) -> float:
        return self.vdd / self.rows

    def full_scale_volts(self, full_scale: int) -> float:
        return full_scale * self.volts_per_row

    def with_vref(self, vref: VrefConfig) -> MacroConfig:
        return replace(self, vref=vref)

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        def convert(obj):
            if isinstance(obj, enum.Enum):
                return obj.value
            if isinstance(obj, dict):
                return {k: convert(v) for k, v in obj.items()}
            if isinstance(obj, tuple):            # the per-column registers: JSON lists
                return [convert(v) for v in obj]
            return obj
        return convert(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> MacroConfig:
        if not isinstance(data, dict):
            raise TypeError("config: expected a mapping")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}")
        kwargs = dict(data)
        if "adc_rounding" in kwargs:
            kwargs["adc_rounding"] = Rounding(kwargs["adc_rounding"])
        if "vref" in kwargs:
            v = dict(kwargs["vref"])
            if "mode" in v:
                v["mode"] = VrefMode(v["mode"])
            kwargs["vref"] = VrefConfig(**v)
        if "nmc" in kwargs:
            n = dict(kwargs["nmc"])
            if "overflow" in n:
                n["overflow"] = Overflow(n["overflow"])
            if "out_rounding" in n:
                n["out_rounding"] = Rounding(n["out_rounding"])
            kwargs["nmc"] = NmcConfig(**n)
        if "nonideal" in kwargs:
            kwargs["nonideal"] = NonIdealityConfig(**kwargs["nonideal"])
        return cls(**kwargs)



#: Macro presets shipped inside the package (a ``Traversable``: works from a wheel or a zip).
PRESET_DIR = resources.files("imcsim.data").joinpath("presets")


def packaged_json_names(folder) -> list[str]:
    """Stems of the ``*.json`` files in a packaged data folder (a ``Traversable``)."""
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def preset_names() -> list[str]:
    return packaged_json_names(PRESET_DIR)


def load_preset(name: str) -> MacroConfig:
    """Load ``data/presets/<name>.json`` (or a path to a JSON file)."""
    path = Path(name)
    if not path.suffix:
        path = PRESET_DIR.joinpath(f"{name}.json")
    if not path.is_file():
        raise ValueError(f"preset: no preset {name!r}; known: {', '.join(preset_names())}")
    return MacroConfig.from_json(path.read_text())


def save_config(config: MacroConfig, path) -> None:
    """Write a config as JSON atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(config.to_json() + "\n")
    os.replace(tmp, path)
