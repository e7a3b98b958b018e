"""ONNX export: the file carries its model card, agrees with PyTorch, and evaluate/predict take it."""

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from alexnet.cli import main
from alexnet.errors import InputError
from alexnet.evaluation import evaluate
from alexnet.export import export_onnx
from alexnet.inference import load_classifier
from alexnet.modelcard import DataSpec, InputSpec, ModelCard
from alexnet.modeldir import save_model_dir
from alexnet.models import get_architecture, get_model, list_models, model_spec
from alexnet.models.plan import smallest_input_size
from alexnet.onnxmodel import CARD_KEY
from alexnet.prediction import predict

from fileformats import write_mnist
from modeldirs import expected_probabilities, write_model_dir


def test_export_checks_against_pytorch_on_the_runs_own_data_and_carries_the_card(tmp_path, capsys):
    write_mnist(tmp_path / "data" / "mnist", train=30, test=20)
    torch.manual_seed(0)
    model = get_model("alexnet_cifar", num_classes=10, in_channels=1, hidden=[8], widths=[4, 4, 4, 4, 4])
    run = write_model_dir(tmp_path / "run", model, data=DataSpec("mnist", str(tmp_path / "data")))
    assert main(["export", str(run), "--json"]) == 0
    check = json.loads(capsys.readouterr().out)
    assert check["passed"] and check["images_from"] == "mnist test" and check["check_images"] == 20
    assert check["max_abs_logit_diff"] <= 1e-4 and check["top1_agreement"] == 1.0
    assert json.loads((run / "model.onnx.check.json").read_text()) == check
    metadata = {p.key: p.value for p in onnx.load_model(str(run / "model.onnx")).metadata_props}
    assert ModelCard.from_json(metadata[CARD_KEY], "metadata") == ModelCard.read(run)
    assert json.loads(metadata["classes"]) == [str(i) for i in range(10)] and metadata["image_size"] == "28"
    # The file alone serves: evaluate and predict read it without the run directory's other files.
    alone = tmp_path / "alone" / "model.onnx"
    alone.parent.mkdir()
    alone.write_bytes((run / "model.onnx").read_bytes())
    onnx_report = evaluate(alone, precision="fp32")
    torch_report = evaluate(run, precision="fp32")
    assert onnx_report["backend"] == "onnxruntime" and torch_report["backend"] == "pytorch"
    assert onnx_report["top1"] == torch_report["top1"] and onnx_report["confusion"] == torch_report["confusion"]
    assert onnx_report["loss"] == pytest.approx(torch_report["loss"], abs=1e-5)
    assert (alone.parent / "eval-model-onnx-test-none.json").exists()


def test_predict_takes_an_onnx_file_with_a_batch_of_any_size(tmp_path):
    run = write_model_dir(tmp_path / "run")  # every image gets the same known probabilities
    export_onnx(run)
    for i in range(3):
        Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    results = predict(run / "model.onnx", [tmp_path], top_k=10, batch_size=2)
    assert len(results) == 3
    expected = expected_probabilities()
    for result in results:
        got = {t["class"]: t["probability"] for t in result["top"]}
        assert got == pytest.approx({str(i): float(expected[i]) for i in range(10)}, abs=1e-5)


def test_bad_onnx_sources_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(InputError, match="broken.onnx: not a readable ONNX model"):
        load_classifier(tmp_path / "broken.onnx")
    run = write_model_dir(tmp_path / "run")
    export_onnx(run)
    with pytest.raises(InputError, match="ONNX models run in fp32"):
        load_classifier(run / "model.onnx", precision="bf16")
    assert main(["export", str(run), "--format", "tflite"]) == 2
    assert "unknown --format 'tflite'; use onnx" in capsys.readouterr().err
    assert main(["export", str(run / "model.onnx")]) == 2
    assert "already an ONNX model" in capsys.readouterr().err


def _member(folder, seed, mean, std, *, data, image_size=28):
    """A model directory of random weights, trained (so its card says) under its own normalisation."""
    torch.manual_seed(seed)
    kwargs = {"num_classes": 10, "in_channels": 1, "hidden": [8], "widths": [4, 4, 4, 4, 4]}
    card = ModelCard("alexnet_cifar", kwargs, tuple(str(i) for i in range(10)),
                     InputSpec(image_size, 1, (mean,), (std,), 28, padding=2), data=data, test_top1=0.5)  # fmt: skip
    save_model_dir(get_model("alexnet_cifar", **kwargs).eval(), folder, card)
    return folder


