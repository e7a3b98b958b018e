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


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; a missing or malformed file raises ``InputError``."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        hint = ""
        run = path.parent
        if path.name == "model.safetensors" and (run / "checkpoints" / "last.ckpt").exists():
            # a run that has not finished (or was stopped)
            hint = f" yet (the run has not finished); use {run / 'checkpoints' / 'last.ckpt'}"
        raise InputError(f"{run}: no {path.name}{hint}") from None
    except SafetensorError as error:
        raise InputError(f"{path}: not a safetensors file ({error})") from None


def read_torch_weights(path: Path, *, what: str = "weights file") -> dict[str, torch.Tensor]:
    """A state_dict from a torch file, read with ``weights_only=True``: a plain mapping of names to tensors
    (torchvision's ``.pth``) or a Lightning checkpoint, whose model weights are taken (the EMA copy when the
    run kept one, without its ``ema.module.`` / ``model.`` prefix). Anything else raises ``InputError``."""
    import pickle

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable {what} ({str(error).splitlines()[0][:120]})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        state = loaded["state_dict"]
        for prefix in ("ema.module.", "model."):
            picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if picked:
                return picked
        raise InputError(f"{path}: the checkpoint holds no model weights (keys model.* or ema.module.*)")
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise InputError(f"{path}: holds no state_dict (a mapping of names to tensors)")
    return loaded


def model_from_meta(meta: dict[str, Any], state: dict[str, torch.Tensor], source: Path | str) -> nn.Module:
    """The registered model ``meta`` names, with ``state`` loaded after its keys and shapes are checked;
    in eval mode."""
    from alexnet.models import get_model

    model = get_model(meta["model"], **meta["model_kwargs"])
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_model_dir(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, meta) from ``model.safetensors`` + ``model.json``; keys and shapes must match."""
    meta = read_model_meta(folder)
    path = folder / "model.safetensors"
    return model_from_meta(meta, read_safetensors(path), path), meta


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
