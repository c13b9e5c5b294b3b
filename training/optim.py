"""SGD with momentum / weight decay over dicts of arrays, and learning-rate schedules.

Parameters and gradients are plain ``dict[str, array]`` keyed by dotted names such as
``"conv1.weight"`` or ``"bn1.gamma"``; the arrays are NumPy arrays, or CuPy arrays on a GPU
(``training.xp``).  :class:`SGD` updates the parameter arrays in place, in their namespace, and
keeps one velocity buffer per name next to its parameter.  Schedules are small callables mapping a (fractional)
epoch to a learning rate; pass the result to ``SGD.step(..., lr=...)``.

The threshold update rule (:class:`ThresholdWeights`, mixed-precision training after the
memristor work of Nandakumar et al.) keeps a layer's weights as low-precision integers, as the
array stores them, plus one high-precision digital register per weight that accumulates the
updates; a weight is rewritten only when its register has crossed a threshold.  ``SGD.step``
hands such a parameter's update to it (``apply``) instead of adding it to the parameter.
docs/training.md, "Weight-update rules".
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from imcsim.training.xp import is_array, namespace_of, to_host

__all__ = ["SGD", "default_no_decay", "NO_DECAY_SUFFIXES", "ConstantLR", "StepLR", "CosineLR",
           "make_schedule", "SCHEDULE_NAMES", "UPDATE_RULES", "ACC_BITS", "ACC_FRAC_BITS",
           "ACC_MIN", "ACC_MAX", "ThresholdRule", "threshold_transfer", "ThresholdWeights"]

NO_DECAY_SUFFIXES = (".bias", ".beta", ".gamma")
SCHEDULE_NAMES = ("constant", "step", "cosine")
_VELOCITY_PREFIX = "velocity:"


def default_no_decay(name: str) -> bool:
    """True for parameters exempt from weight decay: names ending in ``.bias``, ``.beta`` or
    ``.gamma`` (biases and batch-norm shift/scale)."""
    return name.endswith(NO_DECAY_SUFFIXES)


def _real(value: object, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{arg} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{arg} must be finite, got {value!r}")
    return value


def _scalar(value: object) -> object:
    """Unwrap 0-d arrays (as ``np.load`` returns them) into Python scalars."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


