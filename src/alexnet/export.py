"""Trained models as ``model.safetensors`` + ``model.json``: weights, class names and preprocessing,
loadable on another machine without pickle and without any training state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from alexnet.atomic import atomic_path, write_text
from alexnet.errors import InputError

FORMAT_VERSION = 1


def save_model_dir(model: nn.Module, folder: Path, meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` (the plain module's state_dict) and ``model.json`` (``meta``: the
    registry name and builder options, classes, preprocessing) into ``folder``, each atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as temporary:
        save_file(state, str(temporary), metadata={"format": "alexnet", "version": str(FORMAT_VERSION)})
    write_text(folder / "model.json", json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2) + "\n")


def read_model_meta(folder: Path) -> dict[str, Any]:
    """The ``model.json`` of an exported model directory."""
    path = folder / "model.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{folder}: no model.json (not an exported model directory)") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    for key in ("model", "model_kwargs", "classes", "preprocess"):
        if key not in meta:
            raise InputError(f"{path}: missing {key!r}")
    return meta


def load_model_dir(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, meta) from ``model.safetensors`` + ``model.json``; keys and shapes must match."""
    from alexnet.models import get_model

    meta = read_model_meta(folder)
    model = get_model(meta["model"], **meta["model_kwargs"])
    path = folder / "model.safetensors"
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        hint = ""
        if (folder / "checkpoints" / "last.ckpt").exists():  # a run that has not finished (or was stopped)
            hint = f" yet (the run has not finished); use {folder / 'checkpoints' / 'last.ckpt'}"
        raise InputError(f"{folder}: no model.safetensors{hint}") from None
    except SafetensorError as error:
        raise InputError(f"{path}: not a safetensors file ({error})") from None
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """Raise ``InputError`` naming the first missing, unexpected or mis-shaped keys before anything loads."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k} {found[k]} (model: {expected[k]})" for k in expected if k in found and found[k] != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
    if wrong:
        problems.append(f"wrong shape {', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}")
    if problems:
        raise InputError(f"{source}: weights do not fit the model: {'; '.join(problems)}")
