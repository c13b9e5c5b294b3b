"""Reference model for verification: step one array cycle at a time, get the expected response.

``GoldenModel`` is a thin stateful wrapper around the cycle generator of ``imcsim.cycles`` (the
one ``Macro.mvm_traced`` drains; it re-implements nothing): it holds the stored matrix, takes input vectors, and on every ``step()``
returns the stimulus and the expected response of one array cycle -- row inputs and masks, the
active-row count, the full scale, every column's XNOR count, SAR trials and decisions, ADC code,
and the NMC accumulators -- plus the output registers ``y_int`` when a vector finishes.  Its
results are those of ``Macro.mvm`` bit for bit (tests/test_golden.py).

Order of the array cycles.  Vectors are taken in batches: ``load_vector``/``load_vectors`` queue
vectors, and the first ``step()`` after loading turns everything queued into one batch, which
is then stepped in the macro's own order -- row tile ``t``, column tile ``u``, vector ``b``,
plane ``p`` (the order of ``Macro.mvm_traced`` and its trace).  Loading one vector and stepping
it to the end before loading the next gives the vector-major order a streaming scoreboard
wants; the per-output accumulation order (t, then p, then weight plane q) is the same in both,
so the results are identical.

``compare_cycle`` / ``assert_cycle`` turn an expected record and what the device produced into
mismatch messages that name the cycle, vector, plane and column (docs/golden-model.md).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from imcsim.cima import ColumnGroup
from imcsim.config import MacroConfig
from imcsim.cycles import CycleStepper
from imcsim.formats import BinaryFormat, parse_format
from imcsim.macro import Macro, StoredWeights
from imcsim.nmc import accumulator_fraction_bits, output_stage

#: per-cycle scalar signals, per-column signals (C,), per-output signals (G,)
SCALAR_SIGNALS = ("active_rows", "full_scale", "level_sum")
COLUMN_SIGNALS = ("column_count", "code", "sar_decision", "column_value")
OUTPUT_SIGNALS = ("nmc_acc", "y_int")
SIGNALS = SCALAR_SIGNALS + COLUMN_SIGNALS + OUTPUT_SIGNALS


def _format(fmt):
    return parse_format(fmt) if isinstance(fmt, str) else fmt


def pack_decisions(sar_decision) -> np.ndarray:
    """SAR decisions (..., Nb), MSB step first, as one integer per column (..., ).

    Bit ``Nb-1-s`` holds the decision of step ``s``: the same bit the step tried, so an ideal
    conversion's packed decisions equal its code.
    """
    d = np.asarray(sar_decision, dtype=np.int64)
    nb = d.shape[-1]
    return (d << np.arange(nb - 1, -1, -1, dtype=np.int64)).sum(axis=-1)


class GoldenModel:
    """Cycle-by-cycle expected behaviour of the macro for one stored matrix.

    Parameters
    ----------
    config : MacroConfig or Macro
    W : (M, N) integer array of ``w_format`` values, or a StoredWeights of the same macro.
    w_format : BinaryFormat or spec string (``"binary:5"``).
    x_format : BinaryFormat / Radix4Format or spec string.
    seed : int  keys the dynamic noise (as in ``Macro.mvm``).
    vref : VrefConfig or None  overrides the config's Vref mode.
    vector_offset : int  global index of the first vector loaded (noise keys use it).
    """

    def __init__(self, config, W, w_format, x_format, *, seed: int = 0, vref=None,
                 vector_offset: int = 0):
        self.macro = config if isinstance(config, Macro) else Macro(config)
        self.config: MacroConfig = self.macro.config
        self.w_format = _format(w_format)
        self.x_format = _format(x_format)
        if not isinstance(self.w_format, BinaryFormat):
            raise TypeError(f"w_format: the stored operand must be a BinaryFormat, "
                            f"got {self.w_format!r}")
        self.weights = W if isinstance(W, StoredWeights) else self.macro.store_weights(
            np.asarray(W), self.w_format)
        self.plan = self.weights.plan
        self.seed = seed
        self.vref = vref
        self.next_vector = int(vector_offset)     # global index of the next vector loaded
        self.cycle = 0                            # global index of the next array cycle
        self._pending: list[np.ndarray] = []
        self._batch = None
        self._stepper: CycleStepper | None = None
        self._finished_y: list[np.ndarray] = []
        self._finished_vectors: list[int] = []
        # validate formats and seed once, with a dummy vector
        self._prepare(np.zeros((1, self.plan.inner)), 0)

    # --- geometry -----------------------------------------------------------------------
    @property
    def n_planes(self) -> int:
        """Array cycles per vector and tile operation (P)."""
        return self.x_format.n_planes

    @property
    def cycles_per_vector(self) -> int:
        """Array cycles one vector costs over all tiles: T * U * P."""
        return self.plan.row_tiles * self.plan.col_tiles * self.n_planes

    @property
    def x_plane_weights(self) -> np.ndarray:
        return self.x_format.plane_weights

    @property
    def w_plane_weights(self) -> np.ndarray:
        return self.w_format.plane_weights

    @property
    def acc_frac_bits(self) -> int:
        """Fraction bits of the NMC accumulator: S + log2(den_x) + log2(den_w)."""
        return accumulator_fraction_bits(self.config.nmc, self.x_format, self.w_format)

    def output_stage(self, acc) -> np.ndarray:
        """Accumulators (..., G or N) -> output registers y_int (hardware-model.md 4.6)."""
        acc = np.asarray(acc, dtype=np.int64)
        return output_stage(acc[None] if acc.ndim == 1 else acc, self.config.nmc,
                            self.acc_frac_bits).reshape(acc.shape)

    @property
    def pending_cycles(self) -> int:
        """Array cycles left in the current batch plus those of the queued vectors."""
        left = 0 if self._batch is None else self._batch["cycles_left"]
        return left + len(self._pending) * self.cycles_per_vector

    def group(self, t: int, u: int) -> ColumnGroup:
        """The column group of tile operation (t, u) (stored bits, analog constants)."""
        if self._stepper is None:
            self._stepper = CycleStepper(self.macro, self._prepare(
                np.zeros((1, self.plan.inner)), 0))
        return self._stepper.group(t, u)

    def stored_columns(self, t: int = 0, u: int = 0) -> np.ndarray:
        """uint8 (R, C): the bits of tile (t, u) as written into the array (row r, column c)."""
        return self.weights.tile(t, u)["columns"]

    # --- stimulus -----------------------------------------------------------------------
    def _prepare(self, X, offset):
        return self.macro.prepare(X, self.weights, self.x_format, seed=self.seed, vref=self.vref,
                                  vector_offset=offset)

    def load_vector(self, x) -> int:
        """Queue one input vector (M values of x_format); returns its global vector index."""
        x = np.asarray(x)
        if x.ndim != 1 or x.shape[0] != self.plan.inner:
            raise ValueError(f"x: expected a vector of {self.plan.inner} values, got shape "
                             f"{x.shape}")
        self.x_format.validate(x, "x")
        self._pending.append(x)
        self.next_vector += 1
        return self.next_vector - 1

    def load_vectors(self, X) -> range:
        """Queue every row of X (B x M); returns their global vector indices."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D array, got shape {X.shape}")
        first = self.next_vector
        for x in X:
            self.load_vector(x)
        return range(first, self.next_vector)

    def _start_batch(self):
        X = np.stack(self._pending)
        offset = self.next_vector - len(self._pending)
        self._pending = []
        prep = self._prepare(X, offset)
        self._stepper = CycleStepper(self.macro, prep)
        self._batch = {"prep": prep, "cycles": self._stepper.cycles(),
                       "cycles_left": self._stepper.n_cycles}

    # --- stepping -----------------------------------------------------------------------
    def step(self) -> dict:
        """Run one array cycle; returns its stimulus and expected response.

        Keys: ``cycle`` (global index of this array cycle), ``tile_row``, ``tile_col``,
        ``vector`` (global), ``plane``, ``tile_cycle`` (b * P + p within the tile operation, the
        trace's ``cycle``), ``row_input`` uint8 (R,), ``row_mask`` bool (R,) (True = active),
        ``row_level`` uint8 (R,) each row's DAC level (the mask as 0/1 for binary rows),
        ``active_rows`` (rows driven), ``level_sum`` (A, their levels' sum; docs/hardware-model.md
        4.8), ``full_scale``, ``scale_fx``, ``x_plane_weight``, ``clear`` (True
        when the accumulators of this group and vector start from 0 in this cycle),
        ``column_count`` (C,), ``column_value`` (C,), ``sar_trial`` (C, Nb),
        ``sar_decision`` (C, Nb), ``code`` (C,), ``clipped``, ``output_index`` (G,),
        ``nmc_acc`` (G,) accumulator after this cycle, ``nmc_steps`` (G, Kw) after each weight
        plane, ``group_done`` (True when this group's outputs of this vector are final),
        ``column_full_scale`` (C,) each column's F (differs from ``full_scale`` only under
        the per-column dual Vref choice), ``skipped`` (True when the controller skips this all-masked cycle, with
        ``skip_masked_cycles``: the column group is not driven, every outcome is 0 and the
        accumulators hold; an RTL testbench presents nothing for it), then
        ``y_int_group`` (G,); and ``y_int`` (N,) on the vector's last cycle (else None).
        """
        if self._batch is None:
            if not self._pending:
                raise RuntimeError("step: no vector loaded (call load_vector first)")
            self._start_batch()
        batch = self._batch
        prep = batch["prep"]
        cyc = next(batch["cycles"])
        out = cyc.outcome
        acc = self._stepper.acc
        b, (g0, g1) = cyc.b, cyc.output_range
        rec = {
            "cycle": self.cycle, "tile_row": cyc.t, "tile_col": cyc.u, "vector": cyc.vector,
            "plane": cyc.plane, "tile_cycle": cyc.tile_cycle,
            "row_input": cyc.row_input.copy(), "row_mask": cyc.row_mask.copy(),
            "row_level": cyc.row_level.copy(), "level_sum": cyc.level_sum,
            "active_rows": cyc.active_rows, "full_scale": cyc.full_scale,
            "scale_fx": cyc.scale_fx, "x_plane_weight": cyc.x_plane_weight,
            "clear": cyc.first_of_group,
            "column_count": out.column_count, "column_value": out.column_value,
            "sar_trial": out.sar_trial, "sar_decision": out.sar_decision,
            "code": out.code.astype(np.int64), "clipped": out.clipped,
            "column_full_scale": out.full_scale,
            "output_index": np.arange(g0, g1), "nmc_acc": cyc.nmc_steps[:, -1].copy(),
            "nmc_steps": cyc.nmc_steps, "group_done": cyc.group_done,
            "skipped": cyc.skipped, "y_int_group": None, "y_int": None,
        }
        if cyc.group_done:
            rec["y_int_group"] = self.output_stage(acc[b:b + 1, g0:g1])[0]
        if cyc.vector_done:
            rec["y_int"] = self.output_stage(acc[b:b + 1])[0]
        self.cycle += 1
        batch["cycles_left"] -= 1
        if batch["cycles_left"] == 0:
            self._finished_y.append(self.output_stage(acc))
            self._finished_vectors.extend(range(prep.vector_offset,
                                                prep.vector_offset + prep.batch))
            self._batch = None
        return rec

    def run(self) -> list:
        """Step until every loaded vector is finished; returns the records."""
        out = []
        while self._batch is not None or self._pending:
            out.append(self.step())
        return out

    def iter_cycles(self) -> Iterator[dict]:
        """Generator form of ``run``."""
        while self._batch is not None or self._pending:
            yield self.step()

    def expected_outputs(self) -> dict:
        """Outputs of every finished vector: ``y_int`` int64 (B, N), ``y`` float64, ``vectors``."""
        n = self.plan.outputs
        y_int = (np.concatenate(self._finished_y) if self._finished_y
                 else np.zeros((0, n), dtype=np.int64))
        frac = self.config.nmc.out_frac_bits
        return {"y_int": y_int, "y": y_int.astype(np.float64) / float(1 << frac),
                "vectors": np.array(self._finished_vectors, dtype=np.int64)}


