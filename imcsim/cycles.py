"""The cycle-level model: one generator of array cycles for ``mvm_traced`` and the golden model.

``CycleStepper`` walks a prepared MVM one array cycle at a time in the macro's order (row tile
``t``, column tile ``u``, vector ``b``, plane ``p``): each cycle drives the rows of one column
group, counts, shares charge and converts every column with every SAR step recorded
(``ColumnGroup.array_cycle``), then runs the NMC step (``nmc.nmc_cycle``).  ``mvm_traced``
drains it into a ``CycleSink`` (the HDF5 trace of ``imcsim.verify.trace`` is one: this module
knows only the protocol); ``imcsim.verify.golden.GoldenModel`` hands its records out one by
one.
Both therefore compute with the same code, and with the same hardware functions as the fast
paths (``kernels.hw``).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from imcsim.cima import ColumnGroup, CycleOutcome
from imcsim.counters import MvmCounters
from imcsim.kernels.cycle import column_scales, tile_cycles
from imcsim.kernels.params import NoiseKey, TraceRecords
from imcsim.kernels.targets import CPU as hw
from imcsim.nmc import nmc_cycle
from imcsim.tuning import vector_chunks


@dataclass
class CycleRecord:
    """One array cycle: its place, stimulus, analog outcome and NMC step.

    row_input : uint8 (R,) row-driver bits; row_mask : bool (R,) active rows; row_level :
    uint8 (R,) each row's DAC level (1 on the active rows of binary-row formats);
    active_rows : rows driven; level_sum : A, the sum of the levels (docs/hardware-model.md
    4.8).
    nmc_steps : int64 (G, Kw) the group's accumulators after each weight plane.
    first_of_group : the accumulators of this group and vector start from 0 in this cycle;
    group_done : this group's outputs of this vector are final after this cycle;
    skipped : the controller skipped this all-masked cycle (``skip_masked_cycles``): the
    outcome is all zero and ``nmc_steps`` repeat the unchanged accumulators.
    """

    t: int
    u: int
    b: int
    vector: int
    plane: int
    tile_cycle: int
    row_input: np.ndarray
    row_mask: np.ndarray
    active_rows: int
    full_scale: int
    scale_fx: int
    x_plane_weight: int
    outcome: CycleOutcome
    nmc_steps: np.ndarray
    output_range: tuple
    first_of_group: bool
    group_done: bool
    vector_done: bool
    skipped: bool = False
    row_level: np.ndarray | None = None
    level_sum: int = 0


class CycleStepper:
    """Evaluate a prepared MVM cycle by cycle, keeping the MVM's accumulators and counters.

    Attributes filled as cycles run: ``acc`` int64 (B, N) and ``counters``
    (``imcsim.counters.MvmCounters``, codes included), the layout every path fills.
    """

    def __init__(self, macro, prep):
        self.macro, self.prep = macro, prep
        plan = prep.plan
        B, P = prep.batch, prep.n_planes
        self.acc = np.zeros((B, plan.outputs), dtype=np.int64)
        self.counters = MvmCounters.zeros(plan, B, P, codes=True)
        self._groups: dict = {}

    @property
    def n_cycles(self) -> int:
        plan = self.prep.plan
        return plan.row_tiles * plan.col_tiles * self.prep.batch * self.prep.n_planes

    def group(self, t: int, u: int) -> ColumnGroup:
        if (t, u) not in self._groups:
            self._groups[(t, u)] = ColumnGroup(self.macro, self.prep.weights, t, u,
                                               self.prep.level_bits,
                                               self.prep.x_format.top_level)
        return self._groups[(t, u)]

    def cycles(self) -> Iterator[CycleRecord]:
        """Every array cycle in the macro's order; the counters are complete at the end."""
        prep, plan = self.prep, self.prep.plan
        nmc = self.macro.config.nmc
        skip_masked = self.macro.config.skip_masked_cycles
        high_scale = int(hw.nmc_scale(prep.vref.dual_high, self.macro.config.top_code,
                                      nmc.scale_frac_bits))
        pw_x, pw_w = prep.x_format.plane_weights, prep.w_format.plane_weights
        top = self.macro.config.top_code
        code_offsets = self.macro.code_offsets[0]
        B, P, Kw = prep.batch, prep.n_planes, plan.weight_planes
        S = prep.level_bits
        for t in range(plan.row_tiles):
            packed = prep.pack_tile(t)
            row_bits, row_active, row_levels = prep.row_signals(t)
            counters = self.counters
            counters.note_row_tile(t, packed)
            for u in range(plan.col_tiles):
                group = self.group(t, u)
                g0, g1 = group.n0, group.n1
                for b in range(B):
                    gb = prep.vector_offset + b
                    for p in range(P):
                        a = int(packed.level_sum[b, p])
                        fs = int(packed.full_scale[b, p])
                        scale = int(packed.scale[b, p])
                        skipped = bool(hw.cycle_skipped(a, skip_masked))
                        if skipped:     # not run: nothing converted, the NMC holds
                            out = group.skipped_cycle()
                            steps = np.repeat(self.acc[b, g0:g1, None], Kw, axis=1)
                        else:
                            subs = slice(p * S, (p + 1) * S)     # the level-bit sub-planes
                            out = group.array_cycle(packed.xbits[b, subs],
                                                    packed.xmask[b, subs],
                                                    packed.sub_active[b, subs],
                                                    fs, int(packed.threshold_shift[b, p]),
                                                    prep.seed, gb, p, prep.vref)
                            # each column's F / L: they differ under the per-column dual Vref
                            column_fs = np.ascontiguousarray(out.full_scale, dtype=np.int64)
                            column_scale = np.empty(column_fs.shape[0], dtype=np.int64)
                            column_scales(column_fs, fs, scale, high_scale, column_scale)
                            self.acc[b, g0:g1], steps = nmc_cycle(
                                self.acc[b, g0:g1], out.code, a, column_scale, column_fs,
                                int(pw_x[p]), pw_w, nmc, top, code_offsets)
                        counters.clipped[t, u] += out.clipped
                        counters.high_columns[t, u] += out.high
                        counters.codes[t, b, p, g0:g1, :] = out.code.reshape(-1, Kw)
                        last_t, last_p = t == plan.row_tiles - 1, p == P - 1
                        yield CycleRecord(
                            t=t, u=u, b=b, vector=gb, plane=p, tile_cycle=b * P + p,
                            row_input=row_bits[b, p], row_mask=row_active[b, p],
                            active_rows=int(packed.active_rows[b, p]), full_scale=fs,
                            scale_fx=scale,
                            x_plane_weight=int(pw_x[p]), outcome=out, nmc_steps=steps,
                            output_range=(g0, g1), first_of_group=t == 0 and p == 0,
                            group_done=last_t and last_p, skipped=skipped,
                            vector_done=last_t and last_p and u == plan.col_tiles - 1,
                            row_level=row_levels[b, p], level_sum=a)

    def result(self):
        """The MvmResult of the cycles run so far (call after ``cycles`` is exhausted)."""
        return self.macro.finish(self.prep, self.acc, self.counters, "cycle")


