"""``alexnet_cifar``: an AlexNet-style network for native 32x32 and 28x28 images."""

from __future__ import annotations

from collections.abc import Sequence

from alexnet.models.plan import GELU, Architecture, BatchNorm, Conv, Layer, Linear, MaxPool, ReLU, Scale, mlp_head
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


@register(
    "alexnet_cifar_fast",
    image_size=32,
    description="Plain conv/BN/ReLU/pool stack with a whitening stem for 32x32 images: CIFAR-10 at airbench speed",
)
def alexnet_cifar_fast(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    dropout: float = 0.0,
    hidden: Sequence[int] = (),
    widths: Sequence[int] = (64, 256, 256),
    block_convs: int = 2,
    stem_kernel: int = 2,
    stem_stride: int = 1,
    logit_scale: float = 1 / 9,
    activation: str = "relu",
) -> Architecture:
    """The AlexNet recipe (convolutions, normalisation, ReLU, max-pooling, a linear head; no residual
    connections) in the shape of airbench94, the network behind the CIFAR-10 speed record.

    ========  =========================================================  ==========  ==========
    layer     what (default widths)                                      out @32     out @28
    ========  =========================================================  ==========  ==========
    stem      2 C k² x k x k conv (k = 2, no padding), ReLU: meant to be     24 x 31²    8 x 27²
              initialised to whiten image patches (``whiten: true``)
    block1    64 x 3x3 conv, max-pool 2, BN, ReLU, 64 x 3x3 conv, BN, ReLU   64 x 15²    64 x 13²
    block2    256, same                                                   256 x 7²    256 x 6²
    block3    256, same                                                   256 x 3²    256 x 3²
    pool      max-pool 3/3 (global at 32 and 28 px)                       256 x 1²    256 x 1²
    fc        [dropout, hidden Linear, ReLU]..., Linear (no bias), x 1/9  num_classes num_classes
    ========  =========================================================  ==========  ==========

    About 118 M multiply-accumulates per 32x32 image, 1.97 M parameters at 10 classes. Each block pools
    right after its first conv, so the second conv and BatchNorm run on a quarter of the pixels. ``widths``
    gives one width per block; each block halves the map and the last max-pool needs 3 px, so three blocks
    fit from 25 px, four from 49 (at 64 px the maps are 63, 31, 15, 7 and 3 px). Convs
    start as partial identities (``init="dirac"``). The fixed logit scale keeps the output layer's steps in
    proportion to the rest at the recipe's learning rate. ``activation="gelu"`` swaps every ReLU for
    airbench's GELU. ``stem_stride=2`` halves the stem's map, so photos of twice the side cost the later
    blocks what photos of the side did (104-px crops of 128-px photos: 0.73x the multiply-adds of 64-px crops).
    ``block_convs`` sets the convolutions in each block: the first pools, each further one (conv, BN, ReLU, a
    partial identity at first) keeps the pooled map; 3 is airbench96's depth without its residual connection.
    """
    if not widths:
        raise ValueError("widths needs one width per block, at least one")
    if not isinstance(block_convs, int) or block_convs < 1:
        raise ValueError(f"block_convs must be a whole number, at least 1, not {block_convs!r}")
    if activation not in ("relu", "gelu"):
        raise ValueError(f"activation must be relu or gelu, not {activation!r}")
    act = ReLU if activation == "relu" else GELU
    stem = 2 * in_channels * stem_kernel**2
    layers: list[Layer] = [Conv(in_channels, stem, stem_kernel, stride=stem_stride, bias=True), act()]
    width = stem
    for out in widths:
        layers += [Conv(width, out, 3, padding=1, bias=False), MaxPool(2, 2), BatchNorm(out), act()]
        for _ in range(block_convs - 1):
            layers += [Conv(out, out, 3, padding=1, bias=False), BatchNorm(out), act()]
        width = out
    layers.append(MaxPool(3, 3))
    head = mlp_head(width, hidden, num_classes, dropout, dropout_first=True)
    head = (*head[:-1], Linear(head[-1].in_features, num_classes, bias=False), Scale(logit_scale))
    return Architecture(tuple(layers), 1, head, init="dirac")
