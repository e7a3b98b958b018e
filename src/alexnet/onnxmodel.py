"""Exported ONNX files as classifiers: the model card from the file's metadata, and onnxruntime behind the call
of a PyTorch module (``alexnet predict``/``evaluate``/``serve`` take ``model.onnx`` as they take a run)."""

from __future__ import annotations

from pathlib import Path

import torch

from alexnet.errors import InputError, first_line
from alexnet.extras import require
from alexnet.modelcard import ModelCard

CARD_KEY = "alexnet.model_card"  # metadata key of the model card in an exported ONNX file


class OnnxModel(torch.nn.Module):
    """An exported ONNX file run by onnxruntime behind the call of a PyTorch module: float32 images in,
    logits out, on the CPU."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        ort = require("onnxruntime", "onnx")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for unreadable or invalid graphs
            raise InputError(f"{path}: not a readable ONNX model ({first_line(error)})") from None
        self.path = path

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {"images": array})[0])


def read_onnx_card(path: Path) -> ModelCard:
    """The model card an exported ONNX file carries in its metadata."""
    onnx = require("onnx", "onnx")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise InputError(f"{path}: not a readable ONNX model ({first_line(error)})") from None
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    if CARD_KEY not in metadata:
        raise InputError(f"{path}: no {CARD_KEY} in its metadata (not exported by alexnet export)")
    return ModelCard.from_json(metadata[CARD_KEY], f"{path} ({CARD_KEY})")
