"""Training engine: learns on digits through the emulator, resumes exactly, is deterministic."""
import json

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from imcsim.training.engine import TrainConfig, Trainer, parse_vref
from imcsim.verify.trace import TraceFile

ALL_IMC = (("forward", "imc"), ("backward", "imc"), ("update", "imc"))


def test_short_training_through_the_emulator_learns(tmp_path):
    cfg = TrainConfig(model="mlp", epochs=2, batch_size=64, lr=0.1, backends=ALL_IMC, seed=1)
    history = Trainer(cfg, tmp_path, progress=False).run()
    assert history[-1]["test_acc"] > 0.75                     # chance is 0.10
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert "backward_active_rows_per_plane" in history[-1]
    for name in ("metrics.csv", "metrics.json", "checkpoint.npz", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["config"]["backends"] == [list(b) for b in ALL_IMC]


def _final_params(tmp_path, epochs, resume=False, threads=None, interrupt_after=None):
    cfg = TrainConfig(model="small-cnn", epochs=epochs, batch_size=32, lr=0.05,
                      backends=ALL_IMC, max_steps_per_epoch=2, seed=3,
                      vref=(("forward", "dual:255:2304"), ("backward", "variable"),
                            ("update", "fixed:1152")), preset="paper-nonideal")
    trainer = Trainer(cfg, tmp_path, progress=False)
    if interrupt_after is not None:
        save = trainer.save_checkpoint

        def save_then_interrupt(epoch):
            save(epoch)
            if epoch + 1 == interrupt_after:
                raise KeyboardInterrupt
        trainer.save_checkpoint = save_then_interrupt
        with pytest.raises(KeyboardInterrupt):
            trainer.run(resume=resume)
        return None
    if threads is not None:
        old = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            with threadpool_limits(limits=threads):
                trainer.run(resume=resume)
        finally:
            numba.set_num_threads(old)
    else:
        trainer.run(resume=resume)
    return trainer.model.params


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    straight = _final_params(tmp_path / "a", epochs=2)
    _final_params(tmp_path / "b", epochs=2, interrupt_after=1)      # killed after epoch 1
    resumed = _final_params(tmp_path / "b", epochs=2, resume=True)
    for k in straight:
        assert np.array_equal(straight[k], resumed[k]), k


def test_same_seed_same_weights_whatever_the_thread_count(tmp_path):
    one = _final_params(tmp_path / "one", epochs=1, threads=1)
    two = _final_params(tmp_path / "two", epochs=1, threads=2)
    for k in one:
        assert np.array_equal(one[k], two[k]), k


def test_trace_one_layer_mvm_and_step(tmp_path):
    trace = tmp_path / "t.h5"
    cfg = TrainConfig(model="mlp", epochs=1, batch_size=16, backends=ALL_IMC,
                      max_steps_per_epoch=2, trace=("fc2", "backward", 1, str(trace)))
    Trainer(cfg, tmp_path, progress=False).run()
    with TraceFile(trace) as tf:
        assert tf.attrs["x_format"] == "radix4:8" and tf.n_cycles > 0


@pytest.mark.parametrize("kw,match", [
    (dict(model="lenet"), "model"),
    (dict(backends=(("forward", "fp32"), ("backward", "imc"), ("update", "fp32"))),
     "quantized forward"),
    (dict(vref=(("forward", "dual:255"), ("backward", "variable"), ("update", "variable"))),
     "vref"),
    (dict(epochs=0), "epochs"),
    (dict(scheme="int4"), "scheme"),
])
def test_invalid_train_configs(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_parse_vref():
    assert parse_vref("fixed:1152").full_scale == 1152
    assert parse_vref("dual:255:2304").dual_high == 2304
    assert parse_vref("fixed").full_scale == 2304          # the default level
    for bad in ("fixed:", "dual:255", "variable:3", "adaptive"):
        with pytest.raises(ValueError, match="vref"):
            parse_vref(bad)


def test_resume_refuses_a_different_configuration(tmp_path):
    cfg = TrainConfig(model="mlp", epochs=1, batch_size=64, max_steps_per_epoch=1)
    Trainer(cfg, tmp_path, progress=False).run()
    other = TrainConfig(model="mlp", epochs=2, batch_size=64, max_steps_per_epoch=1, lr=0.2)
    with pytest.raises(ValueError, match="another configuration"):
        Trainer(other, tmp_path, progress=False).run(resume=True)


@pytest.mark.parametrize("name,shape", [("vgg-lite", (8, 8, 3)), ("resnet-18", (8, 8, 3)),
                                        ("small-cnn", (8, 8, 1)), ("mlp", (8, 8, 1))])
def test_every_model_trains_one_step_with_quantized_mvms(name, shape):
    from imcsim.training.backends import ExactBackend, MvmKind
    from imcsim.training.layers import softmax_cross_entropy
    from imcsim.training.models import build_model
    from imcsim.training.optim import SGD
    model = build_model(name, shape, 10, seed=0)
    exact = ExactBackend()
    roles = set()
    for layer in model.compute_layers():
        roles.add(layer.role)
        if layer.role == "hidden":
            layer.policy = {k: exact for k in MvmKind}
    assert {"first", "last", "hidden"} <= roles
    x = np.random.default_rng(0).standard_normal((4,) + shape).astype(np.float32)
    before = {k: v.copy() for k, v in model.params.items()}
    out = model.forward(x, train=True)
    assert out.shape == (4, 10)
    _, grad = softmax_cross_entropy(out, np.arange(4))
    dx = model.backward(grad)
    assert dx.shape == x.shape
    grads = model.grads
    assert set(grads) == set(model.params)
    assert all(np.isfinite(g).all() for g in grads.values())
    SGD(0.01).step(model.params, grads)
    changed = [k for k in before if not np.array_equal(before[k], model.params[k])]
    assert any(k.endswith(".w") for k in changed)
    if name == "resnet-18":
        assert "residual" in roles
