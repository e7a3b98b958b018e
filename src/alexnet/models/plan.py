"""Architectures as data: the layer plans every model is built from, with shape arithmetic in plain Python.

A plan names each layer with its hyper-parameters, in torchvision's order. ``alexnet.models.build`` turns
a plan into ``nn.Module``s; ``alexnet.models.summary`` reads shapes, parameter counts and MACs straight
from it. Nothing here imports torch, so ``alexnet models`` and ``alexnet summary`` start in a fraction of
the 1.4 s that importing torch costs on a 2-core machine. The shape rules are torch's own (floor division,
no ``ceil_mode``); ``tests/models/test_plan.py`` checks every model's plan against a real forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Shape = tuple[int, ...]  # one image, without the batch axis: (C, H, W) or (features,)
Init = Literal["torch", "kaiming", "paper", "vgg", "dirac"]


class ShapeError(ValueError):
    """The input is too small for a layer (torch would raise a RuntimeError in the forward pass)."""


def _window(side: int, kernel: int, stride: int, padding: int, what: str) -> int:
    padded = side + 2 * padding
    if padded < kernel:
        raise ShapeError(f"{what}: a {side}-px map padded by {padding} is smaller than its {kernel}x{kernel} window")
    return (padded - kernel) // stride + 1


@dataclass(frozen=True)
class Conv:
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = True
    kind = "Conv2d"

    @property
    def params(self) -> int:
        weight = self.out_channels * (self.in_channels // self.groups) * self.kernel**2
        return weight + (self.out_channels if self.bias else 0)

    def output(self, shape: Shape) -> Shape:
        _, h, w = shape
        side = lambda s: _window(s, self.kernel, self.stride, self.padding, "conv")  # noqa: E731
        return (self.out_channels, side(h), side(w))

    def macs(self, output: Shape) -> int:
        per_output = (self.in_channels // self.groups) * self.kernel**2
        return _numel(output) * per_output


@dataclass(frozen=True)
class MaxPool:
    kernel: int
    stride: int
    padding: int = 0
    kind = "MaxPool2d"
    params = 0

    def output(self, shape: Shape) -> Shape:
        c, h, w = shape
        side = lambda s: _window(s, self.kernel, self.stride, self.padding, "max-pool")  # noqa: E731
        return (c, side(h), side(w))


@dataclass(frozen=True)
class BatchNorm:
    channels: int
    kind = "BatchNorm2d"

    @property
    def params(self) -> int:
        return 2 * self.channels  # weight and bias


@dataclass(frozen=True)
class ReLU:
    kind = "ReLU"
    params = 0


@dataclass(frozen=True)
class GELU:
    """The smooth ReLU (x times the normal CDF of x); airbench's activation."""

    kind = "GELU"
    params = 0


@dataclass(frozen=True)
class LRN:
    """Local response normalisation with ``alpha`` in the 2012 paper's convention (see ``LocalResponseNorm``)."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0
    groups: int = 1
    kind = "LocalResponseNorm"
    params = 0


@dataclass(frozen=True)
class Dropout:
    p: float
    kind = "Dropout"
    params = 0


@dataclass(frozen=True)
class Linear:
    in_features: int
    out_features: int
    bias: bool = True
    kind = "Linear"

    @property
    def params(self) -> int:
        return self.out_features * self.in_features + (self.out_features if self.bias else 0)

    def output(self, shape: Shape) -> Shape:
        return (self.out_features,)

    def macs(self, output: Shape) -> int:
        return self.out_features * self.in_features


@dataclass(frozen=True)
class Scale:
    """Multiplies its input by a constant (no parameters): a fixed temperature on the logits."""

    factor: float
    kind = "Scale"
    params = 0


Layer = Conv | MaxPool | BatchNorm | ReLU | GELU | LRN | Dropout | Linear | Scale


@dataclass(frozen=True)
class Architecture:
    """``features`` -> adaptive average pool to ``pool_size`` -> flatten -> ``classifier``."""

    features: tuple[Layer, ...]
    pool_size: int
    classifier: tuple[Layer, ...]
    init: Init = "torch"

    @property
    def params(self) -> int:
        """Parameters as torchvision counts them (no BatchNorm running statistics)."""
        return sum(layer.params for layer in (*self.features, *self.classifier))

    @property
    def statistics(self) -> int:
        """BatchNorm running means and variances: Keras's non-trainable "moving" weights."""
        return sum(2 * layer.channels for layer in self.features if isinstance(layer, BatchNorm))

    @property
    def num_classes(self) -> int:
        return next(layer for layer in reversed(self.classifier) if isinstance(layer, Linear)).out_features

    @property
    def first_conv(self) -> str:
        """``state_dict`` prefix of the first convolution (``features.0``): whitened, or folded for grey input."""
        return next(f"features.{i}" for i, layer in enumerate(self.features) if isinstance(layer, Conv))

    @property
    def last_conv(self) -> str:
        """``state_dict`` prefix of the last convolution: where Grad-CAM looks."""
        last = max(i for i, layer in enumerate(self.features) if isinstance(layer, Conv))
        return f"features.{last}"

    @property
    def head(self) -> str:
        """``state_dict`` prefix of the output layer (``classifier.6``): replaced when the classes change."""
        last = max(i for i, layer in enumerate(self.classifier) if isinstance(layer, Linear))
        return f"classifier.{last}"


