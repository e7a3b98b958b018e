"""The model card, ``model.json``: what a trained model is and how to feed it. This module alone writes and
reads it (``ModelCard.write`` / ``ModelCard.read``); training writes it, everything else reads it.

A card names the registered architecture and its builder keywords, the classes in output order, the
preprocessing the weights were trained under, and the data and split settings of the run (so that
``alexnet evaluate`` finds the same validation split without the training code). Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alexnet.atomic import write_text
from alexnet.errors import InputError
from alexnet.seeding import TEST_SPLIT_SEED

# 1: "data" was the dataset's name alone, without its split settings; 2: no "data.test_seed" (a folder's
# held-out test split followed the run's seed); 3: no "norm_eps" (BatchNorm layers were rebuilt with torch's
# 1e-5 whatever epsilon the run trained with)
FORMAT_VERSION = 4
FILE_NAME = "model.json"


@dataclass(frozen=True)
class InputSpec:
    """How images reach the model: stored at ``storage_size``, centre-cropped (or padded) to ``image_size``,
    normalised with ``mean``/``std`` per channel."""

    image_size: int  # model input side, px
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    storage_size: int  # side images are stored at before the crop, px (decoded files too)
    padding: int = 0  # px of zero padding training crops saw; evaluation pads and centre-crops the same way
    # what training did to the images that test views can repeat ("mirrors", "shifts"); views doing more are
    # reported (Preprocess.unseen_views). None: not recorded (cards written before 2026-12-05)
    augmented: tuple[str, ...] | None = None


def _norm_eps(value: Any) -> float | None:
    """model.json's norm_eps: a non-negative number, or null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"norm_eps must be a non-negative number, not {value!r}")
    return float(value)


def _check_input(spec: InputSpec, where: str) -> None:
    """Sizes a model can be fed at (a card asking for a 10^6-px input would allocate terabytes)."""
    if not (1 <= spec.image_size <= 4096 and 1 <= spec.storage_size <= 4096):
        raise InputError(f"{where}: image_size and storage_size must be 1 to 4096 px")
    if spec.channels not in (1, 3) or len(spec.mean) != spec.channels or len(spec.std) != spec.channels:
        raise InputError(f"{where}: channels must be 1 or 3, with one mean and one std each")
    if not all(s > 0 for s in spec.std):
        raise InputError(f"{where}: std must be positive")


@dataclass(frozen=True)
class DataSpec:
    """The dataset and split settings of the run that trained the model."""

    name: str  # as --data takes it: cifar10, fashion-mnist, folder:PATH, ...
    root: str | None = None
    train_fraction: float = 1.0
    val_fraction: float = 0.0
    seed: int = 0  # of the validation and --train-fraction splits
    test_seed: int = TEST_SPLIT_SEED  # of the test split held out of a folder with no test/


@dataclass(frozen=True)
class ModelCard:
    """Everything but the weights: enough to rebuild the model and feed it on another machine."""

    model: str  # registered architecture name; an exported ensemble's: "ensemble of N (...)" (members below)
    model_kwargs: dict[str, Any]  # its builder's keywords (num_classes, in_channels, hidden, ...)
    classes: tuple[str, ...]  # names in output order
    preprocess: InputSpec
    data: DataSpec | None = None  # None for a model shipped without its run
    test_top1: float | None = None  # filled in when training ends
    # the epsilon every BatchNorm layer trained with (the run's bn_eps; the cifar10 recipes' 1e-12): part of the
    # model's function, so the rebuilt model computes what was tested. None: the layers' own (torch's 1e-5)
    norm_eps: float | None = None
    # an ensemble exported as one ONNX graph (`alexnet export RUN --ensemble RUN`): its members' models, builder
    # keywords, sources, test figures and data (a DataSpec's fields); empty for one model, and then not written
    members: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were

    def to_json(self) -> str:
        """The card as model.json holds it (also stored in exported ONNX files' metadata)."""
        document = {"format_version": FORMAT_VERSION, **self.extra, **asdict(self)}
        del document["extra"]
        if not self.members:
            del document["members"]
        return json.dumps(document, indent=2) + "\n"

    def member_data(self) -> tuple[DataSpec | None, ...]:
        """The data and split settings of each member of an exported ensemble (None where a member had none)."""
        return tuple(DataSpec(**m["data"]) if m.get("data") is not None else None for m in self.members)

    def write(self, folder: Path) -> Path:
        """Write ``folder/model.json`` atomically; returns its path."""
        path = Path(folder) / FILE_NAME
        write_text(path, self.to_json())
        return path

    @classmethod
    def read(cls, folder: Path) -> ModelCard:
        """The card in ``folder``; a missing, malformed or incomplete file raises ``InputError`` naming it."""
        path = Path(folder) / FILE_NAME
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise InputError(f"{folder}: no {FILE_NAME} (not a run or model directory)") from None
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: cannot be read ({error})") from None
        return cls.from_json(text, str(path))

    @classmethod
    def from_json(cls, text: str, where: str) -> ModelCard:
        """The card in ``text`` (read from ``where``, named in errors)."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not valid JSON ({error.msg} at line {error.lineno})") from None
        if not isinstance(document, dict):
            raise InputError(f"{where}: expected a JSON object, found {type(document).__name__}")
        version = document.pop("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputError(f"{where}: format_version {version!r} is newer than this alexnet reads ({FORMAT_VERSION})")
        for key in ("model", "model_kwargs", "classes", "preprocess"):
            if key not in document:
                raise InputError(f"{where}: missing {key!r}")
        try:
            data = document.pop("data", None)
            if isinstance(data, str):  # format 1
                data = {"name": data}
            if isinstance(data, dict) and version < 3:  # the run's seed drew its folder's test split
                data = {"test_seed": data.get("seed", 0), **data}
            p = document.pop("preprocess")
            if not isinstance(p, dict):
                raise ValueError(f"preprocess must be an object, not {type(p).__name__}")
            if p.get("augmented") is not None and not isinstance(p["augmented"], list):
                raise ValueError("preprocess.augmented must be a list of what training did to the images")
            preprocess = InputSpec(
                image_size=int(p["image_size"]), channels=int(p["channels"]),
                mean=tuple(float(m) for m in p["mean"]), std=tuple(float(s) for s in p["std"]),
                storage_size=int(p.get("storage_size", p["image_size"])), padding=int(p.get("padding", 0)),
                augmented=None if p.get("augmented") is None else tuple(str(a) for a in p["augmented"]),
            )  # fmt: skip
            if not isinstance(document["model_kwargs"], dict) or not document["classes"]:
                raise ValueError("model_kwargs must be a mapping and classes a non-empty list")
            members = document.pop("members", [])
            if not isinstance(members, list) or not all(isinstance(m, dict) and "model" in m for m in members):
                raise ValueError("members must be a list of objects, each naming its model")
            card = cls(
                model=str(document.pop("model")),
                model_kwargs=dict(document.pop("model_kwargs")),
                classes=tuple(str(c) for c in document.pop("classes")),
                preprocess=preprocess,
                data=DataSpec(**data) if data is not None else None,
                test_top1=document.pop("test_top1", None),
                norm_eps=_norm_eps(document.pop("norm_eps", None)),
                members=tuple(members),
                extra=document,
            )
            card.member_data()  # each member's split settings must read as a DataSpec
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{where}: malformed ({type(error).__name__}: {error})") from None
        _check_input(card.preprocess, where)
        return card
