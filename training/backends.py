"""Where a training MVM runs: FP32 matmul, exact quantized integers, or the IMC emulator.

A layer hands a backend the *streamed* operand X (vectors x inner) and the *stored* operand W
(inner x outputs) already quantized, with their formats; the backend returns X @ W as the
hardware would compute it, in the operands' namespace (NumPy, or CuPy on a GPU).  Only the IMC
backend touches the macro, through imcsim's public API.
"""
from __future__ import annotations

import enum
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from imcsim import BinaryFormat, Macro, MacroConfig, Radix4Format, VrefConfig
from imcsim.config import MATCHED_VREF_SPEC, MvmKind, VrefMode
from imcsim.formats import INPUT_MAPPINGS, mapped_format
from imcsim.training.xp import namespace_of, to_device, to_host

KINDS = tuple(MvmKind)


class BackendKind(enum.Enum):
    FP32 = "fp32"
    EXACT = "exact"
    IMC = "imc"


@dataclass
class MvmStats:
    """Per (layer, MVM kind): what the emulator reported, summed over calls."""

    calls: int = 0
    adc_conversions: int = 0
    clipped_conversions: int = 0
    high_vref_conversions: int = 0
    bitcell_mults: int = 0
    cycles: int = 0
    active_rows_per_plane: np.ndarray | None = None   # sum over cycles, (P,), host
    cycles_per_plane: int = 0
    dac_row_drives: int = 0        # multi-level rows (docs/hardware-model.md 4.8)
    dac_level_sum: int = 0

    def add(self, res):
        ev = res.events.total()
        self.calls += 1
        self.adc_conversions += ev["adc_conversions"]
        self.clipped_conversions += ev["clipped_conversions"]
        self.high_vref_conversions += ev["high_vref_conversions"]
        self.bitcell_mults += ev["bitcell_mults"]
        self.cycles += ev["array_cycles"]
        self.dac_row_drives += ev["dac_row_drives"]
        self.dac_level_sum += ev["dac_level_sum"]
        per_plane = to_host(res.active_rows.sum(axis=(0, 1)))     # P counts, host
        self.active_rows_per_plane = per_plane if self.active_rows_per_plane is None \
            else self.active_rows_per_plane + per_plane
        self.cycles_per_plane += res.active_rows.shape[0] * res.active_rows.shape[1]


class Fp32Backend:
    """Plain float matmul on unquantized operands (first/last/residual layers, baselines).

    ``reproducible``: the fixed-order product of ``training.repro.matmul`` (float64 sums in
    index order, the same on any CPU, BLAS and thread count; NumPy operands) instead of BLAS.
    """

    kind = BackendKind.FP32
    quantized = False

    def __init__(self, reproducible: bool = False):
        self.reproducible = reproducible

    def matmul(self, X, W, x_format=None, w_format=None, *, layer="", mvm=None, step=0):
        xp = namespace_of(X, W)
        if self.reproducible:
            if xp is not np:
                raise ValueError("reproducible: the fixed-order product runs on NumPy arrays")
            from imcsim.training.repro import matmul
            return matmul(X, W)
        return xp.asarray(X, dtype=np.float32) @ xp.asarray(W, dtype=np.float32)


class ExactBackend:
    """The exact product of the quantized operands (no ADC): the ideal IMC result."""

    kind = BackendKind.EXACT
    quantized = True

    def matmul(self, X, W, x_format, w_format, *, layer="", mvm=None, step=0):
        xp = namespace_of(X, W)
        return xp.asarray(X, dtype=np.float64) @ xp.asarray(W, dtype=np.float64)


@dataclass(frozen=True)
class MatchedFullScale:
    """Fixed Vref programmed per MVM to the layer's inner dimension (the matched-F control).

    Each call runs in the fixed mode with ``F = min(inner rows, array rows)``, raised to the
    ADC's top code L where the layer is smaller: the full scale a controller would program for
    a layer whose column count can reach its whole inner dimension.  Where the inner dimension
    spans several tiles, the last (partial) tile shares the full tiles' F.  Written
    ``fixed:matched`` in ``--vref``.
    """

    TEXT = MATCHED_VREF_SPEC

    def for_inner(self, inner: int, config: MacroConfig, top_level: int = 1) -> VrefConfig:
        """The fixed-mode VrefConfig of an MVM with ``inner`` rows on ``config``'s array, in
        the level units of a streamed format with top row level ``top_level``."""
        full_scale = min(int(inner), config.rows) * top_level
        return VrefConfig(mode=VrefMode.FIXED,
                          full_scale=full_scale if full_scale > config.top_code
                          else config.top_code)


