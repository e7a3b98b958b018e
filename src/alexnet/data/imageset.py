"""Whole datasets in memory: uint8 image arrays with labels and class names, and stratified splits.

NumPy only: `alexnet data` answers without importing torch (~1.4 s); the loaders turn the arrays into
tensors without a copy (``torch.from_numpy``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from alexnet.errors import InputError


@dataclass(frozen=True)
class ImageSet:
    """One split, whole: ``images`` (N, C, H, W) uint8 and ``labels`` (N,) int64 in ``range(len(classes))``."""

    images: np.ndarray  # may be a copy-on-write memory map (image folders)
    labels: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.images.shape[1:])

    def subset(self, indices: np.ndarray) -> ImageSet:
        """The images at ``indices`` (a copy for in-memory data, lazy pages for a memory-mapped cache)."""
        return ImageSet(self.images[indices], self.labels[indices], self.classes)

    def class_counts(self) -> list[int]:
        """Images per class, in class order."""
        return np.bincount(self.labels, minlength=len(self.classes)).tolist()


def held_out_origin(fraction: float) -> str:
    """How a test split held out of the training files is named, in notes and beside test figures."""
    return f"a stratified {fraction:.0%} held out of the training files (no test/ folder)"


@dataclass(frozen=True)
class Dataset:
    """A dataset's splits as loaded: ``val`` is held out of the training files, ``test`` comes with the data."""

    name: str
    train: ImageSet
    test: ImageSet | None
    val: ImageSet | None = None
    source: str = ""  # where the files were found, or that they were downloaded
    notes: tuple[str, ...] = field(default_factory=tuple)  # what was missing or unusual
    test_held_out: float = 0.0  # > 0: the test split is this stratified fraction of the files, held out by us

    @property
    def test_origin(self) -> str:
        """Where the test figure's images come from, said beside the figure."""
        return held_out_origin(self.test_held_out) if self.test_held_out else "the dataset's own test split"

    def split(self, name: str) -> ImageSet:
        """``train``, ``val`` or ``test``; a split the data does not have raises ``InputError``."""
        if name not in ("train", "val", "test"):
            raise InputError(f"unknown split {name!r}; use train, val or test")
        found = getattr(self, name)
        if found is None:
            hint = "hold one out of the training data with --val-fraction" if name in ("val", "test") else ""
            raise InputError(f"{self.name} ({self.source}) has no {name} split; {hint}".rstrip("; "))
        return found

    @property
    def held_out(self) -> tuple[str, ImageSet]:
        """(name, split) of the images furthest from training: test, else val, else train itself."""
        return next((n, s) for n, s in (("test", self.test), ("val", self.val), ("train", self.train)) if s is not None)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, taken) with ``fraction`` of every class in ``taken``, seeded.

    Each class contributes ``round(count * fraction)`` images (at least one when ``fraction > 0`` and
    the class has two or more). Both index arrays come back sorted.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    generator = np.random.default_rng(seed)
    labels = np.asarray(labels)
    taken = []
    for c in np.unique(labels).tolist():
        members = np.flatnonzero(labels == c)
        members = members[generator.permutation(len(members))]
        n = round(len(members) * fraction)
        if fraction > 0 and n == 0 and len(members) > 1:
            n = 1
        taken.append(members[:n])
    taken_idx = np.sort(np.concatenate(taken)) if taken else np.empty(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[taken_idx] = False
    return np.flatnonzero(mask), taken_idx


def split_train(dataset: Dataset, *, train_fraction: float = 1.0, val_fraction: float = 0.0, seed: int = 0) -> Dataset:
    """Hold ``val_fraction`` of the training images out as ``val`` (stratified), then keep a stratified
    ``train_fraction`` of the rest for training. The validation images do not depend on ``train_fraction``."""
    if not 0.0 < train_fraction <= 1.0:
        raise InputError(f"--train-fraction must be in (0, 1], not {train_fraction}")
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), not {val_fraction}")
    train, val = dataset.train, dataset.val
    if val_fraction > 0:
        keep, held = stratified_split(train.labels, val_fraction, seed)
        train, val = train.subset(keep), train.subset(held)
    if train_fraction < 1.0:
        _, kept = stratified_split(train.labels, train_fraction, seed + 1)
        train = train.subset(kept)
    return replace(dataset, train=train, val=val)


def channel_stats(images: np.ndarray, *, max_images: int = 60_000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images in [0, 1] units, over at most ``max_images``
    evenly spaced images, accumulated in chunks so a memory-mapped set is never loaded whole."""
    n, c = images.shape[:2]
    picked = np.linspace(0, n - 1, min(n, max_images)).round().astype(np.int64) if n else np.empty(0, np.int64)
    total = np.zeros(c, dtype=np.float64)
    squares = np.zeros(c, dtype=np.float64)
    count = 0
    for start in range(0, len(picked), 1024):
        # Sums of uint8 values and their squares are exact in int64; scale once at the end.
        chunk = images[picked[start : start + 1024]].astype(np.int64)
        total += chunk.sum((0, 2, 3))
        squares += (chunk * chunk).sum((0, 2, 3))
        count += chunk.size // c
    mean = total / max(count, 1) / 255.0
    var = squares / max(count, 1) / 255.0**2 - mean * mean
    return mean.tolist(), np.sqrt(np.clip(var, 0, None)).tolist()
