"""Energy model: hand-computed counts, analytic counts == emulator counters, presets, GPU
baseline, the VGG-lite report and the CLI (docs/energy.md)."""
import dataclasses
import json
import math
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from imcsim import BinaryFormat, Macro, MacroConfig, Radix4Format, VrefConfig, VrefMode
from imcsim.cli.energy import energy_command
from imcsim.energy import (
    ACT_FORMAT,
    ASSUMED_EVENTS,
    COSTED_EVENTS,
    GRAD_FORMAT,
    WEIGHT_FORMAT,
    EnergyPreset,
    LayerSpec,
    conv_event_counts,
    energy_from_events,
    energy_preset_names,
    energy_report,
    gpu_energy,
    layer_event_counts,
    load_energy_preset,
    measured_density,
    mvm_event_counts,
    parse_vref,
    parse_vref_per_kind,
    plot_report,
    save_energy_preset,
    scenario_summary,
    vgg_lite_layers,
)
from imcsim.events import EVENT_NAMES
from imcsim.macro import conv2d
from imcsim.reshape import reshape_conv_inputs

# A small array so hand counts stay small: 64 rows, 32 columns, 6-bit ADC (L = 63).
SMALL = MacroConfig(rows=64, columns=32, adc_bits=6,
                    vref=VrefConfig(full_scale=64, dual_low=63, dual_high=64))
# 300 rows and an 8-bit ADC, so that the dual mode has a real choice (255 or 300 rows).
DUALCFG = MacroConfig(rows=300, columns=32, adc_bits=8,
                      vref=VrefConfig(mode=VrefMode.DUAL, full_scale=300, dual_low=255,
                                      dual_high=300))
B6, B5, R8 = BinaryFormat(6), BinaryFormat(5), Radix4Format(8)
CHECKED = [n for n in EVENT_NAMES if n != "clipped_conversions"]   # data-dependent


def assert_same_counts(analytic, res):
    for name in CHECKED:
        np.testing.assert_array_equal(analytic.per_tile[name], res.events.per_tile[name],
                                      err_msg=name)


def radix4_operand(rng, shape, density, planes=7, den=64):
    """Random radix-4 values: each element non-zero with probability ``density``."""
    exps = rng.integers(0, planes, shape)
    sign = rng.choice([-1.0, 1.0], shape)
    nz = rng.random(shape) < density
    return np.where(nz, sign * 4.0 ** exps / den, 0.0)


# --------------------------------------------------------------------------------------
# Hand-computed counts
# --------------------------------------------------------------------------------------
def test_hand_counts_tiny_dense_layer():
    # M=150 (row tiles of 64, 64, 22), N=9 outputs, binary:5 weights -> 32 // 5 = 6 outputs per
    # column tile: tiles of 6 and 3 outputs = 30 and 15 columns; B=3 vectors of binary:6 (P=6).
    rng = np.random.default_rng(1)
    X = rng.integers(-16, 17, (3, 150))
    W = rng.integers(-8, 9, (150, 9))
    hand = {
        "array_cycles": 3 * 2 * 3 * 6,                        # T * U * B * P = 108
        "bitcell_mults": 3 * 6 * 150 * 45,                    # B * P * M * (N * Kw) = 121500
        "adc_conversions": 3 * 3 * 6 * 45,                    # T * B * P * 45 columns = 2430
        "sar_steps": 3 * 3 * 6 * 45 * 6,                      # 6-bit ADC = 14580
        "nmc_outputs": 3 * 3 * 9,                             # T * B * N = 81
        "reshape_words": 2 * 3 * (12 + 12 + 5),               # U * B * ceil(R*6/32) = 174
        "cima_load_words": 45 * (2 + 2 + 1),                  # columns * ceil(R/32) = 225
        "high_vref_conversions": 0,
    }
    res = Macro(SMALL).mvm(X, W, B6, B5)
    got = res.events.total()
    assert {k: got[k] for k in hand} == hand
    ana = mvm_event_counts(150, 9, 3, B6, B5, config=SMALL).total()
    assert {k: ana[k] for k in hand} == hand
    # Table II energy of these counts, by hand (fJ).
    e = energy_from_events(got)
    fj = 121500 * 0.734 + 2430 * 346 + 81 * 243 + 174 * 14.9 + 225 * 7360
    assert e["total"] == pytest.approx(fj * 1e-15, rel=1e-12)


