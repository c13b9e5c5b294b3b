"""Training layers: finite-difference gradient checks (FP32) and quantizers by hand."""
import numpy as np
import pytest

from imcsim.training.backends import ExactBackend, ImcBackend, MvmKind
from imcsim.training.layers import (
    BatchNorm,
    Conv2D,
    Dense,
    GlobalAvgPool,
    MaxPool2,
    ReLU,
    Residual,
    softmax_cross_entropy,
)
from imcsim.training.quant import (
    SAWB_C1,
    SAWB_C2,
    grad_scale,
    int8_quantize,
    pact_alpha_grad,
    pact_quantize,
    radix4_round,
    radix4_two_phase,
    sawb_alpha,
    sawb_quantize,
)


def numeric_grad(f, x, eps=1e-2):
    g = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        g.reshape(-1)[i] = (up - down) / (2 * eps)
    return g


def check_layer(layer, x, rtol=3e-2, atol=3e-3):
    """Compare backward() with central differences of sum(out * R), inputs and params."""
    rng = np.random.default_rng(0)
    out = layer.forward(x, train=True)
    R = rng.standard_normal(out.shape).astype(np.float32)

    def loss():
        return float((layer.forward(x, train=True).astype(np.float64) * R).sum())
    layer.forward(x, train=True)
    dx = layer.backward(R)
    assert np.allclose(dx, numeric_grad(loss, x), rtol=rtol, atol=atol)
    for name, p in layer.params.items():
        if name.endswith(".alpha"):
            continue
        layer.forward(x, train=True)
        layer.backward(R)
        analytic = layer.grads[name].copy()
        assert np.allclose(analytic, numeric_grad(loss, p), rtol=rtol, atol=atol), name


@pytest.mark.parametrize("kernel,stride,h", [(3, 1, 5), (3, 2, 6), (3, 2, 5), (1, 2, 6)])
def test_conv2d_gradients(kernel, stride, h):
    rng = np.random.default_rng(1)
    layer = Conv2D("c", 2, 3, rng, kernel=kernel, stride=stride)
    check_layer(layer, rng.standard_normal((2, h, h, 2)).astype(np.float32))


def test_dense_gradients_with_bias():
    rng = np.random.default_rng(2)
    layer = Dense("d", 5, 4, rng, bias=True)
    check_layer(layer, rng.standard_normal((3, 5)).astype(np.float32))


@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 3, 4)])
def test_batchnorm_gradients(shape):
    rng = np.random.default_rng(3)
    layer = BatchNorm("bn", shape[-1])
    layer.params["bn.gamma"][...] = rng.uniform(0.5, 1.5, shape[-1])
    check_layer(layer, rng.standard_normal(shape).astype(np.float32), rtol=5e-2, atol=5e-3)


def test_pooling_relu_and_residual_gradients():
    rng = np.random.default_rng(4)
    # well-separated values keep max pooling and ReLU away from their kinks
    x = rng.permutation(np.arange(64, dtype=np.float32)).reshape(1, 4, 4, 4) / 8 - 4 + 0.0625
    check_layer(MaxPool2("mp"), x.copy())
    check_layer(GlobalAvgPool("gap"), x.copy())
    check_layer(ReLU("r"), x.copy())
    block = Residual("res", [Conv2D("res.c", 4, 4, rng), ReLU("res.r")])
    check_layer(block, x.copy() / 4)


def test_softmax_cross_entropy_gradient():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((4, 5))
    labels = np.array([0, 3, 1, 4])
    _, grad = softmax_cross_entropy(logits, labels)
    num = numeric_grad(lambda: softmax_cross_entropy(logits, labels)[0], logits, eps=1e-5)
    assert np.allclose(grad, num, atol=1e-5)


# --- quantizers by hand ---------------------------------------------------------------------
def test_pact_by_hand():
    x = np.array([-1.0, 0.1, 0.15, 2.0, 3.9, 5.0])
    q = pact_quantize(x, alpha=4.0)          # step 0.25
    assert q.values.tolist() == [0, 0, 1, 8, 16, 16] and q.scale == 0.25
    assert q.pass_mask.tolist() == [False, True, True, True, True, False]
    assert pact_alpha_grad(x, np.array([1, 1, 1, 1, 1, 2.0]), 4.0) == 2.0


