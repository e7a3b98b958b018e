"""CIFAR-10 and CIFAR-100 from the official python-pickle batches, read without running pickled code."""

from __future__ import annotations

import logging
import math
import pickle
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from alexnet.data.datasets import DATASETS
from alexnet.data.download import download, file_md5
from alexnet.data.imageset import Dataset, ImageSet
from alexnet.errors import InputError, first_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR variant keeps its files, and what its labels are called."""

    folder: str
    tarball: str
    md5: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int


_CIFAR10 = CifarFormat(
    folder="cifar-10-batches-py",
    tarball="cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
)
_CIFAR100 = CifarFormat(
    folder="cifar-100-python",
    tarball="cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
)
FORMATS = {
    "cifar10": _CIFAR10,
    "cifar100": _CIFAR100,
    "cifar100-coarse": replace(_CIFAR100, label_key="coarse_labels", names_key="coarse_label_names", num_classes=20),
}
URL_BASE = "https://www.cs.toronto.edu/~kriz/"


def _numpy_reconstruct():
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
    return core.multiarray._reconstruct


class _BatchUnpickler(pickle.Unpickler):
    """Admits only what real CIFAR batches contain: dicts, lists, strings, ints and numpy arrays.

    Every other global (``os.system``, ``builtins.eval``, ...) is refused before it can be called,
    so a crafted batch file cannot run code.
    """

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy", "ndarray"): lambda: np.ndarray,
            ("numpy", "dtype"): lambda: np.dtype,
            ("_codecs", "encode"): lambda: __import__("codecs").encode,  # bytes pickled by Python 3 at protocol 2
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch")
        return allowed[(module, name)]()


def read_batch(path: Path) -> dict[str, object]:
    """One batch or meta file as a dict with ``str`` keys, whether Python 2 (byte keys) or 3 wrote it."""
    try:
        with open(path, "rb") as f:
            raw = _BatchUnpickler(f, encoding="bytes").load()
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror or first_line(error)})") from None
    except Exception as error:
        # Any way a crafted pickle fails: the unpickler's refusals, and (found by tests/test_fuzz.py)
        # OverflowError and MemoryError from the lengths a file declares.
        raise InputError(f"{path}: not a CIFAR batch file ({first_line(error)})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: not a CIFAR batch file (holds a {type(raw).__name__}, not a dict)")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _images_and_labels(path: Path, label_key: str, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A batch file's images, (N, *shape) uint8 (each row of its ``data`` holds one image's planes in turn),
    and their labels."""
    batch = read_batch(path)
    data, labels = batch.get("data"), batch.get(label_key)
    pixels = math.prod(shape)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != pixels:
        raise InputError(f"{path}: 'data' must be a uint8 array of N x {pixels} pixels")
    if len(data) == 0:
        raise InputError(f"{path}: holds no images")
    if not isinstance(labels, list | tuple | np.ndarray):
        raise InputError(f"{path}: {label_key!r} must be a list of labels, not {type(labels).__name__}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(data):
        raise InputError(f"{path}: {label_key!r} must hold one label per image ({len(data)} images)")
    if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() > 2**31)):
        raise InputError(f"{path}: {label_key!r} must be whole numbers from 0 (class indices)")
    return data.reshape(-1, *shape), labels.astype(np.int64)


def _class_names(folder: Path, fmt: CifarFormat) -> tuple[tuple[str, ...], str | None]:
    meta_path = folder / fmt.meta_file
    if not meta_path.exists():
        return tuple(str(i) for i in range(fmt.num_classes)), f"no {fmt.meta_file} in {folder}: classes are numbered"
    names = read_batch(meta_path).get(fmt.names_key)
    if not isinstance(names, list):
        raise InputError(f"{meta_path}: no {fmt.names_key!r} list")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names), None


def extract_safely(tarball: Path, root: Path) -> None:
    """Extract a tarball into ``root``, refusing any member that would land outside it or is not a
    plain file or folder (absolute paths, ``..``, links, devices)."""
    root = root.resolve()
    try:
        with tarfile.open(tarball) as tar:
            members = tar.getmembers()
            for member in members:
                if not (member.isfile() or member.isdir()):
                    raise InputError(
                        f"{tarball}: member {member.name!r} is a link or device, not a file; not extracted"
                    )
                if not (root / member.name).resolve().is_relative_to(root):
                    raise InputError(
                        f"{tarball}: member {member.name!r} would be written outside {root}; not extracted"
                    )
            tar.extractall(root, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise InputError(f"{tarball}: cannot be extracted ({error})") from None


def _locate(root: Path, fmt: CifarFormat, allow_download: bool) -> tuple[Path, str]:
    for folder in (root / fmt.folder, root):
        if any((folder / f).exists() for f in fmt.train_files):
            return folder, f"found in {folder}"
    tarball = root / fmt.tarball
    how = f"extracted from {tarball}"
    if not tarball.exists():
        if not allow_download:
            raise InputError(f"no {fmt.folder}/ or {fmt.tarball} in {root}")
        download([URL_BASE + fmt.tarball], tarball, fmt.md5)
        how = f"downloaded to {tarball} and extracted"
    elif file_md5(tarball) != fmt.md5:
        log.warning("%s: md5 differs from the official %s; extracting it anyway", tarball, fmt.md5)
    extract_safely(tarball, root)
    return root / fmt.folder, how


def load_cifar(name: str, root: Path, *, allow_download: bool = True) -> Dataset:
    """CIFAR-10 (``cifar10``) or CIFAR-100 (``cifar100``, ``cifar100-coarse``) from ``root``.

    Accepts the official folder, the official tarball (extracted safely), subsets with fewer rows per
    batch, and a missing test batch (then the dataset has no test split, and a note says so).
    """
    fmt, shape = FORMATS[name], DATASETS[name].shape
    folder, how = _locate(root, fmt, allow_download)
    notes: list[str] = []
    present = [f for f in fmt.train_files if (folder / f).exists()]
    missing = [f for f in fmt.train_files if f not in present]
    if missing:
        notes.append(f"training batches missing from {folder}: {', '.join(missing)}")
    if not present:
        raise InputError(f"{folder}: none of the training batches {', '.join(fmt.train_files)}")
    parts = [_images_and_labels(folder / f, fmt.label_key, shape) for f in present]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    rows = [len(p[1]) for p in parts]
    full_rows = 50_000 // len(fmt.train_files)
    if any(r != full_rows for r in rows):
        notes.append(f"training batches hold {', '.join(map(str, rows))} rows (the official files hold {full_rows})")
    classes, note = _class_names(folder, fmt)
    if note:
        notes.append(note)
    if train_y.min() < 0 or train_y.max() >= len(classes):
        raise InputError(f"{folder}: labels outside 0..{len(classes) - 1}")
    train = ImageSet(train_x, train_y, classes)
    test = None
    if (folder / fmt.test_file).exists():
        test_x, test_y = _images_and_labels(folder / fmt.test_file, fmt.label_key, shape)
        test = ImageSet(test_x, test_y, classes)
    else:
        notes.append(f"no {fmt.test_file} in {folder}: there is no test split; hold out one with --val-fraction")
    return Dataset(name, train, test, source=how, notes=tuple(notes))
