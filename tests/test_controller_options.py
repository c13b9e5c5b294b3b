"""Controller and ADC options: skipping all-masked array cycles (docs/hardware-model.md 4.7)
and the per-column dual Vref choice (4.3)."""
import dataclasses

import numpy as np
import pytest

from imcsim import (
    BinaryFormat,
    Macro,
    MacroConfig,
    NmcConfig,
    Radix4Format,
    VrefConfig,
    VrefMode,
)
from imcsim.verify.golden import GoldenModel
from imcsim.verify.vectors import write_vectors

import reference_model as ref  # noqa: E402

CFG = MacroConfig(rows=300, columns=32, vref=VrefConfig(full_scale=300, dual_high=300))
XF, WF = Radix4Format(6), BinaryFormat(3)


def operands():
    """Radix-4 inputs using only exponents 0 and -1 (planes 2..4 of Radix4Format(6) unused),
    on 500 rows (two row tiles)."""
    rng = np.random.default_rng(3)
    X = rng.choice([0.0, 1.0, -1.0, 0.25, -0.25], size=(3, 500))
    W = rng.integers(-2, 3, size=(500, 7))
    return X, W


def twin(X, W, cfg):
    return ref.reference_mvm(X.tolist(), W.tolist(), "radix4", 6, 3, rows=cfg.rows,
                             columns=cfg.columns, adc_bits=cfg.adc_bits, vref_mode="variable",
                             full_scale=300, dual_high=300,
                             skip_masked_cycles=cfg.skip_masked_cycles,
                             half_lsb_reconstruction=cfg.nmc.half_lsb_reconstruction)


def test_skipped_cycles_cost_no_cycle_and_no_conversion():
    X, W = operands()
    on = dataclasses.replace(CFG, skip_masked_cycles=True)
    off_res, on_res = Macro(CFG).mvm(X, W, XF, WF), Macro(on).mvm(X, W, XF, WF)
    empty = int((on_res.active_rows == 0).sum())          # (T, B, P) cycles with no active row
    assert empty >= 2 * 3 * 3                             # planes 2..4 of every vector and tile
    ev_off, ev_on = off_res.events.total(), on_res.events.total()
    cols = 7 * 3                                          # 7 outputs x 3 weight planes, 1 tile
    assert ev_off["array_cycles"] - ev_on["array_cycles"] == empty
    assert ev_off["adc_conversions"] - ev_on["adc_conversions"] == empty * cols
    assert ev_off["sar_steps"] - ev_on["sar_steps"] == empty * cols * CFG.adc_bits
    assert ev_on["bitcell_mults"] == ev_off["bitcell_mults"]
    # ideal analog without half-LSB reconstruction: an all-masked cycle adds 0 anyway
    assert np.array_equal(on_res.y_int, off_res.y_int)
    assert ev_on["array_cycles"] == twin(X, W, on)["array_cycles"]


def test_half_lsb_terms_of_masked_cycles_disappear_and_all_paths_agree():
    X, W = operands()
    half = dataclasses.replace(CFG, nmc=NmcConfig(half_lsb_reconstruction=True))
    on = dataclasses.replace(half, skip_masked_cycles=True)
    off_y, on_y = Macro(half).mvm(X, W, XF, WF).y_int, Macro(on).mvm(X, W, XF, WF).y_int
    assert not np.array_equal(on_y, off_y)     # code 0 of a masked cycle still adds scale/2
    assert np.array_equal(on_y, np.array(twin(X, W, on)["y_int"]))
    assert np.array_equal(Macro(on).mvm_traced(X, W, XF, WF).y_int, on_y)
    assert np.array_equal(Macro(on, device="cuda").mvm(X, W, XF, WF).y_int, on_y)


def test_golden_records_flag_skipped_cycles():
    X, W = operands()
    on = dataclasses.replace(CFG, skip_masked_cycles=True)
    golden = GoldenModel(on, W, WF, XF)
    golden.load_vectors(X)
    records = golden.run()
    skipped = [r for r in records if r["skipped"]]
    assert skipped and all(r["active_rows"] == 0 for r in skipped)
    for r in skipped:
        assert not r["code"].any() and not r["sar_decision"].any()
    assert all(not r["skipped"] for r in records if r["active_rows"] > 0)
    assert np.array_equal(golden.expected_outputs()["y_int"], Macro(on).mvm(X, W, XF, WF).y_int)


def test_vector_files_refuse_skipping(tmp_path):
    X, W = operands()
    on = dataclasses.replace(CFG, skip_masked_cycles=True)
    with pytest.raises(ValueError, match="skip_masked_cycles"):
        write_vectors(tmp_path / "v", on, W, X, XF, WF)
    assert not (tmp_path / "v").exists()


def test_config_rejects_non_bool():
    with pytest.raises(TypeError, match="skip_masked_cycles"):
        MacroConfig(skip_masked_cycles=1)


# --- the per-column dual Vref choice (docs/hardware-model.md 4.3) ------------------------
def test_per_column_dual_vref_parses_and_validates():
    v = VrefConfig.parse("dual:255:300:column")
    assert v.per_column and (v.dual_low, v.dual_high) == (255, 300)
    with pytest.raises(ValueError, match="dual mode only"):
        VrefConfig(per_column=True)


def test_per_column_choice_converts_only_full_columns_at_the_high_level():
    """Ideal analog: a column whose count exceeds the low level converts at the high level,
    the others stay lossless at the low one; each conversion costs one more decision."""
    cfg = MacroConfig(rows=600, columns=32,
                      vref=VrefConfig(mode=VrefMode.DUAL, full_scale=600, dual_low=255, dual_high=600,
                                      per_column=True))
    X = np.ones((1, 600), dtype=np.int64)                         # 600 active rows
    W = np.ones((600, 2), dtype=np.int64)
    W[:500, 1] = -1                       # column group 1: 100 rows agree on every plane
    res = Macro(cfg).mvm(X, W, BinaryFormat(3), BinaryFormat(3), return_codes=True)
    counts_full = 600                      # output 0: every row agrees -> 600 > 255: high
    assert res.codes[0, 0, 0, 0, 0] == (counts_full * 255) // 600
    ev = res.events.total()
    assert ev["sar_steps"] == ev["adc_conversions"] * (cfg.adc_bits + 1)
    twin = ref.reference_mvm(X.tolist(), W.tolist(), "binary", 3, 3, rows=600, columns=32,
                             adc_bits=8, vref_mode="dual", full_scale=600, dual_low=255,
                             dual_high=600, dual_per_column=True)
    assert ev["high_vref_conversions"] == twin["high_vref_conversions"] > 0
    assert np.array_equal(res.y_int, np.array(twin["y_int"]))
    assert np.array_equal(res.codes, np.array(twin["codes"]))
