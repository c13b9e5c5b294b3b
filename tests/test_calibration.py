"""Calibration from silicon to model, on synthetic silicon (issue 12).

A hidden chip -- every non-ideality on, per-column values from a random chip_seed -- converts the
calibration stimulus in the emulator (``Macro.mvm``); ``calibrate`` must recover its parameters:

- per-column comparator offsets within 0.1 LSB at F = L (1 LSB = 1 row; achieved ~0.03),
  column gains within 1e-3, CDAC capacitors within 0.05 LSB;
- total dynamic noise within 5 %, comparator noise within 10 %, sampling noise within 15 % (this chip's
  split is identifiable: comparator noise dominates; the truth lies in the reported intervals);
- cell-mismatch sigma and parasitic ratio within 15 % / 2 %; the offset and CDAC sigmas (8
  columns only) within their 95 % intervals.

``statistical_check`` passes the calibrated model against a fresh measurement of the same chip
and fails the ideal model and another chip.  Small geometry (300 x 8, 6-bit ADC) for speed.
"""
import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from imcsim import MacroConfig, NonIdealityConfig, VrefConfig, VrefMode, load_preset
from imcsim.calibration import (
    ChipModel,
    calibrate,
    load_calibrated_model,
    load_measurement,
    make_calibration_stimulus,
    simulate_measurement,
    write_measurement,
)
from imcsim.calibration.fit import FitOptions, _cdac_sigma
from imcsim.calibration.model import log_code_prob, path_trials
from imcsim.calibration.montecarlo import CalibratedMacro, evaluate_chips, scaled_config
from imcsim.calibration.statistical import statistical_check, statistical_check_files
from imcsim.calibration.stimulus import stimulus_from_dict
from imcsim.cli.main import main

VREF = VrefConfig(full_scale=300, dual_low=63, dual_high=300)
NOMINAL = MacroConfig(rows=300, columns=8, adc_bits=6, vref=VREF)
TRUE_NI = NonIdealityConfig(cell_cap_sigma=0.01, parasitic_ratio=0.05, cdac_unit_sigma=0.02,
                            comparator_offset_sigma=0.4, comparator_noise_sigma=0.3,
                            sampling_noise_sigma=0.2)
HIDDEN_SEED = int(np.random.default_rng(2024).integers(1, 2 ** 40))
CHIP = replace(NOMINAL, nonideal=TRUE_NI, chip_seed=HIDDEN_SEED)


@pytest.fixture(scope="module")
def stimulus():
    return make_calibration_stimulus(NOMINAL, repeat_vectors=512, repeat_counts=16)


@pytest.fixture(scope="module")
def measured(stimulus):
    return simulate_measurement(stimulus, CHIP, seed=1)


@pytest.fixture(scope="module")
def result(measured):
    return calibrate(measured)


@pytest.fixture(scope="module")
def truth():
    return ChipModel.from_config(CHIP)


# --- the model -----------------------------------------------------------------------------
def test_code_probabilities_sum_to_one():
    """The exact SAR path probabilities form a distribution, for every noise mixture."""
    cm = ChipModel.from_config(replace(CHIP, nonideal=replace(TRUE_NI, cdac_unit_sigma=0.05)))
    L = NOMINAL.top_code
    for sc, ss in ((0.3, 0.2), (0.3, 0.0), (0.0, 0.3), (0.05, 0.4)):
        u = np.array([0.2, 10.3, 31.9, 32.0, 62.8])
        codes = np.tile(np.arange(L + 1), u.size)
        trials, keep = path_trials(codes, NOMINAL.adc_bits)
        t = cm.trial_levels(np.zeros(codes.size, int), 63, trials)
        p = np.exp(log_code_prob(np.repeat(u, L + 1), t, keep, sc, ss).logp).reshape(u.size, -1)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=2e-6)