class SGD:
    """Stochastic gradient descent with momentum, optional Nesterov, and L2 weight decay.

    The update for a parameter ``p`` with gradient ``g`` (PyTorch convention, no dampening)::

        d = g + weight_decay * p        # only if not no_decay(name); else d = g
        v = momentum * v + d            # v starts at zero, so the first v is d
        u = d + momentum * v if nesterov else v
        p -= lr * u                     # in place

    Parameters
    ----------
    lr : float
        Default learning rate, >= 0 (``step`` may override it per call, e.g. from a schedule).
    momentum : float
        In ``[0, 1)``.  0 gives plain SGD (no velocity buffers are kept).
    weight_decay : float
        L2 coefficient, >= 0.  Applied to every parameter for which ``no_decay(name)`` is
        false; by default that is every name **not** ending in ``.bias``, ``.beta`` or
        ``.gamma`` (see :func:`default_no_decay`).
    nesterov : bool
        Nesterov momentum; requires ``momentum > 0``.
    no_decay : callable(str) -> bool, optional
        Predicate overriding :func:`default_no_decay`: return True for names that must not be
        weight-decayed.

    Notes
    -----
    Parameters must be floating-point arrays (NumPy, or CuPy on a GPU); they are modified in
    place, and the velocity buffers have each parameter's dtype, shape and namespace (a buffer
    restored by :meth:`load_state_dict` moves to its parameter's device on the next step).  ``grads`` may hold a subset of the names in
    ``params`` (parameters without a gradient are left alone, their velocity untouched); a
    gradient without a parameter, or with another shape, is a ``ValueError``.
    """

    def __init__(self, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                 nesterov: bool = False,
                 no_decay: Callable[[str], bool] | None = None) -> None:
        self.lr = _real(lr, "lr")
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        self.momentum = _real(momentum, "momentum")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        self.weight_decay = _real(weight_decay, "weight_decay")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"nesterov must be a bool, got {nesterov!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True requires momentum > 0")
        if no_decay is not None and not callable(no_decay):
            raise ValueError(f"no_decay must be a callable(str) -> bool, got {no_decay!r}")
        self.no_decay: Callable[[str], bool] = no_decay or default_no_decay
        self.velocity: dict[str, np.ndarray] = {}
        self.steps = 0

    def decays(self, name: str) -> bool:
        """Whether weight decay applies to parameter ``name``."""
        return self.weight_decay > 0 and not self.no_decay(name)

    def step(self, params: dict[str, np.ndarray], grads: Mapping[str, np.ndarray],
             lr: float | None = None,
             apply: Mapping[str, Callable[[np.ndarray, np.ndarray, float], None]] | None = None
             ) -> None:
        """Apply one update to ``params`` in place.

        Parameters
        ----------
        params : dict[str, np.ndarray]
            Floating-point parameter arrays, updated in place.
        grads : Mapping[str, np.ndarray]
            Gradients of the loss, same shapes as the matching parameters; names must be a
            subset of ``params``.
        lr : float, optional
            Learning rate for this step (>= 0); ``None`` uses ``self.lr``.
        apply : Mapping[str, callable(p, u, lr)], optional
            For these names the last line of the update, ``p -= lr * u``, is replaced by
            ``apply[name](p, u, lr)`` (``u`` the update direction of the class docstring, in
            ``p``'s dtype and namespace; the callable updates ``p`` in place).  Weight decay
            and momentum are computed as for every other parameter.  Used by the threshold
            update rule (:meth:`ThresholdWeights.apply`).  Names must be in ``params``.
        """
        step_lr = self.lr if lr is None else _real(lr, "lr")
        if step_lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        extra = [k for k in grads if k not in params]
        if extra:
            raise ValueError(f"grads has names with no parameter: {sorted(extra)}")
        apply = {} if apply is None else apply
        stray = [k for k in apply if k not in params]
        if stray:
            raise ValueError(f"apply has names with no parameter: {sorted(stray)}")
        # Validate everything before touching anything, so a bad call leaves no partial update.
        for name, g in grads.items():
            p = params[name]
            if not is_array(p) or not np.issubdtype(p.dtype, np.floating):
                raise ValueError(f"parameter {name!r} must be a floating-point ndarray, got "
                                 f"{type(p).__name__}"
                                 + (f" of dtype {p.dtype}" if is_array(p) else ""))
            g_shape = tuple(g.shape) if is_array(g) else np.shape(g)
            if g_shape != p.shape:
                raise ValueError(f"gradient {name!r} has shape {g_shape}, parameter has "
                                 f"{p.shape}")
            v = self.velocity.get(name)
            if v is not None and v.shape != p.shape:
                raise ValueError(f"velocity {name!r} has shape {v.shape}, parameter has "
                                 f"{p.shape}")
        for name, g in grads.items():
            p = params[name]
            xp = namespace_of(p)
            d = xp.asarray(g, dtype=p.dtype)
            if self.decays(name):
                d = d + p.dtype.type(self.weight_decay) * p
            if self.momentum > 0:
                v = self.velocity.get(name)
                if v is not None and namespace_of(v) is not xp:
                    v = self.velocity[name] = xp.array(to_host(v), dtype=p.dtype, copy=True)
                if v is None:
                    v = xp.array(d, dtype=p.dtype, copy=True)   # momentum * 0 + d
                    self.velocity[name] = v
                else:
                    v *= p.dtype.type(self.momentum)
                    v += d
                update = d + p.dtype.type(self.momentum) * v if self.nesterov else v
            else:
                update = d
            if name in apply:
                apply[name](p, update, step_lr)
            else:
                p -= p.dtype.type(step_lr) * update
        self.steps += 1

    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, object]:
        """Checkpointable state as a flat dict of scalars and arrays.

        Returns
        -------
        dict
            ``{'lr': float, 'momentum': float, 'weight_decay': float, 'nesterov': bool,
            'steps': int, 'velocity:<name>': np.ndarray (host copy), ...}``.  Keys are strings and
            values are scalars or arrays, so the dict can go straight into ``np.savez``
            (``np.load`` gives 0-d arrays back for the scalars; :meth:`load_state_dict`
            accepts those).  The ``no_decay`` predicate is not part of the state.
        """
        state: dict[str, object] = {"lr": self.lr, "momentum": self.momentum,
                                    "weight_decay": self.weight_decay,
                                    "nesterov": self.nesterov, "steps": self.steps}
        for name, v in self.velocity.items():
            state[_VELOCITY_PREFIX + name] = np.array(to_host(v), copy=True)
        return state

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore hyperparameters, step count and velocity buffers from :meth:`state_dict`.

        Existing velocity buffers are replaced (buffers are copied, not aliased).
        """
        required = ("lr", "momentum", "weight_decay", "nesterov", "steps")
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"state dict lacks {', '.join(missing)}")
        unknown = [k for k in state if k not in required and not k.startswith(_VELOCITY_PREFIX)]
        if unknown:
            raise ValueError(f"state dict has unknown keys {sorted(unknown)}")
        fresh = SGD(lr=_scalar(state["lr"]), momentum=_scalar(state["momentum"]),
                    weight_decay=_scalar(state["weight_decay"]),
                    nesterov=bool(_scalar(state["nesterov"])), no_decay=self.no_decay)
        steps = _scalar(state["steps"])
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"state dict 'steps' must be an int >= 0, got {steps!r}")
        velocity: dict[str, np.ndarray] = {}
        for key, value in state.items():
            if key.startswith(_VELOCITY_PREFIX):
                arr = to_host(value)
                if not np.issubdtype(arr.dtype, np.floating):
                    raise ValueError(f"state dict {key!r} must be a floating-point array, got "
                                     f"dtype {arr.dtype}")
                velocity[key[len(_VELOCITY_PREFIX):]] = np.array(arr, copy=True)
        self.lr, self.momentum = fresh.lr, fresh.momentum
        self.weight_decay, self.nesterov = fresh.weight_decay, fresh.nesterov
        self.steps = steps
        self.velocity = velocity

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, "
                f"weight_decay={self.weight_decay}, nesterov={self.nesterov})")


# ----------------------------------------------------------------------------------------------
# Learning-rate schedules
# ----------------------------------------------------------------------------------------------
def _check_epoch(epoch: object) -> float:
    e = _real(epoch, "epoch")
    if e < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch!r}")
    return e


def _positive(value: object, arg: str) -> float:
    v = _real(value, arg)
    if v <= 0:
        raise ValueError(f"{arg} must be > 0, got {value!r}")
    return v


class ConstantLR:
    """``lr(epoch) = base`` for every epoch >= 0.

    Parameters
    ----------
    base : float
        Learning rate, > 0.
    """

    def __init__(self, base: float) -> None:
        self.base = _positive(base, "base")

    def __call__(self, epoch: float) -> float:
        _check_epoch(epoch)
        return self.base

    def __repr__(self) -> str:
        return f"ConstantLR(base={self.base})"


class StepLR:
    """``lr(epoch) = base * gamma ** floor(epoch / step_epochs)``.

    Parameters
    ----------
    base : float
        Initial learning rate, > 0.
    step_epochs : float
        Epochs between decays, > 0.  With ``step_epochs=10`` the rate is ``base`` on
        ``[0, 10)``, ``base * gamma`` on ``[10, 20)``, ...
    gamma : float
        Multiplicative factor per step, in ``(0, 1]``.
    """

    def __init__(self, base: float, step_epochs: float, gamma: float = 0.1) -> None:
        self.base = _positive(base, "base")
        self.step_epochs = _positive(step_epochs, "step_epochs")
        self.gamma = _real(gamma, "gamma")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma!r}")

    def __call__(self, epoch: float) -> float:
        e = _check_epoch(epoch)
        # A tiny tolerance so that e.g. epoch = 3 * 0.1 / 0.1 lands on its boundary.
        k = math.floor(e / self.step_epochs + 1e-9)
        return self.base * self.gamma ** k

    def __repr__(self) -> str:
        return f"StepLR(base={self.base}, step_epochs={self.step_epochs}, gamma={self.gamma})"


class CosineLR:
    """Linear warm-up, then cosine annealing from ``base`` to ``min_lr``.

    ::

        epoch < warmup_epochs:  lr = base * epoch / warmup_epochs        (0 at epoch 0)
        otherwise:              t  = min(1, (epoch - warmup) / (total - warmup))
                                lr = min_lr + (base - min_lr) * (1 + cos(pi * t)) / 2

    so ``lr(warmup_epochs) = base`` and ``lr(epoch) = min_lr`` for ``epoch >= total_epochs``.

    Parameters
    ----------
    base : float
        Peak learning rate, > 0.
    total_epochs : float
        Length of the schedule including warm-up, > 0.
    warmup_epochs : float
        In ``[0, total_epochs)``.
    min_lr : float
        Final learning rate, in ``[0, base]``.
    """

    def __init__(self, base: float, total_epochs: float, warmup_epochs: float = 0.0,
                 min_lr: float = 0.0) -> None:
        self.base = _positive(base, "base")
        self.total_epochs = _positive(total_epochs, "total_epochs")
        self.warmup_epochs = _real(warmup_epochs, "warmup_epochs")
        if not 0.0 <= self.warmup_epochs < self.total_epochs:
            raise ValueError(f"warmup_epochs must lie in [0, total_epochs={self.total_epochs}), "
                             f"got {warmup_epochs!r}")
        self.min_lr = _real(min_lr, "min_lr")
        if not 0.0 <= self.min_lr <= self.base:
            raise ValueError(f"min_lr must lie in [0, base={self.base}], got {min_lr!r}")

    def __call__(self, epoch: float) -> float:
        e = _check_epoch(epoch)
        if e < self.warmup_epochs:
            return self.base * e / self.warmup_epochs
        t = min(1.0, (e - self.warmup_epochs) / (self.total_epochs - self.warmup_epochs))
        return self.min_lr + (self.base - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def __repr__(self) -> str:
        return (f"CosineLR(base={self.base}, total_epochs={self.total_epochs}, "
                f"warmup_epochs={self.warmup_epochs}, min_lr={self.min_lr})")


def make_schedule(name: str, base_lr: float, epochs: float, **kwargs: object
                  ) -> ConstantLR | StepLR | CosineLR:
    """Build a schedule by name.

    Parameters
    ----------
    name : {'constant', 'step', 'cosine'}
    base_lr : float
        Initial / peak learning rate, > 0.
    epochs : float
        Planned training length, > 0.
    **kwargs
        Passed to the class, overriding the defaults below.

    Returns
    -------
    ConstantLR, StepLR or CosineLR
        ``'constant'``: ``ConstantLR(base_lr)``.
        ``'step'``: ``StepLR(base_lr, step_epochs=max(1, ceil(epochs / 3)), gamma=0.1)`` --
        two decays by 10x over the run.
        ``'cosine'``: ``CosineLR(base_lr, total_epochs=epochs, warmup_epochs=0, min_lr=0)``.
    """
    base_lr = _positive(base_lr, "base_lr")
    epochs = _positive(epochs, "epochs")
    key = str(name).lower()
    if key == "constant":
        return ConstantLR(base_lr, **kwargs)  # type: ignore[arg-type]
    if key == "step":
        opts = {"step_epochs": max(1, math.ceil(epochs / 3)), "gamma": 0.1}
        opts.update(kwargs)
        return StepLR(base_lr, **opts)  # type: ignore[arg-type]
    if key == "cosine":
        opts = {"total_epochs": epochs}
        opts.update(kwargs)
        return CosineLR(base_lr, **opts)  # type: ignore[arg-type]
    raise ValueError(f"unknown schedule name {name!r}; choose one of {', '.join(SCHEDULE_NAMES)}")


# ----------------------------------------------------------------------------------------------
# The threshold (mixed-precision) weight-update rule
# ----------------------------------------------------------------------------------------------
#: weight-update rules of the engine: 'requantize' (SAWB of the FP32 master weights every
#: step) and 'threshold' (:class:`ThresholdWeights`)
UPDATE_RULES = ("requantize", "threshold")

#: width of the per-weight update register [bits], signed two's complement
ACC_BITS = 32
#: fraction bits of the register: it counts units of 2**-16 of the stored weight's LSB
ACC_FRAC_BITS = 16
#: the register's range [units of 2**-ACC_FRAC_BITS LSB]: +/-32768 LSB
ACC_MIN = -(1 << (ACC_BITS - 1))
ACC_MAX = (1 << (ACC_BITS - 1)) - 1


def _positive_int(value: object, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{arg}: expected an integer >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ThresholdRule:
    """Parameters of the threshold rule.

    Attributes
    ----------
    threshold : int
        T [LSB of the stored weight], >= 1: a weight is rewritten when its register's
        magnitude reaches T LSBs.  At most the format's span 2 L (a larger threshold could
        only ever write saturated weights).
    max_level : int
        L [LSB], >= 1: the stored weights are the integers of [-L, L] (``BinaryFormat.max_value``,
        8 for binary:5).
    """

    threshold: int
    max_level: int

    def __post_init__(self):
        t = _positive_int(self.threshold, "threshold")
        level = _positive_int(self.max_level, "max_level")
        if t > 2 * level:
            raise ValueError(f"threshold: at most the stored format's span 2 * {level} = "
                             f"{2 * level} LSBs (a larger one only writes saturated weights), "
                             f"got {t}")
        if t > ACC_MAX >> ACC_FRAC_BITS:
            raise ValueError(f"threshold: the {ACC_BITS}-bit register holds at most "
                             f"{ACC_MAX >> ACC_FRAC_BITS} whole LSBs, got {t}")


def threshold_transfer(q, acc, increment, rule: ThresholdRule):
    """One step of the threshold rule on integer arrays (any namespace, no float arithmetic).

    The register adds the increment (saturating at its range); where the magnitude of its
    integer part reaches ``rule.threshold``, that whole integer part (truncated toward zero)
    moves into the stored weight, which saturates at [-L, L], and the register keeps the
    fraction (|acc| < 1 LSB).  The part of a transfer beyond the format's range is dropped,
    not kept: a weight held at +L by a gradient that keeps pushing would otherwise run its
    register up to saturation and take as long to come back.

    Parameters
    ----------
    q : int array, any shape
        Stored weights [LSB], in [-L, L].
    acc : int array, shape of ``q``
        Registers [2**-ACC_FRAC_BITS LSB], in [ACC_MIN, ACC_MAX].
    increment : int array, shape of ``q``
        This step's update [2**-ACC_FRAC_BITS LSB].
    rule : ThresholdRule

    Returns
    -------
    (q, acc) : new arrays, dtypes of the inputs ``q`` and ``acc``
        Nothing is modified in place (a caller may hold the old stored weights).
    """
    xp = namespace_of(q, acc, increment)
    total = xp.clip(acc.astype(np.int64) + increment.astype(np.int64), ACC_MIN, ACC_MAX)
    whole = xp.sign(total) * (xp.abs(total) >> ACC_FRAC_BITS)          # toward zero
    moved = xp.where(xp.abs(whole) >= rule.threshold, whole, 0)
    level = rule.max_level
    q_new = xp.clip(q.astype(np.int64) + moved, -level, level).astype(q.dtype)
    acc_new = (total - moved * (1 << ACC_FRAC_BITS)).astype(acc.dtype)
    return q_new, acc_new


class ThresholdWeights:
    """One layer's stored integer weights and their update registers (the threshold rule).

    The array holds ``q``; the layer's forward, backward and update MVMs use ``q`` directly
    (no per-step re-quantisation).  The FP32 parameter the optimizer sees is kept equal to
    ``q * scale`` (weight decay acts on the stored weight).  ``scale`` is fixed at
    initialisation: BatchNorm follows every layer that can hold these weights, so the
    layer's output does not depend on the weight scale, and re-deriving it would change
    every stored integer at once (a rewrite of the whole array).

    Parameters
    ----------
    q : int array, the parameter's shape and namespace
        Stored weights [LSB], in [-L, L]; kept as int16 (any BinaryFormat value fits).
    acc : int array, the shape of ``q``
        Update registers [2**-ACC_FRAC_BITS LSB], in [ACC_MIN, ACC_MAX]; kept as int32.
    scale : float
        Weight units per LSB, > 0 (host float).
    rule : ThresholdRule
    """

    def __init__(self, q, acc, scale: float, rule: ThresholdRule):
        if not isinstance(rule, ThresholdRule):
            raise TypeError(f"rule: expected a ThresholdRule, got {rule!r}")
        scale = _real(scale, "scale")
        if scale <= 0:
            raise ValueError(f"scale: must be > 0, got {scale!r}")
        if tuple(q.shape) != tuple(acc.shape):
            raise ValueError(f"acc: shape {tuple(acc.shape)} differs from q's {tuple(q.shape)}")
        if q.dtype.kind not in "iu" or acc.dtype.kind not in "iu":
            raise ValueError(f"q, acc: expected integer arrays, got {q.dtype} and {acc.dtype}")
        level = rule.max_level
        if q.size and bool(((q < -level) | (q > level)).any()):
            raise ValueError(f"q: stored weights must lie in [{-level}, {level}]")
        if acc.size and bool(((acc < ACC_MIN) | (acc > ACC_MAX)).any()):
            raise ValueError(f"acc: registers must lie in [{ACC_MIN}, {ACC_MAX}]")
        self.q = q.astype(np.int16)
        self.acc = acc.astype(np.int32)
        self.scale = scale
        self.rule = rule

    @classmethod
    def from_weights(cls, w, q0, scale: float, rule: ThresholdRule) -> ThresholdWeights:
        """The initial state from FP weights ``w`` and their quantisation ``q0 * scale``.

        ``w`` : float array; ``q0`` : integer-valued array of w's shape and namespace (the
        quantizer's values, in [-L, L]).  The registers start with the rounding remainder
        ``clip(w / scale, -L, L) - q0`` (|.| <= 1/2 LSB, to the register's resolution), so
        stored weight plus register is the initial FP weight.
        """
        xp = namespace_of(w, q0)
        level = rule.max_level
        w64 = xp.asarray(w, dtype=np.float64)
        rest = xp.clip(w64 / float(scale), -level, level) - q0
        acc = xp.rint(rest * float(1 << ACC_FRAC_BITS)).astype(np.int64)
        return cls(xp.rint(xp.asarray(q0, dtype=np.float64)).astype(np.int64), acc, scale,
                   rule)

    def weights(self):
        """float64 array (the parameter's shape): the stored weights ``q * scale``."""
        return self.q * self.scale

    def apply(self, p, update, lr: float) -> None:
        """SGD's last line under the threshold rule (``SGD.step(..., apply=...)``).

        The step ``-lr * update`` [weight units] enters the registers in LSB units, rounded
        to nearest (ties to even) at the register's resolution of 2**-16 LSB and saturated
        at its range; where a register reaches the threshold, whole LSBs move into ``q``
        (:func:`threshold_transfer`); ``p`` (the FP32 parameter) is rewritten in place to
        ``q * scale``.

        p : float array, the parameter (same shape as ``q``); update : float array, same
        shape; lr : float >= 0.
        """
        xp = namespace_of(p, update)
        factor = -float(lr) * float(1 << ACC_FRAC_BITS) / self.scale
        inc = xp.clip(xp.rint(xp.asarray(update, dtype=np.float64) * factor), ACC_MIN, ACC_MAX)
        self.q, self.acc = threshold_transfer(self.q, self.acc, inc.astype(np.int64), self.rule)
        p[...] = self.weights().astype(p.dtype)

    def state_dict(self) -> dict[str, object]:
        """Host copies: ``{'q': int16 array, 'acc': int32 array, 'scale': float}``."""
        return {"q": np.array(to_host(self.q), copy=True),
                "acc": np.array(to_host(self.acc), copy=True), "scale": self.scale}

    def load_state_dict(self, state: Mapping[str, object], xp=np) -> None:
        """Restore from :meth:`state_dict` (arrays moved into namespace ``xp``); checked
        first (shapes, integer dtypes, ranges), so a bad state changes nothing."""
        missing = [k for k in ("q", "acc", "scale") if k not in state]
        if missing:
            raise ValueError(f"threshold state lacks {', '.join(missing)}")
        q, acc = to_host(state["q"]), to_host(state["acc"])
        if tuple(q.shape) != tuple(self.q.shape):
            raise ValueError(f"threshold state q has shape {tuple(q.shape)}, expected "
                             f"{tuple(self.q.shape)}")
        fresh = ThresholdWeights(q, acc, _scalar(state["scale"]), self.rule)
        self.q, self.acc = xp.asarray(fresh.q), xp.asarray(fresh.acc)
        self.scale = fresh.scale
