"""The cycle-level model: one array cycle, one SAR step, one NMC addition at a time.

This is the model to read when you want to know what the macro does; it follows
docs/hardware-model.md line by line with unpacked NumPy arrays and records whatever the trace
selection asks for.  ``Macro.mvm`` must give exactly the same codes and outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcsim.mapping import select_full_scale
from imcsim.nmc import nmc_scale_fx, register_update
from imcsim.kernels.analog import ANALOG_FRAC_BITS, NOISE_SHIFT
from imcsim.kernels.rng import STREAM_CMP_NOISE, STREAM_SAMPLE, event_noise_columns


@dataclass
class CycleOutcome:
    """What one array cycle produced, per used column (C,) or (C, Nb)."""

    column_count: np.ndarray    # int64: active cells with XNOR = 1
    column_value: np.ndarray    # int64: charge-shared, sampled value, analog fixed point
    sar_trial: np.ndarray       # int64 (C, Nb): trial codes, MSB first
    sar_decision: np.ndarray    # uint8 (C, Nb): comparator decisions
    code: np.ndarray            # int64: final ADC codes
    clipped: int                # conversions whose input exceeded the full scale


class ColumnGroup:
    """The used columns of one tile operation (t, u): stored bits and analog constants."""

    def __init__(self, macro, weights, t: int, u: int):
        plan = weights.plan
        self.macro = macro
        self.t, self.u = t, u
        self.r0, self.r1 = plan.row_range(t)
        self.n0, self.n1 = plan.output_range(u)
        self.w = weights.tile(t, u)["columns"]                            # uint8 (R, C)
        cols = self.w.shape[1]
        self.caps = macro.cell_capacitance[: self.r1 - self.r0, :cols]   # int64 (R, C)
        self.total_cap = macro.column_capacitance[:cols]
        self.cdac = macro.cdac_weights[:cols]                            # int64 (C, Nb)
        self.cdac_total = self.cdac.sum(axis=1)
        self.offset = macro.comparator_offsets[:cols]

    @property
    def n_columns(self) -> int:
        return self.w.shape[1]

    def xnor_charge(self, in_bits, active):
        """Per column: XNOR=1 count and charged capacitance of the active rows."""
        xnor = (self.w == in_bits[:, None]) & active[:, None]            # (R, C)
        return xnor.sum(axis=0).astype(np.int64), (xnor * self.caps).sum(axis=0)

    def array_cycle(self, in_bits, active, full_scale: int, seed: int, vector: int,
                    plane: int) -> CycleOutcome:
        """One array cycle: XNOR cells, charge sharing, sampling, SAR conversion per column.

        in_bits : uint8 (R,) row inputs; active : bool (R,) unmasked rows; full_scale : F in
        rows; seed, vector (global index), plane : the noise key of this cycle.
        """
        c, fx = self.macro.config, self.macro.fx
        cols = self.n_columns
        count, charged = self.xnor_charge(in_bits, active)
        v = (np.int64(c.rows) * charged << ANALOG_FRAC_BITS) // self.total_cap
        if fx["sigma_sample_fx"]:
            v = v + event_noise_columns(fx["sigma_sample_fx"], NOISE_SHIFT, seed, STREAM_SAMPLE,
                                        self.t, self.u, vector, plane, cols, -1)
        clipped = int((v > (np.int64(full_scale) << ANALOG_FRAC_BITS)).sum())

        def noise_of_step(s):
            if not fx["sigma_cmp_fx"]:
                return 0
            return event_noise_columns(fx["sigma_cmp_fx"], NOISE_SHIFT, seed, STREAM_CMP_NOISE,
                                       self.t, self.u, vector, plane, cols, s)

        code, trials, decisions = sar_convert_columns(v, self.offset, self.cdac, self.cdac_total,
                                                      full_scale, c.adc_bits, noise_of_step,
                                                      int(c.adc_threshold_shift(full_scale)))
        return CycleOutcome(count, v, trials, decisions, code, clipped)


def nmc_cycle(acc, code, active_rows: int, scale_fx: int, x_plane_weight: int, w_plane_weights,
              nmc):
    """The NMC's work for one array cycle of one column group.

    acc : int64 (G,) accumulators of the group's outputs; code : (G * Kw,) ADC codes.
    Returns the new accumulators and the accumulator after each weight plane, int64 (G, Kw).
    """
    code = np.asarray(code, dtype=np.int64)
    if nmc.half_lsb_reconstruction:
        estimate = ((2 * code + 1) * scale_fx) >> 1
    else:
        estimate = code * scale_fx
    kw = len(w_plane_weights)
    dot = (2 * estimate - (np.int64(active_rows) << nmc.scale_frac_bits)).reshape(-1, kw)
    steps = np.empty(dot.shape, dtype=np.int64)
    acc = np.asarray(acc, dtype=np.int64).copy()
    for q in range(kw):
        acc = register_update(acc + dot[:, q] * x_plane_weight * w_plane_weights[q],
                              nmc.acc_bits, nmc.overflow)
        steps[:, q] = acc
    return acc, steps


def sar_convert_columns(v, offset, cdac, cdac_total, full_scale, adc_bits, noise_of_step,
                        threshold_shift=0):
    """Successive approximation for a vector of held column values.

    ``threshold_shift`` raises every held value (half an LSB for ``adc_rounding`` HALF_UP).
    Returns codes (C,), trial codes (C, Nb) and comparator decisions (C, Nb).
    """
    n = v.shape[0]
    code = np.zeros(n, dtype=np.int64)
    wsum = np.zeros(n, dtype=np.int64)
    trials = np.zeros((n, adc_bits), dtype=np.int64)
    decisions = np.zeros((n, adc_bits), dtype=np.uint8)
    for s in range(adc_bits):
        k = adc_bits - 1 - s
        trial = code | (1 << k)
        trial_sum = wsum + cdac[:, k]
        held = v + offset + threshold_shift + noise_of_step(s)
        keep = held * cdac_total >= (np.int64(full_scale) << ANALOG_FRAC_BITS) * trial_sum
        trials[:, s] = trial
        decisions[:, s] = keep
        code = np.where(keep, trial, code)
        wsum = np.where(keep, trial_sum, wsum)
    return code, trials, decisions


def run_cycle_level(macro, prep, trace=None, selection=None):
    """Evaluate a prepared MVM cycle by cycle; optionally write an HDF5 trace."""
    from imcsim.verify.trace import TraceSelection, TraceWriter
    c, nmc, plan = macro.config, macro.config.nmc, prep.plan
    B, P, Kw = prep.batch, prep.n_planes, plan.weight_planes
    pw_x, pw_w = prep.x_format.plane_weights, prep.w_format.plane_weights
    acc = np.zeros((B, plan.outputs), dtype=np.int64)
    active_rows = np.zeros((plan.row_tiles, B, P), dtype=np.int64)
    full_scale = np.zeros((plan.row_tiles, B, P), dtype=np.int64)
    codes = np.zeros((plan.row_tiles, B, P, plan.outputs, Kw), dtype=np.uint16)
    clipped = np.zeros((plan.row_tiles, plan.col_tiles), dtype=np.int64)
    selection = TraceSelection() if selection is None else selection
    writer = TraceWriter(trace, macro, prep) if trace is not None else None
    try:
        for t in range(plan.row_tiles):
            xb, xa = prep.tile_planes(t)                      # (B, P, R)
            active_rows[t] = xa.sum(axis=2)
            full_scale[t] = select_full_scale(active_rows[t], prep.vref, c.top_code)
            scale = nmc_scale_fx(full_scale[t], c.top_code, nmc.scale_frac_bits)
            for u in range(plan.col_tiles):
                group = ColumnGroup(macro, prep.weights, t, u)
                g0, g1 = group.n0, group.n1
                for b in range(B):
                    gb = prep.vector_offset + b
                    for p in range(P):
                        fs = int(full_scale[t, b, p])
                        a = int(active_rows[t, b, p])
                        out = group.array_cycle(xb[b, p], xa[b, p], fs, prep.seed, gb, p)
                        clipped[t, u] += out.clipped
                        codes[t, b, p, g0:g1, :] = out.code.reshape(-1, Kw)
                        acc[b, g0:g1], steps = nmc_cycle(acc[b, g0:g1], out.code, a,
                                                         int(scale[b, p]), int(pw_x[p]), pw_w, nmc)
                        if writer is not None and selection.selects(t, u, b, p, P):
                            writer.add_cycle(t=t, u=u, vector=gb, plane=p, cycle=b * P + p,
                                             row_input=xb[b, p], row_mask=xa[b, p],
                                             active_rows=a, full_scale=fs,
                                             column_count=out.column_count,
                                             column_value=out.column_value,
                                             sar_trial=out.sar_trial,
                                             sar_decision=out.sar_decision, code=out.code,
                                             nmc_acc=steps, output_index=np.arange(g0, g1))
        result = macro.finish(prep, acc, codes, active_rows, full_scale, clipped, "cycle")
        if writer is not None:
            writer.close(result)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return result
