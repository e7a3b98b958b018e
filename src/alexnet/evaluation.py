"""``alexnet evaluate``: a trained classifier on a dataset split, with test-time augmentation, and its report.

Writes beside the run (or model directory): ``eval-<split>-<tta>.json`` (what ``--json`` prints),
``confusion-<split>-<tta>.csv`` and ``confusion-<split>-<tta>.png``, each atomically. Several runs make an
ensemble: their class probabilities are averaged, and the files are named ``eval-ensemble-<split>-<tta>``
beside the first; an ensemble trained in one command (its run directory given) writes ``eval-<split>-<tta>``
into its own run directory.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet.atomic import write_text
from alexnet.data.datasets import load_splits
from alexnet.data.imageset import Dataset
from alexnet.errors import InputError
from alexnet.inference import (
    Classifier,
    Sources,
    check_members,
    ensemble_dir,
    ensemble_name,
    listed_sources,
    load_classifier,
    note_unseen_views,
    shown_classes,
)
from alexnet.metrics import classification_report
from alexnet.modelcard import DataSpec
from alexnet.tta import check_tta

SPLITS = ("test", "val", "train")

log = logging.getLogger(__name__)


def _classes_match(model: tuple[str, ...], data: tuple[str, ...], name: str) -> None:
    if tuple(model) != tuple(data):
        raise InputError(
            f"{name}: its {len(data)} classes {shown_classes(data)} do not match the model's {len(model)} "
            f"{shown_classes(model)}"
        )


def predict_split(classifier: Classifier, images: np.ndarray, *, tta: str, batch_size: int) -> np.ndarray:
    """(N, K) probabilities for uint8 (N, C, H, W) images."""
    outputs = []
    for first in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[first : first + batch_size]))
        outputs.append(classifier.probabilities(batch, tta).cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, len(classifier.classes)), np.float32)


def _confusion_csv(matrix: list[list[int]], classes: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *classes])
    for name, row in zip(classes, matrix, strict=True):
        writer.writerow([name, *row])
    return buffer.getvalue()


def _same_split(first: DataSpec, member: DataSpec, split: str, sources: tuple[str, str]) -> None:
    """An ensemble's members must hold out the same images: each setting that draws ``split`` must agree."""
    settings = ("name", "root", "test_seed") + {"test": (), "val": ("val_fraction", "seed")}.get(
        split, ("val_fraction", "seed", "train_fraction")
    )
    for setting in settings:
        if getattr(member, setting) != getattr(first, setting):
            raise InputError(
                f"{sources[1]}: trained with {setting} {getattr(member, setting)!r}, not {sources[0]}'s "
                f"{getattr(first, setting)!r}, so their {split} splits are not the same images"
                + ("; evaluate the ensemble on --split test" if split != "test" else "")
            )


def _training_images(spec: DataSpec) -> tuple:
    """What draws the images a model trained on (the seed only where it drew a split)."""
    drawn = spec.val_fraction > 0 or spec.train_fraction < 1
    return spec.name, spec.root, spec.train_fraction, spec.val_fraction, spec.seed if drawn else None


def _note_trained_apart(specs: list[DataSpec]) -> None:
    """Says when an ensemble's members trained on different images (splits drawn with different seeds): the
    ensemble then learnt from more images than any one member, which its figure does not show."""
    if len({_training_images(spec) for spec in specs}) > 1:
        log.warning(
            "note: the members trained on different images (their splits drawn with seeds %s): together they saw "
            "more than any one of them; for an ensemble of one training set give them one --split-seed, or train "
            "them with --members",
            ", ".join(str(spec.seed) for spec in specs),
        )


def evaluate(
    source: Sources,
    *,
    data: str | None = None,
    root: Path | str | None = None,
    split: str = "test",
    tta: str = "none",
    batch_size: int = 256,
    precision: str = "auto",
    compile: bool = False,
    write: bool = True,
) -> dict[str, Any]:
    """Top-1/top-5, loss, per-class scores and confusion matrix of a run, model directory or checkpoint,
    or of an ensemble of several (their class probabilities averaged, each member's over the same views).

    The dataset, its validation split and the preprocessing come from the (first) run's saved settings
    unless ``data``/``root`` override them; an ensemble's members must have held out the same images of
    ``split``. Returns the dict that ``eval-<split>-<tta>.json`` holds.
    """
    return evaluate_splits(
        source, (split,), data=data, root=root, tta=tta, batch_size=batch_size, precision=precision,
        compile=compile, write=write,
    )[split]  # fmt: skip