def test_hand_counts_tiny_conv_layer():
    # fmap (2, 4, 4, 5), 3x3 weights 5 -> 7: inner 45 (one row tile), 32 vectors (2*4*4),
    # column tiles of 6 and 1 outputs = 30 + 5 = 35 columns.
    rng = np.random.default_rng(2)
    fmap = rng.integers(0, 17, (2, 4, 4, 5))
    w = rng.integers(-8, 9, (3, 3, 5, 7))
    hand = {
        "array_cycles": 2 * 32 * 6,                           # U * B * P = 384
        "bitcell_mults": 32 * 6 * 45 * 35,                    # every row active = 302400
        "adc_conversions": 32 * 6 * 35,                       # 6720
        "nmc_outputs": 32 * 7,                                # 224
        "reshape_words": 2 * (2 * 4 * 4 * 1),                 # U * B*H*W * ceil(5*6/32) = 64
        "cima_load_words": 35 * 2,                            # 35 columns * ceil(45/32) = 70
    }
    _, res = conv2d(Macro(SMALL), fmap, w, B6, B5)
    got = res.events.total()
    assert {k: got[k] for k in hand} == hand
    assert res.meta["reshape_words_without_reuse"] == 2 * 32 * 9    # no window reuse
    ana = conv_event_counts(2, 4, 4, 5, 7, B6, B5, config=SMALL)
    assert {k: ana.total()[k] for k in hand} == hand
    assert_same_counts(ana, res)


# --------------------------------------------------------------------------------------
# Analytic counts == the emulator's counters
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["variable", "dual", "fixed"])
def test_analytic_equals_emulator_radix4_sparse(mode):
    cfg = DUALCFG.with_vref(VrefConfig(mode=VrefMode(mode), full_scale=300, dual_low=255,
                                       dual_high=300))
    rng = np.random.default_rng(3)
    X = radix4_operand(rng, (6, 700), 0.3)             # row tiles 300, 300, 100
    X[0, :] = 1.0                                       # a dense vector: 300 rows in plane 3
    W = rng.integers(-8, 9, (700, 11))                  # column tiles: 6 + 5 outputs
    res = Macro(cfg).mvm(X, W, R8, B5)
    ana = mvm_event_counts(700, 11, 6, R8, B5, config=cfg, active_rows=res.active_rows)
    assert_same_counts(ana, res)
    high = res.events.total()["high_vref_conversions"]
    assert (high > 0) == (mode == "dual")               # vector 0's plane 3 needs F = 300


def test_analytic_equals_emulator_paper_geometry():
    rng = np.random.default_rng(4)
    X = rng.integers(0, 17, (2, 2500))                  # 2 row tiles of the 2304-row array
    W = rng.integers(-8, 9, (2500, 60))                 # 51 + 9 outputs
    res = Macro().mvm(X, W, B6, B5)
    assert_same_counts(mvm_event_counts(2500, 60, 2, B6, B5), res)


def test_analytic_and_emulator_share_one_event_count_definition(monkeypatch):
    import imcsim.energy.counts as counts
    import imcsim.events as events
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return events.tile_event_counts(*args, **kwargs)

    monkeypatch.setattr(counts, "tile_event_counts", spy)
    mvm_event_counts(150, 9, 3, B6, B5, config=SMALL)
    assert len(calls) == 1 and calls[0]["vectors"] == 3 and calls[0]["n_planes"] == 6


def test_density_counts_match_emulator_with_known_sparsity():
    # Each vector has exactly 16 non-zero gradients in each 64-row tile: density 1/4.
    rng = np.random.default_rng(5)
    X = np.zeros((4, 128))
    for b in range(4):
        for t in range(2):
            idx = rng.choice(64, 16, replace=False) + 64 * t
            X[b, idx] = radix4_operand(rng, 16, 1.0)
    W = rng.integers(-8, 9, (128, 6))
    res = Macro(SMALL).mvm(X, W, R8, B5)
    assert measured_density(res, 128) == 0.25
    ana = mvm_event_counts(128, 6, 4, R8, B5, config=SMALL, density=0.25).total()
    for name in CHECKED:
        assert ana[name] == res.events.total()[name], name


