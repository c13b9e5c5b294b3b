"""Number formats of the macro: the +/-1 binary format (Eq. 1) and one-hot radix-4 (Eq. 2).

A format turns values into *planes*: per plane a row-input bit and an active flag (unmasked
row).  For a stored operand the planes are parallel columns, for a streamed operand serial
array cycles.  Exact definitions: docs/hardware-model.md, section 2.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from imcsim.kernels.pack import count_outside, float_integers, radix4_units


def _as_float_array(values, name):
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf" or arr.dtype == np.float16:
        raise TypeError(f"{name}: expected an integer or float array, got dtype {arr.dtype}")
    return arr


def unit_dtype(max_unit: int) -> np.dtype:
    """The narrowest signed integer dtype holding every unit in [-max_unit, max_unit]: a
    validated operand is held at that width, so a layer-sized one costs 1-2 bytes a value."""
    for dtype in (np.int8, np.int16, np.int32):
        if max_unit <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _check_count(name, value, lo, hi, what):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}: {what} needs {lo} <= {name} <= {hi}, got {value}")


@dataclass(frozen=True)
class BinaryFormat:
    """Integers in [-2**(K-2), 2**(K-2)], ``bits`` = K >= 3 (docs/hardware-model.md 2.1, 2.3).

    ``digit_bits`` = 0 (default): the +/-1 binary format of Eq. 1.  Planes: 0 = b0-, 1 = b0+
    (plane weight 1 each), j >= 2 = b_{j-1} (weight 2**(j-1)); the value is
    sum_j weight_j * b_j / 2.  The only format a stored operand can have.

    ``digit_bits`` = N in 1..4: the same integers streamed as sign and magnitude with N-bit
    digits on multi-level rows (spec ``binary:K/N``): cycle p drives level
    ``(|x| >> N*p) & (2**N - 1)`` with weight 2**(N*p), ceil((K-1)/N) cycles.
    """

    bits: int
    digit_bits: int = 0

    def __post_init__(self):
        _check_count("bits", self.bits, 3, 16, "the binary format")
        _check_count("digit_bits", self.digit_bits, 0, 4, "the binary format")

    kind = "binary"

    @property
    def multi_level(self) -> bool:
        """Streamed as signed multi-bit digits (rows driven at levels above 1)?"""
        return self.digit_bits > 0

    @property
    def n_planes(self) -> int:
        """Array cycles per streamed vector, or columns per stored element."""
        if self.digit_bits:
            return -(-(self.bits - 1) // self.digit_bits)
        return self.bits

    @property
    def denominator(self) -> int:
        """value = (sum of plane_weight * (+/-1) * level) / denominator."""
        return 1 if self.digit_bits else 2

    @property
    def plane_weights(self) -> np.ndarray:
        """int64 (n_planes,): integer weight of each plane (cycle)."""
        if self.digit_bits:
            return np.array([1 << (self.digit_bits * p) for p in range(self.n_planes)],
                            dtype=np.int64)
        return np.array([1, 1] + [1 << (j - 1) for j in range(2, self.bits)], dtype=np.int64)

    @property
    def level_bits(self) -> int:
        """S: bits of the largest row level (binary sub-planes per cycle)."""
        return min(self.digit_bits, self.bits - 1) if self.digit_bits else 1

    @property
    def top_level(self) -> int:
        """D: the largest row level the format drives (the DAC's full-supply level)."""
        return (1 << self.level_bits) - 1

    @property
    def max_value(self) -> int:
        return 1 << (self.bits - 2)

    @property
    def bits_per_element(self) -> int:
        """Bits one element occupies in a 32-bit input or load word."""
        return self.bits

    def spec(self) -> str:
        return f"binary:{self.bits}/{self.digit_bits}" if self.digit_bits else f"binary:{self.bits}"

    @property
    def unit_dtype(self) -> np.dtype:
        """The narrowest integer dtype of this format's units (``unit_dtype``)."""
        return unit_dtype(self.max_value)

    def validate(self, values, name="values", dtype=np.int64) -> np.ndarray:
        """Check that every value is an integer in range; returns them as ``dtype`` (int64
        by default; any integer dtype holding ``unit_dtype``)."""
        arr = _as_float_array(values, name)
        lim = self.max_value
        if arr.dtype.kind == "f" and arr.size:
            # one fused pass (a training step validates hundreds of MB of float operands;
            # the NumPy expression made five passes and as many temporaries)
            units = np.empty(arr.shape, dtype=dtype)
            not_integer, outside = float_integers(np.ascontiguousarray(arr), -lim, lim, units)
            if not_integer:
                raise ValueError(f"{name}: {self.spec()} holds integers only")
            if not outside:
                return units
        elif arr.dtype.kind in "iu" and arr.size and arr.flags.c_contiguous:
            outside = count_outside(arr, -lim, lim)       # one parallel pass, no temporaries
        else:
            outside = int(((arr < -lim) | (arr > lim)).sum())
        if outside:
            raise ValueError(f"{name}: {self.spec()} values must lie in [{-lim}, {lim}], "
                             f"got [{arr.min()}, {arr.max()}]")
        return arr.astype(dtype, copy=False)

    def encode(self, values, name: str = "values") -> tuple[np.ndarray, np.ndarray]:
        """Canonical encoding.

        Returns
        -------
        bits : uint8 array (..., n_planes), 1 for +1 and 0 for -1.
        active : bool array (..., n_planes), all True (masking zeros is the macro's option).
        Eq. 1 only; a multi-level mapping is encoded by ``encode_levels``.
        """
        if self.digit_bits:
            raise ValueError(f"{self.spec()}: multi-level; use encode_levels")
        x = self.validate(values, name)
        n = self.bits - 2
        odd = (x & 1) == 1
        pair_bit = np.where(x >= 0, 1, 0).astype(np.uint8)
        b0_minus = np.where(odd, 0, pair_bit).astype(np.uint8)
        b0_plus = np.where(odd, 1, pair_bit).astype(np.uint8)
        s = np.where(odd, x, np.where(x >= 0, x - 1, x + 1))
        t = (s + (1 << n) - 1) >> 1
        out = np.empty(x.shape + (self.bits,), dtype=np.uint8)
        out[..., 0] = b0_minus
        out[..., 1] = b0_plus
        for i in range(1, n + 1):
            out[..., i + 1] = (t >> (i - 1)) & 1
        return out, np.ones(out.shape, dtype=bool)

    def decode(self, bits) -> np.ndarray:
        """Inverse of encode: int64 values from (..., n_planes) bits (any bit pattern)."""
        if self.digit_bits:
            raise ValueError(f"{self.spec()}: multi-level; use decode_levels")
        b = np.asarray(bits).astype(np.int64) * 2 - 1
        return (b @ self.plane_weights) // self.denominator

    def encode_levels(self, values, name: str = "values",
                      mask_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Row input bit and level of every cycle (docs/hardware-model.md 2.3).

        Returns
        -------
        sign : uint8 (..., n_planes)  the row input bit (the Eq. 1 bit, or the sign digit).
        level : int64 (..., n_planes)  the row level, 0 = masked (Eq. 1: 1, or 0 for a
            masked zero when ``mask_zero``).
        """
        if not self.digit_bits:
            bits, active = self.encode(values, name)
            if mask_zero:
                active = active & (self.validate(values, name) != 0)[..., None]
            return bits, active.astype(np.int64)
        x = self.validate(values, name)
        mag = np.abs(x)
        shifts = self.digit_bits * np.arange(self.n_planes)
        level = (mag[..., None] >> shifts) & ((1 << self.digit_bits) - 1)
        sign = np.broadcast_to((x >= 0).astype(np.uint8)[..., None], level.shape).copy()
        return sign, level.astype(np.int64)

    def decode_levels(self, sign, level) -> np.ndarray:
        """int64 values from (sign, level), each (..., n_planes)."""
        s = np.where(np.asarray(sign) > 0, 1, -1).astype(np.int64)
        total = (s * np.asarray(level, dtype=np.int64)) @ self.plane_weights
        return total // self.denominator


@dataclass(frozen=True)
class Radix4Format:
    """One-hot radix-4 format of Eq. 2: sign + (bits - 1) mask bits; 0 and +/-4**e.

    e ranges over -(K-2)/2 .. (K-2)/2 (K = 8: 1/64 .. 64).  Serial plane j is mask bit M_j
    (weight 4**j, denominator 4**((K-2)/2)); the sign drives the rows, the mask bit gates them.
    """

    bits: int = 8
    #: E exponents share one array cycle as levels 4**0 .. 4**(E-1) of the row DAC (spec
    #: ``radix4:K/E``, docs/hardware-model.md 2.3); 1 = one-hot binary rows
    per_cycle: int = 1

    def __post_init__(self):
        if not isinstance(self.bits, (int, np.integer)) or isinstance(self.bits, bool):
            raise TypeError(f"bits: expected an int, got {type(self.bits).__name__}")
        if self.bits < 4 or self.bits > 12 or self.bits % 2:
            raise ValueError(f"bits: radix-4 format needs an even K in 4..12, got {self.bits}")
        _check_count("per_cycle", self.per_cycle, 1, self.bits - 1, "the radix-4 format")

    kind = "radix4"

    @property
    def multi_level(self) -> bool:
        """Several exponents per cycle (rows driven at levels above 1)?"""
        return self.per_cycle > 1

    @property
    def exponent_planes(self) -> int:
        """K - 1 mask bits (one-hot exponent planes)."""
        return self.bits - 1

    @property
    def n_planes(self) -> int:
        """Array cycles per streamed vector."""
        return -(-self.exponent_planes // self.per_cycle)

    @property
    def level_bits(self) -> int:
        """S: bits of the largest row level 4**(E-1)."""
        return 2 * self.per_cycle - 1

    @property
    def top_level(self) -> int:
        """D: the largest row level the format drives."""
        return 4 ** (self.per_cycle - 1)

    @property
    def exponent_bias(self) -> int:
        return (self.bits - 2) // 2

    @property
    def denominator(self) -> int:
        return 4 ** self.exponent_bias

    @property
    def plane_weights(self) -> np.ndarray:
        """int64 (n_planes,): cycle p weighs 4**(E*p)."""
        return np.array([4 ** (self.per_cycle * p) for p in range(self.n_planes)],
                        dtype=np.int64)

    @property
    def max_value(self) -> int:
        return 4 ** self.exponent_bias

    @property
    def bits_per_element(self) -> int:
        return self.bits

    def spec(self) -> str:
        return f"radix4:{self.bits}/{self.per_cycle}" if self.per_cycle > 1 else f"radix4:{self.bits}"

    @property
    def unit_dtype(self) -> np.dtype:
        """The narrowest integer dtype of this format's units: up to 4**(K - 2) units of
        1/denominator (``unit_dtype``)."""
        return unit_dtype(4 ** (2 * self.exponent_bias))

    def validate(self, values, name="values", dtype=np.int64) -> np.ndarray:
        """Check representability; returns the values in units of 1/denominator as ``dtype``
        (int64 by default; any integer dtype holding ``unit_dtype``)."""
        arr = _as_float_array(values, name)
        # float32 and float64 are read as they are (each value is widened exactly in the
        # kernel); a copy to float64 cost a training step's backward MVM a tenth of its time
        arr = np.ascontiguousarray(arr, dtype=None if arr.dtype.kind == "f" else np.float64)
        units = np.empty(arr.shape, dtype=dtype)
        bad = radix4_units(arr, float(self.denominator), 2 * (self.exponent_planes - 1), units)
        if bad:
            flat = arr.ravel()
            mag = np.abs(flat) * self.denominator
            ok = np.isin(mag, np.concatenate([[0.0], 4.0 ** np.arange(self.exponent_planes)]))
            raise ValueError(f"{name}: {self.spec()} holds only 0 and +/-4**e for e in "
                             f"[{-self.exponent_bias}, {self.exponent_bias}]; {bad} values are "
                             f"not, e.g. {flat[~ok][:3].tolist()}")
        return units

    def encode(self, values, name: str = "values") -> tuple[np.ndarray, np.ndarray]:
        """Returns (bits, active), each (..., K-1): sign bit per exponent plane, one-hot mask
        (Eq. 2's bits, whatever ``per_cycle``)."""
        units = self.validate(values, name)
        mag = np.abs(units)
        nz = mag > 0
        # mag = 4**e exactly, so its bit length is 2e + 1
        exponent = np.zeros(units.shape, dtype=np.int64)
        exponent[nz] = np.frexp(mag[nz].astype(np.float64))[1].astype(np.int64) // 2
        planes = np.arange(self.exponent_planes)
        active = nz[..., None] & (exponent[..., None] == planes)
        sign = (units >= 0).astype(np.uint8)
        bits = np.broadcast_to(sign[..., None], active.shape).copy()
        return bits, active

    def encode_levels(self, values, name: str = "values",
                      mask_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Row input bit and level of every cycle (docs/hardware-model.md 2.3).

        Returns sign uint8 and level int64, each (..., n_planes): mask plane j drives level
        4**(j - E*p) in cycle p = j // E.  ``mask_zero`` changes nothing (0 is masked).
        """
        bits, active = self.encode(values, name)
        E = self.per_cycle
        level = np.zeros(active.shape[:-1] + (self.n_planes,), dtype=np.int64)
        for j in range(self.exponent_planes):
            level[..., j // E] += active[..., j].astype(np.int64) << (2 * (j % E))
        return bits[..., : self.n_planes].copy(), level

    def decode_levels(self, sign, level) -> np.ndarray:
        """Float64 values from (sign, level), each (..., n_planes)."""
        s = np.where(np.asarray(sign)[..., 0] > 0, 1.0, -1.0)
        mag = (np.asarray(level, dtype=np.int64) * self.plane_weights).sum(axis=-1)
        return s * mag.astype(np.float64) / self.denominator

    def decode(self, bits, active) -> np.ndarray:
        """Float64 values from (bits, active); the sign is read from plane 0."""
        bits = np.asarray(bits)
        active = np.asarray(active, dtype=bool)
        sign = np.where(bits[..., 0] > 0, 1.0, -1.0)
        mag = (active * (4 ** np.arange(self.exponent_planes))).sum(axis=-1).astype(np.float64)
        return sign * mag / self.denominator


def plane_lookup_tables(fmt: BinaryFormat | Radix4Format,
                        mask_zero: bool = False) -> tuple[int, np.ndarray, np.ndarray]:
    """Per-value sub-plane patterns for the fast packer, built from ``fmt.encode_levels``.

    Sub-plane ``p * S + k`` (``S = fmt.level_bits``) of cycle p holds the rows whose level has
    bit k set (docs/hardware-model.md 4.8); with S = 1 sub-planes are the planes.
    Returns (offset, pattern_lut, gate_lut): for an element of integer units ``v`` (the values
    ``fmt.validate`` returns), bit i of ``pattern_lut[v + offset]`` is its row input in
    sub-plane i and bit i of ``gate_lut[v + offset]`` whether its row is active there.
    uint16 arrays for up to 16 sub-planes (the common case: half the cache footprint of the
    radix-4 tables, whose 8193 entries the packer reads per element), uint32 up to 32.
    """
    span = fmt.max_value * fmt.denominator if fmt.kind == "radix4" else fmt.max_value
    units = np.arange(-span, span + 1)
    if fmt.kind == "radix4":
        mag = np.abs(units)
        ok = (mag == 0) | np.isin(mag, 4 ** np.arange(fmt.exponent_planes))
        values = np.where(ok, units, 0) / fmt.denominator
    else:
        ok = np.ones(units.shape, dtype=bool)
        values = units
    sign, level = fmt.encode_levels(values, mask_zero=mask_zero)
    S = fmt.level_bits
    n_sub = fmt.n_planes * S
    if n_sub > 32:
        raise ValueError(f"format: {fmt.spec()} needs {n_sub} sub-planes; at most 32 fit")
    dtype = np.uint16 if n_sub <= 16 else np.uint32
    pattern = np.zeros(units.shape, dtype=dtype)
    gate = np.zeros(units.shape, dtype=dtype)
    for p in range(fmt.n_planes):
        for k in range(S):
            i = p * S + k
            pattern |= (sign[:, p].astype(dtype) << i).astype(dtype)
            gate |= (((level[:, p] >> k) & 1) << i).astype(dtype)
    gate[~ok] = 0
    return span, pattern, gate


#: input mappings of streamed operands (docs/hardware-model.md 2.3): 'one-hot' = one binary row
#: input per cycle (the paper's macro); 'multi-level' = a 3-bit row DAC with radix-4 operands
#: two exponents per cycle (levels 0, 1, 4) and binary operands as signed 3-bit digits
INPUT_MAPPINGS = ("one-hot", "multi-level")
MULTI_LEVEL_EXPONENTS_PER_CYCLE = 2
MULTI_LEVEL_DIGIT_BITS = 3


def mapped_format(fmt: BinaryFormat | Radix4Format, mapping: str) -> BinaryFormat | Radix4Format:
    """A streamed format under an input mapping (``INPUT_MAPPINGS``)."""
    if mapping not in INPUT_MAPPINGS:
        raise ValueError(f"input_mapping: expected one of {INPUT_MAPPINGS}, got {mapping!r}")
    if mapping == "one-hot":
        return fmt
    if isinstance(fmt, Radix4Format):
        return Radix4Format(fmt.bits, MULTI_LEVEL_EXPONENTS_PER_CYCLE)
    return BinaryFormat(fmt.bits, MULTI_LEVEL_DIGIT_BITS)


def check_stored_format(w_format, name: str = "w_format") -> None:
    """Refuse anything but Eq. 1's binary format for a stored operand (bit cells hold bits)."""
    if not isinstance(w_format, BinaryFormat):
        raise TypeError(f"{name}: the stored operand must be a BinaryFormat, got {w_format!r}")
    if w_format.multi_level:
        raise ValueError(f"{name}: {w_format.spec()} is a multi-level streamed mapping; a "
                         f"stored operand needs binary:{w_format.bits}")


#: ASCII digits only: ``\d`` also matches other scripts' digits, which int() then reads
_SPEC = re.compile(r"^\s*(binary|radix4)\s*:\s*([0-9]+)\s*(?:/\s*([0-9]+)\s*)?$")


def parse_format(spec: str) -> BinaryFormat | Radix4Format:
    """Parse ``"binary:K"``, ``"radix4:K"`` or a multi-level mapping ``"binary:K/N"`` (N-bit
    digits) or ``"radix4:K/E"`` (E exponents per cycle) into a format object."""
    if not isinstance(spec, str):
        raise TypeError(f"format: expected a string like 'binary:6', got {type(spec).__name__}")
    m = _SPEC.match(spec)
    if not m:
        raise ValueError(f"format: expected 'binary:K[/N]' or 'radix4:K[/E]', got {spec!r}")
    kind, bits = m.group(1), int(m.group(2))
    extra = m.group(3)
    if kind == "binary" and extra is not None and int(extra) == 0:
        # digit_bits 0 is the one-hot format's internal value, not a digit width: 'binary:6/0'
        # used to run as binary:6, so a typo changed the streaming without a word
        raise ValueError(f"format: {spec.strip()!r}: the digit width N of binary:K/N must lie "
                         f"in 1..4 (binary:{bits} without /N is the one-hot format)")
    if kind == "binary":
        return BinaryFormat(bits, int(extra)) if extra is not None else BinaryFormat(bits)
    return Radix4Format(bits, int(extra)) if extra is not None else Radix4Format(bits)


@lru_cache(maxsize=64)
def format_lookup_tables(x_format: BinaryFormat | Radix4Format, mask_zero: bool) -> tuple:
    """(offset, pattern, gate, all_active, uniform_pattern) of a format, built once.

    Over the format's P * S sub-planes (``formats.plane_lookup_tables``).  all_active: no
    value is masked in any sub-plane (dense binary inputs); uniform_pattern: every value
    drives the same row input in all sub-planes (the sign of radix-4 and of signed digits).
    """
    offset, pattern, gate = plane_lookup_tables(x_format, mask_zero)
    pattern.flags.writeable = False
    gate.flags.writeable = False
    full = (1 << (x_format.n_planes * x_format.level_bits)) - 1
    all_active = bool((gate == full).all())
    uniform_pattern = bool(np.isin(pattern, (0, full)).all())
    return offset, pattern, gate, all_active, uniform_pattern
