"""Hostile and broken inputs through the CLI, as a careful user or an attacker would try them: each ends in
one line on stderr naming what is wrong, exit 2, with no traceback, no code run and nothing half-written.

The readers' own tests cover each case in detail; this table holds the list of probes end to end, so that a
new command or reader that lets an exception through shows up here.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli import main

from fileformats import write_cifar10, write_learnable_mnist
from modeldirs import write_model_dir

TINY = [
    "--model",
    "alexnet_cifar",
    "--batch-size",
    "32",
    "--lr",
    "0.05",
    "--epochs",
    "1",
    "--hidden",
    "16",
    "--set",
    "model_options={widths: [4, 8, 8, 8, 8]}",
]


class _RunsCode:
    """Unpickling this creates ``marker``: a probe passes only if the file never appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One small finished training run (checkpoints, config.yaml, exported model) the resume probes spoil."""
    root = tmp_path_factory.mktemp("probes")
    write_learnable_mnist(root / "data" / "mnist", train=200, test=40)
    run = root / "run"
    assert main(["train", *TINY, "--data", "mnist", "--root", str(root / "data"), "--out", str(run)]) == 0
    return run


def _train(tmp: Path, *flags: str, data: str = "mnist") -> list[str]:
    write_learnable_mnist(tmp / "mnist", train=100, test=20)
    return ["train", *TINY, "--data", data, "--root", str(tmp), "--out", str(tmp / "run"), *flags]


def _config(tmp: Path, text: str | bytes) -> list[str]:
    path = tmp / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return _train(tmp, "--config", str(path))


def _cifar(tmp: Path, batch: dict | bytes | None) -> list[str]:
    write_cifar10(tmp / "cifar-10-batches-py")
    target = tmp / "cifar-10-batches-py" / "data_batch_1"
    if batch is None:  # a folder where the batch file belongs
        target.unlink()
        target.mkdir()
    else:
        target.write_bytes(batch if isinstance(batch, bytes) else pickle.dumps(batch))
    return ["train", *TINY, "--data", "cifar10", "--root", str(tmp), "--out", str(tmp / "run")]


def _idx(tmp: Path, raw: bytes, name: str = "train-labels-idx1-ubyte.gz") -> list[str]:
    write_learnable_mnist(tmp / "mnist", train=100, test=20)
    (tmp / "mnist" / name).write_bytes(raw)
    return ["train", *TINY, "--data", "mnist", "--root", str(tmp), "--out", str(tmp / "run")]


def _folder(tmp: Path, classes: tuple[str, ...]) -> list[str]:
    for c, name in enumerate(classes):
        (tmp / "pets" / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (20, 20), (60 * c, 10 * i, 0)).save(tmp / "pets" / name / f"{i}.png")
    return ["train", *TINY, "--data", f"folder:{tmp / 'pets'}", "--root", str(tmp), "--out", str(tmp / "run")]


def _resume(tmp: Path, run: Path, spoil: Callable[[Path], None]) -> list[str]:
    copy = tmp / "run"
    shutil.copytree(run, copy)
    spoil(copy)
    return ["train", "--resume", str(copy), "--epochs", "2"]


def _model(tmp: Path, card_edit: Callable[[dict], None] | None = None, command: str = "evaluate") -> list[str]:
    model = write_model_dir(tmp / "model")
    if card_edit is not None:
        card = json.loads((model / "model.json").read_text())
        card_edit(card)
        (model / "model.json").write_text(json.dumps(card))
    if command == "evaluate":
        return ["evaluate", str(model), "--root", str(tmp)]
    Image.new("RGB", (28, 28)).save(tmp / "one.png")
    return ["predict", str(model), str(tmp / "one.png")]


def _edit(key: str, value) -> Callable[[dict], None]:
    def edit(card: dict) -> None:
        target = card
        *parents, last = key.split(".")
        for part in parents:
            target = target[part]
        target[last] = value

    return edit


def _write(relative: str, content: bytes) -> Callable[[Path], None]:
    return lambda run: (run / relative).write_bytes(content)


def _truncate(relative: str) -> Callable[[Path], None]:
    return lambda run: (run / relative).write_bytes((run / relative).read_bytes()[:1000])


def _widths(run: Path) -> None:
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("- 4\n", "- 6\n", 1))


def _malicious_checkpoint(marker: Path) -> Callable[[Path], None]:
    return lambda run: torch.save({"state_dict": _RunsCode(marker)}, run / "checkpoints" / "last.ckpt")


# name -> (setup(tmp, finished_run) -> argv, words the one line must hold)
PROBES: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    # Flags
    "--lr -1": (lambda t, r: _train(t, "--lr", "-1"), "lr"),
    "--seed -1": (lambda t, r: _train(t, "--seed", "-1"), "seed"),
    "--image-size 100000": (lambda t, r: _train(t, "--image-size", "100000"), "image_size"),
    "--batch-size 0": (lambda t, r: _train(t, "--batch-size", "0"), "batch_size"),
    "--epochs 0": (lambda t, r: _train(t, "--epochs", "0"), "epochs"),
    "--out is a file": (lambda t, r: _train(t, "--out", str(_touch(t / "file"))), "file"),
    "--data unknown": (lambda t, r: _train(t, data="imagenet-22k"), "imagenet-22k"),
    "--recipe unknown": (lambda t, r: ["train", "--recipe", "cifar11"], "cifar11"),
    # Settings files
    "config epochs: -3": (lambda t, r: _config(t, "epochs: -3"), "epochs"),
    "config epochs: 1.5": (lambda t, r: _config(t, "epochs: 1.5"), "epochs"),
    "config epochs: null": (lambda t, r: _config(t, "epochs: null"), "epochs"),
    "config model: {a: 1}": (lambda t, r: _config(t, "model: {a: 1}"), "model"),
    "config hidden: [0, -5]": (lambda t, r: _config(t, "hidden: [0, -5]"), "hidden"),
    "config not UTF-8": (lambda t, r: _config(t, b"epochs: 2\nmodel: alex\xe9net\n"), "UTF-8"),
    "config !!python tag": (
        lambda t, r: _config(t, f"epochs: !!python/object/apply:os.system ['touch {t}/pwned']"),
        "config.yaml",
    ),
    "config a list": (lambda t, r: _config(t, "- 1\n- 2\n"), "config.yaml"),
    "config unknown key": (lambda t, r: _config(t, "epoch: 3"), "epoch"),
    "--set not KEY=VALUE": (lambda t, r: _train(t, "--set", "lr"), "KEY=VALUE"),
    # Data files
    "folder with one class": (lambda t, r: _folder(t, ("cat",)), "1 class"),
    "folder missing": (
        lambda t, r: ["train", *TINY, "--data", f"folder:{t / 'none'}", "--out", str(t / "run")],
        "none",
    ),
    "CIFAR labels strings": (
        lambda t, r: _cifar(t, {b"data": np.zeros((6, 3072), np.uint8), b"labels": ["a"] * 6}),
        "data_batch_1",
    ),
    "CIFAR labels 2-D": (
        lambda t, r: _cifar(t, {b"data": np.zeros((6, 3072), np.uint8), b"labels": [[1, 2]] * 6}),
        "data_batch_1",
    ),
    "CIFAR labels a bare int": (
        lambda t, r: _cifar(t, {b"data": np.zeros((6, 3072), np.uint8), b"labels": 7}),
        "data_batch_1",
    ),
    "CIFAR label 2**70": (
        lambda t, r: _cifar(t, {b"data": np.zeros((6, 3072), np.uint8), b"labels": [2**70] * 6}),
        "data_batch_1",
    ),
    "CIFAR 0-row batch": (
        lambda t, r: _cifar(t, {b"data": np.zeros((0, 3072), np.uint8), b"labels": []}),
        "data_batch_1",
    ),
    "CIFAR batch is a folder": (lambda t, r: _cifar(t, None), "data_batch_1"),
    "CIFAR batch not a pickle": (lambda t, r: _cifar(t, b"\x00garbage" * 50), "data_batch_1"),
    "CIFAR pickle runs code": (lambda t, r: _cifar(t, pickle.dumps({b"data": _RunsCode(t / "pwned")})), "refusing"),
    "IDX sizes overflow": (
        lambda t, r: _idx(t, _gz(struct.pack(">BBBBIII", 0, 0, 8, 3, *[2**32 - 1] * 3)), "train-images-idx3-ubyte.gz"),
        "idx",
    ),
    "IDX gzip bomb": (
        lambda t, r: _idx(t, _gz(struct.pack(">BBBBI", 0, 0, 8, 1, 2**31) + bytes(2**22))),
        "idx",
    ),
    "IDX gzip damaged": (
        lambda t, r: _idx(t, _gz(struct.pack(">BBBBI", 0, 0, 8, 1, 100))[:-12] + b"x" * 12),
        "idx",
    ),
    # Resuming
    "--resume last.ckpt truncated": (lambda t, r: _resume(t, r, _truncate("checkpoints/last.ckpt")), "last.ckpt"),
    "--resume last.ckpt garbage": (
        lambda t, r: _resume(t, r, _write("checkpoints/last.ckpt", b"\x80garbage" * 99)),
        "last.ckpt",
    ),
    "--resume last.ckpt empty": (lambda t, r: _resume(t, r, _write("checkpoints/last.ckpt", b"")), "last.ckpt"),
    "--resume last.ckpt runs code": (lambda t, r: _resume(t, r, _malicious_checkpoint(t / "pwned")), "last.ckpt"),
    "--resume config.yaml other widths": (lambda t, r: _resume(t, r, _widths), "last.ckpt"),
    "--resume config.yaml garbage": (lambda t, r: _resume(t, r, _write("config.yaml", b"{{{")), "config.yaml"),
    "--resume not a run": (lambda t, r: ["train", "--resume", str(t)], "config.yaml"),
    "--resume with another --lr": (lambda t, r: _resume(t, r, lambda run: None) + ["--lr", "9"], "lr"),
    # Models given to evaluate, predict and export
    "evaluate an empty .ckpt": (lambda t, r: ["evaluate", str(_touch(_checkpoint_path(t)))], "x.ckpt"),
    "evaluate a .ckpt that runs code": (
        lambda t, r: ["evaluate", str(_pickled(_checkpoint_path(t), _RunsCode(t / "pwned")))],
        "x.ckpt",
    ),
    "evaluate a folder with no model": (lambda t, r: ["evaluate", str(t)], "model"),
    "model.json absurd image size": (lambda t, r: _model(t, _edit("preprocess.image_size", 10**9)), "model.json"),
    "model.json classes not a list": (lambda t, r: _model(t, _edit("classes", 5)), "model.json"),
    "model.json widths wrong type": (lambda t, r: _model(t, _edit("model_kwargs.widths", "wide")), "model.json"),
    "model.json not JSON": (lambda t, r: _not_json(t), "model.json"),
    "model.safetensors garbage": (lambda t, r: _spoil_weights(t), "model.safetensors"),
    "predict a file that is not an image": (lambda t, r: _predict_text(t), "notes.png"),
    "predict --out a folder": (lambda t, r: [*_model(t, command="predict"), "--out", str(t)], "folder"),
    "predict --out into a missing folder": (
        lambda t, r: [*_model(t, command="predict"), "--out", str(t / "nowhere" / "p.csv")],
        "nowhere",
    ),
    "export a folder with no model": (lambda t, r: ["export", str(t)], "model"),
}


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _checkpoint_path(tmp: Path) -> Path:
    """Where a checkpoint of a model's run would be, beside the model card it is read with."""
    (write_model_dir(tmp / "model") / "checkpoints").mkdir()
    return tmp / "model" / "checkpoints" / "x.ckpt"


