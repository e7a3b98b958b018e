import signal
from types import SimpleNamespace

import pytest

from alexnet.training.callbacks import GracefulStop, Interrupted


class _Trainer(SimpleNamespace):
    def save_checkpoint(self, path):
        self.saved.append((path, self.moment))


def _stopper(tmp_path):
    stop = GracefulStop(tmp_path / "last.ckpt")
    stop._handler(signal.SIGTERM, None)  # as if the signal had arrived during the step
    return stop


def test_a_signal_during_a_middle_step_stops_after_that_step(tmp_path):
    trainer = _Trainer(num_training_batches=4, saved=[], moment="step 2")
    with pytest.raises(Interrupted, match="stopped by SIGTERM"):
        _stopper(tmp_path).on_train_batch_end(trainer, None, None, None, batch_idx=1)
    assert trainer.saved == [(tmp_path / "last.ckpt", "step 2")]


def test_a_signal_during_the_last_step_waits_for_the_epochs_end(tmp_path):
    trainer = _Trainer(num_training_batches=4, saved=[], moment="last step")
    stop = _stopper(tmp_path)
    stop.on_train_batch_end(trainer, None, None, None, batch_idx=3)  # validation and the metrics row still to come
    assert trainer.saved == []
    trainer.moment = "epoch end"
    with pytest.raises(Interrupted):
        stop.on_train_epoch_end(trainer, None)
    assert trainer.saved == [(tmp_path / "last.ckpt", "epoch end")]
