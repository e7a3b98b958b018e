import json

import numpy as np
import pytest
from PIL import Image

from alexnet.data.datasets import load_splits
from alexnet.data.folder import class_from_filename, load_folder, natural_key
from alexnet.errors import InputError
from smalldisk import small_disk


def _img(path, value, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def _class_tree(root, classes=("class10", "class2", "class1"), per_class=5):
    for c, name in enumerate(classes):
        for i in range(per_class):
            _img(root / name / f"{i}.png", 10 * c + i)
    return root


def test_class_folders_natural_order_and_skips(tmp_path):
    root = _class_tree(tmp_path / "flowers")
    (root / "LICENSE.txt").write_text("CC-BY")
    (root / "class1" / "notes.txt").write_text("not an image")
    (root / "class2" / "broken.jpg").write_bytes(Image.new("RGB", (30, 30)).tobytes()[:50])  # not a JPEG at all
    data = load_folder(root, tmp_path / "cache", storage_size=8, test_fraction=0.2)
    assert data.train.classes == ("class1", "class2", "class10")
    assert data.train.images.shape[1:] == (3, 8, 8)
    assert len(data.train) + len(data.test) == 15
    assert data.test.class_counts() == [1, 1, 1]
    assert "1 unreadable images skipped" in data.notes[0] and "broken.jpg" in data.notes[0]


def test_held_out_test_split_is_the_same_for_every_seed(tmp_path):
    root = _class_tree(tmp_path / "f", per_class=10)  # every image a different grey: its sum names it
    ids = lambda images: sorted(images.sum((1, 2, 3)).tolist())  # noqa: E731
    first, other = (load_splits(f"folder:{root}", tmp_path / "cache", val_fraction=0.2, seed=s) for s in (0, 3))
    assert len(first.test) == 6 and ids(first.test.images) == ids(other.test.images)
    # The validation split still follows the seed, drawn from the same remaining images.
    assert ids(first.val.images) != ids(other.val.images)
    assert ids(np.r_[first.train.images, first.val.images]) == ids(np.r_[other.train.images, other.val.images])
    # A model card of an older run names the seed its test split was drawn with.
    older = load_splits(f"folder:{root}", tmp_path / "cache", val_fraction=0.2, seed=3, test_seed=3)
    assert len(older.test) == 6 and ids(older.test.images) != ids(first.test.images)


def test_truncated_jpeg_is_listed_and_skipped(tmp_path):
    root = _class_tree(tmp_path / "f", classes=("a", "b"), per_class=3)
    good = root / "a" / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    data = load_folder(root, tmp_path / "cache", storage_size=8)
    assert len(data.train) + len(data.test) == 6
    assert "big.jpg" in " ".join(data.notes)


def test_flat_folder_classes_from_file_names(tmp_path):
    root = tmp_path / "train"
    for i in range(4):
        _img(root / f"cat.{i}.jpg", 20)
        _img(root / f"dog.{i}.jpg", 220)
    data = load_folder(root, tmp_path / "cache", storage_size=8, test_fraction=0.25)
    assert data.train.classes == ("cat", "dog")
    everything = np.concatenate([data.train.images, data.test.images])
    labels = np.concatenate([data.train.labels, data.test.labels])
    assert (everything[labels == 0] < 60).all() and (everything[labels == 1] > 180).all()


@pytest.mark.parametrize(
    ("name", "label"),
    [("cat.123.jpg", "cat"), ("great_pyrenees_7.jpg", "great_pyrenees"), ("dog12.png", "dog"), ("rose.jpg", "rose")],
)
def test_class_from_filename(tmp_path, name, label):
    assert class_from_filename(tmp_path / name) == label


def test_natural_sort():
    assert sorted(["10", "2", "1", "B", "a"], key=natural_key) == ["1", "2", "10", "a", "B"]


def test_split_folders(tmp_path):
    _class_tree(tmp_path / "data" / "train", classes=("a", "b"), per_class=3)
    _class_tree(tmp_path / "data" / "test", classes=("a", "b"), per_class=2)
    _class_tree(tmp_path / "data" / "val", classes=("a", "b"), per_class=1)
    data = load_folder(tmp_path / "data", tmp_path / "cache", storage_size=8)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 4)
    assert not data.notes and data.test_origin == "the dataset's own test split"
    flat = load_folder(tmp_path / "data" / "train", tmp_path / "cache", storage_size=8)
    assert flat.test_held_out == 0.2 and "held out of the training files" in flat.test_origin


def test_test_class_unknown_to_train_is_an_error(tmp_path):
    _class_tree(tmp_path / "d" / "train", classes=("a",), per_class=2)
    _class_tree(tmp_path / "d" / "test", classes=("a", "z"), per_class=1)
    with pytest.raises(InputError, match="classes z appear in test/val but not in train/"):
        load_folder(tmp_path / "d", tmp_path / "cache", storage_size=8)


