"""Training settings: one frozen dataclass, defaults in code, overridden by a recipe (YAML), then flags.

A setting is one line of ``TrainConfig``: its name, type, default and, in the comment beside it, its unit
and help. ``alexnet train``'s flags are derived from those lines (``settings``), and YAML recipes, config
files and ``--set`` are checked against them, so adding a setting touches nothing else."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from alexnet.atomic import write_text
from alexnet.errors import InputError, first_line
from alexnet.runtime import PRECISIONS
from alexnet.tta import TTA_MODES

DEFAULT_RECIPE = "fashion-mnist"
CONFIG_FILE = "config.yaml"  # a run's settings, in its run directory


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; ``asdict`` of it is stored in every checkpoint and run directory."""

    # what to train, on what
    model: str = "alexnet_cifar"  # registered architecture (alexnet models)
    data: str = "fashion-mnist"  # dataset name or folder:PATH (alexnet data)
    root: str | None = None  # dataset root; None: $ALEXNET_DATA or ~/.cache/alexnet/data
    image_size: int | None = None  # model input side, px; None: the model's default (small-image models: the data's)
    in_channels: int | None = None  # model input channels; None: the data's (1 for the MNIST family)
    hidden: tuple[int, ...] | None = None  # classifier hidden widths such as 4096,1024; None: the model's default
    dropout: float = 0.5  # probability, in the classifier (with no hidden layer: before the output layer)
    whiten: bool = False  # first conv's weights = whitening basis of training patches, then fixed (airbench)
    whiten_bias_epochs: float = 3.0  # with whiten: epochs the first conv's bias trains before it is fixed too
    whiten_eps: float = 5e-4  # with whiten: added to each eigenvalue (normalised pixels²); caps the gain on weak ones
    bn_momentum: float = 0.1  # BatchNorm running-statistics momentum (torch convention: weight of the new batch)
    bn_eps: float = 1e-5  # BatchNorm's epsilon, added to the variance
    bn_scale: bool = True  # train BatchNorm's scale; False keeps it at 1 (only the shift learns)
    model_options: dict[str, Any] = field(default_factory=dict)  # extra builder keywords (widths, towers, init)
    members: int = 1  # models trained in turn (seeds seed, seed+1, ...) on one split, tested as an ensemble
    train_fraction: float = 1.0  # stratified fraction of the training images kept (after validation is held out)
    val_fraction: float = 0.1  # held out of the training images for validation and best.ckpt
    split_seed: int | None = None  # of the validation and train_fraction splits; None: seed's (ensembles share one)
    storage_size: int | None = None  # px, decoded image-folder cache; None: the images' own side, at most 256
    # fine-tuning
    pretrained: str | None = None  # "imagenet" (torchvision's weights) or a .pth / .safetensors / run directory
    freeze: Literal["none", "features", "all-but-head"] = "none"  # frozen for the whole run
    head_epochs: int = 0  # two-stage: train only the new head for this many epochs, then everything
    backbone_lr_scale: float = 1.0  # learning rate of the pretrained weights, as a fraction of lr
    # augmentation
    crop: Literal["pad", "resized", "none"] = "pad"  # random training crop: padded shift, resized area, or none
    padding: int = 0  # px, at the stored size
    padding_mode: Literal["zeros", "reflect"] = "zeros"  # what "pad" crops see beyond the edge
    flip: bool = True  # random horizontal mirror
    alternate_flips: bool = False  # each image's mirror drawn once, then inverted every other epoch (airbench)
    lighting: float = 0.0  # PCA lighting sigma (the paper: 0.1)
    trivial_augment: bool = False  # TrivialAugment: one of 14 operations at a random strength per training image
    cutout: int = 0  # px side of a square of each training image set to the mean (model input px); 0: off
    scale_min: float = 0.08  # smallest area fraction for crop="resized"
    mixup: float = 0.0  # MixUp's Beta alpha, e.g. 0.2: blends each batch with itself reversed; 0 turns it off
    cutmix: float = 0.0  # CutMix's Beta alpha, e.g. 1.0: pastes a box of the reversed batch; 0 turns it off
    # optimisation
    epochs: int = 10  # passes over the training set
    time_budget: float = 0.0  # minutes of training (validation, all members): fewer epochs if need be; 0: off
    batch_size: int = 256  # per process
    lr: float = 0.05  # peak learning rate
    optimizer: Literal["sgd", "adamw"] = "sgd"  # the update rule
    momentum: float = 0.9  # SGD momentum (AdamW: beta1)
    nesterov: bool = True  # Nesterov momentum (SGD)
    weight_decay: float = 5e-4  # L2 penalty per step, decoupled for AdamW
    decay_norms_and_biases: bool = False  # False spares BatchNorm and bias parameters from weight decay
    bias_lr_scale: float = 1.0  # lr multiplier of biases and norm shifts; their decay per step stays the same
    schedule: Literal["onecycle", "cosine", "linear", "step", "plateau", "constant"] = "onecycle"  # lr over time
    warmup_epochs: float = 1.0  # linear warm-up (onecycle, cosine, linear, step)
    warmup_start: float = 0.04  # lr at step 0, as a fraction of the peak
    final_lr: float = 0.0  # "linear": lr at the last step, as a fraction of the peak
    step_epochs: int = 30  # "step": multiply by step_gamma every step_epochs
    step_gamma: float = 0.1  # "step": the factor
    plateau_patience: int = 3  # "plateau" (the paper's schedule): divide by 10 after this many flat epochs
    label_smoothing: float = 0.0  # probability mass spread over the other classes
    distill: str | None = None  # teacher: a run, model or ensemble directory whose predictions are also learnt
    distill_weight: float = 0.5  # with distill: share of the loss from the teacher's probabilities, not the labels
    distill_temperature: float = 1.0  # with distill: both models' logits divided by it before they are matched
    born_again: bool = False  # train these settings first (seed+1, RUN/teacher), then distil that teacher into RUN
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    ema_decay: float = 0.0  # exponential moving average of weights, e.g. 0.999; 0 turns it off
    lookahead: float = 0.0  # per-step decay of lookahead's slow weights, e.g. 0.95; 0 turns it off
    lookahead_steps: int = 5  # fast steps between lookahead syncs
    sam_rho: float = 0.0  # SAM: each step's gradient taken this far uphill of the weights (2 passes a step); 0: off
    sam_start_epoch: float = 0.0  # with sam_rho: epochs trained without SAM before it starts (late SAM); 0: none
    early_stopping: int = 0  # epochs without val_acc improvement before stopping; 0 turns it off
    # execution
    precision: Literal[*PRECISIONS] = "auto"  # auto: bf16 where this machine does bf16 fast, else fp32
    channels_last: bool = True  # NHWC memory layout (faster convolutions on CPUs and tensor cores)
    compile: bool = False  # torch.compile the model (slower start, faster steps)
    deterministic: bool = False  # deterministic algorithms only: bit-identical reruns on GPUs too, slower
    seed: int = 0  # of the initial weights, every epoch's randomness and, without split_seed, the splits
    devices: int = 1  # processes (CPU) or GPUs per node; torchrun and SLURM set it themselves
    num_nodes: int = 1  # machines (SLURM; torchrun sets it itself)
    sync_batchnorm: bool = True  # BatchNorm statistics over the global batch when several processes train
    scale_lr: bool = False  # multiply lr by the number of processes (linear scaling with the global batch)
    dist_timeout_s: float = 120.0  # how long a process waits on a collective before the job fails
    tta: Literal[*TTA_MODES] = "none"  # test-time augmentation of the final test
    recipe: str | None = None  # the recipe these settings started from (informational)

    def __post_init__(self) -> None:
        # Every source of settings (defaults, recipe, config file, flags, --set, a resumed run) ends here.
        for name, (low, high) in _BOUNDS.items():
            value = getattr(self, name)
            if value is not None and not (low <= value <= high):
                if high == math.inf:
                    raise InputError(f"{name} must be at least {low}, not {value}")
                shown = f"{int(high):,}" if float(high).is_integer() else high
                raise InputError(f"{name} must be between {low} and {shown}, not {value}")

    @property
    def whitens(self) -> bool:
        """Whether the first conv is whitened from the data: asked for, and not pretrained (pretrained
        weights are never overwritten)."""
        return self.whiten and self.pretrained is None

    @property
    def data_seed(self) -> int:
        """The seed of the validation and ``train_fraction`` splits: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; unknown names or wrongly typed values raise ``InputError``."""
        known = {f.name: f for f in fields(self)}
        for name in changes:
            if name not in known:
                raise InputError(f"unknown setting {name!r}; settings are: {', '.join(known)}")
        return dataclasses.replace(self, **{k: _coerce(known[k], v) for k, v in changes.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists for tuples), safe for YAML, JSON and ``torch.load(weights_only=True)``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# The settings whose values have bounds (inclusive), checked whatever set them. image_size and storage_size
# stop a typo from allocating terabytes (a 100,000-px batch); the seed is numpy's and torch's range.
_BOUNDS: dict[str, tuple[float, float]] = {
    "epochs": (1, math.inf), "batch_size": (1, math.inf), "devices": (1, math.inf), "num_nodes": (1, math.inf),
    "lookahead_steps": (1, math.inf), "image_size": (1, 4096), "in_channels": (1, math.inf),
    "storage_size": (8, 4096), "lr": (0, math.inf), "seed": (0, 2**32 - 1), "dropout": (0, 1), "momentum": (0, 1),
    "weight_decay": (0, math.inf), "label_smoothing": (0, 1), "head_epochs": (0, math.inf),
    "warmup_epochs": (0, math.inf), "grad_clip": (0, math.inf), "padding": (0, 4096), "cutout": (0, 4096),
    "mixup": (0, math.inf), "cutmix": (0, math.inf), "time_budget": (0, math.inf), "split_seed": (0, 2**32 - 1),
    "members": (1, 1000), "distill_weight": (0, 1), "distill_temperature": (0.05, 100), "sam_rho": (0, math.inf),
    "sam_start_epoch": (0, math.inf),
}  # fmt: skip


@functools.cache
def _field_type(name: str) -> tuple[Any, bool]:
    """(the type a setting holds, whether it may be None), from ``TrainConfig``'s annotation."""
    hint = typing.get_type_hints(TrainConfig)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return options[0], len(options) < len(typing.get_args(hint))
    return hint, False


def _choices(name: str) -> tuple[str, ...] | None:
    kind, _ = _field_type(name)
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else None


def _coerce(spec: dataclasses.Field, value: Any) -> Any:
    """``value`` as the setting's type (a YAML or flag value: text for widths and mappings), else ``InputError``."""
    kind, optional = _field_type(spec.name)
    if value is None and optional:
        return None
    origin = typing.get_origin(kind)
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise InputError(f"{spec.name} must be one of {', '.join(typing.get_args(kind))}, not {value!r}")
    elif origin is tuple:  # layer widths
        return parse_widths(value, spec.name)
    elif origin is dict:
        if isinstance(value, str):  # from a flag: YAML, e.g. "{widths: [64, 256, 256]}"
            value = _yaml_value(value, spec.name)
        if not isinstance(value, dict):
            raise InputError(f"{spec.name} must be a mapping such as {{towers: 1}}, not {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            raise InputError(f"{spec.name} must be text, not {value!r}")
    elif kind is bool:
        if not isinstance(value, bool):
            raise InputError(f"{spec.name} must be true or false, not {value!r}")
    elif kind in (int, float):
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            raise InputError(f"{spec.name} must be a number, not {value!r}")
        if kind is int and not number.is_integer():
            raise InputError(f"{spec.name} must be a whole number, not {value!r}")
        return kind(number)
    return value


def parse_widths(value: str | Sequence[int], what: str = "hidden") -> tuple[int, ...]:
    """Layer widths from ``"4096,1024"`` or a sequence of ints; anything else, or a width below 1, raises
    ``InputError``."""
    parts = [p for p in value.split(",") if p.strip()] if isinstance(value, str) else value
    try:
        widths = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be widths such as 4096,1024, not {value!r}") from None
    if any(w <= 0 for w in widths):
        raise InputError(f"{what} widths must be positive, not {value!r}")
    return widths


def _yaml_value(text: str, name: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise InputError(f"{name}: {text!r} is not valid YAML") from None


@dataclass(frozen=True)
class Setting:
    """One ``TrainConfig`` field as the command line shows it."""

    name: str
    kind: type  # bool, int, float or str (text that the field's type reads: choices, widths, YAML)
    help: str
    section: str
    choices: tuple[str, ...] | None


def settings() -> list[Setting]:
    """Every setting, in ``TrainConfig``'s order, with the help and section comments written beside it."""
    comments = _field_comments()
    found = []
    for spec in fields(TrainConfig):
        kind, _ = _field_type(spec.name)
        kind = kind if kind in (bool, int, float) else str
        section, text = comments.get(spec.name, ("", ""))
        found.append(Setting(spec.name, kind, text, section, _choices(spec.name)))
    return found


def _field_comments() -> dict[str, tuple[str, str]]:
    """name -> (section, help) from ``TrainConfig``'s source: a field's trailing comment is its help, the
    comment line above a group of fields names their section. Empty where the source is not shipped."""
    try:
        lines = inspect.getsource(TrainConfig).splitlines()
    except (OSError, TypeError):
        return {}
    section, found = "", {}
    for line in lines:
        if line.startswith("    def "):
            break
        if line.startswith("    # "):
            section = line.strip()[2:]
        elif match := re.match(r"    (\w+): [^#]*?(?:#\s*(.*))?$", line):
            found[match[1]] = (section, match[2] or "")
    return found


def parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--set``) as settings: VALUE is read as YAML (``0.95``, ``true``, ``[64, 256]``),
    KEY may use dashes; ``TrainConfig.replace`` checks both."""
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set takes KEY=VALUE, not {pair!r}")
        try:
            found[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise InputError(f"--set {pair!r}: the value is not valid YAML") from None
    return found


def recipe_names() -> list[str]:
    """Names of the recipes shipped with the package."""
    folder = resources.files("alexnet") / "recipes"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_recipe(name: str, *, _seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """(settings, description) of a shipped recipe; an unknown name raises ``InputError``.

    A recipe with ``base: OTHER`` holds only what differs from recipe OTHER: its settings are OTHER's
    (resolved the same way) updated with its own, so a family of recipes states each shared setting once.
    """
    path = resources.files("alexnet") / "recipes" / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"unknown recipe {name!r}; recipes: {', '.join(recipe_names())}")
    if name in _seen:
        raise InputError(f"recipe {name!r}: its bases form a loop ({' -> '.join((*_seen, name))})")
    document = yaml.safe_load(path.read_text())
    description = document.pop("description", "")
    if (base := document.pop("base", None)) is not None:
        document = {**read_recipe(base, _seen=(*_seen, name))[0], **document}
    return document, description


def read_config_file(path: Path) -> dict[str, Any]:
    """Settings from a YAML file (a run's ``config.yaml``, or one a user wrote)."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({first_line(error)})") from None
    if not isinstance(document, dict):
        raise InputError(f"{path}: expected a mapping of settings, found {type(document).__name__}")
    if not all(isinstance(key, str) for key in document):
        raise InputError(f"{path}: setting names must be text, found {[k for k in document if not isinstance(k, str)]}")
    document.pop("description", None)
    return document


def resolve_config(
    *,
    recipe: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults, then the recipe (the default recipe when neither a recipe nor a file is given), then a
    config file, then flags (``overrides``: None means not given), then ``settings`` (``--set``: taken as
    written, so ``pretrained=null`` clears a recipe's value); later ones win. A ``model`` flag naming
    another model than the recipe's drops the recipe's ``model_options``, ``hidden`` and ``image_size``."""
    config = TrainConfig()
    if recipe is None and config_file is None:
        recipe = DEFAULT_RECIPE
    if recipe is not None:
        from_recipe, _ = read_recipe(recipe)
        config = config.replace(**from_recipe, recipe=recipe)
    if config_file is not None:
        config = config.replace(**read_config_file(config_file))
    flags = {k: v for k, v in (overrides or {}).items() if v is not None} | dict(settings or {})
    if "model" in flags and flags["model"] != config.model:
        # The recipe's head and builder options were chosen for its own model; another model starts from its own.
        config = config.replace(model_options={}, hidden=None, image_size=None)
    return config.replace(**flags)


def write_config(config: TrainConfig, run_dir: Path) -> Path:
    """``config.yaml`` of a run directory (atomically): every setting, re-runnable with ``--config``."""
    path = Path(run_dir) / CONFIG_FILE
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path


def load_resume(run_dir: Path, overrides: dict) -> TrainConfig:
    """The config of an earlier run with ``overrides`` (epochs, devices, precision) applied; an ensemble's
    run directory (``members`` > 1) has no checkpoint of its own, its members do, and a born-again run none
    until its teacher has finished."""
    if not (run_dir / CONFIG_FILE).exists():
        raise InputError(f"{run_dir}: no config.yaml (not a run directory)")
    allowed = {"epochs", "devices", "num_nodes", "precision"}
    refused = sorted(k for k, v in overrides.items() if v is not None and k not in allowed)
    if refused:
        changeable = "--epochs, --devices, --num-nodes and --precision"
        raise InputError(
            f"--resume continues a run as configured; only {changeable} may change, not {', '.join(refused)}"
        )
    settings = read_config_file(run_dir / CONFIG_FILE)
    config = TrainConfig().replace(**settings).replace(**{k: v for k, v in overrides.items() if v is not None})
    if config.members == 1 and not config.born_again and not (run_dir / "checkpoints" / "last.ckpt").exists():
        raise InputError(f"{run_dir}: no checkpoints/last.ckpt to resume from")
    return config
