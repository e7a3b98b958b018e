"""Image folders: scanned, decoded once in parallel to a memory-mapped uint8 cache, reused until they change."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet.atomic import atomic_path, write_text
from alexnet.data.decode import decode_image
from alexnet.data.imageset import Dataset, ImageSet, held_out_origin, stratified_split
from alexnet.errors import InputError, first_line
from alexnet.seeding import TEST_SPLIT_SEED

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
CACHE_VERSION = 1
# The largest side a folder is stored at when no storage size is given: the paper stored ImageNet at 256, and
# a crop of 224 or 227 is taken from it. Smaller images keep their own size (32-px CIFAR stays 32).
NATURAL_SIZE_LIMIT = 256
_SIZE_SAMPLE = 1000  # files whose headers are read to find a folder's natural size


def natural_key(text: str) -> tuple:
    """Sort key that orders "class2" before "class10" and ignores case."""
    return tuple(int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", text))


def list_images(folder: Path, *, recursive: bool) -> list[Path]:
    """The image files (by suffix, hidden files left out) in ``folder``, in natural order of their paths."""
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    found = [p for p in pattern if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    return sorted(found, key=lambda p: natural_key(str(p.relative_to(folder))))


def class_from_filename(path: Path) -> str:
    """The class a flat folder's file name starts with: ``cat.123.jpg`` -> ``cat``, ``great_pyrenees_7.jpg``
    -> ``great_pyrenees``, ``dog12.png`` -> ``dog``; without such a number, the part before the first dot."""
    match = re.match(r"^(\D.*?)[._\-\s]*\d", path.stem)
    return match.group(1) if match else path.name.split(".")[0]


def _scan_split(folder: Path) -> list[tuple[Path, str]]:
    """(file, class) pairs of one split folder, in either layout."""
    subfolders = sorted(
        (d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: natural_key(d.name)
    )
    if subfolders:
        pairs = []
        for sub in subfolders:
            files = list_images(sub, recursive=True)
            if not files:
                raise InputError(f"{sub}: class folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            pairs += [(f, sub.name) for f in files]
        return pairs
    files = list_images(folder, recursive=False)
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) and no class folders")
    return [(f, class_from_filename(f)) for f in files]


def scan_folder(root: Path) -> dict[str, list[tuple[Path, str]]]:
    """Split name -> (file, class) pairs. ``train/`` with ``test/`` or ``val/`` beside it gives the splits;
    otherwise the whole folder is ``train``."""
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    splits = {
        SPLIT_FOLDERS[d.name.lower()]: d for d in root.iterdir() if d.is_dir() and d.name.lower() in SPLIT_FOLDERS
    }
    if "train" in splits and len(splits) > 1:
        return {name: _scan_split(folder) for name, folder in splits.items()}
    return {"train": _scan_split(root)}


@dataclass(frozen=True)
class FolderCache:
    """Where a folder's decoded images live: ``images.npy`` (N, 3, S, S) uint8 and ``meta.json``."""

    folder: Path

    @property
    def images(self) -> Path:
        return self.folder / "images.npy"

    @property
    def meta(self) -> Path:
        return self.folder / "meta.json"


