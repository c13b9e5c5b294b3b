"""Macro API: event counts by hand, lossless exactness, validation, stored weights, conv."""
import numpy as np
import pytest

from imcsim import BinaryFormat, Macro, MacroConfig, NmcConfig, Radix4Format, VrefConfig, VrefMode
from imcsim.macro import conv2d

SMALL = MacroConfig(rows=16, columns=10, adc_bits=4,
                    vref=VrefConfig(mode=VrefMode.FIXED, full_scale=16, dual_low=15, dual_high=16))


def test_event_counts_by_hand_dense():
    X = np.ones((2, 20), dtype=np.int64)
    W = np.ones((20, 3), dtype=np.int64)
    ev = Macro(SMALL).mvm(X, W, BinaryFormat(4), BinaryFormat(3)).events
    # 2 row tiles (16 + 4 rows), 1 column tile of 3 outputs x 3 planes = 9 columns
    assert ev.per_tile["array_cycles"].tolist() == [[8], [8]]
    assert ev.per_tile["bitcell_mults"].tolist() == [[2 * 4 * 16 * 9], [2 * 4 * 4 * 9]]
    assert ev.per_tile["adc_conversions"].tolist() == [[72], [72]]
    assert ev.total()["sar_steps"] == 144 * 4
    assert ev.per_tile["nmc_outputs"].tolist() == [[6], [6]]
    assert ev.per_tile["reshape_words"].tolist() == [[2 * 2], [2 * 1]]   # 64 and 16 bits a vector
    assert ev.per_tile["cima_load_words"].tolist() == [[9], [9]]
    assert ev.total()["high_vref_conversions"] == 0


def test_event_counts_by_hand_radix4_and_masked_zeros():
    # radix-4: a row is active only in the plane of its exponent; zeros never
    X = np.array([[1.0, -0.25, 0.0, 4.0, 1.0, 0.0]])        # K=4: den 4, planes 4**0..4**2
    W = np.ones((6, 2), dtype=np.int64)
    m = Macro(SMALL)
    res = m.mvm(X, W, Radix4Format(4), BinaryFormat(3))
    # units: 4, -1, 0, 16, 4, 0 -> plane 0: one row, plane 1: two rows, plane 2: one row
    assert res.active_rows.tolist() == [[[1, 2, 1]]]
    assert res.events.total()["bitcell_mults"] == 4 * 6
    assert res.events.total()["array_cycles"] == 3
    cfg = MacroConfig(rows=16, columns=10, adc_bits=4, mask_zero_inputs=True,
                      vref=SMALL.vref)
    Xb = np.array([[0, 1, 0, -2]])
    res = Macro(cfg).mvm(Xb, np.ones((4, 1), dtype=np.int64), BinaryFormat(4), BinaryFormat(3))
    assert res.active_rows.tolist() == [[[2, 2, 2, 2]]]
    assert res.events.total()["bitcell_mults"] == 4 * 2 * 3


def test_dual_mode_counts_high_vref_conversions():
    cfg = MacroConfig(vref=VrefConfig(mode=VrefMode.DUAL, dual_low=255, dual_high=2304))
    rng = np.random.default_rng(0)
    X = rng.integers(-16, 17, (3, 400))
    X[0, 200:] = 0
    res = Macro(cfg).mvm(X, rng.integers(-8, 9, (400, 4)), BinaryFormat(6), BinaryFormat(5))
    assert res.full_scale.tolist() == [[[2304] * 6] * 3]       # 400 active rows > 255
    assert res.events.total()["high_vref_conversions"] == 3 * 6 * 20
    cfg0 = MacroConfig(mask_zero_inputs=True, vref=cfg.vref)
    res0 = Macro(cfg0).mvm(X, rng.integers(-8, 9, (400, 4)), BinaryFormat(6), BinaryFormat(5))
    assert (X[0] != 0).sum() <= 255 < (X[1] != 0).sum()
    assert res0.full_scale[0, 0].tolist() == [255] * 6
    assert res0.full_scale[0, 1].tolist() == [2304] * 6
    assert res0.events.total()["high_vref_conversions"] == 2 * 6 * 20


@pytest.mark.parametrize("xf,wf,make_x", [
    (BinaryFormat(6), BinaryFormat(5), "binary"),     # forward: activations x weights
    (Radix4Format(8), BinaryFormat(5), "radix4"),     # backward: gradients x weights^T
    (Radix4Format(8), BinaryFormat(6), "radix4"),     # update: gradients x stored activations
])
def test_lossless_training_mvms_are_exact_integer_products(xf, wf, make_x):
    rng = np.random.default_rng(5)
    M, N, B = 5000, 60, 6                      # 3 row tiles, 2 column tiles
    W = rng.integers(-wf.max_value, wf.max_value + 1, (M, N))
    if make_x == "binary":
        X = np.where(rng.random((B, M)) < 0.04, rng.integers(-16, 17, (B, M)), 0)
        cfg = MacroConfig(mask_zero_inputs=True)          # at most ~255 active rows a cycle
    else:
        sign = np.where(rng.random((B, M)) < 0.5, -1.0, 1.0)
        X = np.where(rng.random((B, M)) < 0.3, sign * 4.0 ** rng.integers(-3, 4, (B, M)), 0.0)
        cfg = MacroConfig()
    res = Macro(cfg).mvm(X, W, xf, wf)
    assert res.active_rows.max() <= 255
    assert np.array_equal(res.y, X @ W)


