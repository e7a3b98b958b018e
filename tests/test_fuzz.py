"""Fuzzing every reader of user files (hypothesis, seeded with the real formats): whatever the bytes, the
only outcomes are a result or our one-line ``InputError``. Slow: CI runs each target for a bounded number
of inputs; run with ``-s`` to see the executions per target."""

import io
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save

from alexnet.data.cifar import read_batch
from alexnet.data.mnist import read_idx
from alexnet.errors import InputError
from alexnet.modelcard import ModelCard
from alexnet.modeldir import read_safetensors
from alexnet.training.config import read_config_file

from fileformats import write_idx
from modeldirs import write_model_dir

pytestmark = pytest.mark.slow
EXAMPLES = 1000


@st.composite
def mutated(draw, seed: bytes):
    """``seed`` with a few random edits: flipped bytes, a cut, inserted or repeated runs."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            data[at:at] = data[at : at + draw(st.integers(1, 32))] * draw(st.integers(1, 8))
    return bytes(data)


def _seed_cifar() -> bytes:
    images = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    return pickle.dumps({b"data": images, b"labels": [0, 1, 2], b"batch_label": b"x"}, protocol=2)


def _seed_idx(gz: bool) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        write_idx(Path(tmp) / "x", np.arange(2 * 4 * 4).reshape(2, 4, 4) % 256, gz=gz)
        return (Path(tmp) / "x").read_bytes()


def _seed_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _seed_card() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return (write_model_dir(Path(tmp)) / "model.json").read_bytes()


TARGETS = {
    "cifar batch": (_seed_cifar(), lambda path: read_batch(path)),
    "idx raw": (_seed_idx(False), lambda path: read_idx(path, expect_dims=3)),
    "idx gz": (_seed_idx(True), lambda path: read_idx(path, expect_dims=3)),
    "model.json": (_seed_card(), lambda path: ModelCard.read(path.parent)),
    "safetensors": (save({"w": torch.zeros(2, 3), "b": torch.ones(3)}), lambda path: read_safetensors(path)),
    "config yaml": (b"epochs: 3\nlr: 0.1\nhidden: [64, 32]\nmodel_options: {towers: 1}\n", read_config_file),
}


@pytest.mark.parametrize("target", list(TARGETS))
def test_a_reader_answers_any_bytes_with_a_result_or_one_input_error(target, tmp_path_factory):
    seed, read = TARGETS[target]
    folder = tmp_path_factory.mktemp(target.replace(" ", "_"))
    path = folder / ("model.json" if target == "model.json" else "input")
    counts = {"executions": 0, "input_errors": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutated(seed))
    def run(data):
        path.write_bytes(data)
        counts["executions"] += 1
        try:
            read(path)
        except InputError as error:
            counts["input_errors"] += 1
            assert "\n" not in str(error)

    run()
    print(f"{target}: {counts}")
    assert counts["executions"] >= EXAMPLES // 2


def test_images_through_our_decoder(tmp_path):
    from alexnet.serve.app import BadImage, decode_upload

    counts = {"executions": 0, "refused": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutated(_seed_png()))
    def run(data):
        counts["executions"] += 1
        try:
            decode_upload(data, 16)
        except BadImage:
            counts["refused"] += 1

    run()
    print(f"images: {counts}")
    assert counts["executions"] >= EXAMPLES // 2
