"""Weights as data, and the one way they are loaded into a model.

Published weights are declared beside their builder (``register(..., weights={...})``), as torchvision
keeps a weights record in the model's own file: the file and its hash, the classes, the preprocessing and
the published accuracy. ``load_weights`` is the only place a state dict enters a model: it rewrites the
state dict first (folds or spreads the first conv for other input channels; drops a head that is to be
replaced), then calls ``load_state_dict`` once and reports every missing, unexpected or mis-shaped key in
one format. The first conv and the head are the names the model's plan declares, never searched for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alexnet.errors import InputError

if TYPE_CHECKING:
    import torch

    from alexnet.models.layers import ConvNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HASH = re.compile(r"-([a-f0-9]{8,})\.")


@dataclass(frozen=True)
class Weights:
    """One published checkpoint of a registered architecture."""

    url: str  # official download address; its file name carries the sha256 prefix (torchvision's convention)
    num_classes: int
    mean: tuple[float, ...]  # per-channel normalisation the weights were trained with (0-1 pixels)
    std: tuple[float, ...]
    resize_size: int  # short side, px, before the centre crop at evaluation
    crop_size: int  # model input side, px
    min_size: int  # smallest input side the architecture takes, px
    top1: float  # published top-1 accuracy, %
    dataset: str = "ImageNet-1k"

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        return hash_prefix(self.file_name)


def hash_prefix(file_name: str) -> str | None:
    """The sha256 prefix a torchvision file name carries (``alexnet-owt-7be5be79.pth`` -> ``7be5be79``)."""
    match = _HASH.search(file_name)
    return match.group(1) if match else None


def torchvision_imagenet(file_name: str, top1: float, *, min_size: int) -> Weights:
    """A torchvision ImageNet-1k checkpoint: evaluated as torchvision evaluates it (resize 256, crop 224)."""
    return Weights(
        url=f"https://download.pytorch.org/models/{file_name}", num_classes=1000, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, resize_size=256, crop_size=224, min_size=min_size, top1=top1,
    )  # fmt: skip


@dataclass(frozen=True)
class Loaded:
    """What ``load_weights`` did: parameter names taken from the weights and those left fresh (a new head)."""

    loaded: tuple[str, ...]
    fresh: tuple[str, ...]


def _layer(key: str) -> str:
    return key.rsplit(".", 1)[0]


def adapt_first_conv(state: dict[str, torch.Tensor], model: ConvNet) -> dict[str, torch.Tensor]:
    """Fit the first conv's weights to the model's input channels.

    3 -> 1 folds: the sum over RGB, so a grey image x gives exactly the response the RGB network gives
    to (x, x, x). 1 -> 3 spreads: each channel gets a third, so a grey image shown as RGB responds as
    before.
    """
    key = f"{model.first_conv_name}.weight"
    want = model.get_submodule(model.first_conv_name).in_channels
    weight = state.get(key)
    if weight is None or weight.ndim != 4 or weight.shape[1] == want:
        return state
    have = weight.shape[1]
    if want == 1:
        adapted = weight.sum(1, keepdim=True)
    elif have == 1:
        adapted = weight.expand(-1, want, -1, -1) / want
    else:
        raise InputError(f"first conv takes {have} channels in the weights, {want} in the model; cannot adapt")
    return {**state, key: adapted.contiguous()}


def _replaced(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], head: str) -> set[str]:
    """Classifier layers a new task replaces: the output layer, every hidden layer whose shapes changed
    (``--hidden 4096,1024``) and any the weights have but the model does not."""

    def fits(layer: str) -> bool:  # the model has the layer and every one of its tensors fits
        tensors = {k: v for k, v in target.items() if _layer(k) == layer}
        return bool(tensors) and all(k in state and state[k].shape == v.shape for k, v in tensors.items())

    layers = {_layer(k) for k in (*target, *state) if k.startswith("classifier.")}
    return {layer for layer in layers if layer == head or not fits(layer)}


def load_weights(model: ConvNet, state: dict[str, torch.Tensor], source: str, *, new_head: bool = False) -> Loaded:
    """Load ``state`` into ``model``; any key that does not fit raises ``InputError`` naming ``source`` and the
    first bad keys. With ``new_head`` the classifier layers a new task replaces (see ``_replaced``) stay
    fresh; everything else must fit exactly."""
    import torch

    state = adapt_first_conv(state, model)
    target = model.state_dict()
    replaced = _replaced(state, target, model.head_name) if new_head else set()
    kept = {k: v for k, v in state.items() if _layer(k) not in replaced}
    wrong = [f"{k} {tuple(v.shape)} (model: {tuple(target[k].shape)})"
             for k, v in kept.items() if k in target and v.shape != target[k].shape]  # fmt: skip
    # load_state_dict refuses mis-shaped tensors outright: with any, the other problems are counted here.
    missing = [k for k in target if k not in kept and _layer(k) not in replaced]
    unexpected = [k for k in kept if k not in target]
    if not wrong:
        with torch.no_grad():
            result = model.load_state_dict(kept, strict=False)
        missing = [k for k in result.missing_keys if _layer(k) not in replaced]
        unexpected = list(result.unexpected_keys)
    problems = [
        f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    ]
    if problems:
        raise InputError(f"{source}: weights do not fit the model: {'; '.join(problems)}")
    names = [n for n, _ in model.named_parameters()]
    return Loaded(tuple(n for n in names if n in kept), tuple(n for n in names if n not in kept))
