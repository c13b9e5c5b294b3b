"""Multi-level row inputs (docs/hardware-model.md 2.3, 4.8): formats, exact products, and the
fast, cycle-level and CUDA paths against the reference twin, bit for bit."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imcsim import BinaryFormat, Macro, MacroConfig, Radix4Format, VrefConfig, VrefMode, parse_format
from imcsim.formats import mapped_format, plane_lookup_tables
from imcsim.verify.golden import GoldenModel

import reference_model as ref  # noqa: E402
from test_equivalence import SIGMAS, assert_same, fit_registers, make_config, run_twin, twin_fx
from test_trace import reference_row_signals


# ---------------------------------------------------------------- formats (Sec. 2.3)
@pytest.mark.parametrize("spec, cycles, weights, top, level_bits", [
    ("radix4:8/2", 4, [1, 16, 256, 4096], 4, 3),
    ("radix4:8/3", 3, [1, 64, 4096], 16, 5),
    ("radix4:4/3", 1, [1], 16, 5),
    ("binary:8/3", 3, [1, 8, 64], 7, 3),
    ("binary:6/3", 2, [1, 8], 7, 3),
    ("binary:3/4", 1, [1], 3, 2),
    ("binary:8/1", 7, [1, 2, 4, 8, 16, 32, 64], 1, 1),
])
def test_multilevel_format_geometry(spec, cycles, weights, top, level_bits):
    fmt = parse_format(spec)
    assert fmt.spec() == spec and parse_format(fmt.spec()) == fmt
    assert fmt.n_planes == cycles
    assert fmt.plane_weights.tolist() == weights
    assert (fmt.top_level, fmt.level_bits) == (top, level_bits)


@pytest.mark.parametrize("K", [3, 5, 8, 16])
@pytest.mark.parametrize("N", [1, 2, 3, 4])
def test_signed_digits_round_trip_every_value(K, N):
    fmt = BinaryFormat(K, N)
    x = np.arange(-fmt.max_value, fmt.max_value + 1)
    sign, level = fmt.encode_levels(x)
    assert level.max() <= fmt.top_level and level.min() >= 0
    assert np.array_equal(fmt.decode_levels(sign, level), x)
    # the doc's rule, written out: cycle p drives (|x| >> N p) & (2**N - 1)
    for p in range(fmt.n_planes):
        assert np.array_equal(level[:, p], (np.abs(x) >> (N * p)) & ((1 << N) - 1))
    assert np.array_equal(sign[:, 0], (x >= 0).astype(np.uint8))


@pytest.mark.parametrize("K, E", [(4, 1), (8, 1), (8, 2), (8, 3), (12, 2), (6, 5)])
def test_radix4_levels_round_trip_every_value(K, E):
    fmt = Radix4Format(K, E)
    e = np.arange(-fmt.exponent_bias, fmt.exponent_bias + 1)
    x = np.concatenate([[0.0], 4.0 ** e, -(4.0 ** e)])
    sign, level = fmt.encode_levels(x)
    assert np.array_equal(fmt.decode_levels(sign, level), x)
    # exactly one cycle drives a non-zero element, at level 4**(j mod E)
    nz = x != 0
    assert ((level > 0).sum(axis=1) == nz).all()
    j = np.round(np.log(np.abs(x[nz]) * fmt.denominator) / np.log(4)).astype(int)
    assert np.array_equal(level[nz].max(axis=1), 4 ** (j % E))
    assert np.array_equal(np.argmax(level[nz], axis=1), j // E)


def test_sub_plane_tables_follow_the_levels():
    fmt = BinaryFormat(6, 3)
    offset, pattern, gate = plane_lookup_tables(fmt)
    for v in range(-16, 17):
        sign, level = fmt.encode_levels(np.array([v]))
        for p in range(fmt.n_planes):
            for k in range(fmt.level_bits):
                i = p * fmt.level_bits + k
                assert (gate[v + offset] >> i) & 1 == (level[0, p] >> k) & 1
                assert (pattern[v + offset] >> i) & 1 == sign[0, p]


def test_boundary_errors():
    with pytest.raises(ValueError, match="input_bits"):
        Macro(MacroConfig(rows=64, columns=8, adc_bits=5, vref=VrefConfig(
            full_scale=64, dual_low=31, dual_high=64))).mvm(
            np.ones((1, 4)), np.ones((4, 1), dtype=int), BinaryFormat(6, 3), BinaryFormat(4))
    with pytest.raises(ValueError, match="input_bits"):
        MacroConfig(input_bits=4)                      # 2304 rows x 15 levels > 16384
    with pytest.raises(ValueError, match="multi-level"):
        Macro(MacroConfig(input_bits=3)).mvm(np.ones((1, 4)), np.ones((4, 1), dtype=int),
                                            BinaryFormat(6), BinaryFormat(4, 2))
    with pytest.raises(ValueError, match="per_cycle"):
        Radix4Format(8, 8)
    with pytest.raises(ValueError, match="digit_bits"):
        BinaryFormat(8, 5)
    with pytest.raises(ValueError, match="full scale"):
        VrefConfig(mode=VrefMode.FIXED, full_scale=300).check_against(64, 31, 4)
    assert mapped_format(Radix4Format(8), "multi-level") == Radix4Format(8, 2)
    assert mapped_format(BinaryFormat(6), "multi-level") == BinaryFormat(6, 3)
    assert mapped_format(BinaryFormat(6), "one-hot") == BinaryFormat(6)


# ---------------------------------------------------------------- lossless: exact products
@pytest.mark.parametrize("spec", ["radix4:8/2", "radix4:6/3", "binary:6/3", "binary:8/2",
                                  "binary:6/1", "binary:5/4"])
def test_lossless_multilevel_is_the_exact_product(spec):
    """F = max(A, L) with A <= L: one code per level unit, so y == X @ W exactly (4.6)."""
    fmt = parse_format(spec)
    cfg = MacroConfig(rows=255, columns=16, adc_bits=8, input_bits=fmt.top_level.bit_length(),
                      vref=VrefConfig(mode=VrefMode.VARIABLE, full_scale=255, dual_high=255))
    rng = np.random.default_rng(3)
    inner = 255 // fmt.top_level                      # A <= inner * D <= L
    W = rng.integers(-8, 9, (inner, 3))
    if fmt.kind == "radix4":
        e = rng.integers(-fmt.exponent_bias, fmt.exponent_bias + 1, (4, inner))
        X = np.where(rng.random((4, inner)) < 0.7,
                     rng.choice([-1.0, 1.0], (4, inner)) * 4.0 ** e, 0.0)
    else:
        X = rng.integers(-fmt.max_value, fmt.max_value + 1, (4, inner))
    macro = Macro(cfg)
    for res in (macro.mvm(X, W, fmt, BinaryFormat(5)), macro.mvm_traced(X, W, fmt, BinaryFormat(5))):
        assert np.array_equal(res.y, X @ W)
        assert (res.level_sum <= cfg.top_code).all()


def test_multilevel_cycles_and_dac_events():
    """radix4:8/2 needs 4 cycles, not 7; the DAC events count rows and their levels."""
    cfg = MacroConfig(rows=64, columns=8, adc_bits=6, input_bits=3,
                      vref=VrefConfig(full_scale=64, dual_low=63, dual_high=64))
    X = np.array([[1 / 64, 4 / 64, 1.0, -4.0, 0.0, 64.0]])
    W = np.ones((6, 1), dtype=int)
    one_hot = Macro(cfg).mvm(X, W, Radix4Format(8), BinaryFormat(4)).events.total()
    multi = Macro(cfg).mvm(X, W, Radix4Format(8, 2), BinaryFormat(4)).events.total()
    assert one_hot["array_cycles"] == 7 and multi["array_cycles"] == 4
    assert one_hot["dac_row_drives"] == 0 and one_hot["dac_level_sum"] == 0
    # levels: 1/64 -> 1 (exponent 0), 4/64 -> 4 (exponent 1), 1 -> 4 (exponent 3),
    # -4 -> 1 (exponent 4), 64 -> 1 (exponent 6)
    assert multi["dac_row_drives"] == 5 and multi["dac_level_sum"] == 1 + 4 + 4 + 1 + 1
    assert multi["bitcell_mults"] == one_hot["bitcell_mults"]


# ---------------------------------------------------------------- against the twin
def ml_format(p):
    if p["x_kind"] == "radix4":
        return Radix4Format(p["Kx"], p["x_per_cycle"])
    return BinaryFormat(p["Kx"], p["x_digit_bits"])


def run_ml_twin(X, W, p):
    return run_twin(X, W, p, extra={"x_per_cycle": p.get("x_per_cycle", 1),
                                    "x_digit_bits": p.get("x_digit_bits", 0),
                                    "input_bits": p["input_bits"],
                                    "sigma_dac_fx": twin_fx(p["nonideal"])["sigma_dac_fx"]})


def check_ml_case(X, W, p, devices=("cpu",)):
    cfg = make_config(p)
    assert cfg.input_bits == p["input_bits"]
    twin = run_ml_twin(X, W, p)
    fmt = ml_format(p)
    for device in devices:
        macro = Macro(cfg, device=device)
        res = macro.mvm(X, W, fmt, BinaryFormat(p["Kw"]), seed=p["seed"], return_codes=True)
        assert_same(res, twin, f"mvm ({device})")
        assert np.array_equal(np.asarray(res.level_sum), np.array(twin["level_sum"]))
    res = Macro(cfg).mvm_traced(X, W, fmt, BinaryFormat(p["Kw"]), seed=p["seed"])
    assert_same(res, twin, "mvm_traced")
    assert np.array_equal(res.level_sum, np.array(twin["level_sum"]))
    return twin


@st.composite
def ml_cases(draw, small=False):
    adc_bits = draw(st.integers(3, 6 if small else 8))
    L = 2**adc_bits - 1
    rows = draw(st.integers(L, L + 20))
    x_kind = draw(st.sampled_from(["binary", "radix4"]))
    if x_kind == "radix4":
        Kx = draw(st.sampled_from([4, 6, 8]))
        per_cycle, digit_bits = draw(st.integers(1, min(3, Kx - 1))), 0
        top = 4 ** (min(per_cycle, Kx - 1) - 1)
    else:
        Kx = draw(st.integers(3, 8))
        per_cycle, digit_bits = 1, draw(st.integers(1, 4))
        top = 2 ** min(digit_bits, Kx - 1) - 1
    input_bits = draw(st.integers(top.bit_length(), 5))
    if rows * (2**input_bits - 1) > 16384:
        input_bits = top.bit_length()
    Kw = draw(st.sampled_from([3, 4, 5]))
    G = draw(st.integers(1, 2))
    columns = Kw * G + draw(st.integers(0, Kw - 1))
    T = draw(st.integers(1, 2))
    M = (T - 1) * rows + draw(st.integers(1, rows if not small else min(rows, 24)))
    N = draw(st.integers(1, 2 * G))
    B = draw(st.integers(1, 3))
    fs = sorted(draw(st.lists(st.integers(L, rows * top), min_size=3, max_size=3)))
    nonideal = {}
    if draw(st.integers(0, 9)) < 6:
        for name, choices in SIGMAS.items():
            nonideal[name] = draw(st.sampled_from(choices))
        nonideal["dac_unit_sigma"] = draw(st.sampled_from([0.0, 0.01, 0.05]))
    p = dict(
        rows=rows, columns=columns, adc_bits=adc_bits, Kw=Kw, Kx=Kx, x_kind=x_kind,
        x_per_cycle=per_cycle, x_digit_bits=digit_bits, input_bits=input_bits,
        mask_zero_inputs=draw(st.booleans()), skip_masked_cycles=draw(st.booleans()),
        dual_per_column=draw(st.booleans()),
        vref_mode=draw(st.sampled_from(["fixed", "variable", "dual"])),
        full_scale=draw(st.sampled_from([fs[0], fs[1], L, rows * top])),
        dual_low=fs[0], dual_high=fs[2],
        scale_frac_bits=draw(st.sampled_from([0, 8, 16, 24])),
        acc_bits=draw(st.sampled_from([12, 20, 32, 48])),
        overflow=draw(st.sampled_from(["saturate", "wrap"])),
        half_lsb_reconstruction=draw(st.booleans()),
        adc_rounding=draw(st.sampled_from(["floor", "half_up"])),
        out_frac_bits=draw(st.integers(0, 20)),
        out_bits=draw(st.sampled_from([48, 16])),
        out_rounding=draw(st.sampled_from(["floor", "half_up", "half_even"])),
        nonideal=nonideal, chip_seed=draw(st.sampled_from([0, 5, 2**63 - 1])),
        seed=draw(st.sampled_from([0, 9, 2**63 - 1])),
        data_seed=draw(st.integers(0, 2**32 - 1)),
    )
    fit_registers(p, top_level=top)
    rng = np.random.default_rng(p["data_seed"])
    W = rng.integers(-(2 ** (Kw - 2)), 2 ** (Kw - 2) + 1, (M, N))
    fmt = ml_format(p)
    if x_kind == "radix4":
        e = rng.integers(-fmt.exponent_bias, fmt.exponent_bias + 1, (B, M))
        X = np.where(rng.random((B, M)) < draw(st.sampled_from([0.3, 0.9])),
                     rng.choice([-1.0, 1.0], (B, M)) * 4.0 ** e, 0.0)
    else:
        X = rng.integers(-fmt.max_value, fmt.max_value + 1, (B, M))
        X[rng.random((B, M)) < 0.2] = 0
    return X, W, p


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ml_cases())
def test_random_multilevel_mvm_matches_twin(case):
    X, W, p = case
    check_ml_case(X, W, p)


def ml_scenario(seed):
    """A whole multi-level case from one integer, spread evenly over the configs (hypothesis's
    derandomized draws cluster): every mapping, DAC width, Vref mode and option."""
    rng = np.random.default_rng(1000 + seed)
    ch = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    adc_bits = ch([3, 4, 5, 6, 8])
    L = 2**adc_bits - 1
    rows = L + ch([0, 1, int(rng.integers(2, 30))])
    kinds = [("radix4", 8, 2, 0), ("radix4", 6, 3, 0), ("radix4", 4, 2, 0), ("binary", 6, 1, 3),
             ("binary", 8, 1, 2), ("binary", 5, 1, 4), ("binary", 3, 1, 1), ("radix4", 8, 1, 0)]
    x_kind, Kx, per_cycle, digit_bits = kinds[seed % len(kinds)]
    top = (4 ** (per_cycle - 1) if x_kind == "radix4"
           else 2 ** min(digit_bits, Kx - 1) - 1)
    input_bits = int(rng.integers(top.bit_length(), 6))
    if rows * (2**input_bits - 1) > 16384:
        input_bits = top.bit_length()
    Kw = ch([3, 4, 5])
    G = ch([1, 2])
    fs = sorted(int(v) for v in rng.integers(L, rows * top + 1, 3))
    nonideal = {}
    if seed % 3:
        nonideal = {name: ch(choices) for name, choices in SIGMAS.items()}
        nonideal["dac_unit_sigma"] = ch([0.0, 0.02, 0.08])
    p = dict(rows=rows, columns=Kw * G + ch([0, 1]), adc_bits=adc_bits, Kw=Kw, Kx=Kx,
             x_kind=x_kind, x_per_cycle=per_cycle, x_digit_bits=digit_bits,
             input_bits=input_bits, mask_zero_inputs=bool(rng.integers(2)),
             skip_masked_cycles=bool(rng.integers(2)),
             dual_per_column=bool(rng.integers(2)),
             vref_mode=("fixed", "variable", "dual")[seed % 3 if seed % 2 else (seed // 2) % 3],
             full_scale=ch([fs[0], fs[1], L, rows * top]), dual_low=fs[0], dual_high=fs[2],
             scale_frac_bits=ch([0, 8, 16, 24]), acc_bits=ch([10, 16, 32, 48]),
             overflow=ch(["saturate", "wrap"]), half_lsb_reconstruction=bool(rng.integers(2)),
             adc_rounding=ch(["floor", "half_up"]), out_frac_bits=int(rng.integers(0, 20)),
             out_bits=ch([48, 12]), out_rounding=ch(["floor", "half_up", "half_even"]),
             nonideal=nonideal, chip_seed=ch([0, 3, 2**63 - 1]), seed=ch([0, 11, 2**63 - 1]))
    fit_registers(p, top_level=top)
    B, N = int(rng.integers(1, 4)), int(rng.integers(1, 2 * G + 1))
    M = int(rng.integers(1, rows + 1)) + (rows if seed % 4 == 0 else 0)    # 1 or 2 row tiles
    W = rng.integers(-(2 ** (Kw - 2)), 2 ** (Kw - 2) + 1, (M, N))
    fmt = ml_format(p)
    if x_kind == "radix4":
        e = rng.integers(-fmt.exponent_bias, fmt.exponent_bias + 1, (B, M))
        X = np.where(rng.random((B, M)) < ch([0.2, 0.6, 1.0]),
                     rng.choice([-1.0, 1.0], (B, M)) * 4.0 ** e, 0.0)
    else:
        X = rng.integers(-fmt.max_value, fmt.max_value + 1, (B, M))
        X[rng.random((B, M)) < ch([0.0, 0.3])] = 0
    return X, W, p


@pytest.mark.parametrize("seed", range(24))
def test_multilevel_scenarios_match_twin(seed):
    X, W, p = ml_scenario(seed)
    check_ml_case(X, W, p)


#: under Numba's CUDA simulator (tests/conftest.py) unless IMCSIM_TEST_REAL_GPU=1 on a GPU
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@settings(max_examples=6 if SIMULATED else 60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ml_cases(small=True))
def test_random_multilevel_cuda_matches_twin(case):
    X, W, p = case
    check_ml_case(X, W, p, devices=("cuda",))


def test_dac_level_errors_by_hand():
    """One row, level 5 (bits 0 and 2), ideal cells: the held value is the DAC's gain."""
    p = dict(rows=7, columns=3, adc_bits=3, Kw=3, Kx=8, x_kind="binary", x_per_cycle=1,
             x_digit_bits=3, input_bits=3, mask_zero_inputs=False, skip_masked_cycles=False,
             dual_per_column=False, vref_mode="fixed", full_scale=49, dual_low=7,
             dual_high=49, scale_frac_bits=16, acc_bits=48, overflow="saturate",
             half_lsb_reconstruction=False, adc_rounding="floor", out_frac_bits=12,
             out_bits=48, out_rounding="half_even", nonideal={"dac_unit_sigma": 0.05},
             chip_seed=3, seed=0)
    twin = check_ml_case(np.array([[5]]), np.array([[1]]), p)
    macro = Macro(make_config(p))
    gains = macro.row_dac_gains(3)
    sigma_fx = ref.sigma_to_fx(0.05)
    for k in range(3):
        units = [4096 + ((4096 * sigma_fx * ref.normal_fx(3, 6, 0, k, i)) >> 32)
                 for i in range(2**k)]
        assert gains[0, k] == sum(units)
    # cycle 0 drives level 5 = bits 0 and 2 of row 0's DAC; the stored 1 of binary:3 has
    # plane bits (b0-, b0+, b1) = (0, 1, 1), so with input +1 columns 1 and 2 hold the charge
    golden = GoldenModel(macro.config, np.array([[1]]), BinaryFormat(3), BinaryFormat(8, 3))
    golden.load_vectors(np.array([[5]]))
    rec = golden.step()
    assert rec["row_level"].tolist() == [5] and rec["level_sum"] == 5
    charge = int(gains[0, 0]) + int(gains[0, 2])       # (4096 * g) >> 12 = g, ideal cells
    held = ((7 * charge) << 20) // (7 * 4096)
    assert rec["column_value"].tolist() == [0, held, held]
    assert twin["dac_level_sum"] == 5 + 0 + 0 and twin["dac_row_drives"] == 1


