"""Layers with explicit forward and backward passes (NHWC, no autograd).

Every layer caches what its backward pass needs during ``forward(x, train=True)``;
``backward(grad)`` returns the gradient with respect to the input and fills ``self.grads``.
Conv2D and Dense run their three MVMs (forward, backward, weight update) through the backend
chosen for each kind (``training.backends``); they hold no hardware maths.

Every layer computes in the namespace of the array it receives (NumPy, or CuPy on a GPU; see
``training.xp``), so activations and gradients stay on the device; parameters must live in the
same namespace (``Sequential.to_device``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from imcsim.reshape import conv_output_size
from imcsim.training import repro
from imcsim.training.backends import RADIX4_SCHEME, Fp32Backend, MvmKind
from imcsim.training.optim import ThresholdWeights
from imcsim.training.quant import (
    Quantized,
    int8_quantize,
    pact_alpha_sum,
    pact_quantize,
    radix4_two_phase,
    sawb_quantize,
)
from imcsim.training.xp import namespace_of

FP32 = Fp32Backend()


class Layer:
    """Base: no parameters, identity.

    ``reproducible``: compute every float sum with the fixed-order kernels of
    ``training.repro`` (NumPy only; ``TrainConfig.reproducible`` sets it on every layer).
    """

    reproducible = False

    def __init__(self, name: str):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}

    def _sum_channels(self, a):
        """Sum over every axis but the last (channels), in a's dtype."""
        if self.reproducible:
            return repro.sum_rows(a).astype(a.dtype)
        return a.sum(axis=tuple(range(a.ndim - 1)))

    def forward(self, x, train=False):
        return x

    def backward(self, grad):
        return grad

    def sublayers(self):
        return [self]


class ReLU(Layer):
    def forward(self, x, train=False):
        xp = namespace_of(x)
        self.mask = x > 0
        return xp.where(self.mask, x, 0).astype(x.dtype)

    def backward(self, grad):
        xp = namespace_of(grad)
        return xp.where(self.mask, grad, 0).astype(grad.dtype)


class Flatten(Layer):
    def forward(self, x, train=False):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad):
        return grad.reshape(self.shape)


