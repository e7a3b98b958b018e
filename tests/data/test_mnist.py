import dataclasses
import gzip

import numpy as np
import pytest

from alexnet.data import mnist
from alexnet.data.mnist import load_mnist_family, read_idx
from alexnet.errors import InputError

from fileformats import write_idx, write_mnist


@pytest.mark.parametrize("gz", [True, False])
def test_reads_idx_gzipped_or_raw(tmp_path, gz):
    write_mnist(tmp_path / "mnist", gz=gz)
    data = load_mnist_family("mnist", tmp_path, allow_download=False)
    assert data.train.images.shape == (12, 1, 28, 28)
    assert data.train.labels.tolist() == [i % 10 for i in range(12)]
    assert len(data.test) == 5 and data.train.classes[3] == "3"


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    write_idx(tmp_path / "raw-but-named.gz", array, gz=False)
    write_idx(tmp_path / "gz-without-suffix", array, gz=True)
    assert (read_idx(tmp_path / "raw-but-named.gz", expect_dims=3) == array).all()
    assert (read_idx(tmp_path / "gz-without-suffix", expect_dims=3) == array).all()


def test_bad_magic_is_named(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(InputError, match="train-images-idx3-ubyte: not an IDX file of unsigned bytes"):
        read_idx(path, expect_dims=3)


def test_truncated_file_is_caught_by_its_header(tmp_path):
    path = tmp_path / "t.gz"
    write_idx(path, np.zeros((3, 28, 28)), gz=False)
    path.write_bytes(gzip.compress(path.read_bytes()[:-10]))
    with pytest.raises(InputError, match=r"header promises \(3, 28, 28\)"):
        read_idx(path, expect_dims=3)


def test_images_of_another_size_are_named(tmp_path):
    write_mnist(tmp_path / "fashion-mnist")
    write_idx(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz", np.zeros((12, 32, 32)), gz=True)
    with pytest.raises(InputError, match="train-images-idx3-ubyte.gz: holds 32x32 images; fashion-mnist's are 28x28"):
        load_mnist_family("fashion-mnist", tmp_path, allow_download=False)


def test_image_and_label_counts_must_agree(tmp_path):
    write_mnist(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.zeros(11), gz=True)
    with pytest.raises(InputError, match="12 images but train-labels-idx1-ubyte.gz has 11 labels"):
        load_mnist_family("mnist", tmp_path, allow_download=False)


def test_subset_without_test_files(tmp_path):
    write_mnist(tmp_path)
    for p in tmp_path.glob("t10k-*"):
        p.unlink()
    data = load_mnist_family("mnist", tmp_path, allow_download=False)
    assert data.test is None and "no test split" in data.notes[0]


def test_torchvision_raw_folder_is_found(tmp_path):
    write_mnist(tmp_path / "FashionMNIST" / "raw")
    data = load_mnist_family("fashion-mnist", tmp_path, allow_download=False)
    assert data.train.classes[0] == "T-shirt/top" and "FashionMNIST" in data.source


def test_the_system_copy_counts_only_with_its_training_images(tmp_path, monkeypatch):
    # An empty folder at the system path (made by hand, or by a failed download before downloads cleaned
    # up after themselves) is not the dataset: the loader looks on, the real-data tests skip, and `make
    # data`, which checks the same file, still installs the package.
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    system.mkdir()
    spec = dataclasses.replace(mnist.SOURCES["fashion-mnist"], system_folder=str(system))
    monkeypatch.setitem(mnist.SOURCES, "fashion-mnist", spec)
    assert mnist.system_copy("fashion-mnist") is None
    with pytest.raises(InputError, match="fashion-mnist"):
        load_mnist_family("fashion-mnist", tmp_path / "empty-root", allow_download=False)
    write_mnist(system)
    assert mnist.system_copy("fashion-mnist") == system
    data = load_mnist_family("fashion-mnist", tmp_path / "empty-root", allow_download=False)
    assert str(system) in data.source and len(data.train) == 12
    assert mnist.system_copy("mnist") is None  # no system package for MNIST


def test_download_fetches_all_four_official_files(tmp_path, monkeypatch):
    served = tmp_path / "served"
    write_mnist(served)
    calls = []

    def fake_download(urls, destination, md5):
        calls.append((urls[0], md5))
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes((served / destination.name).read_bytes())
        return destination

    monkeypatch.setattr(mnist, "download", fake_download)
    data = load_mnist_family("kmnist", tmp_path / "root")
    assert "downloaded to" in data.source and len(data.train) == 12
    assert calls[0] == (
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/train-images-idx3-ubyte.gz",
        "bdb82020997e1d708af4cf47b453dcf7",
    )
    assert len(calls) == 4


def test_an_idx_gzip_bomb_is_refused_from_its_header_in_bounded_memory(tmp_path):
    import tracemalloc

    header = b"\x00\x00\x08\x03" + (1).to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big")
    with gzip.open(tmp_path / "bomb.gz", "wb", compresslevel=9) as f:
        f.write(header)
        for _ in range(50):
            f.write(bytes(4 * 2**20))  # 200 MiB of zeros behind a header that declares 784 bytes
    assert (tmp_path / "bomb.gz").stat().st_size < 2**20
    tracemalloc.start()
    with pytest.raises(InputError, match=r"header promises \(1, 28, 28\) = 784 bytes, file holds 784\+"):
        read_idx(tmp_path / "bomb.gz", expect_dims=3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 2**20
    huge = b"\x00\x00\x08\x03" + (2**32 - 1).to_bytes(4, "big") * 3
    (tmp_path / "huge").write_bytes(huge)
    with pytest.raises(InputError, match="over the 1,073,741,824 read"):
        read_idx(tmp_path / "huge", expect_dims=3)


def test_an_idx_path_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").mkdir()
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte: cannot be read \(.*directory"):
        read_idx(tmp_path / "train-images-idx3-ubyte", expect_dims=3)
