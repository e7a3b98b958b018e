import io
import pickle
import tarfile

import numpy as np
import pytest

from alexnet.data.cifar import extract_safely, load_cifar, read_batch
from alexnet.errors import InputError

from fileformats import write_cifar10, write_cifar_batch


@pytest.fixture
def cifar_root(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    return tmp_path


def test_loads_official_layout_written_by_python2(cifar_root):
    data = load_cifar("cifar10", cifar_root, allow_download=False)
    assert data.train.images.shape == (30, 3, 32, 32) and data.train.images.dtype == np.uint8
    assert data.train.classes[0] == "airplane" and len(data.train.classes) == 10
    assert data.test is not None and len(data.test) == 10
    assert "6, 6, 6, 6, 6 rows" in " ".join(data.notes)


def test_pixels_keep_the_official_channel_planes(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    image = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    image[0, 0, 0, 1] = 200  # red plane, row 0, column 1
    image[0, 2, 31, 0] = 77  # blue plane, last row, column 0
    write_cifar_batch(folder / "data_batch_1", image, [3])
    data = load_cifar("cifar10", tmp_path, allow_download=False)
    assert data.train.images[0, 0, 0, 1] == 200 and data.train.images[0, 2, 31, 0] == 77
    assert data.train.labels[0] == 3


def test_python3_keys_and_missing_test_and_meta(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py", py2_keys=False, test=False, meta=False)
    data = load_cifar("cifar10", tmp_path, allow_download=False)
    assert data.test is None
    assert data.train.classes == tuple(str(i) for i in range(10))
    notes = " ".join(data.notes)
    assert "no test_batch" in notes and "--val-fraction" in notes and "no batches.meta" in notes
    with pytest.raises(InputError, match="no test split"):
        data.split("test")


def test_missing_training_batch_is_reported(cifar_root):
    (cifar_root / "cifar-10-batches-py" / "data_batch_5").unlink()
    data = load_cifar("cifar10", cifar_root, allow_download=False)
    assert len(data.train) == 24
    assert "missing" in " ".join(data.notes) and "data_batch_5" in " ".join(data.notes)


def test_cifar100_fine_and_coarse(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = np.zeros((4, 3, 32, 32), dtype=np.uint8)
    for name in ("train", "test"):
        payload = {b"data": images.reshape(4, -1), b"fine_labels": [0, 5, 99, 42], b"coarse_labels": [0, 1, 19, 3]}
        (folder / name).write_bytes(pickle.dumps(payload, protocol=2))
    meta = {
        b"fine_label_names": [f"f{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"c{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    fine = load_cifar("cifar100", tmp_path, allow_download=False)
    coarse = load_cifar("cifar100-coarse", tmp_path, allow_download=False)
    assert fine.train.labels.tolist() == [0, 5, 99, 42] and len(fine.train.classes) == 100
    assert coarse.train.labels.tolist() == [0, 1, 19, 3] and coarse.train.classes[19] == "c19"


class _RunsCode:
    """Unpickling this calls open(marker, "w"): it creates a file if the loader runs pickled code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_batch_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _RunsCode(marker)}, protocol=2))
    with pytest.raises(InputError, match=r"data_batch_1: not a CIFAR batch file .*refusing to load (io|builtins).open"):
        load_cifar("cifar10", tmp_path, allow_download=False)
    assert not marker.exists()


def test_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    with pytest.raises(InputError, match="refusing to load os.system"):
        read_batch(path)
    assert not marker.exists()


def test_bad_data_array_is_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(InputError, match="data_batch_1: 'data' must be a uint8 array"):
        load_cifar("cifar10", tmp_path, allow_download=False)


def _tarball(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def test_official_tarball_is_extracted_and_loaded(tmp_path):
    source = tmp_path / "src"
    write_cifar10(source / "cifar-10-batches-py")
    root = tmp_path / "root"
    root.mkdir()
    files = {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in (source / "cifar-10-batches-py").iterdir()}
    _tarball(root / "cifar-10-python.tar.gz", files)
    data = load_cifar("cifar10", root, allow_download=False)
    assert len(data.train) == 30 and "extracted from" in data.source
    assert (root / "cifar-10-batches-py" / "data_batch_3").exists()


def test_tarball_member_escaping_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    _tarball(root / "cifar-10-python.tar.gz", {"cifar-10-batches-py/data_batch_1": b"x", "../escaped.txt": b"owned"})
    with pytest.raises(InputError, match=r"member '\.\./escaped\.txt' would be written outside"):
        extract_safely(root / "cifar-10-python.tar.gz", root)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (root / "cifar-10-batches-py").exists()


def test_tarball_symlink_member_is_refused(tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        link = tarfile.TarInfo("cifar-10-batches-py/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(InputError, match="'cifar-10-batches-py/link' is a link or device"):
        extract_safely(path, tmp_path)
    assert not (tmp_path / "cifar-10-batches-py").exists()


@pytest.mark.parametrize(
    ("labels", "rows", "message"),
    [
        (["cat"] * 6, 6, "must be whole numbers"),
        ([[1, 2]] * 6, 6, "must hold one label per image"),
        (7, 6, "must be a list of labels, not int"),
        ([2**70] * 6, 6, "must be whole numbers"),
        ([], 0, "holds no images"),
    ],
)
def test_malformed_labels_and_empty_batches_are_one_line_errors(tmp_path, labels, rows, message):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    batch = {b"data": np.zeros((rows, 3072), np.uint8), b"labels": labels}
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(batch))
    with pytest.raises(InputError, match=f"data_batch_1: .*{message}"):
        load_cifar("cifar10", tmp_path)


def test_a_batch_that_is_a_folder_is_named(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").unlink()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").mkdir()
    with pytest.raises(InputError, match="data_batch_1: cannot be read"):
        load_cifar("cifar10", tmp_path)
