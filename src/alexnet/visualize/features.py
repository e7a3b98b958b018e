"""Features from a named layer of a classifier: any module's output by its ``state_dict`` prefix
(``features.10``, ``classifier.4``, ``avgpool``), or ``penultimate`` (the input of the output layer: the
last hidden layer's activations, the paper's 4096-dimensional feature vector)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from alexnet.errors import InputError
from alexnet.inference import Classifier

PENULTIMATE = "penultimate"


def layer_names(model: torch.nn.Module) -> list[str]:
    """Every name ``--layer`` takes for ``model``."""
    return [PENULTIMATE, *(name for name, _ in model.named_modules() if name)]


def extract(model: torch.nn.Module, images: torch.Tensor, layer: str) -> torch.Tensor:
    """(N, D) float32 features of model input ``images`` (N, C, S, S) at ``layer``, flattened."""
    modules = dict(model.named_modules())
    name = model.head_name if layer == PENULTIMATE else layer
    if name not in modules or not name:
        raise InputError(f"no layer {layer!r}; layers: {', '.join(layer_names(model))}")
    captured: list[torch.Tensor] = []
    if layer == PENULTIMATE:
        handle = modules[name].register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
    else:
        handle = modules[name].register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        with torch.inference_mode():
            model(images)
    finally:
        handle.remove()
    return captured[0].flatten(1).float().clone()


def features_of_files(
    classifier: Classifier, inputs: Sequence[Path | str], layer: str, *, batch_size: int = 64
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """(paths read, (N, D) features in their order, [(path, why) for files that could not be read]) for
    image files and folders, decoded and cropped as ``alexnet predict`` does."""
    from alexnet.prediction import collect_images, read_image, shown_path

    if classifier.backend != "pytorch":
        raise InputError("layers and their features need the PyTorch weights (a run or model directory), not ONNX")
    entries = collect_images(inputs)
    paths, rows, failed = [], [], []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for first in range(0, len(entries), batch_size):
            chunk = entries[first : first + batch_size]
            decoded = list(pool.map(lambda e: e[1] or read_image(e[0], classifier.storage_size), chunk))
            good = [i for i, d in enumerate(decoded) if isinstance(d, np.ndarray)]
            failed += [(shown_path(chunk[i][0]), decoded[i]) for i in range(len(chunk)) if i not in good]
            if good:
                stored = torch.from_numpy(np.stack([decoded[i] for i in good])).to(classifier.device)
                views = classifier.preprocess.evaluate(stored, dtype=classifier.dtype)[0]
                rows.append(extract(classifier.model, views, layer).cpu().numpy())
                paths += [shown_path(chunk[i][0]) for i in good]
    features = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
    return paths, features, failed


def write_features(out: Path, paths: Sequence[str], features: np.ndarray) -> None:
    """``out`` (.npy, the (N, D) array) and, beside it, ``out`` with ``.txt``: the N paths in the same order."""
    import io

    from alexnet.atomic import atomic_path, write_text

    buffer = io.BytesIO()
    np.save(buffer, features)
    with atomic_path(out) as temporary:
        temporary.write_bytes(buffer.getvalue())
    write_text(out.with_suffix(".txt"), "".join(f"{p}\n" for p in paths))
