import numpy as np
import pytest

from alexnet.data.imageset import Dataset, ImageSet, channel_stats, split_train, stratified_split
from alexnet.errors import InputError


def _set(labels):
    labels = np.array(labels, dtype=np.int64)
    images = np.broadcast_to(np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1), (len(labels), 1, 2, 2))
    return ImageSet(images.copy(), labels, ("a", "b", "c"))


def test_stratified_split_keeps_class_shares():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    kept, taken = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[taken]).tolist() == [10, 6, 4]
    assert sorted(kept.tolist() + taken.tolist()) == list(range(100))
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(taken) > 0)
    again, _ = stratified_split(labels, 0.2, seed=0)
    other, _ = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(kept, again) and not np.array_equal(kept, other)


def test_split_train_fifth_and_validation():
    data = Dataset("x", _set([0] * 50 + [1] * 50 + [2] * 50), test=None)
    split = split_train(data, train_fraction=0.2, val_fraction=0.1, seed=0)
    assert split.val.class_counts() == [5, 5, 5]
    assert split.train.class_counts() == [9, 9, 9]  # a fifth of the 45 per class left after validation
    train_ids = set(split.train.images[:, 0, 0, 0].tolist())
    assert not train_ids & set(split.val.images[:, 0, 0, 0].tolist())
    # The validation images do not depend on the training fraction.
    whole = split_train(data, train_fraction=1.0, val_fraction=0.1, seed=0)
    assert np.array_equal(whole.val.images, split.val.images)


@pytest.mark.parametrize(
    ("kwargs", "flag"), [({"train_fraction": 0.0}, "--train-fraction"), ({"val_fraction": 1.0}, "--val-fraction")]
)
def test_bad_fractions(kwargs, flag):
    with pytest.raises(InputError, match=flag):
        split_train(Dataset("x", _set([0, 1, 2]), test=None), **kwargs)


def test_imageset_checks_its_arrays():
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(np.zeros((2, 1, 2, 2), np.float32), np.zeros(2, np.int64), ("a",))
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(np.zeros((2, 2, 2), np.uint8), np.zeros(2, np.int64), ("a",))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ImageSet(np.zeros((2, 1, 2, 2), np.uint8), np.zeros(3, np.int64), ("a",))


def test_channel_stats():
    images = np.zeros((4, 2, 3, 3), dtype=np.uint8)
    images[:, 1] = 255
    images[:2, 0] = 255
    mean, std = channel_stats(images)
    assert mean == pytest.approx([0.5, 1.0]) and std == pytest.approx([0.5, 0.0], abs=1e-7)


def test_channel_stats_of_a_sample_match_numpy():
    images = np.random.default_rng(0).integers(0, 256, (3000, 3, 4, 4), dtype=np.uint8)
    mean, std = channel_stats(images)
    scaled = images / 255.0
    assert mean == pytest.approx(scaled.mean((0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(scaled.std((0, 2, 3)).tolist(), abs=1e-9)


def test_a_missing_split_names_the_dataset_and_where_it_was_found():
    data = Dataset("mnist", _set([0, 1] * 5), None, source="found in /data/mnist")
    with pytest.raises(InputError) as raised:
        data.split("test")
    assert str(raised.value) == (
        "mnist (found in /data/mnist) has no test split; hold one out of the training data with --val-fraction"
    )
