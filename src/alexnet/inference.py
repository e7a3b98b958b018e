"""A trained classifier ready to run: weights, class names and preprocessing from a run or model directory.

Sources: a run directory or an exported model directory (``model.safetensors`` + ``model.json``), or a
Lightning checkpoint (``checkpoints/best.ckpt``) inside a run directory, read with ``weights_only=True``.
No pickle and no training code state is ever loaded. An ensemble's sources are several of these, or the run
directory of an ensemble trained in one command (``--members N``), which stands for its members.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.data.augment import Preprocess
from alexnet.errors import InputError
from alexnet.modelcard import FILE_NAME as CARD_FILE
from alexnet.modelcard import ModelCard
from alexnet.modeldir import (
    check_one_model,
    ensemble_members,
    load_model_dir,
    model_from_card,
    read_torch_weights,
    run_report,
)
from alexnet.runtime import resolve_precision

Sources = Path | str | Sequence[Path | str]  # one model, or an ensemble's members

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classifier:
    """A model in eval mode with what it takes to feed it."""

    model: nn.Module
    classes: tuple[str, ...]
    preprocess: Preprocess
    storage_size: int  # side images are stored at before the model's crop (decoded files too)
    card: ModelCard  # model.json
    folder: Path  # the run or model directory: config.yaml and evaluation outputs live here
    weights: Path  # the file the weights came from
    dtype: torch.dtype  # of the weights and the inputs: bf16 or fp32
    device: torch.device

    @property
    def backend(self) -> str:
        """``pytorch``, or ``onnxruntime`` for an exported ``.onnx`` file (no layers to hook, no gradients)."""
        return "onnxruntime" if self.weights.suffix == ".onnx" else "pytorch"

    def probabilities(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """uint8 (N, C, H, W) stored images -> (N, K) class probabilities, softmax averaged over the views."""
        crops = self.preprocess.test_crops(images.to(self.device), tta)
        return average_views(self.model, crops, partial(self.preprocess.finish_views, dtype=self.dtype))


# Images in one forward pass when test views are averaged: whole views, as many as fit (one at least). All ten
# crops of a 256-image batch at 227 px in one pass held 7.4 GB and ran at 0.55-0.7x the speed of a view a pass
# (alexnet_paper, bf16, 2 cores of an AMX Xeon, 2026-12-05); at 32 px (alexnet_cifar_fast, six views) a view a
# pass was as fast or faster; for 32 images, ten crops in one pass of 320 were 1.1-1.2x faster than ten of 32.
# Each pass's crops are made model inputs just before it (``finish``): `alexnet evaluate --tta ten-crop` of that
# model at batch 256 went from 51-56 to 75-77 images/s and from 5.2-6.7 to 2.2-2.7 GB peak resident.
PASS_IMAGES = 256


def average_views(
    model: nn.Module, views: torch.Tensor, finish: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """Mean softmax over the views (V, N, ...) -> (N, K) float32, in passes of whole views holding up to
    ``PASS_IMAGES`` images (one view a pass at least; all in one pass where they fit). ``finish``, when given,
    turns each pass's views into model inputs (``Preprocess.finish_views`` on ``test_crops``), so that only
    one pass is ever held as float."""
    v, n = views.shape[:2]
    prepare = finish or (lambda chunk: chunk)
    with torch.inference_mode():
        total = sum(
            F.softmax(model(prepare(chunk).flatten(0, 1)).float(), -1).reshape(len(chunk), n, -1).sum(0)
            for chunk in views.split(max(1, PASS_IMAGES // n))
        )
    return total / v


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The weights' and inputs' dtype for ``precision`` on ``device`` (``runtime.resolve_precision`` decides)."""
    return torch.bfloat16 if resolve_precision(precision, device.type) == "bf16" else torch.float32


def _load_onnx(path: Path, *, precision: str, compile: bool) -> Classifier:
    """An exported ONNX file (``alexnet export``), run by onnxruntime on the CPU in fp32."""
    from alexnet.onnxmodel import OnnxModel, read_onnx_card

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    resolve_precision(precision, "cpu")  # an unknown name is refused here
    if precision == "bf16":
        raise InputError(f"{path}: ONNX models run in fp32 here; use --precision auto or fp32")
    if compile:
        raise InputError(f"{path}: --compile applies to PyTorch weights, not to an ONNX model")
    card = read_onnx_card(path)
    preprocess = preprocess_from_card(card)
    cpu = torch.device("cpu")
    return Classifier(
        OnnxModel(path), card.classes, preprocess, card.preprocess.storage_size, card, path.parent, path, torch.float32,
        cpu,
    )  # fmt: skip


