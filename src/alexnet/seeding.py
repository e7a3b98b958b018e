"""The seeding policy: every random stream of a run derives its seed from the run's seed here, and only here.

A stream's seed depends on (seed, epoch, rank) alone, so an epoch's batch order, augmentations and dropout
masks are the same whether or not the run was interrupted before it. The streams:

- batch order: ``epoch_seed(seed, epoch)``, shared by every process (each then takes its own shard);
- training views (crops, flips, lighting): ``epoch_seed(seed, epoch, rank=rank)``;
- torch's global generator (dropout): ``epoch_seed(seed, epoch, rank=rank, stream=GLOBAL)``;
- alternating flips' mirrors, drawn once per run: ``epoch_seed(seed, 0, stream=MIRRORS)``.

The members of an ensemble trained in one command (``members: N``) are runs of seeds ``member_seed(seed, k)``,
k = 0 .. N-1, with the ensemble's ``data_seed`` as their ``split_seed``: they train on the same images.

The validation split held out of the training images follows the run's seed, or its ``split_seed`` where one
is set (``TrainConfig.data_seed``; ensemble members share one to be validated together); a
test split held out of an image folder with no ``test/`` does not: it is drawn with ``TEST_SPLIT_SEED``, so
every run on a folder is tested on the same images and none of them trained on another run's test images
(model cards record it as ``data.test_seed``; cards of format 2 and older drew it with the run's seed).
"""

from __future__ import annotations

GLOBAL = 17
MIRRORS = 7919
TEST_SPLIT_SEED = 0  # seed 0's draw: runs of seed 0 keep the test split they had when the run's seed drew it


def member_seed(seed: int, index: int) -> int:
    """The seed of an ensemble's member ``index`` (from 0): the ensemble's seed for the first, then the next ones."""
    return seed + index


def epoch_seed(seed: int, epoch: int, *, rank: int | None = None, stream: int = 0) -> int:
    """The seed of one epoch's stream; ``rank`` None for a stream every process shares."""
    base = seed * 1_000_003 + epoch
    return (base if rank is None else base * 4099 + rank) + stream
