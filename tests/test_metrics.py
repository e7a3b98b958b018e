import numpy as np
import pytest

from alexnet.metrics import (
    classification_report,
    confusion_matrix,
    mean_log_loss,
    most_confused,
    per_class_scores,
    top_k_accuracy,
)

CLASSES = ("a", "b", "c")


def test_top_k_accuracy_counts_labels_among_the_k_best():
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2], [0.4, 0.35, 0.25]])
    labels = np.array([0, 1, 2, 2])
    assert top_k_accuracy(probabilities, labels, 1) == 0.25
    assert top_k_accuracy(probabilities, labels, 2) == 0.75
    assert top_k_accuracy(probabilities, labels, 5) == 1.0  # k larger than the class count: every class


def test_loss_is_the_mean_negative_log_probability_of_the_truth():
    probabilities = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]])
    assert mean_log_loss(probabilities, np.array([0, 2])) == pytest.approx(np.log(2))
    assert mean_log_loss(probabilities, np.array([2, 2])) == pytest.approx((-np.log(1e-12) + np.log(2)) / 2)


def test_confusion_matrix_rows_are_true_classes_and_sum_to_the_split():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    matrix = confusion_matrix(labels, predicted, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert matrix.sum() == len(labels)
    assert matrix.sum(1).tolist() == np.bincount(labels).tolist()
    assert matrix.sum(0).tolist() == np.bincount(predicted).tolist()


def test_per_class_precision_recall_and_accuracy():
    matrix = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    scores = per_class_scores(matrix, CLASSES)
    assert scores["a"] == {"images": 2, "precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 0.5}
    assert scores["b"]["precision"] == 0.5 and scores["b"]["recall"] == 1.0
    assert scores["b"]["f1"] == pytest.approx(2 / 3)
    assert scores["c"]["precision"] == 1.0 and scores["c"]["accuracy"] == pytest.approx(2 / 3)
    never = per_class_scores(np.array([[2, 0], [1, 0]]), ("x", "y"))["y"]
    assert never == {"images": 1, "precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}


def test_most_confused_pairs_in_order_without_the_diagonal():
    matrix = np.array([[50, 3, 7], [0, 40, 0], [1, 9, 30]])
    pairs = most_confused(matrix, CLASSES, top=3)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("c", "b", 9), ("a", "c", 7), ("a", "b", 3)]
    assert pairs[0]["share"] == pytest.approx(9 / 40)
    assert most_confused(np.eye(3, dtype=int) * 5, CLASSES) == []


def test_report_keys_and_consistency():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=50)
    labels = rng.integers(0, 3, 50)
    report = classification_report(probabilities, labels, CLASSES)
    assert {"top1", "top5", "loss", "n", "per_class", "confusion", "most_confused"} <= set(report)
    assert report["n"] == 50 and report["top5"] == 1.0
    confusion = np.array(report["confusion"])
    assert confusion.trace() / 50 == pytest.approx(report["top1"])
