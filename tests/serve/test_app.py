"""The service answers real images, and every kind of bad input with a 4xx, and stays up."""

import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from alexnet.cli import main
from alexnet.export import export_onnx

from modeldirs import MNIST_CLASSES, biased_model, expected_probabilities, write_model_dir


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A small PNG whose header declares width x height grey pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 16)  # a few rows; the header is what counts
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture
def client(tmp_path):
    from alexnet.serve.app import create_app

    app = create_app(write_model_dir(tmp_path / "model"), max_bytes=2**20)
    with TestClient(app) as client:
        yield client


def _top(answer):
    return {t["class"]: t["probability"] for t in answer["top"]}


def test_predict_as_body_and_as_multipart(client):
    image = _png(np.full((40, 30, 3), 120, np.uint8))
    expected = expected_probabilities()
    by_body = client.post("/predict?top_k=10", content=image, headers={"Content-Type": "image/png"})
    by_form = client.post("/predict?top_k=3&gradcam=true", files={"image": ("x.png", image, "image/png")})
    assert by_body.status_code == 200 and by_form.status_code == 200
    assert _top(by_body.json()) == pytest.approx({c: float(expected[i]) for i, c in enumerate(MNIST_CLASSES)}, abs=1e-5)
    assert [t["class"] for t in by_form.json()["top"]] == ["7", "2", "9"]
    assert by_form.json()["gradcam"].startswith("data:image/png;base64,")


def test_model_health_and_page(client):
    described = client.get("/model").json()
    assert described["model"] == "alexnet_cifar" and described["classes"] == MNIST_CLASSES
    assert described["backend"] == "pytorch" and described["gradcam"] is True
    assert [member["model"] for member in described["members"]] == ["alexnet_cifar"]
    assert client.get("/healthz").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and "predict?top_k=5&gradcam=true" in page.text


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"just some text", "text/plain", 415, "send an image"),
        (b"just some text", "image/png", 415, "not an image"),
        (b"", "image/png", 400, "empty upload"),
        (None, "image/png", 400, "corrupt or truncated"),  # a PNG cut in half
        (_bomb(), "image/png", 413, "image too large"),  # PIL's own limit refuses it as it opens
        (_bomb(10_000, 5_000), "image/png", 413, "10000 x 5000 pixels, over the 40,000,000-pixel limit"),
        (b"\x00" * (2**20 + 10), "image/jpeg", 413, "over the 1 MiB limit"),
    ],
)
def test_bad_input_is_a_4xx_with_a_message_and_the_service_stays_up(client, body, content_type, status, message):
    if body is None:
        whole = _png(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        body = whole[: len(whole) // 2]
    answer = client.post("/predict", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == status and message in answer.json()["error"]
    good = client.post("/predict", content=_png(np.zeros((8, 8, 3), np.uint8)), headers={"Content-Type": "image/png"})
    assert good.status_code == 200


def test_oversized_multipart_and_bad_parameters(client):
    big = client.post("/predict", files={"image": ("big.jpg", b"\xff" * (2**20 + 1), "image/jpeg")})
    assert big.status_code == 413
    assert client.post("/predict?top_k=0", content=b"x", headers={"Content-Type": "image/png"}).status_code == 422
    no_file = client.post("/predict", data={"name": "x"}, files={"other": ("a", b"b", "text/plain")})
    assert no_file.status_code == 400


def test_an_onnx_file_is_served_without_gradcam(tmp_path):
    from alexnet.serve.app import create_app

    model = write_model_dir(tmp_path / "model")
    export_onnx(model)
    with TestClient(create_app(model / "model.onnx")) as client:
        assert client.get("/model").json()["backend"] == "onnxruntime"
        answer = client.post("/predict?gradcam=true", content=_png(np.zeros((8, 8), np.uint8)),
                             headers={"Content-Type": "image/png"})  # fmt: skip
        assert answer.status_code == 200 and "gradcam" not in answer.json()
        assert answer.json()["top"][0]["class"] == "7"


@pytest.mark.parametrize("given", ["members", "their ensemble run directory"])
def test_an_ensemble_serves_its_members_average_and_their_mean_gradcam(tmp_path, given):
    from alexnet.serve.app import create_app

    # Alone, one model predicts 7 and the other 0; both give 2 their second-best score, which wins the average.
    (a, logits_a), (b, logits_b) = biased_model(7, 2), biased_model(0, 2)
    run = tmp_path / "run"  # laid out as `alexnet train --members 2` lays its members out
    members = [write_model_dir(run / "member-0", a), write_model_dir(run / "member-1", b)]
    (run / "report.json").write_text('{"test_top1": 0.625}')  # as a tested ensemble run's report says
    average = (logits_a.softmax(0) + logits_b.softmax(0)) / 2
    with TestClient(create_app(members if given == "members" else run, precision="fp32")) as client:
        described = client.get("/model").json()
        assert described["model"] == "ensemble of 2 (alexnet_cifar, alexnet_cifar)"
        assert [m["source"] for m in described["members"]] == [str(m / "model.safetensors") for m in members]
        # the run directory's own figure; members given one by one have none until evaluated together
        assert described["test_top1"] == (None if given == "members" else 0.625)
        assert described["gradcam"] is True and described["precision"] == "fp32"
        answer = client.post("/predict?top_k=3&gradcam=true", content=_png(np.full((28, 28), 90, np.uint8)),
                             headers={"Content-Type": "image/png"})  # fmt: skip
        assert answer.status_code == 200
        assert answer.json()["top"][0]["class"] == "2"
        assert _top(answer.json()) == pytest.approx({c: average[int(c)].item() for c in "270"}, abs=1e-5)
        assert answer.json()["gradcam"].startswith("data:image/png;base64,")


def test_an_ensemble_exported_as_one_onnx_file_serves_the_same_average_and_lists_its_members(tmp_path):
    from alexnet.serve.app import create_app

    (a, logits_a), (b, logits_b) = biased_model(7, 2), biased_model(0, 2)
    members = [write_model_dir(tmp_path / "a", a), write_model_dir(tmp_path / "b", b)]
    export_onnx(members, check_images=2)
    average = (logits_a.softmax(0) + logits_b.softmax(0)) / 2
    with TestClient(create_app(members[0] / "ensemble.onnx")) as client:
        described = client.get("/model").json()
        assert described["model"] == "ensemble of 2 (alexnet_cifar, alexnet_cifar)"
        assert described["source"] == str(members[0] / "ensemble.onnx") and described["backend"] == "onnxruntime"
        assert [m["source"] for m in described["members"]] == [str(m) for m in members]
        answer = client.post("/predict?top_k=3", content=_png(np.full((28, 28), 90, np.uint8)),
                             headers={"Content-Type": "image/png"})  # fmt: skip
        assert answer.status_code == 200 and answer.json()["top"][0]["class"] == "2"
        assert _top(answer.json()) == pytest.approx({c: average[int(c)].item() for c in "270"}, abs=1e-5)


def test_serving_an_ensemble_of_other_classes_is_refused_in_one_line(tmp_path, capsys):
    from dataclasses import replace

    from alexnet.modelcard import ModelCard

    first, renamed = write_model_dir(tmp_path / "a"), write_model_dir(tmp_path / "b")
    card = ModelCard.read(renamed)
    replace(card, classes=(*card.classes[:9], "nine")).write(renamed)
    assert main(["serve", str(first), "--ensemble", str(renamed), "--port", "1"]) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()  # nothing said of serving
    assert error.startswith(f"alexnet: error: {renamed}: its 10 classes")
