"""Number formats of the macro: the +/-1 binary format (Eq. 1) and one-hot radix-4 (Eq. 2).

A format turns values into *planes*: per plane a row-input bit and an active flag (unmasked
row).  For a stored operand the planes are parallel columns, for a streamed operand serial
array cycles.  Exact definitions: docs/hardware-model.md, section 2.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from imcsim.kernels.pack import count_outside, radix4_units


def _as_float_array(values, name):
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf" or arr.dtype == np.float16:
        raise TypeError(f"{name}: expected an integer or float array, got dtype {arr.dtype}")
    return arr


@dataclass(frozen=True)
class BinaryFormat:
    """+/-1 binary format of Eq. 1 with ``bits`` (K >= 3) bits; integers in [-2**(K-2), 2**(K-2)].

    Planes: 0 = b0-, 1 = b0+ (plane weight 1 each), j >= 2 = b_{j-1} (weight 2**(j-1)); the
    value is sum_j weight_j * b_j / 2.
    """

    bits: int

    def __post_init__(self):
        if not isinstance(self.bits, (int, np.integer)) or isinstance(self.bits, bool):
            raise TypeError(f"bits: expected an int, got {type(self.bits).__name__}")
        if not 3 <= self.bits <= 16:
            raise ValueError(f"bits: binary format needs 3 <= K <= 16, got {self.bits}")

    kind = "binary"

    @property
    def n_planes(self) -> int:
        """Array cycles per streamed vector, or columns per stored element."""
        return self.bits

    @property
    def denominator(self) -> int:
        """value = (sum of plane_weight * (+/-1)) / denominator."""
        return 2

    @property
    def plane_weights(self) -> np.ndarray:
        """int64 (n_planes,): integer weight of each plane."""
        return np.array([1, 1] + [1 << (j - 1) for j in range(2, self.bits)], dtype=np.int64)

    @property
    def max_value(self) -> int:
        return 1 << (self.bits - 2)

    @property
    def bits_per_element(self) -> int:
        """Bits one element occupies in a 32-bit input or load word."""
        return self.bits

    def spec(self) -> str:
        return f"binary:{self.bits}"

    def validate(self, values, name="values") -> np.ndarray:
        """Check that every value is an integer in range; returns them as int64."""
        arr = _as_float_array(values, name)
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise ValueError(f"{name}: {self.spec()} holds integers only")
        lim = self.max_value
        if arr.dtype.kind in "iu" and arr.size and arr.flags.c_contiguous:
            outside = count_outside(arr, -lim, lim)       # one parallel pass, no temporaries
        else:
            outside = int(((arr < -lim) | (arr > lim)).sum())
        if outside:
            raise ValueError(f"{name}: {self.spec()} values must lie in [{-lim}, {lim}], "
                             f"got [{arr.min()}, {arr.max()}]")
        return arr.astype(np.int64, copy=False)

    def encode(self, values, name: str = "values") -> tuple[np.ndarray, np.ndarray]:
        """Canonical encoding.

        Returns
        -------
        bits : uint8 array (..., n_planes), 1 for +1 and 0 for -1.
        active : bool array (..., n_planes), all True (masking zeros is the macro's option).
        """
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
        b = np.asarray(bits).astype(np.int64) * 2 - 1
        return (b @ self.plane_weights) // self.denominator


@dataclass(frozen=True)
class Radix4Format:
    """One-hot radix-4 format of Eq. 2: sign + (bits - 1) mask bits; 0 and +/-4**e.

    e ranges over -(K-2)/2 .. (K-2)/2 (K = 8: 1/64 .. 64).  Serial plane j is mask bit M_j
    (weight 4**j, denominator 4**((K-2)/2)); the sign drives the rows, the mask bit gates them.
    """

    bits: int = 8

    def __post_init__(self):
        if not isinstance(self.bits, (int, np.integer)) or isinstance(self.bits, bool):
            raise TypeError(f"bits: expected an int, got {type(self.bits).__name__}")
        if self.bits < 4 or self.bits > 12 or self.bits % 2:
            raise ValueError(f"bits: radix-4 format needs an even K in 4..12, got {self.bits}")

    kind = "radix4"

    @property
    def n_planes(self) -> int:
        return self.bits - 1

    @property
    def exponent_bias(self) -> int:
        return (self.bits - 2) // 2

    @property
    def denominator(self) -> int:
        return 4 ** self.exponent_bias

    @property
    def plane_weights(self) -> np.ndarray:
        return np.array([4 ** j for j in range(self.n_planes)], dtype=np.int64)

    @property
    def max_value(self) -> int:
        return 4 ** self.exponent_bias

    @property
    def bits_per_element(self) -> int:
        return self.bits

    def spec(self) -> str:
        return f"radix4:{self.bits}"

    def validate(self, values, name="values") -> np.ndarray:
        """Check representability; returns the values in units of 1/denominator (int64)."""
        arr = np.ascontiguousarray(_as_float_array(values, name), dtype=np.float64)
        units = np.empty(arr.shape, dtype=np.int64)
        bad = radix4_units(arr, float(self.denominator), 2 * (self.n_planes - 1), units)
        if bad:
            flat = arr.ravel()
            mag = np.abs(flat) * self.denominator
            ok = np.isin(mag, np.concatenate([[0.0], 4.0 ** np.arange(self.n_planes)]))
            raise ValueError(f"{name}: {self.spec()} holds only 0 and +/-4**e for e in "
                             f"[{-self.exponent_bias}, {self.exponent_bias}]; {bad} values are "
                             f"not, e.g. {flat[~ok][:3].tolist()}")
        return units

    def encode(self, values, name: str = "values") -> tuple[np.ndarray, np.ndarray]:
        """Returns (bits, active), each (..., n_planes): sign bit per plane, one-hot mask."""
        units = self.validate(values, name)
        mag = np.abs(units)
        nz = mag > 0
        # mag = 4**e exactly, so its bit length is 2e + 1
        exponent = np.zeros(units.shape, dtype=np.int64)
        exponent[nz] = np.frexp(mag[nz].astype(np.float64))[1].astype(np.int64) // 2
        planes = np.arange(self.n_planes)
        active = nz[..., None] & (exponent[..., None] == planes)
        sign = (units >= 0).astype(np.uint8)
        bits = np.broadcast_to(sign[..., None], active.shape).copy()
        return bits, active

    def decode(self, bits, active) -> np.ndarray:
        """Float64 values from (bits, active); the sign is read from plane 0."""
        bits = np.asarray(bits)
        active = np.asarray(active, dtype=bool)
        sign = np.where(bits[..., 0] > 0, 1.0, -1.0)
        mag = (active * self.plane_weights).sum(axis=-1).astype(np.float64)
        return sign * mag / self.denominator


def plane_lookup_tables(fmt: BinaryFormat | Radix4Format,
                        mask_zero: bool = False) -> tuple[int, np.ndarray, np.ndarray]:
    """Per-value plane patterns for the fast packer, built from ``fmt.encode``.

    Returns (offset, pattern_lut, gate_lut): for an element of integer units ``v`` (the values
    ``fmt.validate`` returns), bit p of ``pattern_lut[v + offset]`` is its row input in plane p
    and bit p of ``gate_lut[v + offset]`` whether its row is active in plane p.  uint16 arrays.
    """
    span = fmt.max_value * fmt.denominator if fmt.kind == "radix4" else fmt.max_value
    units = np.arange(-span, span + 1)
    if fmt.kind == "radix4":
        mag = np.abs(units)
        ok = (mag == 0) | np.isin(mag, 4 ** np.arange(fmt.n_planes))
        values = np.where(ok, units, 0) / fmt.denominator
    else:
        ok = np.ones(units.shape, dtype=bool)
        values = units
    bits, active = fmt.encode(values)
    if mask_zero and fmt.kind == "binary":
        active = active & (units != 0)[:, None]
    weights = (1 << np.arange(fmt.n_planes)).astype(np.uint16)
    pattern = (bits.astype(np.uint16) * weights).sum(axis=1).astype(np.uint16)
    gate = (active.astype(np.uint16) * weights).sum(axis=1).astype(np.uint16)
    gate[~ok] = 0
    return span, pattern, gate


_SPEC = re.compile(r"^\s*(binary|radix4)\s*:\s*(\d+)\s*$")


def parse_format(spec: str) -> BinaryFormat | Radix4Format:
    """Parse ``"binary:K"`` or ``"radix4:K"`` into a format object."""
    if not isinstance(spec, str):
        raise TypeError(f"format: expected a string like 'binary:6', got {type(spec).__name__}")
    m = _SPEC.match(spec)
    if not m:
        raise ValueError(f"format: expected 'binary:K' or 'radix4:K', got {spec!r}")
    kind, bits = m.group(1), int(m.group(2))
    return BinaryFormat(bits) if kind == "binary" else Radix4Format(bits)