def _resolve(source: Path) -> tuple[Path, Path | None]:
    """(folder with model.json, checkpoint file or None) for a run/model directory, a .ckpt or model.safetensors."""
    if source.is_dir():
        check_one_model(source)
        return source, None
    if not source.exists():
        raise InputError(f"{source}: no such file or directory")
    if source.name == "model.safetensors":
        return source.parent, None
    if source.suffix == ".ckpt":
        # runs/<name>/checkpoints/best.ckpt: the architecture and classes are in runs/<name>/model.json.
        for folder in (source.parent.parent, source.parent):
            if (folder / CARD_FILE).exists():
                return folder, source
        raise InputError(f"{source}: no model.json in its run directory; evaluate the run directory instead")
    raise InputError(f"{source}: not a run directory, model directory, .ckpt or model.safetensors")


def preprocess_from_card(card: ModelCard) -> Preprocess:
    """The evaluation preprocessing a model was trained with, from its card."""
    p = card.preprocess
    return Preprocess(
        image_size=p.image_size, channels=p.channels, mean=p.mean, std=p.std, crop="pad", padding=p.padding,
        flip=False,
    )  # fmt: skip


def load_classifier(
    source: Path | str, *, precision: str = "auto", compile: bool = False, device: str | None = None
) -> Classifier:
    """Load a classifier from a run directory, model directory, ``.ckpt``, ``model.safetensors`` or an
    exported ``.onnx`` file (run by onnxruntime).

    ``compile`` freezes the weights into a ``torch.compile``d graph (Inductor's ``freezing``): slower to
    start, faster per image on CPUs.
    """
    if Path(source).suffix == ".onnx":
        return _load_onnx(Path(source), precision=precision, compile=compile)
    folder, checkpoint = _resolve(Path(source))
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if checkpoint is None:
        model, card = load_model_dir(folder)
        weights = folder / "model.safetensors"
    else:
        card = ModelCard.read(folder)
        model = model_from_card(card, read_torch_weights(checkpoint, what="checkpoint"), checkpoint, folder)
        weights = checkpoint
    dtype = resolve_dtype(precision, target)
    # bf16 weights rather than autocast: autocast re-casts every fp32 weight on every call, which at batch 1
    # (AlexNet's 58 M classifier weights) made bf16 slower than fp32 here: 19.9 ms against 15.7; with the
    # weights stored in bf16 it is 8.9 ms, and 561 images/s at batch 256 (autocast: 460).
    model = model.to(target, dtype=dtype, memory_format=torch.channels_last)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if compile:
        import torch._inductor.config as inductor

        inductor.freezing = True  # constant-fold the weights and pre-pack them for oneDNN
        model = torch.compile(model)
    preprocess = preprocess_from_card(card)
    storage = card.preprocess.storage_size
    return Classifier(model, card.classes, preprocess, storage, card, folder, weights, dtype, target)


def shown_classes(names: tuple[str, ...]) -> str:
    """The first few class names, for error messages."""
    return f"({', '.join(names[:4])}{' ...' if len(names) > 4 else ''})"


def check_members(sources: Sequence[Path | str], classifiers: Sequence[Classifier]) -> None:
    """An ensemble's members must name the same classes in the same order (their probabilities are averaged
    column by column); the first member that does not is named in a one-line error."""
    first = classifiers[0]
    for source, classifier in zip(sources[1:], classifiers[1:], strict=True):
        if classifier.classes != first.classes:
            raise InputError(
                f"{source}: its {len(classifier.classes)} classes {shown_classes(classifier.classes)} are not "
                f"{sources[0]}'s {len(first.classes)} {shown_classes(first.classes)}"
            )


def note_unseen_views(classifier: Classifier | Ensemble, tta: str) -> None:
    """Logs a line for each model that ``tta``'s test views show what its training never did
    (``Preprocess.unseen_views``): mirrors to a model trained without flips, shifts to one trained without
    translations."""
    for member in classifier.members if isinstance(classifier, Ensemble) else (classifier,):
        trained = member.card.preprocess.augmented
        note = None if trained is None else member.preprocess.unseen_views(tta, member.storage_size, trained)
        if note:
            log.warning("note: %s: %s", member.folder, note)


def _given(source: Sources) -> list[Path | str]:
    return [source] if isinstance(source, str | Path) else list(source)


