"""Energy accounting choices and ``imcsim energy --from-run`` (docs/energy.md, sections 4-5):
the first layer's backward MVM left out (hand check on a 2-layer model), the TOPS/W
convention (ops = 2 x MACs), and measured statistics of a run folder next to the assumed
densities, with one-line exit-2 errors for bad folders."""
import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner

from imcsim import BinaryFormat, Macro, MacroConfig, Radix4Format, VrefConfig
from imcsim.cli.energy import DATASET_SHAPES, energy_command, training_layers
from imcsim.energy import (
    COSTED_EVENTS,
    INT8_FORMATS,
    OPS_PER_MAC,
    SKIPPED,
    TOPS_CONVENTION,
    LayerSpec,
    energy_from_events,
    energy_report,
    gpu_energy,
    layer_event_counts,
    load_run,
    run_energy,
    scenario_summary,
    tops_per_watt,
    vgg_lite_layers,
)

SMALL = MacroConfig(rows=64, columns=32, adc_bits=6,
                    vref=VrefConfig(full_scale=64, dual_low=63, dual_high=64))
FJ = 1e-15
T4 = 0.116e12                                       # GPU operations per joule (Table IV)


# --------------------------------------------------------------------------------------
# The first layer's backward MVM is not run: a hand check on a 2-layer model
# --------------------------------------------------------------------------------------
A = LayerSpec("A", "dense", 70, 13)                 # first layer: 70 inputs -> 13
B = LayerSpec("B", "dense", 13, 5)                  # last layer
BATCH = 9


def test_first_layer_backward_left_out_on_both_sides_by_hand():
    macs_a, macs_b = BATCH * 70 * 13, BATCH * 13 * 5                 # 8190, 585 per MVM
    kw = dict(layers=[A, B], config=SMALL, gradient_density=0.5)
    # both layers are first/last: on the GPU; 5 MVMs run (A: forward, update; B: all three)
    gpu = energy_report("two", BATCH, **kw)
    assert [(r["layer"], r["mvm"], r["device"]) for r in gpu.rows] == [
        ("A", "forward", "gpu"), ("A", "backward", SKIPPED), ("A", "update", "gpu"),
        ("B", "forward", "gpu"), ("B", "backward", "gpu"), ("B", "update", "gpu")]
    skipped = gpu.rows[1]
    assert skipped["macs"] == 0 and skipped["energy_j"] == skipped["gpu_energy_j"] == 0
    assert gpu.totals["macs"] == 2 * macs_a + 3 * macs_b
    hand_gpu = 2 * (2 * macs_a + 3 * macs_b) / T4
    assert gpu.comparison["gpu_step_j"] == pytest.approx(hand_gpu, rel=1e-12)
    assert gpu.comparison["imc_step_j"] == pytest.approx(hand_gpu, rel=1e-12)
    charged = energy_report("two", BATCH, first_layer_backward=True, **kw)
    assert charged.comparison["gpu_step_j"] == pytest.approx(hand_gpu + 2 * macs_a / T4,
                                                            rel=1e-12)

    # on IMC: A's backward would stream 9 radix-4 vectors of M = 13 rows against the 70
    # transposed outputs (5 columns each: 6 outputs per 32-column tile -> 12 column tiles,
    # 350 used columns), 7 planes, density 0.5 spread over the planes
    hand = {"bitcell_mults": BATCH * 7 * (0.5 * 13 / 7) * 350,     # 20475
            "adc_conversions": 1 * BATCH * 7 * 350,                 # 22050
            "nmc_outputs": BATCH * 70,                              # 630
            "reshape_words": 12 * BATCH * math.ceil(13 * 8 / 32),   # 432
            "cima_load_words": 350 * 1}                             # ceil(13 / 32) = 1
    hand_j = (hand["bitcell_mults"] * 0.734 + hand["adc_conversions"] * 346
              + hand["nmc_outputs"] * 243 + hand["reshape_words"] * 14.9
              + hand["cima_load_words"] * 7360) * FJ
    on = energy_report("two", BATCH, first_last_on_imc=True, **kw)
    on_charged = energy_report("two", BATCH, first_last_on_imc=True, first_layer_backward=True,
                               **kw)
    row = next(r for r in on_charged.rows if (r["layer"], r["mvm"]) == ("A", "backward"))
    assert {k: row[k] for k in hand} == pytest.approx(hand, rel=1e-12)
    assert on_charged.comparison["imc_step_j"] - on.comparison["imc_step_j"] == pytest.approx(
        hand_j, rel=1e-9)
    assert on.comparison["imc_macs"] == 2 * macs_a + 3 * macs_b
    assert next(r for r in on.rows if r["mvm"] == "backward" and r["layer"] == "A")[
        "device"] == SKIPPED


