"""``alexnet predict``: class probabilities for image files, decoded and cropped the way training data was."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet.data.decode import decode_image
from alexnet.data.folder import IMAGE_SUFFIXES, list_images
from alexnet.errors import InputError, first_line
from alexnet.inference import Classifier, Ensemble, Sources, load_ensemble, note_unseen_views
from alexnet.tta import check_tta


def shown_path(path: Path | str) -> str:
    """``path`` as text that prints and writes anywhere: bytes of a file name that are not UTF-8 (which Python
    keeps as surrogates) shown as ``\\xff`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def collect_images(inputs: Sequence[Path | str]) -> list[tuple[Path, str | None]]:
    """(path, error) for every file named and every image file under every folder named (recursively,
    in natural order). A file named explicitly is tried whatever its suffix; a missing path is an error row."""
    found: list[tuple[Path, str | None]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = list_images(item, recursive=True)
            if not files:
                found.append((item, f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder"))
            found += [(p, None) for p in files]
        elif item.is_file():
            found.append((item, None))
        else:
            found.append((item, "no such file or directory"))
    return found


def read_image(path: Path, size: int) -> np.ndarray | str:
    """uint8 (C, size, size) as the training images were stored, or the reason the file could not be read."""
    try:
        return decode_image(path, size)
    except Exception as error:  # PIL raises many types for unreadable, truncated or non-image files
        reason = first_line(error)
        return f"cannot read image ({reason})"


def iter_predictions(
    classifier: Classifier | Ensemble,
    inputs: Sequence[Path | str],
    *,
    top_k: int = 5,
    batch_size: int = 64,
    tta: str = "none",
    workers: int = 4,
) -> Iterator[dict[str, Any]]:
    """One dict per input image, in input order: ``{"path", "top": [{"class", "probability"}, ...]}``, or
    ``{"path", "error"}`` for a file that could not be read. Decoding runs in threads (PIL releases the GIL)
    while the previous batch runs through the model."""
    check_tta(tta)
    if top_k < 1:
        raise InputError(f"--top-k must be positive, not {top_k}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be positive, not {batch_size}")
    note_unseen_views(classifier, tta)
    k = min(top_k, len(classifier.classes))
    entries = collect_images(inputs)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for first in range(0, len(entries), batch_size):
            chunk = entries[first : first + batch_size]
            decoded = list(pool.map(lambda e: e[1] or read_image(e[0], classifier.storage_size), chunk))
            good = [i for i, d in enumerate(decoded) if isinstance(d, np.ndarray)]
            rows: dict[int, dict[str, Any]] = {}
            if good:
                batch = torch.from_numpy(np.stack([decoded[i] for i in good]))
                probabilities = classifier.probabilities(batch, tta).cpu()
                values, indices = probabilities.topk(k, dim=1)
                for row, i in enumerate(good):
                    top = [
                        {"class": classifier.classes[c], "probability": round(float(p), 6)}
                        for p, c in zip(values[row].tolist(), indices[row].tolist(), strict=True)
                    ]
                    rows[i] = {"path": shown_path(chunk[i][0]), "top": top}
            for i, (path, _) in enumerate(chunk):
                yield rows.get(i) or {"path": shown_path(path), "error": decoded[i]}


def predict(
    source: Sources,
    inputs: Sequence[Path | str],
    *,
    top_k: int = 5,
    batch_size: int = 64,
    tta: str = "none",
    precision: str = "auto",
    compile: bool = False,
) -> list[dict[str, Any]]:
    """Predictions for image files and folders with the classifier in ``source`` (a run or model directory,
    a checkpoint or an ONNX file), or with an ensemble of several (their class probabilities averaged): a list
    of the dicts ``iter_predictions`` yields, one per image, errors included."""
    classifier = load_ensemble(source, precision=precision, compile=compile)
    return list(iter_predictions(classifier, inputs, top_k=top_k, batch_size=batch_size, tta=tta))


def csv_header(top_k: int) -> list[str]:
    """``path``, then ``class_i`` and ``probability_i`` for each rank, then ``error``."""
    return ["path", *[f"{name}_{i}" for i in range(1, top_k + 1) for name in ("class", "probability")], "error"]


def csv_row(result: dict[str, Any], top_k: int) -> list[str]:
    cells = [result["path"]]
    for i in range(top_k):
        top = result.get("top", [])
        cells += [top[i]["class"], f"{top[i]['probability']:.6f}"] if i < len(top) else ["", ""]
    return [*cells, result.get("error", "")]


def format_csv(results: Sequence[dict[str, Any]], top_k: int) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_header(top_k))
    writer.writerows(csv_row(r, top_k) for r in results)
    return buffer.getvalue()


def format_line(result: dict[str, Any]) -> str:
    """One line of the table: the path, then each class with its probability."""
    if "error" in result:
        return f"{result['path']}  ERROR {result['error']}"
    return f"{result['path']}  " + "  ".join(f"{t['class']} {t['probability']:.1%}" for t in result["top"])
