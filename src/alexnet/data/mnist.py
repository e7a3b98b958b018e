"""MNIST, Fashion-MNIST and Kuzushiji-MNIST from IDX files, gzipped or not."""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet.data import datasets
from alexnet.data.download import download
from alexnet.data.imageset import Dataset, ImageSet
from alexnet.errors import InputError, first_line

log = logging.getLogger(__name__)

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class IdxDataset:
    """One MNIST-family dataset: official mirrors, md5 of each official ``.gz``, class names, and
    folders where a system package or torchvision may already have put the files."""

    mirrors: tuple[str, ...]
    md5: dict[str, str]
    classes: tuple[str, ...]
    folders: tuple[str, ...]  # relative to ROOT
    system_folder: str | None = None


SOURCES = {
    "mnist": IdxDataset(
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        md5={
            "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        classes=tuple(str(i) for i in range(10)),
        folders=("mnist", "MNIST/raw"),
    ),
    "fashion-mnist": IdxDataset(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        folders=("fashion-mnist", "FashionMNIST/raw"),
        system_folder="/usr/share/datasets/fashion-mnist",  # Debian's dataset-fashion-mnist
    ),
    "kmnist": IdxDataset(
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        md5={
            "train_images": "bdb82020997e1d708af4cf47b453dcf7",
            "train_labels": "e144d726b3acfaa3e44228e80efcd344",
            "test_images": "5c965bf0a639b31b8f53240b1b52f4d7",
            "test_labels": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        folders=("kmnist", "KMNIST/raw"),
    ),
}


MAX_IDX_BYTES = 2**30  # the largest IDX payload read (the MNIST family's largest is 47 MB)


def read_idx(path: Path, *, expect_dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzip detected by content, not by name), checked against its header.

    The header is read first and the payload streamed: memory is bounded by what the header declares (and
    by ``MAX_IDX_BYTES``), so a small gzip that inflates to gigabytes is refused after a few bytes.
    """
    packed = False
    try:
        with open(path, "rb") as probe:
            packed = probe.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if packed else open(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != 0x08:
                raise InputError(f"{path}: not an IDX file of unsigned bytes (magic {magic.hex() or 'missing'})")
            dims = magic[3]
            if dims != expect_dims:
                raise InputError(f"{path}: has {dims} dimensions, expected {expect_dims}")
            sizes = f.read(4 * dims)
            if len(sizes) < 4 * dims:
                raise InputError(f"{path}: header cut short")
            shape = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(dims))
            size = math.prod(shape)  # Python ints: no overflow
            if size > MAX_IDX_BYTES:
                raise InputError(f"{path}: header declares {shape} = {size:,} bytes, over the {MAX_IDX_BYTES:,} read")
            payload = f.read(size + 1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        what = "broken gzip stream" if packed else "cannot be read"
        raise InputError(f"{path}: {what} ({first_line(error)})") from None
    if len(payload) != size:
        held = f"{len(payload) - 1:,}+" if len(payload) > size else f"{len(payload):,}"
        raise InputError(f"{path}: header promises {shape} = {size} bytes, file holds {held}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def system_copy(name: str) -> Path | None:
    """The operating system's copy of dataset ``name`` (Debian's ``dataset-fashion-mnist``) when its
    training images are there, else None (an empty folder of that name does not count)."""
    folder = SOURCES[name].system_folder
    return Path(folder) if folder and _find(Path(folder), _FILES["train_images"]) else None


def _locate(name: str, root: Path) -> Path | None:
    folders = [root / f for f in SOURCES[name].folders] + [root]
    found = next((f for f in folders if _find(f, _FILES["train_images"])), None)
    return found or system_copy(name)


def _download(name: str, root: Path) -> Path:
    spec = SOURCES[name]
    folder = root / spec.folders[0]
    for key, stem in _FILES.items():
        target = folder / f"{stem}.gz"
        if not target.exists():
            download([m + target.name for m in spec.mirrors], target, spec.md5[key])
    return folder


def _read_split(folder: Path, split: str, name: str) -> ImageSet | None:
    images_path = _find(folder, _FILES[f"{split}_images"])
    labels_path = _find(folder, _FILES[f"{split}_labels"])
    if images_path is None:
        return None
    if labels_path is None:
        raise InputError(f"{images_path}: no matching {_FILES[f'{split}_labels']} beside it")
    images = read_idx(images_path, expect_dims=3)
    labels = read_idx(labels_path, expect_dims=1)
    classes, shape = SOURCES[name].classes, datasets.DATASETS[name].shape
    if images.shape[1:] != shape[1:]:
        size, expected = datasets.shape_text(images.shape[1:]), datasets.shape_text(shape[1:])
        raise InputError(f"{images_path}: holds {size} images; {name}'s are {expected}")
    if len(images) != len(labels):
        raise InputError(f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} labels")
    if labels.size and labels.max() >= len(classes):
        raise InputError(f"{labels_path}: label {labels.max()} outside 0..{len(classes) - 1}")
    # Copies out of the read-only file buffer into arrays we own: (N, *shape) uint8.
    return ImageSet(images.reshape(len(images), *shape).copy(), labels.astype(np.int64), classes)


def load_mnist_family(name: str, root: Path, *, allow_download: bool = True) -> Dataset:
    """``mnist``, ``fashion-mnist`` or ``kmnist``: found in ROOT (or, for Fashion-MNIST, Debian's
    ``/usr/share/datasets/fashion-mnist``), else downloaded from the official mirrors with md5 checks.

    Local files are verified by structure (magic numbers, header sizes, image size, matching counts), not by
    checksum: Debian recompressed its ``.gz`` files, so their md5 differs from the official one.
    """
    folder = _locate(name, root)
    how = f"found in {folder}"
    if folder is None:
        if not allow_download:
            raise InputError(f"no {_FILES['train_images']}[.gz] for {name} in {root}")
        folder = _download(name, root)
        how = f"downloaded to {folder}"
    train = _read_split(folder, "train", name)
    test = _read_split(folder, "test", name)
    notes = () if test else (f"no {_FILES['test_images']} in {folder}: there is no test split",)
    return Dataset(name, train, test, source=how, notes=notes)