def listed_sources(source: Sources) -> list[Path | str]:
    """One source as a list of one; an ensemble's members as a list; an ensemble run directory as its members."""
    return [member for s in _given(source) for member in (ensemble_members(Path(s)) or [s])]


def ensemble_dir(source: Sources) -> Path | None:
    """The ensemble run directory when ``source`` is one (what is written about the ensemble goes there), else
    None."""
    given = _given(source)
    return Path(given[0]) if len(given) == 1 and ensemble_members(Path(given[0])) else None


def ensemble_top1(source: Sources) -> float | None:
    """The test top-1 an ensemble run directory measured of its members together (``report.json``, with the
    run's test views) when ``source`` is one that finished tested; else None: members given one by one have no
    figure of their own until ``alexnet evaluate RUN RUN ...`` measures one."""
    folder = ensemble_dir(source)
    report = run_report(folder) if folder is not None else None
    return report.get("test_top1") if report is not None else None


def ensemble_name(models: Sequence[str]) -> str:
    """What an ensemble is called in reports, the served page and exported files: "ensemble of 2 (alexnet_cifar,
    alexnet_cifar)"; one model is its own name."""
    return models[0] if len(models) == 1 else f"ensemble of {len(models)} ({', '.join(models)})"


@dataclass(frozen=True)
class Ensemble:
    """Several classifiers of the same classes and storage size as one: class probabilities averaged, each
    member's over the same test-time views (``alexnet predict RUN IMAGES --ensemble RUN``)."""

    members: tuple[Classifier, ...]
    test_top1: float | None = None  # the ensemble's own, where it was trained as one and tested (ensemble_top1)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.members[0].classes

    @property
    def storage_size(self) -> int:
        return self.members[0].storage_size

    def probabilities(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """uint8 (N, C, H, W) stored images -> (N, K): the mean of the members' ``probabilities``."""
        return torch.stack([m.probabilities(images, tta) for m in self.members]).mean(0)


class EnsembleGraph(nn.Module):
    """Classifiers as one module: images normalised with ``mean`` and ``std`` in (default: the first member's),
    each member's own normalisation made from them, the log of the members' mean softmax out (a logit vector
    whose softmax is the ensemble's probabilities). ``alexnet export`` writes it as one graph; a distillation
    teacher (``training.distill``) is one, at a ``temperature``."""

    def __init__(
        self, members: Sequence[Classifier], mean: Sequence[float] | None = None, std: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(m.model for m in members)
        first = members[0].card.preprocess
        mean_in = torch.tensor(first.mean if mean is None else mean).reshape(1, -1, 1, 1)
        std_in = torch.tensor(first.std if std is None else std).reshape(1, -1, 1, 1)
        # (x - m) / s -> member k's (x - mk) / sk: an affine map per channel, (M, 1, C, 1, 1)
        means = torch.tensor([m.card.preprocess.mean for m in members]).reshape(len(members), 1, -1, 1, 1)
        stds = torch.tensor([m.card.preprocess.std for m in members]).reshape(means.shape)
        self.register_buffer("scale", std_in / stds)
        self.register_buffer("shift", (mean_in - means) / stds)

    def forward(self, images: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        log_probabilities = [
            F.log_softmax(model(images * self.scale[i] + self.shift[i]).float() / temperature, -1)
            for i, model in enumerate(self.members)
        ]
        return torch.logsumexp(torch.stack(log_probabilities), 0) - math.log(len(self.members))


def load_ensemble(
    source: Sources, *, precision: str = "auto", compile: bool = False, device: str | None = None
) -> Classifier | Ensemble:
    """``load_classifier`` of one source, or an ``Ensemble`` of several: members must share the classes and
    the size images are decoded at (a file is decoded once for all of them; ``alexnet evaluate`` takes
    members of different sizes, since its splits are loaded per size). An ensemble run directory stands for
    its members."""
    sources = listed_sources(source)
    if not sources:
        raise InputError("no model given: give a run or model directory")
    classifiers = [load_classifier(s, precision=precision, compile=compile, device=device) for s in sources]
    if len(classifiers) == 1:
        return classifiers[0]
    check_members(sources, classifiers)
    for member, classifier in zip(sources[1:], classifiers[1:], strict=True):
        if classifier.storage_size != classifiers[0].storage_size:
            raise InputError(
                f"{member}: its images are decoded at {classifier.storage_size} px, not {sources[0]}'s "
                f"{classifiers[0].storage_size}; members of different sizes can be evaluated together "
                f"(alexnet evaluate RUN RUN ...), not predicted"
            )
    return Ensemble(tuple(classifiers), ensemble_top1(source))
