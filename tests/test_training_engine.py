"""Training engine: learns on digits through the emulator, resumes exactly, is deterministic."""
import json

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from imcsim.training.engine import TrainConfig, Trainer, parse_vref
from imcsim.verify.trace import TraceFile

from training_helpers import run_interrupted

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
        run_interrupted(trainer, interrupt_after, resume)
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
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:           # one CPU (or an affinity of one)
        pytest.skip("Numba offers one thread on this machine: nothing to compare")
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


# --- per-layer statistics of metrics.json (the contract of docs/training.md) ---------------
RECORD_KEYS = {"calls": int, "array_cycles": int, "adc_conversions": int,
               "high_vref_conversions": int, "bitcell_mults": int,
               "dac_row_drives": int, "dac_level_sum": int,
               "active_rows_per_plane": list, "inner": int, "outputs": int,
               "vectors_per_call": float}


def test_per_layer_mvm_statistics_follow_the_contract(tmp_path):
    cfg = TrainConfig(model="small-cnn", epochs=1, batch_size=32, max_steps_per_epoch=2,
                      backends=ALL_IMC, vref=(("forward", "dual:255:2304"),
                                              ("backward", "variable"), ("update", "variable")))
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.run()
    row = json.loads((tmp_path / "metrics.json").read_text())["history"][-1]
    assert row["steps"] == 2 and isinstance(row["cima_write_words"], int)
    stats = row["mvm_stats"]
    assert list(stats) == ["conv2", "conv3", "fc4"]          # first and last layers are FP32
    for layer, kinds in stats.items():
        assert list(kinds) == ["forward", "backward", "update"], layer
        for kind, rec in kinds.items():
            assert set(rec) == set(RECORD_KEYS), (layer, kind)
            assert all(type(rec[k]) is t for k, t in RECORD_KEYS.items()), (layer, kind)
            assert rec["calls"] == 2                          # two training steps, no evaluation
            assert len(rec["active_rows_per_plane"]) == (6 if kind == "forward" else 7)
    # conv2: 16 -> 32 channels on 8x8 maps, batch 32
    c2 = stats["conv2"]
    shapes = {k: (r["inner"], r["outputs"], r["vectors_per_call"]) for k, r in c2.items()}
    assert shapes == {"forward": (9 * 16, 32, 32 * 64.0), "backward": (9 * 32, 16, 32 * 64.0),
                      "update": (32 * 64, 9 * 16, 32.0)}
    # cycles = calls x vectors x planes x row tiles x column tiles (51 binary:5 outputs or
    # 42 binary:6 outputs per 256 columns); conversions = cycles x used columns of each tile
    fwd, upd = c2["forward"], c2["update"]
    assert fwd["array_cycles"] == 2 * 2048 * 6 and fwd["adc_conversions"] == 2 * 2048 * 6 * 160
    assert upd["array_cycles"] == 2 * 32 * 7 * 4
    assert upd["adc_conversions"] == 2 * 32 * 7 * 144 * 6
    assert fwd["active_rows_per_plane"] == [144.0] * 6          # dense binary activations
    # the weight update's top radix-4 plane is empty (docs/training.md, two-phase rounding)
    assert all(r["update"]["active_rows_per_plane"][6] == 0.0 for r in stats.values())
    fc4 = stats["fc4"]
    assert [(r["inner"], r["outputs"]) for r in fc4.values()] == [(256, 128), (128, 256),
                                                                  (32, 256)]
    # the per-kind summaries of the row are sums of these records
    for kind in ("forward", "backward", "update"):
        recs = [kinds[kind] for kinds in stats.values()]
        share = sum(r["high_vref_conversions"] for r in recs) / sum(r["adc_conversions"]
                                                                   for r in recs)
        assert row[f"{kind}_high_vref_share"] == pytest.approx(share, rel=1e-12)
    assert row["forward_high_vref_share"] > 0                  # dual Vref: something to compare
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "steps" in header and "cima_write_words" in header and "mvm_stats" not in header


