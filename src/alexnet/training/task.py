"""The LightningModule for image classification: loss, metrics, optimiser and schedule from the config."""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from alexnet.inference import average_views
from alexnet.models.weights import Loaded
from alexnet.training.distill import distillation_loss
from alexnet.training.finetune import FreezeSchedule, apply_freeze, freeze_norms
from alexnet.training.optim import (
    SharpnessAware,
    build_optimizer,
    build_scheduler,
    kept_norm_statistics,
    start_momentum,
)
from alexnet.training.speedups import Lookahead, first_conv


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


class ClassificationTask(pl.LightningModule):
    """Trains ``model`` with cross-entropy; logs train/val loss and accuracy per epoch; tests top-1/top-5.

    Batches arrive from the data module as (N, C, S, S) float inputs for training and, for evaluation, as
    (V, N, C, s, s) views still in stored pixels (``Preprocess.test_crops``), which ``finish_views`` makes
    model inputs a pass at a time (``inference.average_views``) and whose softmax outputs are averaged
    (test-time augmentation). Without ``finish_views`` the views must arrive as model inputs.
    """

    def __init__(
        self,
        model: nn.Module,
        config,
        classes: tuple[str, ...],
        steps_per_epoch: int,
        loaded: Loaded | None = None,
        teacher: nn.Module | None = None,
        finish_views: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.finish_views = finish_views
        self.loaded = loaded
        self.freeze = None
        if loaded is not None:
            fixed = [name for name, parameter in model.named_parameters() if not parameter.requires_grad]
            self.freeze = FreezeSchedule.build(loaded, config.freeze, config.head_epochs, fixed)
            apply_freeze(model, self.freeze, epoch=0)
        self.config = config
        self.classes = classes
        self.steps_per_epoch = steps_per_epoch
        k = len(classes)
        self.ema = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
            if config.ema_decay > 0
            else None
        )
        self.lookahead = (
            Lookahead(config.lookahead, config.lookahead_steps, config.epochs * steps_per_epoch)
            if config.lookahead > 0
            else None
        )
        self.sam = SharpnessAware(config.sam_rho) if config.sam_rho > 0 else None
        self._at_moved_weights = False  # SAM's second pass: its loss and accuracy are not the step's
        self._taught: torch.Tensor | None = None  # the teacher's probabilities for the batch being trained on
        # Metrics stay on the device and are reduced once per epoch (and across processes).
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(k, average="micro")
        self.val_acc = MulticlassAccuracy(k, average="micro")
        self.test_top1 = MulticlassAccuracy(k, average="micro")
        self.test_top5 = MulticlassAccuracy(k, top_k=min(5, k), average="micro")
        self.test_confusion = MulticlassConfusionMatrix(k)
        # Kept out of the module tree, so checkpoint keys stay those of the plain model (no "_orig_mod.").
        object.__setattr__(self, "_train_forward", torch.compile(model) if config.compile else model)
        # distill's teacher (training.distill), frozen; out of the module tree too: not trained, not checkpointed
        object.__setattr__(self, "teacher", teacher)

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are validated, tested and exported: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.evaluated(images)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch  # labels: class indices (N,), or soft targets (N, K) when batches are mixed
        logits = self._train_forward(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing)
        if self.teacher is not None:
            temperature, weight = self.config.distill_temperature, self.config.distill_weight
            if not self._at_moved_weights:  # SAM's second pass sees the same batch: the teacher's answer stands
                with torch.no_grad():
                    self._taught = self.teacher(images, temperature)
            loss = (1 - weight) * loss + weight * distillation_loss(logits, self._taught, temperature)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"the training loss became {loss.item()} at epoch {self.current_epoch}, step {batch_idx}"
            )
        if self._at_moved_weights:
            return loss
        self.train_loss.update(loss.detach())
        self.train_acc.update(logits.detach(), labels.argmax(1) if labels.ndim == 2 else labels)
        return loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """With ``sam_rho``, from epoch ``sam_start_epoch`` on: the closure (forward, backward) runs at the weights,
        then at the weights moved uphill (``SharpnessAware``), and the optimiser steps from the weights with the
        second gradient."""
        if self.sam is None or optimizer_closure is None or epoch < self.config.sam_start_epoch:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        optimizer_closure()
        self.sam.ascend(self.model)

        def at_moved_weights():
            self._at_moved_weights = True
            try:
                with kept_norm_statistics(self.model):
                    return optimizer_closure()
            finally:
                self._at_moved_weights = False
                self.sam.restore()

        optimizer.step(closure=at_moved_weights)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        if self.lookahead is not None:
            # The epoch's last update comes before its validation, which runs ahead of on_train_epoch_end.
            epoch_end = batch_idx + 1 == self.trainer.num_training_batches
            self.lookahead.step(self.model, self.global_step, epoch_end=epoch_end)

    def on_train_epoch_end(self) -> None:
        self.log_dict({"train_loss": self.train_loss.compute(), "train_acc": self.train_acc.compute()})
        self.train_loss.reset()
        self.train_acc.reset()

    def _views_logits(self, views: torch.Tensor) -> torch.Tensor:
        """Mean softmax over the views, returned as log-probabilities (N, K), under Lightning's own autocast."""
        return average_views(self, views, self.finish_views).clamp_min(1e-12).log()

    def validation_step(self, batch, batch_idx: int) -> None:
        views, labels = batch
        log_probabilities = self._views_logits(views)
        self.val_loss.update(F.nll_loss(log_probabilities, labels, reduction="none"))  # a mean per image
        self.val_acc.update(log_probabilities, labels)

    def on_validation_epoch_end(self) -> None:
        self.log_dict({"val_loss": self.val_loss.compute(), "val_acc": self.val_acc.compute()})
        self.val_loss.reset()
        self.val_acc.reset()

    def test_step(self, batch, batch_idx: int) -> None:
        views, labels = batch
        log_probabilities = self._views_logits(views)
        self.test_loss.update(F.nll_loss(log_probabilities, labels, reduction="none"))
        self.test_top1.update(log_probabilities, labels)
        self.test_top5.update(log_probabilities, labels)
        self.test_confusion.update(log_probabilities, labels)

    def on_test_epoch_end(self) -> None:
        self.log_dict(
            {
                "test_loss": self.test_loss.compute(),
                "test_top1": self.test_top1.compute(),
                "test_top5": self.test_top5.compute(),
            }
        )

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze is not None:
            freeze_norms(self.model)  # frozen BatchNorm layers keep their pretrained statistics
        return self

    def on_train_epoch_start(self) -> None:
        if self.freeze is not None:
            apply_freeze(self.model, self.freeze, self.current_epoch)  # the two-stage schedule's switch
            start_momentum(self.trainer.optimizers[0])
        if self.config.whitens and first_conv(self.model).bias is not None:
            # The whitening conv's bias trains for the first epochs, then stays (its filters never train).
            first_conv(self.model).bias.requires_grad_(self.current_epoch < self.config.whiten_bias_epochs)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.lookahead is not None:
            checkpoint["lookahead"] = self.lookahead.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.lookahead is not None:
            self.lookahead.load_state_dict(checkpoint.get("lookahead", {}))

    def configure_optimizers(self):
        scaled = self.loaded.loaded if self.loaded is not None else ()
        exclude = self.freeze.always_frozen if self.freeze is not None else ()
        optimizer = build_optimizer(self.model, self.config, scaled=scaled, exclude=exclude)
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(optimizer, self.config, self.steps_per_epoch)}
