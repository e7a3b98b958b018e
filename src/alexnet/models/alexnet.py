"""The AlexNet family: torchvision's ``alexnet``, the 2012 paper's network and a BatchNorm variant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from alexnet.models.plan import LRN, Architecture, BatchNorm, Conv, Layer, MaxPool, ReLU, mlp_head
from alexnet.models.registry import register
from alexnet.models.weights import torchvision_imagenet


@register(
    "alexnet",
    image_size=224,
    description="torchvision's AlexNet (64-192-384-256-256, no LRN); loads its ImageNet weights",
    weights={"imagenet": torchvision_imagenet("alexnet-owt-7be5be79.pth", 56.522, min_size=63)},
)
def alexnet(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.5,
    hidden: Sequence[int] = (4096, 4096),
    init: Literal["torch", "kaiming"] = "torch",
) -> Architecture:
    """torchvision's single-tower AlexNet ("one weird trick", 2014), keys and shapes exactly as published.

    61,100,840 parameters at 1000 classes. ``hidden=(4096, 1024)`` with 10 classes gives the
    9216-4096-1024-10 transfer head (44,428,106 parameters). The 6x6 adaptive pool keeps torchvision's
    9216-wide first Linear at every input size, so the ImageNet checkpoint always fits.
    Smallest input: 63 px.

    ``init="torch"`` keeps PyTorch's default fills, as torchvision does (a model trained from scratch here
    starts where one trained there starts); without BatchNorm they shrink the signal layer by layer and
    the loss sits near ln(num_classes) for the first epochs. ``init="kaiming"`` (``build.init_kaiming``)
    keeps activations at unit scale, so training moves from the first step.
    """
    if init not in ("torch", "kaiming"):
        raise ValueError(f"init must be 'torch' or 'kaiming', not {init!r}")
    features = (
        Conv(in_channels, 64, 11, stride=4, padding=2), ReLU(), MaxPool(3, 2),
        Conv(64, 192, 5, padding=2), ReLU(), MaxPool(3, 2),
        Conv(192, 384, 3, padding=1), ReLU(),
        Conv(384, 256, 3, padding=1), ReLU(),
        Conv(256, 256, 3, padding=1), ReLU(), MaxPool(3, 2),
    )  # fmt: skip
    head = mlp_head(256 * 6 * 6, hidden, num_classes, dropout, dropout_first=True)
    return Architecture(features, 6, head, init=init)


@register(
    "alexnet_paper",
    image_size=227,
    description="the 2012 paper: 96-256-384-384-256, LRN, overlapping pools, two towers",
)
def alexnet_paper(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.5,
    hidden: Sequence[int] = (4096, 4096),
    towers: Literal[1, 2] = 2,
    init: Literal["kaiming", "paper"] = "kaiming",
) -> Architecture:
    """Krizhevsky, Sutskever & Hinton (2012), layer for layer.

    ========  =====================================  ============  ==========
    layer     what                                   output @227   towers=2
    ========  =====================================  ============  ==========
    conv1     96 x 11x11 / 4, ReLU, LRN, pool 3/2    96 x 27x27    across both
    conv2     256 x 5x5 pad 2, ReLU, LRN, pool 3/2   256 x 13x13   grouped 2
    conv3     384 x 3x3 pad 1, ReLU                  384 x 13x13   across both
    conv4     384 x 3x3 pad 1, ReLU                  384 x 13x13   grouped 2
    conv5     256 x 3x3 pad 1, ReLU, pool 3/2        256 x 6x6     grouped 2
    fc6, fc7  dropout 0.5, 4096, ReLU                4096          across both
    fc8       num_classes                            num_classes   across both
    ========  =====================================  ============  ==========

    60,965,224 parameters at 1000 classes with two towers, 62,378,344 with ``towers=1``.

    Input 227 px: the paper says 224, but (224 - 11) / 4 + 1 is not a whole number; 227 gives the
    55x55 conv1 maps the paper reports (the widely known erratum; Caffe's reference model uses 227).

    LRN (size 5, k=2, beta=0.75, alpha=1e-4 in the paper's formula, see ``LocalResponseNorm``) runs per
    tower. ``init="paper"`` gives the paper's initialisation (``build.init_paper``). It is not the default:
    with N(0, 0.01) in all eight layers the signal shrinks layer by layer and, without the paper's
    90-epoch schedule, the loss sits at ln(num_classes) for epochs; He-normal (``build.init_kaiming``) starts
    learning at once and is what reproductions use.
    """
    if towers not in (1, 2):
        raise ValueError(f"towers must be 1 or 2, not {towers}")
    if init not in ("kaiming", "paper"):
        raise ValueError(f"init must be 'kaiming' or 'paper', not {init!r}")
    features = (
        Conv(in_channels, 96, 11, stride=4), ReLU(), LRN(groups=1), MaxPool(3, 2),
        Conv(96, 256, 5, padding=2, groups=towers), ReLU(), LRN(groups=towers), MaxPool(3, 2),
        Conv(256, 384, 3, padding=1), ReLU(),
        Conv(384, 384, 3, padding=1, groups=towers), ReLU(),
        Conv(384, 256, 3, padding=1, groups=towers), ReLU(), MaxPool(3, 2),
    )  # fmt: skip
    head = mlp_head(256 * 6 * 6, hidden, num_classes, dropout, dropout_first=True)
    return Architecture(features, 6, head, init=init)


@register(
    "alexnet_bn",
    image_size=224,
    description="AlexNet with BatchNorm after every conv, no LRN (Keras layout, 6400-4096-4096)",
)
def alexnet_bn(
    *, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, hidden: Sequence[int] = (4096, 4096)
) -> Architecture:
    """AlexNet with BatchNorm, as the Keras tutorials build it for CIFAR-10 and MNIST at 224 px.

    conv1 96 x 11x11 / 4 'valid' (224 -> 54), then 'same' convs 256 x 5x5, 384, 384, 256 x 3x3, each
    conv followed by BatchNorm and ReLU; 3/2 max-pools after conv1, conv2 and conv5 (54 -> 26 -> 12 -> 5);
    flatten 5 x 5 x 256 = 6400, then 4096-4096-N. 46,793,482 parameters for 3 channels and 10 classes as
    Keras counts them (46,790,730 trainable + 2,752 BatchNorm running statistics), 46,770,250 for 1 channel.
    """
    widths = (96, 256, 384, 384, 256)
    kernels = (11, 5, 3, 3, 3)
    layers: list[Layer] = []
    width = in_channels
    for i, (out, kernel) in enumerate(zip(widths, kernels, strict=True)):
        conv = Conv(width, out, kernel, stride=4) if i == 0 else Conv(width, out, kernel, padding=kernel // 2)
        layers += [conv, BatchNorm(out), ReLU()]
        if i in (0, 1, 4):
            layers.append(MaxPool(3, 2))
        width = out
    head = mlp_head(256 * 5 * 5, hidden, num_classes, dropout, dropout_first=True)
    return Architecture(tuple(layers), 5, head, init="kaiming")
