"""`alexnet train` end to end on small learnable data in the real MNIST file format."""

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml

from alexnet.cli import main
from alexnet.errors import InputError
from smalldisk import small_disk

from fileformats import write_learnable_mnist

TINY = [
    "--model", "alexnet_cifar", "--data", "mnist", "--batch-size", "32", "--lr", "0.05", "--val-fraction", "0.2",
]  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_learnable_mnist(root / "mnist")
    return root


def _tiny_config(tmp_path, epochs=2, **extra):
    path = tmp_path / "tiny.yaml"
    settings = {"model_options": {"widths": [8, 16, 16, 16, 16]}, "hidden": [32], "epochs": epochs, **extra}
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


def _train(tmp_path, data_root, out, *extra, epochs=2):
    args = [
        "train",
        *TINY,
        "--root",
        str(data_root),
        "--config",
        str(_tiny_config(tmp_path, epochs)),
        "--out",
        str(out),
    ]
    return main([*args, *extra])


def _metrics(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in rows]


def test_train_writes_the_whole_run_directory(tmp_path, data_root):
    run = tmp_path / "run"
    assert _train(tmp_path, data_root, run, epochs=3) == 0
    for name in ("config.yaml", "metrics.csv", "curves.png", "confusion.png", "predictions.png", "report.json",
                 "model.safetensors", "model.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):  # fmt: skip
        assert (run / name).exists(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    rows = _metrics(run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "time_s", "images_per_s"]
    report = json.loads((run / "report.json").read_text())
    assert report["test_top1"] > 0.9, report  # the blocks are easy: a working engine learns them
    assert report["test_images"] == 100 and report["classes"] == list("0123456789")
    assert sum(map(sum, report["confusion"])) == 100
    for ckpt in ("last", "best"):
        loaded = torch.load(run / "checkpoints" / f"{ckpt}.ckpt", weights_only=True)
        assert "state_dict" in loaded
    # The config is re-runnable as it stands.
    assert main(["train", "--config", str(run / "config.yaml"), "--epochs", "1", "--out", str(tmp_path / "again")]) == 0


def test_a_run_records_what_training_did_and_notes_test_views_it_never_did(tmp_path, data_root, capsys):
    run = tmp_path / "still"
    assert _train(tmp_path, data_root, run, "--padding", "0", "--no-flip", "--tta", "flip", epochs=1) == 0
    assert json.loads((run / "model.json").read_text())["preprocess"]["augmented"] == []
    assert "note: tta: test views 'flip' hold mirrors, which training never showed" in capsys.readouterr().err
    moved = tmp_path / "moved"
    assert _train(tmp_path, data_root, moved, "--padding", "2", "--tta", "flip-translate", epochs=1) == 0
    assert json.loads((moved / "model.json").read_text())["preprocess"]["augmented"] == ["mirrors", "shifts"]
    assert "note:" not in capsys.readouterr().err


def test_the_test_after_training_scores_its_views_as_alexnet_evaluate_does(tmp_path, data_root):
    from types import SimpleNamespace

    from alexnet.evaluation import evaluate
    from alexnet.inference import load_classifier
    from alexnet.training.datamodule import ImageDataModule

    run = tmp_path / "crops"
    # a BatchNorm epsilon of the run's own (the cifar10 recipes' 1e-12; a large one here, to tell) is the model's
    views = ["--padding", "2", "--tta", "ten-crop", "--precision", "fp32", "--set", "bn_eps=0.5"]
    assert _train(tmp_path, data_root, run, *views, epochs=1) == 0
    report = json.loads((run / "report.json").read_text())
    norms = [m for m in load_classifier(run).model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and {m.eps for m in norms} == {0.5}
    again = evaluate(run, root=data_root, tta="ten-crop", precision="fp32", batch_size=7, write=False)
    assert report["test_top1"] == again["top1"] and report["test_loss"] == pytest.approx(again["loss"], rel=1e-5)
    # losses are means over images, the 100 test and 120 validation images being no whole number of batches of 32
    validated = evaluate(run, root=data_root, split="val", precision="fp32", write=False)
    assert (validated["n"], again["n"]) == (120, 100)
    assert float(_metrics(run)[-1]["val_loss"]) == pytest.approx(validated["loss"], rel=1e-5)
    # The views reach the task as stored pixels, a quarter of the bytes of model inputs, and are made inputs
    # a pass at a time there.
    preprocess = load_classifier(run, precision="fp32").preprocess
    data = ImageDataModule(SimpleNamespace(), preprocess, batch_size=5, seed=0, tta="ten-crop")
    data.trainer = SimpleNamespace(training=False, testing=True)
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    crops, _ = data.on_after_batch_transfer((images, torch.zeros(5)), 0)
    assert crops.dtype == torch.uint8 and crops.shape == (10, 5, 1, 28, 28)


def test_same_seed_same_metrics(tmp_path, data_root):
    assert _train(tmp_path, data_root, tmp_path / "a") == 0
    assert _train(tmp_path, data_root, tmp_path / "b") == 0
    assert _comparable(_metrics(tmp_path / "a")) == _comparable(_metrics(tmp_path / "b"))


class _DieAtEpoch(pl.Callback):
    """Stands in for a kill: the process dies as epoch ``epoch`` starts, after the previous epoch's checkpoint."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise _Killed


class _Killed(Exception):
    pass


def test_resume_after_the_first_epoch_matches_an_uninterrupted_run(tmp_path, data_root):
    from alexnet.training.config import load_resume, resolve_config
    from alexnet.training.run import train

    config = resolve_config(config_file=_tiny_config(tmp_path, 2)).replace(
        model="alexnet_cifar", data="mnist", root=str(data_root), batch_size=32, lr=0.05, val_fraction=0.2
    )
    train(config, out=tmp_path / "whole")
    with pytest.raises(_Killed):
        train(config, out=tmp_path / "cut", callbacks=[_DieAtEpoch(1)])
    assert [r["epoch"] for r in _metrics(tmp_path / "cut")] == ["1"]
    train(load_resume(tmp_path / "cut", {}), resume=tmp_path / "cut")
    assert _comparable(_metrics(tmp_path / "cut")) == _comparable(_metrics(tmp_path / "whole"))
    whole = json.loads((tmp_path / "whole" / "report.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "report.json").read_text())
    assert resumed["test_top1"] == whole["test_top1"] and resumed["test_loss"] == whole["test_loss"]


def test_resume_with_more_epochs_extends_a_finished_run(tmp_path, data_root):
    run = tmp_path / "run"
    assert _train(tmp_path, data_root, run, epochs=1) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert [r["epoch"] for r in _metrics(run)] == ["1", "2"]
    assert json.loads((run / "report.json").read_text())["epochs"] == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "resnet50"], "unknown model 'resnet50'"),
        (["--data", "imagenet"], "unknown dataset 'imagenet'"),
        (["--model", "alexnet", "--image-size", "32"], "alexnet cannot take 32x32 images; the smallest it takes is 63"),
        (["--recipe", "nope"], "unknown recipe 'nope'"),
        (["--hidden", "x"], "hidden must be widths"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, data_root, capsys, flags, message):
    out = tmp_path / "never"
    assert main(["train", *TINY, "--root", str(data_root), *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_resume_of_something_that_is_not_a_run(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no config.yaml (not a run directory)" in capsys.readouterr().err


def test_model_flag_drops_the_recipes_model_options():
    from alexnet.training.config import resolve_config

    config = resolve_config(overrides={"model": "alexnet"})
    assert config.model_options == {} and config.hidden is None


def test_nan_loss_stops_with_a_clear_message(tmp_path, data_root, capsys):
    run = tmp_path / "run"
    code = _train(tmp_path, data_root, run, "--lr", "1e30", epochs=2)
    assert code == 1
    err = capsys.readouterr().err
    assert "the training loss became nan" in err.lower() or "the training loss became inf" in err.lower()


def _spawn(tmp_path, data_root, out, epochs):
    args = [sys.executable, "-m", "alexnet", "train", *TINY, "--root", str(data_root),
            "--config", str(_tiny_config(tmp_path, epochs)), "--out", str(out)]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, process, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_last_checkpoint_and_says_how_to_resume(tmp_path, data_root, sig):
    run = tmp_path / "run"
    process = _spawn(tmp_path, data_root, run, epochs=30)
    _wait_for(run / "metrics.csv", process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0
    assert f"stopped by {sig.name}" in err and f"--resume {run}" in err
    assert "state_dict" in torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    rows = _metrics(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    # The saved step resumes to the end with one row per epoch.
    assert main(["train", "--resume", str(run)]) == 0
    assert [int(r["epoch"]) for r in _metrics(run)] == list(range(1, 31))


def test_resume_removes_the_temporaries_a_kill_left(tmp_path, data_root):
    run = tmp_path / "run"
    assert _train(tmp_path, data_root, run, epochs=1) == 0
    stray = run / "checkpoints" / ".last.ckpt.abc123.tmp"
    stray.write_bytes(b"half a checkpoint")
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert not stray.exists() and not list(run.rglob("*.tmp"))


def test_kill_9_then_resume_keeps_one_row_per_epoch(tmp_path, data_root):
    run = tmp_path / "run"
    process = _spawn(tmp_path, data_root, run, epochs=3)
    _wait_for(run / "checkpoints" / "last.ckpt", process)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # never half-written
    assert main(["train", "--resume", str(run)]) == 0
    rows = _metrics(run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert saved["epoch"] <= 2


def test_ema_weights_are_the_ones_exported(tmp_path, data_root):
    from safetensors.torch import load_file

    path = tmp_path / "ema.yaml"
    path.write_text(json.dumps({"model_options": {"widths": [8, 16, 16, 16, 16]}, "hidden": [32], "epochs": 2,
                                "ema_decay": 0.9}))  # fmt: skip
    run = tmp_path / "run"
    assert main(["train", *TINY, "--root", str(data_root), "--config", str(path), "--out", str(run)]) == 0
    exported = load_file(run / "model.safetensors")
    state = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    key = "classifier.3.weight"
    assert torch.equal(exported[key], state[f"ema.module.{key}"])
    assert not torch.equal(exported[key], state[f"model.{key}"])


def test_progress_bar_on_a_terminal(tmp_path, data_root):
    """On a 120-column pseudo-terminal the per-epoch bar shows loss, accuracy and images/s."""
    import fcntl
    import pty
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    args = [sys.executable, "-m", "alexnet", "train", *TINY, "--root", str(data_root),
            "--config", str(_tiny_config(tmp_path, 1)), "--out", str(tmp_path / "run")]  # fmt: skip
    process = subprocess.Popen(args, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = bytearray()
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        output.extend(chunk)
    os.close(controller)
    text = output.decode(errors="replace")
    assert process.wait(timeout=60) == 0, text
    assert "img/s=" in text and "loss=" in text and "acc=" in text, text


@pytest.mark.slow
def test_compiled_training_exports_plain_keys(tmp_path, data_root):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    assert _train(tmp_path, data_root, run, "--compile", epochs=1) == 0
    keys = list(load_file(run / "model.safetensors"))
    assert keys and not [k for k in keys if "_orig_mod" in k]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not [k for k in state if "_orig_mod" in k]


@contextlib.contextmanager
def _training_log() -> Iterator[list[str]]:
    """The lines the training logger says inside the block (the CLI's own handler writes to whatever
    stderr was when it was set up, out of capsys's reach)."""
    import logging

    said = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("alexnet.train").addHandler(handler)
    try:
        yield said
    finally:
        logging.getLogger("alexnet.train").removeHandler(handler)


def test_a_training_set_smaller_than_one_batch_trains_on_the_whole_set(tmp_path, data_root):
    run = tmp_path / "run"
    with _training_log() as said:
        assert _train(tmp_path, data_root, run, "--train-fraction", "0.05", "--batch-size", "1024", epochs=1) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["batch_size_per_process"] == 24  # 5% of the 480 training images
    assert any("batch size 1024 is larger than the training set; using 24" in line for line in said)
    assert not any(line.startswith("MixUp/CutMix") for line in said)  # said only when mixing is on
    assert (run / "checkpoints" / "last.ckpt").exists() and len(_metrics(run)) == 1


FAST = [
    "--model", "alexnet_cifar_fast", "--set", "model_options={widths: [8, 16, 16]}", "--set", "whiten=true",
    "--set", "lookahead=0.9", "--set", "alternate_flips=true", "--set", "padding=2", "--set", "padding_mode=reflect",
    "--set", "schedule=linear", "--set", "final_lr=0.1", "--set", "warmup_start=0.2", "--set", "bias_lr_scale=8",
    "--set", "bn_scale=false", "--set", "bn_momentum=0.4", "--set", "mixup=0.2", "--set", "cutmix=1.0",
    "--tta", "flip-translate",
]  # fmt: skip


def test_speed_options_train_reproducibly_and_resume_exactly(tmp_path, data_root):
    def run(out, *extra):
        args = ["train", *TINY, "--root", str(data_root), "--epochs", "2", *FAST, "--lr", "0.5", "--out", str(out)]
        return main([*args, *extra])

    with _training_log() as said:
        assert run(tmp_path / "a") == 0 and run(tmp_path / "b") == 0
    assert any(line.startswith("MixUp/CutMix on: train_acc is measured on the mixed batches") for line in said)
    assert _comparable(_metrics(tmp_path / "a")) == _comparable(_metrics(tmp_path / "b"))
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["test_top1"] > 0.9 and report["tta"] == "flip-translate"
    config = report["config"]
    assert config["whiten"] and config["lookahead"] == 0.9 and config["model_options"] == {"widths": [8, 16, 16]}
    assert config["mixup"] == 0.2 and config["cutmix"] == 1.0
    state = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    slow = state["lookahead"]["slow"]
    assert set(slow) >= {"features.0.weight", "features.2.weight"}
    assert state["lookahead"]["updated_at"] == state["global_step"]  # each epoch ends with an update
    # The whitening filters never train; its bias trained during the first epochs.
    whitened = state["state_dict"]["model.features.0.weight"]
    assert torch.equal(whitened, slow["features.0.weight"])

    from alexnet.training.config import load_resume
    from alexnet.training.run import train

    config = load_resume(tmp_path / "a", {})
    with pytest.raises(_Killed):
        train(config, out=tmp_path / "cut", callbacks=[_DieAtEpoch(1)])
    train(load_resume(tmp_path / "cut", {}), resume=tmp_path / "cut")
    assert _comparable(_metrics(tmp_path / "cut")) == _comparable(_metrics(tmp_path / "a"))


def test_set_names_a_setting_and_a_yaml_value(tmp_path, data_root, capsys):
    out = tmp_path / "never"
    assert main(["train", *TINY, "--root", str(data_root), "--set", "lookahed=0.9", "--out", str(out)]) == 2
    assert "unknown setting 'lookahed'" in capsys.readouterr().err
    assert main(["train", *TINY, "--root", str(data_root), "--set", "lookahead", "--out", str(out)]) == 2
    assert "--set takes KEY=VALUE" in capsys.readouterr().err
    assert not out.exists()


def test_last_checkpoint_is_the_last_epoch_even_when_validation_stalls(tmp_path, data_root):
    # lr 0 and frozen BatchNorm statistics: the weights never change, so val_acc never improves after epoch 0.
    run = tmp_path / "run"
    flags = ["--lr", "0", "--schedule", "constant", "--bn-momentum", "0", "--dropout", "0"]
    assert _train(tmp_path, data_root, run, *flags, epochs=3) == 0
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert last["epoch"] == 2 and best["epoch"] == 0
    # Extending the run continues from its last epoch, not from the best one.
    assert main(["train", "--resume", str(run), "--epochs", "4"]) == 0
    assert [int(r["epoch"]) for r in _metrics(run)] == [1, 2, 3, 4]


def test_an_out_that_is_a_file_or_unwritable_is_one_line(tmp_path, data_root, capsys):
    (tmp_path / "taken").write_text("a file")
    assert _train(tmp_path, data_root, tmp_path / "taken") == 2
    assert "taken: is a file; --out takes a folder" in capsys.readouterr().err
    assert _train(tmp_path, data_root, tmp_path / "taken" / "run") == 2
    assert "a file stands where a folder is needed" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"garbage, not a zip", "hostile"])
def test_resume_from_a_broken_or_hostile_checkpoint_is_one_line(tmp_path, data_root, capsys, content):
    run = tmp_path / "run"
    assert _train(tmp_path, data_root, run, epochs=1) == 0
    capsys.readouterr()
    last = run / "checkpoints" / "last.ckpt"
    if content == "hostile":
        torch.save({"state_dict": {}, "hook": print}, last)  # a pickled function: refused, never run
    else:
        last.write_bytes(content)
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "last.ckpt: not a readable checkpoint" in err and "weights_only=False" not in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_run_is_not_marked_finished_without_its_exported_model(tmp_path, data_root, monkeypatch):
    import alexnet.modeldir as modeldir

    def full_disk(*args, **kwargs):
        raise InputError("model.safetensors: no space left on the device")

    monkeypatch.setattr(modeldir, "save_model_dir", full_disk)
    run = tmp_path / "run"
    assert _train(tmp_path, data_root, run, epochs=1) == 2
    assert not (run / "report.json").exists() and (run / "checkpoints" / "last.ckpt").exists()


def test_one_class_is_a_one_line_error(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "only" / "cats"
    folder.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")
    code = main(["train", "--data", f"folder:{tmp_path / 'only'}", "--root", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "run"), "--epochs", "1"])  # fmt: skip
    assert code == 2 and "found 1 class; a classifier needs two or more" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_without_validation_keeps_last_and_best(tmp_path, data_root):
    run = tmp_path / "run"
    assert _train(tmp_path, data_root, run, "--val-fraction", "0", epochs=2) == 0
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1 and (run / "checkpoints" / "best.ckpt").exists()


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_file(tmp_path, data_root):
    with small_disk(tmp_path / "small", "200k") as small:
        # A process of its own, as a user runs it: its stderr is exactly what the user would see.
        args = ["train", *TINY, "--root", str(data_root), "--epochs", "2", "--out", str(small / "run")]
        done = subprocess.run([sys.executable, "-m", "alexnet", *args], capture_output=True, text=True, timeout=300)
        err = done.stderr
        assert done.returncode == 2 and "no space left on the device" in err and "Traceback" not in err
        assert not list((small / "run").rglob("*.tmp"))  # no half-written file left behind


@pytest.mark.slow
def test_kill_9_at_twenty_random_moments_still_ends_as_an_uninterrupted_run(tmp_path, data_root):
    import random
    import shutil

    reference = tmp_path / "reference"
    assert _train(tmp_path, data_root, reference, epochs=5) == 0
    run, kills, rng = tmp_path / "run", 0, random.Random(0)
    while True:
        if (run / "checkpoints" / "last.ckpt").exists():
            args = [sys.executable, "-m", "alexnet", "train", "--resume", str(run)]
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        else:  # killed before its first checkpoint: a user starts the run again
            shutil.rmtree(run, ignore_errors=True)
            process = _spawn(tmp_path, data_root, run, epochs=5)
        if kills < 20:
            time.sleep(rng.uniform(0.3, 4.0))  # start-up, any step, checkpoint writes, test, plots, export
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                kills += 1
        _, err = process.communicate(timeout=300)
        assert process.returncode in (-signal.SIGKILL, 0), err[-2000:]
        if process.returncode == 0 and kills < 20:
            shutil.rmtree(run)  # finished before the next kill: start over, so that every kill lands in a run
        elif process.returncode == 0:
            break
    assert [r["epoch"] for r in _metrics(run)] == [str(e) for e in range(1, 6)]
    assert _comparable(_metrics(run)) == _comparable(_metrics(reference))
    final, expected = (json.loads((r / "report.json").read_text()) for r in (run, reference))
    assert final["test_top1"] == expected["test_top1"] and final["test_loss"] == pytest.approx(expected["test_loss"])


def test_a_time_budget_trains_the_epochs_that_fit_and_is_an_ordinary_run_after(tmp_path, data_root):
    with _training_log() as said:
        assert _train(tmp_path, data_root, tmp_path / "budget", "--time-budget", "1e-6", epochs=3) == 0
    [line] = [line for line in said if line.startswith("time budget")]
    assert "so 1 of the recipe's 3 epochs, and one epoch is over the budget (warm-up 1 -> 0.3333 epochs)" in line
    from alexnet.training.config import load_resume

    chosen = load_resume(tmp_path / "budget", {})  # config.yaml: the epochs chosen, the schedule scaled
    assert (chosen.epochs, chosen.warmup_epochs, chosen.time_budget) == (1, 0.3333, 1e-6)
    # The probe trained a copy of the model and drew nothing from the run's randomness: the run is the one
    # its config.yaml describes.
    assert _train(tmp_path, data_root, tmp_path / "fixed", "--warmup-epochs", "0.3333", epochs=1) == 0
    assert _comparable(_metrics(tmp_path / "budget")) == _comparable(_metrics(tmp_path / "fixed"))
    reports = [json.loads((tmp_path / run / "report.json").read_text()) for run in ("budget", "fixed")]
    assert reports[0]["test_loss"] == reports[1]["test_loss"]

    with _training_log() as said:
        assert _train(tmp_path, data_root, tmp_path / "roomy", "--time-budget", "1000", epochs=2) == 0
    assert any(line.startswith("time budget 1000 min: 2 epochs of about") for line in said)
    assert [r["epoch"] for r in _metrics(tmp_path / "roomy")] == ["1", "2"]


def test_late_sam_trains_within_a_time_budget_reproducibly_from_its_start_epoch(tmp_path, data_root):
    sam = ("--set", "sam_rho=0.05", "--set", "sam_start_epoch=1")
    with _training_log() as said:
        assert _train(tmp_path, data_root, tmp_path / "sam", *sam, "--time-budget", "1000") == 0
    assert any(line.startswith("time budget 1000 min: 2 epochs of about") for line in said)
    assert _train(tmp_path, data_root, tmp_path / "again", *sam) == 0
    assert _train(tmp_path, data_root, tmp_path / "plain") == 0
    rows, again, plain = (_comparable(_metrics(tmp_path / run)) for run in ("sam", "again", "plain"))
    assert rows == again  # the same seed, the same metrics, the probes notwithstanding
    assert rows[0] == plain[0] and rows[1] != plain[1]  # SAM from the second epoch on


def test_a_time_budget_for_several_processes_is_one_line(tmp_path, data_root, capsys):
    out = tmp_path / "never"
    assert _train(tmp_path, data_root, out, "--time-budget", "1", "--devices", "2") == 2
    assert "time_budget is measured in one process" in capsys.readouterr().err
    assert not out.exists()


def test_a_time_budget_on_one_step_an_epoch_times_the_whole_probe(tmp_path, data_root):
    run = tmp_path / "run"
    with _training_log() as said:
        args = ("--train-fraction", "0.05", "--batch-size", "1024", "--time-budget", "1e-6")
        assert _train(tmp_path, data_root, run, *args, epochs=2) == 0
    assert any("so 1 of the recipe's 2 epochs, and one epoch is over the budget" in line for line in said)
    assert len(_metrics(run)) == 1


def test_members_of_one_split_seed_are_validated_together_as_an_ensemble(tmp_path, data_root, capsys):
    from alexnet.modelcard import ModelCard

    for seed in (1, 2):
        assert _train(tmp_path, data_root, tmp_path / f"shared{seed}", "--seed", str(seed), "--split-seed", "0",
                      epochs=1) == 0  # fmt: skip
        assert _train(tmp_path, data_root, tmp_path / f"own{seed}", "--seed", str(seed), epochs=1) == 0
    assert ModelCard.read(tmp_path / "shared2").data.seed == 0 and ModelCard.read(tmp_path / "own2").data.seed == 2
    assert _metrics(tmp_path / "shared1") != _metrics(tmp_path / "shared2")  # the seed still draws the weights
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "shared1"), str(tmp_path / "shared2"), "--split", "val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "ensemble of 2 (alexnet_cifar, alexnet_cifar)"
    assert main(["evaluate", str(tmp_path / "own1"), str(tmp_path / "own2"), "--split", "val"]) == 2
    assert "trained with seed 2, not" in capsys.readouterr().err
    # On the test split they can be evaluated together; those trained on different images are noted as such.
    assert main(["evaluate", str(tmp_path / "own1"), str(tmp_path / "own2")]) == 0
    assert "the members trained on different images (their splits drawn with seeds 1, 2)" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "shared1"), str(tmp_path / "shared2")]) == 0
    assert "note:" not in capsys.readouterr().err


