"""Weight files: a model directory (``model.safetensors`` + the model card ``model.json``), loadable on another
machine without pickle and without any training state, and the state dicts of ``.pth``, ``.ckpt`` and
``.safetensors`` files, always read without running pickled code.

An ensemble run directory (``alexnet train --members N``) holds no model of its own: its members are run
directories ``member-0`` .. ``member-<N-1>`` inside it (``member_folder``, ``ensemble_members``). A born-again
run (``born_again``) is its student's run directory, with the teacher's inside it (``teacher``).

A run directory that finished training, one model's or an ensemble's, holds ``report.json`` (``REPORT_FILE``,
``run_report``): its figures, written last."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from alexnet.atomic import atomic_path
from alexnet.errors import InputError, first_line
from alexnet.modelcard import FILE_NAME, FORMAT_VERSION, ModelCard

WEIGHTS_FILE = "model.safetensors"
MEMBER_PREFIX = "member-"
TEACHER_FOLDER = "teacher"  # a born-again run's teacher, a run directory inside the student's (training.distill)
REPORT_FILE = "report.json"  # written last by a run that finished: its presence marks one


def own_teacher(run_dir: Path, distill: str | None) -> bool:
    """Whether a run distils the teacher inside its own directory (``TEACHER_FOLDER``): a born-again run."""
    return distill is not None and Path(distill) == Path(run_dir) / TEACHER_FOLDER


def run_report(folder: Path) -> dict[str, Any] | None:
    """A finished run's ``report.json`` (one model's or an ensemble's), or None where the run did not finish."""
    path = Path(folder) / REPORT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def member_folder(run_dir: Path, index: int) -> Path:
    """The run directory of an ensemble's member ``index`` (from 0) inside the ensemble's run directory."""
    return Path(run_dir) / f"{MEMBER_PREFIX}{index}"


def ensemble_members(folder: Path) -> list[Path]:
    """The member run directories of an ensemble run directory, in order; [] for anything else (a file, a
    model directory, a folder without members)."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / FILE_NAME).exists():
        return []
    found = [p for p in folder.glob(f"{MEMBER_PREFIX}*") if p.is_dir() and p.name[len(MEMBER_PREFIX) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(MEMBER_PREFIX) :]))


def check_one_model(folder: Path) -> None:
    """Where one model is wanted, an ensemble run directory is a one-line error naming its members."""
    if members := ensemble_members(folder):
        raise InputError(
            f"{folder}: an ensemble of {len(members)} models ({members[0].name} .. {members[-1].name}); this "
            f"takes one model: give one of them, such as {members[0]}"
        )


def save_model_dir(model: nn.Module, folder: Path, card: ModelCard) -> None:
    """Write ``model.safetensors`` (the plain module's state_dict) and ``model.json`` (``card``) into
    ``folder``, each atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(Path(folder) / WEIGHTS_FILE) as temporary:
        save_file(state, str(temporary), metadata={"format": "alexnet", "version": str(FORMAT_VERSION)})
    card.write(folder)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; a missing or malformed file raises ``InputError``."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        hint = ""
        run = path.parent
        if path.name == WEIGHTS_FILE and (run / "checkpoints" / "last.ckpt").exists():
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
    except pickle.UnpicklingError:
        # torch's own message advises loading with weights_only=False: never advice to give about a file
        # someone handed us.
        raise InputError(
            f"{path}: not a readable {what} (it holds Python objects, not only tensors; refused)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError) as error:
        raise InputError(f"{path}: not a readable {what} ({first_line(error)})") from None
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


def model_from_card(card: ModelCard, state: dict[str, torch.Tensor], source: Path | str, folder: Path) -> nn.Module:
    """The registered model ``card`` (read from ``folder``) names, with its BatchNorm epsilon and ``state``
    (read from ``source``) loaded, every key fitting; in eval mode."""
    from alexnet.models import get_model
    from alexnet.models.build import set_norm_eps
    from alexnet.models.weights import load_weights

    try:
        model = get_model(card.model, **card.model_kwargs)
    except (TypeError, ValueError, KeyError) as error:  # the builders' own checks of their arguments
        raise InputError(
            f"{Path(folder) / FILE_NAME}: model_kwargs do not build {card.model} ({first_line(error)})"
        ) from None
    if card.norm_eps is not None:
        set_norm_eps(model, card.norm_eps)
    load_weights(model, state, str(source))
    return model.eval()


def load_model_dir(folder: Path) -> tuple[nn.Module, ModelCard]:
    """(model in eval mode, card) from ``model.safetensors`` + ``model.json``; keys and shapes must match."""
    card = ModelCard.read(folder)
    path = Path(folder) / WEIGHTS_FILE
    return model_from_card(card, read_safetensors(path), path, folder), card