class MaxPool2(Layer):
    """2x2 max pooling, stride 2 (H and W must be even)."""

    def forward(self, x, train=False):
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            raise ValueError(f"{self.name}: max pooling needs even H and W, got {x.shape}")
        win = x.reshape(B, H // 2, 2, W // 2, 2, C).transpose(0, 1, 3, 5, 2, 4).reshape(
            B, H // 2, W // 2, C, 4)
        self.arg = win.argmax(axis=-1)
        self.shape = x.shape
        return namespace_of(x).take_along_axis(win, self.arg[..., None], axis=-1)[..., 0]

    def backward(self, grad):
        xp = namespace_of(grad)
        B, H, W, C = self.shape
        # the gradient goes to the window's argmax, zeros elsewhere
        hit = xp.arange(4) == self.arg[..., None]
        win = xp.where(hit, grad[..., None], 0).astype(grad.dtype)
        return win.reshape(B, H // 2, W // 2, C, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(
            B, H, W, C)


class GlobalAvgPool(Layer):
    """Average over H and W: (B, H, W, C) -> (B, C)."""

    def forward(self, x, train=False):
        self.shape = x.shape
        if self.reproducible:
            return (repro.sum_middle(x) / (x.shape[1] * x.shape[2])).astype(x.dtype)
        return x.mean(axis=(1, 2))

    def backward(self, grad):
        B, H, W, C = self.shape
        xp = namespace_of(grad)
        return xp.broadcast_to(grad[:, None, None, :] / (H * W), self.shape).astype(grad.dtype)


class BatchNorm(Layer):
    """Batch normalisation over all axes but the last (channels); running stats for eval."""

    def __init__(self, name, channels, momentum=0.1, eps=1e-5):
        super().__init__(name)
        self.params = {f"{name}.gamma": np.ones(channels, np.float32),
                       f"{name}.beta": np.zeros(channels, np.float32)}
        self.buffers = {f"{name}.running_mean": np.zeros(channels, np.float32),
                        f"{name}.running_var": np.ones(channels, np.float32)}
        self.momentum, self.eps = momentum, eps

    def forward(self, x, train=False):
        axes = tuple(range(x.ndim - 1))
        g, b = self.params[f"{self.name}.gamma"], self.params[f"{self.name}.beta"]
        rm, rv = self.buffers[f"{self.name}.running_mean"], self.buffers[f"{self.name}.running_var"]
        if train and self.reproducible:
            mean64 = repro.mean_rows(x)
            var64 = repro.mean_rows((x.astype(np.float64) - mean64) ** 2)
            mean, var = mean64.astype(x.dtype), var64.astype(x.dtype)
        elif train:
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
        if train:
            n = x.size // x.shape[-1]
            rm *= 1 - self.momentum
            rm += self.momentum * mean
            rv *= 1 - self.momentum
            rv += self.momentum * var * n / max(n - 1, 1)
        else:
            mean, var = rm, rv
        self.inv = 1.0 / namespace_of(x).sqrt(var + self.eps)
        self.xhat = (x - mean) * self.inv
        return (self.xhat * g + b).astype(np.float32)

    def backward(self, grad):
        g = self.params[f"{self.name}.gamma"]
        n = grad.size // grad.shape[-1]
        self.grads[f"{self.name}.gamma"] = self._sum_channels(grad * self.xhat).astype(np.float32)
        self.grads[f"{self.name}.beta"] = self._sum_channels(grad).astype(np.float32)
        dxhat = grad * g
        dx = (self.inv / n) * (n * dxhat - self._sum_channels(dxhat)
                               - self.xhat * self._sum_channels(dxhat * self.xhat))
        return dx.astype(np.float32)


class QuantLinearCore(Layer):
    """Shared machinery of Conv2D and Dense: quantizers and the three MVMs through backends.

    ``policy`` maps each MvmKind to a backend; ``role`` is 'first', 'last', 'residual' or
    'hidden' (the engine keeps the first three in FP32 unless asked otherwise).
    """

    def __init__(self, name, role, scheme=RADIX4_SCHEME, pact_init=6.0):
        super().__init__(name)
        self.role = role
        self.scheme = scheme
        self.policy = {k: FP32 for k in MvmKind}
        self.pact_init = pact_init
        self.step = 0
        # the threshold update rule's stored integer weights (training.optim.ThresholdWeights);
        # None: the weights are re-quantized from the FP32 parameter at every forward
        self.threshold_weights = None
        # integer weights the last training forward stored on the array, (inner, outputs)
        self.forward_stored = None

    @property
    def weight(self):
        return self.params[f"{self.name}.w"]

    def use_threshold_rule(self, rule):
        """Switch to the threshold update rule (``training.optim.ThresholdWeights``).

        The scheme's quantizer (SAWB or int8) is applied once, to the current FP32 weights: its
        integers become the stored weights and its scale stays fixed from here on; the FP32
        parameter is set to the stored weights (``q * scale``).  Returns the
        ThresholdWeights, whose ``apply`` the optimizer calls for ``<name>.w``.
        """
        w = self.weight
        self.threshold_weights = None
        q = self._quantize_weight(w.reshape(-1, w.shape[-1]))    # as the forward quantizes
        if q is None:
            raise ValueError(f"{self.name}: the threshold rule needs a quantized forward MVM")
        tw = ThresholdWeights.from_weights(w, q.values.reshape(w.shape), q.scale, rule)
        self.threshold_weights = tw
        w[...] = tw.weights().astype(w.dtype)
        return tw

    def stored_weight(self):
        """The integer weights the forward MVM would store now, in its layout (inner x
        outputs: the kernel reshaped to (k * k * C_in, C_out), or (d_in, d_out)); None
        when the forward is not quantized."""
        w = self.weight
        q = self._quantize_weight(w.reshape(-1, w.shape[-1]))
        return None if q is None else q.values

    def _mm(self, kind, X, W, x_format, w_format):
        return self.policy[kind].matmul(X, W, x_format, w_format, layer=self.name, mvm=kind,
                                        step=self.step)

    def _quantize_input(self, x):
        """Activations as the forward MVM streams them (PACT or int8), or None for FP32."""
        if not self.policy[MvmKind.FORWARD].quantized:
            return None
        if self.scheme.name == "int8":
            return int8_quantize(x)
        return pact_quantize(x, float(self.params[f"{self.name}.alpha"][0]))

    def _quantize_weight(self, w):
        """Weights as the array stores them: the threshold rule's stored integers, or the
        scheme's quantizer (SAWB or int8) applied to the FP32 parameter; None for FP32."""
        if not self.policy[MvmKind.FORWARD].quantized:
            return None
        if self.threshold_weights is not None:
            # no clip and no re-quantisation: the straight-through estimator passes everywhere
            tw = self.threshold_weights
            return Quantized(tw.q.reshape(w.shape), tw.scale, None)
        if self.scheme.name == "int8":
            return int8_quantize(w)
        return sawb_quantize(w, reproducible=self.reproducible)

    def _no_input_grad(self, grad):
        """Backward without the input gradient (the first layer of a network: the images need
        none). Only without an input quantizer: a PACT clip level learns from the input
        gradient, so a quantized input still takes the backward MVM."""
        self.grads[f"{self.name}.alpha"] = namespace_of(grad).zeros(1, np.float32)
        return None

    def _through_input_quantizer(self, x, dx, qa):
        """Straight-through estimator of PACT: mask dx, collect dL/dalpha (zero otherwise)."""
        xp = namespace_of(dx)
        if qa is not None and self.scheme.name == "radix4":
            alpha = float(self.params[f"{self.name}.alpha"][0])
            self.grads[f"{self.name}.alpha"] = xp.asarray(
                pact_alpha_sum(x, dx, alpha, reproducible=self.reproducible),
                dtype=np.float32).reshape(1)
            dx = dx * qa.pass_mask
        else:
            self.grads[f"{self.name}.alpha"] = xp.zeros(1, np.float32)
        return dx.astype(np.float32)

    def _quantize_grad(self, g):
        """(backward operand, update operand, update factor, scale) of the output gradient."""
        if self.scheme.name == "int8":
            q = int8_quantize(g)
            return q.values, q.values, 1.0, 1.0 / q.scale
        phase1, phase2, scale = radix4_two_phase(g)
        return phase1, phase2, 2.0, scale


@njit(cache=True, parallel=True)
def _windows_host(x, pad_lo, stride, out):
    """``_pad_windows`` of a host array into ``out`` (B, Ho, Wo, 3, 3, C): window (oy, ox)
    tap (ky, kx) is x[b, oy * stride + ky - pad_lo, ox * stride + kx - pad_lo], 0 outside."""
    B, H, W, C = x.shape
    ho, wo = out.shape[1], out.shape[2]
    for i in prange(B * ho):
        b, oy = i // ho, i % ho
        for ox in range(wo):
            for ky in range(3):
                iy = oy * stride + ky - pad_lo
                for kx in range(3):
                    ix = ox * stride + kx - pad_lo
                    if 0 <= iy < H and 0 <= ix < W:
                        for c in range(C):
                            out[b, oy, ox, ky, kx, c] = x[b, iy, ix, c]
                    else:
                        for c in range(C):
                            out[b, oy, ox, ky, kx, c] = 0


def _pad_windows(x, pad_lo, pad_hi, stride=1):
    """3x3 windows of x padded by (pad_lo, pad_hi), taken every ``stride`` pixels:
    (B*Ho*Wo, 9*C), element order (ky, kx, c), in the namespace of x.

    With pad 1/1 these are the vectors of the input reshape buffer
    (``imcsim.reshape.reshape_conv_inputs``, host only), value for value.
    """
    xp = namespace_of(x)
    B, H, W, C = x.shape
    ho = (H + pad_lo + pad_hi - 3) // stride + 1
    wo = (W + pad_lo + pad_hi - 3) // stride + 1
    out = xp.empty((B, ho, wo, 3, 3, C), dtype=x.dtype)
    if xp is np:
        # one compiled, parallel pass: the windows of L2 are 1.2 GB of float64, which the
        # padded copy and nine strided copies below wrote twice over in one thread
        if out.size:
            _windows_host(np.ascontiguousarray(x), pad_lo, stride, out)
    else:
        p = xp.zeros((B, H + pad_lo + pad_hi, W + pad_lo + pad_hi, C), dtype=x.dtype)
        p[:, pad_lo:pad_lo + H, pad_lo:pad_lo + W] = x
        for ky in range(3):
            for kx in range(3):
                out[:, :, :, ky, kx, :] = p[:, ky:ky + stride * (ho - 1) + 1:stride,
                                            kx:kx + stride * (wo - 1) + 1:stride]
    return out.reshape(B * ho * wo, 9 * C), (B, ho, wo)


class Conv2D(QuantLinearCore):
    """3x3 'same' convolution (stride 1 or 2) or 1x1 (stride 1 or 2), no bias (BN follows).

    Forward: the windows of the input reshape buffer (imcsim.reshape), built in the input's
    namespace (``_pad_windows``).  Backward: the
    input gradient is the convolution of the (stride-dilated) output gradient with the
    flipped kernel, so its MVM streams gradient windows of 9 * C_out elements against the
    stored transposed kernel.  Update: gradient columns streamed against stored windows.
    """

    def __init__(self, name, cin, cout, rng, kernel=3, stride=1, role="hidden",
                 scheme=RADIX4_SCHEME):
        super().__init__(name, role, scheme)
        if kernel not in (1, 3) or stride not in (1, 2):
            raise ValueError(f"{name}: kernel must be 1 or 3 and stride 1 or 2")
        self.cin, self.cout, self.kernel, self.stride = cin, cout, kernel, stride
        fan_in = kernel * kernel * cin
        self.params[f"{name}.w"] = (rng.standard_normal((kernel, kernel, cin, cout))
                                    * np.sqrt(2.0 / fan_in)).astype(np.float32)
        self.params[f"{name}.alpha"] = np.array([self.pact_init], np.float32)

    def _windows(self, x):
        if self.kernel == 1:
            xs = x[:, ::self.stride, ::self.stride, :]
            return xs.reshape(-1, x.shape[-1]), xs.shape[:3]
        return _pad_windows(x, 1, 1, self.stride)

    def forward(self, x, train=False):
        w = self.weight
        W = w.reshape(-1, self.cout)
        self.in_shape = x.shape
        qa = self._quantize_input(x)
        qw = self._quantize_weight(W)
        if qa is None:
            A, out_shape = self._windows(x)
            y = self._mm(MvmKind.FORWARD, A, W, None, None)
        else:
            A, out_shape = self._windows(self._host_int8(qa.values))
            y = self._mm(MvmKind.FORWARD, A, qw.values, self.scheme.activation,
                         self.scheme.weight) * (qa.scale * qw.scale)
        if train:
            self.cache = (x, A, qa, qw)
            self.forward_stored = None if qw is None else qw.values
        return y.reshape(*out_shape, self.cout).astype(np.float32)

    def _host_int8(self, values):
        """Quantized activations (PACT 0..16, int8 -64..64) as int8 on the host, checked to be
        integers of the scheme's activation format in one pass: their windows, streamed in the
        forward MVM and stored for the update, take an eighth of float64's memory (1.2 GB for
        L2 of VGG-lite at batch 128).  Every backend reads them as the same values."""
        if namespace_of(values) is not np:
            return values
        return self.scheme.activation.validate(values, f"{self.name}: activations",
                                               dtype=np.int8)

    def _input_grad_windows(self, g):
        """Windows of the dilated, padded output gradient for the transposed convolution."""
        B, H, W, _ = self.in_shape
        ho, wo = g.shape[1:3]
        if self.kernel == 1:
            return None
        s = self.stride
        dil = namespace_of(g).zeros((B, (ho - 1) * s + 1, (wo - 1) * s + 1, self.cout),
                                    dtype=g.dtype)
        dil[:, ::s, ::s] = g
        pad_hi_h = H - dil.shape[1] + 1
        pad_hi_w = W - dil.shape[2] + 1
        if pad_hi_h != pad_hi_w:
            raise ValueError(f"{self.name}: non-square maps are not supported in backward")
        return _pad_windows(dil, 1, pad_hi_h)[0]

    def backward(self, grad, need_input_grad: bool = True):
        """Weight gradients into ``grads``; returns the input gradient (None without
        ``need_input_grad`` and an input quantizer: no backward MVM runs)."""
        x, A, qa, qw = self.cache
        B, H, W, C = self.in_shape
        G = grad.reshape(-1, self.cout)
        w = self.weight
        quant_bwd = self.policy[MvmKind.BACKWARD].quantized
        quant_upd = self.policy[MvmKind.UPDATE].quantized
        if quant_bwd or quant_upd:
            g_bwd, g_upd, upd_factor, gscale = self._quantize_grad(G)
        # weight update: dW = A^T G, as stored windows x streamed gradient columns
        if quant_upd:
            a_int = A if qa is not None else None
            a_scale = qa.scale if qa is not None else 1.0
            if a_int is None:
                raise ValueError(f"{self.name}: a quantized update needs a quantized forward")
            dW = self._mm(MvmKind.UPDATE, g_upd.T, a_int, self.scheme.gradient,
                          self.scheme.stored_activation).T * (upd_factor * a_scale / gscale)
        else:
            A_used = A * qa.scale if qa is not None else A
            dW = self._mm(MvmKind.UPDATE, A_used.T, G, None, None)
        if qw is not None and qw.pass_mask is not None:
            dW = dW * qw.pass_mask
        self.grads[f"{self.name}.w"] = dW.reshape(w.shape).astype(np.float32)
        if not need_input_grad and qa is None:
            return self._no_input_grad(grad)
        # input gradient
        w_eff = (qw.values * qw.scale).reshape(w.shape) if qw is not None else w
        if self.kernel == 1:
            if quant_bwd:
                dA = self._mm(MvmKind.BACKWARD, g_bwd, qw.values.T, self.scheme.gradient,
                              self.scheme.weight) * (qw.scale / gscale)
            else:
                dA = self._mm(MvmKind.BACKWARD, G, w_eff.reshape(C, self.cout).T, None, None)
            dx = namespace_of(dA).zeros(self.in_shape, np.float32)
            ho, wo = grad.shape[1:3]
            dx[:, ::self.stride, ::self.stride, :] = dA.reshape(B, ho, wo, C)
        else:
            if quant_bwd:
                gq_map = g_bwd.reshape(grad.shape)
                Gw = self._input_grad_windows(gq_map)
                flipped = qw.values.reshape(w.shape)[::-1, ::-1].transpose(0, 1, 3, 2)
                dA = self._mm(MvmKind.BACKWARD, Gw, flipped.reshape(-1, C),
                              self.scheme.gradient, self.scheme.weight) * (qw.scale / gscale)
            else:
                Gw = self._input_grad_windows(grad)
                flipped = w_eff[::-1, ::-1].transpose(0, 1, 3, 2)
                dA = self._mm(MvmKind.BACKWARD, Gw, flipped.reshape(-1, C), None, None)
            dx = dA.reshape(self.in_shape).astype(np.float32)
        return self._through_input_quantizer(x, dx, qa)


class Dense(QuantLinearCore):
    """Fully connected layer without bias (BN follows) or with bias for the classifier."""

    def __init__(self, name, din, dout, rng, role="hidden", bias=False, scheme=RADIX4_SCHEME):
        super().__init__(name, role, scheme)
        self.params[f"{name}.w"] = (rng.standard_normal((din, dout))
                                    * np.sqrt(2.0 / din)).astype(np.float32)
        self.params[f"{name}.alpha"] = np.array([self.pact_init], np.float32)
        self.bias = bias
        if bias:
            self.params[f"{name}.bias"] = np.zeros(dout, np.float32)

    def forward(self, x, train=False):
        W = self.weight
        qa = self._quantize_input(x)
        qw = self._quantize_weight(W)
        if qa is None:
            y = self._mm(MvmKind.FORWARD, x, W, None, None)
        else:
            y = self._mm(MvmKind.FORWARD, qa.values, qw.values, self.scheme.activation,
                         self.scheme.weight) * (qa.scale * qw.scale)
        if self.bias:
            y = y + self.params[f"{self.name}.bias"]
        if train:
            self.cache = (x, qa, qw)
            self.forward_stored = None if qw is None else qw.values
        return y.astype(np.float32)

    def backward(self, grad, need_input_grad: bool = True):
        """Weight (and bias) gradients into ``grads``; returns the input gradient (None
        without ``need_input_grad`` and an input quantizer: no backward MVM runs)."""
        x, qa, qw = self.cache
        G = grad
        quant_bwd = self.policy[MvmKind.BACKWARD].quantized
        quant_upd = self.policy[MvmKind.UPDATE].quantized
        if quant_bwd or quant_upd:
            g_bwd, g_upd, upd_factor, gscale = self._quantize_grad(G)
        if quant_upd:
            if qa is None:
                raise ValueError(f"{self.name}: a quantized update needs a quantized forward")
            dW = self._mm(MvmKind.UPDATE, g_upd.T, qa.values, self.scheme.gradient,
                          self.scheme.stored_activation).T * (upd_factor * qa.scale / gscale)
        else:
            A_used = qa.values * qa.scale if qa is not None else x
            dW = self._mm(MvmKind.UPDATE, A_used.T, G, None, None)
        if qw is not None and qw.pass_mask is not None:
            dW = dW * qw.pass_mask
        self.grads[f"{self.name}.w"] = dW.astype(np.float32)
        if self.bias:
            self.grads[f"{self.name}.bias"] = self._sum_channels(G).astype(np.float32)
        if not need_input_grad and qa is None:
            return self._no_input_grad(grad)
        if quant_bwd:
            dx = self._mm(MvmKind.BACKWARD, g_bwd, qw.values.T, self.scheme.gradient,
                          self.scheme.weight) * (qw.scale / gscale)
        else:
            w_eff = qw.values * qw.scale if qw is not None else self.weight
            dx = self._mm(MvmKind.BACKWARD, G, w_eff.T, None, None)
        return self._through_input_quantizer(x, dx, qa)


class Residual(Layer):
    """y = body(x) + shortcut(x); the shortcut is identity when empty."""

    def __init__(self, name, body, shortcut=()):
        super().__init__(name)
        self.body, self.shortcut = list(body), list(shortcut)

    def sublayers(self):
        out = []
        for layer in self.body + self.shortcut:
            out += layer.sublayers()
        return out

    def forward(self, x, train=False):
        y = x
        for layer in self.body:
            y = layer.forward(y, train)
        s = x
        for layer in self.shortcut:
            s = layer.forward(s, train)
        return y + s

    def backward(self, grad):
        g = grad
        for layer in reversed(self.body):
            g = layer.backward(g)
        s = grad
        for layer in reversed(self.shortcut):
            s = layer.backward(s)
        return g + s


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy (a host float) and its gradient with respect to the logits."""
    loss, grad = softmax_cross_entropy_array(logits, labels)
    return float(loss), grad


def softmax_cross_entropy_array(logits, labels):
    """As :func:`softmax_cross_entropy`, the loss a 0-d array of the logits' namespace (no host
    synchronisation; labels are moved there when they are not)."""
    xp = namespace_of(logits)
    labels = xp.asarray(labels)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))
    n = logits.shape[0]
    rows = xp.arange(n)
    loss = -logp[rows, labels].mean()
    grad = xp.exp(logp)
    grad[rows, labels] -= 1.0
    return loss, (grad / n).astype(np.float32)


__all__ = ["Layer", "ReLU", "Flatten", "MaxPool2", "GlobalAvgPool", "BatchNorm", "Conv2D",
           "Dense", "Residual", "softmax_cross_entropy", "softmax_cross_entropy_array",
           "conv_output_size"]