def natural_size(files: list[Path]) -> int:
    """The side a folder's images are stored at by default: the largest short side among (an even sample of
    up to 1,000 of) its files, read from their headers, at most ``NATURAL_SIZE_LIMIT``. Images are never
    blown up to the limit: 32-px images are stored at 32, photos at 256."""
    from PIL import Image

    step = max(1, len(files) // _SIZE_SAMPLE)
    sides = []
    for path in files[::step]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except Exception:  # unreadable files are reported when they are decoded
            continue
    return min(max(sides, default=NATURAL_SIZE_LIMIT), NATURAL_SIZE_LIMIT)


def _fingerprint(splits: dict[str, list[tuple[Path, str]]], storage_size: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION} size={storage_size}".encode())
    for name in sorted(splits):
        for path, label in splits[name]:
            stat = path.stat()
            # surrogateescape: file names that are not UTF-8 are bytes the file system gave us; keep them so.
            digest.update(
                f"{name}\0{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode(errors="surrogateescape")
            )
    return digest.hexdigest()


_worker_target: np.ndarray | None = None


def _open_target(path: str) -> None:
    global _worker_target
    _worker_target = np.load(path, mmap_mode="r+")


def _decode_into(job: tuple[int, str, int]) -> tuple[int, str | None]:
    row, path, size = job
    try:
        _worker_target[row] = decode_image(Path(path), size)
    except Exception as error:  # any undecodable file is reported and skipped, never fatal
        return row, f"{path}: {type(error).__name__}: {error}"
    return row, None


def _decode_all(files: list[Path], size: int, target: Path, workers: int) -> dict[int, str]:
    """Decode ``files`` into rows of the .npy at ``target``, in parallel; returns {row: error}."""
    jobs = [(i, str(f), size) for i, f in enumerate(files)]
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    failures: dict[int, str] = {}
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_open_target, initargs=(str(target),)) as pool:
        for row, error in pool.map(_decode_into, jobs, chunksize=max(1, len(jobs) // (workers * 8))):
            if error:
                failures[row] = error
    return failures


def _allocate(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A uint8 .npy of ``shape`` at ``path``, its blocks reserved on disk now: a memory map writes into a
    sparse file, so a full disk would otherwise surface as SIGBUS in a decoding process (BrokenProcessPool)
    instead of ENOSPC here, which the caller's atomic_path turns into one line naming the file."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    if hasattr(os, "posix_fallocate"):  # not on macOS, whose writes then fail as they come
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return array


def _build_cache(cache: FolderCache, splits: dict[str, list[tuple[Path, str]]], storage_size: int, fingerprint: str):
    order = [(name, path, label) for name in ("train", "val", "test") for path, label in splits.get(name, [])]
    files = [path for _, path, _ in order]
    workers = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    log.info(
        "decoding %d images at %d px with %d processes (once; cached in %s)",
        len(files),
        storage_size,
        workers,
        cache.folder,
    )
    shape = (len(files), 3, storage_size, storage_size)
    cache.meta.unlink(missing_ok=True)  # a half-rebuilt cache must never look valid
    with atomic_path(cache.images) as raw:
        _allocate(raw, shape).flush()
        failures = _decode_all(files, storage_size, raw, workers)
        if failures:
            # Compact the good rows into a second file, so every split stays one contiguous slice.
            keep = [i for i in range(len(files)) if i not in failures]
            compact = raw.with_name(raw.name + ".compact")
            try:
                source = np.load(raw, mmap_mode="r")
                out = _allocate(compact, (len(keep), *shape[1:]))
                for start in range(0, len(keep), 1024):
                    out[start : start + 1024] = source[keep[start : start + 1024]]
                out.flush()
                del source, out
                os.replace(compact, raw)
            finally:
                compact.unlink(missing_ok=True)
            order = [order[i] for i in keep]
    meta = {
        "version": CACHE_VERSION,
        "fingerprint": fingerprint,
        "storage_size": storage_size,
        "splits": [name for name, _, _ in order],
        "labels": [label for _, _, label in order],
        "files": [str(path) for _, path, _ in order],
        "failures": [failures[i] for i in sorted(failures)],
    }
    write_text(cache.meta, json.dumps(meta))
    return meta


def _cache_for(root: Path, folder: Path, storage_size: int) -> FolderCache:
    key = hashlib.sha256(f"{folder.resolve()}|{storage_size}".encode(errors="surrogateescape")).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.resolve().name) or "folder"
    return FolderCache(root / "folder-cache" / f"{slug}-{storage_size}-{key}")


def load_folder(
    folder: Path,
    root: Path,
    *,
    storage_size: int | None = None,
    test_fraction: float = 0.2,
    test_seed: int = TEST_SPLIT_SEED,
) -> Dataset:
    """An image folder as a ``Dataset`` of uint8 (3, S, S) images, S = ``storage_size`` (short side
    resized to S, centre crop S x S, as the paper stored ImageNet at 256); by default the images' own size,
    at most 256 (``natural_size``).

    Without ``test/`` (or ``val/``) folders, a stratified ``test_fraction`` of the images is held out as
    the test split, drawn with ``test_seed``: the same images whatever the run's seed. Decoding happens
    once, in parallel; the cache under ``ROOT/folder-cache/`` is reused while the folder's files (names,
    sizes, times) stay the same.
    """
    splits = scan_folder(folder)
    classes = tuple(sorted({label for pairs in splits.values() for _, label in pairs}, key=natural_key))
    unknown = {label for name, pairs in splits.items() if name != "train" for _, label in pairs} - {
        label for _, label in splits["train"]
    }
    if unknown:
        raise InputError(f"{folder}: classes {', '.join(sorted(unknown))} appear in test/val but not in train/")
    if storage_size is None:
        storage_size = natural_size([path for pairs in splits.values() for path, _ in pairs])
    cache = _cache_for(root, folder, storage_size)
    fingerprint = _fingerprint(splits, storage_size)
    meta = images = None
    if cache.meta.exists() and cache.images.exists():
        try:
            meta = json.loads(cache.meta.read_text())
            images = np.load(cache.images, mmap_mode="c")  # copy-on-write: pages load on use
            if meta.get("fingerprint") != fingerprint:
                log.info("%s changed since it was cached; decoding it again", folder)
                meta = None
            elif images.shape[0] != len(meta["labels"]) or images.shape[1:] != (3, storage_size, storage_size):
                raise ValueError("images.npy does not match meta.json")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            log.info("the cache of %s is damaged (%s); decoding it again", folder, first_line(error))
            meta = None
    how = f"found in {folder} (decoded cache {cache.folder})"
    if meta is None:
        meta = _build_cache(cache, splits, storage_size, fingerprint)
        images = np.load(cache.images, mmap_mode="c")
        how = f"found in {folder}, decoded to {cache.folder}"
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for c in meta["labels"]], dtype=np.int64)
    split_of = np.asarray(meta["splits"])
    parts: dict[str, ImageSet] = {}
    for name in ("train", "val", "test"):
        rows = np.flatnonzero(split_of == name)
        if len(rows):
            # Rows of a split are contiguous (written split by split), so this slice is a view, not a copy.
            parts[name] = ImageSet(images[rows[0] : rows[-1] + 1], labels[rows[0] : rows[-1] + 1], classes)
    if "train" not in parts:
        raise InputError(f"{folder}: no readable training images ({len(meta['failures'])} failed to decode)")
    empty = [c for i, c in enumerate(classes) if i not in set(parts["train"].labels.tolist())]
    if empty:
        raise InputError(f"{folder}: no readable training images for class {', '.join(empty)}")
    notes = []
    if meta["failures"]:
        shown = "; ".join(meta["failures"][:3])
        notes.append(f"{len(meta['failures'])} unreadable images skipped, e.g. {shown}")
    train, test = parts["train"], parts.get("test", parts.get("val"))
    val = parts.get("val") if "test" in parts else None
    held_out = 0.0
    if test is None:
        held_out = test_fraction
        keep, held = stratified_split(train.labels, test_fraction, test_seed)
        train, test = train.subset(keep), train.subset(held)
        notes.append(f"the test split is {held_out_origin(test_fraction)}")
    return Dataset(f"folder:{folder}", train, test, val=val, source=how, notes=tuple(notes), test_held_out=held_out)
