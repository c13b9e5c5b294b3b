"""Configs: validation, cross-field rules, presets that round-trip."""
import dataclasses
import json

import pytest

from imcsim import (
    MacroConfig,
    NmcConfig,
    NonIdealityConfig,
    Overflow,
    Rounding,
    VrefConfig,
    VrefMode,
    load_preset,
    save_config,
)
from imcsim.config import PRESET_DIR, preset_names


def test_paper_preset_is_the_default_config_with_the_half_up_adc_law():
    # the field's default stays floor (the law as printed, and what a stored config without
    # the key meant); the preset takes half_up on the Table III evidence (hardware-model 4.5)
    assert load_preset("paper") == dataclasses.replace(MacroConfig(),
                                                       adc_rounding=Rounding.HALF_UP)
    assert MacroConfig().adc_rounding is Rounding.FLOOR
    c = MacroConfig()
    assert (c.rows, c.columns, c.adc_bits, c.vdd) == (2304, 256, 8, 0.8)
    assert c.full_scale_volts(255) == pytest.approx(0.0885, abs=1e-4)    # V_prec


@pytest.mark.parametrize("name", preset_names())
def test_presets_round_trip(name, tmp_path):
    cfg = load_preset(name)
    assert MacroConfig.from_json(cfg.to_json()) == cfg
    save_config(cfg, tmp_path / "c.json")
    assert load_preset(str(tmp_path / "c.json")) == cfg
    assert json.loads(PRESET_DIR.joinpath(f"{name}.json").read_text()) == cfg.to_dict()


@pytest.mark.parametrize("make,match", [
    (lambda: MacroConfig(rows=100), "at least the top ADC code"),
    (lambda: MacroConfig(adc_bits=1), "adc_bits"),
    (lambda: MacroConfig(vref=VrefConfig(mode=VrefMode.FIXED, full_scale=2305)), "full scale"),
    (lambda: MacroConfig(vref=VrefConfig(mode=VrefMode.DUAL, dual_low=200)), "full scale"),
    (lambda: MacroConfig(adc_bits=10, vref=VrefConfig(mode=VrefMode.DUAL)), "vref.dual_low"),
    (lambda: VrefConfig(dual_low=600, dual_high=500), "dual_low"),
    (lambda: VrefConfig(mode="fixed"), "VrefMode"),
    (lambda: NmcConfig(acc_bits=63), "acc_bits"),
    (lambda: NmcConfig(overflow="wrap"), "Overflow"),
    (lambda: NonIdealityConfig(cell_cap_sigma=-0.1), "cell_cap_sigma"),
    (lambda: MacroConfig(rows=2304.0), "rows"),
    (lambda: MacroConfig.from_dict({"rows": 2304, "bogus": 1}), "unknown keys"),
    (lambda: load_preset("nope"), "no preset"),
])
def test_invalid_configs_raise_naming_the_field(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_only_the_levels_a_vref_mode_programs_are_checked_against_the_adc():
    # the variable mode programs no level: the defaults' dual_low (255 rows) must not refuse
    # it on a wider ADC, nor an unused fixed level beyond the rows
    for bits in (9, 10, 11):
        assert MacroConfig(adc_bits=bits).vref.mode is VrefMode.VARIABLE
    MacroConfig(vref=VrefConfig(mode=VrefMode.DUAL, full_scale=9999))
    MacroConfig(vref=VrefConfig(mode=VrefMode.FIXED, dual_low=1, dual_high=1))
    assert VrefConfig().levels_in_use() == ()
    assert VrefConfig(mode=VrefMode.FIXED).levels_in_use() == ("full_scale",)
    assert VrefConfig(mode=VrefMode.DUAL).levels_in_use() == ("dual_low", "dual_high")


def test_configs_are_frozen_and_enums_serialise_by_value():
    cfg = MacroConfig(nmc=NmcConfig(overflow=Overflow.WRAP, out_rounding=Rounding.FLOOR),
                      vref=VrefConfig(mode=VrefMode.DUAL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rows = 5
    d = cfg.to_dict()
    assert d["nmc"]["overflow"] == "wrap" and d["vref"]["mode"] == "dual"
    assert MacroConfig.from_dict(d) == cfg


def test_nonideal_fixed_point_conversion():
    ni = NonIdealityConfig(cell_cap_sigma=0.01, comparator_noise_sigma=0.5)
    fx = ni.fixed_point()
    assert fx["sigma_cell_fx"] == round(0.01 * 65536) and fx["sigma_cmp_fx"] == 32768
    assert not ni.is_ideal and NonIdealityConfig().is_ideal


def test_one_vref_grammar_for_every_command():
    """mvm/config take one SPEC of the grammar energy and train take per kind: the same
    VrefConfig for the same text, levels not given kept from the preset, flags on top."""
    from click.testing import CliRunner

    from imcsim.cli import main
    from imcsim.config import parse_vref_per_kind, vref_texts_per_kind
    preset = load_preset("paper")
    for spec in ("fixed", "fixed:300", "variable", "dual", "dual:255:600",
                 "dual:255:600:column", "dual:column"):
        r = CliRunner().invoke(main, ["config", "--vref", spec])
        assert r.exit_code == 0, r.output
        got = MacroConfig.from_json(r.output).vref
        assert got == parse_vref_per_kind(spec, preset.vref)["forward"], spec
    r = CliRunner().invoke(main, ["config", "--vref", "fixed:300", "--full-scale", "400"])
    assert MacroConfig.from_json(r.output).vref.full_scale == 400
    r = CliRunner().invoke(main, ["config", "--vref", "dual:9:1"])
    assert r.exit_code == 2 and "dual_low" in r.output
    assert vref_texts_per_kind("dual, update=fixed:matched") == (
        ("forward", "dual"), ("backward", "dual"), ("update", "fixed:matched"))
    assert vref_texts_per_kind({"backward": "fixed:64"}) == (
        ("forward", "variable"), ("backward", "fixed:64"), ("update", "variable"))
    with pytest.raises(ValueError, match="unknown MVM kind 'sideways'"):
        vref_texts_per_kind("sideways=dual")