def test_evaluation_does_not_count_in_the_training_statistics(tmp_path):
    from imcsim.training.backends import MvmKind
    cfg = TrainConfig(model="mlp", epochs=1, batch_size=32, max_steps_per_epoch=2,
                      backends=ALL_IMC)
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.train_epoch(0)
    before = {k: s.summary() for k, s in trainer.stats.items()}
    macro = trainer.imc_backends[MvmKind.FORWARD].macro
    calls, mvm = [], macro.mvm
    macro.mvm = lambda *a, **kw: calls.append(1) or mvm(*a, **kw)
    trainer.evaluate(trainer.x_test, trainer.y_test)
    assert len(calls) == 2 * 2                # 2 hidden layers x 2 test batches of 256
    assert {k: s.summary() for k, s in trainer.stats.items()} == before
    assert all(b.stats is trainer.stats for b in trainer.imc_backends.values())


@pytest.mark.parametrize("name,shape", [("vgg-lite", (8, 8, 3)), ("small-cnn", (8, 8, 1)),
                                        ("mlp", (8, 8, 1))])
def test_training_skips_the_first_layers_backward_mvm_but_not_its_weight_gradient(name, shape):
    """The images need no gradient: without an input quantizer the first layer's backward
    MVM is not run, and every weight gradient is the one of a full backward pass."""
    from imcsim.training.backends import Fp32Backend, MvmKind
    from imcsim.training.layers import softmax_cross_entropy
    from imcsim.training.models import build_model

    class Recording(Fp32Backend):
        def __init__(self):
            super().__init__()
            self.kinds = []

        def matmul(self, X, W, x_format=None, w_format=None, *, layer="", mvm=None, step=0):
            self.kinds.append((layer, mvm))
            return super().matmul(X, W, x_format, w_format, layer=layer, mvm=mvm, step=step)

    grads = []
    for need in (True, False):
        model = build_model(name, shape, 10, seed=0)
        rec = Recording()
        for layer in model.compute_layers():
            layer.policy = {k: rec for k in MvmKind}
        x = np.random.default_rng(1).standard_normal((4,) + shape).astype(np.float32)
        _, grad = softmax_cross_entropy(model.forward(x, train=True), np.arange(4))
        dx = model.backward(grad, need_input_grad=need)
        first = model.compute_layers()[0].name
        assert ((first, MvmKind.BACKWARD) in rec.kinds) == need
        assert (dx is None) == (not need)
        grads.append(model.grads)
    assert set(grads[0]) == set(grads[1])
    for key in grads[0]:
        assert np.array_equal(grads[0][key], grads[1][key]), key


def test_evaluation_noise_keys_are_neither_the_training_steps_nor_shared_by_batches(tmp_path):
    from imcsim.training.backends import MvmKind
    cfg = TrainConfig(model="mlp", epochs=1, batch_size=32, max_steps_per_epoch=2,
                      backends=ALL_IMC, preset="paper-nonideal")
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.train_epoch(0)
    macro = trainer.imc_backends[MvmKind.FORWARD].macro
    seeds, mvm = [], macro.mvm
    macro.mvm = lambda *a, **kw: seeds.append(kw["seed"]) or mvm(*a, **kw)
    trainer.evaluate(trainer.x_test, trainer.y_test, tag=1)
    first = list(seeds)
    assert len(set(first)) == len(first) == 4     # 2 layers x 2 batches, every key its own
    seeds.clear()
    trainer.train_epoch(0)                        # the last training step's forward keys
    assert not set(seeds) & set(first)
    seeds.clear()
    trainer.evaluate(trainer.x_test, trainer.y_test, tag=1)
    assert seeds == first                         # same tag, same keys (resume-safe)


def test_diverged_training_stops_with_one_line():
    """A PACT clip pushed to <= 0 or a non-finite loss stops training with a message naming
    the parameter, epoch and step (a ValueError: imcsim train exits 2)."""
    from imcsim.training.engine import TrainingDiverged, check_converging
    check_converging({"conv2.alpha": np.array([0.5]), "conv2.w": np.zeros(3)}, 1.2, 0, 3)
    with pytest.raises(TrainingDiverged, match=r"conv2.alpha \(PACT clip\) = -2 .*epoch 1, "
                                               r"step 3"):
        check_converging({"conv2.alpha": np.array([-2.0])}, 1.2, 0, 3)
    with pytest.raises(TrainingDiverged, match="loss inf at epoch 3, step 7"):
        check_converging({}, float("inf"), 2, 7)
    assert issubclass(TrainingDiverged, ValueError)
