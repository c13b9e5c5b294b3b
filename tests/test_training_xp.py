"""The training engine's array namespace (NumPy on the CPU, CuPy on a GPU), tested on the CPU.

- Golden values: digests of weights, gradients and metrics computed with the engine as it was
  before it took a namespace (NumPy only), in configurations free of BLAS float matmuls, so the
  CPU results are bit-identical to that engine's.
- A strict stand-in for a device namespace (``DeviceArray`` / ``FAKE``: NumPy values behind an
  interface that, like CuPy, refuses implicit conversion to NumPy and mixing with host arrays,
  and that counts every transfer): whole training runs on it must give the CPU run's weights
  bit for bit, with no array coming back to the host inside a step.
- ``array_module('cuda')`` without CuPy or without a GPU: one line; ``imcsim train --device
  cuda``: that line and exit status 2.
- On a machine with CuPy and a GPU, per-operation checks against NumPy (skipped here).
"""
from __future__ import annotations

import dataclasses
import hashlib
import sys
import types

import numpy as np
import pytest
from numpy.lib.mixins import NDArrayOperatorsMixin

from imcsim import Macro, MacroConfig
from imcsim.reshape import reshape_conv_inputs
from imcsim.training import backends as backends_module
from imcsim.training import engine as engine_module
from imcsim.training.backends import ExactBackend, Fp32Backend, ImcBackend, MvmKind
from imcsim.training.data import augment_crop_flip
from imcsim.training.engine import TrainConfig, Trainer
from imcsim.training.layers import _pad_windows, softmax_cross_entropy
from imcsim.training.models import build_model
from imcsim.training.optim import SGD
from imcsim.training.quant import radix4_round
from imcsim.training.xp import DeviceUnavailable, array_module, namespace_of, to_device, to_host

ALL_IMC = (("forward", "imc"), ("backward", "imc"), ("update", "imc"))
ALL_EXACT = (("forward", "exact"), ("backward", "exact"), ("update", "exact"))
FWD_BWD_IMC = (("forward", "imc"), ("backward", "imc"), ("update", "exact"))
FWD_BWD_FP32_UPD = (("forward", "imc"), ("backward", "imc"), ("update", "fp32"))


# --- a strict stand-in for a device namespace ----------------------------------------------
class Transfers:
    """Sizes of the arrays moved host->device and device->host."""

    def __init__(self):
        self.h2d: list[int] = []
        self.d2h: list[int] = []

    def reset(self):
        self.h2d.clear()
        self.d2h.clear()


LOG = Transfers()


def _unwrap(v):
    if isinstance(v, DeviceArray):
        return v._a
    if isinstance(v, np.ndarray):
        raise TypeError(f"a host ndarray {v.shape} mixed with device arrays")
    if isinstance(v, (list, tuple)):
        return type(v)(_unwrap(x) for x in v)
    return v                                # Python / NumPy scalars, slices, None, dtypes


def _wrap(r):
    if isinstance(r, np.ndarray):
        return DeviceArray(r)
    if isinstance(r, np.generic):           # device reductions give 0-d arrays, not scalars
        return DeviceArray(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(x) for x in r)
    return r


