"""Per-MVM error diagnostics: each sampled emulator MVM against the exact product of the same
quantized operands.

A training run on the macro can lose accuracy for many reasons (the ADC law, the Vref, the
layer sizes, noise); these statistics say which MVM of which layer departs from the exact
product, and how: a systematic bias, a random error, or clipping.  They observe the MVM only
(the exact product is computed beside it and never fed back), so a run with diagnostics on
trains exactly as one without.

Statistics of one (layer, MVM kind), over the sampled calls of an epoch (docs/training.md,
"Per-MVM error diagnostics"), with ``e`` the exact product, ``m`` the macro's output and
``d = m - e`` (elements of the calls' sampled vectors):

- ``bias``: mean(d) / rms(e), rms(e) = sqrt(mean(e**2));
- ``rms_error``: sqrt(mean(d**2)) / rms(e);
- ``cosine``: <m, e> / (norm(m) norm(e));
- ``cosine_centred``: the same after each output's mean over the call's vectors is removed
  from both (what is left once a per-channel offset, which batch normalisation absorbs, is
  taken out);
- ``snr_db``: 10 log10(var(e) / var(d)), the compute SNR of Kavishwar & Shanbhag
  (arXiv 2507.09776); the bias is not in var(d), it is reported on its own;
- ``lossy_share``: share of the calls' ADC conversions whose full scale F exceeds the ADC's
  top code (one code spans more than one count unit, so the code loses information), among
  cycles that drive at least one row (an all-masked column reads 0 exactly at any F);
- ``clipped_share``: share of the calls' conversions that clipped at the top code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from imcsim.training.xp import namespace_of, to_host

#: vectors of one call that enter the statistics, at most (taken at an even stride)
MAX_DIAGNOSTIC_VECTORS = 4096

#: a constant of the sampled-step generator's key, so it never shares a stream with batching
_SAMPLE_KEY = 0xD1A6


def sampled_steps(seed: int, epoch: int, steps: int, per_epoch: int) -> frozenset[int]:
    """The steps of one epoch whose MVMs are diagnosed (indices 0 .. steps - 1).

    Parameters
    ----------
    seed, epoch : int
        The run's seed and the epoch (0-based): the choice depends on nothing else.
    steps : int
        Training steps in the epoch.
    per_epoch : int
        How many to diagnose (0: none; more than ``steps``: all).

    Returns
    -------
    frozenset of int
    """
    k = min(int(per_epoch), int(steps))
    if k <= 0:
        return frozenset()
    rng = np.random.default_rng([int(seed), int(epoch), _SAMPLE_KEY])
    return frozenset(int(i) for i in rng.choice(int(steps), size=k, replace=False))


@dataclass
class MvmErrorSums:
    """Running sums of one (layer, MVM kind) over sampled calls (float64 and int, host)."""

    calls: int = 0
    elements: int = 0
    sum_error: float = 0.0
    sum_error2: float = 0.0
    sum_exact: float = 0.0
    sum_exact2: float = 0.0
    sum_macro2: float = 0.0
    sum_dot: float = 0.0
    sum_centred_dot: float = 0.0
    sum_centred_exact2: float = 0.0
    sum_centred_macro2: float = 0.0
    conversions: int = 0
    lossy_conversions: int = 0
    clipped_conversions: int = 0

    def add_outputs(self, exact, macro) -> None:
        """Add one call's outputs: ``exact`` and ``macro`` float64 (vectors, outputs), host."""
        e = np.asarray(exact, dtype=np.float64)
        m = np.asarray(macro, dtype=np.float64)
        d = m - e
        ec = e - e.mean(axis=0, keepdims=True)
        mc = m - m.mean(axis=0, keepdims=True)
        self.calls += 1
        self.elements += e.size
        self.sum_error += float(d.sum())
        self.sum_error2 += float((d * d).sum())
        self.sum_exact += float(e.sum())
        self.sum_exact2 += float((e * e).sum())
        self.sum_macro2 += float((m * m).sum())
        self.sum_dot += float((e * m).sum())
        self.sum_centred_dot += float((ec * mc).sum())
        self.sum_centred_exact2 += float((ec * ec).sum())
        self.sum_centred_macro2 += float((mc * mc).sum())

    def add_conversions(self, conversions: int, lossy: int, clipped: int) -> None:
        self.conversions += int(conversions)
        self.lossy_conversions += int(lossy)
        self.clipped_conversions += int(clipped)

    def summary(self) -> dict:
        """The record of metrics.json (module docstring); NaN-free: a statistic without a
        defined value (an all-zero exact product, say) is None, and so is the SNR of an MVM
        that matched the exact product everywhere (``exact_match``, infinite SNR)."""
        n = max(1, self.elements)
        rms_exact = math.sqrt(self.sum_exact2 / n)
        mean_err = self.sum_error / n
        var_exact = self.sum_exact2 / n - (self.sum_exact / n) ** 2
        var_err = self.sum_error2 / n - mean_err ** 2

        def ratio(a, b):
            return None if b <= 0 else a / b

        def cos(dot, a2, b2):
            return None if a2 <= 0 or b2 <= 0 else dot / math.sqrt(a2 * b2)

        exact_match = self.sum_error2 == 0
        snr = None
        if var_exact > 0 and var_err > 0:
            snr = 10 * math.log10(var_exact / var_err)
        return {"calls": self.calls, "elements": self.elements,
                "exact_rms": rms_exact,
                "bias": ratio(mean_err, rms_exact),
                "rms_error": ratio(math.sqrt(max(0.0, self.sum_error2 / n)), rms_exact),
                "cosine": cos(self.sum_dot, self.sum_exact2, self.sum_macro2),
                "cosine_centred": cos(self.sum_centred_dot, self.sum_centred_exact2,
                                      self.sum_centred_macro2),
                "snr_db": snr, "exact_match": exact_match,
                "lossy_share": ratio(self.lossy_conversions, self.conversions),
                "clipped_share": ratio(self.clipped_conversions, self.conversions)}


