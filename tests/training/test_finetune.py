"""Fine-tuning: head replacement, freezing with BatchNorm statistics kept, and the two-stage schedule."""

import json

import lightning.pytorch as pl
import pytest
import torch
from safetensors.torch import load_file

from alexnet.cli import main
from alexnet.models.weights import Loaded
from alexnet.training.config import resolve_config
from alexnet.training.finetune import FreezeSchedule
from alexnet.training.run import train

from fileformats import write_learnable_mnist

TINY = {"model": "alexnet_cifar", "data": "mnist", "batch_size": 32, "lr": 0.05, "val_fraction": 0.2,
        "model_options": {"widths": [8, 16, 16, 16, 16]}, "hidden": [32]}  # fmt: skip


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A finished 3-class run, and a 3-class dataset to fine-tune on (same format, other seed)."""
    root = tmp_path_factory.mktemp("data")
    write_learnable_mnist(root / "first" / "mnist", seed=0)
    write_learnable_mnist(root / "second" / "mnist", seed=1)
    run = tmp_path_factory.mktemp("runs") / "source"
    config = resolve_config(overrides={**TINY, "root": str(root / "first"), "epochs": 1})
    train(config, out=run)
    return run, root / "second"


def test_freeze_plan_stages():
    done = Loaded(loaded=("features.0.weight", "classifier.1.weight"), fresh=("classifier.3.weight",))
    two_stage = FreezeSchedule.build(done, "none", head_epochs=2)
    assert [two_stage.trainable("features.0.weight", e) for e in range(4)] == [False, False, True, True]
    assert all(two_stage.trainable("classifier.3.weight", e) for e in range(4))
    features = FreezeSchedule.build(done, "features", head_epochs=0)
    assert not features.trainable("features.0.weight", 5) and features.trainable("classifier.1.weight", 0)
    head_only = FreezeSchedule.build(done, "all-but-head", head_epochs=0)
    assert not head_only.trainable("classifier.1.weight", 3) and head_only.trainable("classifier.3.weight", 3)


def test_frozen_features_and_their_batchnorm_statistics_stay_pretrained(pretrained_run, tmp_path):
    source, data = pretrained_run
    config = resolve_config(overrides={**TINY, "root": str(data), "epochs": 1, "pretrained": str(source),
                                       "freeze": "features"})  # fmt: skip
    train(config, out=tmp_path / "tuned")
    before = load_file(str(source / "model.safetensors"))
    after = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    features = [k for k in before if k.startswith("features.") and not k.endswith("num_batches_tracked")]
    assert any("running_mean" in k for k in features)
    for key in features:
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["classifier.1.weight"], after["classifier.1.weight"])
    # Normalisation comes with the pretrained weights when the channels agree.
    meta = json.loads((tmp_path / "tuned" / "model.json").read_text())
    assert meta["preprocess"]["mean"] == json.loads((source / "model.json").read_text())["preprocess"]["mean"]


class Recorder(pl.Callback):
    def __init__(self):
        self.conv, self.rates = [], []

    def on_train_epoch_end(self, trainer, module):
        self.conv.append(module.model.features[0].weight.detach().clone())
        self.rates.append(sorted({round(g["initial_lr"], 6) for g in trainer.optimizers[0].param_groups}))


def test_two_stage_trains_the_head_then_everything_at_discriminative_rates(pretrained_run, tmp_path):
    source, data = pretrained_run
    # bias_lr_scale 1: the default recipe's 64x for biases would add two more rates to the two checked here.
    config = resolve_config(overrides={**TINY, "root": str(data), "epochs": 2, "pretrained": str(source),
                                       "head_epochs": 1, "backbone_lr_scale": 0.1, "bias_lr_scale": 1.0})  # fmt: skip
    recorder = Recorder()
    train(config, out=tmp_path / "two-stage", callbacks=[recorder])
    start = load_file(str(source / "model.safetensors"))["features.0.weight"]
    assert torch.equal(recorder.conv[0], start)  # stage 1: the pretrained conv did not move
    assert not torch.equal(recorder.conv[1], start)  # stage 2: it trains
    assert recorder.rates[0] == [0.005, 0.05]  # pretrained weights at a tenth of the head's rate


def test_freezing_needs_pretrained_weights(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--freeze", "features", "--out", str(out)]) == 2
    assert "give --pretrained SRC" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "--freeze", "everything", "--out", str(out)]) == 2
    assert "freeze must be one of none, features, all-but-head" in capsys.readouterr().err


def test_weights_that_join_a_group_in_stage_two_train_with_fused_momentum(pretrained_run, tmp_path):
    # One learning rate for all: the pretrained weights share the head's groups, so at the switch a group
    # holds weights with momentum (the head's) and weights without (torch's fused SGD refused that).
    source, data = pretrained_run
    config = resolve_config(overrides={**TINY, "root": str(data), "epochs": 2, "pretrained": str(source),
                                       "head_epochs": 1, "lr": 0.01, "momentum": 0.9, "nesterov": True,
                                       "bias_lr_scale": 1.0})  # fmt: skip
    recorder = Recorder()
    train(config, out=tmp_path / "one-rate", callbacks=[recorder])
    assert recorder.rates[0] == [0.01]  # one group: the head's weights and the pretrained ones
    assert not torch.equal(recorder.conv[1], recorder.conv[0])  # stage 2 trained the pretrained conv


# lookahead off: with fewer steps per epoch than lookahead_steps, each epoch would end on the slow weights.
FAST = {**TINY, "model": "alexnet_cifar_fast", "model_options": {"widths": [8, 16, 16]}, "hidden": None, "lookahead": 0}


@pytest.fixture(scope="module")
def pretrained_fast(pretrained_run, tmp_path_factory):
    """A finished alexnet_cifar_fast run: BatchNorm after every conv, and a first conv with a bias."""
    _, data = pretrained_run
    source = tmp_path_factory.mktemp("runs") / "fast"
    train(resolve_config(overrides={**FAST, "root": str(data), "epochs": 1, "whiten": True}), out=source)
    return source, data


def test_a_pretrained_first_conv_is_not_whitened_and_its_bias_keeps_the_freeze(pretrained_fast, tmp_path):
    source, data = pretrained_fast
    config = resolve_config(overrides={**FAST, "root": str(data), "epochs": 1, "pretrained": str(source),
                                       "head_epochs": 1, "whiten": True, "whiten_bias_epochs": 3})  # fmt: skip
    assert config.whiten and not config.whitens
    train(config, out=tmp_path / "tuned")
    tuned = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    start = load_file(str(source / "model.safetensors"))
    assert torch.equal(tuned["features.0.weight"], start["features.0.weight"])
    assert torch.equal(tuned["features.0.bias"], start["features.0.bias"])  # stage 1: frozen, whiten or not


class NormModes(pl.Callback):
    """Each epoch: whether each BatchNorm layer normalised by batch statistics, and the weights at its end."""

    def __init__(self):
        self.training, self.weights = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            norms = [m for m in module.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            self.training.append([m.training for m in norms])

    def on_train_epoch_end(self, trainer, module):
        self.weights.append({k: v.detach().clone() for k, v in module.model.state_dict().items()})


def test_stage_two_normalises_by_batch_statistics_from_its_first_step_and_fixed_scales_stay(pretrained_fast, tmp_path):
    source, data = pretrained_fast
    config = resolve_config(overrides={**FAST, "root": str(data), "epochs": 2, "pretrained": str(source),
                                       "head_epochs": 1, "bn_scale": False})  # fmt: skip
    modes = NormModes()
    train(config, out=tmp_path / "tuned", callbacks=[modes])
    assert not any(modes.training[0]) and all(modes.training[1])  # stage 1: pretrained statistics; 2: batch
    tuned, start = modes.weights[1], load_file(str(source / "model.safetensors"))
    scales = [k for k in start if k.endswith(".weight") and start[k].ndim == 1]
    assert scales and all(torch.equal(tuned[k], start[k]) for k in scales)  # bn_scale off: never trained
    assert not torch.equal(tuned["features.0.weight"], start["features.0.weight"])  # stage 2 trained
