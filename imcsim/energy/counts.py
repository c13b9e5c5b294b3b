"""Analytic event counts: what the macro would count for an MVM, a convolution or a layer's
training MVM, without running it.

The per-tile counts come from ``imcsim.events.tile_event_counts``, the same function the
emulator (``Macro.mvm``) calls; this module only supplies the active rows (given, or assumed
from a density) and the cycles converted at the high Vref level.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcsim.config import MacroConfig, VrefConfig, VrefMode
from imcsim.energy.checks import check_density, check_pos_int
from imcsim.energy.vref import MVM_KINDS
from imcsim.events import EventCounts, tile_event_counts
from imcsim.formats import BinaryFormat, Radix4Format, mapped_format
from imcsim.macro import MvmResult
from imcsim.mapping import plan_tiles, select_full_scale, words32
from imcsim.reshape import KERNEL, conv_output_size
from imcsim.workloads import LayerSpec

#: Operand formats of the paper (Sec. IV-A): activations binary:6, weights binary:5,
#: gradients radix4:8.
ACT_FORMAT = BinaryFormat(6)
WEIGHT_FORMAT = BinaryFormat(5)
GRAD_FORMAT = Radix4Format(8)


@dataclass(frozen=True)
class TrainingFormats:
    """Operand formats of the three training MVMs of a quantization scheme.

    activation : BinaryFormat
        Streamed by the forward MVM.
    weight : BinaryFormat
        Stored by the forward and backward MVMs.
    gradient : BinaryFormat or Radix4Format
        Streamed by the backward and update MVMs.
    stored_activation : BinaryFormat
        Stored by the update MVM.
    """

    activation: BinaryFormat
    weight: BinaryFormat
    gradient: BinaryFormat | Radix4Format
    stored_activation: BinaryFormat

    def streamed(self, kind: str) -> BinaryFormat | Radix4Format:
        """Format of the operand the ``kind`` MVM streams (the one whose rows can be masked)."""
        return self.activation if kind == "forward" else self.gradient


#: The paper's formats (Sec. IV-A; ``imcsim train --scheme radix4``).
PAPER_FORMATS = TrainingFormats(ACT_FORMAT, WEIGHT_FORMAT, GRAD_FORMAT, ACT_FORMAT)
#: ``imcsim train --scheme int8``: binary:8 for every operand (training.backends.INT8_SCHEME).
INT8_FORMATS = TrainingFormats(BinaryFormat(8), BinaryFormat(8), BinaryFormat(8),
                               BinaryFormat(8))
#: Formats by the scheme names of ``imcsim train --scheme``.
SCHEME_FORMATS = {"radix4": PAPER_FORMATS, "int8": INT8_FORMATS}


def mapped_formats(formats: TrainingFormats, input_mapping: str) -> TrainingFormats:
    """A scheme's formats with its streamed operands under ``input_mapping`` (``imcsim train
    --input-mapping``; ``imcsim.formats.mapped_format``)."""
    return TrainingFormats(mapped_format(formats.activation, input_mapping), formats.weight,
                           mapped_format(formats.gradient, input_mapping),
                           formats.stored_activation)


def mean_drive_level(fmt: BinaryFormat | Radix4Format) -> float:
    """The mean level of a row the format drives (an assumption for the analytic energy
    model): radix-4 with exponents equally likely, binary digits uniform over 1 .. D."""
    if isinstance(fmt, Radix4Format):
        levels = [4 ** (j % fmt.per_cycle) for j in range(fmt.exponent_planes)]
        return float(sum(levels)) / len(levels)
    return (1 + fmt.top_level) / 2.0


def _check_x_format(x_format) -> None:
    if not isinstance(x_format, (BinaryFormat, Radix4Format)):
        raise TypeError(f"x_format: expected BinaryFormat or Radix4Format, got {x_format!r}")


def _high_cycles_measured(a: np.ndarray, vref: VrefConfig, top_code: int) -> np.ndarray:
    """Cycles of each row tile converted at the high level, from measured active rows."""
    if vref.mode is not VrefMode.DUAL:
        return np.zeros(a.shape[0], dtype=np.int64)
    return (select_full_scale(a, vref, top_code) == vref.dual_high).sum(axis=(1, 2))


def _high_cycles_expected(per_cycle: np.ndarray, cycles: int, vref: VrefConfig) -> np.ndarray:
    """Cycles of each row tile at the high level when every cycle has ``per_cycle`` rows."""
    if vref.mode is not VrefMode.DUAL:
        return np.zeros(len(per_cycle), dtype=np.int64)
    if vref.dual_low == vref.dual_high:       # the emulator compares F with dual_high
        return np.full(len(per_cycle), cycles, dtype=np.int64)
    return np.where(per_cycle > vref.dual_low, cycles, 0).astype(np.int64)


def mvm_event_counts(inner: int, outputs: int, vectors: int, x_format: BinaryFormat | Radix4Format,
                     w_format: BinaryFormat, *, config: MacroConfig | None = None,
                     vref: VrefConfig | None = None, active_rows: np.ndarray | None = None,
                     density: float | None = None,
                     reshape_words: int | None = None) -> EventCounts:
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
    active_rows : int array, shape (row_tiles, vectors, P), or None
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
        ``per_tile[name]`` arrays, shape (row_tiles, col_tiles), in events; int64, or
        float64 for ``bitcell_mults`` with ``density``.
    """
    config = MacroConfig() if config is None else config
    if not isinstance(config, MacroConfig):
        raise TypeError(f"config: expected MacroConfig, got {type(config).__name__}")
    inner = check_pos_int("inner", inner)
    outputs = check_pos_int("outputs", outputs)
    vectors = check_pos_int("vectors", vectors)
    _check_x_format(x_format)
    if not isinstance(w_format, BinaryFormat):
        raise TypeError(f"w_format: the stored operand must be a BinaryFormat, got {w_format!r}")
    vref = config.vref if vref is None else vref
    if not isinstance(vref, VrefConfig):
        raise TypeError(f"vref: expected VrefConfig, got {type(vref).__name__}")
    vref.check_against(config.rows, config.top_code)
    if vref.per_column:
        # which columns exceed the low level depends on the stored data, not on active rows
        raise ValueError("vref: the per-column dual choice has no analytic event model; "
                         "price a run that used it with imcsim energy --from-run")
    if active_rows is not None and density is not None:
        raise ValueError("active_rows, density: give at most one")
    if reshape_words is not None:
        reshape_words = check_pos_int("reshape_words", reshape_words)
    plan = plan_tiles(config, inner, outputs, w_format)
    P = x_format.n_planes
    R = np.array([hi - lo for lo, hi in map(plan.row_range, range(plan.row_tiles))],
                 dtype=np.int64)

    if active_rows is not None:
        a = np.asarray(active_rows)
        if a.dtype.kind not in "iu":
            raise TypeError(f"active_rows: expected integers, got dtype {a.dtype}")
        if a.shape != (plan.row_tiles, vectors, P):
            raise ValueError(f"active_rows: expected shape {(plan.row_tiles, vectors, P)}, "
                             f"got {a.shape}")
        a = a.astype(np.int64)
        if (a < 0).any() or (a > R[:, None, None]).any():
            raise ValueError("active_rows: every count must lie in [0, rows of its tile]")
        active_sum = a.sum(axis=(1, 2))
        high = _high_cycles_measured(a, vref, config.top_code)
    else:
        if density is None:
            per_cycle = R
        else:
            d = check_density("density", density)
            # a radix-4 element drives one cycle (whatever its exponents per cycle); a binary
            # element every cycle (an upper bound for signed digits, whose zero digits mask)
            per_cycle = d * R / (P if isinstance(x_format, Radix4Format) else 1)
        active_sum = per_cycle * (vectors * P)
        high = _high_cycles_expected(per_cycle, vectors * P, vref)

    dac_drives = dac_levels = None
    if x_format.top_level > 1:
        # multi-level rows (docs/hardware-model.md 4.8): every active row is a DAC drive, at
        # the format's mean level (an assumption: exponents or digits equally likely)
        dac_drives = np.asarray(active_sum, dtype=np.float64)
        dac_levels = dac_drives * mean_drive_level(x_format)
    return tile_event_counts(plan, vectors=vectors, n_planes=P,
                             bits_per_element=x_format.bits_per_element,
                             adc_bits=config.adc_bits, active_sum=active_sum, high_cycles=high,
                             reshape_words=reshape_words, dac_drives=dac_drives,
                             dac_levels=dac_levels)


