import pytest
import torch

from alexnet.models import get_model
from alexnet.models.vgg import head_pool_size


@pytest.mark.parametrize(
    ("name", "params"),
    [("vgg16", 138_357_544), ("vgg19", 143_667_240), ("vgg16_bn", 138_365_992), ("vgg19_bn", 143_678_248)],
)
def test_vgg_parameter_counts(name, params):
    with torch.device("meta"):
        model = get_model(name)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize(("image_size", "pool"), [(32, 1), (63, 1), (64, 2), (128, 4), (224, 7), (448, 7)])
def test_head_reads_the_real_feature_map(image_size, pool):
    assert head_pool_size(image_size) == pool


def test_small_input_head_copies_nothing():
    """At 32 px the features end in a 1x1 map; the classifier reads those 512 values, not 49 copies."""
    model = get_model("vgg11", image_size=32, num_classes=10, hidden=(512, 512)).eval()
    with torch.no_grad():
        pooled = model.avgpool(model.features(torch.zeros(2, 3, 32, 32)))
    assert pooled.shape == (2, 512, 1, 1)
    assert model.classifier[0].in_features == 512


def test_vgg_takes_one_channel():
    model = get_model("vgg11_bn", in_channels=1, image_size=32, num_classes=3)
    assert model.features[0].in_channels == 1
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 3)