def evaluate_splits(
    source: Sources,
    splits: Sequence[str],
    *,
    data: str | None = None,
    root: Path | str | None = None,
    tta: str = "none",
    batch_size: int = 256,
    precision: str = "auto",
    compile: bool = False,
    write: bool = True,
) -> dict[str, dict[str, Any]]:
    """``evaluate`` on each of ``splits`` with the models and the data loaded once: {split: report}."""
    check_tta(tta)
    for split in splits:
        if split not in SPLITS:
            raise InputError(f"unknown --split {split!r}; use {', '.join(SPLITS)}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be positive, not {batch_size}")
    sources = listed_sources(source)
    if not sources:
        raise InputError("no model to evaluate: give a run or model directory")
    classifiers = [load_classifier(member, precision=precision, compile=compile) for member in sources]
    first = classifiers[0]
    trained = first.card.data or DataSpec(name="")  # the run's dataset and split settings
    name = data or trained.name
    if not name:
        raise InputError(f"{first.folder}: its model card names no dataset; pass --data")
    check_members(sources, classifiers)
    for classifier in classifiers:
        note_unseen_views(classifier, tta)
    if data is None:  # on the runs' own data every member must have held out the same images
        for split in splits:
            _check_same_splits(sources, classifiers, trained, split)
        _note_trained_apart([c.card.data for c in classifiers if c.card.data is not None])
    loaded: dict[int, Dataset] = {}  # one copy of the data per storage size the members were trained at
    for classifier in classifiers:
        if classifier.storage_size not in loaded:
            loaded[classifier.storage_size] = load_splits(
                name,
                root if root is not None else (trained.root if data is None else None),
                train_fraction=trained.train_fraction,
                val_fraction=trained.val_fraction,
                seed=trained.seed,
                test_seed=trained.test_seed,
                storage_size=classifier.storage_size,
            )
    members = [
        {"model": c.card.model, "source": str(member), "weights": str(c.weights)}
        for member, c in zip(sources, classifiers, strict=True)
    ]
    reports = {}
    for split in splits:
        report = _evaluate_split(classifiers, loaded, split, tta=tta, batch_size=batch_size)
        report = {"model": ensemble_name([m["model"] for m in members]),
                  **(members[0] if len(members) == 1 else {"members": members}), **report}  # fmt: skip
        if write:
            report["outputs"] = _write_outputs(report, first, ensemble_dir(source))
        reports[split] = report
    return reports


def _check_same_splits(
    sources: Sequence[Path | str], classifiers: list[Classifier], trained: DataSpec, split: str
) -> None:
    """Every member, and every member of a member exported as one graph, held out the first's ``split``."""
    for member, classifier in zip(sources[1:], classifiers[1:], strict=True):
        _same_split(trained, classifier.card.data or DataSpec(name=""), split, (str(sources[0]), str(member)))
    for member, classifier in zip(sources, classifiers, strict=True):
        for listed, spec in zip(classifier.card.members, classifier.card.member_data(), strict=True):
            if spec is not None:
                _same_split(trained, spec, split, (str(sources[0]), f"{member} (its member {listed['source']})"))