def test_stimulus_counts_are_the_column_counts(stimulus):
    """Every column's XNOR count of a calibration vector is its number of +max rows."""
    from imcsim.macro import Macro
    block = stimulus.blocks_of("pattern")[0]
    ops = stimulus.operands(block.name)
    res = Macro(NOMINAL).mvm(ops["X"][:6], ops["W"], ops["x_format"], ops["w_format"],
                             vref=VrefConfig(mode=VrefMode.FIXED, full_scale=63, dual_low=63,
                                             dual_high=300), return_codes=True)
    counts = block.counts[:6]
    expected = np.minimum(counts, 63)            # ideal ADC at F = L = 63: one code per row
    assert np.all(res.codes[0].reshape(6, stimulus.n_planes, -1) == expected[:, None, None])
    assert stimulus.covered_columns == NOMINAL.columns
    assert stimulus_from_dict(json.loads(json.dumps(stimulus.to_dict()))).block_names == \
        stimulus.block_names


# --- recovery ------------------------------------------------------------------------------
def test_per_column_values_recovered(result, truth):
    err = result.parameter_errors(truth)
    assert np.abs(err["offset_rows"]).max() < 0.1          # 0.1 LSB at F = L
    assert np.abs(err["gain"]).max() < 1e-3
    assert np.abs(err["cdac_lsb"]).max() < 0.05
    # the reported standard errors are honest: offsets within 4 se
    assert np.all(np.abs(err["offset_rows"]) < 4 * result.columns["offset_se"] + 1e-3)


def test_sigmas_recovered(result, truth):
    e = result.estimates
    ni = TRUE_NI
    total = np.hypot(ni.comparator_noise_sigma, ni.sampling_noise_sigma)
    assert e["noise_total"].value == pytest.approx(total, rel=0.05)
    assert e["comparator_noise_sigma"].value == pytest.approx(ni.comparator_noise_sigma, rel=0.10)
    assert e["sampling_noise_sigma"].value == pytest.approx(ni.sampling_noise_sigma, rel=0.15)
    for k in ("comparator_noise_sigma", "sampling_noise_sigma", "cell_cap_sigma",
              "comparator_offset_sigma", "cdac_unit_sigma"):
        assert e[k].contains(getattr(ni, k)), (k, e[k])
    assert e["cell_cap_sigma"].value == pytest.approx(ni.cell_cap_sigma, rel=0.15)
    assert e["parasitic_ratio"].value == pytest.approx(ni.parasitic_ratio, rel=0.02)
    # the static sigmas describe this chip's own tables
    rms = float(np.sqrt(np.mean(truth.offset[:8] ** 2)))
    assert e["comparator_offset_sigma"].value == pytest.approx(rms, rel=0.1)
    nb = NOMINAL.adc_bits
    w = truth.cdac[:8]
    e_true = [w[c, :-1] / 2.0 ** np.arange(nb - 1) / (w[c, -1] / 2.0 ** (nb - 1)) - 1 for c in range(8)]
    s_true, _, _ = _cdac_sigma(e_true, [np.zeros((nb - 1, nb - 1))] * 8, nb)
    assert e["cdac_unit_sigma"].value == pytest.approx(s_true, rel=0.2)


def test_preset_and_tables(result, tmp_path):
    paths = result.save(tmp_path / "chip.json", plots=False)
    preset = load_preset(str(paths["preset"]))
    assert preset.rows == 300 and preset.columns == 8
    assert preset.nonideal.cell_cap_sigma == pytest.approx(result.estimates["cell_cap_sigma"].value)
    model = load_calibrated_model(paths["preset"])
    np.testing.assert_allclose(model.offset, result.model.offset)
    np.testing.assert_allclose(model.cdac, result.model.cdac)
    rep = json.loads(paths["report"].read_text())
    assert set(rep["estimates"]) >= {"comparator_noise_sigma", "noise_total", "cell_cap_sigma"}
    assert len(rep["columns"]) == 8


