"""Pretrained weights for fine-tuning: torchvision's ImageNet checkpoints, local files and our own runs.

``--pretrained imagenet`` takes the checkpoint the model declares (``register(..., weights=...)``) from the
standard cache (``$TORCH_HOME/hub/checkpoints``), downloading it from the official URL when it is missing,
and checks it against the sha256 prefix in its name. ``--pretrained PATH`` takes a torchvision-format
``.pth`` (read with ``weights_only=True``), a ``.safetensors`` file, or a run / exported model directory.
Loading goes through ``alexnet.models.weights.load_weights`` with a new head (a new task's classes, as
timm's ``reset_classifier``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alexnet.data.download import download, file_digest
from alexnet.errors import InputError
from alexnet.modelcard import ModelCard
from alexnet.modeldir import WEIGHTS_FILE, check_one_model, read_safetensors, read_torch_weights
from alexnet.models import model_spec
from alexnet.models.registry import published_weights

TAG = "imagenet"  # --pretrained imagenet: the tag models declare their ImageNet checkpoint under


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


def imagenet_checkpoint(model: str, *, allow_download: bool = True) -> Path:
    """The ImageNet file ``model`` declares, in the hub cache, verified (and downloaded when missing)."""
    weights = model_spec(model).weights.get(TAG)
    if weights is None:
        known = ", ".join(published_weights(TAG))
        raise InputError(f"no ImageNet weights for {model!r}; torchvision publishes them for {known}")
    path = hub_checkpoint_dir() / weights.file_name
    expected = weights.sha256_prefix
    if path.exists():
        actual = file_digest(path, "sha256")
        if not actual.startswith(expected):
            raise InputError(
                f"{path}: sha256 {actual[:8]}... does not match the {expected} its name promises; delete it, or put "
                f"the official {weights.url} there"
            )
        return path
    if not allow_download:
        raise InputError(f"{path}: not in the cache; put the official {weights.url} there")
    return download([weights.url], path, expected, algorithm="sha256")


def load_pretrained(source: str, model: str) -> Pretrained:
    """The weights ``source`` names (``imagenet`` or a path) for architecture ``model``."""
    if source == TAG:
        path = imagenet_checkpoint(model)
        w = model_spec(model).weights[TAG]
        preprocess = {"image_size": w.crop_size, "mean": w.mean, "std": w.std, "storage_size": w.resize_size}
        return Pretrained(read_torch_weights(path), f"imagenet ({path.name})", preprocess)
    path = Path(source).expanduser()
    if path.is_dir():
        check_one_model(path)
        card = ModelCard.read(path)
        if card.model != model:
            raise InputError(f"{path}: holds a {card.model} model, not {model}")
        p = card.preprocess
        preprocess = {
            "image_size": p.image_size,
            "mean": list(p.mean),
            "std": list(p.std),
            "storage_size": p.storage_size,
        }
        return Pretrained(read_safetensors(path / WEIGHTS_FILE), str(path), preprocess)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory (--pretrained takes imagenet or a path)")
    if path.suffix == ".safetensors":
        return Pretrained(read_safetensors(path), str(path))
    return Pretrained(read_torch_weights(path), str(path))