@pytest.mark.parametrize("kind", ["forward", "backward", "update"])
def test_layer_counts_equal_emulated_training_mvms_conv(kind):
    layer = LayerSpec("t", "conv", 5, 7, 4, 4)
    batch, rng = 2, np.random.default_rng(6)
    macro = Macro(SMALL)
    acts = rng.integers(0, 17, (batch, 4, 4, 5))
    weights = rng.integers(-8, 9, (3, 3, 5, 7))
    grads = radix4_operand(rng, (batch, 4, 4, 7), 0.4)
    if kind == "forward":
        _, res = conv2d(macro, acts, weights, ACT_FORMAT, WEIGHT_FORMAT)
    elif kind == "backward":    # transposed conv: flipped kernel, channels swapped
        wt = np.ascontiguousarray(weights[::-1, ::-1].transpose(0, 1, 3, 2))
        _, res = conv2d(macro, grads, wt, GRAD_FORMAT, WEIGHT_FORMAT)
    else:                       # activations (im2col) stored, one gradient vector per channel
        cols = reshape_conv_inputs(acts, 1, ACT_FORMAT.bits).vectors       # (32, 45)
        res = macro.mvm(grads.reshape(-1, 7).T.copy(), cols, GRAD_FORMAT, ACT_FORMAT)
    ana = layer_event_counts(layer, kind, batch, config=SMALL, active_rows=res.active_rows)
    assert_same_counts(ana, res)
    # and the MAC count the GPU baseline uses is the same for all three MVMs
    assert layer.macs(batch) == batch * 16 * 45 * 7


@pytest.mark.parametrize("kind", ["forward", "backward", "update"])
def test_layer_counts_equal_emulated_training_mvms_dense(kind):
    layer = LayerSpec("d", "dense", 70, 13)
    batch, rng = 9, np.random.default_rng(7)
    macro = Macro(SMALL)
    acts = rng.integers(0, 17, (batch, 70))
    weights = rng.integers(-8, 9, (70, 13))
    grads = radix4_operand(rng, (batch, 13), 0.5)
    if kind == "forward":
        res = macro.mvm(acts, weights, ACT_FORMAT, WEIGHT_FORMAT)
    elif kind == "backward":
        res = macro.mvm(grads, weights.T.copy(), GRAD_FORMAT, WEIGHT_FORMAT)
    else:
        res = macro.mvm(grads.T.copy(), acts, GRAD_FORMAT, ACT_FORMAT)
    ana = layer_event_counts(layer, kind, batch, config=SMALL, active_rows=res.active_rows)
    assert_same_counts(ana, res)


def test_masked_rows_spend_no_bitcell_energy():
    dense = mvm_event_counts(128, 6, 4, R8, B5, config=SMALL, density=1.0).total()
    half = mvm_event_counts(128, 6, 4, R8, B5, config=SMALL, density=0.5).total()
    assert half["bitcell_mults"] == dense["bitcell_mults"] / 2
    assert half["adc_conversions"] == dense["adc_conversions"]     # every column still converts


def test_analytic_validation():
    with pytest.raises(ValueError, match="active_rows"):
        mvm_event_counts(10, 2, 3, R8, B5, config=SMALL, active_rows=np.zeros((1, 3, 6), int))
    with pytest.raises(ValueError, match="density"):
        mvm_event_counts(10, 2, 3, R8, B5, config=SMALL, density=1.5)
    with pytest.raises(TypeError, match="w_format"):
        mvm_event_counts(10, 2, 3, R8, R8, config=SMALL)
    with pytest.raises(ValueError, match="inner"):
        mvm_event_counts(0, 2, 3, R8, B5)
    with pytest.raises(ValueError, match="kind"):
        layer_event_counts(vgg_lite_layers()[1], "sideways", 4)


# --------------------------------------------------------------------------------------
# Presets, energy of events, GPU baseline
# --------------------------------------------------------------------------------------
def test_default_preset_is_table_two_and_round_trips(tmp_path):
    p = load_energy_preset()
    assert "table2-16nm" in energy_preset_names()
    assert p == EnergyPreset()
    assert (p.bitcell_mult_fj, p.adc_sample_fj, p.nmc_output_fj, p.reshape_word_fj,
            p.cima_load_word_fj, p.gpu_tops_per_watt) == (0.734, 346.0, 243.0, 14.9, 7360.0,
                                                          0.116)
    assert EnergyPreset.from_json(p.to_json()) == p
    other = EnergyPreset(name="mine", adc_sample_fj=100.0, gpu_tops_per_watt=1.0)
    save_energy_preset(other, tmp_path / "mine.json")
    assert load_energy_preset(str(tmp_path / "mine.json")) == other
    assert p.joules_per_event()["sar_steps"] == 0.0


