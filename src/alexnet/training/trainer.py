"""Turns a ``TrainConfig`` into a Lightning ``Trainer``: precision, callbacks, loggers, checkpoints."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from alexnet.atomic import atomic_path
from alexnet.runtime import resolve_precision
from alexnet.training.callbacks import EpochMetrics, GracefulStop, ImagesPerSecondBar, ReseedEachEpoch
from alexnet.training.distributed import Layout, build_strategy


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file, fsyncs it and renames it into place, so ``kill -9`` at any
    moment leaves the previous checkpoint intact; loads with ``weights_only=True`` (never runs pickled code)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as temporary:
            torch.save(checkpoint, temporary)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None):
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def lightning_precision(precision: str, accelerator: str) -> str:
    """Lightning's precision string for ``auto``/``fp32``/``bf16`` (``runtime.resolve_precision`` decides):
    bf16 trains under autocast, with fp32 master weights."""
    resolved = resolve_precision(precision, "cuda" if accelerator == "gpu" else "cpu")
    return "bf16-mixed" if resolved == "bf16" else "32-true"


def step_settings(config) -> dict:
    """The Trainer arguments that decide what a training step computes and at what speed: the accelerator (a
    GPU where torch sees one, else the CPU), precision, gradient clipping and determinism. The run's trainer
    and ``time_budget``'s probe both take them from here, so the probe times the steps the run will take."""
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    return {
        "accelerator": accelerator,
        "precision": lightning_precision(config.precision, accelerator),
        "gradient_clip_val": config.grad_clip or None,
        "deterministic": config.deterministic,
        "num_sanity_val_steps": 0,
        "enable_model_summary": False,
    }


def quiet_lightning() -> None:
    """Lightning sets its loggers to INFO on import; its start-up lines (accelerators, tips) are noise to us."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _is_terminal(stream) -> bool:
    # A pseudo-terminal of zero width (some CI runners) would draw empty bars.
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):
        return False


def build_trainer(
    config, run_dir: Path, layout: Layout, *, has_validation: bool, steps_per_epoch: int, extra_callbacks: Sequence = ()
) -> pl.Trainer:
    """A Trainer writing into ``run_dir``: checkpoints/{last,best}.ckpt, tensorboard/, metrics.csv; with DDP
    across ``layout``'s processes when there are several (only global rank 0 writes)."""
    settings = step_settings(config)
    accelerator = settings["accelerator"]
    checkpoints = run_dir / "checkpoints"
    interactive = _is_terminal(sys.stdout)  # Lightning's bars draw on stdout; else one plain line per epoch
    monitor = {"monitor": "val_acc", "mode": "max"} if has_validation else {}
    # last.ckpt every epoch. With validation, by a callback of its own: Lightning's save_last writes it only in an
    # epoch whose best.ckpt improved, so a stalled validation left it epochs behind. Without validation best.ckpt
    # is saved every epoch and its save_last does the job (two callbacks would share Lightning's state key,
    # which it refuses).
    last = ModelCheckpoint(
        dirpath=checkpoints, filename="last", save_on_train_epoch_end=True, enable_version_counter=False
    )
    callbacks = [
        EpochMetrics(run_dir / "metrics.csv", log_lines=not interactive, world_size=layout.world_size),
        # best.ckpt first: trainer.checkpoint_callback (the best weights, tested at the end) is the first one.
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="best",
            save_top_k=1,
            save_last=not has_validation,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
            **monitor,
        ),
        *([last] if has_validation else []),
        LearningRateMonitor(logging_interval="epoch"),
        GracefulStop(checkpoints / "last.ckpt"),
        ReseedEachEpoch(config.seed),
        *extra_callbacks,
    ]
    if config.early_stopping and has_validation:
        callbacks.append(EarlyStopping("val_acc", mode="max", patience=config.early_stopping))
    quiet_lightning()
    # Our epoch figures are torchmetrics results, already reduced over the processes: no sync_dist needed.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(.*sync_dist=True")
    # A resumed run writes into its own checkpoint folder on purpose.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    if interactive:
        callbacks.append(ImagesPerSecondBar())
    return pl.Trainer(
        **settings,
        devices=layout.devices,
        num_nodes=layout.num_nodes,
        strategy=build_strategy(layout, accelerator, config.dist_timeout_s),
        # torch's SyncBatchNorm runs on GPUs only: on CPUs each process normalises over its own batch.
        sync_batchnorm=layout.world_size > 1 and config.sync_batchnorm and accelerator == "gpu",
        max_epochs=config.epochs,
        callbacks=callbacks,
        logger=TensorBoardLogger(run_dir, name="tensorboard", version="", default_hp_metric=False),
        default_root_dir=run_dir,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=interactive,
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
        **({} if has_validation else {"limit_val_batches": 0}),
    )
