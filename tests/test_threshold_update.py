"""The threshold (mixed-precision) weight-update rule: the register arithmetic by hand, the
stored integer weights in the layers' MVMs, the engine's write counts, resume, the device
namespace and the command line."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_training_xp import fake_cuda  # noqa: F401  (the device stand-in fixture)

from imcsim import BinaryFormat
from imcsim.cli.main import main
from imcsim.training.backends import ExactBackend, MvmKind
from imcsim.training.engine import TrainConfig, Trainer
from imcsim.training.optim import (
    ACC_FRAC_BITS,
    ACC_MAX,
    SGD,
    ThresholdRule,
    ThresholdWeights,
    threshold_transfer,
)

from training_helpers import run_interrupted

ONE = 1 << ACC_FRAC_BITS                     # one LSB in register units (65536)
ALL_IMC = (("forward", "imc"), ("backward", "imc"), ("update", "imc"))
ALL_EXACT = (("forward", "exact"), ("backward", "exact"), ("update", "exact"))


def transfer(q, acc, inc, t=1, level=8):
    q2, acc2 = threshold_transfer(np.array(q, dtype=np.int16), np.array(acc, dtype=np.int32),
                                  np.array(inc, dtype=np.int64), ThresholdRule(t, level))
    return q2.tolist(), acc2.tolist()


# --- the register, by hand ------------------------------------------------------------------
def test_an_update_below_the_threshold_leaves_the_stored_weight():
    # T = 2: 1.5 LSB, then 0.25 more (1.75), and -1.75 from zero: no integer part reaches 2
    assert transfer([3], [0], [3 * ONE // 2], t=2) == ([3], [3 * ONE // 2])
    assert transfer([3], [3 * ONE // 2], [ONE // 4], t=2) == ([3], [7 * ONE // 4])
    assert transfer([-2], [0], [-7 * ONE // 4], t=2) == ([-2], [-7 * ONE // 4])
    # T = 1: one register unit short of a whole LSB
    assert transfer([0], [ONE - 2], [1], t=1) == ([0], [ONE - 1])


def test_whole_lsbs_move_and_the_remainder_stays():
    # T = 2: 1.5 + 0.75 = 2.25 LSB -> 2 LSBs into the weight, 0.25 stays
    assert transfer([3], [3 * ONE // 2], [3 * ONE // 4], t=2) == ([5], [ONE // 4])
    # negative: -1.5 - 0.75 = -2.25 -> -2, and the remainder keeps its sign (toward zero)
    assert transfer([3], [-3 * ONE // 2], [-3 * ONE // 4], t=2) == ([1], [-ONE // 4])
    # T = 1: exactly one LSB moves and leaves 0; 3.7 LSB moves 3 (the integer part, not T)
    assert transfer([0], [ONE - 1], [1], t=1) == ([1], [0])
    assert transfer([0], [0], [37 * ONE // 10], t=1) == ([3], [37 * ONE // 10 - 3 * ONE])
    # several weights at once, each on its own
    assert transfer([0, 0, 0], [0, ONE // 2, -ONE // 2], [ONE // 2, ONE // 2, -ONE], t=1) == \
        ([0, 1, -1], [ONE // 2, 0, -ONE // 2])


def test_the_stored_weight_saturates_at_the_format_range():
    # 7 + 3 -> 8 (binary:5's top); the 2 LSBs beyond the range are dropped, 0.5 stays
    assert transfer([7], [0], [7 * ONE // 2], t=1) == ([8], [ONE // 2])
    assert transfer([-8], [0], [-5 * ONE], t=1) == ([-8], [0])
    assert transfer([8], [0], [-ONE], t=1) == ([7], [0])             # and comes back at once
    # int8's binary:8 range is +/-64
    assert transfer([60], [0], [9 * ONE], t=4, level=64) == ([64], [0])


def test_the_register_saturates_at_its_range():
    q, acc = transfer([0], [ACC_MAX - 5], [100], t=16)
    # the 32-bit register holds at most 2**15 - 2**-16 LSB; its integer part (32767 >= 16) moves
    assert q == [8] and acc == [ACC_MAX - (ACC_MAX >> ACC_FRAC_BITS) * ONE]


def test_nothing_is_modified_in_place():
    q, acc = np.array([1], np.int16), np.array([0], np.int32)
    q2, acc2 = threshold_transfer(q, acc, np.array([2 * ONE]), ThresholdRule(1, 8))
    assert q.tolist() == [1] and acc.tolist() == [0] and q2.tolist() == [3]
    assert q2.dtype == np.int16 and acc2.dtype == np.int32


@pytest.mark.parametrize("t,level,match", [(0, 8, "threshold"), (17, 8, "span"),
                                           (True, 8, "threshold"), (1, 0, "max_level"),
                                           (2.0, 8, "threshold")])
def test_bad_rules(t, level, match):
    with pytest.raises(ValueError, match=match):
        ThresholdRule(t, level)


def test_initial_registers_hold_the_rounding_remainder():
    rule = ThresholdRule(1, 8)
    w = np.array([0.26, -1.1, 5.0, 0.0], np.float32)
    # w / 0.25 = 1.04, -4.4, 20 (clipped to 8), 0 -> q0 = 1, -4, 8, 0
    tw = ThresholdWeights.from_weights(w, np.array([1.0, -4.0, 8.0, 0.0]), 0.25, rule)
    assert tw.q.tolist() == [1, -4, 8, 0] and tw.q.dtype == np.int16
    # remainders 0.04, -0.4, 0, 0 LSB (from the FP32 weights) at 2**-16 LSB resolution
    expect = np.rint((np.clip(w.astype(np.float64) / 0.25, -8, 8) - [1, -4, 8, 0]) * ONE)
    assert tw.acc.tolist() == expect.tolist() and tw.acc.tolist()[:2] == [2621, -26214]


def test_apply_turns_the_sgd_step_into_lsbs():
    rule = ThresholdRule(1, 8)
    tw = ThresholdWeights(np.array([2, 2, -3]), np.array([0, ONE // 2, 0]), 0.5, rule)
    p = tw.weights().astype(np.float32)
    # step -lr * u = -0.1 * [-2.5, -2.5, 2] = [0.25, 0.25, -0.2] weight units
    #              = [0.5, 0.5, -0.4] LSB (scale 0.5)
    tw.apply(p, np.array([-2.5, -2.5, 2.0], np.float32), 0.1)
    assert tw.q.tolist() == [2, 3, -3]                      # 0.5 | 0.5 + 0.5 = 1 | -0.4
    assert tw.acc.tolist() == [ONE // 2, 0, round(-0.4 * ONE)]
    assert p.tolist() == [1.0, 1.5, -1.5]                   # the parameter is q * scale


def test_sgd_hands_the_update_with_momentum_and_decay_to_apply():
    seen = {}

    def hook(p, u, lr):
        seen["u"], seen["lr"] = u.copy(), lr

    p, other = np.array([1.0, -2.0]), np.array([3.0])
    opt = SGD(lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step({"a.w": p, "b.w": other}, {"a.w": np.array([0.5, 0.25]), "b.w": np.array([1.0])},
             apply={"a.w": hook})
    # d = g + wd p = [0.51, 0.23] (the first velocity); p itself is left to the hook
    np.testing.assert_allclose(seen["u"], [0.51, 0.23], atol=1e-15)
    assert seen["lr"] == 0.1 and p.tolist() == [1.0, -2.0]
    np.testing.assert_allclose(other, [3.0 - 0.1 * 1.03], atol=1e-15)
    with pytest.raises(ValueError, match="apply has names with no parameter"):
        opt.step({"a.w": p}, {}, apply={"zz": hook})


# --- in the engine --------------------------------------------------------------------------
class Recorder(ExactBackend):
    """The exact backend, keeping the stored operand (W) of every call per (layer, kind)."""

    def __init__(self):
        self.stored = {}

    def matmul(self, X, W, x_format, w_format, *, layer="", mvm=None, step=0):
        self.stored.setdefault((layer, mvm.value), []).append(np.array(W, copy=True))
        return super().matmul(X, W, x_format, w_format, layer=layer, mvm=mvm, step=step)


def test_the_mvms_use_the_stored_integers_and_nothing_below_the_threshold_is_written(tmp_path):
    """T = 16 and a tiny learning rate: no register gets near 16 LSBs, so the stored weights
    never change, no word is written, and every forward and backward MVM streams against
    exactly those integers (never a re-quantisation of the moving FP32 weights)."""
    cfg = TrainConfig(model="small-cnn", epochs=1, batch_size=32, max_steps_per_epoch=3,
                      backends=ALL_EXACT, update_rule="threshold", update_threshold=16,
                      lr=1e-3)
    trainer = Trainer(cfg, tmp_path, progress=False)
    rec = Recorder()
    layers = {la.name: la for la in trainer.model.compute_layers()}
    for name in ("conv2", "fc4"):
        layers[name].policy = {k: rec for k in MvmKind}
    q0 = {n: la.threshold_weights.q.copy() for n, la in layers.items()
          if la.threshold_weights is not None}
    acc0 = {n: layers[n].threshold_weights.acc.copy() for n in q0}
    assert set(q0) == {"conv2", "conv3", "fc4"}          # the hidden layers, not first/last
    row = trainer.run()[-1]
    assert row["cima_write_words"] == 0 and row["steps"] == 3
    assert row["cima_write_words_by_layer"] == {"conv2": 0, "conv3": 0, "fc4": 0}
    for n in q0:
        tw = layers[n].threshold_weights
        assert np.array_equal(tw.q, q0[n]), n
        assert not np.array_equal(tw.acc, acc0[n]), n       # the updates went somewhere
        assert np.array_equal(trainer.model.params[f"{n}.w"], (q0[n] * tw.scale).astype(np.float32))
    conv2 = layers["conv2"].threshold_weights.q               # (3, 3, 16, 32)
    fwd, bwd = rec.stored[("conv2", "forward")], rec.stored[("conv2", "backward")]
    assert len(bwd) == 3 and len(fwd) > 3                     # 3 training steps, evaluation
    for W in fwd:
        assert np.array_equal(W, conv2.reshape(-1, 32))
    flipped = conv2[::-1, ::-1].transpose(0, 1, 3, 2).reshape(-1, 16)
    for W in bwd:
        assert np.array_equal(W, flipped)
    assert all(np.array_equal(W, layers["fc4"].threshold_weights.q.T)
               for W in rec.stored[("fc4", "backward")])


@pytest.mark.parametrize("rule", ["requantize", "threshold"])
def test_the_epoch_write_count_is_the_change_of_the_stored_operand(tmp_path, rule):
    """One step per epoch: the recorded words are the words between the stored operands
    before and after the step, counted by the plain reference of test_writes."""
    from test_writes import reference_words
    cfg = TrainConfig(model="mlp", epochs=1, batch_size=64, max_steps_per_epoch=1, lr=0.5,
                      backends=ALL_IMC, update_rule=rule, update_threshold=1, seed=2)
    trainer = Trainer(cfg, tmp_path, progress=False)
    layers = [la for la in trainer.model.compute_layers() if la.role == "hidden"]
    before = {la.name: np.array(la.stored_weight()) for la in layers}
    trainer.run()
    row = trainer.history[-1]
    expect = {la.name: reference_words(before[la.name], la.stored_weight(), BinaryFormat(5),
                                       2304) for la in layers}
    assert row["cima_write_words_by_layer"] == expect
    assert row["cima_write_words"] == sum(expect.values()) > 0


def test_requantize_rewrites_more_words_than_the_threshold_rule(tmp_path):
    words = {}
    for rule, t in (("requantize", 1), ("threshold", 1), ("threshold", 4)):
        cfg = TrainConfig(model="small-cnn", epochs=1, batch_size=32, max_steps_per_epoch=4,
                          backends=ALL_EXACT, update_rule=rule, update_threshold=t, seed=1)
        words[(rule, t)] = Trainer(cfg, tmp_path / f"{rule}{t}", progress=False).run()[-1][
            "cima_write_words"]
    assert words[("requantize", 1)] > words[("threshold", 1)] >= words[("threshold", 4)]


def _threshold_run(path, epochs, resume=False, interrupt_after=None, device="cpu"):
    cfg = TrainConfig(model="small-cnn", epochs=epochs, batch_size=32, max_steps_per_epoch=2,
                      backends=ALL_IMC, update_rule="threshold", update_threshold=2, lr=0.5,
                      seed=4, schedule="constant", device=device)
    trainer = Trainer(cfg, path, progress=False)
    if interrupt_after is not None:
        return run_interrupted(trainer, interrupt_after, resume)
    trainer.run(resume=resume)
    return trainer


def _state(trainer):
    from imcsim.training.xp import to_host
    out = {f"p/{k}": to_host(v) for k, v in trainer.model.params.items()}
    for la in trainer.model.compute_layers():
        if la.threshold_weights is not None:
            out[f"q/{la.name}"] = to_host(la.threshold_weights.q)
            out[f"acc/{la.name}"] = to_host(la.threshold_weights.acc)
            out[f"scale/{la.name}"] = np.array(la.threshold_weights.scale)
    return out


def test_a_resumed_threshold_run_equals_an_uninterrupted_one(tmp_path):
    straight = _threshold_run(tmp_path / "a", epochs=2)
    _threshold_run(tmp_path / "b", epochs=2, interrupt_after=1)
    resumed = _threshold_run(tmp_path / "b", epochs=2, resume=True)
    a, b = _state(straight), _state(resumed)
    assert set(a) == set(b) and any(k.startswith("acc/") for k in a)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert straight.history[-1]["cima_write_words"] == resumed.history[-1]["cima_write_words"]


def test_a_corrupt_threshold_state_is_refused_before_anything_is_restored(tmp_path):
    trainer = _threshold_run(tmp_path, epochs=1)
    with np.load(trainer.checkpoint_path) as ck:
        arrays = dict(ck)
    arrays["threshold/conv2/q"] = arrays["threshold/conv2/q"] + 20        # outside -8..8
    np.savez(trainer.checkpoint_path, **arrays)
    fresh = Trainer(trainer.config, tmp_path, progress=False)
    before = _state(fresh)
    with pytest.raises(ValueError, match=r"resume: .*conv2: q: stored weights must lie in"):
        fresh.load_checkpoint()
    after = _state(fresh)
    assert all(before[k].tobytes() == after[k].tobytes() for k in before)


@pytest.mark.usefixtures("fake_cuda")
def test_the_threshold_rule_on_the_device_namespace_equals_the_cpu_run(tmp_path):
    from test_training_xp import DeviceArray
    cpu = _threshold_run(tmp_path / "cpu", epochs=2)
    dev = _threshold_run(tmp_path / "dev", epochs=2, device="cuda")
    assert all(isinstance(la.threshold_weights.q, DeviceArray)
               for la in dev.model.compute_layers() if la.threshold_weights is not None)
    a, b = _state(cpu), _state(dev)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    for r1, r2 in zip(cpu.history, dev.history):
        assert {k: v for k, v in r1.items() if k != "seconds"} == \
               {k: v for k, v in r2.items() if k != "seconds"}


# --- configuration and command line ---------------------------------------------------------
@pytest.mark.parametrize("kw,match", [
    (dict(update_rule="sometimes"), "update_rule"),
    (dict(update_rule="threshold", update_threshold=0, backends=ALL_EXACT), "update_threshold"),
    (dict(update_rule="threshold", update_threshold=17, backends=ALL_EXACT), "1..16"),
    (dict(update_rule="threshold", update_threshold=True, backends=ALL_EXACT),
     "update_threshold"),
    (dict(update_rule="threshold"), "needs stored integer weights"),       # all FP32
])
def test_bad_threshold_configs(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)
    # int8 weights span -64..64: T up to 128
    TrainConfig(scheme="int8", update_rule="threshold", update_threshold=128, backends=ALL_EXACT)


@pytest.mark.parametrize("args,message", [
    (["--update-threshold", "2"], "--update-threshold: applies to --update-rule threshold only"),
    (["--update-rule", "threshold", "--update-threshold", "0", "--imc", "all"],
     "--update-threshold: expected an integer number of LSBs in 1..16"),
    (["--update-rule", "threshold"], "--update-rule: threshold needs integer weights"),
])
def test_cli_refuses_bad_threshold_options_in_one_line(tmp_path, args, message):
    r = CliRunner().invoke(main, ["train", "--out", str(tmp_path), *args])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {message}"), r.output


def test_cli_threshold_run_records_its_writes(tmp_path):
    r = CliRunner().invoke(main, ["train", "--model", "mlp", "--epochs", "1", "--max-steps", "2",
                                  "--batch", "32", "--imc", "all", "--update-rule", "threshold",
                                  "--update-threshold", "2", "--quiet", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["config"]["update_rule"] == "threshold" and doc["config"]["update_threshold"] == 2
    row = doc["history"][0]
    assert isinstance(row["cima_write_words"], int) and row["steps"] == 2
    assert "mvm_stats" not in json.loads(r.output.strip().splitlines()[-1])["final"]

