"""The CIFAR-10 split the README's CIFAR figures are measured on, built from the data on our machines: the
50,000 JPEG-coded training images less the JPEG copies of the real images in the official-format subset
become the five training batches, and those real images the test batch (the official test set is held back).

    .venv/bin/python benchmarks/cifar10_heldout.py --jpeg DIR/train --subset SUBSET/cifar-10-batches-py --out ROOT
    .venv/bin/python benchmarks/time_to_accuracy.py --recipe cifar10 --root ROOT     # a README row
    .venv/bin/python benchmarks/cifar10_heldout.py --quick    # CI: made-up images, checks the matching

Each real image is matched to the JPEG of its class nearest in pixels (RMS about 8 of 255 on the real data,
the JPEG coding); two real images matched to one JPEG is an error. One JSON line reports the counts and the
match distances.
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet.atomic import atomic_path
from alexnet.data.cifar import load_cifar
from alexnet.errors import InputError

from common import parse_args

BATCHES = 5


def read_subset(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The real images (N, 3072) uint8, their labels and the class names of an official-format folder."""
    train = load_cifar("cifar10", folder, allow_download=False).train
    return train.images.reshape(len(train.images), -1), train.labels, list(train.classes)


def read_jpegs(folder: Path) -> np.ndarray:
    """A class folder's images in file-name order as (N, 3072) uint8 rows, CIFAR's channel-major layout."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return np.stack([np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1).reshape(-1) for p in files])


def nearest(real: np.ndarray, coded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``real``, the index of the nearest row of ``coded`` and its RMS distance (of 255)."""
    a, b = real.astype(np.float64), coded.astype(np.float64)
    squared = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None]
    index = squared.argmin(1)
    rms = np.sqrt(squared[np.arange(len(a)), index].clip(0) / a.shape[1])
    return index, rms


def build(jpeg_root: Path, subset: Path, out: Path) -> dict:
    """Write ``out/cifar-10-batches-py`` and return the counts and match distances."""
    real, real_labels, names = read_subset(subset)
    kept, kept_labels, distances = [], [], []
    for label, name in enumerate(names):
        if not (jpeg_root / name).is_dir():
            raise InputError(f"{jpeg_root / name}: no such class folder (the JPEG tree holds one per class)")
        coded = read_jpegs(jpeg_root / name)
        index, rms = nearest(real[real_labels == label], coded)
        if len(set(index.tolist())) != len(index):
            raise InputError(f"{jpeg_root / name}: two real images match one JPEG; is this the same dataset?")
        keep = np.ones(len(coded), bool)
        keep[index] = False
        kept.append(coded[keep])
        kept_labels += [label] * int(keep.sum())
        distances.append(rms)
    train, train_labels = np.concatenate(kept), np.asarray(kept_labels)
    order = np.random.default_rng(0).permutation(len(train))  # the official batches mix the classes too
    train, train_labels = train[order], train_labels[order]
    folder = out / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    files = {f"data_batch_{i + 1}": part for i, part in enumerate(np.array_split(np.arange(len(train)), BATCHES))}
    for name, part in files.items():
        _write(folder / name, {"data": train[part], "labels": train_labels[part].tolist()})
    _write(folder / "test_batch", {"data": real, "labels": real_labels.tolist()})
    _write(folder / "batches.meta", {"label_names": names})
    rms = np.concatenate(distances)
    return {"train": len(train), "test": len(real), "rms_mean": float(rms.mean()), "rms_max": float(rms.max())}


def _write(path: Path, batch: dict) -> None:
    with atomic_path(path) as temporary, open(temporary, "wb") as f:
        pickle.dump(batch, f)


def write_quick_data(root: Path, per_class: int = 7) -> tuple[Path, Path, set[bytes]]:
    """Smooth random images in 10 classes as JPEGs, one folder per class; the originals of the odd-numbered
    ones are written as an official-format batch. Returns the two folders and the decoded JPEGs that the
    training batches must hold (the even-numbered ones)."""
    rng = np.random.default_rng(0)
    names = [f"class{c}" for c in range(10)]
    real, labels, expected = [], [], set()
    for label, name in enumerate(names):
        (root / "jpeg" / name).mkdir(parents=True)
        for i, coarse in enumerate(rng.integers(0, 256, (per_class, 8, 8, 3), dtype=np.uint8)):
            pixels = np.asarray(Image.fromarray(coarse).resize((32, 32), Image.BILINEAR))
            path = root / "jpeg" / name / f"{i:04d}.jpg"
            Image.fromarray(pixels).save(path, quality=75)
            if i % 2:
                real.append(pixels.transpose(2, 0, 1).reshape(-1))
                labels.append(label)
            else:
                expected.add(np.asarray(Image.open(path)).transpose(2, 0, 1).tobytes())
    subset = root / "subset"
    subset.mkdir()
    _write(subset / "data_batch_1", {"data": np.stack(real), "labels": labels})
    _write(subset / "batches.meta", {"label_names": names})
    return root / "jpeg", subset, expected


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jpeg", type=Path, help="the JPEG folder: one sub-folder of images per class")
    parser.add_argument("--subset", type=Path, help="the official-format folder of real training images")
    parser.add_argument("--out", type=Path, help="writes OUT/cifar-10-batches-py")
    args = parse_args(parser)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.jpeg, args.subset, expected = write_quick_data(Path(tmp))
            args.out = Path(tmp) / "split"
        elif not (args.jpeg and args.subset and args.out):
            parser.error("give --jpeg, --subset and --out (or --quick)")
        try:
            figures = build(args.jpeg, args.subset, args.out)
        except InputError as error:
            parser.exit(2, f"cifar10_heldout.py: {error}\n")
        if args.quick:  # the training batches hold exactly the JPEGs that are not copies of the real images
            train = load_cifar("cifar10", args.out, allow_download=False).train.images
            figures["matched_right"] = {image.tobytes() for image in train} == expected
        print(json.dumps({"benchmark": "cifar10 held-out split", **figures}))


if __name__ == "__main__":
    main()