def test_save_preset_is_all_or_nothing(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        save_energy_preset(EnergyPreset(), tmp_path / "no" / "such.json")
    target = tmp_path / "p.json"
    target.write_text("old")
    with pytest.raises(TypeError, match="preset"):
        save_energy_preset({"name": "x"}, target)
    assert target.read_text() == "old"
    save_energy_preset(EnergyPreset(name="new"), target)
    assert load_energy_preset(str(target)).name == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]        # no temporary left


def test_preset_validation():
    with pytest.raises(ValueError, match="adc_sample_fj"):
        EnergyPreset(adc_sample_fj=-1.0)
    with pytest.raises(TypeError, match="bitcell_mult_fj"):
        EnergyPreset(bitcell_mult_fj="0.7")
    with pytest.raises(ValueError, match="gpu_tops_per_watt"):
        EnergyPreset(gpu_tops_per_watt=0.0)
    with pytest.raises(ValueError, match="unknown keys"):
        EnergyPreset.from_dict({"adc_fj": 1.0})
    with pytest.raises(ValueError, match="no energy preset"):
        load_energy_preset("nope")
    with pytest.raises(dataclasses.FrozenInstanceError):
        EnergyPreset().adc_sample_fj = 1.0            # frozen


def test_energy_from_events_hand_and_validation():
    counts = {"bitcell_mults": 1000, "adc_conversions": 10, "nmc_outputs": 2,
              "reshape_words": 4, "cima_load_words": 1, "sar_steps": 80}
    e = energy_from_events(counts)
    assert e["total"] == pytest.approx((734 + 3460 + 486 + 59.6 + 7360) * 1e-15, rel=1e-12)
    # the multi-level row DAC's assumed events are priced too (0 where not counted)
    assert set(e) == set(COSTED_EVENTS) | set(ASSUMED_EVENTS) | {"total"}
    assert e["dac_row_drives"] == e["dac_level_sum"] == 0
    with_dac = energy_from_events(dict(counts, dac_row_drives=3, dac_level_sum=7))
    assert with_dac["total"] - e["total"] == pytest.approx((3 * 20 + 7 * 5) * 1e-15, rel=1e-9)
    with pytest.raises(ValueError, match="missing"):
        energy_from_events({"bitcell_mults": 1})
    with pytest.raises(ValueError, match="unknown"):
        energy_from_events(dict(counts, joules=3))
    with pytest.raises(ValueError, match="bitcell_mults"):
        energy_from_events(dict(counts, bitcell_mults=-1))
    with pytest.raises(TypeError, match="event_totals"):
        energy_from_events([1, 2])


def test_gpu_energy_formula():
    assert gpu_energy(1e12, 0.116) == pytest.approx(2e12 / 0.116e12)
    assert gpu_energy(10**9) == pytest.approx(2e9 / 0.116e12)      # default: T4 preset
    assert gpu_energy(10**9, EnergyPreset(gpu_tops_per_watt=2.0)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="macs"):
        gpu_energy(-1)
    with pytest.raises(ValueError, match="tops_per_watt"):
        gpu_energy(1, 0.0)


# --------------------------------------------------------------------------------------
# VGG-lite report
# --------------------------------------------------------------------------------------
def test_vgg_lite_macs_and_gpu_step():
    per_image = (1024 * 27 * 128 + 1024 * 1152 * 128 + 256 * 1152 * 256 + 256 * 2304 * 256
                 + 2 * 64 * 2304 * 256 + 4096 * 1024 + 1024 * 1024 + 1024 * 10)
    assert per_image == 461_776_896
    assert sum(layer.macs(1) for layer in vgg_lite_layers()) == per_image
    l1_backward = 128 * 1024 * 27 * 128              # the input gradient: never computed
    rep = energy_report(batch=128)
    assert rep.totals["macs"] == 3 * 128 * per_image - l1_backward
    assert rep.comparison["gpu_step_j"] == pytest.approx(
        2 * (3 * 128 * per_image - l1_backward) / 0.116e12)
    paper = energy_report(batch=128, first_layer_backward=True)
    assert paper.totals["macs"] == 3 * 128 * per_image