def test_lossy_full_scale_really_quantizes():
    rng = np.random.default_rng(2)
    X, W = rng.integers(-16, 17, (4, 2304)), rng.integers(-8, 9, (2304, 8))
    cfg = MacroConfig(vref=VrefConfig(mode=VrefMode.FIXED, full_scale=2304))
    res = Macro(cfg).mvm(X, W, BinaryFormat(6), BinaryFormat(5))
    assert not np.array_equal(res.y, X @ W)
    assert np.corrcoef(res.y.ravel(), (X @ W).ravel())[0, 1] > 0.9


def test_stored_weights_give_the_same_result_as_arrays():
    rng = np.random.default_rng(3)
    X, W = rng.integers(-16, 17, (5, 3000)), rng.integers(-8, 9, (3000, 70))
    m = Macro()
    stored = m.store_weights(W, BinaryFormat(5))
    a = m.mvm(X, W, BinaryFormat(6), BinaryFormat(5), return_codes=True)
    b = m.mvm(X, stored, BinaryFormat(6), return_codes=True)
    assert np.array_equal(a.y_int, b.y_int) and np.array_equal(a.codes, b.codes)
    with pytest.raises(ValueError, match="w_format"):
        m.mvm(X, stored, BinaryFormat(6), BinaryFormat(4))


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_through_reshape_buffer_is_exact_when_lossless(stride):
    rng = np.random.default_rng(4)
    fmap = rng.integers(0, 17, (2, 7, 6, 5))
    w = rng.integers(-8, 9, (3, 3, 5, 4))
    cfg = MacroConfig(vref=VrefConfig(mode=VrefMode.FIXED, full_scale=255))
    y, res = conv2d(Macro(cfg), fmap, w, BinaryFormat(6), BinaryFormat(5), stride=stride)
    pad = np.pad(fmap, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ho, wo = y.shape[1:3]
    ref = np.zeros_like(y)
    for i in range(ho):
        for j in range(wo):
            patch = pad[:, i * stride:i * stride + 3, j * stride:j * stride + 3, :]
            ref[:, i, j, :] = np.einsum("bhwc,hwcf->bf", patch, w)
    assert np.array_equal(y, ref)
    # reuse: each pixel's 5 x 6-bit channels (1 word) once per image
    assert res.events.total()["reshape_words"] == 2 * 7 * 6 * 1
    assert res.meta["reshape_words_without_reuse"] == 2 * ho * wo * 9


@pytest.mark.parametrize("call,match", [
    (lambda m: m.mvm(np.zeros((2, 3)), np.zeros((4, 2), int), BinaryFormat(6), BinaryFormat(5)),
     "inner dimensions"),
    (lambda m: m.mvm(np.zeros((2, 3)), np.zeros((3, 2), int), BinaryFormat(6), Radix4Format(8)),
     "w_format"),
    (lambda m: m.mvm(np.full((2, 3), 17), np.zeros((3, 2), int), BinaryFormat(6), BinaryFormat(5)),
     r"\[-16, 16\]"),
    (lambda m: m.mvm(np.full((2, 3), 0.5), np.zeros((3, 2), int), BinaryFormat(6), BinaryFormat(5)),
     "integers"),
    (lambda m: m.mvm(np.full((2, 3), 0.5), np.zeros((3, 2), int), Radix4Format(8), BinaryFormat(5)),
     "4\\*\\*e"),
    (lambda m: m.mvm(np.zeros(3), np.zeros((3, 2), int), BinaryFormat(6), BinaryFormat(5)), "2-D"),
    (lambda m: m.mvm(np.zeros((2, 3)), np.zeros((3, 2), int), BinaryFormat(6), BinaryFormat(5),
                     seed=-1), "seed"),
    (lambda m: m.mvm(np.zeros((2, 3)), np.zeros((3, 2), int), BinaryFormat(6), BinaryFormat(5),
                     vref=VrefConfig(mode=VrefMode.FIXED, full_scale=3000)), "full scale"),
    (lambda m: m.mvm(np.zeros((2, 3), dtype=bool), np.zeros((3, 2), int), BinaryFormat(6),
                     BinaryFormat(5)), "dtype"),
    (lambda m: m.mvm(np.zeros((2, 3)), np.zeros((3, 2), int), BinaryFormat(6), BinaryFormat(5),
                     out_scale=np.ones(3, int)), "out_scale"),
])
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(Macro())


def test_register_widths_that_overflow_int64_are_refused():
    cfg = MacroConfig(nmc=NmcConfig(scale_frac_bits=24, acc_bits=62))
    with pytest.raises(ValueError, match="acc_bits"):
        Macro(cfg).mvm(np.zeros((1, 3)), np.zeros((3, 1), int), Radix4Format(12), BinaryFormat(16))


def test_output_stage_over_its_accumulators_equals_a_new_array():
    """The fast path writes the outputs over the accumulators (``finish(overwrite_acc=True)``);
    each output reads only its own accumulator, so that equals the stage into a new array."""
    from imcsim.nmc import output_stage
    rng = np.random.default_rng(3)
    nmc = NmcConfig(out_bits=12, out_frac_bits=3)
    acc = rng.integers(-(2**40), 2**40, (5, 7))
    scale, offset = rng.integers(1, 2**10, 7), rng.integers(-50, 50, 7)
    expected = output_stage(acc, nmc, 20, scale, offset)
    in_place = acc.copy()
    assert output_stage(in_place, nmc, 20, scale, offset, out=in_place) is in_place
    assert np.array_equal(in_place, expected) and not np.array_equal(acc, expected)
    with pytest.raises(ValueError, match="out: expected C-contiguous int64"):
        output_stage(acc, nmc, 20, out=np.zeros((7, 5), dtype=np.int64))
