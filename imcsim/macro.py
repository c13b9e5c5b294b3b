"""The macro's public API: ``Macro.mvm`` (fast path, CPU or CUDA) and ``Macro.mvm_traced``.

Every path validates its arguments here (``prepare``), shares the operand encoding, tiling,
Vref choice, static mismatch tables and output stage, and differs only in how array cycles are
evaluated: the fast CPU path runs the fused Numba kernel of ``kernels.cpu_mvm``, the CUDA path
(``imcsim.gpu``) the kernels of ``kernels.cuda_mvm``, and the cycle-level path
(``imcsim.cycles``) steps every array cycle and SAR step and can record them.  All of them
compute with the one definition of the hardware in ``kernels.hw``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from imcsim.charges import cell_charges, charge_chunks, charges_by_gemm
from imcsim.checks import check_matrix, check_memory, check_seed, mvm_memory_bytes
from imcsim.cima import StoredOperand, StoredWeights
from imcsim.config import MacroConfig, Overflow, Rounding, VrefConfig, VrefMode
from imcsim.counters import MvmCounters
from imcsim.events import EventCounts, tile_event_counts
from imcsim.formats import BinaryFormat, Radix4Format, check_stored_format, format_lookup_tables
from imcsim.kernels.cpu_mvm import tile_mvm
from imcsim.kernels.cycle import level_sums, output_floats
from imcsim.kernels.hw import CAP_UNIT, CDAC_UNIT, CODE_OFFSET_FRAC_BITS, DAC_UNIT
from imcsim.kernels.pack import driven_rows, pack_input_planes, record_row_signals
from imcsim.kernels.params import AnalogParams, AnalogTables, CycleInputs, NmcParams, NoiseKey, StoredTile, Tuning
from imcsim.kernels.tables import cdac_weight_table, cell_capacitor_table, comparator_offset_table, row_dac_gain_table
from imcsim.mapping import TilePlan, cycle_constants
from imcsim.nmc import accumulator_fraction_bits, output_stage
from imcsim.progress import note_first_compile
from imcsim.tuning import GATHER_FRACTION, parallel_chunks

DEVICES = ("cpu", "cuda")


@dataclass
class MvmResult:
    """Outputs of one MVM.

    - y : float64 (B, N)  the NMC output, exactly y_int / 2**out_frac_bits.
    - y_int : int64 (B, N)  the output register.
    - codes : uint16 (T, B, P, N, Kw) or None  every ADC code (T = row tiles).
    - full_scale, active_rows : int64 (T, B, P)  per array cycle (active_rows: rows driven at
      a non-zero level).
    - level_sum : int64 (T, B, P)  A, the sum of the cycle's row levels (docs/hardware-model.md
      4.8; equal to active_rows for binary rows).
    - events : EventCounts

    On a CUDA macro given CuPy operands, y / y_int / codes are CuPy arrays.
    """

    y: np.ndarray
    y_int: np.ndarray
    codes: np.ndarray | None
    full_scale: np.ndarray
    active_rows: np.ndarray
    events: EventCounts
    out_frac_bits: int
    meta: dict = field(default_factory=dict)
    level_sum: np.ndarray | None = None

    def __post_init__(self):
        if self.level_sum is None:
            self.level_sum = self.active_rows


@dataclass
class PackedTile:
    """One row tile of the streamed operand, packed, with its per-cycle constants.

    - xbits, xmask : uint64 (B, P * S, W)  row inputs and active rows of every level-bit
      sub-plane (``CycleInputs``), 64 rows a word.
    - sub_active : int64 (B, P * S)  active rows per sub-plane.
    - active_rows : int64 (B, P)  rows driven at a non-zero level per cycle.
    - level_sum, full_scale, scale, threshold_shift : int64 (B, P)  A and the cycle constants.
    """

    xbits: np.ndarray
    xmask: np.ndarray
    sub_active: np.ndarray
    active_rows: np.ndarray
    level_sum: np.ndarray
    full_scale: np.ndarray
    scale: np.ndarray
    threshold_shift: np.ndarray

    def cycle_inputs(self, level_bits: int, b0: int = 0, b1: int | None = None) -> CycleInputs:
        """The kernels' view of this tile (of vectors [b0, b1) when given: views, no copy)."""
        v = slice(b0, b1)
        return CycleInputs(self.xbits[v], self.xmask[v], self.sub_active[v], self.level_sum[v],
                           self.full_scale[v], self.scale[v], self.threshold_shift[v],
                           level_bits)