def test_sawb_by_hand():
    # the 4-bit coefficients of the SAWB authors' implementation (training/quant.py)
    assert (SAWB_C1, SAWB_C2) == (12.68, 12.80)
    w = np.array([-1.0, -0.5, 0.5, 1.0])
    # E[w^2] = 0.625, E|w| = 0.75: 12.68 * 0.7905694 - 12.80 * 0.75 = 0.424420
    assert sawb_alpha(w) == pytest.approx(0.424420, abs=1e-6)
    # a Gaussian tensor: alpha ~ (12.68 - 12.80 sqrt(2 / pi)) sigma = 2.467 sigma
    g = np.random.default_rng(0).standard_normal(200_000)
    assert sawb_alpha(g) == pytest.approx(2.467, abs=0.01)
    q = sawb_quantize(w)
    assert q.values.tolist() == [-8, -8, 8, 8]
    assert q.pass_mask.tolist() == [False, False, False, False]
    flat = np.full(10, 0.3)                   # a degenerate tensor never clips to zero
    assert sawb_quantize(flat).values.tolist() == [8] * 10


def test_radix4_round_by_hand():
    x = np.array([0.0, 0.004, 0.01, 0.04, 0.038, -3.0, -2.4, 100.0, 1.0, 0.25])
    assert radix4_round(x).tolist() == [0.0, 0.0, 1 / 64, 1 / 16, 1 / 64, -4.0, -1.0, 64.0,
                                        1.0, 0.25]


def test_grad_scale_and_two_phase():
    assert grad_scale(np.array([0.5, -0.1])) == 128.0          # 0.5 * 128 = 64
    assert grad_scale(np.array([-40.0])) == 1.0                # already in (32, 64]
    assert grad_scale(np.zeros(3)) == 1.0
    g = np.array([0.5, 0.3, -0.05, 0.0])
    p1, p2, s = radix4_two_phase(g)
    assert s == 128.0
    # scaled: 64, 38.4, -6.4, 0; thresholds 2.5 * 4**e: 38.4 < 40 -> 16, -6.4 -> -4
    assert p1.tolist() == [64.0, 16.0, -4.0, 0.0]
    # phase 2 rounds g/2 (32, 19.2, -3.2) on the same grid, i.e. g on 2 * 4**e
    assert (2 * p2).tolist() == [32.0, 32.0, -8.0, 0.0]
    q = int8_quantize(np.array([0.5, -1.0, 0.25]))
    assert q.values.tolist() == [32, -64, 16] and q.scale == 1 / 64


# --- exact == IMC when every conversion is lossless -----------------------------------------
def test_exact_backend_equals_imc_backend_when_lossless():
    from imcsim import MacroConfig
    rng = np.random.default_rng(6)
    x = np.abs(rng.standard_normal((32, 100))).astype(np.float32)
    grads = {}
    for name, backend in (("exact", ExactBackend()), ("imc", ImcBackend(MacroConfig()))):
        layer = Dense("d", 100, 40, np.random.default_rng(7))
        layer.policy = {k: backend for k in MvmKind}
        y = layer.forward(x, train=True)
        dx = layer.backward(np.random.default_rng(8).standard_normal(y.shape).astype(np.float32))
        grads[name] = (y, dx, layer.grads["d.w"], layer.grads["d.alpha"])
        if name == "imc":
            st = backend.stats
            assert all(s.clipped_conversions == 0 for s in st.values())
            assert max(s.active_rows_per_plane.max() / s.cycles_per_plane for s in st.values()) <= 255
    for a, b in zip(grads["exact"], grads["imc"]):
        assert np.array_equal(a, b)


def test_conv_activations_are_checked_int8_windows_on_the_host():
    """The quantized forward holds its windows as int8 on the host (the same values every
    backend reads), and activations that are not the format's integers (a diverged run's NaN)
    stop with a message naming the layer instead of being cast in silence."""
    from imcsim.training.layers import Conv2D
    rng = np.random.default_rng(9)
    layer = Conv2D("c", 3, 4, rng)
    layer.policy = {k: ExactBackend() for k in MvmKind}
    x = np.abs(rng.standard_normal((2, 5, 5, 3))).astype(np.float32)
    y = layer.forward(x, train=True)
    A = layer.cache[1]
    assert A.dtype == np.int8 and A.shape == (2 * 5 * 5, 27)
    float_windows = Conv2D("c", 3, 4, np.random.default_rng(9))
    float_windows.policy = layer.policy
    float_windows._host_int8 = lambda values: values              # the float64 windows
    assert np.array_equal(float_windows.forward(x, train=True), y)
    x[0, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="c: activations: binary:6 holds integers only"):
        layer.forward(x)