def test_vgg_lite_headline_moves_with_the_first_layer_backward():
    default = energy_report(batch=128).comparison
    paper = energy_report(batch=128, first_layer_backward=True).comparison
    l1 = vgg_lite_layers()[0].macs(128)
    assert paper["gpu_step_j"] - default["gpu_step_j"] == pytest.approx(2 * l1 / T4)
    assert 2 * l1 / T4 == pytest.approx(7.81e-3, rel=1e-3)          # the 7.8 mJ
    assert round(default["ratio"]) == 162 and round(paper["ratio"]) == 115
    assert round(default["first_last_penalty"], 1) == 6.0
    assert round(paper["first_last_penalty"], 1) == 8.5
    # layers 2-8 do not contain L1: the same with or without it
    assert default["ratio_without_first_last"] == pytest.approx(paper["ratio_without_first_last"])
    # every scenario leaves it out too, including GPU only
    gpu_only = scenario_summary(batch=128)[0]
    assert gpu_only["step_j"] == pytest.approx(default["gpu_step_j"])


# --------------------------------------------------------------------------------------
# TOPS/W: operations = 2 x MACs on the IMC and the GPU side
# --------------------------------------------------------------------------------------
def test_tops_per_watt_convention_is_two_ops_per_mac_on_both_sides():
    assert OPS_PER_MAC == 2 and "2 x MACs" in TOPS_CONVENTION
    assert tops_per_watt(10**12, 1.0) == pytest.approx(2.0)
    for t in (0.116, 3.0):
        assert tops_per_watt(5e9, gpu_energy(5e9, t)) == pytest.approx(t, rel=1e-12)
    rep = energy_report(batch=16)
    c = rep.comparison
    hand = 2 * c["imc_macs"] / c["imc_part_j"] / 1e12
    assert c["imc_tops_per_watt"] == pytest.approx(hand, rel=1e-12)
    assert c["gpu_tops_per_watt"] == 0.116
    gpu_macs = sum(r["macs"] for r in rep.rows)
    assert tops_per_watt(gpu_macs, c["gpu_step_j"]) == pytest.approx(0.116, rel=1e-12)
    with pytest.raises(ValueError, match="joules"):
        tops_per_watt(1, 0.0)


def test_cli_states_the_convention_once_and_every_tops_figure_follows_it():
    args = ["--batch", "16", "--gpu-tops-per-watt", "0.5"]
    text = CliRunner().invoke(energy_command, args + ["--scenarios"]).output
    data = json.loads(CliRunner().invoke(energy_command, args + ["--json"]).output)
    assert text.count(TOPS_CONVENTION) == 1 and text.count("operations = 2 x MACs") == 1
    assert "TMAC" not in text
    c = data["comparison"]
    figures = [float(x) for x in re.findall(r"([0-9.]+) TOPS/W", text)]
    imc = 2 * c["imc_macs"] / c["imc_part_j"] / 1e12
    # the header's GPU figure, the IMC figure and the GPU figure next to it: nothing else
    assert len(figures) == 3
    assert figures[0] == figures[2] == 0.5
    assert figures[1] == pytest.approx(imc, rel=1e-3)
    assert c["gpu_step_j"] == pytest.approx(2 * data["totals"]["macs"] / 0.5e12, rel=1e-12)


