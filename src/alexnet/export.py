"""``alexnet export``: a trained model as an ONNX file that carries its model card, checked against PyTorch.

The graph takes float32 images (N, C, S, S), already normalised, with a dynamic batch axis, and returns
logits (N, K). The file's metadata holds the model card (``alexnet.model_card``: architecture, classes,
mean/std, input size and channels) and the same facts as plain keys for other tools, so the file alone
is enough to serve the model. At export, onnxruntime runs the graph on images of the run's own data and
the logits are compared with PyTorch's; the figures are printed and written beside the file.

Several runs export as one graph (``alexnet export RUN --ensemble RUN2``): the images come in normalised as the
first member's card says, each member gets them renormalised to its own mean/std, and the output is the log of
the members' mean class probabilities, so its softmax is what ``alexnet evaluate RUN RUN2`` and ``predict``
average. The card names the ensemble and lists its members (``ModelCard.members``).

Needs the ``onnx`` extra (``pip install 'alexnet[onnx]'``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet.atomic import atomic_path, write_text
from alexnet.errors import InputError
from alexnet.extras import require
from alexnet.inference import (
    Classifier,
    Ensemble,
    EnsembleGraph,
    Sources,
    ensemble_dir,
    ensemble_name,
    listed_sources,
    load_ensemble,
)
from alexnet.modelcard import ModelCard
from alexnet.onnxmodel import CARD_KEY

FORMATS = ("onnx",)
DEFAULT_OPSET = 18
MAX_LOGIT_DIFF = 1e-4  # fp32: onnxruntime and PyTorch agree to this, or the export is refused


def _check_images(classifier: Classifier, count: int) -> tuple[torch.Tensor, str]:
    """Up to ``count`` images of the run's own data (its test split, else the first split there is), as the
    model takes them; random images where the data cannot be found (a model directory shipped alone)."""
    from alexnet.data.datasets import load_trained_data

    p = classifier.card.preprocess
    try:
        dataset = load_trained_data(classifier.card)
    except InputError:
        generator = torch.Generator().manual_seed(0)
        stored = torch.randint(0, 256, (count, p.channels, p.storage_size, p.storage_size), generator=generator)
        return classifier.preprocess.evaluate(stored.to(torch.uint8))[0], "random images (the run's data was not found)"
    split, images = dataset.held_out
    name = f"{dataset.name} {split}"
    picked = np.linspace(0, len(images) - 1, min(count, len(images))).astype(int)
    stored = torch.from_numpy(np.ascontiguousarray(images.images[picked]))
    return classifier.preprocess.evaluate(stored)[0], name


def _ensemble_card(sources: Sequence[Path | str], members: Sequence[Classifier], test_top1: float | None) -> ModelCard:
    """The card of an ensemble exported as one graph: the first member's classes, input and data, the members
    listed; ``test_top1``: the ensemble run directory's figure, where it was one (``inference.ensemble_top1``;
    else ``alexnet evaluate`` on the exported file measures one)."""
    for source, member in zip(sources[1:], members[1:], strict=True):
        theirs, ours = member.card.preprocess, members[0].card.preprocess
        if (theirs.image_size, theirs.channels, theirs.padding) != (ours.image_size, ours.channels, ours.padding):
            raise InputError(
                f"{source}: takes {theirs.image_size}-px input with {theirs.channels} channels and {theirs.padding} "
                f"px of padding, not {sources[0]}'s {ours.image_size}, {ours.channels} and {ours.padding}: one graph "
                "needs one input (alexnet evaluate RUN RUN ... takes such an ensemble)"
            )
    listed = tuple(
        {"model": m.card.model, "model_kwargs": m.card.model_kwargs, "source": str(s), "test_top1": m.card.test_top1,
         "data": asdict(m.card.data) if m.card.data is not None else None}
        for s, m in zip(sources, members, strict=True)
    )  # fmt: skip
    name = ensemble_name([m.card.model for m in members])
    return replace(members[0].card, model=name, model_kwargs={}, test_top1=test_top1, members=listed)


def export_onnx(
    source: Sources, out: Path | str | None = None, *, opset: int = DEFAULT_OPSET, check_images: int = 64
) -> dict[str, Any]:
    """Export the model of a run, checkpoint or model directory to ONNX (default ``<folder>/model.onnx``), or
    several as one ensemble graph (default ``<first folder>/ensemble.onnx``; an ensemble run directory's
    ``model.onnx`` for one given as its run directory), check it against PyTorch, and return
    the check's figures (also written to ``<out>.check.json``).

    Raises ``InputError`` when onnxruntime's logits differ from PyTorch's by more than ``MAX_LOGIT_DIFF``
    or its top-1 class differs on any check image; the file is then not kept.
    """
    onnx = require("onnx", "onnx")
    ort = require("onnxruntime", "onnx")
    require("onnxscript", "onnx")
    sources = listed_sources(source)
    for member in sources:
        if Path(member).suffix == ".onnx":
            raise InputError(f"{member}: already an ONNX model; export a run, model directory or checkpoint")
    loaded = load_ensemble(source, precision="fp32", device="cpu")
    members = loaded.members if isinstance(loaded, Ensemble) else (loaded,)
    for member in members:
        member.model.to(memory_format=torch.contiguous_format)
    if len(members) == 1:
        model, card = members[0].model, members[0].card
    else:
        model, card = EnsembleGraph(members).eval(), _ensemble_card(sources, members, loaded.test_top1)
    first = members[0]
    home = ensemble_dir(source)
    if out is None:
        out = home / "model.onnx" if home else first.folder / ("model.onnx" if len(members) == 1 else "ensemble.onnx")
    out = Path(out)
    p = card.preprocess
    example = torch.zeros(2, p.channels, p.image_size, p.image_size)
    # The exporter warns that torchvision's detection ops cannot be registered: we use none of them.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with atomic_path(out) as temporary:
        batch = torch.export.Dim("batch", min=1, max=65536)
        program = torch.onnx.export(
            model, (example,), input_names=["images"], output_names=["logits"], opset_version=opset,
            dynamic_shapes={"images": {0: batch}}, dynamo=True, verbose=False, optimize=True,
        )  # fmt: skip
        proto = program.model_proto
        metadata = {
            CARD_KEY: card.to_json(),
            "classes": json.dumps(list(card.classes)),
            "mean": json.dumps(list(p.mean)),
            "std": json.dumps(list(p.std)),
            "image_size": str(p.image_size),
            "channels": str(p.channels),
            "input": "float32 (N, C, S, S) in [0, 1], normalised: (x - mean) / std; output: logits (N, K)"
            + ("; an ensemble's: the log of its members' mean class probabilities" if card.members else ""),
        }
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save_model(proto, str(temporary))
        images, where = _check_images(first, check_images)
        session = ort.InferenceSession(str(temporary), providers=["CPUExecutionProvider"])
        exported = session.run(None, {"images": images.numpy()})[0]
        with torch.inference_mode():
            expected = model(images).numpy()
        diff = float(np.abs(exported - expected).max())
        agreement = float((exported.argmax(1) == expected.argmax(1)).mean())
        passed = diff <= MAX_LOGIT_DIFF and agreement == 1
        check = {
            "onnx": str(out), "model": card.model, **({"members": list(map(str, sources))} if card.members else {}),
            "opset": opset, "check_images": len(images), "images_from": where,
            "max_abs_logit_diff": diff, "top1_agreement": agreement, "passed": passed,
            "input_shape": ["batch", p.channels, p.image_size, p.image_size], "bytes": temporary.stat().st_size,
        }  # fmt: skip
        if not check["passed"]:
            raise InputError(
                f"{out}: onnxruntime disagrees with PyTorch (max logit difference {diff:.2e}, top-1 agreement "
                f"{agreement:.1%}); not written"
            )
    write_text(out.with_name(out.name + ".check.json"), json.dumps(check, indent=2) + "\n")
    return check
