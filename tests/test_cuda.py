"""The CUDA fast path against the CPU fast path and the reference twin, bit for bit.

Runs under Numba's CUDA simulator (set up in conftest.py) on small shapes; with
IMCSIM_TEST_REAL_GPU=1 on a machine with a GPU the same tests run on the device.  The kernels
are compiled from the same hardware functions as the CPU kernels (kernels.hw), so these tests
check the CUDA loop structure, packing, encoding and orchestration.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from imcsim import BinaryFormat, Macro, MacroConfig, NonIdealityConfig, Radix4Format, VrefConfig

from test_equivalence import assert_same, make_config, mvm_cases, run_twin, x_format

pytestmark = [pytest.mark.cuda,
              # the simulator runs the uint64 hash in NumPy scalars, which warn on wrap-around
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
EXAMPLES = int(os.environ.get("IMCSIM_CUDA_EXAMPLES", "12" if SIMULATED else "200"))


def small_config(**kw):
    return MacroConfig(rows=300, columns=24, vref=VrefConfig(full_scale=300, dual_high=300), **kw)


def both(cfg):
    return Macro(cfg), Macro(cfg, device="cuda")


def host(a):
    """A result array on the host (CuPy results of device operands come back with .get())."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def assert_results_equal(a, b):
    assert np.array_equal(host(a.y_int), host(b.y_int))
    assert np.array_equal(host(a.y), host(b.y))
    assert (a.codes is None) == (b.codes is None)
    if a.codes is not None:
        assert np.array_equal(host(a.codes), host(b.codes))
    assert np.array_equal(a.active_rows, b.active_rows)
    assert np.array_equal(a.full_scale, b.full_scale)
    assert a.events.total() == b.events.total()
    for name, v in a.events.per_tile.items():
        assert np.array_equal(v, b.events.per_tile[name]), name


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mvm_cases())
def test_cuda_matches_twin_and_cpu(case):
    X, W, p = case
    cfg = make_config(p)
    cpu, gpu = Macro(cfg), Macro(cfg, device="cuda")
    kwargs = dict(x_format=x_format(p), w_format=BinaryFormat(p["Kw"]), seed=p["seed"],
                  return_codes=True)
    res = gpu.mvm(X, W, **kwargs)
    assert_same(res, run_twin(X, W, p), "mvm (cuda)")
    assert_results_equal(cpu.mvm(X, W, **kwargs), res)


@pytest.mark.parametrize("nonideal", [{}, dict(cell_cap_sigma=0.02, parasitic_ratio=0.1,
                                                cdac_unit_sigma=0.02, comparator_offset_sigma=0.5,
                                                comparator_noise_sigma=0.4,
                                                sampling_noise_sigma=0.3)])
def test_stored_weights_vector_offset_and_out_vectors(nonideal):
    cfg = small_config(nonideal=NonIdealityConfig(**nonideal))
    cpu, gpu = both(cfg)
    rng = np.random.default_rng(3)
    W = rng.integers(-8, 9, (620, 7))
    G = rng.choice([0.0, 0.0, 0.25, -1.0, 4.0], size=(3, 620))
    scale, offset = rng.integers(-3000, 3000, 7), rng.integers(-50, 50, 7)
    kwargs = dict(seed=11, vector_offset=5, return_codes=True, out_scale=scale, out_offset=offset)
    a = cpu.mvm(G, cpu.store_weights(W, BinaryFormat(5)), Radix4Format(8), **kwargs)
    stored = gpu.store_weights(W, BinaryFormat(5))
    b = gpu.mvm(G, stored, Radix4Format(8), **kwargs)
    assert_results_equal(a, b)
    b2 = gpu.mvm(G, stored, Radix4Format(8), **kwargs)       # cached device tiles
    assert_results_equal(a, b2)


def test_device_arrays_are_encoded_on_the_device():
    """Operands already on the GPU are validated and packed there (no host encoding)."""
    from numba import cuda
    cfg = small_config()
    cpu, gpu = both(cfg)
    rng = np.random.default_rng(4)
    X = rng.integers(-16, 17, (2, 350)).astype(np.float32)
    W = rng.integers(-8, 9, (350, 4))
    a = cpu.mvm(X, W, BinaryFormat(6), BinaryFormat(5), return_codes=True)
    b = gpu.mvm(cuda.to_device(X), cuda.to_device(W), BinaryFormat(6), BinaryFormat(5),
                return_codes=True)
    assert_results_equal(a, b)
    with pytest.raises(ValueError, match=r"X: binary:6 holds integers in \[-16, 16\]; 1 values"):
        bad = X.copy()
        bad[1, 7] = 0.5
        gpu.mvm(cuda.to_device(bad), W, BinaryFormat(6), BinaryFormat(5))
    with pytest.raises(ValueError, match="W: binary:5"):
        gpu.mvm(X, cuda.to_device(W * 3), BinaryFormat(6), BinaryFormat(5))
    with pytest.raises(ValueError, match="radix4:8 holds only 0"):
        gpu.mvm(cuda.to_device(np.full((1, 350), 3.0)), W, Radix4Format(8), BinaryFormat(5))


def test_traced_path_on_a_cuda_macro_runs_on_the_cpu_and_agrees():
    cfg = small_config(nonideal=NonIdealityConfig(comparator_noise_sigma=0.5))
    _, gpu = both(cfg)
    rng = np.random.default_rng(5)
    X, W = rng.integers(-16, 17, (2, 40)), rng.integers(-8, 9, (40, 3))
    assert_results_equal(gpu.mvm_traced(X, W, BinaryFormat(6), BinaryFormat(5)),
                         gpu.mvm(X, W, BinaryFormat(6), BinaryFormat(5), return_codes=True))