# --------------------------------------------------------------------------------------
# --from-run: a run folder that follows the metrics.json contract
# --------------------------------------------------------------------------------------
G = Radix4Format(8)
ACT, W5 = BinaryFormat(6), BinaryFormat(5)


def radix4(rng, shape, density):
    exps = rng.integers(0, 7, shape)
    values = rng.choice([-1.0, 1.0], shape) * 4.0 ** exps / 64
    return np.where(rng.random(shape) < density, values, 0.0)


def emulate(macro, calls):
    """An mvm_stats entry from real ``Macro.mvm`` calls: [(X, W, x_format, w_format)]."""
    total, arp, cycles = {}, None, 0
    for X, W, xf, wf in calls:
        res = macro.mvm(X, W, xf, wf)
        for k, v in res.events.total().items():
            total[k] = total.get(k, 0) + int(v)
        a = res.active_rows                                # (row tiles, vectors, planes)
        arp = a.sum(axis=(0, 1)) if arp is None else arp + a.sum(axis=(0, 1))
        cycles += a.shape[0] * a.shape[1]
    inner, outputs = calls[0][1].shape
    entry = {"calls": len(calls), "array_cycles": total["array_cycles"],
             "adc_conversions": total["adc_conversions"],
             "high_vref_conversions": total["high_vref_conversions"],
             "bitcell_mults": total["bitcell_mults"],
             "active_rows_per_plane": (arp / cycles).tolist(), "inner": inner,
             "outputs": outputs, "vectors_per_call": float(calls[0][0].shape[0])}
    return entry, total


MLP_BATCH, STEPS = 4, 2


def mlp_epoch(rng, density, kinds=("forward", "backward", "update"), macro=None):
    """Emulated statistics of the hidden layers fc2, fc3 (128 -> 128) of the mlp on digits."""
    macro = Macro() if macro is None else macro
    stats, totals = {}, {}
    for layer in ("fc2", "fc3"):
        stats[layer] = {}
        for kind in kinds:
            calls = []
            for _ in range(STEPS):
                w = rng.integers(-8, 9, (128, 128))
                acts = rng.integers(0, 17, (MLP_BATCH, 128))
                grads = radix4(rng, (MLP_BATCH, 128), density)
                calls.append({"forward": (acts, w, ACT, W5),
                              "backward": (grads, w.T.copy(), G, W5),
                              "update": (grads.T.copy(), acts, G, ACT)}[kind])
            stats[layer][kind], totals[(layer, kind)] = emulate(macro, calls)
    return stats, totals


def write_run(folder, history, *, backends=("imc", "imc", "imc"), model="mlp",
              dataset="digits", batch=MLP_BATCH, scheme="radix4", skip_masked_cycles=None):
    folder.mkdir(parents=True, exist_ok=True)
    kinds = ("forward", "backward", "update")
    config = {"model": model, "dataset": dataset, "batch_size": batch, "epochs": len(history),
              "backends": [[k, b] for k, b in zip(kinds, backends)],
              "vref": [[k, "variable"] for k in kinds], "scheme": scheme,
              "first_last_on_imc": False, "preset": "paper", "seed": 0}
    if skip_masked_cycles is not None:
        config["skip_masked_cycles"] = skip_masked_cycles
    (folder / "metrics.json").write_text(json.dumps({"config": config, "history": history}))
    return folder


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """Two epochs of the mlp on digits: update on 'exact' (no entries), forward and backward
    emulated; epoch 2 records cima_write_words, epoch 1 does not."""
    rng = np.random.default_rng(11)
    history, totals = [], []
    for epoch, density in ((1, 0.3), (2, 0.1)):
        stats, tot = mlp_epoch(rng, density, kinds=("forward", "backward"))
        row = {"epoch": epoch, "train_loss": 1.0, "test_acc": 0.5 + 0.1 * epoch,
               "steps": STEPS, "mvm_stats": stats}
        if epoch == 2:
            row["cima_write_words"] = 1000
        history.append(row)
        totals.append(tot)
    folder = write_run(tmp_path_factory.mktemp("runs") / "mlp", history,
                       backends=("imc", "imc", "exact"))
    return folder, totals


