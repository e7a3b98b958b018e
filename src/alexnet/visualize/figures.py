"""``alexnet visualize``: the first-layer kernels (the paper's Figure 3), Grad-CAM heatmaps over test images,
and each of a few test images beside its nearest training images in feature space (Figure 4), as PNGs.

Grad-CAM is captum's ``LayerGradCam`` (the ``visualize`` extra) on the last convolution the model's plan
declares, upsampled to the input and laid over the image.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from alexnet.errors import InputError  # noqa: E402
from alexnet.inference import Classifier, load_classifier  # noqa: E402
from alexnet.plots import save_figure  # noqa: E402
from alexnet.visualize.features import PENULTIMATE, extract  # noqa: E402


def _show(ax, image: np.ndarray) -> None:
    """uint8 or [0, 1] float (C, H, W), C = 1 or 3."""
    picture = image.transpose(1, 2, 0)
    ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray" if picture.shape[-1] == 1 else None)
    ax.axis("off")


def plot_kernels(model: torch.nn.Module, path: Path, title: str) -> None:
    """Every first-layer kernel, each scaled to its own range (as the paper shows them). The paper's two-tower
    network shows each tower's kernels as a block of their own (Figure 3: 48 above, 48 below)."""
    conv = model.get_submodule(model.first_conv_name)
    weights = conv.weight.detach().float().cpu().numpy()  # (K, C, h, w)
    low = weights.min(axis=(1, 2, 3), keepdims=True)
    high = weights.max(axis=(1, 2, 3), keepdims=True)
    tiles = (weights - low) / np.maximum(high - low, 1e-12)
    towers = 2 if getattr(model.get_submodule(model.last_conv_name), "groups", 1) == 2 else 1
    per_tower = math.ceil(len(tiles) / towers)
    columns = min(16, per_tower)
    rows_per_tower = math.ceil(per_tower / columns)
    rows = rows_per_tower * towers + (towers - 1)  # an empty row between the towers
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 0.6, rows * 0.6 + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, tile in enumerate(tiles):
        tower, j = divmod(i, per_tower)
        row = tower * (rows_per_tower + 1) + j // columns
        ax = axes[row, j % columns]
        _show(ax, tile)
    figure.suptitle(title, fontsize=9)
    save_figure(figure, path)


def gradcam(model: torch.nn.Module, views: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """(N, S, S) heatmaps in [0, 1] for the ``targets`` classes."""
    from alexnet.extras import require

    attr = require("captum.attr", "visualize")
    for module in model.modules():  # captum's hooks and in-place activations do not mix
        if hasattr(module, "inplace"):
            module.inplace = False
    layer = model.get_submodule(model.last_conv_name)
    cam = attr.LayerGradCam(model, layer)
    with torch.enable_grad():
        maps = cam.attribute(views.requires_grad_(True), target=targets, relu_attributions=True)
        maps = attr.LayerAttribution.interpolate(maps, views.shape[-2:], interpolate_mode="bilinear")
    maps = maps.detach()[:, 0].float()
    top = maps.flatten(1).max(1).values.clamp_min(1e-12)
    return (maps / top[:, None, None]).cpu().numpy()


def plot_gradcam(classifier: Classifier, images: np.ndarray, labels: np.ndarray, path: Path, title: str) -> None:
    """Each image with its Grad-CAM heatmap for the predicted class; true and predicted class above it."""
    stored = torch.from_numpy(np.ascontiguousarray(images)).to(classifier.device)
    views = classifier.preprocess.evaluate(stored)[0]
    with torch.inference_mode():
        predicted = classifier.model(views).argmax(1)
    heat = gradcam(classifier.model, views.clone(), predicted.clone())
    pictures = classifier.preprocess.to_pixels(views).cpu().numpy()
    columns = min(8, len(images))
    rows = math.ceil(len(images) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.85), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[: len(images)]):
        _show(ax, pictures[i])
        ax.imshow(heat[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        true, guess = classifier.classes[labels[i]], classifier.classes[int(predicted[i])]
        ax.set_title(f"{true}\n→ {guess}", fontsize=7, color="black" if true == guess else "crimson")
    figure.suptitle(title, fontsize=9)
    save_figure(figure, path)


def _features(classifier: Classifier, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    rows = []
    for first in range(0, len(images), batch_size):
        stored = torch.from_numpy(np.ascontiguousarray(images[first : first + batch_size])).to(classifier.device)
        views = classifier.preprocess.evaluate(stored, dtype=classifier.dtype)[0]
        rows.append(extract(classifier.model, views, PENULTIMATE).cpu().numpy())
    return np.concatenate(rows)


def plot_neighbours(
    classifier: Classifier, queries: np.ndarray, train: np.ndarray, path: Path, title: str, *, shown: int = 6
) -> None:
    """Each query image (first column) and the ``shown`` training images whose last-hidden-layer feature
    vectors are nearest to its own in Euclidean distance (the paper's Figure 4)."""
    q, t = _features(classifier, queries), _features(classifier, train)
    distances = (q**2).sum(1)[:, None] - 2 * q @ t.T + (t**2).sum(1)[None, :]
    nearest = np.argsort(distances, axis=1)[:, :shown]
    figure, axes = plt.subplots(len(queries), shown + 1, figsize=((shown + 1) * 1.2, len(queries) * 1.25))
    axes = np.atleast_2d(axes)
    for row, query in enumerate(queries):
        _show(axes[row, 0], query)
        axes[row, 0].set_title("test" if row == 0 else "", fontsize=7)
        for column, index in enumerate(nearest[row], start=1):
            _show(axes[row, column], train[index])
            if row == 0:
                axes[row, column].set_title(f"nearest {column}", fontsize=7)
    figure.suptitle(title, fontsize=9)
    save_figure(figure, path)


def visualize(source: Path | str, out: Path | str | None = None, *, images: int = 16, neighbours: int = 5) -> dict:
    """Write kernels.png, gradcam.png and neighbours.png for the model in ``source`` (a run or model
    directory, or a checkpoint) into ``out`` (default: ``<run>/visualize``); returns their paths."""
    from alexnet.data.datasets import load_trained_data

    classifier = load_classifier(source, precision="fp32")
    if classifier.backend != "pytorch":
        raise InputError(f"{source}: visualize needs the PyTorch weights (a run or model directory), not ONNX")
    card = classifier.card
    dataset = load_trained_data(card)
    _, tested = dataset.held_out
    out = Path(out) if out is not None else classifier.folder / "visualize"
    title = f"{card.model} on {dataset.name}"
    paths = {name: out / f"{name}.png" for name in ("kernels", "gradcam", "neighbours")}
    plot_kernels(classifier.model, paths["kernels"], f"{title}: first-layer kernels")
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(len(tested), min(images, len(tested)), replace=False))
    plot_gradcam(classifier, tested.images[picked], tested.labels[picked], paths["gradcam"], f"{title}: Grad-CAM")
    queries = tested.images[picked[:neighbours]]
    pool = np.sort(rng.choice(len(dataset.train), min(10_000, len(dataset.train)), replace=False))
    plot_neighbours(classifier, queries, dataset.train.images[pool], paths["neighbours"],
                    f"{title}: nearest training images (last hidden layer, {len(pool):,} searched)")  # fmt: skip
    return {name: str(path) for name, path in paths.items()}