class CycleSink(Protocol):
    """Where the cycle-level path sends the cycles it steps (a trace writer, a monitor)."""

    def selects(self, rec: CycleRecord, n_planes: int) -> bool:
        """Whether this cycle is to be recorded (``n_planes``: the streamed format's P)."""

    def add(self, rec: CycleRecord) -> None:
        """Record one selected cycle."""

    def close(self, result) -> None:
        """The MVM finished with ``result`` (an ``MvmResult``): complete the record."""

    def abort(self) -> None:
        """The MVM failed or was interrupted: leave no partial output."""


@dataclass
class CycleBlock:
    """The recorded cycles of tile operation (t, u) for vectors [b0, b1) of the call, from
    the compiled cycle-level kernel, in the macro's order (vector, then plane).

    vectors, planes : int64 (n,) each record's vector (within the call) and plane.
    records : ``kernels.params.TraceRecords`` (rows n, the sink's widths).
    row_input, row_level : uint8 (n, R); row_mask : bool (n, R)
    (``PreparedMvm.record_row_signals``).
    active_rows, level_sum, full_scale : int64 (n,).
    n_columns : used columns of the tile; output_range : its outputs (g0, g1).
    """

    t: int
    u: int
    vectors: np.ndarray
    planes: np.ndarray
    records: TraceRecords
    row_input: np.ndarray
    row_mask: np.ndarray
    row_level: np.ndarray
    active_rows: np.ndarray
    level_sum: np.ndarray
    full_scale: np.ndarray
    n_columns: int
    output_range: tuple


class BlockSink(CycleSink, Protocol):
    """A sink that takes whole blocks of cycles from the compiled path (the HDF5 trace)."""

    def block_slots(self, t: int, u: int, b0: int, b1: int, n_planes: int) -> np.ndarray:
        """bool (b1 - b0, P): which cycles of vectors [b0, b1) of tile (t, u) it records."""

    def new_records(self, n: int) -> TraceRecords:
        """Zeroed record arrays for n cycles, in the sink's widths and dtypes."""

    def add_block(self, block: CycleBlock) -> None:
        """Record one block."""


class NoRecords:
    """The block sink of a cycle-level run that records nothing (``mvm_traced`` without a
    trace): the compiled path's results and counters only."""

    def __init__(self, macro, prep) -> None:
        plan = prep.plan
        outputs = min(plan.outputs_per_tile, plan.outputs)
        self.widths = (outputs * plan.weight_planes, macro.config.adc_bits, outputs,
                       plan.weight_planes)

    def block_slots(self, t, u, b0, b1, n_planes):
        return np.zeros((b1 - b0, n_planes), dtype=bool)

    def new_records(self, n):
        return new_trace_records(n, *self.widths)

    def add_block(self, block):
        raise AssertionError("NoRecords selects no cycle")