# --- scoreboard helpers -------------------------------------------------------------------
@dataclass(frozen=True)
class Mismatch:
    """One differing value: where (cycle, vector, plane, column/output), which signal, values."""

    cycle: int
    signal: str
    index: int            # column for per-column signals, output in the group for nmc_acc /
                          # y_int, -1 for per-cycle scalars
    expected: int
    got: int | None       # None: missing in the actual data
    vector: int = -1
    plane: int = -1
    tile_row: int = 0
    tile_col: int = 0

    @property
    def where(self) -> str:
        if self.signal in COLUMN_SIGNALS:
            return f"column {self.index}"
        if self.signal in OUTPUT_SIGNALS:
            return f"output {self.index}"
        return "-"

    def __str__(self) -> str:
        got = "missing" if self.got is None else self.got
        ctx = f"vector {self.vector}, plane {self.plane}"
        if self.tile_row or self.tile_col:
            ctx = f"tile ({self.tile_row}, {self.tile_col}), " + ctx
        return (f"cycle {self.cycle} ({ctx}) {self.where}: {self.signal} expected "
                f"{self.expected}, got {got}")


def expected_signal(rec: dict, signal: str) -> np.ndarray | None:
    """The expected value(s) of a signal in a ``step()`` record, as int64 (or None)."""
    if signal == "sar_decision":
        return pack_decisions(rec["sar_decision"])
    if signal == "y_int":
        return rec["y_int_group"]
    value = rec[signal]
    return None if value is None else np.asarray(value, dtype=np.int64)