def test_calibrated_macro_reproduces_the_chip(result, stimulus, measured):
    """The emulator of the calibrated chip passes the statistical check against the chip."""
    macro = CalibratedMacro(result.model)
    assert np.array_equal(macro.comparator_offsets,
                          np.round(result.model.offset * 2 ** 20).astype(np.int64))
    emulated = simulate_measurement(stimulus, macro.config, seed=9)   # same sigmas, other tables
    from imcsim.calibration.measured import MeasuredCodes
    codes = {}
    for b in stimulus.blocks_of("ramp"):
        ops = stimulus.operands(b.name)
        res = macro.mvm(ops["X"], ops["W"], ops["x_format"], ops["w_format"], seed=5,
                        vref=ops["vref"], return_codes=True)
        codes[b.name] = res.codes[0].reshape(b.n_vectors, stimulus.n_planes, -1).astype(np.int64)
    ours = MeasuredCodes(stimulus, codes, source="CalibratedMacro")
    assert statistical_check(result, ours, check_outputs=False).passed
    assert not statistical_check(result, replace(emulated, codes={k: emulated.codes[k] for k in codes}),
                                 check_outputs=False).passed


# --- statistical check ---------------------------------------------------------------------
def test_statistical_check_passes_the_calibrated_chip(result, stimulus):
    fresh = simulate_measurement(stimulus, CHIP, seed=2)
    report = statistical_check(result, fresh)
    assert report.passed, report.format()
    assert report.nmc is not None and all(v["mismatches"] == 0 for v in report.nmc.values())
    assert statistical_check(CHIP, fresh).passed       # the emulator's own chip passes too


def test_statistical_check_fails_ideal_and_other_chip(result, stimulus):
    fresh = simulate_measurement(stimulus, CHIP, seed=3)
    ideal = statistical_check(NOMINAL, fresh)
    assert not ideal.passed
    assert ideal.failed_columns() == list(range(8))
    other = simulate_measurement(stimulus, replace(CHIP, chip_seed=HIDDEN_SEED + 1), seed=3)
    report = statistical_check(result, other, diagnose=True)
    assert not report.passed
    blocks = report.failed_blocks()
    assert "adc" in blocks and any("offset" in m for m in blocks["adc"])
    assert "array" not in blocks                         # same parasitic and cell sigma
    text = report.format()
    assert "FAIL" in text and "offset" in text


def test_statistical_check_flags_the_nmc(result, stimulus, measured):
    bad = {k: v.copy() for k, v in measured.y_int.items()}
    name = next(iter(bad))
    bad[name][0, 0] += 1
    report = statistical_check(result, replace(measured, y_int=bad))
    assert not report.passed
    assert report.failed_blocks()["nmc"][0].startswith(name)