def test_an_ensemble_exports_as_one_graph_whose_softmax_is_the_members_average(tmp_path, capsys):
    write_mnist(tmp_path / "data" / "mnist", train=30, test=20)
    # The members normalise differently: the graph must renormalise the first's input for the second. They hold
    # out different validation images (seeds 0 and 1), and the same test images.
    data = [DataSpec("mnist", str(tmp_path / "data"), val_fraction=0.2, seed=seed) for seed in (0, 1)]
    a, b = _member(tmp_path / "a", 0, 0.5, 0.25, data=data[0]), _member(tmp_path / "b", 1, 0.13, 0.31, data=data[1])
    assert main(["export", str(a), "--ensemble", str(b), "--json"]) == 0
    check = json.loads(capsys.readouterr().out)
    exported = a / "ensemble.onnx"
    assert check["passed"] and check["onnx"] == str(exported) and check["members"] == [str(a), str(b)]
    assert check["images_from"] == "mnist test" and check["max_abs_logit_diff"] <= 1e-4
    assert not (a / "model.onnx").exists()  # the first member's own export is left alone
    metadata = {p.key: p.value for p in onnx.load_model(str(exported)).metadata_props}
    card = ModelCard.from_json(metadata[CARD_KEY], "metadata")
    assert card.model == check["model"] == "ensemble of 2 (alexnet_cifar, alexnet_cifar)" and card.test_top1 is None
    assert [m["source"] for m in card.members] == [str(a), str(b)] and card.preprocess.mean == (0.5,)
    # Its softmax is the average PyTorch gives each member on its own view, image for image.
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    images = sorted(tmp_path.glob("*.png"))
    ours, theirs = predict(exported, images, top_k=10), predict([a, b], images, top_k=10, precision="fp32")
    for one, other in zip(ours, theirs, strict=True):
        assert {t["class"]: t["probability"] for t in one["top"]} == pytest.approx(
            {t["class"]: t["probability"] for t in other["top"]}, abs=1e-5
        )
    onnx_report, torch_report = evaluate(exported, precision="fp32"), evaluate([a, b], precision="fp32")
    assert onnx_report["model"] == torch_report["model"] == card.model
    assert onnx_report["confusion"] == torch_report["confusion"]
    assert onnx_report["loss"] == pytest.approx(torch_report["loss"], abs=1e-5)
    # The file knows its members' splits: validating it on images the second member trained on is refused.
    with pytest.raises(InputError, match=rf"{exported} \(its member {b}\): trained with seed 1, not {exported}'s 0"):
        evaluate(exported, split="val")
    # the refusal is not a missing check for one model: the first member alone validates on its own split
    assert evaluate(a, split="val", precision="fp32")["n"] == 10  # one of each class


def test_an_ensemble_of_other_input_sizes_is_refused_in_one_line(tmp_path, capsys):
    a, b = (
        _member(tmp_path / "a", 0, 0.5, 0.25, data=None),
        _member(tmp_path / "b", 1, 0.5, 0.25, data=None, image_size=24),
    )
    assert main(["export", str(a), "--ensemble", str(b)]) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert error.startswith(f"alexnet: error: {b}: takes 24-px input") and "one graph needs one input" in error
    export_onnx(a, check_images=2)
    assert main(["export", str(b), "--ensemble", str(a / "model.onnx")]) == 2
    assert f"{a / 'model.onnx'}: already an ONNX model" in capsys.readouterr().err
    assert not (a / "ensemble.onnx").exists() and not (b / "ensemble.onnx").exists()


def _sizes():
    for name in list_models():
        default = model_spec(name).image_size
        kwargs = {"num_classes": 3, "hidden": (16, 16)}
        smallest = smallest_input_size(get_architecture(name, image_size=default, **kwargs))
        if model_spec(name).adapts_to_image_size:  # VGG's head is sized for its input: find its own smallest
            smallest = min(s for s in range(smallest, default + 1) if smallest_input_size(
                get_architecture(name, image_size=s, **kwargs)) <= s)  # fmt: skip
        yield from ((name, default), (name, smallest))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), list(_sizes()))
def test_every_model_exports_at_its_default_and_smallest_size(tmp_path, name, size):
    kwargs = {"num_classes": 3, "hidden": [16, 16]}
    if model_spec(name).adapts_to_image_size:
        kwargs["image_size"] = size
    torch.manual_seed(0)
    model = get_model(name, **kwargs).eval()
    card = ModelCard(name, kwargs, ("a", "b", "c"), InputSpec(size, 3, (0.5,) * 3, (0.25,) * 3, size))
    save_model_dir(model, tmp_path, card)
    check = export_onnx(tmp_path, check_images=4)
    assert check["passed"] and check["images_from"].startswith("random images")
    assert check["input_shape"] == ["batch", 3, size, size]