def compare_cycle(rec: dict, actual: dict, *, tolerance: int = 0) -> list:
    """Mismatches between an expected ``step()`` record and what the device produced.

    actual : {signal: value}, signals of ``SIGNALS``: scalars for ``active_rows`` /
    ``full_scale`` / ``level_sum`` (A, docs/hardware-model.md 4.8), a sequence per column for ``column_count`` / ``code`` / ``sar_decision``
    (packed, see ``pack_decisions``) / ``column_value``, per output of the group for
    ``nmc_acc`` (the accumulator after the cycle) and ``y_int`` (compared on ``group_done``
    cycles only).  ``tolerance`` k accepts codes within +/-k.
    """
    out = []
    for signal, got in actual.items():
        if signal not in SIGNALS:
            raise ValueError(f"actual: unknown signal {signal!r}; known: {', '.join(SIGNALS)}")
        exp = expected_signal(rec, signal)
        if exp is None:
            continue
        exp = np.atleast_1d(exp)
        got = np.atleast_1d(np.asarray(got, dtype=np.int64))
        if got.shape != exp.shape:
            raise ValueError(f"actual[{signal!r}]: expected {exp.shape[0]} values, "
                             f"got {got.shape[0]}")
        scalar = signal in SCALAR_SIGNALS
        tol = tolerance if signal == "code" else 0
        for i in np.nonzero(np.abs(got - exp) > tol)[0]:
            out.append(Mismatch(int(rec["cycle"]), signal, -1 if scalar else int(i),
                                int(exp[i]), int(got[i]), int(rec["vector"]), int(rec["plane"]),
                                int(rec["tile_row"]), int(rec["tile_col"])))
    return out


def assert_cycle(rec: dict, actual: dict, *, tolerance: int = 0, max_report: int = 8) -> None:
    """Raise AssertionError naming cycle, vector, plane and column of the first mismatches."""
    bad = compare_cycle(rec, actual, tolerance=tolerance)
    if bad:
        lines = [str(m) for m in bad[:max_report]]
        if len(bad) > max_report:
            lines.append(f"... and {len(bad) - max_report} more mismatches in this cycle")
        raise AssertionError("RTL mismatch: " + "\n  ".join(lines))
