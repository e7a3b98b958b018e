import pytest
import torch

from alexnet.errors import InputError
from alexnet.models import get_architecture, get_model, list_models, model_spec
from alexnet.models.registry import published_weights
from alexnet.models.weights import load_weights


def test_torchvision_publishes_imagenet_weights_for_alexnet_and_every_vgg():
    published = published_weights("imagenet")
    assert sorted(published) == sorted(["alexnet", *(n for n in list_models() if n.startswith("vgg"))])
    for name, weights in published.items():
        assert weights.url == f"https://download.pytorch.org/models/{weights.file_name}"
        assert len(weights.sha256_prefix) >= 8 and weights.num_classes == 1000 and weights.crop_size == 224
        assert get_architecture(name).num_classes == weights.num_classes


def test_the_plan_declares_the_first_conv_and_the_head():
    for name in list_models():
        with torch.device("meta"):
            model = get_model(name, num_classes=7)
        assert isinstance(model.get_submodule(model.first_conv_name), torch.nn.Conv2d), name
        head = model.get_submodule(model.head_name)
        assert isinstance(head, torch.nn.Linear) and head.out_features == 7, name
    assert model_spec("alexnet").weights["imagenet"].min_size == 63


def test_one_loading_path_reports_every_kind_of_bad_key_in_one_line():
    torch.manual_seed(0)
    model = get_model("alexnet_cifar", num_classes=3)
    state = dict(model.state_dict())
    state["features.99.weight"] = torch.zeros(1)
    del state["features.0.weight"]
    with pytest.raises(InputError, match=r"^w\.pth: weights do not fit the model: missing features\.0\.weight; "
                                         r"unexpected features\.99\.weight$"):  # fmt: skip
        load_weights(get_model("alexnet_cifar", num_classes=3), state, "w.pth")
    fresh = get_model("alexnet_cifar", num_classes=5)
    done = load_weights(fresh, model.state_dict(), "w.pth", new_head=True)  # 3 classes -> 5: a new head
    assert done.fresh == (f"{fresh.head_name}.weight", f"{fresh.head_name}.bias")
    assert torch.equal(fresh.state_dict()["features.0.weight"], model.state_dict()["features.0.weight"])