def new_trace_records(n: int, columns: int, adc_bits: int, outputs: int,
                      weight_planes: int) -> TraceRecords:
    """Zeroed ``TraceRecords`` for n cycles of tiles with ``columns`` columns and ``outputs``
    outputs, in the HDF5 trace's dtypes (docs/trace-format.md), so that a run without a
    trace uses the compiled kernel a traced run does (``tests/test_trace.py`` checks them
    against the trace's datasets)."""
    return TraceRecords(np.zeros((n, columns), np.int32), np.zeros((n, columns), np.int64),
                        np.zeros((n, columns, adc_bits), np.uint16),
                        np.zeros((n, columns, adc_bits), np.uint8),
                        np.zeros((n, columns), np.uint16),
                        np.zeros((n, outputs, weight_planes), np.int64))


#: the compiled path's vector blocks hold about this many bytes of records (memory bound)
BLOCK_RECORD_BYTES = 32 << 20


def _record_bytes(records: TraceRecords) -> int:
    return sum(a[:1].nbytes for a in records)


def run_cycle_blocks(macro, prep, sink: BlockSink):
    """The cycle-level path at compiled speed: every tile operation's cycles run in vector
    blocks through ``kernels.cycle.tile_cycles`` (the per-cycle stepper's functions, in
    parallel over vectors), and only the cycles the sink selects are materialised.  Memory
    stays bounded by ``BLOCK_RECORD_BYTES`` of records plus the row tile's packed operand.

    Returns the ``MvmResult``, bit-identical to ``CycleStepper``'s and the fast path's.
    """
    plan = prep.plan
    B, P, S = prep.batch, prep.n_planes, prep.level_bits
    vref = prep.vref
    acc = np.zeros((B, plan.outputs), dtype=np.int64)
    counters = MvmCounters.zeros(plan, B, P, codes=True)
    nmc = macro.nmc_params(prep, plan.outputs_per_tile)
    blocks = vector_chunks(B, _record_bytes(sink.new_records(1)) * P, BLOCK_RECORD_BYTES)
    for t in range(plan.row_tiles):
        packed = prep.pack_tile(t)
        cyc = packed.cycle_inputs(S)
        counters.note_row_tile(t, packed)
        for u in range(plan.col_tiles):
            group = ColumnGroup(macro, prep.weights, t, u, S, prep.x_format.top_level)
            analog = group.analog_at(vref)
            key = NoiseKey(np.uint64(prep.seed), t, u, prep.vector_offset)
            for b0, b1 in blocks:
                selected = sink.block_slots(t, u, b0, b1, P)
                n = int(selected.sum())
                slot = np.full(selected.shape, -1, dtype=np.int64)
                slot[selected] = np.arange(n)
                records = sink.new_records(n)
                clipped = np.zeros(b1 - b0, dtype=np.int64)
                high = np.zeros(b1 - b0, dtype=np.int64)
                tile_cycles(cyc, group.stored, group.tables, analog, nmc, key, b0, b1, slot,
                            acc, group.n0, counters.codes[t], records, clipped, high)
                counters.clipped[t, u] += int(clipped.sum())
                counters.high_columns[t, u] += int(high.sum())
                if n:
                    rows, planes = np.nonzero(selected)
                    # the row drivers of the selected cycles only
                    bits, active, levels = prep.record_row_signals(t, rows + b0, planes)
                    sink.add_block(CycleBlock(
                        t, u, rows + b0, planes, records, bits, active, levels,
                        packed.active_rows[rows + b0, planes],
                        packed.level_sum[rows + b0, planes],
                        packed.full_scale[rows + b0, planes], group.n_columns,
                        (group.n0, group.n1)))
    return macro.finish(prep, acc, counters, "cycle", overwrite_acc=True)


def run_cycle_level(macro, prep, sink: CycleSink | None = None):
    """Evaluate a prepared MVM cycle by cycle; every cycle the sink selects goes to it.

    Without a sink, or with one that has ``add_block`` (``BlockSink``: the HDF5 trace), the
    compiled path runs (``run_cycle_blocks``); any other sink gets one ``CycleRecord`` per
    cycle from the ``CycleStepper``.  Returns the ``MvmResult`` (bit-identical to the fast path's).  The
    sink is closed with the result, or aborted if anything fails on the way (an interrupt
    included).
    """
    P = prep.n_planes
    try:
        if sink is None:
            result = run_cycle_blocks(macro, prep, NoRecords(macro, prep))
        elif hasattr(sink, "add_block"):
            result = run_cycle_blocks(macro, prep, sink)
        else:
            stepper = CycleStepper(macro, prep)
            for rec in stepper.cycles():
                if sink.selects(rec, P):
                    sink.add(rec)
            result = stepper.result()
        if sink is not None:
            sink.close(result)
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    return result
