"""Datasets by name (``--data``): CIFAR, the MNIST family and image folders, with their splits."""

from __future__ import annotations

import os
from pathlib import Path

from alexnet.data.imageset import Dataset, ImageSet, split_train
from alexnet.errors import InputError

DATASETS = ("cifar10", "cifar100", "cifar100-coarse", "mnist", "fashion-mnist", "kmnist", "folder:PATH")


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
    storage_size: int = 256,
    allow_download: bool = True,
) -> Dataset:
    """Find (or download) dataset ``name`` under ``root`` and return its splits.

    ``val_fraction`` holds a stratified validation split out of the training images; then a stratified
    ``train_fraction`` of the rest is kept for training (both seeded by ``seed``). ``storage_size``
    applies to image folders: the side of the decoded, cached images.
    """
    root = Path(root) if root is not None else default_root()
    if name.startswith("folder:"):
        from alexnet.data.folder import load_folder

        folder = Path(name.removeprefix("folder:")).expanduser()
        dataset = load_folder(folder, root, storage_size=storage_size, seed=seed)
    elif name.startswith("cifar"):
        from alexnet.data.cifar import FORMATS, load_cifar

        if name not in FORMATS:
            raise InputError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
        dataset = load_cifar(name, root, allow_download=allow_download)
    elif name in ("mnist", "fashion-mnist", "kmnist"):
        from alexnet.data.mnist import load_mnist_family

        dataset = load_mnist_family(name, root, allow_download=allow_download)
    else:
        raise InputError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return split_train(dataset, train_fraction=train_fraction, val_fraction=val_fraction, seed=seed)


def load_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", **kwargs) -> ImageSet:
    """One split (``train``, ``val`` or ``test``) of dataset ``name``; keyword arguments as ``load_splits``."""
    return load_splits(name, root, **kwargs).split(split)
