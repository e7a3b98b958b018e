import numpy as np
import pytest
import torch

from alexnet.data.device_loader import BatchLoader, epoch_order, shard
from alexnet.data.imageset import ImageSet


def _data(n):
    images = np.broadcast_to((np.arange(n) % 256).astype(np.uint8).reshape(-1, 1, 1, 1), (n, 1, 2, 2)).copy()
    return ImageSet(images, np.arange(n, dtype=np.int64), tuple(str(i) for i in range(n)))


@pytest.mark.parametrize(("n", "world"), [(10, 3), (12, 4), (7, 2), (5, 8)])
def test_shards_cover_each_index_exactly_once(n, world):
    order = epoch_order(n, epoch=3, seed=1, shuffle=True)
    shards = [shard(order, r, world) for r in range(world)]
    together = torch.cat(shards).tolist()
    assert sorted(together) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_loader_shards_cover_the_epoch_without_drop_last():
    seen = []
    for rank in range(3):
        loader = BatchLoader(_data(10), 2, shuffle=True, drop_last=False, seed=5, rank=rank, world_size=3)
        loader.set_epoch(1)
        seen += [label for _, labels in loader for label in labels.tolist()]
    assert sorted(seen) == list(range(10))


def test_drop_last_gives_every_rank_the_same_number_of_full_batches():
    loaders = [BatchLoader(_data(11), 2, shuffle=True, drop_last=True, rank=r, world_size=2) for r in range(2)]
    counts = [len(list(loader)) for loader in loaders]
    assert counts == [2, 2] and all(len(loader) == 2 for loader in loaders)
    for images, labels in loaders[0]:
        assert images.shape == (2, 1, 2, 2) and images.dtype == torch.uint8
        assert torch.equal(images[:, 0, 0, 0].long(), labels)


def test_shuffle_is_seeded_per_epoch():
    loader = BatchLoader(_data(20), 20, shuffle=True, drop_last=False, seed=3)
    first = next(iter(loader))[1]
    assert torch.equal(next(iter(loader))[1], first)  # same epoch, same order
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader))[1], first)
    other = BatchLoader(_data(20), 20, shuffle=True, drop_last=False, seed=4)
    assert not torch.equal(next(iter(other))[1], first)


def test_unshuffled_keeps_order():
    loader = BatchLoader(_data(5), 2, shuffle=False, drop_last=False)
    assert [labels.tolist() for _, labels in loader] == [[0, 1], [2, 3], [4]]


@pytest.mark.gpu
def test_batches_arrive_on_the_gpu():
    loader = BatchLoader(_data(8), 4, shuffle=True, drop_last=True, device="cuda", max_device_bytes=0)
    images, labels = next(iter(loader))
    assert images.is_cuda and labels.is_cuda
