"""Workloads: the layer geometry of the models the paper maps onto the macro, defined once.

``imcsim.energy`` counts the events of these layers' training MVMs; ``imcsim.training.models``
builds the trainable models from the same specs.
"""
from __future__ import annotations

from dataclasses import dataclass


def _check_pos_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a model: a 3x3 'same' stride-1 convolution or a dense layer.

    - height, width : input (= output) spatial size of a conv; 1 for dense layers.
    - pool_after : a 2x2 max-pool follows the layer (its output gradient is then at most 1/4
      non-zero).
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    height: int = 1
    width: int = 1
    pool_after: bool = False

    def __post_init__(self):
        if self.kind not in ("conv", "dense"):
            raise ValueError(f"kind: must be 'conv' or 'dense', got {self.kind!r}")
        for name in ("in_channels", "out_channels", "height", "width"):
            _check_pos_int(name, getattr(self, name))
        if self.kind == "dense" and (self.height, self.width) != (1, 1):
            raise ValueError("height, width: must be 1 for a dense layer")

    def macs(self, batch: int) -> int:
        """MACs of one training MVM (forward = backward = update) at this batch size."""
        if self.kind == "conv":
            return batch * self.height * self.width * 9 * self.in_channels * self.out_channels
        return batch * self.in_channels * self.out_channels


def vgg_lite_layers() -> list[LayerSpec]:
    """VGG-lite of Table I on 32x32x3 CIFAR-10 images."""
    return [
        LayerSpec("L1", "conv", 3, 128, 32, 32),
        LayerSpec("L2", "conv", 128, 128, 32, 32, pool_after=True),
        LayerSpec("L3", "conv", 128, 256, 16, 16),
        LayerSpec("L4", "conv", 256, 256, 16, 16, pool_after=True),
        LayerSpec("L5", "conv", 256, 256, 8, 8),
        LayerSpec("L6", "conv", 256, 256, 8, 8, pool_after=True),
        LayerSpec("L7", "dense", 4 * 4 * 256, 1024),
        LayerSpec("L8", "dense", 1024, 1024),
        LayerSpec("L9", "dense", 1024, 10),
    ]
