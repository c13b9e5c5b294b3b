"""The training loop: backends per MVM kind, metrics, checkpoints, resume, curves.

Determinism: model initialisation, data order and augmentation derive from (seed, epoch); the
emulator's noise from (seed, step, layer, MVM kind); so the same configuration gives the same
weights bit for bit, whatever the thread count, and a resumed run equals an uninterrupted one.

Device: ``TrainConfig.device`` 'cuda' keeps the data set, parameters, activations and gradients
on the GPU (CuPy, ``training.xp``); random numbers are still drawn on the host.  Per step, the
host sees the loss and accuracy count (one transfer) and the quantizers' scalar clip levels and
scales.  What is bit-identical between a CPU and a GPU run: docs/training.md.
"""
from __future__ import annotations

import csv
import json
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from imcsim import MacroConfig, VrefConfig, load_preset
from imcsim.calibration.offsets import calibrate_code_offsets
from imcsim.config import Rounding
from imcsim.errors import first_line, typed_line
from imcsim.optional import MissingDependency
from imcsim.progress import Progress
from imcsim.training.backends import (
    ExactBackend,
    Fp32Backend,
    ImcBackend,
    MatchedFullScale,
    MvmKind,
    MvmStats,
    input_bits_for,
    scheme_by_name,
)
from imcsim.training.data import augment_crop_flip, iterate_batches, load_dataset, normalize
from imcsim.training.diagnostics import MvmDiagnostics, sampled_steps
from imcsim.training.layers import softmax_cross_entropy_array
from imcsim.training.models import MODELS, build_model
from imcsim.training.optim import (
    SGD,
    UPDATE_RULES,
    ThresholdRule,
    ThresholdWeights,
    make_schedule,
)
from imcsim.training.rundir import (
    flatten_state,
    restore_wall_times,
    same_run,
    unflatten_state,
    without_wall_times,
    write_checkpoint,
)
from imcsim.training.xp import DEVICES, array_module, to_device, to_host
from imcsim.writes import changed_cima_words

BACKEND_NAMES = ("fp32", "exact", "imc")
#: ADC laws a run may set over its preset's (imcsim.config.Rounding values)
ADC_ROUNDINGS = (Rounding.FLOOR.value, Rounding.HALF_UP.value)


class TrainingDiverged(ValueError):
    """Training left the range its quantizers accept (a PACT clip at or below 0, or a
    non-finite loss); one line naming the epoch, step and layer (``imcsim train`` exits 2)."""


def check_converging(params: dict, loss: float, epoch: int, step: int) -> None:
    """Raise TrainingDiverged after an update that left a PACT clip <= 0 or the loss
    non-finite (the next forward could not quantize, or would quantize garbage)."""
    if not np.isfinite(float(loss)):
        raise TrainingDiverged(f"training diverged: loss {loss} at epoch {epoch + 1}, step "
                               f"{step}; lower --lr, or the IMC noise is too large for it")
    for name, value in params.items():
        if name.endswith(".alpha") and float(value[0]) <= 0:
            raise TrainingDiverged(
                f"training diverged: {name} (PACT clip) = {float(value[0]):.4g} after the "
                f"update of epoch {epoch + 1}, step {step}; lower --lr, or the IMC noise is "
                "too large for it")


