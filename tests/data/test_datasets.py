import importlib

import pytest

from alexnet.data.datasets import DATASETS, dataset_help, dataset_names, load_splits
from alexnet.errors import InputError

from fileformats import write_cifar10, write_mnist


def test_every_registered_dataset_has_its_loader_and_format():
    for spec in DATASETS.values():
        module = importlib.import_module(spec.module)
        assert callable(getattr(module, spec.function)), spec
    # The loaders' own format tables hold exactly the names registered for them.
    cifar = importlib.import_module("alexnet.data.cifar")
    mnist = importlib.import_module("alexnet.data.mnist")
    assert set(cifar.FORMATS) == {n for n, s in DATASETS.items() if s.module == "alexnet.data.cifar"}
    assert set(mnist.SOURCES) == {n for n, s in DATASETS.items() if s.module == "alexnet.data.mnist"}


def test_loaders_return_images_of_their_registered_shape(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    write_mnist(tmp_path / "mnist")
    for name in ("cifar10", "mnist"):
        found = load_splits(name, tmp_path, allow_download=False)
        assert found.train.images.shape[1:] == found.test.images.shape[1:] == DATASETS[name].shape


def test_unknown_names_list_every_dataset(tmp_path):
    with pytest.raises(InputError, match="unknown dataset 'svhn'; known datasets: cifar10, .*cifar100-coarse, .*PATH"):
        load_splits("svhn", tmp_path)
    assert dataset_names().endswith("kmnist or folder:PATH")


def test_help_gives_each_dataset_its_line_and_image_shape():
    text = dataset_help()
    assert "cifar10 (CIFAR-10: 60,000 images, 10 classes; 3x32x32)" in text
    assert "fashion-mnist (Fashion-MNIST: 70,000 clothing images; 1x28x28)" in text
    assert all(f"{name} (" in text for name in DATASETS) and text.endswith("folder:PATH, an image folder")