def invoke(*args):
    return CliRunner().invoke(energy_command, [str(a) for a in args])


def test_training_layers_match_the_workloads_and_every_dataset_is_known():
    from imcsim.training.data import DATASET_NAMES
    assert set(DATASET_SHAPES) == set(DATASET_NAMES)
    assert training_layers("vgg-lite", "cifar10") == vgg_lite_layers()
    assert training_layers("mlp", "digits") == [
        LayerSpec("fc1", "dense", 64, 128), LayerSpec("fc2", "dense", 128, 128),
        LayerSpec("fc3", "dense", 128, 128), LayerSpec("fc4", "dense", 128, 10)]
    small = training_layers("small-cnn", "digits")
    assert [(s.name, s.height, s.pool_after) for s in small] == [
        ("conv1", 8, False), ("conv2", 8, True), ("conv3", 4, True), ("fc4", 1, False),
        ("fc5", 1, False)]
    assert small[3].in_channels == 64 * 2 * 2
    with pytest.raises(ValueError, match="resnet-18: Residual s1b0 is not in the energy model"):
        training_layers("resnet-18", "cifar10")


def test_int8_formats_are_the_training_schemes():
    from imcsim.training.backends import INT8_SCHEME
    assert (INT8_FORMATS.activation, INT8_FORMATS.weight, INT8_FORMATS.gradient,
            INT8_FORMATS.stored_activation) == (INT8_SCHEME.activation, INT8_SCHEME.weight,
                                                INT8_SCHEME.gradient,
                                                INT8_SCHEME.stored_activation)


def test_measured_rows_price_the_emulators_events(run_folder):
    folder, totals = run_folder
    run = load_run(folder)
    energy = run_energy(run, training_layers("mlp", "digits"))
    ep1 = energy.epochs[0].measured
    rows = {(r["layer"], r["mvm"]): r for r in ep1.rows}
    for key in (("fc2", "forward"), ("fc3", "backward")):
        r = rows[key]
        assert r["source"] == "measured" and r["device"] == "imc"
        # dense layers: the analytic NMC, reshape and CIMA counts equal the emulator's, so
        # a measured row is the emulator's own events per step, priced
        ev = {k: v / STEPS for k, v in totals[0][key].items()}
        assert {k: r[k] for k in COSTED_EVENTS} == pytest.approx(
            {k: ev[k] for k in COSTED_EVENTS}, rel=1e-12)
        assert r["energy_j"] == pytest.approx(energy_from_events(ev)["total"], rel=1e-12)
        assert r["high_vref_conversions"] == ev["high_vref_conversions"]
    # the measured density of the radix-4 gradients is the emulator's non-zero fraction
    assert rows[("fc3", "backward")]["density"] == pytest.approx(
        totals[0][("fc3", "backward")]["bitcell_mults"]
        / (STEPS * MLP_BATCH * 128 * 128 * 5), rel=1e-12)
    # the update MVMs ran on 'exact': no statistics, the assumed density, said so
    for layer in ("fc2", "fc3"):
        r = rows[(layer, "update")]
        assert r["source"] == "assumed" and r["density"] == 0.5
        assert r == next(x for x in energy.assumed.rows if (x["layer"], x["mvm"]) == (layer,
                                                                                      "update"))
    assert ep1.comparison["sources"] == {"measured": 4, "assumed": 2}
    assert {r["source"] for r in energy.assumed.rows if r["device"] == "imc"} == {"assumed"}
    # first and last layers on the GPU, fc1's backward not run at all
    assert rows[("fc1", "backward")]["device"] == SKIPPED
    assert {rows[("fc4", k)]["device"] for k in ("forward", "backward", "update")} == {"gpu"}


