"""Classification figures from predicted probabilities: top-k, loss, confusion matrix, per-class scores.

NumPy only, on the whole split at once: the figures of ``alexnet evaluate`` and its JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the ``k`` most probable classes (ties broken by class order)."""
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(1).mean()) if len(labels) else float("nan")


def mean_log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class (probabilities floored at 1e-12)."""
    if not len(labels):
        return float("nan")
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, 1e-12)).mean())


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, true class per row, predicted class per column."""
    flat = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def per_class_scores(matrix: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, float | int]]:
    """Class name -> images, precision, recall, f1 and accuracy.

    ``accuracy`` is the share of that class's images classified right (what "per-class accuracy" means
    in the papers and in Keras reports; it equals recall). A class never predicted has precision 0.
    """
    correct = np.diag(matrix).astype(np.float64)
    images = matrix.sum(1)
    predicted = matrix.sum(0)
    out = {}
    for i, name in enumerate(classes):
        precision = correct[i] / predicted[i] if predicted[i] else 0.0
        recall = correct[i] / images[i] if images[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {
            "images": int(images[i]), "precision": float(precision), "recall": float(recall),
            "f1": float(f1), "accuracy": float(recall),
        }  # fmt: skip
    return out


def most_confused(matrix: np.ndarray, classes: Sequence[str], *, top: int = 5) -> list[dict]:
    """The largest off-diagonal cells: true class, predicted class, count and share of the true class."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    pairs = []
    for flat in order:
        i, j = divmod(int(flat), matrix.shape[1])
        if off[i, j] == 0:
            break
        share = off[i, j] / max(int(matrix[i].sum()), 1)
        pairs.append({"true": classes[i], "predicted": classes[j], "count": int(off[i, j]), "share": float(share)})
    return pairs


def classification_report(probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict:
    """``top1``, ``top5``, ``loss``, ``n``, ``per_class``, ``confusion`` and ``most_confused`` of a split."""
    predicted = probabilities.argmax(1)
    matrix = confusion_matrix(labels, predicted, len(classes))
    return {
        "top1": top_k_accuracy(probabilities, labels, 1),
        "top5": top_k_accuracy(probabilities, labels, 5),
        "loss": mean_log_loss(probabilities, labels),
        "n": int(len(labels)),
        "per_class": per_class_scores(matrix, classes),
        "confusion": matrix.tolist(),
        "most_confused": most_confused(matrix, classes),
    }
