"""The loaders on real files: Debian's Fashion-MNIST, and the team's real CIFAR-10 and MNIST subsets."""

from pathlib import Path

import numpy as np
import pytest

from alexnet.data import channel_stats, load_splits
from alexnet.data.mnist import system_copy

FASHION = system_copy("fashion-mnist")
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"

pytestmark = pytest.mark.slow


@pytest.mark.skipif(FASHION is None, reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_is_found_without_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNET_DATA", str(tmp_path))  # nothing there: the system folder must be found
    data = load_splits("fashion-mnist", val_fraction=0.1)
    assert str(FASHION) in data.source
    assert (len(data.train), len(data.val), len(data.test)) == (54_000, 6_000, 10_000)
    assert data.train.image_shape == (1, 28, 28)
    assert data.test.class_counts() == [1_000] * 10
    mean, std = channel_stats(np.concatenate([data.train.images, data.val.images]))
    assert mean[0] == pytest.approx(0.2860, abs=1e-4) and std[0] == pytest.approx(0.3530, abs=1e-4)


@pytest.mark.skipif(
    not (SHARED / "cifar10-train-subset").exists(), reason="no shared CIFAR-10 subset beside the checkout"
)
def test_real_cifar10_subset_written_by_python2():
    data = load_splits("cifar10", SHARED / "cifar10-train-subset", val_fraction=0.1, train_fraction=0.2)
    assert data.test is None and any("test_batch" in n for n in data.notes)
    assert len(data.val) == 509 and data.train.classes[-1] == "truck"
    assert 0.40 < channel_stats(data.val.images)[0][0] < 0.55  # CIFAR-10's red mean is 0.491


@pytest.mark.skipif(not (SHARED / "mnist-train-subset").exists(), reason="no shared MNIST subset beside the checkout")
def test_real_mnist_subset():
    data = load_splits("mnist", SHARED / "mnist-train-subset")
    assert len(data.train) == 17_435 and data.test is None