def conv_event_counts(batch: int, height: int, width: int, in_channels: int, out_channels: int,
                      x_format: BinaryFormat | Radix4Format, w_format: BinaryFormat, *,
                      stride: int = 1, config: MacroConfig | None = None,
                      vref: VrefConfig | None = None, active_rows: np.ndarray | None = None,
                      density: float | None = None) -> EventCounts:
    """Event counts of ``conv2d`` (3x3, pad 1) on a (batch, height, width, in_channels) map.

    Equals what ``imcsim.macro.conv2d`` counts: one input vector of 9 * in_channels elements
    per output pixel, ``out_channels`` outputs, and the input reshape buffer's words with
    window reuse (``batch * height * width * ceil(in_channels * K / 32)`` per column tile).

    Parameters
    ----------
    batch, height, width, in_channels, out_channels : int
        Shape of the input feature map (NHWC) and the number of output channels.
    stride : int
        1 or 2.
    x_format, w_format, config, vref, active_rows, density
        As in ``mvm_event_counts``; ``active_rows`` has shape
        (row_tiles, batch * output pixels, P).

    Returns
    -------
    EventCounts
        As ``mvm_event_counts``: (row_tiles, col_tiles) arrays per event.
    """
    for name, v in (("batch", batch), ("height", height), ("width", width),
                    ("in_channels", in_channels), ("out_channels", out_channels)):
        check_pos_int(name, v)
    if stride not in (1, 2) or isinstance(stride, bool):
        raise ValueError(f"stride: must be 1 or 2, got {stride}")
    _check_x_format(x_format)
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
        A run of ``Macro.mvm`` or ``conv2d`` (its ``active_rows``, shape
        (row_tiles, vectors, P), and ``meta['x_format']``).
    inner : int
        M, the rows of the stored matrix (the length of one streamed vector).

    Returns
    -------
    float
        A fraction in [0, 1].
    """
    if not isinstance(result, MvmResult):
        raise TypeError(f"result: expected MvmResult, got {type(result).__name__}")
    inner = check_pos_int("inner", inner)
    a = np.asarray(result.active_rows)
    _, B, P = a.shape
    radix4 = str(result.meta.get("x_format", "")).startswith("radix4")
    return float(a.sum()) / float(B * inner * (1 if radix4 else P))


def layer_mvm_shape(layer: LayerSpec, kind: str, batch: int) -> tuple[int, int, int]:
    """Shape of one training MVM of ``layer`` as mapped onto the macro (Grimm & Verma Sec. III).

    Parameters
    ----------
    layer : LayerSpec
        The layer.
    kind : str
        'forward', 'backward' or 'update'.
    batch : int
        Images per training step.

    Returns
    -------
    tuple of int
        (inner M: rows of the stored operand, outputs N: its columns, vectors B: streamed
        vectors per call), as in the table of docs/energy.md, section 2.
    """
    if not isinstance(layer, LayerSpec):
        raise TypeError(f"layer: expected LayerSpec, got {type(layer).__name__}")
    if kind not in MVM_KINDS:
        raise ValueError(f"kind: must be one of {MVM_KINDS}, got {kind!r}")
    batch = check_pos_int("batch", batch)
    L = layer
    pixels = L.height * L.width             # 1 for a dense layer
    window = KERNEL * KERNEL if L.kind == "conv" else 1
    if kind == "forward":
        return window * L.in_channels, L.out_channels, batch * pixels
    if kind == "backward":
        return window * L.out_channels, L.in_channels, batch * pixels
    return batch * pixels, window * L.in_channels, L.out_channels


def layer_event_counts(layer: LayerSpec, kind: str, batch: int, *,
                       config: MacroConfig | None = None, vref: VrefConfig | None = None,
                       density: float | None = None,
                       active_rows: np.ndarray | None = None,
                       formats: TrainingFormats | None = None) -> EventCounts:
    """Event counts of one training MVM of a layer mapped onto the macro (Grimm & Verma Sec. III).

    forward : weights stored (binary:5), activations streamed (binary:6), one vector per
        output pixel and image; convolutions go through the reshape buffer.
    backward : transposed weights stored (inner 9 * out_channels for a conv, out_channels for
        dense; outputs in_channels), gradients streamed (radix4:8); a conv's backward is the
        transposed convolution of the output-gradient map through the reshape buffer.
    update : activations stored (binary:6; inner batch x pixels, outputs 9 * in_channels
        for a conv, in_channels for dense), gradients streamed (radix4:8), one vector per
        output channel.

    Parameters
    ----------
    layer : LayerSpec
        The layer (``imcsim.workloads``).
    kind : str
        'forward', 'backward' or 'update'.
    batch : int
        Images per training step.
    config, vref, density, active_rows
        As in ``mvm_event_counts``; ``density`` / ``active_rows`` describe the streamed
        operand.
    formats : TrainingFormats or None
        Operand formats (default ``PAPER_FORMATS``: binary:6 activations, binary:5 weights,
        radix4:8 gradients; ``INT8_FORMATS`` for ``--scheme int8``).

    Returns
    -------
    EventCounts
        As ``mvm_event_counts``: (row_tiles, col_tiles) arrays per event.
    """
    if not isinstance(layer, LayerSpec):
        raise TypeError(f"layer: expected LayerSpec, got {type(layer).__name__}")
    if kind not in MVM_KINDS:
        raise ValueError(f"kind: must be one of {MVM_KINDS}, got {kind!r}")
    batch = check_pos_int("batch", batch)
    formats = PAPER_FORMATS if formats is None else formats
    if not isinstance(formats, TrainingFormats):
        raise TypeError(f"formats: expected TrainingFormats, got {type(formats).__name__}")
    kw = dict(config=config, vref=vref, density=density, active_rows=active_rows)
    L, f = layer, formats
    if L.kind == "conv":
        if kind == "forward":
            return conv_event_counts(batch, L.height, L.width, L.in_channels, L.out_channels,
                                     f.activation, f.weight, **kw)
        if kind == "backward":
            return conv_event_counts(batch, L.height, L.width, L.out_channels, L.in_channels,
                                     f.gradient, f.weight, **kw)
        return mvm_event_counts(batch * L.height * L.width, KERNEL * KERNEL * L.in_channels,
                                L.out_channels, f.gradient, f.stored_activation, **kw)
    if kind == "forward":
        return mvm_event_counts(L.in_channels, L.out_channels, batch, f.activation, f.weight,
                                **kw)
    if kind == "backward":
        return mvm_event_counts(L.out_channels, L.in_channels, batch, f.gradient, f.weight,
                                **kw)
    return mvm_event_counts(batch, L.in_channels, L.out_channels, f.gradient,
                            f.stored_activation, **kw)
