"""The CUDA fast path of ``Macro.mvm`` (``Macro(config, device="cuda")``).

Same validation, tiling and per-cycle semantics as the CPU path (``imcsim.macro``), with the
work done by the kernels of ``kernels.cuda_mvm``, which are compiled from the same hardware
functions (``kernels.hw``).  Operands may be NumPy arrays (copied to the GPU) or CuPy /
``__cuda_array_interface__`` arrays (validated, encoded and packed on the GPU; the result then
stays there as CuPy arrays).  Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the
same code runs on the CPU, which is how the test suite checks it on machines without a GPU.
"""
from __future__ import annotations

import dataclasses
import os
import weakref

import numpy as np

from imcsim.cima import StoredOperand, StoredWeights
from imcsim.counters import MvmCounters
from imcsim.formats import BinaryFormat, Radix4Format, check_stored_format
from imcsim.kernels.params import (
    AnalogTables,
    CycleInputs,
    LaunchSpan,
    MvmOutputs,
    StoredTile,
)
from imcsim.mapping import ROUNDING_CODES, plan_tiles, vref_arguments
from imcsim.tuning import CUDA_THREADS_PER_BLOCK, vector_chunks

GPU_INSTALL_HINT = "pip install 'imcsim[gpu]'"
#: CUDA caps a grid's y dimension at 65535 blocks; kernels loop over the rest (grid-stride)
MAX_GRID_Y = 65535
#: how the CUDA path counts XNOR matches where counts alone set the codes (no cell or row-DAC
#: mismatch): "popcount" (the fused kernel) or "gemm" (signed +/-1 operands multiplied by the
#: array library's GEMM, then the same kernel from the counts); see docs/gpu.md
COUNT_PATHS = ("popcount", "gemm")
#: the environment variable that picks the count path (default "popcount")
COUNT_PATH_VARIABLE = "IMCSIM_CUDA_COUNT_PATH"
#: the most bytes each GEMM operand (signed inputs, dot products) of the GEMM count path holds:
#: the batch is taken in chunks of vectors that fit
GEMM_CHUNK_BYTES = 1 << 29


def count_path_from_environment() -> str:
    """The CUDA count path named by ``IMCSIM_CUDA_COUNT_PATH`` (ValueError, one line, for a
    name that is not one of ``COUNT_PATHS``)."""
    path = os.environ.get(COUNT_PATH_VARIABLE, "popcount").strip().lower()
    if path not in COUNT_PATHS:
        raise ValueError(f"{COUNT_PATH_VARIABLE}: expected one of {', '.join(COUNT_PATHS)}, "
                         f"got {path!r}")
    return path