def parse_vref(text: str) -> VrefConfig | MatchedFullScale:
    """'variable', 'fixed[:F]', 'dual[:LOW:HIGH]' -> VrefConfig (see VrefConfig.parse);
    'fixed:matched' -> MatchedFullScale (F programmed per layer to its inner dimension)."""
    if str(text).strip() == MatchedFullScale.TEXT:
        return MatchedFullScale()
    return VrefConfig.parse(text)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; saved in checkpoints and metrics.

    - backends : backend of each MVM kind for hidden layers ('fp32', 'exact' or 'imc').
    - vref : Vref of each MVM kind on IMC ('variable', 'fixed:F', 'fixed:matched',
      'dual:LOW:HIGH').
    - device : 'cpu' (NumPy) or 'cuda' (CuPy and the macro's CUDA path).  A checkpoint resumes
      on either device.
    - reproducible : compute the FP32 products, float sums and the loss with the fixed-order
      kernels of ``training.repro`` (bit-identical weights on any x86-64 CPU, BLAS build and
      thread count; CPU only).  docs/training.md, Reproducibility.
    - update_rule : how the quantized layers' weights follow the updates: 'requantize' (the
      scheme's quantizer applied to the FP32 master weights at every forward) or
      'threshold' (stored integer weights and a per-weight register,
      ``training.optim.ThresholdWeights``).  docs/training.md, Weight-update rules.
    - update_threshold : the threshold rule's T [LSB of the stored weight], an integer in
      1 .. 2 L (L = 8 for radix4's binary:5, 64 for int8's binary:8); ignored by
      'requantize'.
    - input_mapping : how streamed operands drive the rows on IMC: 'one-hot' (binary rows,
      the paper's macro) or 'multi-level' (a 3-bit row DAC: radix-4 gradients two exponents
      per cycle, binary activations as signed 3-bit digits).  docs/training.md.
    - adc_rounding : the ADC law of the run's macro, 'floor' or 'half_up', over the preset's;
      None keeps the preset's (docs/hardware-model.md 4.5).
    - calibrate_offsets : measure the run's chip's mean ADC code error per column (ramps at
      F = L and F = rows, ``imcsim.calibration.offsets``) and load it into the NMC's
      code-offset registers, which subtract it from every code: the calibrated chip of
      docs/training.md, Noise budgets.
    - diagnostic_steps : training steps per epoch (chosen by the seed) whose emulator MVMs are
      compared with the exact product (``training.diagnostics``); 0: off.  They observe
      only: weights and metrics are the same with any value.
    - chip_pool : hardware-aware training: 0 trains on the run's one chip; N > 0 runs every
      MVM kind on 'imc' on another of N chips of the run's macro at each step, with fresh
      noise (``imcsim.calibration.montecarlo.trainer_for``, which the CLI and sweeps use;
      the trainer's own test accuracy is measured on the pool's first chip).  Needs an
      'imc' backend; not with ``calibrate_offsets`` (registers belong to one chip).
    - noise_scale, noise_scaled : the preset's non-idealities of the group or field
      ``noise_scaled`` ('all', 'noise', 'mismatch' or one NonIdealityConfig field) multiplied
      by ``noise_scale`` (``NonIdealityConfig.scaled``; ``imcsim noise-budget``).
    """

    model: str = "small-cnn"
    dataset: str = "digits"
    data_folder: str | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0
    scheme: str = "radix4"
    backends: tuple = (("forward", "fp32"), ("backward", "fp32"), ("update", "fp32"))
    vref: tuple = (("forward", "variable"), ("backward", "variable"), ("update", "variable"))
    preset: str = "paper"
    skip_masked_cycles: bool = False
    first_last_on_imc: bool = False
    augment: bool = False
    max_steps_per_epoch: int | None = None
    trace: tuple | None = None          # (layer, kind, step, path)
    device: str = "cpu"
    reproducible: bool = False
    update_rule: str = "requantize"
    update_threshold: int = 1
    input_mapping: str = "one-hot"
    adc_rounding: str | None = None
    calibrate_offsets: bool = False
    chip_pool: int = 0
    diagnostic_steps: int = 2
    noise_scale: float = 1.0
    noise_scaled: str = "all"

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"device: expected one of {', '.join(DEVICES)}, got {self.device!r}")
        if not isinstance(self.reproducible, bool):
            raise ValueError(f"reproducible: expected a bool, got {self.reproducible!r}")
        if self.reproducible and self.device != "cpu":
            raise ValueError("reproducible: the fixed-order kernels run on the CPU only; use "
                             "--device cpu (see docs/training.md, Reproducibility)")
        if self.trace is not None:
            if not isinstance(self.trace, tuple) or len(self.trace) != 4:
                raise ValueError(f"trace: expected (layer, kind, step, path), got {self.trace!r}")
            _, kind, step, path = self.trace
            if kind not in {k.value for k in MvmKind}:
                raise ValueError(f"trace: KIND must be one of "
                                 f"{', '.join(k.value for k in MvmKind)}, got {kind!r}")
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"trace: STEP must be an integer >= 0, got {step!r}")
            if not str(path).strip():
                raise ValueError("trace: FILE is empty")
        if self.dataset in ("cifar10", "mnist") and self.data_folder is None:
            load_dataset(self.dataset, None)           # its one-line message names the option
        if self.model not in MODELS:
            raise ValueError(f"model: expected one of {sorted(MODELS)}, got {self.model!r}")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: must be a positive int, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr: must be positive, got {self.lr!r}")
        scheme_by_name(self.scheme, self.input_mapping)
        b = dict(self.backends)
        if set(b) != {k.value for k in MvmKind} or not set(b.values()) <= set(BACKEND_NAMES):
            raise ValueError(f"backends: need forward/backward/update each in {BACKEND_NAMES}, "
                             f"got {b}")
        if b["forward"] == "fp32" and (b["backward"] != "fp32" or b["update"] == "exact"
                                       or b["update"] == "imc"):
            raise ValueError("backends: quantized backward or update MVMs need a quantized "
                             "forward (its quantized activations and weights)")
        for _kind, text in self.vref:
            parse_vref(text)
        preset = load_preset(self.preset)
        if not isinstance(self.skip_masked_cycles, bool):
            raise ValueError(f"skip_masked_cycles: expected a bool, got {self.skip_masked_cycles!r}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError("max_steps_per_epoch: must be >= 1")
        if self.update_rule not in UPDATE_RULES:
            raise ValueError(f"update_rule: expected one of {', '.join(UPDATE_RULES)}, got "
                             f"{self.update_rule!r}")
        t, level = self.update_threshold, scheme_by_name(self.scheme).weight.max_value
        if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 2 * level:
            raise ValueError(f"update_threshold: expected an integer number of LSBs in "
                             f"1..{2 * level} (the {self.scheme} scheme's weights span "
                             f"-{level}..{level}), got {t!r}")
        if self.adc_rounding is not None and self.adc_rounding not in ADC_ROUNDINGS:
            raise ValueError(f"adc_rounding: expected one of {', '.join(ADC_ROUNDINGS)}, got "
                             f"{self.adc_rounding!r}")
        preset.nonideal.scaled(self.noise_scale, self.noise_scaled)        # checks both
        if not isinstance(self.calibrate_offsets, bool):
            raise ValueError(f"calibrate_offsets: expected true or false, got "
                             f"{self.calibrate_offsets!r}")
        pool = self.chip_pool
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 0:
            raise ValueError(f"chip_pool: expected an integer >= 0, got {pool!r}")
        if pool and self.calibrate_offsets:
            raise ValueError("chip_pool: hardware-aware training hops chips, and calibrated "
                             "code offsets belong to one chip: give one of chip_pool and "
                             "calibrate_offsets")
        if pool and "imc" not in dict(self.backends).values():
            raise ValueError("chip_pool: hardware-aware training needs an MVM kind on 'imc'")
        d = self.diagnostic_steps
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValueError(f"diagnostic_steps: expected an integer >= 0, got {d!r}")
        if self.update_rule == "threshold" and b["forward"] == "fp32":
            raise ValueError("update_rule: threshold needs stored integer weights, i.e. the "
                             "hidden layers' forward MVM on imc or exact (--imc / --other)")

    def threshold_rule(self) -> ThresholdRule:
        """The threshold rule of ``update_threshold`` and the scheme's stored weight format."""
        return ThresholdRule(self.update_threshold, scheme_by_name(self.scheme).weight.max_value)

    def backend_of(self, kind: MvmKind) -> str:
        return dict(self.backends)[kind.value]

    def vref_of(self, kind: MvmKind) -> VrefConfig:
        return parse_vref(dict(self.vref)[kind.value])

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        d = json.loads(text)
        d["backends"] = tuple(tuple(x) for x in d["backends"])
        d["vref"] = tuple(tuple(x) for x in d["vref"])
        if d.get("trace") is not None:
            d["trace"] = tuple(d["trace"])
        return cls(**d)


@dataclass
class LayerMvmStats(MvmStats):
    """:class:`MvmStats` of one (layer, MVM kind) plus the operand shapes of its calls.

    The backend's counters come from the emulator's results, which do not carry the inner
    dimension; :class:`ShapeRecordingImcBackend` adds the shapes of X (vectors x inner) and
    W (inner x outputs) here, summed over calls.
    """

    vectors: int = 0          # streamed vectors, summed over calls
    inner_sum: int = 0        # inner dimension (rows of the MVM), summed over calls
    outputs_sum: int = 0      # outputs, summed over calls

    def note_shapes(self, x_shape, w_shape) -> None:
        self.vectors += int(x_shape[0])
        self.inner_sum += int(w_shape[0])
        self.outputs_sum += int(w_shape[1])

    def summary(self) -> dict:
        """The per-(layer, kind) record of metrics.json (docs/training.md, "Per-layer MVM
        statistics").  ``inner`` and ``outputs`` are the calls' values (constant over an
        epoch's training steps; were they not, the rounded mean over calls)."""
        calls = max(1, self.calls)
        planes = ([] if self.active_rows_per_plane is None else
                  [float(v) / max(1, self.cycles_per_plane)
                   for v in np.asarray(self.active_rows_per_plane).tolist()])
        return {"calls": int(self.calls), "array_cycles": int(self.cycles),
                "adc_conversions": int(self.adc_conversions),
                "high_vref_conversions": int(self.high_vref_conversions),
                "bitcell_mults": int(self.bitcell_mults),
                "dac_row_drives": int(self.dac_row_drives),
                "dac_level_sum": int(self.dac_level_sum),
                "active_rows_per_plane": planes,
                "inner": int(round(self.inner_sum / calls)),
                "outputs": int(round(self.outputs_sum / calls)),
                "vectors_per_call": self.vectors / calls}


class ShapeRecordingImcBackend(ImcBackend):
    """The IMC backend, recording each call's operand shapes in its stats entry
    (:class:`LayerMvmStats`) after the emulator's counters."""

    def matmul(self, X, W, x_format, w_format, *, layer="", mvm=None, step=0):
        y = super().matmul(X, W, x_format, w_format, layer=layer, mvm=mvm, step=step)
        entry = self.stats[(layer, mvm.value if mvm else "")]
        if isinstance(entry, LayerMvmStats):
            entry.note_shapes(X.shape, W.shape)
        return y


def one_blas_thread():
    """A context in which the host's BLAS runs on one thread (``Trainer.run``)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


def _atomic_write(path: Path, write):
    """``write(tmp)`` then rename onto ``path`` (``imcsim.atomic``: all-or-nothing, and
    temporaries left by killed runs are removed)."""
    from imcsim.atomic import AtomicOutputs
    with AtomicOutputs(path, names=[path.name]) as out:
        write(out.temporary(path))


class Trainer:
    """Builds model, data and backends from a TrainConfig and trains."""

    def __init__(self, config: TrainConfig, out_dir, progress: bool = True):
        self.config = config
        self.xp = array_module(config.device)        # fails first, in one line, without a GPU
        # made when training starts (run), so a run refused earlier leaves no empty folder
        self.out_dir = Path(out_dir)
        self.progress = progress
        data = load_dataset(config.dataset, config.data_folder)
        self.data = normalize(data, config.reproducible)     # host copy (NumPy)
        xp = self.xp
        # the data set lives on the training device; batches are gathered there
        self.x_train, self.y_train = (to_device(self.data.x_train, xp),
                                      to_device(self.data.y_train, xp))
        self.x_test, self.y_test = (to_device(self.data.x_test, xp),
                                    to_device(self.data.y_test, xp))
        self.scheme = scheme_by_name(config.scheme, config.input_mapping)
        shape = self.data.x_train.shape[1:]
        self.model = build_model(config.model, shape, self.data.n_classes, config.seed,
                                 self.scheme).to_device(xp)
        for layer in self.model.all_layers():
            layer.reproducible = config.reproducible
        # per (layer, MVM kind) over the current epoch's training steps (evaluation records
        # into a scratch container, see evaluate)
        self.stats = defaultdict(LayerMvmStats)
        self._assign_backends()
        self._check_trace_request()
        self.threshold_apply = self._use_update_rule()
        self.rows = load_preset(config.preset).rows
        self.epoch_steps = 0
        self.epoch_write_words: dict[str, int] = {}
        self.optimizer = SGD(config.lr, momentum=config.momentum,
                             weight_decay=config.weight_decay)
        self.schedule = make_schedule(config.schedule, config.lr, config.epochs)
        self.history: list[dict] = []
        self.start_epoch = 0
        self.emulator_seconds = 0.0
        self._warned_no_plot = False

    # --- backends -------------------------------------------------------------------------
    def macro_config(self) -> MacroConfig:
        """The macro every IMC backend of this run emulates: the preset, with the run's
        controller options (``skip_masked_cycles``), a row DAC for its input mapping, its ADC
        law (``adc_rounding``), its noise scale (``noise_scale``, ``noise_scaled``) and, with
        ``calibrate_offsets``, its measured NMC code offsets."""
        preset = load_preset(self.config.preset)
        rounding = (preset.adc_rounding if self.config.adc_rounding is None
                    else Rounding(self.config.adc_rounding))
        chip = replace(preset, skip_masked_cycles=self.config.skip_masked_cycles,
                       input_bits=max(preset.input_bits, input_bits_for(self.scheme)),
                       adc_rounding=rounding,
                       nonideal=preset.nonideal.scaled(self.config.noise_scale,
                                                       self.config.noise_scaled))
        if self.config.calibrate_offsets:
            # measured once per chip at test (noise seed 0), as silicon is: every seed of a
            # run on this chip gets the same registers
            chip = calibrate_code_offsets(chip, seed=0)
        return chip

    def _assign_backends(self):
        cfg = self.config
        macro_cfg = self.macro_config()
        fp32, exact = Fp32Backend(reproducible=cfg.reproducible), ExactBackend()
        self.diagnostics = MvmDiagnostics() if cfg.diagnostic_steps else None
        imc = {k: ShapeRecordingImcBackend(macro_cfg, cfg.vref_of(k), cfg.seed, self.stats,
                                           self._trace_request(), device=cfg.device,
                                           diagnostics=self.diagnostics)
               for k in MvmKind}
        self.imc_backends = imc
        for layer in self.model.compute_layers():
            on_digital = layer.role in ("first", "last", "residual") and not (
                cfg.first_last_on_imc and layer.role != "residual")
            policy = {}
            for k in MvmKind:
                name = cfg.backend_of(k)
                if on_digital:
                    policy[k] = fp32
                else:
                    policy[k] = {"fp32": fp32, "exact": exact, "imc": imc[k]}[name]
            layer.policy = policy

    def _use_update_rule(self) -> dict:
        """Under the threshold rule, switch every layer with stored integer weights (a
        quantized forward MVM) to it; returns ``SGD.step``'s ``apply`` mapping (empty for
        'requantize')."""
        if self.config.update_rule != "threshold":
            return {}
        rule = self.config.threshold_rule()
        return {f"{layer.name}.w": layer.use_threshold_rule(rule).apply
                for layer in self._stored_weight_layers()}

    def _stored_weight_layers(self) -> list:
        """The layers whose forward MVM stores integer weights on the array (imc or exact:
        the exact backend stands for an ideal macro)."""
        return [la for la in self.model.compute_layers()
                if la.policy[MvmKind.FORWARD].quantized]

    def _trace_request(self):
        t = self.config.trace
        if t is None:
            return None
        layer, kind, step, path = t
        return (layer, MvmKind(kind), int(step), str(path))

    def _check_trace_request(self, start_step: int = 0):
        """Refuse a trace request that would never write its file: an unknown layer, an MVM
        kind that layer does not run on the emulator, a step outside the run, a bad path."""
        req = self._trace_request()
        if req is None:
            return
        from imcsim.atomic import resolve_output
        layer, kind, step, path = req
        layers = {la.name: la for la in self.model.compute_layers()}
        if layer not in layers:
            raise ValueError(f"trace: no layer {layer!r} in {self.config.model}; its layers "
                             f"are {', '.join(layers)}")
        if not isinstance(layers[layer].policy[kind], ImcBackend):
            on_imc = [name for name, la in layers.items()
                      if isinstance(la.policy[kind], ImcBackend)]
            raise ValueError(f"trace: the {kind.value} MVM of {layer} does not run on the "
                             f"emulator (layers with {kind.value} on IMC: "
                             f"{', '.join(on_imc) or 'none'}; see --imc)")
        total = self.config.epochs * self._steps_per_epoch()
        if not start_step <= step < total:
            raise ValueError(f"trace: step {step} is not in this run (steps {start_step} to "
                             f"{total - 1})")
        resolve_output(path, "trace")

    # --- checkpoints ----------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.npz"

    def save_checkpoint(self, epoch: int):
        arrays = {f"param/{k}": to_host(v) for k, v in self.model.params.items()}
        arrays.update({f"buffer/{k}": to_host(v) for k, v in self.model.buffers.items()})
        opt = self.optimizer.state_dict()
        arrays.update({f"opt/{k}": np.asarray(v) for k, v in flatten_state(opt).items()})
        for layer in self._threshold_layers():
            state = layer.threshold_weights.state_dict()
            arrays.update({f"threshold/{layer.name}/{k}": np.asarray(v)
                           for k, v in state.items()})
        # wall times stay in metrics.json: identical runs leave identical checkpoint bytes
        arrays["meta"] = np.array(json.dumps({"epoch": epoch, "config": self.config.to_json(),
                                              "history": without_wall_times(self.history)}))

        def write(tmp):
            with open(tmp, "wb") as fh:
                write_checkpoint(fh, arrays)
        _atomic_write(self.checkpoint_path, write)

    def load_checkpoint(self, path=None):
        """Restore parameters, buffers, optimizer state and history from a checkpoint.

        Everything is read and checked before anything is restored: a missing, truncated or
        corrupt checkpoint, or one of another configuration, raises a one-line ValueError
        naming the file, and the model stays as it was.
        """
        path = Path(path) if path else self.checkpoint_path
        if not path.is_file():
            raise ValueError(f"resume: no checkpoint at {path}")
        params, buffers = self.model.params, self.model.buffers
        try:
            with np.load(path, allow_pickle=False) as ck:
                meta = json.loads(str(ck["meta"]))
                saved = TrainConfig.from_json(meta["config"])
                arrays = {k: ck[k] for k in ck.files if k != "meta"}
            epoch, history = int(meta["epoch"]), list(meta["history"])
        except Exception as exc:        # BadZipFile, EOFError, KeyError, JSON and zlib errors
            raise ValueError(f"resume: {path} is not a readable checkpoint (truncated or "
                             f"corrupt: {typed_line(exc)})") from None
        if not same_run(saved, self.config):
            raise ValueError(f"resume: {path} was written with another configuration")
        for prefix, target in (("param/", params), ("buffer/", buffers)):
            for k, v in target.items():
                got = arrays.get(prefix + k)
                if got is None or got.shape != v.shape or got.dtype.kind != "f":
                    raise ValueError(f"resume: {path} has no {prefix}{k} of shape {v.shape}")
        if epoch < 0:
            raise ValueError(f"resume: {path} records epoch {epoch}")
        # the threshold rule's stored weights and registers: checked (ThresholdWeights
        # validates shapes, dtypes and ranges) before anything is restored
        restored = []
        for layer in self._threshold_layers():
            tw = layer.threshold_weights
            prefix = f"threshold/{layer.name}/"
            state = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            try:
                fresh = ThresholdWeights(tw.q, tw.acc, tw.scale, tw.rule)
                fresh.load_state_dict(state, self.xp)
            except ValueError as exc:
                raise ValueError(f"resume: {path}: {layer.name}: {first_line(exc)}") from None
            restored.append((tw, fresh))
        opt = {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}
        try:
            self.optimizer.load_state_dict(unflatten_state(opt))
        except ValueError as exc:
            raise ValueError(f"resume: {path}: optimizer {first_line(exc)}") from None
        for tw, fresh in restored:
            tw.q, tw.acc, tw.scale = fresh.q, fresh.acc, fresh.scale
        for k in params:
            params[k][...] = to_device(arrays[f"param/{k}"], self.xp)
        for k in buffers:
            buffers[k][...] = to_device(arrays[f"buffer/{k}"], self.xp)
        self.history = restore_wall_times(history, self.out_dir)
        self.start_epoch = epoch + 1

    def _threshold_layers(self) -> list:
        return [la for la in self.model.compute_layers() if la.threshold_weights is not None]

    # --- loop -----------------------------------------------------------------------------
    def _steps_per_epoch(self):
        n = max(1, len(self.data.y_train) // self.config.batch_size)
        if self.config.max_steps_per_epoch:
            n = min(n, self.config.max_steps_per_epoch)
        return n

    def _metrics(self, out, y):
        """(loss gradient, host loss, host correct count): one device-to-host transfer."""
        xp = self.xp
        if self.config.reproducible:
            from imcsim.training.repro import softmax_cross_entropy
            loss, grad = softmax_cross_entropy(out, y)
            return grad, loss, int((out.argmax(axis=1) == y).sum())
        loss, grad = softmax_cross_entropy_array(out, y)
        correct = (out.argmax(axis=1) == y).sum()
        host = to_host(xp.stack([xp.asarray(loss, dtype=xp.float64),
                                 xp.asarray(correct, dtype=xp.float64)]))
        return grad, float(host[0]), int(host[1])

    def evaluate(self, x, y, batch=256, tag=0):
        """(mean loss, accuracy) of the model on (x, y), without training (on one BLAS
        thread, as :meth:`run`).

        The emulator's MVMs of the evaluation are counted in a scratch container, not in
        ``self.stats``: the per-epoch statistics are the training steps' alone.  Their noise
        keys are their own: each batch runs as step ``eval:<tag>:<batch start>`` (``run`` tags
        with the epoch), so that on a non-ideal macro the evaluation's noise is neither the
        last training step's nor shared between test batches, and a resumed run evaluates
        with the same keys as an uninterrupted one.
        """
        with one_blas_thread():
            return self._evaluate(x, y, batch, tag)

    def _evaluate(self, x, y, batch, tag):
        x, y = to_device(x, self.xp), to_device(y, self.xp)
        losses, correct = [], 0
        saved = {kind: backend.stats for kind, backend in self.imc_backends.items()}
        scratch = defaultdict(LayerMvmStats)
        for backend in self.imc_backends.values():
            backend.stats = scratch
        bar = Progress(-(-len(y) // batch), "evaluation", "batch", enabled=self.progress)
        try:
            for i in range(0, len(y), batch):
                self.model.set_step(f"eval:{tag}:{i}")
                out = self.model.forward(x[i:i + batch], train=False)
                _, loss, hits = self._metrics(out, y[i:i + batch])
                losses.append(loss * len(y[i:i + batch]))
                correct += hits
                bar.update(1)
        finally:
            bar.close()
            for kind, backend in self.imc_backends.items():
                backend.stats = saved[kind]
        return float(np.sum(losses) / len(y)), correct / len(y)

    def train_epoch(self, epoch: int):
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch])
        steps = self._steps_per_epoch()
        n = len(self.data.y_train)
        batches = iterate_batches(n, min(cfg.batch_size, n), rng, shuffle=True, drop_last=True,
                                  xp=self.xp)
        self.stats.clear()
        if self.diagnostics is not None:
            self.diagnostics.clear()
            self.diagnostics.steps = frozenset(
                epoch * steps + i for i in sampled_steps(cfg.seed, epoch, steps,
                                                         cfg.diagnostic_steps))
        writers = self._stored_weight_layers()
        words = dict.fromkeys((la.name for la in writers), 0)
        w_format = self.scheme.weight
        losses, correct, seen, done = [], 0, 0, 0
        bar = Progress(steps, f"epoch {epoch + 1}/{cfg.epochs}", "step", enabled=self.progress)
        for i, idx in enumerate(batches):
            if i >= steps:
                break
            x = self.x_train[idx]
            if cfg.augment:
                x = augment_crop_flip(x, np.random.default_rng([cfg.seed, epoch, i]))
            y = self.y_train[idx]
            step = epoch * steps + i
            self.model.set_step(step)
            out = self.model.forward(x, train=True)
            grad, loss, hits = self._metrics(out, y)
            # the input images need no gradient: the first layer's backward MVM is not run
            self.model.backward(grad, need_input_grad=False)
            lr = self.schedule(epoch + i / steps)
            self.optimizer.step(self.model.params, self.model.grads, lr=lr,
                                apply=self.threshold_apply or None)
            check_converging(self.model.params, loss, epoch, step)
            # CIMA words this step's update rewrites: the forward's stored operand before the
            # update against the one the next forward stores
            for layer in writers:
                words[layer.name] += changed_cima_words(layer.forward_stored,
                                                        layer.stored_weight(), w_format,
                                                        self.rows)
            done += 1
            losses.append(loss)
            correct += hits
            seen += len(y)
            bar.update(1, f"loss={np.mean(losses):.3f} acc={correct / seen:.3f}")
        bar.close()
        self.epoch_steps = done
        self.epoch_write_words = words
        return float(np.mean(losses)), correct / seen

    def run(self, resume: bool = False) -> list[dict]:
        """Train the remaining epochs (all, or those after the checkpoint with ``resume``);
        returns the history, one row per epoch.

        The host's BLAS runs on one thread here, whatever ``OPENBLAS_NUM_THREADS`` and its
        kin say: a float product's rounding depends on how a BLAS splits it over threads, so
        this is what makes a run's weights independent of thread settings (a run inside a
        sweep equals the same run alone).  Numba's threads stay as they are: the emulator's
        results do not depend on them.  docs/training.md, Determinism.
        """
        made = not self.out_dir.exists()
        try:
            with one_blas_thread():
                return self._run(resume)
        except BaseException:
            # a run that fails (or is interrupted) before writing anything leaves no folder
            if made and self.out_dir.is_dir() and not any(self.out_dir.iterdir()):
                self.out_dir.rmdir()
            raise

    def _run(self, resume: bool) -> list[dict]:
        if resume:
            self.load_checkpoint()
            self._check_trace_request(self.start_epoch * self._steps_per_epoch())
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for epoch in range(self.start_epoch, self.config.epochs):
            t0 = time.perf_counter()
            train_loss, train_acc = self.train_epoch(epoch)
            mvm_stats = self._stats_summary()
            test_loss, test_acc = self.evaluate(self.x_test, self.y_test, tag=epoch + 1)
            row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                   "test_loss": test_loss, "test_acc": test_acc,
                   "lr": self.schedule(epoch), "seconds": time.perf_counter() - t0}
            row.update(mvm_stats)
            row["steps"] = self.epoch_steps
            row["mvm_stats"] = self._layer_stats()
            if self.diagnostics is not None:
                row["mvm_error"] = self.diagnostics.summary(
                    [la.name for la in self.model.compute_layers()])
            row["cima_write_words"] = int(sum(self.epoch_write_words.values()))
            row["cima_write_words_by_layer"] = dict(self.epoch_write_words)
            self.history.append(row)
            self.save_checkpoint(epoch)
            self.write_metrics()
            if self.progress:
                print(f"epoch {epoch + 1}/{self.config.epochs}: loss {train_loss:.4f} "
                      f"train {train_acc:.4f} test {test_acc:.4f} ({row['seconds']:.1f} s)",
                      flush=True)
        self.write_metrics()
        return self.history

    def _stats_summary(self) -> dict:
        """Per MVM kind over the epoch: high-Vref share, clipping rate, active rows per plane."""
        out = {}
        for kind in MvmKind:
            items = [s for (layer, k), s in self.stats.items() if k == kind.value]
            conv = sum(s.adc_conversions for s in items)
            if not conv:
                continue
            out[f"{kind.value}_high_vref_share"] = sum(s.high_vref_conversions for s in items) / conv
            out[f"{kind.value}_clip_rate"] = sum(s.clipped_conversions for s in items) / conv
            planes = [s.active_rows_per_plane / max(1, s.cycles_per_plane) for s in items
                      if s.active_rows_per_plane is not None]
            if planes and kind is not MvmKind.FORWARD:
                out[f"{kind.value}_active_rows_per_plane"] = np.mean(planes, axis=0).round(2).tolist()
        return out

    def _layer_stats(self) -> dict:
        """{layer: {kind: record}} of the epoch's training MVMs on the emulator, in the model's
        layer order and the order forward, backward, update (docs/training.md, "Per-layer
        MVM statistics")."""
        out: dict = {}
        for layer in self.model.compute_layers():
            for kind in MvmKind:
                entry = self.stats.get((layer.name, kind.value))
                if entry is not None and entry.calls:
                    out.setdefault(layer.name, {})[kind.value] = entry.summary()
        return out

    # --- outputs --------------------------------------------------------------------------
    def write_metrics(self):
        if not self.history:
            return
        # the CSV takes the scalar columns; lists and per-layer dicts are in metrics.json
        keys = sorted({k for row in self.history for k in row
                       if not isinstance(row[k], (list, dict))})

        def write_csv(tmp):
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
                w.writeheader()
                for row in self.history:
                    w.writerow(row)
        _atomic_write(self.out_dir / "metrics.csv", write_csv)
        doc = {"config": json.loads(self.config.to_json()), "history": self.history}
        _atomic_write(self.out_dir / "metrics.json",
                      lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=1)))
        try:
            plot_curves(self.history, self.out_dir / "curves.png", title=self.config.model)
        except MissingDependency as exc:        # curves are a picture of metrics.json
            if not self._warned_no_plot and self.progress:
                print(f"note: curves.png not written: {exc}", file=sys.stderr)
            self._warned_no_plot = True


def plot_curves(history, path, title=""):
    """Training curves (loss, accuracy) as a PNG (needs matplotlib, the ``plot`` extra)."""
    from imcsim.optional import require
    matplotlib = require("matplotlib", "plot", "curves.png")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from imcsim.plotting import save_figure
    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(ep, [r["train_loss"] for r in history], label="train")
    a.plot(ep, [r["test_loss"] for r in history], label="test")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(ep, [r["train_acc"] for r in history], label="train")
    b.plot(ep, [r["test_acc"] for r in history], label="test")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


__all__ = ["TrainConfig", "Trainer", "LayerMvmStats", "ShapeRecordingImcBackend", "parse_vref",
           "plot_curves", "field"]
