import json
from dataclasses import replace

import pytest

from alexnet.errors import InputError
from alexnet.modelcard import FORMAT_VERSION, DataSpec, InputSpec, ModelCard

CARD = ModelCard(
    model="alexnet_cifar",
    model_kwargs={"num_classes": 2, "in_channels": 1, "hidden": [16]},
    classes=("cat", "dog"),
    preprocess=InputSpec(
        image_size=28, channels=1, mean=(0.5,), std=(0.25,), storage_size=32, padding=2, augmented=("mirrors", "shifts")
    ),
    data=DataSpec("folder:pets", "/data", train_fraction=0.5, val_fraction=0.1, seed=3),
    norm_eps=1e-12,
)


def test_a_card_round_trips_through_model_json(tmp_path):
    CARD.write(tmp_path)
    assert ModelCard.read(tmp_path) == CARD
    document = json.loads((tmp_path / "model.json").read_text())
    assert document["format_version"] == FORMAT_VERSION and document["data"]["val_fraction"] == 0.1
    assert document["norm_eps"] == 1e-12


def test_format_1_files_still_read(tmp_path):
    (tmp_path / "model.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "model": "alexnet",
                "model_kwargs": {"num_classes": 2},
                "classes": ["a", "b"],
                "preprocess": {"image_size": 224, "channels": 3, "mean": [0.4] * 3, "std": [0.2] * 3},
                "data": "cifar10",
                "test_top1": 0.5,
            }
        )  # fmt: skip
    )
    card = ModelCard.read(tmp_path)
    assert card.data == DataSpec("cifar10") and card.preprocess.storage_size == 224 and card.test_top1 == 0.5
    assert card.preprocess.augmented is None  # not recorded: test views are not checked against it


def test_format_2_cards_held_a_folders_test_split_out_with_the_runs_seed(tmp_path):
    document = json.loads(CARD.to_json())
    del document["data"]["test_seed"]
    (tmp_path / "model.json").write_text(json.dumps({**document, "format_version": 2}))
    assert ModelCard.read(tmp_path).data.test_seed == 3 and CARD.data.test_seed == 0


def test_format_3_cards_rebuild_batchnorm_with_the_layers_own_epsilon(tmp_path):
    document = json.loads(CARD.to_json())
    del document["norm_eps"]
    (tmp_path / "model.json").write_text(json.dumps({**document, "format_version": 3}))
    assert ModelCard.read(tmp_path).norm_eps is None


@pytest.mark.parametrize("value", ["1e-5", -1e-5, True, [1e-5]])
def test_a_norm_eps_that_is_no_epsilon_is_a_one_line_error(tmp_path, value):
    (tmp_path / "model.json").write_text(json.dumps({**json.loads(CARD.to_json()), "norm_eps": value}))
    with pytest.raises(InputError, match=r"model.json: malformed \(ValueError: norm_eps must be a non-negative"):
        ModelCard.read(tmp_path)


def test_an_ensembles_members_round_trip_and_one_models_card_has_no_members_key(tmp_path):
    assert "members" not in json.loads(CARD.to_json())
    listed = ({"model": "alexnet_cifar", "source": "runs/a", "test_top1": 0.9}, {"model": "vgg11", "source": "b"})
    ensemble = replace(CARD, model="ensemble of 2 (alexnet_cifar, vgg11)", model_kwargs={}, members=listed)
    ensemble.write(tmp_path)
    assert ModelCard.read(tmp_path) == ensemble
    document = json.loads(ensemble.to_json())
    for members in ({"a": 1}, [{"source": "runs/a"}], ["alexnet"]):
        (tmp_path / "model.json").write_text(json.dumps({**document, "members": members}))
        with pytest.raises(InputError, match="malformed .*members must be a list of objects"):
            ModelCard.read(tmp_path)


def test_unknown_keys_are_kept_when_the_card_is_written_again(tmp_path):
    CARD.write(tmp_path)
    document = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**document, "license": "CC-BY"}))
    ModelCard.read(tmp_path).write(tmp_path / ".")
    assert json.loads((tmp_path / "model.json").read_text())["license"] == "CC-BY"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "model.json: not valid JSON"),
        ("[]", "model.json: expected a JSON object, found list"),
        ('{"model": "alexnet"}', "model.json: missing 'model_kwargs'"),
        (json.dumps({"format_version": 99}), "format_version 99 is newer"),
        (
            json.dumps({"model": "a", "model_kwargs": {}, "classes": [], "preprocess": {"channels": 1}}),
            "model.json: malformed",
        ),
        (
            json.dumps({"model": "a", "model_kwargs": {}, "classes": ["a", "b"], "preprocess": [28]}),
            "preprocess must be an object, not list",
        ),
    ],
)
def test_bad_cards_are_one_line_input_errors(tmp_path, text, message):
    (tmp_path / "model.json").write_text(text)
    with pytest.raises(InputError, match=message):
        ModelCard.read(tmp_path)


def test_no_card_names_the_folder(tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path}: no model.json"):
        ModelCard.read(tmp_path)


@pytest.mark.parametrize(
    ("preprocess", "message"),
    [
        ({"image_size": 10**6, "channels": 1, "mean": [0.5], "std": [0.2]}, "must be 1 to 4096 px"),
        ({"image_size": 28, "channels": 2, "mean": [0.5] * 2, "std": [0.2] * 2}, "channels must be 1 or 3"),
        ({"image_size": 28, "channels": 3, "mean": [0.5], "std": [0.2]}, "one mean and one std each"),
        ({"image_size": 28, "channels": 1, "mean": [0.5], "std": [0]}, "std must be positive"),
        ({"image_size": "big", "channels": 1, "mean": [0.5], "std": [0.2]}, "malformed"),
        (
            {"image_size": 28, "channels": 1, "mean": [0.5], "std": [0.2], "augmented": "mirrors"},
            "preprocess.augmented must be a list",
        ),
    ],
)
def test_absurd_sizes_and_wrong_types_are_refused(tmp_path, preprocess, message):
    document = {"model": "alexnet", "model_kwargs": {}, "classes": ["a", "b"], "preprocess": preprocess}
    (tmp_path / "model.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match=message):
        ModelCard.read(tmp_path)