def test_report_rows_equal_layer_counts_and_energy():
    rep = energy_report(batch=8, gradient_density=0.3)
    per = EnergyPreset().joules_per_event()
    row = next(r for r in rep.rows if r["layer"] == "L3" and r["mvm"] == "update")
    ana = layer_event_counts(vgg_lite_layers()[2], "update", 8, density=0.3).total()
    assert row["bitcell_mults"] == pytest.approx(ana["bitcell_mults"])
    assert row["energy_j"] == pytest.approx(sum(ana[n] * per[n] for n in COSTED_EVENTS))
    # L2 is max-pooled: its gradient density is a quarter of the stated one
    assert next(r for r in rep.rows if r["layer"] == "L2" and r["mvm"] == "backward")[
        "density"] == pytest.approx(0.075)
    # first and last layers on the GPU by default
    assert [r["device"] for r in rep.rows if r["layer"] in ("L1", "L9")] == [
        "gpu", "skip", "gpu", "gpu", "gpu", "gpu"]          # L1's backward is not run
    total = sum(r["energy_j"] for r in rep.rows)
    assert rep.comparison["imc_step_j"] == pytest.approx(total)


def test_vgg_lite_reproduces_the_papers_claims():
    s = {d["label"]: d for d in scenario_summary(batch=128)}
    gpu = s["GPU only"]["step_j"]
    assert 1.0 < gpu < 10.0                                            # joules per step
    all3 = s["IMC all three (variable Vref)"]
    assert all3["step_j"] < 0.1                                        # < 100 mJ (Fig. 9)
    assert all3["ratio"] > 100                                         # > 2 orders of magnitude
    assert all3["ratio_without_first_last"] > 400                      # abstract's > 400x
    assert all3["first_last_penalty"] > 5                              # Fig. 10: > 5x
    fb = s["IMC forward+backward (dual Vref)"]["ratio"]
    assert 2.5 < fb < 3.0                                              # "3x"
    assert fb / s["IMC forward (dual Vref)"]["ratio"] == pytest.approx(2.0, rel=0.05)
    rep = energy_report(batch=128)
    assert 80 < rep.comparison["imc_tops_per_watt"] < 140             # Table IV: 54.2, see
    # docs/energy.md, 4: with masked rows charged it is 55.5 (ops = 2 x MACs)
    charged = energy_report(batch=128, charge_masked_rows=True).comparison
    assert 50 < charged["imc_tops_per_watt"] < 60


def test_vref_changes_only_the_high_vref_count():
    a = energy_report(batch=4, imc="forward,backward", vref="variable")
    b = energy_report(batch=4, imc="forward,backward", vref="dual")
    assert a.comparison["imc_step_j"] == b.comparison["imc_step_j"]
    assert b.comparison["high_vref_share"]["forward"] == 1.0          # 2304 active rows
    assert a.totals["high_vref_conversions"] == 0
    assert parse_vref("forward=dual")["backward"].mode is VrefMode.VARIABLE
    with pytest.raises(ValueError, match="vref"):
        parse_vref("forward=sometimes")


def test_vref_syntax_is_the_one_of_vref_config_parse():
    assert parse_vref is parse_vref_per_kind
    default = parse_vref_per_kind(None)
    assert list(default) == ["forward", "backward", "update"]
    assert set(default.values()) == {VrefConfig()}
    # one spec for every kind; a spec without numbers keeps the base's levels
    every = parse_vref_per_kind("dual", DUALCFG.vref)
    assert set(every.values()) == {DUALCFG.vref}
    assert parse_vref_per_kind("fixed")["update"] == VrefConfig(mode=VrefMode.FIXED)
    # per kind, comma-separated or repeated, with the levels of VrefConfig.parse
    both = parse_vref_per_kind("forward=dual:255:2304, backward=fixed:1024")
    assert both == parse_vref_per_kind(["forward=dual:255:2304", "backward=fixed:1024"])
    assert both["forward"] == VrefConfig.parse("dual:255:2304")
    assert both["backward"] == VrefConfig(mode=VrefMode.FIXED, full_scale=1024)
    assert both["update"] == VrefConfig()
    # later items win; a bare spec sets every kind
    assert parse_vref_per_kind(["dual", "update=variable"])["update"].mode is VrefMode.VARIABLE
    # the dict form takes specs, modes and configs
    d = parse_vref_per_kind({"forward": "dual:255:2304", "update": VrefMode.FIXED,
                             "backward": VrefConfig(mode=VrefMode.DUAL)})
    assert d["forward"] == both["forward"] and d["update"].mode is VrefMode.FIXED
    one = VrefConfig(mode=VrefMode.FIXED, full_scale=512)
    assert set(parse_vref_per_kind(one).values()) == {one}
    for bad, match in (("sideways=dual", "sideways"), ("forward=", "KIND=SPEC"),
                       ("dual:255", "dual"), ("forward=fixed:x", "fixed"),
                       ({"forward": "often"}, "often")):
        with pytest.raises(ValueError, match=match):
            parse_vref_per_kind(bad)
    with pytest.raises(TypeError, match="vref"):
        parse_vref_per_kind(3)
    with pytest.raises(TypeError, match="base"):
        parse_vref_per_kind("dual", base="variable")