def test_cima_write_words_replace_the_weight_loads_where_recorded(run_folder):
    folder, totals = run_folder
    energy = run_energy(load_run(folder), training_layers("mlp", "digits"))
    ep1, ep2 = energy.epochs
    assert ep1.cima_write_words is None and ep1.weight_rewrite_fraction is None
    one_load = layer_event_counts(LayerSpec("fc2", "dense", 128, 128), "forward",
                                  MLP_BATCH).total()["cima_load_words"]
    assert one_load == 128 * 5 * 4                     # 640 columns x 4 words of 32 rows
    # epoch 2: 1000 changed words of the forward-stored weights of fc2 and fc3 (the hidden
    # layers: the forward ran on the emulator) over 2 steps
    assert ep2.weight_rewrite_fraction == pytest.approx(1000 / (2 * STEPS * one_load))
    rows2 = {(r["layer"], r["mvm"]): r for r in ep2.measured.rows}
    rows1 = {(r["layer"], r["mvm"]): r for r in ep1.measured.rows}
    for layer in ("fc2", "fc3"):
        for kind in ("forward", "backward"):
            assert rows1[(layer, kind)]["cima_load_words"] == one_load        # analytic
            # the transposed copy of the backward MVM rewrites the same fraction
            assert rows2[(layer, kind)]["cima_load_words"] == pytest.approx(1000 / 2 / STEPS)
        # the update MVM stores activations: still one load per step
        assert rows2[(layer, "update")]["cima_load_words"] == rows1[(layer, "update")][
            "cima_load_words"]
    forward = sum(r["cima_load_words"] for r in ep2.measured.rows if r["mvm"] == "forward")
    assert forward == pytest.approx(1000 / STEPS)      # the forward copies: exactly measured


def test_cima_write_words_by_layer_and_an_exact_forward(tmp_path):
    # forward on 'exact' (no forward statistics; the weights are still stored integers): the
    # measured rewrite applies to the forward rows too, whose other events stay assumed
    rng = np.random.default_rng(5)
    stats, _ = mlp_epoch(rng, 0.2, kinds=("backward",))
    row = {"epoch": 1, "test_acc": 0.5, "steps": STEPS, "mvm_stats": stats,
           "cima_write_words": 1000, "cima_write_words_by_layer": {"fc2": 800, "fc3": 200}}
    folder = write_run(tmp_path / "r", [row], backends=("exact", "imc", "exact"))
    ep = run_energy(load_run(folder), training_layers("mlp", "digits")).epochs[0]
    rows = {(r["layer"], r["mvm"]): r for r in ep.measured.rows}
    load = 128 * 5 * 4
    for layer, words in (("fc2", 800), ("fc3", 200)):
        for kind in ("forward", "backward"):
            assert rows[(layer, kind)]["cima_load_words"] == pytest.approx(words / STEPS)
        assert rows[(layer, "forward")]["source"] == "assumed"
        assert rows[(layer, "backward")]["source"] == "measured"
    assert ep.weight_rewrite_fraction == pytest.approx(1000 / (2 * STEPS * load))
    for bad, match in (({"fc2": 800, "fc3": 100}, "sums to 900, not cima_write_words 1000"),
                       ({"fc2": 500, "fc9": 500}, "no layer 'fc9'"),
                       ({"fc2": 2 * load * STEPS, "fc3": 0}, "more words rewritten")):
        fix = dict(row, cima_write_words=sum(bad.values()), cima_write_words_by_layer=bad)
        if "sums" in match:
            fix["cima_write_words"] = 1000
        folder = write_run(tmp_path / "bad", [fix], backends=("exact", "imc", "exact"))
        with pytest.raises(ValueError, match=match):
            run_energy(load_run(folder), training_layers("mlp", "digits"))
    fp32 = dict(row, mvm_stats={})
    del fp32["cima_write_words_by_layer"]
    folder = write_run(tmp_path / "fp32", [fp32], backends=("fp32", "fp32", "fp32"))
    with pytest.raises(ValueError, match="no layer stores integer weights"):
        run_energy(load_run(folder), training_layers("mlp", "digits"))


