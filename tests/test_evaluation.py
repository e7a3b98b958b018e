import csv
import json

import numpy as np
import pytest

from alexnet import evaluation
from alexnet.errors import InputError
from alexnet.evaluation import evaluate, format_report
from alexnet.modelcard import DataSpec

from fileformats import write_cifar10, write_mnist
from modeldirs import BIAS, biased_model, write_model_dir

TEST_LABELS = np.arange(20) % 10  # write_mnist's test labels


@pytest.fixture
def mnist_root(tmp_path):
    write_mnist(tmp_path / "data" / "mnist", train=30, test=20)
    return tmp_path / "data"


def test_known_model_gives_known_figures_and_files(tmp_path, mnist_root):
    model_dir = write_model_dir(tmp_path / "run")
    report = evaluate(model_dir, root=mnist_root, precision="fp32")
    order = np.argsort(-BIAS.numpy())  # every image gets the same ranking: 7, 2, 9, 0, 4
    assert report["n"] == 20
    assert report["top1"] == pytest.approx(np.mean(order[0] == TEST_LABELS))
    assert report["top5"] == pytest.approx(np.isin(TEST_LABELS, order[:5]).mean())
    assert report["loss"] == pytest.approx(-np.mean(np.log(BIAS.softmax(0).numpy()[TEST_LABELS])), rel=1e-5)
    confusion = np.array(report["confusion"])
    assert confusion.sum() == 20 and (confusion[:, 7] == np.bincount(TEST_LABELS, minlength=10)).all()
    assert report["per_class"]["7"] == {"images": 2, "precision": 0.1, "recall": 1.0, "f1": pytest.approx(2 / 11),
                                        "accuracy": 1.0}  # fmt: skip
    assert report["most_confused"][0]["predicted"] == "7"
    assert {"top1", "top5", "loss", "n", "per_class", "confusion", "tta", "images_per_s"} <= set(report)
    saved = json.loads((model_dir / "eval-test-none.json").read_text())
    assert saved["top1"] == report["top1"] and saved["outputs"] == report["outputs"]
    rows = list(csv.reader((model_dir / "confusion-test-none.csv").open()))
    assert rows[0] == ["true \\ predicted", *map(str, range(10))]
    assert [int(v) for v in rows[8][1:]] == confusion[7].tolist()
    assert (model_dir / "confusion-test-none.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "top-1 10.00%" in format_report(report)


@pytest.mark.parametrize("tta", ["flip", "ten-crop"])
def test_tta_modes_name_their_outputs(tmp_path, mnist_root, tta):
    model_dir = write_model_dir(tmp_path / "run")
    report = evaluate(model_dir, root=mnist_root, tta=tta, precision="fp32", batch_size=7)
    assert report["tta"] == tta and report["n"] == 20
    assert report["top1"] == pytest.approx(0.1)  # constant output: the views agree
    assert (model_dir / f"eval-test-{tta}.json").exists()


def test_validation_split_follows_the_run_config(tmp_path, mnist_root):
    model_dir = write_model_dir(tmp_path / "run", data=DataSpec("mnist", str(mnist_root), val_fraction=0.2, seed=3))
    report = evaluate(model_dir, split="val", precision="fp32", write=False)
    assert report["n"] == 10 and report["split"] == "val"  # round(3 x 0.2) = 1 of each class's 3 images
    assert not (model_dir / "eval-val-none.json").exists()


def test_classes_that_do_not_match_are_a_one_line_error(tmp_path):
    write_cifar10(tmp_path / "data" / "cifar-10-batches-py")
    model_dir = write_model_dir(tmp_path / "run")
    with pytest.raises(InputError, match=r"cifar10: its 10 classes \(airplane, .*\) do not match the model's 10"):
        evaluate(model_dir, data="cifar10", root=tmp_path / "data")
    assert not list(model_dir.glob("eval-*"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"split": "dev"}, "unknown --split 'dev'"), ({"tta": "five-crop"}, "unknown --tta 'five-crop'")],
)
def test_bad_options(tmp_path, mnist_root, kwargs, message):
    with pytest.raises(InputError, match=message):
        evaluate(write_model_dir(tmp_path / "run"), root=mnist_root, **kwargs)


def test_missing_split_says_how_to_get_one(tmp_path):
    write_mnist(tmp_path / "data" / "mnist")
    with pytest.raises(InputError, match="has no val split; hold one out"):
        evaluate(write_model_dir(tmp_path / "run"), root=tmp_path / "data", split="val")