def test_report_validation():
    with pytest.raises(ValueError, match="model"):
        energy_report("resnet-18")
    with pytest.raises(ValueError, match="imc"):
        energy_report(imc="forward,sideways")
    with pytest.raises(ValueError, match="activation_density"):
        energy_report(activation_density=0.5)           # the paper's macro masks no zeros
    with pytest.raises(TypeError, match="batch"):
        energy_report(batch=1.5)


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def test_cli_json_and_plot(tmp_path):
    png = tmp_path / "energy.png"
    out = CliRunner().invoke(energy_command, ["--model", "vgg-lite", "--batch", "128",
                                              "--json", "--scenarios", "--plot", str(png)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert len(data["rows"]) == 27
    assert data["settings"]["imc"] == ["forward", "backward", "update"]
    assert data["comparison"]["imc_step_j"] < 0.1
    # 26 of the 27 MVMs: L1's backward is not run (3.0573 J with it)
    assert math.isclose(data["comparison"]["gpu_step_j"], 3.0495, rel_tol=1e-4)
    assert sum(r["device"] == "skip" for r in data["rows"]) == 1
    assert len(data["scenarios"]) == 5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_table_and_errors():
    r = CliRunner().invoke(energy_command, ["--batch", "4", "--imc", "forward,backward",
                                            "--vref", "dual", "--gpu-tops-per-watt", "1.0"])
    assert r.exit_code == 0, r.output
    assert "total" in r.output and "GPU / this mapping" in r.output
    bad = CliRunner().invoke(energy_command, ["--imc", "forwards"])
    assert bad.exit_code == 2 and "forwards" in bad.output
    bad = CliRunner().invoke(energy_command, ["--vref", "forward=dual:255"])
    assert bad.exit_code == 2 and "dual" in bad.output


def test_cli_vref_per_kind_repeated():
    r = CliRunner().invoke(energy_command, ["--batch", "2", "--json", "--vref",
                                            "forward=dual:255:2304", "--vref", "backward=fixed"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["settings"]["vref"] == {"forward": "dual", "backward": "fixed",
                                                        "update": "variable"}


def test_cli_plot_into_missing_folder_is_one_line(tmp_path):
    png = tmp_path / "missing" / "energy.png"
    for extra in ([], ["--json"]):
        r = CliRunner().invoke(energy_command, ["--batch", "2", "--plot", str(png)] + extra)
        assert r.exit_code == 2, r.output
        assert r.output.strip().splitlines() == [f"Error: --plot: folder {png.parent} does not exist"]
        assert r.exception is None or isinstance(r.exception, SystemExit)
    assert not png.parent.exists()


def test_plot_without_matplotlib_is_a_value_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    msg = "plot: needs matplotlib: pip install 'imcsim[plot]'"
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        plot_report(energy_report(batch=2), tmp_path / "e.png")
    r = CliRunner().invoke(energy_command, ["--batch", "2", "--plot", str(tmp_path / "e.png")])
    assert r.exit_code == 2 and r.output.strip().splitlines() == [f"Error: {msg}"]
    assert list(tmp_path.iterdir()) == []


def test_charge_masked_rows_variant():
    free = energy_report(batch=4, gradient_density=0.5)
    charged = energy_report(batch=4, gradient_density=0.5, charge_masked_rows=True)
    L3 = vgg_lite_layers()[2]
    row = next(r for r in charged.rows if r["layer"] == "L3" and r["mvm"] == "backward")
    assert row["bitcell_mults"] == layer_event_counts(L3, "backward", 4).total()["bitcell_mults"]
    free_row = next(r for r in free.rows if r["layer"] == "L3" and r["mvm"] == "backward")
    assert row["bitcell_mults"] == pytest.approx(free_row["bitcell_mults"] * 7 / 0.5)
    assert row["adc_conversions"] == free_row["adc_conversions"]
    fwd = [(a["bitcell_mults"], b["bitcell_mults"]) for a, b in zip(free.rows, charged.rows)
           if a["mvm"] == "forward"]
    assert all(x == y for x, y in fwd)                  # binary activations: nothing masked
