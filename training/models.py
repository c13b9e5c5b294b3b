"""Model definitions: an MLP and a small CNN for digits, VGG-lite (Table I), ResNet-18 (CIFAR).

Each model is a ``Sequential`` whose Conv2D / Dense layers carry a role: 'first', 'last',
'residual' (1x1 shortcut convs) or 'hidden'.  The engine maps MVMs to backends by role.
Models are initialised on the host (seeded NumPy generator) and then moved to the training
device (:meth:`Sequential.to_device`), so both devices start from the same weights.
VGG-lite's geometry comes from ``imcsim.workloads.vgg_lite_layers`` (defined once).
"""
from __future__ import annotations

import numpy as np

from imcsim.training.backends import RADIX4_SCHEME
from imcsim.training.layers import (
    BatchNorm,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool,
    MaxPool2,
    QuantLinearCore,
    ReLU,
    Residual,
)
from imcsim.training.xp import to_device
from imcsim.workloads import vgg_lite_layers


class Sequential:
    """A list of layers; parameters and gradients are flat dicts keyed 'layer.param'."""

    def __init__(self, name, layers):
        self.name = name
        self.layers = list(layers)

    def all_layers(self):
        out = []
        for layer in self.layers:
            out += layer.sublayers()
        return out

    def compute_layers(self) -> list[QuantLinearCore]:
        return [la for la in self.all_layers() if isinstance(la, QuantLinearCore)]

    def _collect(self, attr: str) -> dict:
        out = {}
        for layer in self.all_layers():
            out.update(getattr(layer, attr))
        return out

    @property
    def params(self) -> dict:
        return self._collect("params")

    @property
    def grads(self) -> dict:
        return self._collect("grads")

    @property
    def buffers(self) -> dict:
        return self._collect("buffers")

    def forward(self, x, train=False):
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, grad, need_input_grad: bool = True):
        """Backward pass; returns the gradient of the input images, or None when
        ``need_input_grad`` is False and the first layer (role 'first') has no input
        quantizer: then it computes only its weight gradients, and its backward MVM, which
        training does not need, does not run (with a PACT input quantizer, whose clip level
        learns from the input gradient, it still runs)."""
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            # the layers before the first one (a Flatten) have nothing to learn
            if (not need_input_grad and getattr(layer, "role", None) == "first"
                    and not any(getattr(earlier, "params", None) for earlier in self.layers[:i])):
                return layer.backward(grad, need_input_grad=False)
            grad = layer.backward(grad)
        return grad

    def set_step(self, step: int):
        for layer in self.compute_layers():
            layer.step = step

    def to_device(self, xp):
        """Move every parameter and buffer into namespace ``xp`` (values unchanged)."""
        for layer in self.all_layers():
            layer.params = {k: to_device(v, xp) for k, v in layer.params.items()}
            layer.buffers = {k: to_device(v, xp) for k, v in layer.buffers.items()}
        return self


def _conv_bn_relu(name, cin, cout, rng, role="hidden", pool=False, scheme=RADIX4_SCHEME,
                  stride=1):
    """Table I block: Conv -> [MaxPool] -> BatchNorm -> ReLU."""
    out = [Conv2D(f"{name}", cin, cout, rng, stride=stride, role=role, scheme=scheme)]
    if pool:
        out.append(MaxPool2(f"{name}.pool"))
    out += [BatchNorm(f"{name}.bn", cout), ReLU(f"{name}.relu")]
    return out


def mlp(input_shape, n_classes, rng, scheme=RADIX4_SCHEME, width=128):
    d = int(np.prod(input_shape))
    return Sequential("mlp", [
        Flatten("flat"),
        Dense("fc1", d, width, rng, role="first", scheme=scheme), BatchNorm("fc1.bn", width),
        ReLU("fc1.relu"),
        Dense("fc2", width, width, rng, scheme=scheme), BatchNorm("fc2.bn", width),
        ReLU("fc2.relu"),
        Dense("fc3", width, width, rng, scheme=scheme), BatchNorm("fc3.bn", width),
        ReLU("fc3.relu"),
        Dense("fc4", width, n_classes, rng, role="last", bias=True, scheme=scheme),
    ])