def _evaluate_split(
    classifiers: list[Classifier], loaded: dict[int, Dataset], split: str, *, tta: str, batch_size: int
) -> dict[str, Any]:
    """The report's figures for one split: the members' probabilities averaged over ``split`` of their data."""
    first = classifiers[0]
    dataset = loaded[first.storage_size]
    images = dataset.split(split)
    _classes_match(first.classes, images.classes, dataset.name)
    probabilities = np.zeros((len(images), len(first.classes)), np.float32)
    start = time.perf_counter()
    for classifier in classifiers:
        member_images = loaded[classifier.storage_size].split(split)
        if not np.array_equal(member_images.labels, images.labels):
            raise InputError(f"{dataset.name}: its {split} split differs between storage sizes; evaluate one size")
        scores = predict_split(classifier, member_images.images, tta=tta, batch_size=batch_size)
        probabilities += scores / len(classifiers)
    seconds = time.perf_counter() - start
    return {
        "data": dataset.name,
        "split": split,
        "tta": tta,
        **classification_report(probabilities, images.labels, first.classes),
        "images_per_s": round(len(images) / seconds, 1) if seconds > 0 else float("nan"),  # of the ensemble
        "precision": "bf16" if first.dtype == torch.bfloat16 else "fp32",
        "backend": first.backend,
        "classes": list(first.classes),
    }  # fmt: skip


def _write_outputs(report: dict[str, Any], classifier: Classifier, home: Path | None) -> dict[str, str]:
    """The files beside the (first) model; ``home``: an ensemble run directory, whose own files they are."""
    stem = f"{report['split']}-{report['tta']}"
    if home is not None:
        return _write_files(report, home, stem)  # the ensemble's own run directory: named as one run's files
    if "members" in report:
        stem = f"ensemble-{stem}"  # beside its first member's own report
    elif classifier.weights.suffix == ".ckpt":
        stem = f"{classifier.weights.stem}-{stem}"  # best.ckpt and last.ckpt reports side by side
    elif classifier.weights.suffix == ".onnx":
        stem = f"{classifier.weights.stem}-onnx-{stem}"  # beside the PyTorch weights' own report
    return _write_files(report, classifier.folder, stem)


def _write_files(report: dict[str, Any], folder: Path, stem: str) -> dict[str, str]:
    """``eval-<stem>.json``, ``confusion-<stem>.csv`` and ``confusion-<stem>.png`` in ``folder``."""
    from alexnet.plots import plot_confusion  # matplotlib: only when files are written

    paths = {
        "report": folder / f"eval-{stem}.json",
        "confusion_csv": folder / f"confusion-{stem}.csv",
        "confusion_png": folder / f"confusion-{stem}.png",
    }
    classes = tuple(report["classes"])
    write_text(paths["confusion_csv"], _confusion_csv(report["confusion"], classes))
    title = f"{report['model']} on {report['data']} {report['split']} (tta {report['tta']}): top-1 {report['top1']:.2%}"
    plot_confusion(np.asarray(report["confusion"]), classes, paths["confusion_png"], title)
    outputs = {key: str(path) for key, path in paths.items()}
    write_text(paths["report"], json.dumps({**report, "outputs": outputs}, indent=2) + "\n")
    return outputs


def format_report(report: dict[str, Any]) -> str:
    """The report as text: headline figures, per-class table and the most-confused pairs."""
    lines = [
        f"{report['model']} on {report['data']} {report['split']} ({report['n']:,} images, tta {report['tta']}, "
        f"{report['precision']})",
        f"top-1 {report['top1']:.2%}   top-5 {report['top5']:.2%}   loss {report['loss']:.4f}   "
        f"{report['images_per_s']:,.0f} images/s",
        *(f"  member: {m['source']} ({m['model']})" for m in report.get("members", ())),
        "",
    ]
    width = max(len("class"), *(len(c) for c in report["per_class"]))
    lines.append(f"{'class':<{width}}  {'images':>7}  {'precision':>9}  {'recall':>7}  {'f1':>6}")
    for name, s in report["per_class"].items():
        lines.append(
            f"{name:<{width}}  {s['images']:>7,}  {s['precision']:>9.2%}  {s['recall']:>7.2%}  {s['f1']:>6.3f}"
        )
    if report["most_confused"]:
        lines += ["", "most confused (true -> predicted):"]
        lines += [
            f"  {p['true']} -> {p['predicted']}: {p['count']:,} ({p['share']:.1%} of {p['true']})"
            for p in report["most_confused"]
        ]
    if "outputs" in report:
        lines += ["", f"written: {report['outputs']['report']}, {Path(report['outputs']['confusion_csv']).name}, "
                  f"{Path(report['outputs']['confusion_png']).name}"]  # fmt: skip
    return "\n".join(lines)
