"""time_budget's parts: the schedule scaled to fewer epochs, and the probe's per-batch time."""

from dataclasses import dataclass

import pytest

from alexnet.training import budget
from alexnet.training.budget import _per_batch, scale_schedule
from alexnet.training.config import TrainConfig


def test_scaling_keeps_the_schedules_shape():
    config = TrainConfig(
        epochs=60, warmup_epochs=12, whiten_bias_epochs=5, step_epochs=30, head_epochs=2, lr=0.3, early_stopping=4,
        sam_rho=0.05, sam_start_epoch=45,
    )  # fmt: skip
    scaled = scale_schedule(config, 15)
    assert (scaled.epochs, scaled.warmup_epochs, scaled.whiten_bias_epochs) == (15, 3.0, 1.25)
    assert (scaled.sam_rho, scaled.sam_start_epoch) == (0.05, 11.25)
    assert scaled.step_epochs == 8  # 7.5, rounded
    assert scaled.head_epochs == 1  # 0.5 rounds to nothing; a two-stage run keeps its first stage
    assert (scaled.lr, scaled.early_stopping) == (0.3, 4)  # rates and patience are not epoch counts of the schedule
    assert scale_schedule(config, 60) == config
    assert scale_schedule(TrainConfig(epochs=10, head_epochs=0), 1).head_epochs == 0  # one stage stays one
    assert scale_schedule(TrainConfig(epochs=8, head_epochs=6), 2).head_epochs == 1  # the backbone still trains
    assert scale_schedule(TrainConfig(epochs=8, head_epochs=2), 1).head_epochs == 0  # one epoch: one stage
    assert scale_schedule(TrainConfig(epochs=10, step_epochs=3), 1).step_epochs == 1


def test_the_probe_times_batches_after_its_warm_up():
    ends = [0.0, 5.0, 6.0, 7.5, 8.5, 9.5]  # a slow first step, then 1-1.5 s each
    assert _per_batch(ends, 1) == pytest.approx(1.0)
    assert _per_batch(ends, 0) == pytest.approx(1.0)  # the median shrugs off the slow first one too
    assert _per_batch([0.0, 4.0], 3) == pytest.approx(4.0)  # too few to leave the warm-up out: timed with it
    assert _per_batch([1.0], 1) == 0.0  # a single batch has no interval


@dataclass(frozen=True)
class _Run:
    config: TrainConfig


def test_late_sam_is_timed_as_both_kinds_of_epoch_weighted_by_their_share(monkeypatch):
    probed = []

    def probe(run):  # a plain epoch takes 10 s here, one with SAM 18 s
        probed.append(run.config)
        return 18.0 if run.config.sam_rho > 0 and run.config.sam_start_epoch == 0 else 10.0

    monkeypatch.setattr(budget, "_probe_epoch", probe)
    late = TrainConfig(epochs=80, sam_rho=0.05, sam_start_epoch=60)
    assert budget.epoch_seconds(_Run(late)) == pytest.approx(0.75 * 10 + 0.25 * 18)
    assert [(c.sam_rho, c.sam_start_epoch) for c in probed] == [(0.05, 60), (0.05, 0.0)]  # the run, then SAM's
    assert budget.epoch_seconds(_Run(late.replace(sam_start_epoch=0))) == 18.0  # SAM throughout: one probe
    assert budget.epoch_seconds(_Run(late.replace(sam_start_epoch=90))) == 10.0  # never reached: plain epochs
    assert budget.epoch_seconds(_Run(TrainConfig(sam_start_epoch=5))) == 10.0  # no SAM at all
