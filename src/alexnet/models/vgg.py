"""VGG 11/13/16/19, with and without BatchNorm, in torchvision's layout."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from alexnet.models.plan import Architecture, BatchNorm, Conv, Layer, MaxPool, ReLU, mlp_head
from alexnet.models.registry import register
from alexnet.models.weights import torchvision_imagenet

POOL = None  # marks a 2x2 max-pool in a plan

VGG_PLANS: dict[int, tuple[int | None, ...]] = {
    11: (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    13: (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    16: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL),
    19: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL),
}


def head_pool_size(image_size: int) -> int:
    """Side of the pooled map the classifier reads: torchvision's 7 at 224 px and above, the real map below.

    torchvision always pools to 7x7. At 32 px the features end in a 1x1 map, which that pool would copy
    49 times into a 25,088-wide first Linear (103 M parameters that learn 49 copies of one weight).
    Pooling to the map's own size (``image_size // 32``, at most 7) keeps every weight meaningful:
    512 inputs at 32 px, 2,048 at 64 px, 25,088 at 224 px as published.
    """
    return max(1, min(7, image_size // 32))


def make_features(plan: Sequence[int | None], *, in_channels: int, batch_norm: bool) -> tuple[Layer, ...]:
    """Turn a plan into layers: 3x3 pad-1 conv (+ BatchNorm) + ReLU per width, a 2x2 max-pool per ``POOL``."""
    layers: list[Layer] = []
    width = in_channels
    for step in plan:
        if step is POOL:
            layers.append(MaxPool(2, 2))
            continue
        layers.append(Conv(width, step, 3, padding=1))
        if batch_norm:
            layers.append(BatchNorm(step))
        layers.append(ReLU())
        width = step
    return tuple(layers)


def _vgg(
    plan: Sequence[int | None],
    *,
    batch_norm: bool,
    num_classes: int,
    in_channels: int,
    dropout: float,
    hidden: Sequence[int],
    image_size: int,
) -> Architecture:
    pool = head_pool_size(image_size)
    features = make_features(plan, in_channels=in_channels, batch_norm=batch_norm)
    head = mlp_head(512 * pool * pool, hidden, num_classes, dropout, dropout_first=False)
    return Architecture(features, pool, head, init="vgg")


# torchvision's ImageNet checkpoints (the file name carries the sha256 prefix) and their published top-1.
IMAGENET_FILES = {
    "vgg11": ("vgg11-8a719046.pth", 69.020), "vgg11_bn": ("vgg11_bn-6002323d.pth", 70.370),
    "vgg13": ("vgg13-19584684.pth", 69.928), "vgg13_bn": ("vgg13_bn-abd245e5.pth", 71.586),
    "vgg16": ("vgg16-397923af.pth", 71.592), "vgg16_bn": ("vgg16_bn-6c64b313.pth", 73.360),
    "vgg19": ("vgg19-dcbb9e9d.pth", 72.376), "vgg19_bn": ("vgg19_bn-c79401a0.pth", 74.218),
}  # fmt: skip


def _register_vgg(depth: int, *, batch_norm: bool) -> Callable[..., Architecture]:
    name = f"vgg{depth}{'_bn' if batch_norm else ''}"
    what = f"VGG-{depth}{' with BatchNorm' if batch_norm else ''} (torchvision layout; head sized for the input)"
    file_name, top1 = IMAGENET_FILES[name]
    imagenet = torchvision_imagenet(file_name, top1, min_size=32)

    @register(name, image_size=224, description=what, weights={"imagenet": imagenet})
    def build(
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.5,
        hidden: Sequence[int] = (4096, 4096),
        image_size: int = 224,
    ) -> Architecture:
        return _vgg(
            VGG_PLANS[depth],
            batch_norm=batch_norm,
            num_classes=num_classes,
            in_channels=in_channels,
            dropout=dropout,
            hidden=hidden,
            image_size=image_size,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"""{what}.

    Keys and shapes equal torchvision's ``{name}`` at ``image_size >= 224``; below that the classifier
    reads the real feature map (see ``head_pool_size``). Smallest input: 32 px.
    """
    return build


vgg11 = _register_vgg(11, batch_norm=False)
vgg11_bn = _register_vgg(11, batch_norm=True)
vgg13 = _register_vgg(13, batch_norm=False)
vgg13_bn = _register_vgg(13, batch_norm=True)
vgg16 = _register_vgg(16, batch_norm=False)
vgg16_bn = _register_vgg(16, batch_norm=True)
vgg19 = _register_vgg(19, batch_norm=False)
vgg19_bn = _register_vgg(19, batch_norm=True)
