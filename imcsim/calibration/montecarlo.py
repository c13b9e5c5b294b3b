"""Monte-Carlo chips: a trained model's accuracy over sampled chips and noise levels.

A chip is a ``chip_seed``: it fixes every static mismatch table (cell capacitors, CDAC,
comparator offsets) of a config; the dynamic noise is fresh in every call.  ``evaluate_chips``
loads a trained model (``imcsim train`` output folder or its ``checkpoint.npz``), maps its hidden
layers' forward MVMs onto the macro of each sampled chip (the layers the training engine would
map: first, last and residual layers stay FP32 unless the run mapped them), and measures the test
accuracy per chip, for every noise scale: every sigma of the config (``scale="all"``), only the
dynamic noise (``"noise"``) or only the static mismatch (``"mismatch"``) multiplied by the
factor -- 0 x is the ideal macro, 1 x the preset, 2 x twice its non-idealities.

``CalibratedMacro`` is the emulator of one *measured* chip: a Macro whose comparator offsets,
CDAC capacitors and column capacitances are the tables a calibration fitted
(``imcsim.calibration.fit``), with the fitted sigmas for everything a calibration cannot
tabulate (the individual cell capacitors, the noise).

``ChipHoppingBackend`` trains hardware-aware: every step runs on another chip of a pool, with
fresh noise (``hardware_aware_trainer``).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from imcsim.config import NONIDEALITY_LIMITS, MacroConfig, MvmKind, NonIdealityConfig
from imcsim.macro import Macro
from imcsim.training.backends import BackendKind, ImcBackend

SCALES = ("all", "noise", "mismatch")
_DYNAMIC = ("comparator_noise_sigma", "sampling_noise_sigma")
_STATIC = ("cell_cap_sigma", "parasitic_ratio", "cdac_unit_sigma", "comparator_offset_sigma")
#: chips evaluated by default start here, away from the training pool's seeds
EVAL_CHIP_BASE = 1_000_003
TRAIN_CHIP_BASE = 7_000_001


def scaled_config(config: MacroConfig, factor: float, scale: str = "all",
                  chip_seed: int | None = None) -> MacroConfig:
    """The config with its non-idealities multiplied by ``factor`` (clipped to their ranges).

    scale : "all" (every sigma and the parasitic ratio), "noise" (comparator and sampling
    noise) or "mismatch" (cell, parasitic, CDAC, offset).  chip_seed : replaces the config's.
    """
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
    if not factor >= 0:
        raise ValueError(f"factor: must be >= 0, got {factor}")
    names = _DYNAMIC + _STATIC if scale == "all" else (_DYNAMIC if scale == "noise" else _STATIC)
    ni = config.nonideal
    vals = {k: getattr(ni, k) for k in _DYNAMIC + _STATIC}
    for k in names:
        vals[k] = min(vals[k] * factor, NONIDEALITY_LIMITS[k])   # the fields' own limits
    out = replace(config, nonideal=NonIdealityConfig(**vals))
    return out if chip_seed is None else replace(out, chip_seed=int(chip_seed))


class CalibratedMacro(Macro):
    """An emulator of one calibrated chip: the fitted per-column tables on top of a config.

    Parameters
    ----------
    model : ChipModel  a calibration's fitted chip (``load_calibrated_model``).
    config : MacroConfig or None  the config (default the calibration's preset: fitted sigmas,
        which still draw the individual cell capacitors from chip_seed, and the noise).
    Columns the calibration did not cover keep the config's own tables.
    """

    def __init__(self, model, config: MacroConfig | None = None, device: str = "cpu"):
        from imcsim.calibration.result import _LIMITS as LIM
        if config is None:
            vals = {"cell_cap_sigma": model.sigma_cell, "comparator_noise_sigma": model.sigma_cmp,
                    "sampling_noise_sigma": model.sigma_sample,
                    "parasitic_ratio": max(0.0, 1.0 / float(np.mean(model.gain)) - 1.0),
                    "cdac_unit_sigma": 0.0, "comparator_offset_sigma": 0.0}
            vals = {k: float(min(max(v, 0.0), LIM[k])) for k, v in vals.items()}
            # a non-zero mismatch keeps the emulator off its ideal shortcut
            config = replace(model.config, nonideal=NonIdealityConfig(**vals))
        if (config.rows, config.adc_bits) != (model.config.rows, model.config.adc_bits):
            raise ValueError("config: geometry differs from the calibration's")
        self._tables = model.to_macro_tables()
        self._gain = np.asarray(model.gain, dtype=np.float64)
        self._model_columns = model.columns
        super().__init__(config, device=device)

    def _merged(self, name, base):
        arr = np.array(base, copy=True)
        n = min(self._model_columns, arr.shape[0])
        arr[:n] = self._tables[name][:n]
        return arr

    @property
    def column_capacitance(self) -> np.ndarray:
        """int64 (columns,): rows * (mean cell capacitor) / fitted gain where calibrated, so
        that a random row subset of k rows holds gain * k rows on average."""
        base = Macro.column_capacitance.func(self)
        n = min(self._model_columns, base.shape[0])
        mean_cap = self.cell_capacitance.mean(axis=0)[:n]
        out = np.array(base, copy=True)
        out[:n] = np.round(self.config.rows * mean_cap / self._gain[:n]).astype(np.int64)
        return out

    @property
    def cdac_weights(self) -> np.ndarray:
        """int64 (columns, adc_bits): the fitted CDAC capacitors where calibrated."""
        return self._merged("cdac_weights", Macro.cdac_weights.func(self))

    @property
    def comparator_offsets(self) -> np.ndarray:
        """int64 (columns,): the fitted offsets where calibrated."""
        return self._merged("comparator_offsets", Macro.comparator_offsets.func(self))

    @property
    def cdac_totals(self) -> np.ndarray:
        return self.cdac_weights.sum(axis=1)


# --------------------------------------------------------------------------------------------
# trained models
# --------------------------------------------------------------------------------------------
def load_trained(path, *, device: str = "cpu"):
    """A Trainer holding a trained model: ``path`` is a training folder or its checkpoint.npz."""
    from imcsim.training.engine import TrainConfig, Trainer
    from imcsim.training.rundir import CHECKPOINT_NAME, checkpoint_meta
    path = Path(path)
    ckpt = path / CHECKPOINT_NAME if path.is_dir() else path
    if not ckpt.is_file():
        raise ValueError(f"{path}: no {CHECKPOINT_NAME} (train with imcsim train --out DIR)")
    # the one reader of checkpoints' meta: a truncated or foreign file is one ValueError
    # naming it (np.load alone raised BadZipFile, an internal error)
    meta = checkpoint_meta(ckpt)
    try:
        cfg = TrainConfig.from_json(meta["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{ckpt}: its training config is unreadable ({type(exc).__name__}: "
                         f"{exc})") from None
    cfg = replace(cfg, device=device)
    trainer = Trainer(cfg, ckpt.parent, progress=False)
    trainer.load_checkpoint(ckpt)
    return trainer


def _imc_layers(trainer):
    cfg = trainer.config
    return [la for la in trainer.model.compute_layers()
            if not (la.role == "residual" or (la.role in ("first", "last")
                                              and not cfg.first_last_on_imc))]


def _use_backend(trainer, backend, kinds=(MvmKind.FORWARD,)):
    """Route the MVM kinds of the IMC layers through ``backend``; returns the old policies."""
    old = {id(la): dict(la.policy) for la in trainer.model.compute_layers()}
    for la in _imc_layers(trainer):
        for k in kinds:
            la.policy[k] = backend
    return old


def _restore(trainer, old):
    for la in trainer.model.compute_layers():
        la.policy = old[id(la)]


def _accuracy(trainer, backend, max_test):
    old = _use_backend(trainer, backend)
    try:
        x, y = trainer.x_test, trainer.y_test
        if max_test is not None:
            x, y = x[:max_test], y[:max_test]
        _, acc = trainer.evaluate(x, y)
    finally:
        _restore(trainer, old)
    return float(acc)


def _backend_on(macro, vref, seed, device):
    """An ImcBackend on a given Macro (a sampled or a calibrated chip)."""
    backend = ImcBackend(macro.config, vref, seed, device=device)
    backend.macro = macro
    return backend


def _noise_seed(seed: int, chip: int, factor: float) -> int:
    """A stable dynamic-noise seed per (seed, chip, scale)."""
    h = 1469598103934665603
    for ch in f"{seed}/{chip}/{factor!r}".encode():
        h = ((h ^ ch) * 1099511628211) & ((1 << 62) - 1)
    return h


@dataclass
class ChipAccuracies:
    """Accuracy of one model on sampled chips at one noise scale."""

    factor: float
    chip_seeds: list[int]
    accuracy: np.ndarray            # float64 (chips,)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracy))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracy, ddof=1)) if self.accuracy.size > 1 else 0.0

    def to_dict(self) -> dict:
        return {"factor": self.factor, "mean": self.mean, "std": self.std,
                "min": float(np.min(self.accuracy)), "max": float(np.max(self.accuracy)),
                "chip_seeds": self.chip_seeds, "accuracy": self.accuracy.tolist()}


@dataclass
class MonteCarloResult:
    """``evaluate_chips``'s result: per noise scale the per-chip accuracies."""

    model: str
    config: MacroConfig
    scale: str
    levels: list[ChipAccuracies]
    baselines: dict = field(default_factory=dict)   # fp32 (as trained), ideal IMC, calibrated
    test_samples: int = 0
    seconds: float = 0.0

    def level(self, factor: float) -> ChipAccuracies:
        for lv in self.levels:
            if np.isclose(lv.factor, factor):
                return lv
        raise KeyError(factor)

    def to_dict(self) -> dict:
        return {"model": self.model, "config": self.config.to_dict(), "scale": self.scale,
                "test_samples": self.test_samples, "seconds": self.seconds,
                "baselines": self.baselines, "levels": [lv.to_dict() for lv in self.levels]}

    def format(self) -> str:
        lines = [f"{self.model}: {self.test_samples} test samples; non-idealities scaled: "
                 f"{self.scale}"]
        for k, v in self.baselines.items():
            lines.append(f"  {k:28s} {100 * v:6.2f} %")
        for lv in self.levels:
            lines.append(f"  {lv.factor:4g} x  {len(lv.chip_seeds):3d} chips: "
                         f"{100 * lv.mean:6.2f} % +/- {100 * lv.std:5.2f} "
                         f"(min {100 * lv.accuracy.min():.2f}, max {100 * lv.accuracy.max():.2f})")
        return "\n".join(lines)


