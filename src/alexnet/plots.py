"""The figures of a run: learning curves, confusion matrix and a grid of test predictions (PNG, atomically)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from alexnet.atomic import atomic_path  # noqa: E402


def save_figure(figure, path: Path) -> None:
    """Write ``figure`` to ``path`` as PNG, atomically, and close it."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_curves(rows: Sequence[dict[str, str]], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, training against validation, from metrics.csv rows."""
    epochs = [int(r["epoch"]) for r in rows]

    def column(name: str) -> list[float]:
        return [float(r[name]) if r.get(name) not in (None, "", "nan") else math.nan for r in rows]

    # constrained layout: the accuracy label, wide percent ticks beside it, stays clear of the loss panel
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, metric, label in ((loss_ax, "loss", "loss"), (acc_ax, "acc", "accuracy")):
        ax.plot(epochs, column(f"train_{metric}"), "o-", label="train", color="tab:blue")
        val = column(f"val_{metric}")
        if not all(math.isnan(v) for v in val):
            ax.plot(epochs, val, "o-", label="validation", color="tab:orange")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no half epochs on short runs
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    acc_ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    figure.suptitle(title)
    save_figure(figure, path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix (true class per row) with counts in the cells when they fit."""
    k = len(classes)
    totals = matrix.sum(1, keepdims=True).clip(min=1)
    size = min(18, max(5, 0.45 * k + 2))
    figure, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(matrix / totals, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= 30:
        ax.set_xticks(range(k), classes, rotation=45, ha="right")
        ax.set_yticks(range(k), classes)
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    dark = matrix[i, j] / totals[i, 0] > 0.5
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    save_figure(figure, path)


def plot_predictions(
    images: np.ndarray, labels: Sequence[int], predicted: Sequence[int], classes: Sequence[str], path: Path, title: str
) -> None:
    """A grid of test images (uint8 (N, C, H, W)) titled "true / predicted"; wrong ones in red."""
    n = len(images)
    cols = min(8, n)
    rows = math.ceil(n / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.85), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, true, guess in zip(axes.flat, images, labels, predicted, strict=False):
        picture = image.transpose(1, 2, 0)
        ax.imshow(
            picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray" if picture.shape[-1] == 1 else None
        )
        wrong = true != guess
        ax.set_title(
            f"{classes[true]}\n{'✗ ' if wrong else ''}{classes[guess]}", fontsize=7, color="red" if wrong else "black"
        )
    figure.suptitle(f"{title} (true / predicted; wrong in red)", fontsize=9)
    save_figure(figure, path)