def simulator_enabled() -> bool:
    """True when Numba's CUDA simulator replaces the GPU (NUMBA_ENABLE_CUDASIM=1)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def restore_numpy_aliases_for_numba_cuda() -> list[str]:
    """Put back NumPy aliases that released numba-cuda versions still use; returns their names.

    NumPy 2.5 removed ``np.row_stack`` (deprecated since 2.0 as an alias of ``np.vstack``);
    numba-cuda releases built before that call it at import time and fail with
    AttributeError.  The alias is restored only when missing, to the function NumPy itself
    documents as its replacement, so no NumPy behaviour changes.
    """
    restored = []
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
        restored.append("row_stack")
    return restored


def load_cuda():
    """The ``numba.cuda`` module, or ValueError with one line saying why it is unusable."""
    restore_numpy_aliases_for_numba_cuda()
    try:
        from numba import cuda
    except Exception as exc:    # e.g. numba-cuda built against an older NumPy API
        raise ValueError(f"device: cuda: numba's CUDA target failed to import "
                         f"({type(exc).__name__}: {exc}); NumPy is {np.__version__}; install a "
                         f"numba-cuda release that supports it ({GPU_INSTALL_HINT})") from None
    return load_cuda_from(cuda)


def load_cuda_from(cuda):
    """Check that a ``numba.cuda``-like module has a usable GPU (or is the simulator)."""
    try:
        available = cuda.is_available()
    except Exception as exc:
        raise ValueError(f"device: cuda: the CUDA driver failed ({type(exc).__name__}: "
                         f"{exc})") from None
    if not available:
        raise ValueError("device: cuda: no CUDA GPU found (use --device cpu, or set "
                         "NUMBA_ENABLE_CUDASIM=1 to run the CUDA path in Numba's simulator)")
    return cuda


def is_device_array(a) -> bool:
    """A GPU array (CuPy, Numba device array, anything with __cuda_array_interface__)."""
    return hasattr(a, "__cuda_array_interface__") or type(a).__name__ == "FakeCUDAArray"


def _blocks(n: int, per_block: int) -> int:
    return max(1, -(-n // per_block))


class GpuStoredWeights(StoredOperand):
    """A stored matrix whose values live on the GPU (validated and encoded there).

    Built by ``Macro.store_weights`` on a CUDA macro given a device array.  ``tile`` gives the
    host encoding of a tile for the CPU paths (cycle level, cell-mismatch tables).
    """

    def __init__(self, gpu: GpuMacro, W, w_format):
        check_stored_format(w_format)
        if len(W.shape) != 2 or 0 in W.shape:
            raise ValueError(f"W: expected a non-empty 2-D array, got shape {tuple(W.shape)}")
        self.macro = gpu.macro
        self.gpu = gpu
        self.w_format = w_format
        self.shape = tuple(int(s) for s in W.shape)
        self.plan = plan_tiles(gpu.macro.config, self.shape[0], self.shape[1], w_format)
        self.units = gpu.encode(W, w_format, "W")          # int64 (M, N) on the GPU
        self._device_packed = None
        self._host: StoredWeights | None = None

    def host(self) -> StoredWeights:
        """The same matrix as a host StoredWeights (copied back once, for the CPU paths)."""
        if self._host is None:
            values = self.units.copy_to_host()
            self._host = StoredWeights(self.macro, values, self.w_format)
        return self._host

    def tile(self, t: int, u: int, columns: bool = True) -> dict:
        return self.host().tile(t, u, columns)

    def capacitance_table(self, t: int, u: int, tile: dict | None = None,
                          level_bits: int = 1) -> np.ndarray:
        return self.host().capacitance_table(t, u, tile, level_bits)

    def device_packed(self):
        """uint64 (T, WT, Kw, N) device array: every tile's bit-plane columns, packed by rows."""
        if self._device_packed is None:
            self._device_packed = self.gpu.pack_stored(self.units, False, self.w_format,
                                                       self.plan)
        return self._device_packed