def evaluate_chips(trained, config: MacroConfig, *, chips: int = 20,
                   noise_scales=(1.0,), scale: str = "all", seed: int = 0,
                   max_test: int | None = None, device: str = "cpu",
                   calibrated=None, progress: bool = False) -> MonteCarloResult:
    """Test accuracy of a trained model on ``chips`` sampled chips at each noise scale.

    Parameters
    ----------
    trained : path (training folder or checkpoint.npz) or a Trainer.
    config : MacroConfig  the chip family: the preset whose sigmas are scaled (geometry, Vref
        levels, NMC); its chip_seed is replaced per chip.
    chips : int  chips per noise scale (chip i has chip_seed EVAL_CHIP_BASE + seed * 1000 + i,
        the same chips at every scale; seeds of hardware-aware training are elsewhere).
    noise_scales : floats  factors on the config's non-idealities (0 = ideal macro: one run).
    scale : "all", "noise" or "mismatch"  which non-idealities the factor multiplies.
    seed : int  selects the chips and the dynamic noise.
    max_test : int or None  evaluate on the first max_test test samples.
    device : "cpu" or "cuda".
    calibrated : ChipModel, calibration preset path or None  also evaluate on that one measured
        chip (``CalibratedMacro``), reported in ``baselines``.
    """
    import time

    from imcsim.training.backends import ExactBackend, Fp32Backend
    from imcsim.training.engine import Trainer
    if isinstance(chips, bool) or not isinstance(chips, int) or chips < 1:
        raise ValueError(f"chips: must be a positive int, got {chips!r}")
    factors = [float(f) for f in noise_scales]
    if not factors:
        raise ValueError("noise_scales: give at least one factor")
    t0 = time.perf_counter()
    trainer = trained if isinstance(trained, Trainer) else load_trained(trained, device=device)
    vref = trainer.config.vref_of(MvmKind.FORWARD)
    # the chips get the row DAC the trained model's input mapping needs (docs/training.md)
    config = replace(config, input_bits=max(config.input_bits,
                                            trainer.macro_config().input_bits))
    n_test = len(trainer.y_test) if max_test is None else min(max_test, len(trainer.y_test))
    base = {}
    base["fp32 MVMs"] = _accuracy(trainer, Fp32Backend(), max_test)
    base["exact quantized MVMs"] = _accuracy(trainer, ExactBackend(), max_test)
    seeds = [EVAL_CHIP_BASE + 1000 * int(seed) + i for i in range(chips)]
    levels = []
    for f in factors:
        acc = []
        for i, cs in enumerate(seeds):
            chip = scaled_config(config, f, scale, chip_seed=cs)
            if chip.nonideal.is_ideal and acc:
                acc.append(acc[0])                   # the ideal macro has no chip to sample
                continue
            backend = _backend_on(Macro(chip, device=device), vref, _noise_seed(seed, i, f), device)
            acc.append(_accuracy(trainer, backend, max_test))
            if progress:
                print(f"  scale {f:g}, chip {i + 1}/{chips}: {100 * acc[-1]:.2f} %",
                      file=sys.stderr, flush=True)
        levels.append(ChipAccuracies(f, seeds, np.array(acc)))
    if calibrated is not None:
        from imcsim.calibration.statistical import as_chip_model
        model = as_chip_model(calibrated)
        macro = CalibratedMacro(model, device=device)
        backend = _backend_on(macro, vref, _noise_seed(seed, -1, 1.0), device)
        base["calibrated chip"] = _accuracy(trainer, backend, max_test)
    name = f"{trainer.config.model} ({dict(trainer.config.backends)['forward']} forward in training)"
    return MonteCarloResult(name, config, scale, levels, base, n_test,
                            time.perf_counter() - t0)