def test_empty_class_folder_is_named(tmp_path):
    root = _class_tree(tmp_path / "f", classes=("a",), per_class=2)
    (root / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: class folder holds no images"):
        load_folder(root, tmp_path / "cache")


def test_no_images_at_all(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "README.md").write_text("x")
    with pytest.raises(InputError, match="f: no images"):
        load_folder(tmp_path / "f", tmp_path / "cache")


def test_cache_reused_then_rebuilt_when_folder_changes(tmp_path, caplog):
    root = _class_tree(tmp_path / "f", classes=("a", "b"), per_class=3)
    cache_root = tmp_path / "cache"
    first = load_folder(root, cache_root, storage_size=8)
    cache_dir = next((cache_root / "folder-cache").iterdir())
    stamp = (cache_dir / "images.npy").stat().st_mtime_ns
    again = load_folder(root, cache_root, storage_size=8)
    assert (cache_dir / "images.npy").stat().st_mtime_ns == stamp
    assert np.array_equal(again.train.images, first.train.images)
    _img(root / "b" / "new.png", 200)
    changed = load_folder(root, cache_root, storage_size=8)
    assert len(changed.train) + len(changed.test) == 7
    assert json.loads((cache_dir / "meta.json").read_text())["files"][-1].endswith("new.png")
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_splits_are_views_of_one_memory_mapped_cache(tmp_path):
    _class_tree(tmp_path / "d" / "train", classes=("a", "b"), per_class=3)
    _class_tree(tmp_path / "d" / "test", classes=("a", "b"), per_class=2)
    data = load_folder(tmp_path / "d", tmp_path / "cache", storage_size=8)
    assert isinstance(data.train.images.base, np.memmap)
    assert data.test.images.base is data.train.images.base  # slices of one map, not copies


@pytest.mark.parametrize("damage", ["meta", "images"])
def test_a_damaged_cache_is_decoded_again(tmp_path, damage):
    for c, name in enumerate(("cat", "dog")):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (80 * c, 10 * i, 0)).save(tmp_path / "pets" / name / f"{i}.png")
    first = load_folder(tmp_path / "pets", tmp_path / "cache", storage_size=16)
    cache = next((tmp_path / "cache").rglob("meta.json")).parent
    if damage == "meta":
        (cache / "meta.json").write_text("{ not json")
    else:
        (cache / "images.npy").write_bytes((cache / "images.npy").read_bytes()[:100])
    again = load_folder(tmp_path / "pets", tmp_path / "cache", storage_size=16)
    assert np.array_equal(again.train.images, first.train.images)
    assert np.array_equal(again.test.labels, first.test.labels)


def test_file_names_that_are_not_utf8_are_read_and_shown(tmp_path, capsys):
    import os

    from alexnet.cli import main

    from modeldirs import write_model_dir

    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (i * 60, 0, 0)).save(tmp_path / "pets" / name / f"{i}.png")
    odd = os.fsencode(tmp_path / "pets" / "cat") + b"/caf\xe9.png"  # Latin-1 bytes in a name
    Image.new("RGB", (20, 20)).save(odd.decode("utf-8", "surrogateescape"))
    dataset = load_folder(tmp_path / "pets", tmp_path / "cache", storage_size=16)
    assert len(dataset.train) + len(dataset.test) == 7
    run = write_model_dir(tmp_path / "model")
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(tmp_path / "pets" / "cat"), "--out", str(out)]) == 0
    assert "caf\\xe9.png" in capsys.readouterr().out and "caf\\xe9.png" in out.read_text()
    assert main(["predict", str(run), str(tmp_path / "pets" / "cat"), "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err
    assert main(["predict", str(run), str(tmp_path / "pets"), "--out", str(tmp_path / "nowhere" / "p.csv")]) == 2
    assert "nowhere: no such folder for p.csv" in capsys.readouterr().err and not (tmp_path / "nowhere").exists()


def test_a_full_disk_while_decoding_is_one_line_naming_the_cache(tmp_path):
    for c, name in enumerate(("cat", "dog")):
        for i in range(20):
            _img(tmp_path / "pets" / name / f"{i}.png", 100 * c + i, size=(64, 64))
    with small_disk(tmp_path / "small", "128k") as small:
        # 40 images of 3 x 64 x 64 bytes need 480 KiB: the decoding processes would die of SIGBUS writing
        # into a memory map of a sparse file (BrokenProcessPool); the space is reserved before they start.
        with pytest.raises(InputError, match=r"images\.npy: no space left on the device"):
            load_folder(tmp_path / "pets", small, storage_size=64)
        assert not list(small.rglob("*.tmp")) and not list(small.rglob("meta.json"))


def test_images_are_stored_at_their_own_size_up_to_256_by_default(tmp_path):
    from alexnet.data.folder import NATURAL_SIZE_LIMIT

    for c, name in enumerate(("cat", "dog")):
        for i in range(3):
            _img(tmp_path / "tiny" / name / f"{i}.png", 50 * c + i, size=(32, 32))
            _img(tmp_path / "photos" / name / f"{i}.png", 50 * c + i, size=(400, 300))
            _img(tmp_path / "mixed" / name / f"{i}.png", 50 * c + i, size=(20 + 20 * i, 48))
    assert load_folder(tmp_path / "tiny", tmp_path / "cache").train.image_shape == (3, 32, 32)  # not blown up
    assert load_folder(tmp_path / "photos", tmp_path / "cache").train.image_shape[-1] == NATURAL_SIZE_LIMIT == 256
    assert load_folder(tmp_path / "mixed", tmp_path / "cache").train.image_shape[-1] == 48  # the largest short side
    assert load_folder(tmp_path / "tiny", tmp_path / "cache", storage_size=64).train.image_shape[-1] == 64
