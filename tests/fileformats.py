"""Writers for small files in each real on-disk format, so the loaders are tested on what users have."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], *, label_key="labels", py2_keys=True):
    """A batch as the official files hold it: a dict pickled at protocol 2, byte-string keys under Python 2."""
    key = (lambda k: k.encode()) if py2_keys else (lambda k: k)
    payload = {
        key("batch_label"): b"training batch",
        key(label_key): labels,
        key("data"): images.reshape(len(images), -1),
    }
    payload[key("filenames")] = [f"img_{i}.png".encode() for i in range(len(images))]
    path.write_bytes(pickle.dumps(payload, protocol=2))


def write_cifar10(folder: Path, rows_per_batch: int = 6, *, test=True, py2_keys=True, meta=True) -> None:
    """cifar-10-batches-py/ with five small training batches (every class present), a test batch and meta."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        labels = [(i + j) % 10 for j in range(rows_per_batch)]
        images = rng.integers(0, 256, (rows_per_batch, 3, 32, 32), dtype=np.uint8)
        write_cifar_batch(folder / f"data_batch_{i}", images, labels, py2_keys=py2_keys)
    if test:
        write_cifar_batch(folder / "test_batch", rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8), list(range(10)))
    if meta:
        names = [n.encode() for n in CIFAR10_NAMES] if py2_keys else CIFAR10_NAMES
        key = (lambda k: k.encode()) if py2_keys else (lambda k: k)
        (folder / "batches.meta").write_bytes(
            pickle.dumps({key("label_names"): names, key("num_vis"): 3072}, protocol=2)
        )


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    """An IDX file of unsigned bytes: magic 0x0000080N, big-endian sizes, then the data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def write_mnist(folder: Path, *, train=12, test=5, gz=True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    suffix = ".gz" if gz else ""
    for split, n in (("train", train), ("t10k", test)):
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz=gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz=gz)


def write_learnable_mnist(folder: Path, *, train=600, test=100, classes=3, seed=0) -> None:
    """MNIST-format files whose classes a small network learns in a few steps: class c is noise with a
    bright 8x8 block at a place of its own on the diagonal. With up to three classes (the default) each
    block has rows of its own, so a horizontal flip (every recipe's augmentation and test view) never moves
    one class's block onto another's."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("t10k", test)):
        labels = np.arange(n) % classes
        images = rng.integers(0, 80, (n, 28, 28))
        for i, c in enumerate(labels):
            y = x = int(c) * 9 % 20
            images[i, y + 2 : y + 10, x + 2 : x + 10] = 250
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images, gz=True)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels, gz=True)
