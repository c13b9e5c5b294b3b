"""SGD over dicts of arrays and learning-rate schedules (training/optim.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from imcsim.training.optim import SGD, ConstantLR, CosineLR, StepLR, default_no_decay, make_schedule


def test_one_hand_computed_step_with_momentum_and_decay():
    p = np.array([1.0, -2.0])
    params = {"fc.weight": p}
    grads = {"fc.weight": np.array([0.5, 0.25])}
    opt = SGD(lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step(params, grads)
    # d = g + wd * p = [0.51, 0.23]; v = d; p -= 0.1 * v
    assert params["fc.weight"] is p, "update must be in place"
    np.testing.assert_allclose(p, [1.0 - 0.051, -2.0 - 0.023], rtol=0, atol=1e-15)
    np.testing.assert_allclose(opt.velocity["fc.weight"], [0.51, 0.23], atol=1e-15)
    # Second step: d = [0.5 + 0.01 * 0.949, 0.25 + 0.01 * -2.023]; v = 0.9 * v_prev + d
    opt.step(params, grads)
    d2 = np.array([0.5 + 0.00949, 0.25 - 0.02023])
    v2 = 0.9 * np.array([0.51, 0.23]) + d2
    np.testing.assert_allclose(opt.velocity["fc.weight"], v2, atol=1e-14)
    np.testing.assert_allclose(p, np.array([0.949, -2.023]) - 0.1 * v2, atol=1e-14)
    assert opt.steps == 2


def test_nesterov_step_and_lr_override():
    p = np.array([2.0])
    opt = SGD(lr=1.0, momentum=0.5, weight_decay=0.0, nesterov=True)
    opt.step({"w": p}, {"w": np.array([1.0])}, lr=0.1)
    # v = 1; u = g + m * v = 1.5; p = 2 - 0.15
    np.testing.assert_allclose(p, [1.85], atol=1e-15)
    opt.step({"w": p}, {"w": np.array([1.0])}, lr=0.1)
    # v = 0.5 * 1 + 1 = 1.5; u = 1 + 0.75 = 1.75; p = 1.85 - 0.175
    np.testing.assert_allclose(p, [1.675], atol=1e-15)


def test_plain_sgd_keeps_no_velocity_and_keeps_dtype():
    p = np.ones((2, 3), dtype=np.float32)
    opt = SGD(lr=0.5, momentum=0.0, weight_decay=0.0)
    opt.step({"w": p}, {"w": np.full((2, 3), 0.5, dtype=np.float32)})
    assert p.dtype == np.float32
    np.testing.assert_array_equal(p, np.full((2, 3), 0.75, dtype=np.float32))
    assert opt.velocity == {}


def test_no_decay_on_bias_and_batchnorm_params():
    names = ["conv1.weight", "conv1.bias", "bn1.gamma", "bn1.beta", "fc.weight"]
    params = {n: np.ones(3) for n in names}
    grads = {n: np.zeros(3) for n in names}
    opt = SGD(lr=1.0, momentum=0.0, weight_decay=0.1)
    opt.step(params, grads)
    for n in names:
        expected = 1.0 if default_no_decay(n) else 0.9
        np.testing.assert_allclose(params[n], expected, err_msg=n)
    assert [n for n in names if default_no_decay(n)] == ["conv1.bias", "bn1.gamma", "bn1.beta"]


def test_no_decay_predicate_overrides_default():
    params = {"a.bias": np.ones(2), "a.weight": np.ones(2)}
    grads = {k: np.zeros(2) for k in params}
    opt = SGD(lr=1.0, momentum=0.0, weight_decay=0.5, no_decay=lambda n: n == "a.weight")
    opt.step(params, grads)
    np.testing.assert_allclose(params["a.bias"], 0.5)
    np.testing.assert_allclose(params["a.weight"], 1.0)


def test_grads_may_be_subset_but_not_superset_or_misshapen():
    params = {"w": np.ones(2), "frozen": np.ones(2)}
    opt = SGD(lr=0.1)
    opt.step(params, {"w": np.ones(2)})
    np.testing.assert_array_equal(params["frozen"], 1.0)
    with pytest.raises(ValueError, match="no parameter"):
        opt.step(params, {"x": np.ones(2)})
    before = params["w"].copy()
    with pytest.raises(ValueError, match="shape"):
        opt.step(params, {"w": np.ones(2), "frozen": np.ones(3)})
    np.testing.assert_array_equal(params["w"], before)  # nothing partially applied
    with pytest.raises(ValueError, match="floating"):
        opt.step({"i": np.ones(2, dtype=np.int64)}, {"i": np.ones(2)})


def _run(opt, params, grads_seq):
    for g in grads_seq:
        opt.step(params, g)
    return params


def test_state_dict_round_trip_continues_identically(tmp_path):
    rng = np.random.default_rng(0)
    shapes = {"conv.weight": (4, 3), "conv.bias": (4,), "bn.gamma": (4,)}
    grads_seq = [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(6)]
    start = {k: rng.standard_normal(s) for k, s in shapes.items()}

    ref_opt = SGD(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)
    ref = _run(ref_opt, {k: v.copy() for k, v in start.items()}, grads_seq)

    opt = SGD(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)
    params = _run(opt, {k: v.copy() for k, v in start.items()}, grads_seq[:3])
    state = opt.state_dict()
    assert all(isinstance(k, str) for k in state)
    # Through np.savez / np.load, as a checkpoint would go.
    np.savez(tmp_path / "opt.npz", **state)
    with np.load(tmp_path / "opt.npz") as f:
        loaded = {k: f[k] for k in f.files}
    resumed = SGD(lr=1.0, momentum=0.0, weight_decay=0.0)
    resumed.load_state_dict(loaded)
    assert resumed.steps == 3 and resumed.nesterov is True and resumed.lr == 0.05
    _run(resumed, params, grads_seq[3:])
    for k in shapes:
        np.testing.assert_array_equal(params[k], ref[k])
    # state_dict returns copies
    state["velocity:conv.weight"][...] = 123.0
    assert not np.any(opt.velocity["conv.weight"] == 123.0)


def test_load_state_dict_rejects_bad_state():
    opt = SGD(lr=0.1)
    with pytest.raises(ValueError, match="lacks"):
        opt.load_state_dict({"lr": 0.1})
    good = SGD(lr=0.1).state_dict()
    with pytest.raises(ValueError, match="unknown"):
        opt.load_state_dict({**good, "bogus": 1})
    with pytest.raises(ValueError, match="momentum"):
        opt.load_state_dict({**good, "momentum": 1.5})


@pytest.mark.parametrize("kwargs, arg", [
    ({"lr": -0.1}, "lr"), ({"lr": float("nan")}, "lr"), ({"lr": "0.1"}, "lr"),
    ({"lr": 0.1, "momentum": 1.0}, "momentum"), ({"lr": 0.1, "momentum": -0.1}, "momentum"),
    ({"lr": 0.1, "weight_decay": -1e-4}, "weight_decay"),
    ({"lr": 0.1, "momentum": 0.0, "nesterov": True}, "nesterov"),
    ({"lr": 0.1, "no_decay": 3}, "no_decay"),
])
def test_sgd_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        SGD(**kwargs)


def test_step_bad_lr():
    with pytest.raises(ValueError, match="lr"):
        SGD(lr=0.1).step({"w": np.ones(1)}, {"w": np.ones(1)}, lr=-1.0)


def test_constant_and_step_schedules():
    c = ConstantLR(0.1)
    assert c(0) == 0.1 and c(57.3) == 0.1
    s = StepLR(0.1, step_epochs=10, gamma=0.5)
    assert s(0) == 0.1 and s(9.99) == 0.1
    assert s(10) == pytest.approx(0.05) and s(19.5) == pytest.approx(0.05)
    assert s(25) == pytest.approx(0.025)
    s2 = StepLR(1.0, step_epochs=0.1, gamma=0.1)
    assert s2(0.3) == pytest.approx(1e-3)  # floating boundary lands on the decayed side


def test_cosine_schedule_values():
    c = CosineLR(0.1, total_epochs=10)
    assert c(0) == pytest.approx(0.1)
    assert c(5) == pytest.approx(0.05)
    assert c(10) == pytest.approx(0.0, abs=1e-15) and c(12) == pytest.approx(0.0, abs=1e-15)
    assert c(2.5) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    w = CosineLR(0.2, total_epochs=12, warmup_epochs=2, min_lr=0.02)
    assert w(0) == 0.0 and w(1) == pytest.approx(0.1) and w(2) == pytest.approx(0.2)
    assert w(7) == pytest.approx(0.11)  # half-way through the cosine part
    assert w(12) == pytest.approx(0.02) and w(100) == pytest.approx(0.02)
    vals = [w(e) for e in np.linspace(2, 12, 41)]
    assert all(a >= b for a, b in zip(vals[:-1], vals[1:], strict=True))


def test_make_schedule():
    assert isinstance(make_schedule("constant", 0.1, 30), ConstantLR)
    s = make_schedule("step", 0.1, 30)
    assert isinstance(s, StepLR) and s.step_epochs == 10 and s.gamma == 0.1
    assert s(29.9) == pytest.approx(0.001)
    c = make_schedule("COSINE", 0.1, 30, warmup_epochs=3)
    assert isinstance(c, CosineLR) and c.total_epochs == 30 and c(3) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule name"):
        make_schedule("linear", 0.1, 30)
    with pytest.raises(ValueError, match="base_lr"):
        make_schedule("constant", 0.0, 30)
    with pytest.raises(ValueError, match="epochs"):
        make_schedule("cosine", 0.1, -1)


@pytest.mark.parametrize("factory, arg", [
    (lambda: ConstantLR(0.0), "base"),
    (lambda: StepLR(0.1, step_epochs=0), "step_epochs"),
    (lambda: StepLR(0.1, step_epochs=5, gamma=0.0), "gamma"),
    (lambda: StepLR(0.1, step_epochs=5, gamma=1.5), "gamma"),
    (lambda: CosineLR(0.1, total_epochs=0), "total_epochs"),
    (lambda: CosineLR(0.1, total_epochs=10, warmup_epochs=10), "warmup_epochs"),
    (lambda: CosineLR(0.1, total_epochs=10, warmup_epochs=-1), "warmup_epochs"),
    (lambda: CosineLR(0.1, total_epochs=10, min_lr=0.2), "min_lr"),
    (lambda: ConstantLR(0.1)(-1), "epoch"),
    (lambda: CosineLR(0.1, 10)(float("inf")), "epoch"),
])
def test_schedule_bad_arguments(factory, arg):
    with pytest.raises(ValueError, match=arg):
        factory()