def test_unknown_device_is_one_clear_error():
    with pytest.raises(ValueError, match="device: must be one of"):
        Macro(small_config(), device="tpu")


def test_missing_gpu_is_one_clear_error(monkeypatch):
    import imcsim.gpu as gpu_module

    class NoGpu:
        @staticmethod
        def is_available():
            return False

    monkeypatch.setattr(gpu_module, "load_cuda", lambda: gpu_module.load_cuda_from(NoGpu))
    with pytest.raises(ValueError, match="no CUDA GPU found"):
        Macro(small_config(), device="cuda")



def test_more_vectors_than_grid_rows_use_the_grid_stride_loop(monkeypatch):
    """CUDA caps a grid's y dimension (65535 blocks); with the cap at 2 blocks, 5 vectors must
    still all be computed (kernels loop over vectors)."""
    import imcsim.gpu as gpu_module
    monkeypatch.setattr(gpu_module, "MAX_GRID_Y", 2)
    cfg = small_config(nonideal=NonIdealityConfig(comparator_noise_sigma=0.3))
    cpu, gpu = both(cfg)
    rng = np.random.default_rng(6)
    X, W = rng.integers(-16, 17, (5, 60)), rng.integers(-8, 9, (60, 3))
    assert_results_equal(cpu.mvm(X, W, BinaryFormat(6), BinaryFormat(5), return_codes=True),
                         gpu.mvm(X, W, BinaryFormat(6), BinaryFormat(5), return_codes=True))


def gemm_macro(cfg):
    """A CUDA macro that counts through the GEMM count path (signed operands, GEMM, counts)."""
    gpu = Macro(cfg, device="cuda")
    gpu._gpu.count_path = "gemm"
    return gpu


@settings(max_examples=max(4, EXAMPLES // 2), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mvm_cases())
def test_gemm_count_path_matches_twin_and_cpu(case):
    """The GEMM count path gives the popcount path's bits on the twin's random cases: every
    format (multi-level rows included), Vref mode, ADC law and non-ideality; cases with cell
    or row-DAC mismatch keep the charge kernel, so they check that the path is not taken."""
    X, W, p = case
    cfg = make_config(p)
    kwargs = dict(x_format=x_format(p), w_format=BinaryFormat(p["Kw"]), seed=p["seed"],
                  return_codes=True)
    res = gemm_macro(cfg).mvm(X, W, **kwargs)
    assert_same(res, run_twin(X, W, p), "mvm (cuda, gemm counts)")
    assert_results_equal(Macro(cfg).mvm(X, W, **kwargs), res)


@pytest.mark.parametrize("x_fmt", [BinaryFormat(6), Radix4Format(8), BinaryFormat(7, 2)])
def test_gemm_count_path_in_vector_chunks_over_row_tiles(monkeypatch, x_fmt):
    """Batches split into several GEMM chunks over several row tiles (tiny chunk budget), with
    noise keyed by global vector index, stored weights and per-output NMC vectors."""
    import imcsim.gpu as gpu_module
    monkeypatch.setattr(gpu_module, "GEMM_CHUNK_BYTES", 4 * 7 * 512)   # ~1 vector a chunk
    cfg = small_config(input_bits=2,        # binary:7/2 drives levels up to 3
                       nonideal=NonIdealityConfig(comparator_noise_sigma=0.4,
                                                  sampling_noise_sigma=0.3,
                                                  comparator_offset_sigma=0.5))
    cpu, gpu = Macro(cfg), gemm_macro(cfg)
    assert len(gpu_module.GpuMacro.gemm_chunks(5, 7, 320, 40)) == 5
    rng = np.random.default_rng(8)
    W = rng.integers(-8, 9, (700, 5))
    if isinstance(x_fmt, Radix4Format):
        X = rng.choice([0.0, 0.0, 0.25, -1.0, 4.0], size=(5, 700))
    else:
        X = rng.integers(-x_fmt.max_value, x_fmt.max_value + 1, (5, 700))
    scale, offset = rng.integers(-3000, 3000, 5), rng.integers(-50, 50, 5)
    kwargs = dict(seed=3, vector_offset=9, return_codes=True, out_scale=scale, out_offset=offset)
    assert_results_equal(cpu.mvm(X, cpu.store_weights(W, BinaryFormat(5)), x_fmt, **kwargs),
                         gpu.mvm(X, gpu.store_weights(W, BinaryFormat(5)), x_fmt, **kwargs))


def test_count_path_is_read_from_the_environment(monkeypatch):
    from imcsim.gpu import COUNT_PATH_VARIABLE, count_path_from_environment
    monkeypatch.setenv(COUNT_PATH_VARIABLE, "GEMM")
    assert count_path_from_environment() == "gemm"
    assert Macro(small_config(), device="cuda")._gpu.count_path == "gemm"
    monkeypatch.delenv(COUNT_PATH_VARIABLE)
    assert count_path_from_environment() == "popcount"
    monkeypatch.setenv(COUNT_PATH_VARIABLE, "tensor")
    with pytest.raises(ValueError, match=r"IMCSIM_CUDA_COUNT_PATH: expected one of popcount, "
                                         r"gemm, got 'tensor'"):
        Macro(small_config(), device="cuda")
