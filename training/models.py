"""Model definitions: an MLP and a small CNN for digits, VGG-lite (Table I), ResNet-18 (CIFAR).

Each model is a ``Sequential`` whose Conv2D / Dense layers carry a role: 'first', 'last',
'residual' (1x1 shortcut convs) or 'hidden'.  The engine maps MVMs to backends by role.
"""
from __future__ import annotations

import numpy as np

from imcsim.training.backends import RADIX4_SCHEME
from imcsim.training.layers import (BatchNorm, Conv2D, Dense, Flatten, GlobalAvgPool, MaxPool2,
                             QuantLinearCore, ReLU, Residual)


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

    def backward(self, grad):
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def set_step(self, step: int):
        for layer in self.compute_layers():
            layer.step = step


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
    """Table I: 128C-128C-MP-256C-256C-MP-256C-256C-MP-1024FC-1024FC-10FC (+BN, ReLU)."""
    h, w, c = input_shape
    layers = (_conv_bn_relu("L1", c, 128, rng, role="first", scheme=scheme)
              + _conv_bn_relu("L2", 128, 128, rng, pool=True, scheme=scheme)
              + _conv_bn_relu("L3", 128, 256, rng, scheme=scheme)
              + _conv_bn_relu("L4", 256, 256, rng, pool=True, scheme=scheme)
              + _conv_bn_relu("L5", 256, 256, rng, scheme=scheme)
              + _conv_bn_relu("L6", 256, 256, rng, pool=True, scheme=scheme)
              + [Flatten("flat"),
                 Dense("L7", 256 * (h // 8) * (w // 8), 1024, rng, scheme=scheme),
                 BatchNorm("L7.bn", 1024), ReLU("L7.relu"),
                 Dense("L8", 1024, 1024, rng, scheme=scheme), BatchNorm("L8.bn", 1024),
                 ReLU("L8.relu"),
                 Dense("L9", 1024, n_classes, rng, role="last", scheme=scheme),
                 BatchNorm("L9.bn", n_classes)])
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