def test_cli_from_run_per_epoch_rows_and_side_by_side(run_folder, tmp_path):
    folder, _ = run_folder
    r = invoke("--from-run", folder)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["epoch", "steps"])
    epoch_rows = [ln.split() for ln in lines[header + 1:header + 3]]
    assert [row[:3] for row in epoch_rows] == [["1", "2", "0.6000"], ["2", "2", "0.7000"]]
    assert [row[3] for row in epoch_rows] == ["4/6", "4/6"]
    assert epoch_rows[0][-1] == "-" and epoch_rows[1][-2:] == ["9.77", "%"]   # 1000 / 10240
    assert "step_mJ:assumed" in lines[header] and "density:assumed" in r.output
    assert re.search(r"fc2\s+update\s+imc\s+assumed", r.output)
    assert re.search(r"fc2\s+forward\s+imc\s+measured", r.output)
    assert r.output.count(TOPS_CONVENTION) == 1
    for event in COSTED_EVENTS:
        assert re.search(rf"^\s+{event}\s+(measured|analytic|stored)", r.output, re.M), event

    png = tmp_path / "run.png"
    r = invoke("--from-run", folder, "--json", "--plot", png, "--first-last-on-imc")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert [e["epoch"] for e in doc["epochs"]] == [1, 2]
    assert doc["run"]["config"]["model"] == "mlp" and doc["plot"] == str(png)
    rows = {(x["layer"], x["mvm"]): x for x in doc["epochs"][0]["measured"]["rows"]}
    assert rows[("fc1", "forward")]["device"] == "imc"
    assert rows[("fc1", "forward")]["source"] == "assumed"        # never emulated: assumed
    assert rows[("fc1", "backward")]["device"] == SKIPPED
    step = [e["measured"]["comparison"]["imc_step_j"] for e in doc["epochs"]]
    assert step[1] < step[0]                      # epoch 2: sparser gradients, fewer writes
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_from_run_vgg_lite_first_layer_statistics_are_ignored_by_default(tmp_path):
    # a vgg-lite run that emulated L1 too (first_last_on_imc): its backward entry is not
    # charged unless --first-layer-backward
    layers = vgg_lite_layers()
    l1 = layers[0]
    one = layer_event_counts(l1, "backward", 2, density=0.2).total()
    entry = {"calls": 1, "array_cycles": int(one["array_cycles"]),
             "adc_conversions": int(one["adc_conversions"]), "high_vref_conversions": 0,
             "bitcell_mults": int(round(one["bitcell_mults"])),
             "active_rows_per_plane": [0.2 * 1152 / 7] * 7, "inner": 1152, "outputs": 3,
             "vectors_per_call": 2048.0}
    hist = [{"epoch": 1, "test_acc": 0.1, "steps": 1, "mvm_stats": {"L1": {"backward": entry}}}]
    folder = write_run(tmp_path / "v", hist, model="vgg-lite", dataset="cifar10", batch=2)
    base = ["--from-run", folder, "--json", "--first-last-on-imc"]
    skip = json.loads(invoke(*base).output)["epochs"][0]["measured"]["rows"][1]
    assert skip["device"] == SKIPPED and skip["energy_j"] == 0
    used = json.loads(invoke(*base, "--first-layer-backward").output)
    row = used["epochs"][0]["measured"]["rows"][1]
    assert row["source"] == "measured" and row["density"] == pytest.approx(0.2)
    assert row["bitcell_mults"] == entry["bitcell_mults"]