class DeviceArray(NDArrayOperatorsMixin):
    """An array 'on the device': operators and the namespace's functions work; NumPy cannot
    see its values (``np.asarray`` raises), NumPy functions refuse it, and host arrays cannot
    be mixed in; ``get()``, ``float()``, ``int()``, ``bool()`` are counted transfers."""

    __slots__ = ("_a",)

    def __init__(self, a):
        self._a = a

    def __array__(self, *args, **kwargs):
        raise TypeError("implicit conversion of a device array to NumPy")

    def __array_namespace__(self, api_version=None):
        return FAKE

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} called on a device array")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.pop("out", None)
        args = _unwrap(inputs)
        kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o) for o in out)
            getattr(ufunc, method)(*args, **kwargs)
            return out[0] if len(out) == 1 else out
        return _wrap(getattr(ufunc, method)(*args, **kwargs))

    def __getattr__(self, name):
        if name.startswith("__") or name in ("tolist", "item", "tobytes", "data", "ctypes"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            def method(*args, **kwargs):
                return _wrap(attr(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
            return method
        return _wrap(attr)

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value):
        self._a[_unwrap(key)] = _unwrap(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(x) for x in self._a)

    def _scalar(self):
        LOG.d2h.append(self._a.size)
        return self._a

    def __float__(self):
        return float(self._scalar())

    def __int__(self):
        return int(self._scalar())

    def __bool__(self):
        return bool(self._scalar())

    def get(self):
        LOG.d2h.append(self._a.size)
        return self._a.copy()

    def __repr__(self):
        return f"DeviceArray({self._a!r})"


class FakeNamespace(types.ModuleType):
    """The functions of a device namespace the engine may use (all exist in CuPy)."""

    FUNCS = {"asarray", "array", "ascontiguousarray", "zeros", "zeros_like", "ones", "empty",
             "arange", "where", "rint", "clip", "abs", "sign", "frexp", "ldexp", "minimum",
             "maximum", "sqrt", "exp", "log", "sum", "mean", "max", "stack", "take_along_axis",
             "broadcast_to", "pad", "isfinite"}
    DTYPES = {"float32", "float64", "int32", "int64", "bool_"}

    def __getattr__(self, name):
        if name in self.DTYPES:
            return getattr(np, name)
        if name not in self.FUNCS:
            raise AttributeError(f"the device namespace has no {name!r}")
        fn = getattr(np, name)

        def call(*args, **kwargs):
            if name in ("asarray", "array") and not isinstance(args[0], DeviceArray):
                host = np.asarray(args[0])
                LOG.h2d.append(host.size)
                return DeviceArray(fn(host, *args[1:], **kwargs))
            return _wrap(fn(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
        return call


FAKE = FakeNamespace("fake_device")


class FakeCudaMacro:
    """A 'CUDA' macro: the real emulator on the device arrays' values, results on the device."""

    def __init__(self, config, device="cpu"):
        assert device == "cuda"
        self.macro = Macro(config)

    def mvm(self, X, W, x_format, w_format=None, **kwargs):
        assert isinstance(X, DeviceArray) and isinstance(W, DeviceArray)
        res = self.macro.mvm(X._a, W._a, x_format, w_format, **kwargs)
        return dataclasses.replace(res, y=DeviceArray(res.y), y_int=DeviceArray(res.y_int),
                                   active_rows=DeviceArray(res.active_rows))

    def mvm_traced(self, X, W, x_format, w_format=None, **kwargs):
        assert isinstance(X, np.ndarray) and isinstance(W, np.ndarray)
        return self.macro.mvm_traced(X, W, x_format, w_format, **kwargs)


@pytest.fixture
def fake_cuda(monkeypatch):
    """TrainConfig(device='cuda') runs on the stand-in namespace and macro."""
    monkeypatch.setattr(engine_module, "array_module",
                        lambda device: FAKE if device == "cuda" else np)
    monkeypatch.setattr(backends_module, "Macro",
                        lambda config, device="cpu": Macro(config) if device == "cpu"
                        else FakeCudaMacro(config, device))
    LOG.reset()
    return FAKE


def test_the_stand_in_is_strict():
    a = FAKE.asarray(np.arange(6.0).reshape(2, 3))
    assert LOG.h2d[-1] == 6 and namespace_of(a) is FAKE
    with pytest.raises(TypeError, match="implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="called on a device array"):
        np.where(a > 1, a, 0)
    with pytest.raises(TypeError, match="host ndarray"):
        a + np.ones(3)
    with pytest.raises(AttributeError, match="no 'errstate'"):
        FAKE.errstate                                                  # noqa: B018
    b = a * 2.0 + 1
    b -= a
    assert isinstance(b, DeviceArray) and to_host(b).tolist() == [[1, 2, 3], [4, 5, 6]]
    assert float(a.sum()) == 15.0 and LOG.d2h[-1] == 1


# --- golden values of the NumPy engine -----------------------------------------------------
def digest(arrays) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(to_host(arrays[k]) if not np.isscalar(arrays[k])
                                 else np.asarray(arrays[k]))
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def trainer_state(trainer):
    out = {f"p/{k}": v for k, v in trainer.model.params.items()}
    out.update({f"b/{k}": v for k, v in trainer.model.buffers.items()})
    out.update({f"v/{k}": v for k, v in trainer.optimizer.velocity.items()})
    out["loss"] = np.array([r["train_loss"] for r in trainer.history])
    out["acc"] = np.array([r["test_acc"] for r in trainer.history])
    return out


# Every MVM on the emulator or the exact backend (first and last layers too), so no BLAS float
# product enters: the digests depend on the engine's code, not on the BLAS build.  (NumPy's
# float32 exp/log in the loss use its own SIMD code; a CPU without FMA could differ.)
# The IMC cases name the floor ADC law, the presets' law when the digests were taken (the
# presets have used half_up since the Table III evidence, docs/results-table3.md).
TRAINER_CASES = {
    "mlp-imc-nonideal": dict(model="mlp", backends=ALL_IMC, batch_size=32, seed=1,
                             preset="paper-nonideal", adc_rounding="floor",
                             vref=(("forward", "dual:255:2304"), ("backward", "variable"),
                                   ("update", "fixed:1152"))),
    "cnn-exact-augment": dict(model="small-cnn", backends=ALL_EXACT, batch_size=16, seed=2,
                              augment=True),
    "cnn-int8-imc": dict(model="small-cnn", backends=ALL_IMC, batch_size=16, seed=4,
                         scheme="int8", adc_rounding="floor"),
}
GOLDEN = {
    "trainer/mlp-imc-nonideal": "98a531b6f68a06f52b8d4399",
    "trainer/cnn-exact-augment": "ca01f663dfa41d23bc99b244",
    "trainer/cnn-int8-imc": "50b6346b85dcabd0e65c128d",
    "step/vgg-lite": "a70f5c9dc0eee9aec8228a49",
    "step/resnet-18": "a48343c7be33f626bfac96a7",
    "step/small-cnn": "0aa4f73596081359639f9396",
    "step/mlp": "2f69d15102c88ff0b81f7a74",
    "init/vgg-lite-32": "155931ef5654c8eda0b83d98",
    "init/vgg-lite-8": "903a9a8e268ed03553c48e0e",
    "augment": "d2131c9c9d6870fd9323d42b",
}
MODEL_SHAPES = {"vgg-lite": (8, 8, 3), "resnet-18": (8, 8, 3), "small-cnn": (8, 8, 1),
                "mlp": (8, 8, 1)}


def model_step(name, shape, xp=np, seed=0, policy=None, transfers=None):
    """One forward/backward and two Nesterov SGD steps; every compute layer (residual
    shortcuts too) on the exact backend unless ``policy(layer)`` names another backend.
    ``transfers`` (a dict) receives the stand-in's transfers between inputs and results."""
    model = build_model(name, shape, 10, seed=seed).to_device(xp)
    exact = ExactBackend()
    for layer in model.compute_layers():
        backend = policy(layer) if policy else exact
        layer.policy = {k: backend for k in MvmKind}
    rng = np.random.default_rng(seed + 10)
    x = to_device(rng.standard_normal((3,) + shape).astype(np.float32), xp)
    labels = to_device(np.array([1, 7, 3]), xp)
    h2d, d2h = len(LOG.h2d), len(LOG.d2h)
    out = model.forward(x, train=True)
    loss, grad = softmax_cross_entropy(out, labels)
    dx = model.backward(grad)
    grads = model.grads
    opt = SGD(0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    opt.step(model.params, grads)
    opt.step(model.params, grads)
    arrays = {f"p/{k}": v for k, v in model.params.items()}
    arrays.update({f"g/{k}": v for k, v in grads.items()})
    arrays.update({f"b/{k}": v for k, v in model.buffers.items()})
    arrays["out"], arrays["dx"], arrays["loss"] = out, dx, np.array([loss])
    arrays["eval"] = model.forward(x, train=False)
    if transfers is not None:
        transfers.update(h2d=LOG.h2d[h2d:], d2h=LOG.d2h[d2h:])
    return {k: to_host(v) for k, v in arrays.items()}


@pytest.mark.parametrize("name", sorted(TRAINER_CASES))
def test_training_runs_equal_the_numpy_engine_golden_values(name, tmp_path):
    cfg = TrainConfig(epochs=1, max_steps_per_epoch=2, first_last_on_imc=True,
                      **TRAINER_CASES[name])
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.run()
    assert digest(trainer_state(trainer)) == GOLDEN[f"trainer/{name}"]


@pytest.mark.parametrize("name", sorted(MODEL_SHAPES))
def test_model_steps_equal_the_numpy_engine_golden_values(name):
    assert digest(model_step(name, MODEL_SHAPES[name])) == GOLDEN[f"step/{name}"]


def test_vgg_lite_from_the_workload_specs_keeps_its_initial_weights():
    from imcsim.workloads import vgg_lite_layers
    for key, shape in (("init/vgg-lite-32", (32, 32, 3)), ("init/vgg-lite-8", (8, 8, 3))):
        model = build_model("vgg-lite", shape, 10, seed=5)
        assert digest(model.params) == GOLDEN[key]
    model = build_model("vgg-lite", (32, 32, 3), 10, seed=0)
    layers = {la.name: la for la in model.compute_layers()}
    for spec in vgg_lite_layers():
        w = layers[spec.name].weight
        assert (w.shape[-2], w.shape[-1]) == (spec.in_channels, spec.out_channels), spec.name
        assert (f"{spec.name}.pool" in {la.name for la in model.all_layers()}) == spec.pool_after


def test_augmentation_equals_the_numpy_engine_golden_values():
    x = np.random.default_rng(0).standard_normal((5, 8, 8, 3)).astype(np.float32)
    out = {"aug": augment_crop_flip(x, np.random.default_rng(3)),
           "aug0": augment_crop_flip(x, np.random.default_rng(4), pad=0)}
    assert digest(out) == GOLDEN["augment"]
    dev = {k: augment_crop_flip(FAKE.asarray(x), np.random.default_rng(s), pad=p)
           for k, s, p in (("aug", 3, 4), ("aug0", 4, 0))}
    assert all(isinstance(v, DeviceArray) for v in dev.values())
    assert digest(dev) == GOLDEN["augment"]


def _radix4_round_by_log2(x):
    """The radix-4 rounding as the engine first wrote it (log2), for comparison."""
    x = np.asarray(x, dtype=np.float64)
    mag = np.abs(x)
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.maximum(mag, 1e-300)) / 2.0)
    lo = 4.0 ** np.clip(e, -3, 3)
    out = np.minimum(np.where(mag > 2.5 * lo, 4.0 * lo, lo), 64.0)
    return np.sign(x) * np.where(mag < 4.0 ** -3 / 2, 0.0, out)


def test_radix4_rounding_by_exponent_equals_the_logarithm_version():
    rng = np.random.default_rng(0)
    edges = [0.0, -0.0, 5e-324, 1e-300, np.inf, -np.inf]
    for k in range(-14, 14):
        for m in (1.0, 2.5, 1.25):
            b = m * 2.0 ** k
            edges += [b, -b, np.nextafter(b, 0), np.nextafter(b, np.inf)]
    x = np.concatenate([edges, rng.standard_normal(100_000) * 10.0 ** rng.uniform(-5, 3, 100_000)])
    new = radix4_round(x)
    assert new.tobytes() == _radix4_round_by_log2(x).tobytes()
    assert to_host(radix4_round(FAKE.asarray(x))).tobytes() == new.tobytes()


def test_radix4_host_pass_equals_the_array_expression():
    """The compiled host pass (NumPy arrays) against the array expression (CuPy's route):
    bit for bit on the octave edges, both zeros, subnormals, +/-inf and NaN, for float64
    and float32 inputs, and fused with GradScale and the halving of the two-phase rounding."""
    from imcsim.training.quant import _radix4_round_xp, radix4_two_phase
    rng = np.random.default_rng(1)
    edges = [0.0, -0.0, 5e-324, -5e-324, np.inf, -np.inf, np.nan, 64.0, 160.0, 161.0]
    for k in range(-14, 14):
        for m in (1.0, 2.5, 1.25):
            b = m * 2.0 ** k
            edges += [b, -b, np.nextafter(b, 0), np.nextafter(b, np.inf)]
    x = np.concatenate([edges, rng.standard_normal(20_000) * 10.0 ** rng.uniform(-5, 3, 20_000)])
    for values in (x, x.astype(np.float32), x.reshape(2, -1)[:, ::3]):
        got, want = radix4_round(values), _radix4_round_xp(values, np)
        nan = np.isnan(want)
        assert got.shape == want.shape and got.dtype == np.float64
        assert np.array_equal(np.isnan(got), nan)
        assert got[~nan].tobytes() == want[~nan].tobytes()
    g = (rng.standard_normal((3, 5, 7)) * 1e-3).astype(np.float32)
    phase1, phase2, scale = radix4_two_phase(g)
    gs = g.astype(np.float64) * scale
    assert phase1.tobytes() == _radix4_round_xp(gs, np).tobytes()
    assert phase2.tobytes() == _radix4_round_xp(gs / 2.0, np).tobytes()
    assert radix4_round(np.zeros((0, 3))).shape == (0, 3)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [5, 6])
def test_device_windows_equal_the_reshape_buffer(stride, size):
    x = np.random.default_rng(size).integers(0, 17, (2, size, size, 3)).astype(np.float64)
    ref = reshape_conv_inputs(x, stride, 6)
    vec, shape = _pad_windows(x, 1, 1, stride)
    assert shape == ref.out_shape and vec.tobytes() == ref.vectors.tobytes()
    dvec, _ = _pad_windows(FAKE.asarray(x), 1, 1, stride)
    assert to_host(dvec).tobytes() == ref.vectors.tobytes()


@pytest.mark.parametrize("pad_lo, pad_hi, stride", [(1, 1, 1), (1, 1, 2), (1, 2, 1), (1, 2, 2),
                                                    (0, 0, 1), (2, 1, 2)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int8])
def test_host_windows_equal_the_array_expression(pad_lo, pad_hi, stride, dtype):
    """The compiled host windows (NumPy) against the array expression (CuPy's route), bit for
    bit: asymmetric padding (the backward MVM's dilated gradients), odd sizes, -0.0 kept."""
    rng = np.random.default_rng(pad_lo + 3 * pad_hi + 7 * stride)
    x = rng.integers(-20, 21, (2, 7, 5, 3)).astype(dtype)
    if dtype is not np.int8:
        x[0, 0, 0, 0] = -0.0
    host, shape = _pad_windows(x, pad_lo, pad_hi, stride)
    device, device_shape = _pad_windows(FAKE.asarray(x), pad_lo, pad_hi, stride)
    assert shape == device_shape and host.dtype == x.dtype
    assert host.tobytes() == to_host(device).tobytes()


# --- the device namespace: same bits as NumPy, nothing back to the host -------------------
@pytest.mark.parametrize("name", sorted(MODEL_SHAPES))
@pytest.mark.parametrize("mixed", [False, True])
def test_every_layer_runs_on_the_device_namespace_with_the_cpu_bits(name, mixed):
    """Forward, backward, loss and SGD of every model on the stand-in: the CPU's bits, and
    inside the step only scalars (at most 3 values at a time) go back to the host."""
    fp32 = Fp32Backend()
    policy = (lambda la: ExactBackend() if la.role == "hidden" else fp32) if mixed else None
    cpu = model_step(name, MODEL_SHAPES[name], policy=policy)
    moved = {}
    dev = model_step(name, MODEL_SHAPES[name], xp=FAKE, policy=policy, transfers=moved)
    for k in cpu:
        assert dev[k].dtype == cpu[k].dtype and dev[k].tobytes() == cpu[k].tobytes(), k
    n_layers = len(build_model(name, MODEL_SHAPES[name], 10, seed=0).compute_layers())
    # a training forward, a backward and an eval forward: per compute layer at most 6 scalar
    # reads (PACT alpha 3x, the SAWB moments 2x, GradScale), and the loss; nothing to the device
    assert moved["h2d"] == []
    assert max(moved["d2h"]) <= 3 and len(moved["d2h"]) <= 6 * n_layers + 1


def _run(cfg, path, resume=False):
    trainer = Trainer(cfg, path, progress=False)
    trainer.run(resume=resume)
    return trainer


@pytest.mark.parametrize("kw", [
    dict(model="mlp", backends=ALL_IMC, batch_size=32, seed=1, preset="paper-nonideal",
         vref=(("forward", "dual:255:2304"), ("backward", "variable"), ("update", "fixed:1152"))),
    dict(model="small-cnn", backends=FWD_BWD_IMC, batch_size=16, seed=2, augment=True),
    dict(model="small-cnn", backends=FWD_BWD_FP32_UPD, batch_size=16, seed=3, scheme="int8"),
    dict(model="small-cnn", batch_size=16, seed=4),                         # FP32
], ids=["mlp-imc", "cnn-imc-augment", "cnn-int8", "cnn-fp32"])
def test_training_on_the_device_namespace_equals_the_cpu_run(kw, tmp_path, fake_cuda):
    base = dict(epochs=2, max_steps_per_epoch=2, **kw)
    cpu = _run(TrainConfig(device="cpu", **base), tmp_path / "cpu")
    dev = _run(TrainConfig(device="cuda", **base), tmp_path / "dev")
    assert isinstance(dev.model.params[next(iter(dev.model.params))], DeviceArray)
    assert all(isinstance(v, DeviceArray) for v in dev.optimizer.velocity.values())
    a, b = trainer_state(cpu), trainer_state(dev)
    for k in a:
        assert to_host(a[k]).tobytes() == to_host(b[k]).tobytes(), k
    for r1, r2 in zip(cpu.history, dev.history):
        assert {k: v for k, v in r1.items() if k != "seconds"} == \
               {k: v for k, v in r2.items() if k != "seconds"}


def test_a_device_checkpoint_resumes_on_the_cpu(tmp_path, fake_cuda):
    base = dict(model="small-cnn", backends=FWD_BWD_IMC, batch_size=16, seed=5,
                max_steps_per_epoch=2, schedule="constant")    # the same lr whatever epochs is
    straight = _run(TrainConfig(epochs=2, **base), tmp_path / "cpu")
    _run(TrainConfig(epochs=1, device="cuda", **base), tmp_path / "mixed")
    resumed = _run(TrainConfig(epochs=2, **base), tmp_path / "mixed", resume=True)
    for k, v in straight.model.params.items():
        assert isinstance(resumed.model.params[k], np.ndarray)
        assert v.tobytes() == resumed.model.params[k].tobytes(), k


def test_imc_backend_traces_through_the_host_and_returns_to_the_device(tmp_path, fake_cuda):
    backend = ImcBackend(MacroConfig(), device="cuda",
                         trace_request=("d", MvmKind.FORWARD, 0, str(tmp_path / "t.h5")))
    from imcsim import BinaryFormat
    X = FAKE.asarray(np.random.default_rng(0).integers(0, 17, (4, 40)).astype(np.float64))
    W = FAKE.asarray(np.random.default_rng(1).integers(-8, 9, (40, 6)).astype(np.float64))
    traced = backend.matmul(X, W, BinaryFormat(6), BinaryFormat(5), layer="d",
                            mvm=MvmKind.FORWARD, step=0)
    fast = backend.matmul(X, W, BinaryFormat(6), BinaryFormat(5), layer="d",
                          mvm=MvmKind.FORWARD, step=1)
    assert isinstance(traced, DeviceArray) and isinstance(fast, DeviceArray)
    assert (tmp_path / "t.h5").stat().st_size > 0
    assert to_host(traced).tobytes() == to_host(fast).tobytes()       # ideal macro: no noise


# --- without CuPy or a GPU ------------------------------------------------------------------
def test_cuda_without_cupy_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)          # "import cupy" fails
    with pytest.raises(DeviceUnavailable) as err:
        array_module("cuda")
    assert str(err.value) == "--device cuda: CuPy is not installed: pip install 'imcsim[gpu]'"
    assert isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match="device"):
        array_module("tpu")
    assert array_module("cpu") is np


def test_cuda_without_a_gpu_is_one_line(monkeypatch):
    def no_driver():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(DeviceUnavailable, match=r"^--device cuda: no CUDA GPU found$"):
        array_module("cuda")
    fake.cuda.runtime.getDeviceCount = lambda: 1
    monkeypatch.setenv("CUPY_TF32", "1")
    with pytest.raises(DeviceUnavailable, match="CUPY_TF32"):
        array_module("cuda")
    monkeypatch.setenv("CUPY_TF32", "0")
    assert array_module("cuda") is fake


def test_train_command_device_cuda_without_cupy_exits_2(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from imcsim.cli import main
    monkeypatch.setitem(sys.modules, "cupy", None)
    result = CliRunner().invoke(main, ["train", "--device", "cuda", "--epochs", "1",
                                       "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines == ["Error: --device cuda: CuPy is not installed: pip install 'imcsim[gpu]'"]
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="gpu")


# --- on a real GPU (skipped without CuPy and a CUDA device) ---------------------------------
def _cupy_or_skip():
    try:
        return array_module("cuda")
    except DeviceUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.cuda
def test_cupy_operations_match_numpy_bit_for_bit_or_within_the_bound():
    """Per operation, identical inputs: the bit-identical parts are identical; the float
    reductions and FP32 products are within 2 * gamma_n * sum|terms| (docs/training.md)."""
    cp = _cupy_or_skip()
    from imcsim.training.layers import BatchNorm, MaxPool2, ReLU
    from imcsim.training.quant import int8_quantize, pact_quantize, radix4_two_phase
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8, 6, 6, 16)) * 3).astype(np.float32)
    g = (rng.standard_normal(x.shape) * 1e-3).astype(np.float32)
    dx = cp.asarray(x)
    same = {
        "pact": (pact_quantize(x, 3.5).values, pact_quantize(dx, 3.5).values),
        "int8": (int8_quantize(x).values, int8_quantize(dx).values),
        "radix4": (radix4_two_phase(g)[0], radix4_two_phase(cp.asarray(g))[0]),
        "windows": (_pad_windows(x, 1, 1, 2)[0], _pad_windows(dx, 1, 1, 2)[0]),
        "relu": (ReLU("r").forward(x), ReLU("r").forward(dx)),
        "augment": (augment_crop_flip(x, np.random.default_rng(1)),
                    augment_crop_flip(dx, np.random.default_rng(1))),
    }
    mp, dmp = MaxPool2("m"), MaxPool2("m")
    same["maxpool"] = (mp.forward(x), dmp.forward(dx))
    same["maxpool.bwd"] = (mp.backward(g[:, ::2, ::2]), dmp.backward(cp.asarray(g[:, ::2, ::2])))
    qa = pact_quantize(x, 3.5).values.reshape(-1, 16)[:, :12]
    qw = rng.integers(-8, 9, (12, 5)).astype(np.float64)
    same["exact"] = (ExactBackend().matmul(qa, qw, None, None),
                     ExactBackend().matmul(cp.asarray(qa), cp.asarray(qw), None, None))
    p, dp = {"w": x.copy()}, {"w": cp.asarray(x)}
    SGD(0.1, nesterov=True).step(p, {"w": g})
    SGD(0.1, nesterov=True).step(dp, {"w": cp.asarray(g)})
    same["sgd"] = (p["w"], dp["w"])
    for k, (a, b) in same.items():
        assert a.tobytes() == to_host(b).tobytes(), k
    u = np.float64(2.0 ** -24)
    A, B = x.reshape(-1, 16), rng.standard_normal((16, 7)).astype(np.float32)
    n = A.shape[1]
    bound = 2 * n * u / (1 - n * u) * (np.abs(A) @ np.abs(B))
    assert (np.abs(to_host(Fp32Backend().matmul(cp.asarray(A), cp.asarray(B)))
                   - Fp32Backend().matmul(A, B)) <= bound).all()
    bn, dbn = BatchNorm("bn", 16), BatchNorm("bn", 16)
    dbn.params = {k: cp.asarray(v) for k, v in dbn.params.items()}
    dbn.buffers = {k: cp.asarray(v) for k, v in dbn.buffers.items()}
    bn.forward(x, train=True)
    dbn.forward(dx, train=True)
    n = x.size // 16
    bound = 2 * n * u / (1 - n * u) * np.abs(x).reshape(-1, 16).sum(axis=0) / n
    mean_cpu = bn.buffers["bn.running_mean"] / np.float32(0.1)
    mean_gpu = to_host(dbn.buffers["bn.running_mean"]) / np.float32(0.1)
    assert (np.abs(mean_cpu - mean_gpu) <= bound + 4 * u * np.abs(mean_cpu)).all()