class _DieInMember(pl.Callback):
    """A kill as epoch ``epoch`` of the ensemble's member ``member`` (from 0) starts."""

    def __init__(self, member, epoch):
        self.member, self.epoch, self.started = member, epoch, -1

    def on_train_start(self, trainer, pl_module):
        self.started += 1

    def on_train_epoch_start(self, trainer, pl_module):
        if self.started == self.member and trainer.current_epoch == self.epoch:
            raise _Killed


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, data_root):
    """``--members 2``: two epochs a member, the test with flip-translate views."""
    folder = tmp_path_factory.mktemp("ensemble")
    run = folder / "pair"
    with contextlib.redirect_stdout(io.StringIO()) as said:
        assert _train(folder, data_root, run, "--members", "2", "--tta", "flip-translate", epochs=2) == 0
    report = json.loads((run / "report.json").read_text())
    first, second = (f"{m['test_top1']:.2%}" for m in report["members"])
    assert f"members alone (seeds 0, 1): {first}, {second}" in said.getvalue()
    return run


def test_members_train_in_turn_on_one_split_and_are_tested_as_an_ensemble(tmp_path, data_root, ensemble_run):
    from alexnet.evaluation import evaluate
    from alexnet.training.config import read_config_file

    members = [ensemble_run / "member-0", ensemble_run / "member-1"]
    settings = [read_config_file(m / "config.yaml") for m in members]
    assert [(s["seed"], s["split_seed"], s["members"]) for s in settings] == [(0, 0, 1), (1, 0, 1)]
    assert read_config_file(ensemble_run / "config.yaml")["members"] == 2
    # A member is an ordinary run: the second one is the run of seed 1 on seed 0's split, epoch for epoch.
    alone = tmp_path / "alone"
    assert _train(tmp_path, data_root, alone, "--seed", "1", "--split-seed", "0", "--tta", "flip-translate") == 0
    assert _comparable(_metrics(members[1])) == _comparable(_metrics(alone))
    assert _comparable(_metrics(members[0])) != _comparable(_metrics(members[1]))
    report = json.loads((ensemble_run / "report.json").read_text())
    theirs = [json.loads((m / "report.json").read_text()) for m in members]
    together = evaluate(members, split="test", tta="flip-translate", write=False)
    assert report["test_top1"] == together["top1"] and report["test_images"] == together["n"] == 100
    assert report["best_val_acc"] == evaluate(members, split="val", tta="flip-translate", write=False)["top1"]
    assert report["model"] == "ensemble of 2 (alexnet_cifar, alexnet_cifar)" and report["tta"] == "flip-translate"
    assert report["train_time_s"] == pytest.approx(sum(t["train_time_s"] for t in theirs), abs=0.11)
    assert [m["test_top1"] for m in report["members"]] == [t["test_top1"] for t in theirs]
    assert [m["seed"] for m in report["members"]] == [0, 1]
    evaluation = json.loads((ensemble_run / "eval-test-flip-translate.json").read_text())
    assert evaluation["top1"] == report["test_top1"] and (ensemble_run / "confusion-test-flip-translate.png").exists()