def test_int8_run_uses_binary_gradients(tmp_path):
    # --scheme int8: binary:8 everywhere; a zero binary gradient still drives its rows, so the
    # assumed gradient density is 1 and the measured one is 1 as well
    rng = np.random.default_rng(3)
    b8 = BinaryFormat(8)
    w = rng.integers(-64, 65, (128, 128))
    grads = rng.integers(-5, 6, (MLP_BATCH, 128))
    entry, total = emulate(Macro(), [(grads, w.T.copy(), b8, b8)])
    hist = [{"epoch": 1, "test_acc": 0.3, "steps": 1,
             "mvm_stats": {"fc2": {"backward": entry}}}]
    folder = write_run(tmp_path / "int8", hist, scheme="int8")
    energy = run_energy(load_run(folder), training_layers("mlp", "digits"))
    row = next(r for r in energy.epochs[0].measured.rows
               if (r["layer"], r["mvm"]) == ("fc2", "backward"))
    assumed = next(r for r in energy.assumed.rows if (r["layer"], r["mvm"]) == ("fc2",
                                                                               "backward"))
    assert row["source"] == "measured" and row["density"] == 1.0 == assumed["density"]
    assert row["bitcell_mults"] == total["bitcell_mults"] == assumed["bitcell_mults"]
    assert energy.assumed.settings["formats"]["gradients"] == "binary:8"
    bad = write_run(tmp_path / "radix4", hist)          # the same entry claimed as radix-4
    with pytest.raises(ValueError, match="8 planes; the backward MVM streams radix4:8"):
        run_energy(load_run(bad), training_layers("mlp", "digits"))