@dataclass(frozen=True)
class LayerRow:
    """One leaf module of a forward pass, named by its ``state_dict`` prefix (``features.0``)."""

    name: str
    kind: str
    output_shape: Shape
    params: int  # parameters plus BatchNorm running statistics, as Keras counts them
    macs: int  # multiply-accumulates per image (convolutions and Linear layers)


def _numel(shape: Shape) -> int:
    out = 1
    for side in shape:
        out *= side
    return out


def _step(layer: Layer, shape: Shape) -> Shape:
    output = getattr(layer, "output", None)
    return output(shape) if output else shape


def forward_shapes(arch: Architecture, input_shape: Shape) -> list[LayerRow]:
    """Every leaf module's output for one image of ``input_shape`` (C, H, W), in forward order.

    Raises ``ShapeError`` where a window no longer fits the map, as torch's forward would.
    """
    if input_shape[0] != arch.features[0].in_channels:
        raise ShapeError(f"the model takes {arch.features[0].in_channels} channels, not {input_shape[0]}")
    rows: list[LayerRow] = []
    shape = tuple(input_shape)
    for i, layer in enumerate(arch.features):
        shape = _step(layer, shape)
        rows.append(_row(f"features.{i}", layer, shape))
    shape = (shape[0], arch.pool_size, arch.pool_size)
    rows.append(LayerRow("avgpool", "AdaptiveAvgPool2d", shape, 0, 0))
    shape = (_numel(shape),)
    for i, layer in enumerate(arch.classifier):
        shape = _step(layer, shape)
        rows.append(_row(f"classifier.{i}", layer, shape))
    return rows


def _row(name: str, layer: Layer, shape: Shape) -> LayerRow:
    statistics = 2 * layer.channels if isinstance(layer, BatchNorm) else 0
    macs = layer.macs(shape) if isinstance(layer, Conv | Linear) else 0
    return LayerRow(name, layer.kind, shape, layer.params + statistics, macs)


def fits(arch: Architecture, input_shape: Shape) -> bool:
    """Whether the architecture accepts one image of ``input_shape`` (C, H, W)."""
    try:
        forward_shapes(arch, input_shape)
    except ShapeError:
        return False
    return True


def smallest_input_size(arch: Architecture, *, largest: int = 4096) -> int:
    """The smallest square side the architecture accepts; valid sides are upward-closed, so bisect."""
    channels = arch.features[0].in_channels
    if not fits(arch, (channels, largest, largest)):
        raise ValueError(f"model takes no input up to {largest} px")
    low, high = 0, largest  # low fails (or is 0), high fits
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(arch, (channels, mid, mid)) else (mid, high)
    return high


def mlp_head(
    in_features: int, hidden: Sequence[int], num_classes: int, dropout: float, *, dropout_first: bool
) -> tuple[Layer, ...]:
    """The fully connected classifier: one block per hidden width, then the output Linear.

    ``dropout_first`` gives AlexNet's block order (Dropout, Linear, ReLU: keys ``classifier.1/4/6``);
    otherwise VGG's (Linear, ReLU, Dropout: keys ``classifier.0/3/6``). With no hidden layer the dropout goes
    right before the output layer (timm's ``drop_rate``), and only when it is above 0, so that a head of one
    Linear keeps the key ``classifier.0``.
    """
    layers: list[Layer] = []
    width = in_features
    for out in hidden:
        block = [Linear(width, out), ReLU()]
        layers += [Dropout(dropout), *block] if dropout_first else [*block, Dropout(dropout)]
        width = out
    if not hidden and dropout > 0:
        layers.append(Dropout(dropout))
    layers.append(Linear(width, num_classes))
    return tuple(layers)
