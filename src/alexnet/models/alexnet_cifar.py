"""``alexnet_cifar``: an AlexNet-style network for native 32x32 and 28x28 images."""

from __future__ import annotations

from collections.abc import Sequence

from alexnet.models.plan import Architecture, BatchNorm, Conv, Layer, MaxPool, ReLU, mlp_head
from alexnet.models.registry import register


@register(
    "alexnet_cifar", image_size=32, description="AlexNet-style network for native 32x32 / 28x28 images, fast on CPUs"
)
def alexnet_cifar(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    dropout: float = 0.5,
    hidden: Sequence[int] = (512,),
    widths: Sequence[int] = (64, 128, 256, 256, 256),
) -> Architecture:
    """AlexNet's shape (five convs, overlapping max-pools after conv1, conv2 and conv5, a dropout FC
    head) scaled to small images, with the choices that buy accuracy per second of CPU time.

    =======  ===============================================  ==========  ==========
    layer    what (default widths)                            out @32     out @28
    =======  ===============================================  ==========  ==========
    conv1    64 x 3x3 pad 1, BN, ReLU, max-pool 3/2 pad 1     64 x 16²    64 x 14²
    conv2    128 x 3x3 pad 1, BN, ReLU, max-pool 3/2 pad 1    128 x 8²    128 x 7²
    conv3    256 x 3x3 pad 1, BN, ReLU                        256 x 8²    256 x 7²
    conv4    256 x 3x3 pad 1, BN, ReLU                        256 x 8²    256 x 7²
    conv5    256 x 3x3 pad 1, BN, ReLU, max-pool 3/2 pad 1    256 x 4²    256 x 4²
    avgpool  adaptive 2x2                                     256 x 2²    256 x 2²
    fc6      dropout, 1024 -> 512, ReLU                       512         512
    fc7      dropout, 512 -> num_classes                      num_classes num_classes
    =======  ===============================================  ==========  ==========

    About 115 M multiply-accumulates per 32x32 image, 2.1 M parameters at 10 classes.

    Why these choices: 3x3 kernels at stride 1 instead of 11x11 / 4 (a 32-px image has no room for a
    stride-4 stem); BatchNorm instead of LRN (the "normalisation" step, which lets a short schedule
    use a high learning rate); padded 3/2 pools, so 32 and 28 px both reach a 4x4 map; no conv biases
    (BatchNorm's shift replaces them). ``widths`` scales the five convs.
    """
    if len(widths) != 5:
        raise ValueError(f"widths needs five conv widths, got {len(widths)}")
    layers: list[Layer] = []
    width = in_channels
    for i, out in enumerate(widths):
        layers += [Conv(width, out, 3, padding=1, bias=False), BatchNorm(out), ReLU()]
        if i in (0, 1, 4):
            layers.append(MaxPool(3, 2, padding=1))
        width = out
    head = mlp_head(width * 2 * 2, hidden, num_classes, dropout, dropout_first=True)
    return Architecture(tuple(layers), 2, head, init="kaiming")