BAD_RUNS = {
    "missing folder": (None, "no such folder"),
    "no metrics.json": ("", "no metrics.json"),
    "malformed JSON": ('{"config": {', "not valid JSON"),
    "history not a list": ('{"config": CONFIG, "history": 3}', "history: expected a list"),
    "empty history": ('{"config": CONFIG, "history": []}', "history: empty"),
    "old run without statistics": (
        '{"config": CONFIG, "history": [{"epoch": 1, "test_acc": 0.5}]}', "no 'steps'"),
    "missing config key": ('{"config": {"model": "mlp"}, "history": []}', "missing key"),
    "steps not an int": ('{"config": CONFIG, "history": [{"epoch": 1, "test_acc": 0.5, '
                         '"steps": 2.5, "mvm_stats": {}}]}', "history[0].steps"),
    "unknown layer": ('{"config": CONFIG, "history": [{"epoch": 1, "test_acc": 0.5, '
                      '"steps": 2, "mvm_stats": {"fc9": {"forward": ENTRY}}}]}', "no layer 'fc9'"),
    "wrong planes": ('{"config": CONFIG, "history": [{"epoch": 1, "test_acc": 0.5, '
                     '"steps": 2, "mvm_stats": {"fc3": {"backward": ENTRY}}}]}',
                     "mvm_stats.fc3.backward.active_rows_per_plane: 6 planes"),
    "wrong geometry": ('{"config": CONFIG, "history": [{"epoch": 1, "test_acc": 0.5, '
                       '"steps": 2, "mvm_stats": {"fc1": {"forward": ENTRY}}}]}',
                       "mvm_stats.fc1.forward: inner 128"),
    "negative count": ('{"config": CONFIG, "history": [{"epoch": 1, "test_acc": 0.5, '
                       '"steps": 2, "mvm_stats": {"fc2": {"forward": NEGATIVE}}}]}',
                       "bitcell_mults: must be >= 0"),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_cli_from_run_bad_folder_is_one_line_exit_2(tmp_path, run_folder, case):
    good = json.loads((run_folder[0] / "metrics.json").read_text())
    entry = good["history"][0]["mvm_stats"]["fc2"]["forward"]
    text, expected = BAD_RUNS[case]
    folder = tmp_path / "run"
    if text is not None:
        folder.mkdir()
    if text:
        text = (text.replace("CONFIG", json.dumps(good["config"]))
                .replace("NEGATIVE", json.dumps(dict(entry, bitcell_mults=-1)))
                .replace("ENTRY", json.dumps(entry)))
        (folder / "metrics.json").write_text(text)
    png = tmp_path / "e.png"
    for extra in ([], ["--json"], ["--plot", png]):
        r = invoke("--from-run", folder, *extra)
        assert r.exit_code == 2, (case, r.output)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
        assert expected in lines[0] and str(folder) in lines[0], lines[0]
        assert "Traceback" not in r.output
    assert not png.exists()


def test_cli_from_run_refuses_the_options_the_run_sets(run_folder):
    for args in (["--model", "vgg-lite"], ["--batch", "8"], ["--vref", "dual"],
                 ["--scenarios"]):
        r = invoke("--from-run", run_folder[0], *args)
        assert r.exit_code == 2 and "not with --from-run" in r.output, r.output
        assert args[0] in r.output


def test_cli_from_run_plot_never_overwrites_the_metrics(run_folder):
    folder, _ = run_folder
    before = (folder / "metrics.json").read_bytes()
    r = invoke("--from-run", folder, "--plot", folder / "metrics.json")
    assert r.exit_code == 2 and "overwrite" in r.output, r.output
    assert (folder / "metrics.json").read_bytes() == before


def test_docs_tables_are_the_scripts_output(capsys):
    # docs/energy.md quotes scripts/energy_report.py: every table row it prints is in the page
    import importlib.util
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("energy_report_script",
                                                  root / "scripts" / "energy_report.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["accounting", "claims", "layers", "sensitivity"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("| ") and not ln.startswith("| accounting |")]
    doc = (root / "docs" / "energy.md").read_text()
    # the script prints the default row plain; the page sets it in bold
    doc = doc.replace("**", "")
    missing = [ln for ln in rows if ln not in doc]
    assert len(rows) > 20 and not missing, missing


def test_from_run_prices_a_run_that_skipped_masked_cycles(tmp_path):
    """A controller that skips all-masked cycles converts fewer times than the mapping's
    fixed count: accepted (and priced as measured) when the run says so, refused otherwise."""
    from imcsim import MacroConfig
    rng = np.random.default_rng(5)
    stats, totals = mlp_epoch(rng, 0.05, macro=Macro(MacroConfig(skip_masked_cycles=True)))
    row = {"epoch": 1, "test_acc": 0.5, "steps": STEPS, "mvm_stats": stats}
    skipped = sum(t["adc_conversions"] for t in totals.values())
    full = sum(mlp_epoch(np.random.default_rng(5), 0.05)[1][k]["adc_conversions"]
               for k in totals)
    assert skipped < full                       # some gradient planes were all masked
    ok = invoke("--from-run", write_run(tmp_path / "skip", [row], skip_masked_cycles=True),
                "--json")
    assert ok.exit_code == 0, ok.output
    measured = json.loads(ok.output)["epochs"][0]["measured"]["totals"]["adc_conversions"]
    assert measured == pytest.approx(skipped / STEPS)
    bad = invoke("--from-run", write_run(tmp_path / "noskip", [row]))
    assert bad.exit_code == 2 and "adc_conversions" in bad.output


def test_from_run_prices_a_run_with_the_per_column_dual_choice(run_folder, tmp_path):
    """The analytic column has no per-column model: it uses the per-cycle rule with the same
    levels, and the measured rows are the run's own."""
    folder, _ = run_folder
    doc = json.loads((folder / "metrics.json").read_text())
    doc["config"]["vref"] = [["forward", "dual:255:2304:column"],
                             ["backward", "dual:255:2304:column"], ["update", "variable"]]
    (tmp_path / "metrics.json").write_text(json.dumps(doc))
    res = invoke("--from-run", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["epochs"][0]["measured"]["totals"]["adc_conversions"] > 0