def plot_chips(results: dict[str, MonteCarloResult], path) -> None:
    """Per-chip accuracies (left, at each scale) and accuracy vs noise scale (right), PNG."""
    from imcsim.plotting import pyplot
    plt = pyplot("--plot")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    rng = np.random.default_rng(0)
    for i, (label, res) in enumerate(results.items()):
        colour = f"C{i}"
        xs = np.array([lv.factor for lv in res.levels])
        for j, lv in enumerate(res.levels):
            jitter = (rng.random(lv.accuracy.size) - 0.5) * 0.25
            a.plot(j + 0.3 * (i - (len(results) - 1) / 2) + 0.1 * jitter, 100 * lv.accuracy, ".",
                   color=colour, ms=4, label=label if j == 0 else None)
        means = np.array([lv.mean for lv in res.levels])
        stds = np.array([lv.std for lv in res.levels])
        b.errorbar(xs, 100 * means, yerr=100 * stds, marker="o", ms=4, capsize=3, color=colour,
                   label=label)
    first = next(iter(results.values()))
    a.set_xticks(range(len(first.levels)), [f"{lv.factor:g} x" for lv in first.levels])
    a.set_xlabel("non-ideality scale")
    a.set_ylabel("test accuracy [%] per chip")
    a.legend(fontsize=7)
    b.set_xlabel("non-ideality scale (x preset)")
    b.set_ylabel("test accuracy [%], mean +/- std over chips")
    b.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110, format="png")
    finally:
        plt.close(fig)