# ---------------------------------------------------------------- traces, golden records, vectors
ML_CONFIG = MacroConfig(rows=64, columns=8, adc_bits=5, input_bits=3,
                        vref=VrefConfig(mode=VrefMode.VARIABLE, full_scale=64, dual_low=31,
                                        dual_high=64))


def test_trace_records_row_levels_and_reads_schema_1_0(tmp_path):
    import h5py

    from imcsim.verify.trace import TraceFile
    rng = np.random.default_rng(4)
    X = rng.integers(-16, 17, (2, 70))
    W = rng.integers(-4, 5, (70, 2))
    fmt = BinaryFormat(6, 3)
    macro = Macro(ML_CONFIG)
    path = tmp_path / "t.h5"
    res = macro.mvm_traced(X, W, fmt, BinaryFormat(4), trace=path)
    prep = macro.prepare(X, W, fmt, BinaryFormat(4))
    levels = reference_row_signals(prep, 0)[2]        # (B, P, R) of row tile 0
    with TraceFile(path) as tf:
        assert tf.attrs["top_level"] == 7
        rec = tf.cycle(1)                              # tile (0, 0), vector 0, cycle 1
        assert (rec["vector"], rec["plane"]) == (0, 1)
        assert np.array_equal(rec["row_level"], levels[0, 1])
        assert np.array_equal(rec["row_mask"], (levels[0, 1] > 0).astype(np.uint8))
        assert rec["level_sum"] == res.level_sum[0, 0, 1] == int(levels[0, 1].sum())
        assert "row levels" in tf.format_cycle(1) and "level units" in tf.format_cycle(1)
    # a schema-1.0 trace (binary rows, before multi-level rows existed) still reads
    one_hot = tmp_path / "old.h5"
    macro.mvm_traced(X, W, BinaryFormat(6), BinaryFormat(4), trace=one_hot)
    with h5py.File(one_hot, "a") as f:
        f.attrs["schema_version"] = "1.0"
        del f["cycles/row_level"], f["cycles/level_sum"], f.attrs["top_level"]
    with TraceFile(one_hot) as tf:
        rec = tf.cycle(0)
        assert np.array_equal(rec["row_level"], rec["row_mask"])
        assert rec["level_sum"] == rec["active_rows"]


