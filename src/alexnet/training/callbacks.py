"""Our Lightning callbacks: the run's metrics.csv, a plain per-epoch line, throughput, and signals."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import signal
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from alexnet.atomic import write_text
from alexnet.seeding import GLOBAL, epoch_seed

log = logging.getLogger("alexnet.train")

# Epochs are counted from 1 wherever a user sees them: metrics.csv's "epoch" is the number of epochs finished
# when the row was written, as in the progress lines ("epoch 3/10"), the curves and report.json's "epochs".
METRICS_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "time_s", "images_per_s")


class Interrupted(RuntimeError):
    """Training stopped on SIGINT or SIGTERM after finishing a step and saving ``last.ckpt``."""

    def __init__(self, signal_name: str, checkpoint: Path) -> None:
        super().__init__(f"stopped by {signal_name}; the last step was saved to {checkpoint}")
        self.signal_name, self.checkpoint = signal_name, checkpoint


def read_metrics(path: Path) -> list[dict[str, str]]:
    """Rows of a run's metrics.csv (empty when there is none)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class EpochMetrics(pl.Callback):
    """Times each epoch and writes ``metrics.csv``: exactly one row per finished epoch.

    The file is rewritten atomically after every epoch from the rows of earlier epochs, so a run killed at
    any moment and resumed from its checkpoint holds one row for each epoch that checkpoint had finished
    (Lightning's CSVLogger appends per logging step and cannot promise that across kills). With
    ``log_lines`` it also logs one plain line per epoch, for when there is no progress bar.
    """

    def __init__(self, path: Path, *, log_lines: bool = True, world_size: int = 1) -> None:
        self.path, self.log_lines = path, log_lines
        self.world_size = world_size  # every process trains equal batches: images/s is this one's times this
        self.rows: list[dict[str, str]] = []
        self._start = self._train_end = 0.0
        self._images = 0

    def on_train_start(self, trainer, pl_module) -> None:
        # After the checkpoint's loops are restored: keep only the epochs that checkpoint had finished.
        self.rows = [r for r in read_metrics(self.path) if int(r["epoch"]) <= trainer.current_epoch]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start, self._train_end, self._images = time.perf_counter(), 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[1])

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.training and not self._train_end:
            self._train_end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Runs before the module's own epoch-end hook resets the training metrics, and after validation.
        now = time.perf_counter()
        train_s = (self._train_end or now) - self._start
        val = trainer.callback_metrics
        row = {
            "epoch": trainer.current_epoch + 1,  # counted from 1 (METRICS_COLUMNS)
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "train_loss": float(pl_module.train_loss.compute()),
            "train_acc": float(pl_module.train_acc.compute()),
            "val_loss": float(val["val_loss"]) if "val_loss" in val else math.nan,
            "val_acc": float(val["val_acc"]) if "val_acc" in val else math.nan,
            "time_s": now - self._start,
            "images_per_s": self._images * self.world_size / train_s if train_s > 0 else math.nan,
        }
        self.rows = [r for r in self.rows if int(r["epoch"]) < row["epoch"]]
        self.rows.append({k: str(v) if isinstance(v, int) else f"{v:.6g}" for k, v in row.items()})
        if not trainer.is_global_zero:  # every process computed the (reduced) figures; one writes them
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, METRICS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.path, buffer.getvalue())
        if not self.log_lines:
            return
        shown = f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.4f}" if "val_acc" in val else ""
        log.info(
            "epoch %d/%d  lr %.3g  train_loss %.4f  train_acc %.4f%s  %.1f s  %.0f images/s",
            row["epoch"], trainer.max_epochs, row["lr"], row["train_loss"], row["train_acc"], shown,
            row["time_s"], row["images_per_s"],
        )  # fmt: skip


class ReseedEachEpoch(pl.Callback):
    """Seeds torch's global generator (dropout, anything else that draws from it) from (seed, epoch, rank)
    as each epoch starts, so an epoch draws the same numbers whether or not the run was resumed before it."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch, rank=trainer.global_rank, stream=GLOBAL))


class ImagesPerSecondBar(TQDMProgressBar):
    """TQDM bar per epoch that also shows training images/s."""

    def __init__(self) -> None:
        super().__init__(leave=True)
        self._start = time.perf_counter()
        self._images = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._start, self._images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[1])
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        if pl_module.training:
            metrics["loss"] = (
                f"{float(pl_module.train_loss.compute()):.4f}" if pl_module.train_loss.update_called else ""
            )
            metrics["acc"] = f"{float(pl_module.train_acc.compute()):.4f}" if pl_module.train_acc.update_called else ""
        elapsed = time.perf_counter() - self._start
        metrics["img/s"] = f"{self._images / elapsed:.0f}" if elapsed > 0 else ""
        return metrics


class GracefulStop(pl.Callback):
    """On SIGINT or SIGTERM: finish the current step, save ``last.ckpt``, then raise ``Interrupted``.

    A second signal while that happens is ignored; the handlers in place before fit are restored after it.
    """

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        self.received = self.received or signal.Signals(signum).name

    def on_fit_start(self, trainer, pl_module) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Outside the main thread signal() raises ValueError: leave signals to whoever owns them.
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handler)

    def _stop_if_signalled(self, trainer) -> None:
        if self.received:
            trainer.save_checkpoint(self.checkpoint)
            raise Interrupted(self.received, self.checkpoint)

    # Checked after every training step and at each epoch end: always before Lightning's own SIGTERM check,
    # which would exit with status 0 and no checkpoint. Once an epoch's last step is done, the stop waits for
    # the epoch's end (its validation, its metrics row): a checkpoint taken between the last step and the
    # epoch's end resumes into the next epoch, and that epoch's row and validation were lost.
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 < trainer.num_training_batches:
            self._stop_if_signalled(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop_if_signalled(trainer)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