def save_results(results: dict[str, MonteCarloResult], json_path=None, plot_path=None,
                 inputs=()) -> None:
    """Write the results as JSON and/or a PNG, all-or-nothing."""
    from imcsim.atomic import AtomicOutputs
    if plot_path:
        from imcsim.plotting import pyplot
        pyplot("--plot")
    with AtomicOutputs(json_path, plot_path, names=["--json", "--plot"], inputs=inputs) as out:
        if json_path:
            with out.writing(json_path) as tmp:
                tmp.write_text(json.dumps({k: r.to_dict() for k, r in results.items()},
                                          indent=1) + "\n")
        if plot_path:
            with out.writing(plot_path) as tmp:
                plot_chips(results, tmp)


# --------------------------------------------------------------------------------------------
# hardware-aware training
# --------------------------------------------------------------------------------------------
class ChipHoppingBackend:
    """An IMC backend that runs every training step on another chip, with fresh noise.

    Step ``s`` uses chip ``s % pool`` of a pool of chips (chip_seed TRAIN_CHIP_BASE + i, far
    from the evaluation chips) and the noise seed of (seed, step, layer, kind), like
    ``ImcBackend``.  The trainer's own evaluation runs with non-integer steps (its noise keys
    ``eval:<epoch>:<batch>``) and uses the pool's first chip; evaluate on unseen chips with
    ``evaluate_chips``.
    """

    kind = BackendKind.IMC
    quantized = True

    def __init__(self, config: MacroConfig, vref=None, seed: int = 0, pool: int = 64,
                 device: str = "cpu"):
        if pool < 1:
            raise ValueError(f"pool: must be >= 1, got {pool}")
        self.pool = [ImcBackend(replace(config, chip_seed=TRAIN_CHIP_BASE + i), vref, seed,
                                device=device) for i in range(pool)]

    def matmul(self, X, W, x_format, w_format, *, layer="", mvm=None, step=0):
        chip = step % len(self.pool) if isinstance(step, int) else 0
        return self.pool[chip].matmul(X, W, x_format, w_format, layer=layer, mvm=mvm,
                                      step=step)