def test_golden_records_and_vectors_carry_levels(tmp_path):
    from imcsim.verify.vectors import make_operands, read_hex_fields, write_vectors
    fmt, wf = Radix4Format(8, 2), BinaryFormat(4)
    ops = make_operands(ML_CONFIG, fmt, wf, inner=70, outputs=3, n_random=3, seed=2)
    golden = GoldenModel(ML_CONFIG, ops.W, wf, fmt)
    golden.load_vectors(ops.X)
    records = golden.run()
    assert len(records) == 2 * 2 * len(ops.X) * fmt.n_planes     # T x U x B x P
    for r in records:
        assert r["level_sum"] == int(r["row_level"].sum())
        assert set(np.unique(r["row_level"])) <= {0, 1, 4}
        assert np.array_equal(r["row_mask"], r["row_level"] > 0)
        assert r["active_rows"] == int((r["row_level"] > 0).sum())
    write_vectors(tmp_path / "v", ML_CONFIG, ops.W, ops.X, fmt, wf, labels=ops.labels)
    levels = read_hex_fields(tmp_path / "v", "row_level.hex")["row_level"]
    sums = read_hex_fields(tmp_path / "v", "level_sum.hex")["level_sum"]
    R = levels.shape[1]
    assert np.array_equal(levels, np.stack([np.pad(r["row_level"], (0, R - len(r["row_level"])))
                                            for r in records]))
    assert np.array_equal(sums.ravel(), [r["level_sum"] for r in records])


