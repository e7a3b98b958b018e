import pytest
import torch

import alexnet
from alexnet.errors import InputError
from alexnet.models import get_model, list_models, model_spec, register

EXPECTED = [
    "alexnet", "alexnet_paper", "alexnet_bn", "alexnet_cifar", "alexnet_cifar_fast",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
]  # fmt: skip


def test_every_design_model_is_registered():
    assert list_models() == EXPECTED


def test_duplicate_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register("alexnet", image_size=224, description="again")(lambda: None)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(InputError, match="unknown model 'alexnet2'.*alexnet_paper"):
        get_model("alexnet2")


def test_unknown_option_is_an_input_error():
    with pytest.raises(InputError, match="takes no option towers"):
        get_model("alexnet", towers=2)


def test_an_option_value_the_builder_refuses_is_an_input_error():
    with pytest.raises(InputError, match="^model 'alexnet_cifar_fast': widths needs one width per block"):
        get_model("alexnet_cifar_fast", widths=())
    with pytest.raises(InputError, match="^model 'alexnet_cifar_fast': .*not iterable"):
        get_model("alexnet_cifar_fast", widths=64)


def test_image_size_reaches_only_builders_that_use_it():
    assert model_spec("vgg16").adapts_to_image_size
    assert not model_spec("alexnet").adapts_to_image_size
    with torch.device("meta"):
        small = get_model("vgg16", image_size=32, num_classes=10)
        plain = get_model("alexnet", image_size=128)
    assert small.classifier[0].in_features == 512
    assert plain.classifier[1].in_features == 9216


def test_package_exports_the_public_api():
    assert alexnet.create_model is alexnet.get_model
    assert callable(alexnet.train) and alexnet.resolve_config().recipe == "fashion-mnist"
    assert alexnet.list_models() == EXPECTED
    with pytest.raises(AttributeError):
        alexnet.no_such_thing  # noqa: B018
