"""The LightningDataModule: our whole-dataset loaders, with batch augmentation on the training device."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from alexnet.data.augment import Preprocess, mix
from alexnet.data.device_loader import BatchLoader
from alexnet.data.imageset import Dataset
from alexnet.seeding import MIRRORS, epoch_seed


class ImageDataModule(pl.LightningDataModule):
    """Serves uint8 batches of ``dataset`` sharded by rank, and turns them into model inputs after they
    reach the device (``on_after_batch_transfer``): random training views as model inputs, or the evaluation
    views as stored pixels (``Preprocess.test_crops``: uint8, a quarter of float32's bytes; ten crops of a
    256-image batch at 227 px are 0.4 GB, not 1.6), which the task finishes a pass at a time.

    Augmentation randomness comes from a generator seeded by (seed, epoch, rank), so an epoch's
    batches and augmentations are the same whether or not the run was interrupted before it. With
    ``alternate_flips`` each training image's mirror is drawn once from the seed and inverted every other
    epoch (airbench's derandomised flips: every image is seen both ways in any two epochs). With ``mixup``
    or ``cutmix`` training batches carry soft targets (N, K) instead of class indices (``augment.mix``).
    """

    def __init__(
        self,
        dataset: Dataset,
        preprocess: Preprocess,
        *,
        batch_size: int,
        seed: int,
        tta: str = "none",
        alternate_flips: bool = False,
        mixup: float = 0.0,
        cutmix: float = 0.0,
    ) -> None:
        super().__init__()
        self.dataset, self.preprocess = dataset, preprocess
        self.batch_size, self.seed, self.tta = batch_size, seed, tta
        self.alternate_flips = alternate_flips and preprocess.flip
        self.mixup, self.cutmix = mixup, cutmix
        self._generator: torch.Generator | None = None
        self._generator_epoch = -1
        self._first_flips: torch.Tensor | None = None

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split, *, train: bool) -> BatchLoader:
        rank, world = self._rank()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        return BatchLoader(
            split,
            self.batch_size,
            shuffle=train,
            drop_last=train,
            seed=self.seed,
            rank=rank,
            world_size=world,
            device=device,
            epoch_source=(lambda: self.trainer.current_epoch) if train and self.trainer is not None else None,
            with_indices=train and self.alternate_flips,
        )

    def train_dataloader(self) -> BatchLoader:
        return self._loader(self.dataset.train, train=True)

    def val_dataloader(self) -> BatchLoader | list:
        return self._loader(self.dataset.val, train=False) if self.dataset.val is not None else []

    def test_dataloader(self) -> BatchLoader:
        return self._loader(self.dataset.split("test"), train=False)

    def _train_generator(self, device: torch.device) -> torch.Generator:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if self._generator is None or self._generator_epoch != epoch:
            rank, _ = self._rank()
            self._generator = torch.Generator(device=device).manual_seed(epoch_seed(self.seed, epoch, rank=rank))
            self._generator_epoch = epoch
        return self._generator

    def mirrored(self, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        """Which of the training samples ``indices`` are mirrored in ``epoch`` under alternating flips."""
        if self._first_flips is None:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, 0, stream=MIRRORS))
            self._first_flips = torch.rand(len(self.dataset.train), generator=generator) < 0.5
        return self._first_flips.to(indices.device)[indices] ^ bool(epoch % 2)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels, *indices = batch
        if self.trainer is not None and self.trainer.training:
            generator = self._train_generator(images.device)
            mirrored = self.mirrored(indices[0], self.trainer.current_epoch) if indices else None
            inputs = self.preprocess.train(images, generator, mirrored=mirrored)
            if self.mixup or self.cutmix:
                classes = len(self.dataset.train.classes)
                return mix(inputs, labels, classes, generator, mixup=self.mixup, cutmix=self.cutmix)
            return inputs, labels
        tta = self.tta if self.trainer is not None and self.trainer.testing else "none"
        return self.preprocess.test_crops(images, tta), labels