# ---------------------------------------------------------------- training and energy
def test_training_with_multilevel_rows_records_dac_events(tmp_path):
    """--input-mapping multi-level: a 3-bit row DAC, radix4:8/2 gradients and binary:6/3
    activations on every IMC MVM; metrics.json carries the DAC events and energy --from-run
    prices them."""
    from click.testing import CliRunner

    from imcsim.cli.energy import energy_command, training_layers
    from imcsim.energy import load_run, run_energy
    from imcsim.training.engine import TrainConfig, Trainer
    cfg = TrainConfig(epochs=1, batch_size=32, max_steps_per_epoch=2, input_mapping="multi-level",
                      backends=(("forward", "imc"), ("backward", "imc"), ("update", "imc")))
    trainer = Trainer(cfg, tmp_path, progress=False)
    assert trainer.macro_config().input_bits == 3
    assert (trainer.scheme.gradient, trainer.scheme.activation) == (Radix4Format(8, 2),
                                                                   BinaryFormat(6, 3))
    history = trainer.run()
    stats = history[-1]["mvm_stats"]
    for kinds in stats.values():
        for kind, rec in kinds.items():
            assert rec["dac_row_drives"] > 0 and rec["dac_level_sum"] >= rec["dac_row_drives"]
            assert len(rec["active_rows_per_plane"]) == (2 if kind == "forward" else 4)
    report = run_energy(load_run(tmp_path), training_layers("small-cnn", "digits"))
    rows = [r for r in report.epochs[0].measured.rows if r["device"] == "imc"]
    assert rows and all(r["source"] == "measured" for r in rows)
    assert sum(r["e_dac_row_drives"] for r in rows) > 0
    out = CliRunner().invoke(energy_command, ["--from-run", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "dac_row_drives" in out.output


def test_energy_model_prices_multilevel_rows():
    from imcsim.energy import energy_from_events, energy_report, load_energy_preset
    one_hot = energy_report("vgg-lite", 128)
    multi = energy_report("vgg-lite", 128, input_mapping="multi-level")

    def imc(rep, key):
        return sum(r[key] for r in rep.rows if r["device"] == "imc")
    # forward 6 -> 2 cycles, backward and update 7 -> 4 cycles
    assert imc(multi, "adc_conversions") < 0.55 * imc(one_hot, "adc_conversions")
    assert imc(one_hot, "dac_row_drives") == 0 and imc(multi, "dac_row_drives") > 0
    preset = load_energy_preset()
    assert imc(multi, "e_dac_row_drives") == pytest.approx(
        imc(multi, "dac_row_drives") * preset.row_dac_drive_fj * 1e-15)
    assert multi.settings["formats"]["gradients"] == "radix4:8/2"
    # measured events price the same way (drive + level per drive)
    res = Macro(ML_CONFIG).mvm(np.array([[1 / 64, 4 / 64, 0.0]]), np.ones((3, 1), dtype=int),
                               Radix4Format(8, 2), BinaryFormat(4))
    e = energy_from_events(res, preset)
    assert e["dac_row_drives"] == pytest.approx(2 * 20e-15)
    assert e["dac_level_sum"] == pytest.approx(5 * 5e-15)


def test_vcd_export_carries_row_levels(tmp_path):
    from imcsim.verify.trace import TraceFile
    from imcsim.verify.vcd import read_vcd
    X = np.array([[5, -3, 0, 16]])
    macro = Macro(ML_CONFIG)
    macro.mvm_traced(X, np.ones((4, 1), dtype=int), BinaryFormat(6, 3), BinaryFormat(4),
                     trace=tmp_path / "t.h5")
    with TraceFile(tmp_path / "t.h5") as tf:
        tf.export_vcd(tmp_path / "t.vcd")
        first = tf.cycle(0)
    waves = read_vcd(tmp_path / "t.vcd")
    # cycle 0: levels 5, 3, 0, 0 (16 = digits 0 then 2), 3 bits a row, row 0 lowest
    assert first["row_level"].tolist() == [5, 3, 0, 0]
    assert waves["row_level"][0] == (0, 5 | 3 << 3)
    assert waves["level_sum"][0] == (0, 8)
    # cycle 1: only 16's digit 2 drives
    assert waves["row_level"][1][1] == 2 << 9 and waves["level_sum"][1][1] == 2