@dataclass
class PreparedMvm:
    """Validated operands shared by every path."""

    plan: TilePlan
    x_format: BinaryFormat | Radix4Format
    w_format: BinaryFormat
    x_units: np.ndarray      # (B, M) X in the format's integer units, x_format.unit_dtype
    lut_offset: int
    pattern_lut: np.ndarray  # uint16 (uint32 past 16 sub-planes): row-input bits per sub-plane
    gate_lut: np.ndarray     # the same dtype: per-value active flags of every sub-plane
    all_active: bool         # no value is masked in any plane
    uniform_pattern: bool    # every value drives the same row input in all planes
    weights: StoredOperand
    vref: VrefConfig
    seed: int
    vector_offset: int
    acc_frac_bits: int
    out_scale: np.ndarray | None
    out_offset: np.ndarray | None
    config: MacroConfig

    @property
    def batch(self) -> int:
        return self.x_units.shape[0]

    @property
    def n_planes(self) -> int:
        return self.x_format.n_planes

    @property
    def level_bits(self) -> int:
        """S: level-bit sub-planes per cycle (1 for binary rows)."""
        return self.x_format.level_bits

    def pack_tile(self, t: int) -> PackedTile:
        """Pack row tile t of every vector and derive its per-cycle constants."""
        r0, r1 = self.plan.row_range(t)
        B, P, S = self.batch, self.n_planes, self.level_bits
        n_words = -(-(r1 - r0) // 64)
        xbits = np.empty((B, P * S, n_words), dtype=np.uint64)
        xmask = np.empty((B, P * S, n_words), dtype=np.uint64)
        sub_active = np.empty((B, P * S), dtype=np.int64)
        # dense: skip the gate work (an empty table of the pattern table's dtype)
        gates = self.gate_lut[:0] if self.all_active else self.gate_lut
        pack_input_planes(self.x_units, self.lut_offset, self.pattern_lut, gates, P * S, r0,
                          r1, xbits, xmask, sub_active, self.uniform_pattern,
                          parallel_chunks())
        if S == 1:
            active_rows = level_sum = sub_active
        else:
            level_sum = np.empty((B, P), dtype=np.int64)        # A (hardware-model.md 4.8)
            level_sums(sub_active, S, level_sum)
            active_rows = np.empty((B, P), dtype=np.int64)
            driven_rows(xmask, S, active_rows)
        fs, scale, shift = cycle_constants(level_sum, self.vref, self.config)
        return PackedTile(xbits, xmask, sub_active, active_rows, level_sum, fs, scale, shift)

    def record_row_signals(self, t: int, vectors: np.ndarray, planes: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the row drivers of tile t apply in n cycles (``vectors[i]``, ``planes[i]``):
        row inputs uint8, active flags bool and levels uint8 (0 = masked), each (n, R).

        The input bit is the encoder's (``formats.plane_lookup_tables``) even on masked rows,
        where the mask disconnects the cell; the packed words used for computing are gated.
        """
        r0, r1 = self.plan.row_range(t)
        n = len(vectors)
        bits = np.empty((n, r1 - r0), dtype=np.uint8)
        levels = np.empty((n, r1 - r0), dtype=np.uint8)
        active = np.empty((n, r1 - r0), dtype=np.bool_)
        record_row_signals(self.x_units, np.ascontiguousarray(vectors, dtype=np.int64),
                           np.ascontiguousarray(planes, dtype=np.int64), r0, r1,
                           self.lut_offset, self.pattern_lut, self.gate_lut, self.level_bits,
                           bits, active, levels)
        return bits, active, levels

    def row_signals(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``record_row_signals`` of every cycle of tile t, each (B, P, R)."""
        B, P = self.batch, self.n_planes
        vectors = np.repeat(np.arange(B, dtype=np.int64), P)
        planes = np.tile(np.arange(P, dtype=np.int64), B)
        return tuple(a.reshape(B, P, -1) for a in self.record_row_signals(t, vectors, planes))


class Macro:
    """One IMC macro instance (a chip: its static mismatch is fixed by ``config.chip_seed``).

    Parameters
    ----------
    config : MacroConfig or None  the paper's macro by default.
    device : "cpu" or "cuda"  where ``mvm`` runs (``mvm_traced`` always runs on the CPU).
        "cuda" needs a CUDA GPU and CuPy (``pip install 'imcsim[gpu]'``), or Numba's CUDA
        simulator (``NUMBA_ENABLE_CUDASIM=1``, for tests).
    """

    def __init__(self, config: MacroConfig | None = None, device: str = "cpu"):
        config = MacroConfig() if config is None else config
        if not isinstance(config, MacroConfig):
            raise TypeError(f"config: expected MacroConfig, got {type(config).__name__}")
        if device not in DEVICES:
            raise ValueError(f"device: must be one of {DEVICES}, got {device!r}")
        self.config = config
        self.device = device
        self.fx = config.nonideal.fixed_point()
        self._gpu = None
        if device == "cuda":
            from imcsim.gpu import GpuMacro
            self._gpu = GpuMacro(self)          # raises a one-line ValueError without a GPU

    # --- static chip properties (computed once) ------------------------------------------
    @cached_property
    def cell_capacitance(self) -> np.ndarray:
        """int64 (rows, columns): every bit cell's capacitor, CAP_UNIT units."""
        c = self.config
        if self.fx["sigma_cell_fx"] == 0:
            return np.full((c.rows, c.columns), CAP_UNIT, dtype=np.int64)
        return cell_capacitor_table(c.chip_seed, c.rows, c.columns, self.fx["sigma_cell_fx"])

    @cached_property
    def column_capacitance(self) -> np.ndarray:
        """int64 (columns,): total column capacitance including the parasitic one."""
        c_par = (self.config.rows * CAP_UNIT * self.fx["parasitic_fx"]) >> 16
        return self.cell_capacitance.sum(axis=0) + c_par

    @cached_property
    def cdac_weights(self) -> np.ndarray:
        """int64 (columns, adc_bits): CDAC capacitor k of every column, CDAC_UNIT units."""
        c = self.config
        if self.fx["sigma_cdac_fx"] == 0:
            return np.tile(CDAC_UNIT << np.arange(c.adc_bits, dtype=np.int64), (c.columns, 1))
        return cdac_weight_table(c.chip_seed, c.columns, c.adc_bits, self.fx["sigma_cdac_fx"])

    @cached_property
    def cdac_totals(self) -> np.ndarray:
        """int64 (columns,): total CDAC capacitance per column (the DAC's divider)."""
        return self.cdac_weights.sum(axis=1)

    @cached_property
    def comparator_offsets(self) -> np.ndarray:
        """int64 (columns,): static comparator offsets, analog fixed point (rows)."""
        c = self.config
        return comparator_offset_table(c.chip_seed, c.columns, self.fx["sigma_offset_fx"])

    def comparator_offsets_in_levels(self, top_level: int) -> np.ndarray:
        """int64 (columns,): the offsets in level units of a streamed format with top row
        level ``top_level`` (the same voltage: offset * top_level, hardware-model.md 4.8)."""
        return self.comparator_offsets * np.int64(top_level)

    def row_dac_gains(self, level_bits: int) -> np.ndarray:
        """int64 (rows, level_bits): every row DAC's level-bit gain, DAC_UNIT units."""
        cache = self.__dict__.setdefault("_dac_gains", {})
        if level_bits not in cache:
            c = self.config
            if self.fx["sigma_dac_fx"] == 0:
                cache[level_bits] = np.tile(DAC_UNIT << np.arange(level_bits, dtype=np.int64),
                                            (c.rows, 1))
            else:
                cache[level_bits] = row_dac_gain_table(c.chip_seed, c.rows, level_bits,
                                                       self.fx["sigma_dac_fx"])
        return cache[level_bits]

    @property
    def uses_charge_table(self) -> bool:
        """Cell or row-DAC mismatch: charges come from per-tile drive tables."""
        return self.fx["sigma_cell_fx"] != 0 or self.fx["sigma_dac_fx"] != 0

    # --- shared preparation -------------------------------------------------------------
    def store_weights(self, W, w_format) -> StoredWeights:
        """Write W (M x N integers of ``w_format``) into the array model for reuse across MVMs.

        On a CUDA macro a GPU array (CuPy) is validated and encoded on the GPU.
        """
        if self._gpu is not None:
            from imcsim.gpu import GpuStoredWeights, is_device_array
            if is_device_array(W):
                return GpuStoredWeights(self._gpu, W, w_format)
        return StoredWeights(self, W, w_format)

    def prepare(self, X, W, x_format, w_format=None, *, seed=0, vref=None, vector_offset=0,
                out_scale=None, out_offset=None) -> PreparedMvm:
        """Validate operands (see ``mvm``); W may be an array or a ``StoredWeights``."""
        c = self.config
        check_matrix("X", X)
        if not isinstance(x_format, (BinaryFormat, Radix4Format)):
            raise TypeError(f"x_format: expected BinaryFormat or Radix4Format, got {x_format!r}")
        c.check_input_format(x_format)
        if isinstance(W, StoredOperand):
            if W.macro.config != c:
                raise ValueError("W: stored on a macro with a different config")
            if w_format is not None and w_format != W.w_format:
                raise ValueError(f"w_format: {w_format!r} differs from the stored {W.w_format!r}")
            w_shape, w_format = W.shape, W.w_format
        else:
            if w_format is None:
                raise TypeError("w_format: required when W is an array")
            check_matrix("W", W)
            check_stored_format(w_format)
            w_shape = W.shape
        if X.shape[1] != w_shape[0]:
            raise ValueError(f"X, W: inner dimensions differ: X is {X.shape}, W is {w_shape}")
        # fail fast: refuse, with the figure, what cannot fit before allocating anything
        check_memory("X, W", mvm_memory_bytes(c, X.shape[0], w_shape[0], w_shape[1], x_format,
                                              w_format, x_float=X.dtype.kind == "f"),
                     "split the batch into chunks (vector_offset keeps their noise)")
        weights = W if isinstance(W, StoredOperand) else StoredWeights(self, W, w_format,
                                                                       cache=False)
        check_seed("seed", seed)
        check_seed("vector_offset", vector_offset)
        vref = c.vref if vref is None else vref
        if not isinstance(vref, VrefConfig):
            raise TypeError(f"vref: expected VrefConfig, got {type(vref).__name__}")
        vref.check_against(c.rows, c.top_code, x_format.top_level)
        # at the format's narrowest width: a layer's operand is streamed once per row tile
        x_units = np.ascontiguousarray(x_format.validate(X, "X", dtype=x_format.unit_dtype))
        offset, pattern, gate, all_active, uniform = format_lookup_tables(x_format, c.mask_zero_inputs)
        nmc = c.nmc
        # Register sizes must keep every intermediate inside int64.
        max_term = (2 * c.rows * x_format.top_level << nmc.scale_frac_bits) \
            * int(x_format.plane_weights.max()) \
            * int(w_format.plane_weights.max())
        if max_term + (1 << (nmc.acc_bits - 1)) >= (1 << 63):
            raise ValueError(f"nmc.acc_bits: {nmc.acc_bits} bits plus terms up to {max_term} "
                             "overflow the 64-bit model; use a smaller acc_bits or scale_frac_bits")
        acc_frac = accumulator_fraction_bits(nmc, x_format, w_format)
        if nmc.acc_bits + max(0, nmc.out_frac_bits - acc_frac) > 63:
            raise ValueError(f"nmc.out_frac_bits: {nmc.out_frac_bits} exceeds the accumulator's "
                             f"{acc_frac} fraction bits by more than 64-bit arithmetic allows")
        n_out = weights.shape[1]
        out_scale = self._check_out_vector("out_scale", out_scale, n_out, 62 - nmc.out_bits)
        out_offset = self._check_out_vector("out_offset", out_offset, n_out, nmc.out_bits - 1)
        return PreparedMvm(weights.plan, x_format, w_format, x_units, offset, pattern, gate,
                           all_active, uniform, weights, vref, int(seed), int(vector_offset),
                           acc_frac, out_scale, out_offset, c)

    @staticmethod
    def _check_out_vector(name, value, n, magnitude_bits):
        if value is None:
            return None
        arr = np.asarray(value)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected integers, got dtype {arr.dtype}")
        if arr.shape != (n,):
            raise ValueError(f"{name}: expected shape ({n},), got {arr.shape}")
        lim = 1 << magnitude_bits
        if arr.size and (arr.min() < -lim or arr.max() >= lim):
            raise ValueError(f"{name}: values must lie in [{-lim}, {lim - 1}]")
        return arr.astype(np.int64)

    def count_events(self, prep: PreparedMvm, counters: MvmCounters) -> EventCounts:
        """Event counters of a prepared MVM (``imcsim.events.tile_event_counts``) from the
        counters the path that ran measured."""
        active_rows, full_scale, clipped = (counters.active_rows, counters.full_scale,
                                            counters.clipped)
        high_columns, level_sum = counters.high_columns, counters.level_sum
        dual = prep.vref.mode is VrefMode.DUAL
        per_column = prep.vref.per_column
        active_rows = np.asarray(active_rows)
        level_sum = active_rows if level_sum is None else np.asarray(level_sum)
        # a cycle the controller skips converts nothing, at any level
        converted = level_sum > 0 if self.config.skip_masked_cycles else True
        high = (((np.asarray(full_scale) == prep.vref.dual_high) & converted).sum(axis=(1, 2))
                if dual and not per_column else np.zeros(prep.plan.row_tiles, dtype=np.int64))
        run = ((level_sum > 0).sum(axis=(1, 2)) if self.config.skip_masked_cycles
               else None)                                   # None: every cycle runs
        multi_level = prep.x_format.top_level > 1
        return tile_event_counts(prep.plan, vectors=prep.batch, n_planes=prep.n_planes,
                                 bits_per_element=prep.x_format.bits_per_element,
                                 adc_bits=self.config.adc_bits,
                                 active_sum=active_rows.sum(axis=(1, 2)),
                                 high_cycles=high, clipped=clipped, run_cycles=run,
                                 high_conversions=high_columns if per_column else None,
                                 range_decisions=1 if per_column else 0,
                                 dac_drives=active_rows.sum(axis=(1, 2)) if multi_level else None,
                                 dac_levels=level_sum.sum(axis=(1, 2)) if multi_level else None)

    def finish(self, prep: PreparedMvm, acc, counters: MvmCounters, path: str, *,
               overwrite_acc: bool = False) -> MvmResult:
        """Output stage and result assembly, shared by the CPU paths.  With
        ``overwrite_acc`` the outputs are written over ``acc`` (int64 (B, N), C-contiguous),
        for callers done with it: on layer-sized MVMs each new array of that size costs its
        page faults."""
        nmc = self.config.nmc
        y_int = output_stage(acc, nmc, prep.acc_frac_bits, prep.out_scale, prep.out_offset,
                             out=acc if overwrite_acc else None)
        y = np.empty(y_int.shape, dtype=np.float64)
        output_floats(y_int, 2.0 ** -nmc.out_frac_bits, y)
        return self.result(prep, y, y_int, counters, path)

    def result(self, prep: PreparedMvm, y, y_int, counters: MvmCounters,
               path: str) -> MvmResult:
        """Assemble an MvmResult (events counted from the measured counters), every path."""
        return MvmResult(y, y_int, counters.codes, counters.full_scale, counters.active_rows,
                         self.count_events(prep, counters),
                         self.config.nmc.out_frac_bits,
                         {"path": path, "device": self.device, "x_format": prep.x_format.spec(),
                          "w_format": prep.w_format.spec(), "seed": prep.seed,
                          "vref": prep.vref.mode.value},
                         counters.level_sum)

    def analog_constants(self, cols: int, vref: VrefConfig | None = None, top_level: int = 1
                         ) -> tuple[AnalogParams, AnalogTables]:
        """Scalar analog settings (for a call with Vref ``vref``, default the config's) and
        the analog tables of the first ``cols`` columns, in the level units of a streamed
        format with top row level ``top_level`` (docs/hardware-model.md 4.8)."""
        c, fx = self.config, self.fx
        vref = c.vref if vref is None else vref
        # the integer ADC law shortcut holds for ideal analog under every ADC law
        # (hw.ideal_rounding_addend)
        ideal = c.nonideal.is_ideal
        params = AnalogParams(c.rows, c.adc_bits, c.top_code, ideal, self.uses_charge_table,
                              fx["sigma_sample_fx"] * top_level, fx["sigma_cmp_fx"] * top_level,
                              c.skip_masked_cycles, vref.per_column, vref.dual_low,
                              vref.dual_high, c.adc_rounding is Rounding.HALF_UP)
        tables = AnalogTables(self.column_capacitance[:cols], self.cdac_weights[:cols],
                              self.cdac_totals[:cols],
                              self.comparator_offsets_in_levels(top_level)[:cols])
        return params, tables

    def nmc_params(self, prep: PreparedMvm, n_outputs: int) -> NmcParams:
        nmc = self.config.nmc
        table, bound = self.code_offsets
        return NmcParams(nmc.scale_frac_bits, nmc.acc_bits, nmc.overflow is Overflow.SATURATE,
                         table, nmc.has_code_offsets, bound, prep.x_format.plane_weights,
                         prep.w_format.plane_weights, n_outputs)

    @cached_property
    def code_offsets(self) -> tuple[np.ndarray, int]:
        """The NMC's per-column code offsets, int64 (3, columns) in 2**-CODE_OFFSET_FRAC_BITS
        code (``NmcConfig.code_offset_table``), and an int >= the magnitude of every offset,
        in codes."""
        table = self.config.nmc.code_offset_table(self.config.columns)
        step = 1 << CODE_OFFSET_FRAC_BITS
        return table, int((np.abs(table).max(initial=0) + step - 1) // step)

    # --- the fast path --------------------------------------------------------------------
    def mvm(self, X, W, x_format, w_format=None, *, seed=0, vref=None, vector_offset=0,
            return_codes=False, out_scale=None, out_offset=None) -> MvmResult:
        """Y = X @ W on the macro, fast batched path (on this macro's device).

        Parameters
        ----------
        X : (B, M) integer or float array  streamed vectors, values of ``x_format`` (a CuPy
            array is accepted on a CUDA macro; the result then stays on the GPU).
        W : (M, N) integer array of ``w_format`` values (a BinaryFormat), or a StoredWeights
            from ``store_weights`` (then w_format may be omitted).
        seed : int  keys the dynamic noise of this call.
        vref : VrefConfig or None  overrides the config's Vref mode for this call.
        vector_offset : int  global index of X's first vector (noise keys use global indices,
            so a batch split into chunks gives the same result as the whole batch).
        return_codes : bool  also return every ADC code (T, B, P, N, Kw), uint16.
        out_scale, out_offset : (N,) int arrays or None  per-output NMC scale and offset.
        """
        if self._gpu is not None:
            return self._gpu.mvm(X, W, x_format, w_format, seed=seed, vref=vref,
                                 vector_offset=vector_offset, return_codes=return_codes,
                                 out_scale=out_scale, out_offset=out_offset)
        prep = self.prepare(X, W, x_format, w_format, seed=seed, vref=vref,
                            vector_offset=vector_offset, out_scale=out_scale,
                            out_offset=out_offset)
        plan = prep.plan
        B, P, Kw = prep.batch, prep.n_planes, plan.weight_planes
        acc = np.zeros((B, plan.outputs), dtype=np.int64)
        counters = MvmCounters.zeros(plan, B, P, return_codes)
        no_wcols = np.zeros((0, 0), dtype=np.uint8)
        no_caps = np.zeros((1, 2, 0, 0), dtype=np.int64)
        no_codes = np.zeros((0, 0, 0), dtype=np.uint16)
        no_charges = np.zeros((0, 0, 0), dtype=np.int64)
        for t in range(plan.row_tiles):
            r0, r1 = plan.row_range(t)
            packed = prep.pack_tile(t)
            counters.note_row_tile(t, packed)
            tuning = Tuning(int(GATHER_FRACTION * (r1 - r0)), r1 - r0, parallel_chunks())
            needs_gather = bool((packed.sub_active <= tuning.gather_limit).any())
            for u in range(plan.col_tiles):
                n0, n1 = plan.output_range(u)
                cols = plan.used_columns(u)
                analog, tables = self.analog_constants(cols, prep.vref, prep.x_format.top_level)
                stored = prep.weights.tile(t, u, columns=needs_gather or analog.charge_table)
                tile = StoredTile(stored["packed"],
                                  stored["columns"] if needs_gather else no_wcols,
                                  prep.weights.capacitance_table(t, u, stored, prep.level_bits)
                                  if analog.charge_table else no_caps)
                tile_codes = np.zeros((B, P, cols), dtype=np.uint16) if return_codes else no_codes
                clip_b = np.zeros(B, dtype=np.int64)
                high_b = np.zeros(B, dtype=np.int64)
                note_first_compile(tile_mvm)
                nmc_params = self.nmc_params(prep, n1 - n0)
                # dense planes with per-cell charges: exact matrix products, in vector chunks
                by_gemm = analog.charge_table and charges_by_gemm(
                    packed.sub_active, r1 - r0, tile.cap_table)
                spans = charge_chunks(B, P * prep.level_bits, r1 - r0) if by_gemm else [(0, B)]
                for b0, b1 in spans:
                    charges = (cell_charges(packed.xbits[b0:b1], packed.xmask[b0:b1],
                                            tile.cap_table, prep.level_bits)
                               if by_gemm else no_charges)
                    tile_mvm(packed.cycle_inputs(prep.level_bits, b0, b1), tile, tables, analog,
                             nmc_params,
                             NoiseKey(np.uint64(prep.seed), t, u, prep.vector_offset + b0),
                             tuning, acc[b0:b1], n0,
                             tile_codes[b0:b1] if return_codes else no_codes, clip_b[b0:b1],
                             high_b[b0:b1], charges)
                counters.clipped[t, u] = clip_b.sum()
                counters.high_columns[t, u] = high_b.sum()
                if return_codes:
                    counters.codes[t, :, :, n0:n1, :] = tile_codes.reshape(B, P, n1 - n0, Kw)
        return self.finish(prep, acc, counters, "fast", overwrite_acc=True)

    # --- the cycle-level path -------------------------------------------------------------
    def mvm_traced(self, X, W, x_format, w_format=None, *, seed=0, vref=None, vector_offset=0,
                   out_scale=None, out_offset=None, trace=None, selection=None,
                   sink=None) -> MvmResult:
        """Y = X @ W stepping every array cycle and SAR step; identical results to ``mvm``.

        - trace : str or Path or None  write an HDF5 trace of the selected cycles there
          (``imcsim.verify.trace.TraceSink``).
        - selection : imcsim.verify.trace.TraceSelection or None  what the trace records
          (default: everything).
        - sink : imcsim.cycles.CycleSink or None  any other receiver of the cycles (not with
          ``trace``).

        Always returns the codes.  Runs on the CPU whatever the device.
        """
        from imcsim.cycles import run_cycle_level
        if trace is not None and sink is not None:
            raise ValueError("sink: give a trace path or a sink, not both")
        prep = self.prepare(X, W, x_format, w_format, seed=seed, vref=vref,
                            vector_offset=vector_offset, out_scale=out_scale,
                            out_offset=out_offset)
        if trace is not None:
            # the HDF5 format lives with the other file formats in verify/; that module
            # imports nothing of the core's cycle path back, and the cycle path itself knows
            # only the CycleSink protocol
            from imcsim.verify.trace import TraceSink
            sink = TraceSink(trace, self, prep, selection)
        return run_cycle_level(self, prep, sink=sink)


def conv2d(macro: Macro, fmap: np.ndarray, weights: np.ndarray, x_format, w_format: BinaryFormat, *,
           stride: int = 1, traced: bool = False, **kwargs) -> tuple[np.ndarray, MvmResult]:
    """3x3 'same' convolution on the macro through the input reshape buffer.

    fmap : (B, H, W, C) values of ``x_format``; weights : (3, 3, C, F) values of ``w_format``.
    Returns (y (B, Ho, Wo, F) float64, MvmResult); the result's ``reshape_words`` events are
    the buffer's own words (with window reuse) spread over the row tiles, and its ``meta``
    holds ``reshape_words_without_reuse``.  Other keyword arguments go to ``mvm``.
    """
    from imcsim.reshape import conv_weights_to_matrix, reshape_conv_inputs
    shaped = reshape_conv_inputs(fmap, stride, x_format.bits_per_element)
    W = conv_weights_to_matrix(weights)
    run = macro.mvm_traced if traced else macro.mvm
    res = run(shaped.vectors, W, x_format, w_format, **kwargs)
    words = res.events.per_tile["reshape_words"]
    plan_cols = words.shape[1]
    # The buffer streams the map once per column tile; its words are booked on row tile 0.
    words[...] = 0
    words[0, :] = shaped.words_in
    res.meta["reshape_words_without_reuse"] = shaped.words_without_reuse * plan_cols
    B, ho, wo = shaped.out_shape
    return res.y.reshape(B, ho, wo, -1), res