def test_a_dataset_with_fewer_classes_than_the_model_is_refused(tmp_path):
    from PIL import Image

    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (28, 28), 40 * i).save(tmp_path / "pets" / name / f"{i}.png")
    model_dir = write_model_dir(tmp_path / "run")
    with pytest.raises(
        InputError, match=r"its 2 classes \(cat, dog\) do not match the model's 10 \(0, 1, 2, 3 \.\.\.\)"
    ):
        evaluate(model_dir, data=f"folder:{tmp_path / 'pets'}", root=tmp_path / "cache", split="train")


def test_an_ensemble_averages_its_members_probabilities(tmp_path, mnist_root):
    # Alone, one model predicts 7 and the other 0; both give 2 their second-best score, which wins the average.
    (a, logits_a), (b, logits_b) = biased_model(7, 2), biased_model(0, 2)
    first, second = write_model_dir(tmp_path / "a", a), write_model_dir(tmp_path / "b", b)
    report = evaluate([first, second], root=mnist_root, precision="fp32")
    average = ((logits_a.softmax(0) + logits_b.softmax(0)) / 2).numpy()
    assert report["model"] == "ensemble of 2 (alexnet_cifar, alexnet_cifar)" and report["n"] == 20
    assert [m["source"] for m in report["members"]] == [str(first), str(second)]
    assert np.array(report["confusion"])[:, 2].sum() == 20
    assert report["loss"] == pytest.approx(-np.mean(np.log(average[TEST_LABELS])), rel=1e-5)
    saved = json.loads((first / "eval-ensemble-test-none.json").read_text())
    assert saved["members"] == report["members"] and not (second / "eval-ensemble-test-none.json").exists()
    assert not (first / "eval-test-none.json").exists()  # the first member's own report is left alone
    assert f"member: {second} (alexnet_cifar)" in format_report(report)
    alone = evaluate(first, root=mnist_root, precision="fp32", write=False)
    assert np.array(alone["confusion"])[:, 7].sum() == 20 and "members" not in alone


def test_an_ensemble_needs_members_that_held_out_the_same_images(tmp_path, mnist_root):
    spec = lambda seed: DataSpec("mnist", str(mnist_root), val_fraction=0.2, seed=seed)  # noqa: E731
    first, second = (write_model_dir(tmp_path / f"run{s}", data=spec(s)) for s in (0, 1))
    with pytest.raises(InputError, match=rf"^{second}: trained with seed 1, not {first}'s 0, so their val splits"):
        evaluate([first, second], split="val", precision="fp32")
    # The test split does not depend on the seed: an ensemble of seeds is tested on the same images.
    assert evaluate([first, second], precision="fp32", write=False)["n"] == 20


def test_an_ensemble_of_models_with_different_classes_is_refused(tmp_path, mnist_root):
    from dataclasses import replace

    from alexnet.modelcard import ModelCard

    first, second = write_model_dir(tmp_path / "a"), write_model_dir(tmp_path / "b")
    card = ModelCard.read(second)
    replace(card, classes=(*card.classes[:9], "nine")).write(second)
    with pytest.raises(InputError, match=rf"^{second}: its 10 classes \(0, 1, 2, 3 \.\.\.\) are not {first}'s 10"):
        evaluate([first, second], root=mnist_root, precision="fp32")
    assert not list(first.glob("eval-*"))


def test_several_splits_load_the_models_and_the_data_once(tmp_path, mnist_root, monkeypatch):
    spec = DataSpec("mnist", str(mnist_root), val_fraction=0.2, seed=3)
    (a, _), (b, _) = biased_model(7, 2), biased_model(0, 2)
    members = [write_model_dir(tmp_path / "a", a, data=spec), write_model_dir(tmp_path / "b", b, data=spec)]
    one_at_a_time = {s: evaluate(members, split=s, precision="fp32", write=False) for s in ("val", "test")}
    calls = {"models": 0, "data": 0}

    def counted(name, function):
        def call(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        monkeypatch.setattr(evaluation, function.__name__, call)

    counted("models", evaluation.load_classifier)
    counted("data", evaluation.load_splits)
    together = evaluation.evaluate_splits(members, ("val", "test"), precision="fp32", write=False)
    assert calls == {"models": 2, "data": 1}
    assert list(together) == ["val", "test"]
    for split, report in together.items():
        assert report["split"] == split and report["n"] == {"val": 10, "test": 20}[split]
        assert {k: v for k, v in report.items() if k != "images_per_s"} == {
            k: v for k, v in one_at_a_time[split].items() if k != "images_per_s"
        }