def _pickled(path: Path, payload) -> Path:
    torch.save({"state_dict": payload}, path)
    return path


def _gz(raw: bytes) -> bytes:
    import gzip

    return gzip.compress(raw)


def _spoil_weights(tmp: Path) -> list[str]:
    argv = _model(tmp)
    header = b'{"w": {"dtype": "F32", "shape": [99999999999], "data_offsets": [0, 4]}}'
    (tmp / "model" / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    return argv


def _not_json(tmp: Path) -> list[str]:
    argv = _model(tmp)
    (tmp / "model" / "model.json").write_text("{ not json")
    return argv


def _predict_text(tmp: Path) -> list[str]:
    argv = _model(tmp, command="predict")
    (tmp / "notes.png").write_text("not an image")
    return [*argv[:2], str(tmp / "notes.png")]


@pytest.mark.parametrize("name", list(PROBES))
def test_a_bad_input_is_one_line_and_exit_2(name, tmp_path, finished_run, capsys):
    setup, words = PROBES[name]
    argv = setup(tmp_path, finished_run)
    capsys.readouterr()
    code = main(argv)  # an exception escaping main is the traceback a user would see: the test fails on it
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("alexnet: error:")]
    assert code == 2 and len(errors) == 1, err[-2000:]
    assert words.lower() in errors[0].lower(), errors[0]
    assert "Traceback" not in err and "weights_only=False" not in err
    assert not (tmp_path / "pwned").exists()  # no crafted file ran code
    assert not list(tmp_path.rglob("*.tmp"))  # nothing half-written left behind