class GpuMacro:
    """The CUDA side of one Macro: device copies of its static tables and the kernels."""

    def __init__(self, macro):
        self.cuda = load_cuda()
        from imcsim.kernels.cuda_mvm import KERNELS
        self.k = KERNELS
        self.macro = macro
        #: "popcount" or "gemm" (``COUNT_PATHS``); speed only, the results are the same
        self.count_path = count_path_from_environment()
        self._tables: dict = {}
        # packed device copies of host StoredWeights, dropped with them
        self._packed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # --- transfers ------------------------------------------------------------------------
    def to_device(self, a):
        """A C-contiguous Numba device view of ``a`` (copied to the GPU if it is on the host)."""
        if not is_device_array(a):
            return self.cuda.to_device(np.ascontiguousarray(a))
        if not hasattr(a, "__cuda_array_interface__"):
            return a                                       # the simulator's device arrays
        view = self.cuda.as_cuda_array(a)
        if not view.is_c_contiguous():
            import cupy  # a strided CuPy view: compact it
            view = self.cuda.as_cuda_array(cupy.ascontiguousarray(a))
        return view

    def tables(self, top_level: int = 1):
        """Device copies of the chip's column tables (comparator offsets in the level units
        of a format with top row level ``top_level``), uploaded once each."""
        if top_level not in self._tables:
            m = self.macro
            self._tables[top_level] = tuple(self.to_device(a) for a in (
                m.column_capacitance, m.cdac_weights, m.cdac_totals,
                m.comparator_offsets_in_levels(top_level)))
        return self._tables[top_level]

    # --- encoding and packing on the GPU ---------------------------------------------------
    def encode(self, values, fmt, name: str):
        """Validate a device array of ``fmt`` values; int64 units on the device (same shape)."""
        dtype = np.dtype(values.dtype)
        if dtype.kind not in "iuf" or dtype == np.float16:
            raise TypeError(f"{name}: expected an integer or float dtype, got {dtype}")
        if not dtype.isnative:
            raise TypeError(f"{name}: byte order {dtype.byteorder!r} is not native")
        flat = self.to_device(values).reshape(-1) if len(values.shape) != 1 else \
            self.to_device(values)
        units = self.cuda.device_array(flat.shape[0], dtype=np.int64)
        bad = self.cuda.to_device(np.zeros(1, dtype=np.int64))
        radix4 = isinstance(fmt, Radix4Format)
        max_exponent2 = 2 * (fmt.exponent_planes - 1) if radix4 else 0
        lim = 0 if radix4 else fmt.max_value
        self.k["encode_units"][_blocks(flat.shape[0], 256), 256](
            flat, radix4, float(fmt.denominator), max_exponent2, -lim, lim, units, bad)
        n_bad = int(bad.copy_to_host()[0])
        if n_bad:
            if radix4:
                raise ValueError(f"{name}: {fmt.spec()} holds only 0 and +/-4**e for e in "
                                 f"[{-fmt.exponent_bias}, {fmt.exponent_bias}]; {n_bad} values "
                                 "are not")
            raise ValueError(f"{name}: {fmt.spec()} holds integers in [{-lim}, {lim}]; {n_bad} "
                             "values are not")
        return units.reshape(tuple(values.shape))

    def pack_stored(self, values, transposed: bool, w_format, plan):
        """Device uint64 (T, WT, Kw, N) bit-plane columns of a stored operand's every tile.

        ``values``: the operand's integer values, (M, N) or (N, M) when ``transposed``.
        """
        from imcsim.formats import format_lookup_tables
        offset, pattern, _, _, _ = format_lookup_tables(w_format, False)
        words_per_tile = -(-plan.rows // 64)
        kw = w_format.n_planes
        out = self.cuda.device_array((plan.row_tiles, words_per_tile, kw, plan.outputs),
                                     dtype=np.uint64)
        self.k["pack_stored"][(_blocks(plan.row_tiles * words_per_tile, 1),
                               _blocks(kw * plan.outputs, 64)), (1, 64)](
            self.to_device(values), transposed, offset, self.to_device(pattern), plan.rows, out)
        return out

    def stored_packed(self, weights):
        """Device (T, WT, Kw, N) packed columns of any stored operand (cached if reused)."""
        if isinstance(weights, GpuStoredWeights):
            return weights.device_packed()
        cached = self._packed.get(weights)
        if cached is None:
            cached = self.pack_stored(weights.values_t, True, weights.w_format, weights.plan)
            if weights.cache:
                self._packed[weights] = cached
        return cached

    # --- the GEMM count path ----------------------------------------------------------------
    @staticmethod
    def gemm_chunks(batch: int, sub_planes: int, rows: int, columns: int):
        """[b_lo, b_hi) chunks of the batch whose signed inputs (rows floats per sub-plane)
        and dot products (columns floats per sub-plane) each fit ``GEMM_CHUNK_BYTES``."""
        return vector_chunks(batch, 4 * sub_planes * max(rows, columns), GEMM_CHUNK_BYTES)

    def signed_stored(self, wbits, t: int, rows: int, columns: int):
        """Row tile t of the stored operand as +/-1 float32 (rows, columns) on the device."""
        out = self.cuda.device_array((rows, columns), dtype=np.float32)
        self.k["signed_stored"][(_blocks(rows // 64, 1), _blocks(columns, 64)), (1, 64)](
            wbits, t, out)
        return out

    def signed_dots(self, xbits, xmask, word_lo: int, b_lo: int, b_hi: int, signed_w):
        """float32 (B' * P * S, N * Kw): the signed dot products of vectors [b_lo, b_hi) of
        the row tile whose words start at ``word_lo``, by the array library's GEMM.

        Exact: the operands are +1, -1 and 0, and every partial sum is an integer of
        magnitude at most the tile's rows (< 2**24), so float32 (and TF32, whose 10-bit
        mantissa holds +/-1 exactly) sums them without rounding in any order.  On a GPU the
        product is CuPy's (cuBLAS, with TF32 tensor cores when CuPy allows them:
        ``CUPY_TF32=1``); under Numba's CUDA simulator NumPy's stands in.
        """
        sub_planes = xbits.shape[1]
        rows = signed_w.shape[0]
        signed_x = self.cuda.device_array(((b_hi - b_lo) * sub_planes, rows), dtype=np.float32)
        self.k["signed_inputs"][(_blocks(signed_x.shape[0], 32), _blocks(rows // 64, 1)),
                                (32, 1)](xbits, xmask, word_lo, b_lo, signed_x)
        if simulator_enabled():
            return self.cuda.to_device(signed_x.copy_to_host() @ signed_w.copy_to_host())
        import cupy
        self.cuda.synchronize()          # Numba's launches before CuPy's stream reads them
        dots = cupy.asarray(signed_x) @ cupy.asarray(signed_w)
        cupy.cuda.get_current_stream().synchronize()     # ... and before Numba's next launch
        return self.cuda.as_cuda_array(dots)

    # --- the MVM ---------------------------------------------------------------------------
    def mvm(self, X, W, x_format, w_format=None, *, seed=0, vref=None, vector_offset=0,
            return_codes=False, out_scale=None, out_offset=None):
        macro = self.macro
        c, nmc = macro.config, macro.config.nmc
        x_on_device = is_device_array(X)
        if is_device_array(W):
            if w_format is None:
                raise TypeError("w_format: required when W is an array")
            W = GpuStoredWeights(self, W, w_format)
            w_format = None
        if x_on_device:
            if len(X.shape) != 2 or 0 in X.shape:
                raise ValueError(f"X: expected a non-empty 2-D array, got shape {tuple(X.shape)}")
            if not isinstance(x_format, (BinaryFormat, Radix4Format)):
                raise TypeError(f"x_format: expected BinaryFormat or Radix4Format, got {x_format!r}")
            # everything but X's values is validated on the host, with a placeholder row
            prep = macro.prepare(np.zeros((1, X.shape[1])), W, x_format, w_format, seed=seed,
                                 vref=vref, vector_offset=vector_offset, out_scale=out_scale,
                                 out_offset=out_offset)
            x_units = self.encode(X, x_format, "X")
            prep = dataclasses.replace(prep, x_units=x_units)       # the real batch
        else:
            prep = macro.prepare(X, W, x_format, w_format, seed=seed, vref=vref,
                                 vector_offset=vector_offset, out_scale=out_scale,
                                 out_offset=out_offset)
            x_units = self.to_device(prep.x_units)
        plan = prep.plan
        B = int(X.shape[0])
        P, Kw, N = prep.n_planes, plan.weight_planes, plan.outputs
        S = prep.level_bits                   # level-bit sub-planes per cycle (4.8)
        top_level = prep.x_format.top_level
        cuda, k = self.cuda, self.k
        analog, _ = macro.analog_constants(c.columns, prep.vref, top_level)
        col_total_cap, cdac, cdac_total, cmp_offset = self.tables(top_level)
        pattern = self.to_device(prep.pattern_lut)
        gate = self.to_device(prep.gate_lut)
        acc = cuda.to_device(np.zeros((B, N), dtype=np.int64))
        T, U = plan.row_tiles, plan.col_tiles
        pw_x = self.to_device(prep.x_format.plane_weights)
        pw_w = self.to_device(prep.w_format.plane_weights)
        code_offsets = self.to_device(macro.code_offsets[0])
        tpb = CUDA_THREADS_PER_BLOCK
        # every row tile's input sub-planes at once: (B, P * S, T * WT) words, active rows
        # (T, B, P * S); with S > 1 also A and the rows driven per cycle (T, B, P)
        words = T * (-(-plan.rows // 64))
        xbits = cuda.device_array((B, P * S, words), dtype=np.uint64)
        xmask = cuda.device_array((B, P * S, words), dtype=np.uint64)
        active = cuda.to_device(np.zeros((T, B, P * S), dtype=np.int64))
        driven = cuda.to_device(np.zeros((T, B, P), dtype=np.int64)) if S > 1 else active
        k["pack_inputs"][(_blocks(B, 1), _blocks(words, 32)), (1, 32)](
            x_units, prep.lut_offset, pattern, gate, prep.all_active, plan.rows, S, xbits,
            xmask, active, driven)
        level_sum = active
        if S > 1:
            level_sum = cuda.device_array((T, B, P), dtype=np.int64)
            k["level_sums"][(_blocks(T * B, 8), _blocks(P, 16)), (8, 16)](active, S, level_sum)
        fs = cuda.device_array((T, B, P), dtype=np.int64)
        scale = cuda.device_array((T, B, P), dtype=np.int64)
        shift = cuda.device_array((T, B, P), dtype=np.int64)
        k["cycle_constants"][(_blocks(T * B, 8), _blocks(P, 16)), (8, 16)](
            level_sum, *vref_arguments(prep.vref), c.top_code, nmc.scale_frac_bits,
            c.adc_rounding.value == "half_up", fs, scale, shift)
        wbits = self.stored_packed(prep.weights)
        codes = (cuda.device_array((T, B, P, N * Kw), dtype=np.int64) if return_codes
                 else cuda.device_array((1, 1, 1, 1), dtype=np.int64))
        clipped_dev = cuda.to_device(np.zeros((T, U), dtype=np.int64))
        high_dev = cuda.to_device(np.zeros((T, U), dtype=np.int64))
        no_caps = cuda.to_device(np.zeros((S, 2, 1, 1), dtype=np.int64))

        # the CPU kernel's named tuples, holding device arrays (docs/architecture.md)
        cyc = CycleInputs(xbits, xmask, active, level_sum, fs, scale, shift, S)
        tables = AnalogTables(col_total_cap, cdac, cdac_total, cmp_offset)
        nmc_params = macro.nmc_params(prep, plan.outputs_per_tile)._replace(
            code_offsets=code_offsets, pw_x=pw_x, pw_w=pw_w)        # their device copies
        outputs = MvmOutputs(return_codes, codes, clipped_dev, high_dev, acc)
        no_wcols = self.to_device(np.zeros((0, 0), dtype=np.uint8))

        no_dots = cuda.device_array((0, 0, 0), dtype=np.float32)

        def launch(t_lo, t_hi, n_lo, n_hi, caps, b_lo=0, b_hi=B, dots=no_dots):
            span = LaunchSpan(np.uint64(prep.seed), prep.vector_offset, t_lo, t_hi, n_lo, n_hi,
                              b_lo, b_hi)
            k["tile_mvm"][(_blocks(n_hi - n_lo, tpb), min(b_hi - b_lo, MAX_GRID_Y)), (tpb, 1)](
                cyc, StoredTile(wbits, no_wcols, caps), tables, analog, nmc_params, span,
                outputs, dots)

        if not analog.charge_table and self.count_path == "gemm":
            # row tiles in order (the accumulators carry over), each in chunks of vectors
            words_per_tile = -(-plan.rows // 64)
            for t in range(T):
                signed_w = self.signed_stored(wbits, t, words_per_tile * 64, N * Kw)
                for b_lo, b_hi in self.gemm_chunks(B, P * S, words_per_tile * 64, N * Kw):
                    dots = self.signed_dots(xbits, xmask, t * words_per_tile, b_lo, b_hi,
                                            signed_w)
                    launch(t, t + 1, 0, N, no_caps, b_lo, b_hi, dots.reshape(
                        (b_hi - b_lo, P * S, N * Kw)))
        elif not analog.charge_table:
            launch(0, T, 0, N, no_caps)            # the whole MVM in one launch
        else:
            # each tile has its own charge table; row tiles stay in order per output
            for t in range(T):
                for u in range(U):
                    n0, n1 = plan.output_range(u)
                    launch(t, t + 1, n0, n1,
                           self.to_device(prep.weights.capacitance_table(t, u, None, S)))
        active_rows = driven.copy_to_host()
        level_sum_host = active_rows if S == 1 else level_sum.copy_to_host()
        full_scale = fs.copy_to_host()
        clipped = clipped_dev.copy_to_host()
        high_columns = high_dev.copy_to_host()
        codes_all = (codes.copy_to_host().reshape(T, B, P, N, Kw).astype(np.uint16)
                     if return_codes else None)
        y_int = cuda.device_array((B, N), dtype=np.int64)
        has_scale, has_offset = prep.out_scale is not None, prep.out_offset is not None
        empty = cuda.to_device(np.zeros(1, dtype=np.int64))
        k["output_stage"][(_blocks(N, tpb), min(B, MAX_GRID_Y)), (tpb, 1)](
            acc, prep.acc_frac_bits - nmc.out_frac_bits, ROUNDING_CODES[nmc.out_rounding],
            nmc.out_bits, has_scale, self.to_device(prep.out_scale) if has_scale else empty,
            nmc.out_scale_frac_bits, has_offset,
            self.to_device(prep.out_offset) if has_offset else empty, y_int)
        denominator = float(1 << nmc.out_frac_bits)
        if x_on_device and not simulator_enabled():
            self.cuda.synchronize()     # Numba's launches before CuPy's (maybe other) stream
            import cupy
            y_int_out = cupy.asarray(y_int)
            y = y_int_out.astype(cupy.float64) / denominator
            codes_out = None if codes_all is None else cupy.asarray(codes_all)
        else:
            y_int_out = y_int.copy_to_host()
            y = y_int_out.astype(np.float64) / denominator
            codes_out = codes_all
        counters = MvmCounters(active_rows, level_sum_host, full_scale, clipped, high_columns,
                               codes_out)
        return macro.result(prep, y, y_int_out, counters, "fast")
