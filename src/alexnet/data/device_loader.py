"""Epochs of uint8 batches from a dataset held whole in memory (or on the GPU): seeded shuffle, drop-last,
and a disjoint shard per rank for distributed training."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from alexnet.data.imageset import ImageSet
from alexnet.seeding import epoch_seed


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s slice of ``indices``: every ``world_size``-th one from position ``rank``.

    The shards are disjoint and together hold every index once; their lengths differ by at most one.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return indices[rank::world_size]


def epoch_order(n: int, *, epoch: int, seed: int, shuffle: bool) -> torch.Tensor:
    """The order of the ``n`` samples in ``epoch``: a permutation seeded by (seed, epoch), or 0..n-1."""
    if not shuffle:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=generator)


class BatchLoader:
    """Iterates (images uint8 (B, C, H, W), labels int64 (B,)) batches of one rank's shard, on ``device``;
    with ``with_indices``, (images, labels, sample indices int64 (B,)).

    A dataset of at most ``max_device_bytes`` is moved to ``device`` once (CIFAR-10 is 180 MB); a larger
    one (a folder cache, memory-mapped) stays on the host and each batch is gathered there and copied
    over, pinned and non-blocking. With ``drop_last`` every
    rank yields the same number of full batches (the shortest shard's), as DDP's lock-step needs;
    without it every sample of the shard is yielded once.
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        max_device_bytes: int = 4 << 30,
        epoch_source: Callable[[], int] | None = None,
        with_indices: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.data, self.batch_size = data, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.epoch = 0
        self.epoch_source = epoch_source  # e.g. the trainer's current epoch, read when an epoch starts
        self.with_indices = with_indices  # also yield each batch's sample indices (per-sample augmentation)
        images = torch.from_numpy(data.images)  # no copy: a memory-mapped set still loads page by page
        self._gather_on_host = self.device.type != "cpu" and data.images.nbytes > max_device_bytes
        self._images = images if self._gather_on_host else images.to(self.device)
        self._labels = torch.from_numpy(data.labels).to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields (as ``DistributedSampler.set_epoch``)."""
        self.epoch = epoch

    def _shard_length(self) -> int:
        n = len(self.data)
        return n // self.world_size if self.drop_last else len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        length = self._shard_length()
        return length // self.batch_size if self.drop_last else -(-length // self.batch_size)

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in order."""
        if self.epoch_source is not None:
            self.epoch = self.epoch_source()
        order = epoch_order(len(self.data), epoch=self.epoch, seed=self.seed, shuffle=self.shuffle)
        return shard(order, self.rank, self.world_size)[: self._shard_length()]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        mine = self.indices()
        for b in range(len(self)):
            idx = mine[b * self.batch_size : (b + 1) * self.batch_size]
            if self._gather_on_host:
                images = self._images[idx].pin_memory().to(self.device, non_blocking=True)
            else:
                images = self._images[idx.to(self._images.device)]
            labels = self._labels[idx.to(self._labels.device)]
            yield (images, labels, idx.to(self._labels.device)) if self.with_indices else (images, labels)
