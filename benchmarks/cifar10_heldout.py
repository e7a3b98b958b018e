"""The CIFAR-10 split the README's CIFAR figures are measured on, built from the data on our machines: the
50,000 JPEG-coded training images less the JPEG copies of the real images in the official-format subset
become the five training batches, and those real images the test batch (the official test set is held back).

    .venv/bin/python benchmarks/cifar10_heldout.py --jpeg DIR/train --subset SUBSET/cifar-10-batches-py --out ROOT
    .venv/bin/python benchmarks/time_to_accuracy.py --recipe cifar10 --root ROOT     # a README row
    .venv/bin/python benchmarks/cifar10_heldout.py --quick    # CI: made-up images, checks the matching

With ``--folds K`` it writes instead K folds of the real images for cross-validation (``OUT/fold{f}-real``:
fold f's real images are the test batch, the others train as they are; ``OUT/fold{f}-jpeg``: the same with
their JPEG copies training), to measure what the JPEG coding costs at a tenth of CIFAR-10:

    .venv/bin/python benchmarks/cifar10_heldout.py --jpeg ... --subset ... --out FOLDS --folds 5
    .venv/bin/alexnet train --recipe cifar10-small --root FOLDS/fold0-real --train-fraction 1

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


def match(
    jpeg_root: Path, real: np.ndarray, labels: np.ndarray, names: list[str]
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Each class's JPEGs (N_c, 3072) in file-name order, and for each real image the index of its JPEG copy
    among its class's and the RMS distance to it (of 255)."""
    coded, copy, rms = [], np.empty(len(real), np.int64), np.empty(len(real))
    for label, name in enumerate(names):
        if not (jpeg_root / name).is_dir():
            raise InputError(f"{jpeg_root / name}: no such class folder (the JPEG tree holds one per class)")
        coded.append(read_jpegs(jpeg_root / name))
        mine = labels == label
        copy[mine], rms[mine] = nearest(real[mine], coded[-1])
        if len(set(copy[mine].tolist())) != mine.sum():
            raise InputError(f"{jpeg_root / name}: two real images match one JPEG; is this the same dataset?")
    return coded, copy, rms


def build(jpeg_root: Path, subset: Path, out: Path) -> dict:
    """Write ``out/cifar-10-batches-py`` and return the counts and match distances."""
    real, labels, names = read_subset(subset)
    coded, copy, rms = match(jpeg_root, real, labels, names)
    kept, kept_labels = [], []
    for label, images in enumerate(coded):
        keep = np.ones(len(images), bool)
        keep[copy[labels == label]] = False
        kept.append(images[keep])
        kept_labels += [label] * int(keep.sum())
    train, train_labels = np.concatenate(kept), np.asarray(kept_labels)
    order = np.random.default_rng(0).permutation(len(train))  # the official batches mix the classes too
    _write_root(out, train[order], train_labels[order], real, labels, names)
    return {"train": len(train), "test": len(real), "rms_mean": float(rms.mean()), "rms_max": float(rms.max())}


def build_folds(jpeg_root: Path, subset: Path, out: Path, folds: int) -> dict:
    """Cross-validation on the real images, to measure what the JPEG coding costs: fold f tests on a stratified
    1/``folds`` of them and trains on the others, as they are in ``out/fold{f}-real`` and as their JPEG copies in
    ``out/fold{f}-jpeg``. Returns the counts and match distances."""
    real, labels, names = read_subset(subset)
    if (fewest := int(np.bincount(labels, minlength=len(names)).min())) < folds:
        raise InputError(f"{subset}: a class holds {fewest} real images, too few for {folds} folds")
    coded, copy, rms = match(jpeg_root, real, labels, names)
    copies = np.stack([coded[label][i] for label, i in zip(labels, copy, strict=True)])
    fold, rng = np.empty(len(real), np.int64), np.random.default_rng(0)
    for label in range(len(names)):
        for f, part in enumerate(np.array_split(rng.permutation(np.flatnonzero(labels == label)), folds)):
            fold[part] = f
    for f in range(folds):
        test, train = fold == f, np.flatnonzero(fold != f)
        train = train[np.random.default_rng(1).permutation(len(train))]
        for kind, images in (("real", real), ("jpeg", copies)):
            _write_root(out / f"fold{f}-{kind}", images[train], labels[train], real[test], labels[test], names)
    counts = np.bincount(fold, minlength=folds)
    return {
        "folds": folds, "train": (len(real) - counts).tolist(), "test": counts.tolist(),
        "rms_mean": float(rms.mean()), "rms_max": float(rms.max()),
    }  # fmt: skip