def small_cnn(input_shape, n_classes, rng, scheme=RADIX4_SCHEME):
    """For 8x8 digits: 16C - 32C-MP - 64C-MP - 128FC - classes (first and last FP32)."""
    h, w, c = input_shape
    layers = (_conv_bn_relu("conv1", c, 16, rng, role="first", scheme=scheme)
              + _conv_bn_relu("conv2", 16, 32, rng, pool=True, scheme=scheme)
              + _conv_bn_relu("conv3", 32, 64, rng, pool=True, scheme=scheme)
              + [Flatten("flat"),
                 Dense("fc4", 64 * (h // 4) * (w // 4), 128, rng, scheme=scheme),
                 BatchNorm("fc4.bn", 128), ReLU("fc4.relu"),
                 Dense("fc5", 128, n_classes, rng, role="last", bias=True, scheme=scheme)])
    return Sequential("small-cnn", layers)


def vgg_lite(input_shape, n_classes, rng, scheme=RADIX4_SCHEME):
    """Table I: 128C-128C-MP-256C-256C-MP-256C-256C-MP-1024FC-1024FC-10FC (+BN, ReLU).

    Layer names, channels and pooling come from ``imcsim.workloads.vgg_lite_layers`` (specs for
    32x32x3 inputs); the first layer takes the input's channels, the last ``n_classes``
    outputs, and the first dense layer's width follows the input's spatial size.
    """
    h, w, c = input_shape
    specs = vgg_lite_layers()
    convs = [s for s in specs if s.kind == "conv"]
    dense = [s for s in specs if s.kind == "dense"]
    layers, cin = [], c
    for i, spec in enumerate(convs):
        layers += _conv_bn_relu(spec.name, cin, spec.out_channels, rng,
                                role="first" if i == 0 else "hidden", pool=spec.pool_after,
                                scheme=scheme)
        cin = spec.out_channels
    shrink = 2 ** sum(spec.pool_after for spec in convs)
    layers.append(Flatten("flat"))
    din = cin * (h // shrink) * (w // shrink)
    for i, spec in enumerate(dense):
        last = i == len(dense) - 1
        dout = n_classes if last else spec.out_channels
        layers.append(Dense(spec.name, din, dout, rng, role="last" if last else "hidden",
                            scheme=scheme))
        layers.append(BatchNorm(f"{spec.name}.bn", dout))
        if not last:
            layers.append(ReLU(f"{spec.name}.relu"))
        din = dout
    return Sequential("vgg-lite", layers)


def _basic_block(name, cin, cout, stride, rng, scheme):
    body = [Conv2D(f"{name}.conv1", cin, cout, rng, stride=stride, scheme=scheme),
            BatchNorm(f"{name}.bn1", cout), ReLU(f"{name}.relu1"),
            Conv2D(f"{name}.conv2", cout, cout, rng, scheme=scheme),
            BatchNorm(f"{name}.bn2", cout)]
    shortcut = []
    if stride != 1 or cin != cout:
        shortcut = [Conv2D(f"{name}.short", cin, cout, rng, kernel=1, stride=stride,
                           role="residual", scheme=scheme),
                    BatchNorm(f"{name}.short.bn", cout)]
    return [Residual(name, body, shortcut), ReLU(f"{name}.relu")]


def resnet18(input_shape, n_classes, rng, scheme=RADIX4_SCHEME):
    """He et al. ResNet-18, CIFAR variant (3x3 stem, 4 stacks x 2 blocks, global avg pool)."""
    h, w, c = input_shape
    layers = _conv_bn_relu("L1", c, 64, rng, role="first", scheme=scheme)
    cin = 64
    for stack, (cout, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
        for block in range(2):
            layers += _basic_block(f"s{stack}b{block}", cin, cout, stride if block == 0 else 1,
                                   rng, scheme)
            cin = cout
    layers += [GlobalAvgPool("pool"), Dense("fc", 512, n_classes, rng, role="last", bias=True,
                                            scheme=scheme)]
    return Sequential("resnet-18", layers)


MODELS = {"mlp": mlp, "small-cnn": small_cnn, "vgg-lite": vgg_lite, "resnet-18": resnet18}


def build_model(name, input_shape, n_classes, seed, scheme=RADIX4_SCHEME) -> Sequential:
    if name not in MODELS:
        raise ValueError(f"model: expected one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](input_shape, n_classes, np.random.default_rng(seed), scheme)