def trainer_for(train_config, out_dir, *, progress: bool = True):
    """The Trainer of a run: hardware-aware (``hardware_aware_trainer`` over
    ``train_config.chip_pool`` chips of the run's own macro, every MVM kind on 'imc') when
    ``chip_pool`` > 0, else the plain ``Trainer``.  ``imcsim train`` and sweeps (and so
    ``imcsim noise-budget``) build their trainers here."""
    from imcsim.training.engine import Trainer
    if not train_config.chip_pool:
        return Trainer(train_config, out_dir, progress=progress)
    kinds = tuple(MvmKind(k) for k, b in train_config.backends if b == "imc")
    return hardware_aware_trainer(train_config, out_dir, None, pool=train_config.chip_pool,
                                  kinds=kinds, progress=progress)


def hardware_aware_trainer(train_config, out_dir, chip_config: MacroConfig | None, *,
                           pool: int = 64, kinds=(MvmKind.FORWARD,), progress: bool = True):
    """A Trainer whose hidden layers run ``kinds`` on a different chip every step.

    - train_config : TrainConfig  its backends of ``kinds`` must be 'imc' (the engine then
      quantizes those MVMs' operands); they are replaced by a ``ChipHoppingBackend`` over
      ``pool`` chips of ``chip_config`` (a preset or a calibrated chip's preset; None: the
      run's own macro, ``Trainer.macro_config``, with its noise scale and ADC law).

    Returns the Trainer (call ``.run()``).  Its checkpoints record train_config, whose preset
    names the macro of the ordinary IMC backend; the chip pool is this function's.
    """
    from imcsim.training.engine import Trainer
    for k in kinds:
        if train_config.backend_of(k) != "imc":
            raise ValueError(f"train_config: the {k.value} MVM must be on 'imc' for "
                             "hardware-aware training")
    trainer = Trainer(train_config, out_dir, progress=progress)
    run_chip = trainer.macro_config()
    chip_config = run_chip if chip_config is None else chip_config
    # the chips get the row DAC the run's input mapping needs (docs/training.md)
    chip_config = replace(chip_config, input_bits=max(chip_config.input_bits,
                                                      run_chip.input_bits))
    for k in kinds:
        hop = ChipHoppingBackend(chip_config, train_config.vref_of(k), train_config.seed, pool,
                                 device=train_config.device)
        for b in hop.pool:
            b.stats = trainer.stats
        for la in _imc_layers(trainer):
            la.policy[k] = hop
    return trainer


__all__ = ["CalibratedMacro", "ChipAccuracies", "ChipHoppingBackend", "MonteCarloResult",
           "evaluate_chips", "hardware_aware_trainer", "load_trained", "trainer_for", "plot_chips",
           "save_results", "scaled_config"]