# --- files and CLI ---------------------------------------------------------------------------
def test_cli_calibrate_reads_dumps(measured, stimulus, tmp_path):
    """imcsim calibrate MEASURED -o chip.json: preset, tables, report and plots."""
    stim_dir = tmp_path / "stim"
    stim_dir.mkdir()
    (stim_dir / "calibration.json").write_text(json.dumps(stimulus.to_dict()))
    meas_dir = tmp_path / "measured"
    write_measurement(meas_dir, measured)
    back = load_measurement(meas_dir, stim_dir)
    for k in measured.codes:
        assert np.array_equal(back.codes[k], measured.codes[k])
        assert np.array_equal(back.y_int[k], measured.y_int[k])
    # a CSV dump of one block reads the same (long format)
    block = stimulus.blocks_of("ramp")[0].name
    codes = measured.codes[block]
    B, P, C = codes.shape
    lines = ["cycle,signal,index,value"] + [f"{i},code,{c},{codes[i // P, i % P, c]}"
                                            for i in range(B * P) for c in range(C)]
    (meas_dir / f"{block}.h5").unlink()
    (meas_dir / f"{block}.csv").write_text("\n".join(lines) + "\n")
    assert np.array_equal(load_measurement(meas_dir, stim_dir).codes[block], codes)
    out = tmp_path / "chip.json"
    r = CliRunner().invoke(main, ["calibrate", str(meas_dir), "--stimulus", str(stim_dir),
                                  "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["estimates"]["parasitic_ratio"]["value"] == pytest.approx(0.05, rel=0.02)
    for suffix in (".h5", ".report.json", ".transfer.png", ".dnl-inl.png", ".residuals.png"):
        assert (tmp_path / f"chip{suffix}").is_file()
    assert load_preset(str(out)).nonideal.parasitic_ratio == pytest.approx(0.05, rel=0.02)
    # what `imcsim check --statistical` runs: the saved calibration against the dumps
    report = statistical_check_files(out, meas_dir, stimulus=stim_dir)
    assert report.passed, report.format()
    json.dumps(report.to_dict())
    # the command itself (the stimulus description beside the dumps): passes, exit 0 ...
    (meas_dir / "calibration.json").write_text(json.dumps(stimulus.to_dict()))
    r = CliRunner().invoke(main, ["check", "--statistical", str(out), str(meas_dir),
                                  "--json", str(tmp_path / "stat.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "stat.json").read_text())["passed"] is True
    # ... and the ideal model fails against the same chip, exit 1
    ideal = tmp_path / "ideal.json"
    ideal.write_text(NOMINAL.to_json())
    r = CliRunner().invoke(main, ["check", "--statistical", str(ideal), str(meas_dir)])
    assert r.exit_code == 1, r.output
    # usage errors exit 2
    r = CliRunner().invoke(main, ["calibrate", str(tmp_path / "nothing"), "-o", str(out)])
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["calibrate", str(meas_dir), "--stimulus", str(stim_dir),
                                  "-o", str(tmp_path / "x.json"), "--split", "2"])
    assert r.exit_code == 2 and "--split" in r.output


def test_split_fallback_is_documented(measured):
    """With a fixed split the total is kept and the note says how it was split."""
    res = calibrate(measured, options=FitOptions(split=0.5))
    e = res.estimates
    assert e["noise_total"].value == pytest.approx(np.hypot(0.3, 0.2), rel=0.05)
    assert e["sampling_noise_sigma"].value == pytest.approx(e["comparator_noise_sigma"].value)
    assert any("fixed by the caller" in n for n in res.notes)


# --- Monte-Carlo chips -----------------------------------------------------------------------
def test_scaled_config():
    base = load_preset("paper-nonideal")
    two = scaled_config(base, 2.0, chip_seed=5)
    assert two.chip_seed == 5
    assert two.nonideal.comparator_noise_sigma == pytest.approx(0.2)
    assert two.nonideal.cell_cap_sigma == pytest.approx(0.002)
    only = scaled_config(base, 0.0, "noise")
    assert only.nonideal.sampling_noise_sigma == 0 and only.nonideal.cdac_unit_sigma == 0.002
    assert scaled_config(base, 0.0).nonideal.is_ideal


def test_eval_on_sampled_chips(tmp_path):
    from imcsim.training.engine import TrainConfig, Trainer
    cfg = TrainConfig(model="mlp", epochs=1, max_steps_per_epoch=4, batch_size=32)
    Trainer(cfg, tmp_path / "run", progress=False).run()
    res = evaluate_chips(tmp_path / "run", load_preset("paper-nonideal"), chips=2, noise_scales=(0, 1), max_test=48)
    assert [lv.factor for lv in res.levels] == [0.0, 1.0]
    assert res.level(0.0).accuracy[0] == res.level(0.0).accuracy[1]      # ideal: no chip
    assert res.test_samples == 48 and 0 <= res.level(1.0).mean <= 1
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "run"), "--preset", "paper-nonideal",
                                  "--chips", "2", "--noise-scale", "0,1", "--max-test", "32",
                                  "--json", str(tmp_path / "e.json"),
                                  "--plot", str(tmp_path / "e.png")])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "e.json").read_text())
    level = next(iter(doc.values()))["levels"][1]
    assert len(level["accuracy"]) == 2 and (tmp_path / "e.png").is_file()
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "nope")])
    assert r.exit_code == 2


