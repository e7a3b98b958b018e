"""``time_budget``: a recipe's schedule fitted into the minutes a user gives, on the machine at hand.

Machines of one kind differ in speed by 1.5x, and a CPU without fast bf16 trains about 3x slower than one
with it (``cifar10-small``'s network at width 64-256-256: 157 images/s in fp32 on an AVX2-only EPYC, 385-509
in bf16 on an AMX Xeon), so a recipe's epochs, tuned where it was measured, can overrun a user's time several
times over. With a budget, a short probe times the run's own training steps and validation pass (a copy of its
model, its data, batch, precision and augmentation, in the engine that trains it), and the run trains the epochs that
fit: never more than the recipe's, and at least one. The schedule keeps its shape (``scale_schedule``):
warm-up and the other epoch counts shrink with the epochs, so the learning rate still warms up and decays to
its end. The epochs chosen are stored in the run's ``config.yaml``; from there on the run is an ordinary
one: reproducible, resumable. A second run with the same budget may choose other epochs on a machine whose
speed drifts.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import lightning.pytorch as pl
import torch

from alexnet.errors import InputError
from alexnet.training.config import TrainConfig

if TYPE_CHECKING:
    from alexnet.training.run import PreparedRun

log = logging.getLogger("alexnet.train")

WARMUP_STEPS = 3  # untimed: the first steps build kernels and caches, and run slower for a while (seen: 20%)
TIMED_STEPS = 8  # timed training steps, and validation batches
# The share of the budget the epochs are planned to fill; the rest absorbs the machine's drift and each epoch's
# start, checkpoints and metrics, which the probe does not see (the flowers recipe, 20 minutes on an AVX2-only
# EPYC in fp32: epochs of 54-74 s, 59.9 s on average, against the probe's 55.5).
PLANNED_SHARE = 0.9


def scale_schedule(config: TrainConfig, epochs: int) -> TrainConfig:
    """``config`` trained for ``epochs``, its other epoch counts (warm-up, the whitening bias's epochs, the
    step schedule's period, late SAM's start, the two-stage head epochs) scaled alike, so the schedule keeps
    its shape."""
    factor = epochs / config.epochs
    return config.replace(
        epochs=epochs,
        warmup_epochs=round(config.warmup_epochs * factor, 4),
        whiten_bias_epochs=round(config.whiten_bias_epochs * factor, 4),
        step_epochs=max(1, round(config.step_epochs * factor)),
        sam_start_epoch=round(config.sam_start_epoch * factor, 4),
        # A two-stage run keeps both stages while it has two epochs: the head's first, then everything.
        head_epochs=min(epochs - 1, max(1, round(config.head_epochs * factor))) if config.head_epochs else 0,
    )


class _Clock(pl.Callback):
    """The end of every training and validation batch, as ``time.perf_counter`` readings."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train.append(time.perf_counter())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.val.append(time.perf_counter())


def _per_batch(ends: list[float], skip: int) -> float:
    """Median seconds between consecutive batch ends, the first ``skip`` intervals left out when there are
    more (a set too small for a warm-up is timed with it: an estimate on the safe side)."""
    gaps = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    return statistics.median(gaps[skip:] if len(gaps) > skip else gaps) if gaps else 0.0


def epoch_seconds(run: PreparedRun) -> float:
    """Seconds one epoch of ``run`` takes here, on average over its epochs: its training steps and its validation
    pass, each timed on a few batches of a probe that trains a copy of the model (the run's own model, data and
    randomness are untouched: the probe's generators are its own, and every epoch reseeds). The probe trains as
    the first epoch does; late SAM (``sam_start_epoch``) makes the later epochs dearer, so both kinds are
    timed and weighted by their share of the run, which scaling the schedule keeps."""
    first = _probe_epoch(run)
    config = run.config
    plain_share = min(1.0, config.sam_start_epoch / config.epochs)  # with late SAM the first epoch is a plain one
    if config.sam_rho > 0 and 0 < plain_share < 1:
        sharpness_aware = _probe_epoch(replace(run, config=config.replace(sam_start_epoch=0.0)))
        return plain_share * first + (1 - plain_share) * sharpness_aware
    return first


def _probe_epoch(run: PreparedRun) -> float:
    """Seconds one epoch of ``run`` takes here if it trains as its first epoch does (``epoch_seconds``)."""
    from alexnet.training.run import build_engine
    from alexnet.training.trainer import quiet_lightning, step_settings

    clock = _Clock()
    quiet_lightning()
    probe = pl.Trainer(
        **step_settings(run.config), devices=1, max_epochs=1, callbacks=[clock], logger=False,
        enable_checkpointing=False, enable_progress_bar=False,
        limit_train_batches=min(run.steps_per_epoch, WARMUP_STEPS + TIMED_STEPS + 1),
    )  # fmt: skip
    engine = build_engine(replace(run, model=copy.deepcopy(run.model)), trainer=probe)
    val_batches = len(engine.data.val_dataloader())  # the loader's own count; 0 without a validation split
    probe.limit_val_batches = min(val_batches, TIMED_STEPS)
    state, start = torch.random.get_rng_state(), time.perf_counter()
    try:
        probe.fit(engine.task, datamodule=engine.data)
    finally:
        torch.random.set_rng_state(state)
    if len(clock.train) < 2:  # one step an epoch: nothing to time it against but the whole probe
        return time.perf_counter() - start
    # Validation from the last training step's end: its start-up included, as every epoch pays it.
    val_s = (clock.val[-1] - clock.train[-1]) / len(clock.val) * val_batches if clock.val else 0.0
    return _per_batch(clock.train, WARMUP_STEPS) * run.steps_per_epoch + val_s


def fit_to_budget(run: PreparedRun) -> PreparedRun:
    """``run`` with the epochs that fit in its ``time_budget`` (at most its own, at least one), said in one line."""
    config = run.config
    if run.layout.world_size > 1:
        raise InputError("time_budget is measured in one process; with several, set --epochs instead")
    seconds = epoch_seconds(run)
    budget = config.time_budget * 60
    fitting = max(1, math.floor(budget * PLANNED_SHARE / max(seconds, 1e-9)))
    if fitting >= config.epochs:
        log.info(
            "time budget %g min: %d epochs of about %.1f s each fit (%.1f min)",
            config.time_budget, config.epochs, seconds, config.epochs * seconds / 60,
        )  # fmt: skip
        return run
    fitted = scale_schedule(config, fitting)
    log.info(
        "time budget %g min: an epoch takes about %.1f s here, so %d of the recipe's %d epochs%s "
        "(warm-up %.4g -> %.4g epochs)",
        config.time_budget, seconds, fitting, config.epochs,
        "" if fitting * seconds <= budget else ", and one epoch is over the budget",
        config.warmup_epochs, fitted.warmup_epochs,
    )  # fmt: skip
    return replace(run, config=fitted)
