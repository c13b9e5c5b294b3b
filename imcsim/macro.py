"""The macro's public API: ``Macro.mvm`` (fast path) and ``Macro.mvm_traced`` (cycle level).

Both validate their arguments here, share the operand encoding, tiling, Vref choice, static
mismatch tables and output stage, and differ only in how an array cycle is evaluated: the fast
path runs the fused Numba kernel of ``kernels.fast_mvm``; the cycle-level path
(``imcsim.cycle``) steps every array cycle and SAR step and can record them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from imcsim.mapping import TilePlan, pack_rows, plan_tiles, select_full_scale, words32
from imcsim.config import MacroConfig, Overflow, Rounding, VrefConfig
from imcsim.events import EventCounts, tile_event_counts
from imcsim.formats import BinaryFormat, Radix4Format, plane_lookup_tables
from imcsim.nmc import accumulator_fraction_bits, nmc_scale_fx, output_stage
from imcsim.kernels.analog import (CAP_UNIT, CDAC_UNIT, cdac_weight_table, cell_capacitor_table,
                            comparator_offset_table)
from imcsim.kernels.fast_mvm import tile_mvm
from imcsim.kernels.pack import pack_input_planes

_NO_GATES = np.zeros(0, dtype=np.uint16)
# Planes with at most this fraction of active rows take the row gather instead of the dense
# popcount: an estimate from instruction counts (a gathered row costs about C/32 vector adds,
# a 64-row word about 4 C scalar operations), not a tuned value.
GATHER_FRACTION = 0.25


@lru_cache(maxsize=64)
def _lookup_tables(x_format, mask_zero: bool):
    """(offset, pattern, gate, all_active, uniform_pattern) of a format, built once.

    all_active: no value is masked in any plane (dense binary inputs); uniform_pattern: every
    value drives the same row input in all planes (radix-4's sign).
    """
    offset, pattern, gate = plane_lookup_tables(x_format, mask_zero)
    pattern.flags.writeable = False
    gate.flags.writeable = False
    full = (1 << x_format.n_planes) - 1
    all_active = bool((gate == full).all())
    uniform_pattern = bool(np.isin(pattern, (0, full)).all())
    return offset, pattern, gate, all_active, uniform_pattern


@dataclass
class MvmResult:
    """Outputs of one MVM.

    y : float64 (B, N)  the NMC output, exactly y_int / 2**out_frac_bits.
    y_int : int64 (B, N)  the output register.
    codes : uint16 (T, B, P, N, Kw) or None  every ADC code (T = row tiles).
    full_scale, active_rows : int64 (T, B, P)  per array cycle.
    events : EventCounts
    """

    y: np.ndarray
    y_int: np.ndarray
    codes: np.ndarray | None
    full_scale: np.ndarray
    active_rows: np.ndarray
    events: EventCounts
    out_frac_bits: int
    meta: dict = field(default_factory=dict)


@dataclass
class PreparedMvm:
    """Validated operands shared by both paths."""

    plan: TilePlan
    x_format: object
    w_format: object
    x_units: np.ndarray      # int64 (B, M): X in the format's integer units
    lut_offset: int
    pattern_lut: np.ndarray  # uint16: per-value row-input bits of every plane
    gate_lut: np.ndarray     # uint16: per-value active flags of every plane
    all_active: bool         # no value is masked in any plane
    uniform_pattern: bool    # every value drives the same row input in all planes
    weights: "StoredWeights"
    vref: VrefConfig
    seed: int
    vector_offset: int
    acc_frac_bits: int
    out_scale: np.ndarray | None
    out_offset: np.ndarray | None

    @property
    def batch(self) -> int:
        return self.x_units.shape[0]

    @property
    def n_planes(self) -> int:
        return self.x_format.n_planes

    def tile_planes(self, t: int):
        """Unpacked row inputs and active flags of row tile t: uint8 / bool (B, P, R)."""
        r0, r1 = self.plan.row_range(t)
        idx = self.x_units[:, r0:r1] + self.lut_offset
        shifts = np.arange(self.n_planes, dtype=np.uint16)[None, :, None]
        bits = ((self.pattern_lut[idx][:, None, :] >> shifts) & 1).astype(np.uint8)
        active = ((self.gate_lut[idx][:, None, :] >> shifts) & 1).astype(bool)
        return bits, active


class StoredWeights:
    """A matrix written into the CIMA, encoded into bit-plane columns tile by tile.

    Build with ``Macro.store_weights`` (tiles are kept and reused across MVMs); ``Macro.mvm``
    given a plain array builds a transient one that encodes each tile when it is used and
    keeps nothing, so a large stored operand never exists as bit planes all at once.
    """

    def __init__(self, macro: "Macro", W, w_format, cache: bool = True):
        _check_matrix("W", W)
        if not isinstance(w_format, BinaryFormat):
            raise TypeError(f"w_format: the stored operand must be a BinaryFormat, got {w_format!r}")
        self.macro = macro
        self.w_format = w_format
        self.shape = W.shape
        self.plan = plan_tiles(macro.config, W.shape[0], W.shape[1], w_format)
        # int16 holds every BinaryFormat value (|v| <= 2**14) at a quarter of int64's memory
        self.values = w_format.validate(W, "W").astype(np.int16, copy=False)
        self.cache = cache
        self._tiles = {}

    def tile(self, t: int, u: int) -> dict:
        """Stored bits of tile (t, u): 'columns' uint8 (R, C) and 'packed' uint64 (C, W)."""
        key = (t, u)
        if key in self._tiles:
            return self._tiles[key]
        r0, r1 = self.plan.row_range(t)
        n0, n1 = self.plan.output_range(u)
        bits, _ = self.w_format.encode(self.values[r0:r1, n0:n1], "W")   # (R, G, Kw)
        cols = np.ascontiguousarray(bits.reshape(r1 - r0, -1))
        entry = {"columns": cols, "packed": pack_rows(cols.T)}
        if self.cache:
            self._tiles[key] = entry
        return entry

    def capacitance_table(self, t: int, u: int, tile: dict | None = None) -> np.ndarray:
        """int64 (2, R, C): the cell capacitance each input bit would charge."""
        tile = self.tile(t, u) if tile is None else tile
        if "cap_table" not in tile:
            cols = tile["columns"]
            caps = self.macro.cell_capacitance[: cols.shape[0], : cols.shape[1]]
            tile["cap_table"] = np.stack([(1 - cols) * caps, cols * caps]).astype(np.int64)
        return tile["cap_table"]


def _check_matrix(name, arr):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(arr).__name__}")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected an integer or float dtype, got {arr.dtype}")
    if 0 in arr.shape:
        raise ValueError(f"{name}: must not be empty, got shape {arr.shape}")


def _check_seed(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not 0 <= int(value) < (1 << 63):
        raise ValueError(f"{name}: must lie in [0, 2**63), got {value}")


class Macro:
    """One IMC macro instance (a chip: its static mismatch is fixed by ``config.chip_seed``)."""

    def __init__(self, config: MacroConfig | None = None):
        config = MacroConfig() if config is None else config
        if not isinstance(config, MacroConfig):
            raise TypeError(f"config: expected MacroConfig, got {type(config).__name__}")
        self.config = config
        self.fx = config.nonideal.fixed_point()

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
        """int64 (columns,): static comparator offsets, analog fixed point."""
        c = self.config
        return comparator_offset_table(c.chip_seed, c.columns, self.fx["sigma_offset_fx"])

    # --- shared preparation -------------------------------------------------------------
    def store_weights(self, W, w_format) -> StoredWeights:
        """Write W (M x N integers of ``w_format``) into the array model for reuse across MVMs."""
        return StoredWeights(self, W, w_format)

    def prepare(self, X, W, x_format, w_format=None, *, seed=0, vref=None, vector_offset=0,
                out_scale=None, out_offset=None) -> PreparedMvm:
        """Validate operands (see ``mvm``); W may be an array or a ``StoredWeights``."""
        c = self.config
        _check_matrix("X", X)
        if isinstance(W, StoredWeights):
            if W.macro.config != c:
                raise ValueError("W: stored on a macro with a different config")
            if w_format is not None and w_format != W.w_format:
                raise ValueError(f"w_format: {w_format!r} differs from the stored {W.w_format!r}")
            weights = W
        else:
            if w_format is None:
                raise TypeError("w_format: required when W is an array")
            weights = StoredWeights(self, W, w_format, cache=False)
        w_format = weights.w_format
        if not isinstance(x_format, (BinaryFormat, Radix4Format)):
            raise TypeError(f"x_format: expected BinaryFormat or Radix4Format, got {x_format!r}")
        if X.shape[1] != weights.shape[0]:
            raise ValueError(f"X, W: inner dimensions differ: X is {X.shape}, W is {weights.shape}")
        _check_seed("seed", seed)
        _check_seed("vector_offset", vector_offset)
        vref = c.vref if vref is None else vref
        if not isinstance(vref, VrefConfig):
            raise TypeError(f"vref: expected VrefConfig, got {type(vref).__name__}")
        vref.check_against(c.rows, c.top_code)
        x_units = np.ascontiguousarray(x_format.validate(X, "X"), dtype=np.int64)
        offset, pattern, gate, all_active, uniform = _lookup_tables(x_format, c.mask_zero_inputs)
        nmc = c.nmc
        # Register sizes must keep every intermediate inside int64.
        max_term = (2 * c.rows << nmc.scale_frac_bits) * int(x_format.plane_weights.max()) \
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
                           acc_frac, out_scale, out_offset)

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

    def count_events(self, prep: PreparedMvm, active_rows, full_scale, clipped) -> EventCounts:
        """Event counters of a prepared MVM (docs/hardware-model.md section 6).

        active_rows, full_scale : int64 (T, B, P); clipped : int64 (T, U) clipped conversions,
        as measured by the path that ran.
        """
        plan, c = prep.plan, self.config
        ev = EventCounts.zeros(plan)
        b, p = prep.batch, prep.n_planes
        for t in range(plan.row_tiles):
            r0, r1 = plan.row_range(t)
            active_sum = int(active_rows[t].sum())
            high = int(((full_scale[t] == prep.vref.dual_high)
                        & (prep.vref.mode.value == "dual")).sum())
            for u in range(plan.col_tiles):
                cols = plan.used_columns(u)
                n0, n1 = plan.output_range(u)
                ev.per_tile["array_cycles"][t, u] = b * p
                ev.per_tile["bitcell_mults"][t, u] = active_sum * cols
                ev.per_tile["adc_conversions"][t, u] = b * p * cols
                ev.per_tile["sar_steps"][t, u] = b * p * cols * c.adc_bits
                ev.per_tile["nmc_outputs"][t, u] = b * (n1 - n0)
                ev.per_tile["reshape_words"][t, u] = b * words32(r1 - r0,
                                                                 prep.x_format.bits_per_element)
                ev.per_tile["cima_load_words"][t, u] = cols * words32(r1 - r0, 1)
                ev.per_tile["high_vref_conversions"][t, u] = high * cols
        ev.per_tile["clipped_conversions"][...] = clipped
        return ev

    def finish(self, prep: PreparedMvm, acc, codes, active_rows, full_scale, clipped,
               path: str) -> MvmResult:
        """Output stage and result assembly, shared by both paths."""
        nmc = self.config.nmc
        y_int = output_stage(acc, nmc, prep.acc_frac_bits, prep.out_scale, prep.out_offset)
        y = y_int.astype(np.float64) / float(1 << nmc.out_frac_bits)
        return MvmResult(y, y_int, codes, full_scale, active_rows,
                         self.count_events(prep, active_rows, full_scale, clipped),
                         nmc.out_frac_bits,
                         {"path": path, "x_format": prep.x_format.spec(),
                          "w_format": prep.w_format.spec(), "seed": prep.seed,
                          "vref": prep.vref.mode.value})

    # --- the fast path --------------------------------------------------------------------
    def mvm(self, X, W, x_format, w_format=None, *, seed=0, vref=None, vector_offset=0,
            return_codes=False, out_scale=None, out_offset=None) -> MvmResult:
        """Y = X @ W on the macro, fast batched path.

        Parameters
        ----------
        X : (B, M) integer or float array  streamed vectors, values of ``x_format``.
        W : (M, N) integer array of ``w_format`` values (a BinaryFormat), or a StoredWeights
            from ``store_weights`` (then w_format may be omitted).
        seed : int  keys the dynamic noise of this call.
        vref : VrefConfig or None  overrides the config's Vref mode for this call.
        vector_offset : int  global index of X's first vector (noise keys use global indices,
            so a batch split into chunks gives the same result as the whole batch).
        return_codes : bool  also return every ADC code (T, B, P, N, Kw), uint16.
        out_scale, out_offset : (N,) int arrays or None  per-output NMC scale and offset.
        """
        prep = self.prepare(X, W, x_format, w_format, seed=seed, vref=vref,
                            vector_offset=vector_offset, out_scale=out_scale,
                            out_offset=out_offset)
        c, nmc, plan = self.config, self.config.nmc, prep.plan
        B, P, Kw = prep.batch, prep.n_planes, plan.weight_planes
        acc = np.zeros((B, plan.outputs), dtype=np.int64)
        codes = (np.zeros((plan.row_tiles, B, P, plan.outputs, Kw), dtype=np.uint16)
                 if return_codes else None)
        clipped = np.zeros((plan.row_tiles, plan.col_tiles), dtype=np.int64)
        active_rows = np.zeros((plan.row_tiles, B, P), dtype=np.int64)
        full_scale = np.zeros((plan.row_tiles, B, P), dtype=np.int64)
        fx = self.fx
        # the integer ADC law shortcut holds for ideal analog under the paper's floor law
        ideal = c.nonideal.is_ideal and c.adc_rounding is Rounding.FLOOR
        cell_mismatch = fx["sigma_cell_fx"] != 0
        pw_x, pw_w = prep.x_format.plane_weights, prep.w_format.plane_weights
        no_table = np.zeros((0, 0), dtype=np.uint8)
        no_caps = np.zeros((2, 0, 0), dtype=np.int64)
        no_codes = np.zeros((0, 0, 0), dtype=np.uint16)
        for t in range(plan.row_tiles):
            r0, r1 = plan.row_range(t)
            n_words = -(-(r1 - r0) // 64)
            xbits = np.empty((B, P, n_words), dtype=np.uint64)
            xmask = np.empty((B, P, n_words), dtype=np.uint64)
            gates = _NO_GATES if prep.all_active else prep.gate_lut   # dense: skip gate work
            pack_input_planes(prep.x_units, prep.lut_offset, prep.pattern_lut, gates, P,
                              r0, r1, xbits, xmask, active_rows[t], prep.uniform_pattern)
            full_scale[t] = select_full_scale(active_rows[t], prep.vref, c.top_code)
            scale = nmc_scale_fx(full_scale[t], c.top_code, nmc.scale_frac_bits)
            shift = c.adc_threshold_shift(full_scale[t])
            gather_limit = int(GATHER_FRACTION * (r1 - r0))
            needs_gather = bool((active_rows[t] <= gather_limit).any())
            for u in range(plan.col_tiles):
                n0, n1 = plan.output_range(u)
                cols = plan.used_columns(u)
                tile = prep.weights.tile(t, u)
                cap_table = (prep.weights.capacitance_table(t, u, tile) if cell_mismatch
                             else no_caps)
                tile_codes = np.zeros((B, P, cols), dtype=np.uint16) if return_codes else no_codes
                tile_acc = np.ascontiguousarray(acc[:, n0:n1])
                clip_b = np.zeros(B, dtype=np.int64)
                wcols = tile["columns"] if needs_gather else no_table
                tile_mvm(xbits, xmask, active_rows[t], full_scale[t], scale, tile["packed"],
                         wcols, cap_table, self.column_capacitance[:cols],
                         self.cdac_weights[:cols], self.cdac_totals[:cols],
                         self.comparator_offsets[:cols], pw_x, pw_w, n1 - n0, c.rows, c.adc_bits,
                         nmc.scale_frac_bits, nmc.acc_bits, nmc.overflow is Overflow.SATURATE,
                         nmc.half_lsb_reconstruction, ideal, cell_mismatch,
                         fx["sigma_sample_fx"], fx["sigma_cmp_fx"], np.uint64(prep.seed), t, u,
                         prep.vector_offset, gather_limit, r1 - r0, shift, tile_acc, tile_codes,
                         clip_b)
                acc[:, n0:n1] = tile_acc
                clipped[t, u] = clip_b.sum()
                if return_codes:
                    codes[t, :, :, n0:n1, :] = tile_codes.reshape(B, P, n1 - n0, Kw)
        return self.finish(prep, acc, codes, active_rows, full_scale, clipped, "fast")

    # --- the cycle-level path -------------------------------------------------------------
    def mvm_traced(self, X, W, x_format, w_format=None, *, seed=0, vref=None, vector_offset=0,
                   out_scale=None, out_offset=None, trace=None, selection=None) -> MvmResult:
        """Y = X @ W stepping every array cycle and SAR step; identical results to ``mvm``.

        trace : str or Path or None  write an HDF5 trace of the selected cycles there.
        selection : imcsim.verify.trace.TraceSelection or None  what to record (default: everything).
        Always returns the codes.
        """
        from imcsim.cycle import run_cycle_level
        prep = self.prepare(X, W, x_format, w_format, seed=seed, vref=vref,
                            vector_offset=vector_offset, out_scale=out_scale,
                            out_offset=out_offset)
        return run_cycle_level(self, prep, trace=trace, selection=selection)


def conv2d(macro: Macro, fmap, weights, x_format, w_format, *, stride=1, traced=False, **kwargs):
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
