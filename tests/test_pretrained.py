"""Pretrained sources: torchvision-format files (random values, exact keys), the hub cache, hashes, transfer."""

import dataclasses
import hashlib

import pytest
import torch
from safetensors.torch import save_file

import alexnet.pretrained as pretrained
from alexnet.errors import InputError
from alexnet.models import get_model, model_spec
from alexnet.models.weights import adapt_first_conv, load_weights
from alexnet.pretrained import hub_checkpoint_dir, load_pretrained


def transfer(model, weights):
    return load_weights(model, weights.state, weights.source, new_head=True)


def _publish(monkeypatch, name, url):
    """Declare ``url`` as the ImageNet checkpoint of ``name`` for one test."""
    weights = model_spec(name).weights
    monkeypatch.setitem(weights, "imagenet", dataclasses.replace(weights["imagenet"], url=url))


@pytest.fixture(scope="module")
def alexnet_pth(tmp_path_factory):
    """torchvision's alexnet-owt checkpoint layout (keys and shapes; test_torchvision_layout checks them)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "alexnet-random.pth"
    torch.save(get_model("alexnet").state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return path, digest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _no_network(*args, **kwargs):
    raise AssertionError("tried to download")


def test_hub_cache_follows_torch_home_and_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert hub_checkpoint_dir() == tmp_path / "th" / "hub" / "checkpoints"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_checkpoint_dir() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"


def test_a_verified_file_in_the_cache_is_used_offline(alexnet_pth, cache, monkeypatch):
    source, digest = alexnet_pth
    name = f"alexnet-owt-{digest[:8]}.pth"  # a name whose hash prefix this file really has
    _publish(monkeypatch, "alexnet", f"https://download.pytorch.org/models/{name}")
    monkeypatch.setattr(pretrained, "download", _no_network)
    cache.mkdir(parents=True)
    (cache / name).write_bytes(source.read_bytes())
    loaded = load_pretrained("imagenet", "alexnet")
    assert loaded.preprocess["mean"] == (0.485, 0.456, 0.406) and loaded.preprocess["image_size"] == 224
    assert torch.equal(loaded.state["features.0.weight"], torch.load(source, weights_only=True)["features.0.weight"])


def test_a_file_whose_hash_does_not_match_its_name_is_refused(alexnet_pth, cache, monkeypatch):
    monkeypatch.setattr(pretrained, "download", _no_network)
    cache.mkdir(parents=True)
    (cache / "alexnet-owt-7be5be79.pth").write_bytes(alexnet_pth[0].read_bytes())
    with pytest.raises(
        InputError,
        match=r"alexnet-owt-7be5be79.pth: sha256 .* does not match the 7be5be79 .*"
        r"put the official https://download.pytorch.org/models/alexnet-owt-7be5be79",
    ):
        load_pretrained("imagenet", "alexnet")


def test_a_missing_file_is_downloaded_into_the_cache_and_verified(alexnet_pth, cache, monkeypatch, tmp_path):
    source, digest = alexnet_pth
    name = f"alexnet-owt-{digest[:8]}.pth"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / name).write_bytes(source.read_bytes())
    _publish(monkeypatch, "alexnet", f"{mirror.as_uri()}/{name}")
    load_pretrained("imagenet", "alexnet")
    assert (cache / name).read_bytes() == source.read_bytes()
    assert not list(cache.glob("*.part"))


def test_models_without_published_weights_say_which_have_them():
    with pytest.raises(InputError, match="no ImageNet weights for 'alexnet_cifar'.*alexnet, vgg11"):
        load_pretrained("imagenet", "alexnet_cifar")


def test_new_head_replaces_the_old_and_the_rest_keeps_its_values(alexnet_pth):
    weights = load_pretrained(str(alexnet_pth[0]), "alexnet")
    model = get_model("alexnet", num_classes=10, hidden=(4096, 1024))
    done = transfer(model, weights)
    state = model.state_dict()
    for key in ("features.0.weight", "features.10.bias", "classifier.1.weight", "classifier.1.bias"):
        assert torch.equal(state[key], weights.state[key]), key
    assert done.fresh == ("classifier.4.weight", "classifier.4.bias", "classifier.6.weight", "classifier.6.bias")
    assert state["classifier.6.weight"].shape == (10, 1024)
    assert "classifier.1.weight" in done.loaded


def test_weights_of_another_architecture_name_the_first_bad_keys(alexnet_pth):
    weights = load_pretrained(str(alexnet_pth[0]), "alexnet")
    with torch.device("meta"):
        model = get_model("vgg11", num_classes=10)
    with pytest.raises(
        InputError,
        match=r"weights do not fit the model: missing features\.11\.weight.*wrong shape "
        r"features\.0\.weight \(64, 3, 11, 11\) \(model: \(64, 3, 3, 3\)\)",
    ):
        transfer(model, weights)


def test_safetensors_and_run_directories_are_sources(tmp_path):
    from modeldirs import KWARGS, constant_model, write_model_dir

    model = constant_model()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    fresh = get_model("alexnet_cifar", **{**KWARGS, "num_classes": 3})
    done = transfer(fresh, load_pretrained(str(tmp_path / "w.safetensors"), "alexnet_cifar"))
    assert "classifier.3.weight" in done.fresh and "classifier.1.weight" in done.loaded
    run = write_model_dir(tmp_path / "run", model)
    loaded = load_pretrained(str(run), "alexnet_cifar")
    assert loaded.preprocess == {"image_size": 28, "mean": [0.5], "std": [0.25], "storage_size": 28}
    with pytest.raises(InputError, match="holds a alexnet_cifar model, not alexnet"):
        load_pretrained(str(run), "alexnet")
    with pytest.raises(InputError, match="no such file or directory"):
        load_pretrained(str(tmp_path / "nope.pth"), "alexnet")


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(1), "hook": print}, tmp_path / "evil.pth")
    with pytest.raises(InputError, match="evil.pth: not a readable weights file"):
        load_pretrained(str(tmp_path / "evil.pth"), "alexnet")


def test_grey_data_folds_the_first_conv_and_gives_the_rgb_response():
    torch.manual_seed(0)
    rgb = get_model("alexnet_cifar", in_channels=3).eval()
    grey = get_model("alexnet_cifar", in_channels=1).eval()
    state = adapt_first_conv(rgb.state_dict(), grey)
    assert state["features.0.weight"].shape[1] == 1
    grey.load_state_dict(state)
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    back = adapt_first_conv(grey.state_dict(), rgb)  # 1 -> 3: a third each
    torch.testing.assert_close(back["features.0.weight"].sum(1, keepdim=True), state["features.0.weight"])
