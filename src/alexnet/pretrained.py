"""Pretrained weights for fine-tuning: torchvision's ImageNet checkpoints, local files and our own runs.

``--pretrained imagenet`` takes torchvision's published file for the model from the standard cache
(``$TORCH_HOME/hub/checkpoints``), downloading it from the official URL when it is missing, and checks it
against the sha256 prefix in its name. ``--pretrained PATH`` takes a torchvision-format ``.pth`` (read with
``weights_only=True``), a ``.safetensors`` file, or a run / exported model directory.

``transfer`` copies the weights into a freshly built model: every feature layer must fit; hidden classifier
layers whose shapes still fit keep their values; the output layer is always new (a new task's classes, as
timm's ``reset_classifier``), and so is every hidden layer whose shape changed (``--hidden 4096,1024``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet.data.download import download, file_digest
from alexnet.errors import InputError
from alexnet.export import read_model_meta, read_safetensors, read_torch_weights

URL_BASE = "https://download.pytorch.org/models/"
# torchvision's ImageNet checkpoints: file name (its hash part is the sha256 prefix) and published top-1.
IMAGENET: dict[str, tuple[str, float]] = {
    "alexnet": ("alexnet-owt-7be5be79.pth", 56.522),
    "vgg11": ("vgg11-8a719046.pth", 69.020),
    "vgg11_bn": ("vgg11_bn-6002323d.pth", 70.370),
    "vgg13": ("vgg13-19584684.pth", 69.928),
    "vgg13_bn": ("vgg13_bn-abd245e5.pth", 71.586),
    "vgg16": ("vgg16-397923af.pth", 71.592),
    "vgg16_bn": ("vgg16_bn-6c64b313.pth", 73.360),
    "vgg19": ("vgg19-dcbb9e9d.pth", 72.376),
    "vgg19_bn": ("vgg19_bn-c79401a0.pth", 74.218),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Evaluated as torchvision evaluates them: short side resized to 256, centre crop 224.
IMAGENET_PREPROCESS = {"image_size": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "storage_size": 256}
_HASH = re.compile(r"-([a-f0-9]{8,})\.")


@dataclass(frozen=True)
class Pretrained:
    """Weights to start from, with the preprocessing they were trained under when it is known."""

    state: dict[str, torch.Tensor]
    source: str  # what the user named, for messages
    preprocess: dict[str, Any] = field(default_factory=dict)  # image_size, mean, std, storage_size


def hub_checkpoint_dir() -> Path:
    """torch.hub's cache: ``$TORCH_HOME/hub/checkpoints``, ``$XDG_CACHE_HOME/torch/...`` or ``~/.cache/torch/...``."""
    home = os.environ.get("TORCH_HOME")
    if not home:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(cache, "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def hash_prefix(path: Path) -> str | None:
    """The sha256 prefix a torchvision file name carries (``alexnet-owt-7be5be79.pth`` -> ``7be5be79``)."""
    match = _HASH.search(path.name)
    return match.group(1) if match else None


def imagenet_checkpoint(model: str, *, allow_download: bool = True) -> Path:
    """torchvision's ImageNet file for ``model`` in the hub cache, verified (and downloaded when missing)."""
    if model not in IMAGENET:
        raise InputError(f"no ImageNet weights for {model!r}; torchvision publishes them for {', '.join(IMAGENET)}")
    name, _ = IMAGENET[model]
    path = hub_checkpoint_dir() / name
    expected = hash_prefix(path)
    if path.exists():
        actual = file_digest(path, "sha256")
        if not actual.startswith(expected):
            raise InputError(
                f"{path}: sha256 {actual[:8]}... does not match the {expected} its name promises; delete it, or put "
                f"the official {URL_BASE}{name} there"
            )
        return path
    if not allow_download:
        raise InputError(f"{path}: not in the cache; put the official {URL_BASE}{name} there")
    return download([URL_BASE + name], path, expected, algorithm="sha256")


def load_pretrained(source: str, model: str) -> Pretrained:
    """The weights ``source`` names (``imagenet`` or a path) for architecture ``model``."""
    if source == "imagenet":
        path = imagenet_checkpoint(model)
        return Pretrained(read_torch_weights(path), f"imagenet ({path.name})", dict(IMAGENET_PREPROCESS))
    path = Path(source).expanduser()
    if path.is_dir():
        meta = read_model_meta(path)
        if meta["model"] != model:
            raise InputError(f"{path}: holds a {meta['model']} model, not {model}")
        preprocess = {k: meta["preprocess"][k] for k in ("image_size", "mean", "std", "storage_size")}
        return Pretrained(read_safetensors(path / "model.safetensors"), str(path), preprocess)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory (--pretrained takes imagenet or a path)")
    if path.suffix == ".safetensors":
        return Pretrained(read_safetensors(path), str(path))
    return Pretrained(read_torch_weights(path), str(path))


def _first_conv(model: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if isinstance(m, nn.Conv2d))


def adapt_input_channels(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Fit the first conv's weights to the model's input channels.

    3 -> 1 folds: the sum over RGB, so a grey image x gives exactly the response the RGB network gives
    to (x, x, x). 1 -> 3 spreads: each channel gets a third, so a grey image shown as RGB responds as
    before.
    """
    key = f"{_first_conv(model)}.weight"
    want = model.state_dict()[key].shape[1]
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


@dataclass(frozen=True)
class Transfer:
    """What ``transfer`` did: parameter names loaded from the weights and those left fresh (the new head)."""

    loaded: tuple[str, ...]
    fresh: tuple[str, ...]


def transfer(model: nn.Module, pretrained: Pretrained) -> Transfer:
    """Copy ``pretrained`` into ``model``: all feature weights must fit (else ``InputError`` naming the first
    bad keys); hidden classifier layers are taken where their shapes fit; the output layer stays fresh."""
    state = adapt_input_channels(pretrained.state, model)
    target = model.state_dict()
    features = [k for k in target if not k.startswith("classifier.")]
    missing = [k for k in features if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} (model: {tuple(target[k].shape)})" for k in features
             if k in state and state[k].shape != target[k].shape]  # fmt: skip
    unexpected = [k for k in state if k not in target and not k.startswith("classifier.")]
    problems = []
    for what, keys in (("missing", missing), ("wrong shape", wrong), ("unexpected", unexpected)):
        if keys:
            problems.append(f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}")
    if problems:
        raise InputError(f"{pretrained.source}: weights do not fit the model: {'; '.join(problems)}")
    # A classifier layer keeps its pretrained values only if every tensor of it fits.
    layers = {k.rsplit(".", 1)[0] for k in target if k.startswith("classifier.")}
    layers.discard(max(layers, key=lambda layer: int(layer.split(".")[1])))  # the output layer
    fitting = {
        layer for layer in layers
        if all(k in state and state[k].shape == v.shape for k, v in target.items() if k.rsplit(".", 1)[0] == layer)
    }  # fmt: skip
    taken = {k: state[k] for k in target if not k.startswith("classifier.") or k.rsplit(".", 1)[0] in fitting}
    with torch.no_grad():
        for key, value in taken.items():
            if not target[key].is_meta:  # a meta model (shapes only) checks without copying
                target[key].copy_(value)
    names = [n for n, _ in model.named_parameters()]
    return Transfer(tuple(n for n in names if n in taken), tuple(n for n in names if n not in taken))
