"""Datasets by name (``--data``): CIFAR, the MNIST family and image folders, with their splits."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alexnet.errors import InputError
from alexnet.seeding import TEST_SPLIT_SEED

if TYPE_CHECKING:  # NumPy is imported when data is loaded, not when the CLI lists dataset names
    from alexnet.data.imageset import Dataset, ImageSet
    from alexnet.modelcard import ModelCard

FOLDER = "folder:"  # --data folder:PATH: an image folder, one sub-folder per class or class-named files


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset ``--data`` can name: its loader, imported on first use (``module.function(name, root, *,
    allow_download)``), the shape of every image it returns, (channels, height, width) as stored (the loader
    checks its files against it), and a line for the help."""

    name: str
    module: str
    function: str
    shape: tuple[int, int, int]
    description: str


_CIFAR, _IDX = ("alexnet.data.cifar", "load_cifar"), ("alexnet.data.mnist", "load_mnist_family")  # loaders
_RGB32, _GREY28 = (3, 32, 32), (1, 28, 28)  # (channels, height, width)

# The one list of named datasets: adding one is a line here and a loader (see README "Extending").
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("cifar10", *_CIFAR, _RGB32, "CIFAR-10: 60,000 images, 10 classes"),
        DatasetSpec("cifar100", *_CIFAR, _RGB32, "CIFAR-100: 60,000 images, 100 classes"),
        DatasetSpec("cifar100-coarse", *_CIFAR, _RGB32, "CIFAR-100 by its 20 superclasses"),
        DatasetSpec("mnist", *_IDX, _GREY28, "MNIST: 70,000 handwritten digits"),
        DatasetSpec("fashion-mnist", *_IDX, _GREY28, "Fashion-MNIST: 70,000 clothing images"),
        DatasetSpec("kmnist", *_IDX, _GREY28, "Kuzushiji-MNIST: 70,000 cursive Japanese characters"),
    )
}


def dataset_names() -> str:
    """The names ``--data`` takes, for help and error messages."""
    return ", ".join(DATASETS) + f" or {FOLDER}PATH"


def shape_text(shape: tuple[int, ...]) -> str:
    """An image shape as help and error messages write it: ``3x32x32``, ``28x28``."""
    return "x".join(map(str, shape))


def dataset_help() -> str:
    """Each name ``--data`` takes with its line and image shape, for ``alexnet data``'s help."""
    named = [f"{s.name} ({s.description}; {shape_text(s.shape)})" for s in DATASETS.values()]
    return "; ".join(named) + f"; or {FOLDER}PATH, an image folder"


def default_root() -> Path:
    """``$ALEXNET_DATA``, else ``~/.cache/alexnet/data``."""
    return Path(os.environ.get("ALEXNET_DATA") or Path.home() / ".cache" / "alexnet" / "data")


def load_splits(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    train_fraction: float = 1.0,
    val_fraction: float = 0.0,
    seed: int = 0,
    test_seed: int = TEST_SPLIT_SEED,
    storage_size: int | None = None,
    allow_download: bool = True,
) -> Dataset:
    """Find (or download) dataset ``name`` under ``root`` and return its splits.

    ``val_fraction`` holds a stratified validation split out of the training images; then a stratified
    ``train_fraction`` of the rest is kept for training (both seeded by ``seed``). ``storage_size`` and
    ``test_seed`` apply to image folders: the side of the decoded, cached images (None:
    ``folder.natural_size``), and the seed of the test split held out of a folder with no ``test/``.
    """
    from alexnet.data.imageset import split_train

    root = Path(root) if root is not None else default_root()
    if name.startswith(FOLDER):
        from alexnet.data.folder import load_folder

        folder = Path(name.removeprefix(FOLDER)).expanduser()
        dataset = load_folder(folder, root, storage_size=storage_size, test_seed=test_seed)
    elif (spec := DATASETS.get(name)) is not None:
        loader = getattr(importlib.import_module(spec.module), spec.function)
        dataset = loader(name, root, allow_download=allow_download)
    else:
        raise InputError(f"unknown dataset {name!r}; known datasets: {dataset_names()}")
    return split_train(dataset, train_fraction=train_fraction, val_fraction=val_fraction, seed=seed)


def load_trained_data(card: ModelCard) -> Dataset:
    """The dataset and splits a model was trained on, as its card names them; never downloaded (a model
    shipped without its data raises ``InputError``)."""
    if card.data is None:
        raise InputError(f"the model card of {card.model} names no dataset")
    spec = card.data
    return load_splits(
        spec.name, spec.root, train_fraction=spec.train_fraction, val_fraction=spec.val_fraction, seed=spec.seed,
        test_seed=spec.test_seed, storage_size=card.preprocess.storage_size, allow_download=False,
    )  # fmt: skip


def load_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", **kwargs) -> ImageSet:
    """One split (``train``, ``val`` or ``test``) of dataset ``name``; keyword arguments as ``load_splits``."""
    return load_splits(name, root, **kwargs).split(split)
