"""The cycle-level model: one array cycle, one SAR step, one NMC addition at a time.

This is the model to read when you want to know what the macro does; it follows
docs/hardware-model.md line by line with unpacked NumPy arrays and records whatever the trace
selection asks for.  ``Macro.mvm`` must give exactly the same codes and outputs.
"""
from __future__ import annotations

import numpy as np

from imcsim.array import select_full_scale
from imcsim.nmc import nmc_scale_fx, register_update
from kernels.analog import ANALOG_FRAC_BITS, NOISE_SHIFT
from kernels.rng import STREAM_CMP_NOISE, STREAM_SAMPLE, event_noise_columns


class ColumnGroup:
    """The used columns of one tile operation (t, u): stored bits and analog constants."""

    def __init__(self, macro, prep, t: int, u: int):
        plan = prep.plan
        self.t, self.u = t, u
        self.r0, self.r1 = plan.row_range(t)
        self.n0, self.n1 = plan.output_range(u)
        self.w = prep.weights.tile(t, u)["columns"]                       # uint8 (R, C)
        cols = self.w.shape[1]
        self.caps = macro.cell_capacitance[: self.r1 - self.r0, :cols]   # int64 (R, C)
        self.total_cap = macro.column_capacitance[:cols]
        self.cdac = macro.cdac_weights[:cols]                            # int64 (C, Nb)
        self.cdac_total = self.cdac.sum(axis=1)
        self.offset = macro.comparator_offsets[:cols]

    def xnor_charge(self, in_bits, active):
        """Per column: XNOR=1 count and charged capacitance of the active rows."""
        xnor = (self.w == in_bits[:, None]) & active[:, None]            # (R, C)
        return xnor.sum(axis=0).astype(np.int64), (xnor * self.caps).sum(axis=0)


def sar_convert_columns(v, offset, cdac, cdac_total, full_scale, adc_bits, noise_of_step):
    """Successive approximation for a vector of held column values.

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
        held = v + offset + noise_of_step(s)
        keep = held * cdac_total >= (np.int64(full_scale) << ANALOG_FRAC_BITS) * trial_sum
        trials[:, s] = trial
        decisions[:, s] = keep
        code = np.where(keep, trial, code)
        wsum = np.where(keep, trial_sum, wsum)
    return code, trials, decisions


def run_cycle_level(macro, prep, trace=None, selection=None):
    """Evaluate a prepared MVM cycle by cycle; optionally write an HDF5 trace."""
    from imcsim.trace import TraceSelection, TraceWriter
    c, nmc, plan = macro.config, macro.config.nmc, prep.plan
    fx = macro.fx
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
                group = ColumnGroup(macro, prep, t, u)
                cols = group.w.shape[1]
                for b in range(B):
                    gb = prep.vector_offset + b
                    for p in range(P):
                        in_bits, active = xb[b, p], xa[b, p]
                        fs = int(full_scale[t, b, p])
                        a = int(active_rows[t, b, p])
                        # charge sharing onto the column, then sampling
                        count, charged = group.xnor_charge(in_bits, active)
                        v = (np.int64(c.rows) * charged << ANALOG_FRAC_BITS) // group.total_cap
                        if fx["sigma_sample_fx"]:
                            v = v + event_noise_columns(fx["sigma_sample_fx"], NOISE_SHIFT,
                                                        prep.seed, STREAM_SAMPLE, t, u, gb, p,
                                                        cols, -1)
                        clipped[t, u] += int((v > (np.int64(fs) << ANALOG_FRAC_BITS)).sum())

                        def noise_of_step(s, _t=t, _u=u, _gb=gb, _p=p):
                            if not fx["sigma_cmp_fx"]:
                                return 0
                            return event_noise_columns(fx["sigma_cmp_fx"], NOISE_SHIFT,
                                                       prep.seed, STREAM_CMP_NOISE, _t, _u, _gb,
                                                       _p, cols, s)

                        code, trials, decisions = sar_convert_columns(
                            v, group.offset, group.cdac, group.cdac_total, fs, c.adc_bits,
                            noise_of_step)
                        codes[t, b, p, group.n0:group.n1, :] = code.reshape(-1, Kw)
                        # NMC: code -> count estimate -> +/-1 dot product, weighted and summed
                        sc = int(scale[b, p])
                        if nmc.half_lsb_reconstruction:
                            estimate = ((2 * code + 1) * sc) >> 1
                        else:
                            estimate = code * sc
                        dot = (2 * estimate - (a << nmc.scale_frac_bits)).reshape(-1, Kw)
                        steps = np.empty(dot.shape, dtype=np.int64)
                        for q in range(Kw):
                            term = dot[:, q] * pw_x[p] * pw_w[q]
                            acc[b, group.n0:group.n1] = register_update(
                                acc[b, group.n0:group.n1] + term, nmc.acc_bits, nmc.overflow)
                            steps[:, q] = acc[b, group.n0:group.n1]
                        if writer is not None and selection.selects(t, u, b, p, P):
                            writer.add_cycle(t=t, u=u, vector=gb, plane=p, cycle=b * P + p,
                                             row_input=in_bits, row_mask=active, active_rows=a,
                                             full_scale=fs, column_count=count, column_value=v,
                                             sar_trial=trials, sar_decision=decisions,
                                             code=code, nmc_acc=steps,
                                             output_index=np.arange(group.n0, group.n1))
        result = macro.finish(prep, acc, codes, active_rows, full_scale, clipped, "cycle")
        if writer is not None:
            writer.close(result)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return result