@pytest.mark.slow
def test_cli_vectors_calibration_writes_the_stimulus(tmp_path):
    """imcsim vectors --calibration: the stimulus folders and calibration.json, small macro."""
    from imcsim.calibration import load_calibration_stimulus
    args = ["vectors", str(tmp_path / "cal"), "--calibration", "--rows", str(NOMINAL.rows),
            "--columns", str(NOMINAL.columns), "--adc-bits", str(NOMINAL.adc_bits),
            "--vref", "fixed", "--full-scale", str(NOMINAL.rows)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    back = load_calibration_stimulus(tmp_path / "cal")
    assert back.block_names and all((tmp_path / "cal" / b / "manifest.json").is_file()
                                    for b in back.block_names)
    r = CliRunner().invoke(main, args + ["--x", str(tmp_path / "x.npy")])
    assert r.exit_code == 2


def test_calibration_vectors_folder(tmp_path):
    """write_calibration_vectors: one vectors folder per block, readable back."""
    from imcsim.calibration import load_calibration_stimulus, write_calibration_vectors
    from imcsim.verify.check import load_expected
    st = write_calibration_vectors(tmp_path / "cal", NOMINAL, ramp_vectors=1, repeat_vectors=2,
                                   repeat_counts=2, pattern_subsets=2, pattern_repeats=1,
                                   pattern_counts=1)
    back = load_calibration_stimulus(tmp_path / "cal")
    assert back.block_names == st.block_names
    for b in st.blocks:
        tab = load_expected(tmp_path / "cal" / b.name)
        assert tab.n == b.n_vectors * st.n_planes
        assert np.array_equal(tab.values["column_count"][:, 0],
                              np.repeat(b.counts, st.n_planes))


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_calibrated_macro_on_cuda_equals_cpu(result):
    """The calibrated chip's tables reach the CUDA path (Numba's simulator without a GPU)."""
    from imcsim import BinaryFormat
    rng = np.random.default_rng(0)
    X = rng.integers(-16, 17, (3, 300)).astype(np.float64)
    W = rng.integers(-4, 5, (300, 2))
    a = CalibratedMacro(result.model).mvm(X, W, BinaryFormat(6), BinaryFormat(4), seed=3,
                                          return_codes=True)
    b = CalibratedMacro(result.model, device="cuda").mvm(X, W, BinaryFormat(6), BinaryFormat(4),
                                                         seed=3, return_codes=True)
    host = [v.get() if hasattr(v, "get") and not isinstance(v, np.ndarray) else np.asarray(v)
            for v in (b.y_int, b.codes)]
    assert np.array_equal(a.y_int, host[0]) and np.array_equal(a.codes, host[1])


def test_hardware_aware_trainer_runs_an_epoch_and_evaluates(tmp_path):
    """Training hops chips step by step; the trainer's own evaluation (non-integer steps,
    its own noise keys) runs on the pool's first chip."""
    from imcsim import load_preset
    from imcsim.calibration.montecarlo import ChipHoppingBackend, hardware_aware_trainer
    from imcsim.training.backends import MvmKind
    from imcsim.training.engine import TrainConfig
    cfg = TrainConfig(model="mlp", epochs=1, batch_size=32, max_steps_per_epoch=2,
                      backends=(("forward", "imc"), ("backward", "fp32"), ("update", "fp32")),
                      preset="paper-nonideal")
    trainer = hardware_aware_trainer(cfg, tmp_path, load_preset("paper-nonideal"), pool=3,
                                     progress=False)
    hopping = next(la.policy[MvmKind.FORWARD] for la in trainer.model.compute_layers()
                   if isinstance(la.policy[MvmKind.FORWARD], ChipHoppingBackend))
    used = []

    def recording(index, mvm):
        def call(*args, **kwargs):
            used.append(index)
            return mvm(*args, **kwargs)
        return call
    for i, chip in enumerate(hopping.pool):
        chip.macro.mvm = recording(i, chip.macro.mvm)
    history = trainer.run()
    assert len(history) == 1 and 0.0 <= history[0]["test_acc"] <= 1.0
    assert {0, 1} <= set(used)                     # two training steps, two chips