def _write_root(
    root: Path, train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, names: list[str]
) -> None:
    """``root/cifar-10-batches-py`` in the official format: the training images in five batches, the test batch
    and the class names."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(train)), BATCHES)):
        _write(folder / f"data_batch_{i + 1}", {"data": train[part], "labels": train_labels[part].tolist()})
    _write(folder / "test_batch", {"data": test, "labels": test_labels.tolist()})
    _write(folder / "batches.meta", {"label_names": names})


def _write(path: Path, batch: dict) -> None:
    with atomic_path(path) as temporary, open(temporary, "wb") as f:
        pickle.dump(batch, f)


def write_quick_data(root: Path, per_class: int = 7) -> tuple[Path, Path, set[bytes], set[bytes]]:
    """Smooth random images in 10 classes as JPEGs, one folder per class; the originals of the odd-numbered
    ones are written as an official-format batch. Returns the two folders, the decoded JPEGs that the training
    batches must hold (the even-numbered ones) and the decoded copies of the real images (the odd-numbered)."""
    rng = np.random.default_rng(0)
    names = [f"class{c}" for c in range(10)]
    real, labels, expected, copies = [], [], set(), set()
    for label, name in enumerate(names):
        (root / "jpeg" / name).mkdir(parents=True)
        for i, coarse in enumerate(rng.integers(0, 256, (per_class, 8, 8, 3), dtype=np.uint8)):
            pixels = np.asarray(Image.fromarray(coarse).resize((32, 32), Image.BILINEAR))
            path = root / "jpeg" / name / f"{i:04d}.jpg"
            Image.fromarray(pixels).save(path, quality=75)
            coded = np.asarray(Image.open(path)).transpose(2, 0, 1).tobytes()
            if i % 2:
                real.append(pixels.transpose(2, 0, 1).reshape(-1))
                labels.append(label)
                copies.add(coded)
            else:
                expected.add(coded)
    subset = root / "subset"
    subset.mkdir()
    _write(subset / "data_batch_1", {"data": np.stack(real), "labels": labels})
    _write(subset / "batches.meta", {"label_names": names})
    return root / "jpeg", subset, expected, copies


def folds_right(out: Path, folds: int, real: set[bytes], copies: set[bytes]) -> bool:
    """The folds' test batches split the real images; each fold trains on the others, as they are and as their
    JPEG copies, image for image (the copy of each real training image at its place)."""
    tested: list[bytes] = []
    for f in range(folds):
        originals = load_cifar("cifar10", out / f"fold{f}-real", allow_download=False)
        coded = load_cifar("cifar10", out / f"fold{f}-jpeg", allow_download=False).train
        test = [image.tobytes() for image in originals.test.images]
        train = {image.tobytes() for image in originals.train.images}
        tested += test
        gap = np.abs(originals.train.images.astype(np.int16) - coded.images.astype(np.int16)).mean()
        if train != real - set(test) or not {i.tobytes() for i in coded.images} <= copies or gap > 20:
            return False
        if (originals.train.labels != coded.labels).any() or len(coded.images) != len(train):
            return False
    return sorted(tested) == sorted(real)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jpeg", type=Path, help="the JPEG folder: one sub-folder of images per class")
    parser.add_argument("--subset", type=Path, help="the official-format folder of real training images")
    parser.add_argument("--out", type=Path, help="writes OUT/cifar-10-batches-py")
    parser.add_argument(
        "--folds", type=int, default=0,
        help="instead: K folds of the real images, each trained on as they are and as their JPEG copies "
        "(OUT/fold{f}-real, OUT/fold{f}-jpeg)",
    )  # fmt: skip
    args = parse_args(parser)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.jpeg, args.subset, expected, copies = write_quick_data(Path(tmp))
            args.out = Path(tmp) / "split"
        elif not (args.jpeg and args.subset and args.out):
            parser.error("give --jpeg, --subset and --out (or --quick)")
        if args.folds < 0 or args.folds == 1:
            parser.error(f"--folds {args.folds}: give 2 or more (or 0, the held-out split)")
        try:
            if args.folds:
                figures = build_folds(args.jpeg, args.subset, args.out, args.folds)
            else:
                figures = build(args.jpeg, args.subset, args.out)
        except InputError as error:
            parser.exit(2, f"cifar10_heldout.py: {error}\n")
        if args.quick and args.folds:
            real = {row.tobytes() for row in read_subset(args.subset)[0]}
            figures["folds_right"] = folds_right(args.out, args.folds, real, copies)
        elif args.quick:  # the training batches hold exactly the JPEGs that are not copies of the real images
            train = load_cifar("cifar10", args.out, allow_download=False).train.images
            figures["matched_right"] = {image.tobytes() for image in train} == expected
        kind = "folds of the real images" if args.folds else "held-out split"
        print(json.dumps({"benchmark": f"cifar10 {kind}", **figures}))


if __name__ == "__main__":
    main()