def _rows(n: int, limit: int) -> slice:
    """An even stride over n vectors that keeps at most ``limit`` of them."""
    return slice(0, n, max(1, -(-n // limit)))


class MvmDiagnostics:
    """Collects :class:`MvmErrorSums` per (layer, MVM kind) for the sampled steps.

    The trainer sets :attr:`steps` (the global step numbers to diagnose) at every epoch; an
    IMC backend calls :meth:`record` after each MVM whose step is among them.
    """

    def __init__(self, max_vectors: int = MAX_DIAGNOSTIC_VECTORS):
        self.max_vectors = int(max_vectors)
        self.steps: frozenset = frozenset()
        self.sums: dict[tuple[str, str], MvmErrorSums] = {}

    def wants(self, step) -> bool:
        return step in self.steps

    def clear(self) -> None:
        self.sums = {}

    def record(self, layer: str, kind: str, X, W, result, top_code: int) -> None:
        """Add one MVM.

        Parameters
        ----------
        layer, kind : str
            The layer's name and the MVM kind ('forward', 'backward', 'update').
        X : float array (vectors, inner)
            The streamed operand as the backend received it (quantized values).
        W : int64 array (inner, outputs)
            The stored operand.
        result : imcsim.macro.MvmResult
            The macro's result of ``X @ W``: ``y`` (vectors, outputs), ``full_scale``
            (tiles, vectors, planes) and the event counters.
        top_code : int
            The ADC's top code L (a cycle is lossy where its full scale exceeds L).
        """
        xp = namespace_of(X, W)
        rows = _rows(X.shape[0], self.max_vectors)
        exact = xp.asarray(X[rows], dtype=np.float64) @ xp.asarray(W, dtype=np.float64)
        entry = self.sums.setdefault((layer, kind), MvmErrorSums())
        entry.add_outputs(to_host(exact), to_host(result.y[rows]))
        ev = result.events.total()
        conversions = int(ev["adc_conversions"])
        # conversions per array cycle are the same for every cycle of a call (all columns of
        # the tile convert); a cycle with no driven row reads 0 exactly whatever its F
        fs, active = to_host(result.full_scale), to_host(result.active_rows)   # (T, B, P)
        lossy_cycles = int(((fs > top_code) & (active > 0)).sum())
        per_cycle = conversions / max(1, int(ev["array_cycles"]))
        lossy = int(round(per_cycle * lossy_cycles))
        entry.add_conversions(conversions, lossy, int(ev["clipped_conversions"]))

    def summary(self, layer_order) -> dict:
        """{layer: {kind: record}} in ``layer_order`` and forward/backward/update order."""
        out: dict = {}
        for name in layer_order:
            for kind in ("forward", "backward", "update"):
                entry = self.sums.get((name, kind))
                if entry is not None and entry.calls:
                    out.setdefault(name, {})[kind] = entry.summary()
        return out

__all__ = ["MvmDiagnostics", "MvmErrorSums", "sampled_steps", "MAX_DIAGNOSTIC_VECTORS"]
