"""Exported model directories whose outputs are known, for evaluation and prediction tests."""

from __future__ import annotations

from pathlib import Path

import torch

from alexnet.modelcard import DataSpec, InputSpec, ModelCard
from alexnet.modeldir import save_model_dir
from alexnet.models import get_model

KWARGS = {"num_classes": 10, "in_channels": 1, "dropout": 0.0, "hidden": [8], "widths": [4, 4, 4, 4, 4]}
# Class scores every image gets: class 7 first, then 2, 9, 0, 4, ...
BIAS = torch.tensor([0.5, -1.0, 2.0, -2.0, 0.2, -3.0, -0.5, 3.0, -1.5, 1.0])
MNIST_CLASSES = [str(i) for i in range(10)]


def constant_model() -> torch.nn.Module:
    """alexnet_cifar whose output layer ignores its input: logits are ``BIAS`` for every image."""
    torch.manual_seed(0)
    model = get_model("alexnet_cifar", **KWARGS)
    with torch.no_grad():
        model.classifier[-1].weight.zero_()
        model.classifier[-1].bias.copy_(BIAS)
    return model.eval()


def biased_model(top: int, second: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """``constant_model`` whose logits are 3 for class ``top``, 2.5 for ``second`` and 0 elsewhere, and those logits."""
    model = constant_model()
    logits = torch.zeros(10)
    logits[top], logits[second] = 3.0, 2.5
    with torch.no_grad():
        model.classifier[-1].bias.copy_(logits)
    return model, logits


def write_model_dir(
    folder: Path,
    model: torch.nn.Module | None = None,
    *,
    data: str | DataSpec = "mnist",
    augmented: tuple[str, ...] | None = None,
) -> Path:
    """A model directory as `alexnet train` exports it, for 28-px grey MNIST-format data (``augmented``: what
    its training did to the images, as the card records it)."""
    card = ModelCard(
        model="alexnet_cifar",
        model_kwargs=KWARGS,
        classes=tuple(MNIST_CLASSES),
        preprocess=InputSpec(
            image_size=28, channels=1, mean=(0.5,), std=(0.25,), storage_size=28, padding=2, augmented=augmented
        ),
        data=DataSpec(data) if isinstance(data, str) else data,
    )
    save_model_dir(model if model is not None else constant_model(), folder, card)
    return folder


def expected_probabilities() -> torch.Tensor:
    return BIAS.softmax(0)