class ImcBackend:
    """Runs the MVM on the emulated macro (fast path), with one Vref mode per backend.

    Noise seeds are derived from (seed, step, layer, MVM kind), so a training run is
    reproducible whatever the batch order of calls.  ``trace_request`` = (layer, kind, step,
    path) sends that one call through the cycle-level path and writes its HDF5 trace.

    ``device`` is the macro's ('cpu' or 'cuda'): a CUDA macro takes and returns CuPy arrays,
    so operands stay on the GPU.  Operands of another namespace than the macro's (device arrays
    on a CPU macro), and the traced call, go through the host explicitly and come back.
    """

    kind = BackendKind.IMC
    quantized = True

    def __init__(self, config: MacroConfig, vref: VrefConfig | None = None, seed: int = 0,
                 stats=None, trace_request=None, device: str = "cpu", diagnostics=None):
        self.device = device
        # training.diagnostics.MvmDiagnostics (or None): compares sampled calls with the exact
        # product, observing only
        self.diagnostics = diagnostics
        self.macro = Macro(config) if device == "cpu" else Macro(config, device=device)
        self.top_code = config.top_code             # the ADC's L, for the diagnostics
        self.vref = vref
        self.seed = seed
        self.stats = stats if stats is not None else defaultdict(MvmStats)
        self.trace_request = trace_request

    def _call_seed(self, layer, mvm, step):
        text = f"{self.seed}/{step}/{layer}/{mvm.value if mvm else ''}"
        h = 1469598103934665603
        for ch in text.encode():                       # FNV-1a: stable across processes
            h = ((h ^ ch) * 1099511628211) & ((1 << 63) - 1)
        return h

    def matmul(self, X, W, x_format, w_format, *, layer="", mvm=None, step=0):
        seed = self._call_seed(layer, mvm, step)
        xp = namespace_of(X, W)
        req = self.trace_request
        traced = req is not None and req[0] == layer and req[1] == mvm and req[2] == step
        if traced or (self.device == "cpu" and xp is not np):
            X, W = to_host(X), to_host(W)
        if namespace_of(X) is not np:
            W = namespace_of(X).ascontiguousarray(W, dtype=np.int64)
        # on the host W goes as it is: the macro checks that every value is an integer of
        # w_format and narrows it to int16 in one pass (an int64 copy of a stored activation
        # window matrix was 1.2 GB on VGG-lite's L2)
        vref = self.vref
        if isinstance(vref, MatchedFullScale):
            vref = vref.for_inner(W.shape[0], self.macro.config, x_format.top_level)
        if traced:
            res = self.macro.mvm_traced(X, W, x_format, w_format, seed=seed, vref=vref,
                                        trace=req[3])
        else:
            res = self.macro.mvm(X, W, x_format, w_format, seed=seed, vref=vref)
        self.stats[(layer, mvm.value if mvm else "")].add(res)
        diagnostics = self.diagnostics
        if diagnostics is not None and diagnostics.wants(step):
            diagnostics.record(layer, mvm.value if mvm else "", X, W, res, self.top_code)
        return to_device(res.y, xp)


@dataclass(frozen=True)
class Scheme:
    """Operand formats of a quantization scheme (see training.quant)."""

    name: str
    activation: object
    weight: object
    gradient: object
    stored_activation: object


RADIX4_SCHEME = Scheme("radix4", BinaryFormat(6), BinaryFormat(5), Radix4Format(8),
                       BinaryFormat(6))
INT8_SCHEME = Scheme("int8", BinaryFormat(8), BinaryFormat(8), BinaryFormat(8), BinaryFormat(8))


def scheme_by_name(name: str, mapping: str = "one-hot") -> Scheme:
    """The operand formats of scheme ``name`` with its streamed operands (activations in the
    forward MVM, gradients in the backward and update MVMs) under input ``mapping``."""
    mapped_format(RADIX4_SCHEME.gradient, mapping)           # checks the mapping's name
    if name == "radix4":
        scheme = RADIX4_SCHEME
    elif name == "int8":
        scheme = INT8_SCHEME
    else:
        raise ValueError(f"scheme: expected 'radix4' or 'int8', got {name!r}")
    if mapping == "one-hot":
        return scheme
    return Scheme(name, mapped_format(scheme.activation, mapping), scheme.weight,
                  mapped_format(scheme.gradient, mapping), scheme.stored_activation)


def input_bits_for(scheme: Scheme) -> int:
    """Row DAC bits a scheme's streamed operands need (1 for one-hot rows)."""
    top = max(scheme.activation.top_level, scheme.gradient.top_level)
    return top.bit_length()


__all__ = ["MvmKind", "KINDS", "BackendKind", "MvmStats", "Fp32Backend", "ExactBackend",
           "ImcBackend", "MatchedFullScale", "Scheme", "RADIX4_SCHEME", "INT8_SCHEME", "scheme_by_name",
           "INPUT_MAPPINGS", "input_bits_for"]