def test_an_ensemble_run_directory_is_one_model_to_evaluate_predict_and_export(
    tmp_path, data_root, ensemble_run, capsys
):
    from PIL import Image

    capsys.readouterr()
    assert main(["evaluate", str(ensemble_run), "--tta", "flip-translate", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["top1"] == json.loads((ensemble_run / "report.json").read_text())["test_top1"]
    assert [m["source"] for m in evaluated["members"]] == [str(ensemble_run / f"member-{k}") for k in (0, 1)]
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    assert main(["predict", str(ensemble_run), str(image), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["top"]) == 5
    pytest.importorskip("onnxruntime")
    assert main(["export", str(ensemble_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["onnx"] == str(ensemble_run / "model.onnx")
    from alexnet.onnxmodel import read_onnx_card

    # the exported graph carries the figure the ensemble measured, as one model's file carries its own
    assert read_onnx_card(ensemble_run / "model.onnx").test_top1 == evaluated["top1"]
    # A command of one model names the members to choose from.
    assert main(["features", str(ensemble_run), str(image), "--out", str(tmp_path / "f.npy")]) == 2
    err = capsys.readouterr().err
    assert f"{ensemble_run}: an ensemble of 2 models (member-0 .. member-1)" in err and err.count("\n") == 1
    assert _train(tmp_path, data_root, tmp_path / "tuned", "--pretrained", str(ensemble_run)) == 2
    err = capsys.readouterr().err
    assert f"{ensemble_run}: an ensemble of 2 models" in err and err.count("\n") == 1


def test_a_run_distils_an_ensemble_teacher_and_keeps_only_its_own_weights(tmp_path, data_root, ensemble_run, capsys):
    """``distill``: member-0 of ``ensemble_run`` is this run without a teacher (seed 0, split seed 0): the same
    start and batches, another loss; the checkpoint and model hold the model alone."""
    from safetensors.torch import load_file

    run = tmp_path / "taught"
    assert _train(tmp_path, data_root, run, "--split-seed", "0", "--set", f"distill={ensemble_run}") == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["distill"] == str(ensemble_run)
    taught, alone = _metrics(run), _metrics(ensemble_run / "member-0")
    assert len(taught) == len(alone) == 2 and taught[0]["train_loss"] != alone[0]["train_loss"]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(key.startswith("model.") for key in state)
    assert (
        load_file(run / "model.safetensors").keys() == load_file(ensemble_run / "member-0" / "model.safetensors").keys()
    )
    capsys.readouterr()
    assert _train(tmp_path, data_root, tmp_path / "no", "--set", f"distill={tmp_path / 'nowhere'}") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere'}: no such file or directory" in err and err.count("\n") == 1
    assert not (tmp_path / "no").exists()


@pytest.fixture(scope="module")
def born_again_run(tmp_path_factory, data_root):
    """``born_again``: a teacher of two epochs, then the run distilled from it."""
    folder = tmp_path_factory.mktemp("born_again")
    with contextlib.redirect_stdout(io.StringIO()) as said:
        assert _train(folder, data_root, folder / "run", "--set", "born_again=true", "--split-seed", "0") == 0
    taught = json.loads((folder / "run" / "teacher" / "report.json").read_text())
    assert f"teacher alone (seed 1): {taught['test_top1']:.2%}; {taught['train_time_s']:.0f} s of" in said.getvalue()
    return folder / "run"


def test_born_again_trains_a_teacher_then_distils_it_into_the_run(born_again_run, ensemble_run):
    """The teacher is the run of seed 1 on seed 0's split (``ensemble_run``'s second member, epoch for epoch);
    the run, seed 0, learns from it; the report counts both trainings' time."""
    from alexnet.training.config import read_config_file

    teacher = born_again_run / "teacher"
    assert _comparable(_metrics(teacher)) == _comparable(_metrics(ensemble_run / "member-1"))
    settings = read_config_file(born_again_run / "config.yaml")
    assert (settings["seed"], settings["born_again"], settings["distill"]) == (0, False, str(teacher))
    assert _comparable(_metrics(born_again_run)) != _comparable(_metrics(ensemble_run / "member-0"))
    report, taught = (json.loads((r / "report.json").read_text()) for r in (born_again_run, teacher))
    assert report["teacher"]["seed"] == 1 and report["teacher"]["test_top1"] == taught["test_top1"]
    own = sum(float(r["time_s"]) for r in _metrics(born_again_run))
    assert report["teacher"]["student_train_time_s"] == pytest.approx(own, abs=0.05)
    assert report["train_time_s"] == pytest.approx(own + taught["train_time_s"], abs=0.1)


@pytest.mark.parametrize("stage", [0, 1])
def test_resume_of_born_again_continues_the_teacher_or_the_student(tmp_path, data_root, born_again_run, stage):
    """Killed as the teacher's (stage 0) or the student's (1) second epoch starts; ``--resume RUN`` ends as the
    uninterrupted run did."""
    from alexnet.training.config import resolve_config
    from alexnet.training.run import train

    config = resolve_config(config_file=born_again_run / "teacher" / "config.yaml").replace(seed=0, born_again=True)
    run = tmp_path / "cut"
    with pytest.raises(_Killed):
        train(config, out=run, callbacks=[_DieInMember(stage, 1)])
    assert (run / "teacher" / "report.json").exists() == (stage == 1)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--resume", str(run)]) == 0
    for folder in (run / "teacher", run):
        assert _comparable(_metrics(folder)) == _comparable(_metrics(born_again_run / folder.relative_to(run)))
    resumed, whole = (json.loads((r / "report.json").read_text()) for r in (run, born_again_run))
    assert (resumed["test_top1"], resumed["teacher"]["test_top1"]) == (
        whole["test_top1"],
        whole["teacher"]["test_top1"],
    )


def test_resume_of_an_ensemble_with_more_epochs_extends_every_member(tmp_path, data_root):
    """As for one run (``test_resume_with_more_epochs_extends_a_finished_run``): each member to N epochs, then
    the ensemble tested again."""
    run = tmp_path / "pair"
    with contextlib.redirect_stdout(io.StringIO()):
        assert _train(tmp_path, data_root, run, "--members", "2", epochs=1) == 0
        first = json.loads((run / "report.json").read_text())
        assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    for member in ("member-0", "member-1"):
        assert [r["epoch"] for r in _metrics(run / member)] == ["1", "2"]
        assert json.loads((run / member / "report.json").read_text())["epochs"] == 2
    report = json.loads((run / "report.json").read_text())
    assert report["epochs"] == 2 and report["train_time_s"] > first["train_time_s"]
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2


def test_born_again_with_bad_input_leaves_nothing(tmp_path, data_root, capsys):
    run = tmp_path / "bad"
    assert _train(tmp_path, data_root, run, "--set", "born_again=true", "--head-epochs", "1") == 2
    assert "fine-tune pretrained weights" in capsys.readouterr().err and not run.exists()
    assert _train(tmp_path, data_root, run, "--set", "born_again=true", "--set", "distill=elsewhere") == 2
    assert "born_again trains its own teacher" in capsys.readouterr().err and not run.exists()


@pytest.mark.parametrize("epoch", [0, 1])
def test_resume_of_an_ensemble_keeps_its_finished_members_and_ends_as_an_uninterrupted_one(
    tmp_path, data_root, ensemble_run, epoch
):
    """Stopped in the second member: before its first checkpoint (it starts again) or after it (it continues)."""
    from alexnet.training.config import load_resume, resolve_config
    from alexnet.training.run import train

    config = resolve_config(config_file=ensemble_run / "config.yaml")
    run = tmp_path / "cut"
    with pytest.raises(_Killed):
        train(config, out=run, callbacks=[_DieInMember(1, epoch)])
    assert (run / "member-0" / "report.json").exists() and not (run / "member-1" / "report.json").exists()
    finished = (run / "member-0" / "model.safetensors").stat().st_mtime_ns
    train(load_resume(run, {}), resume=run)
    assert (run / "member-0" / "model.safetensors").stat().st_mtime_ns == finished  # kept, not trained again
    for member in ("member-0", "member-1"):
        assert _comparable(_metrics(run / member)) == _comparable(_metrics(ensemble_run / member))
    resumed, whole = (json.loads((r / "report.json").read_text()) for r in (run, ensemble_run))
    assert (resumed["test_top1"], resumed["test_loss"]) == (whole["test_top1"], whole["test_loss"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--members", "0"], "members must be between 1 and 1,000, not 0"),
        (["--members", "2", "--devices", "2"], "members train one after another in one process"),
        (["--members", "2", "--model", "resnet50"], "unknown model 'resnet50'"),
    ],
)
def test_bad_members_are_one_line(tmp_path, data_root, capsys, flags, message):
    out = tmp_path / "never"
    assert _train(tmp_path, data_root, out, *flags, epochs=1) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_member_settings_share_the_split_and_the_budget():
    from alexnet.training.config import TrainConfig
    from alexnet.training.ensemble import member_configs

    members = member_configs(TrainConfig(members=3, seed=5, time_budget=6.0))
    assert [(m.seed, m.split_seed, m.members, m.time_budget) for m in members] == [(5, 5, 1, 2.0), (6, 5, 1, 2.0),
                                                                                    (7, 5, 1, 2.0)]  # fmt: skip
    assert {m.split_seed for m in member_configs(TrainConfig(members=2, seed=5, split_seed=9))} == {9}
