import pytest

from alexnet.errors import InputError
from alexnet.models import get_architecture
from alexnet.models.summary import format_summary, summarize


def test_alexnet_bn_seed_figures():
    summary = summarize(get_architecture("alexnet_bn", num_classes=10), "alexnet_bn", (3, 224, 224))
    assert (summary.total_params, summary.trainable_params, summary.non_trainable_params) == (
        46_793_482,
        46_790_730,
        2_752,
    )
    gray = summarize(get_architecture("alexnet_bn", num_classes=10, in_channels=1), "alexnet_bn", (1, 224, 224))
    assert gray.total_params == 46_770_250


def test_rows_carry_shapes_params_and_macs():
    summary = summarize(get_architecture("alexnet"), "alexnet", (3, 224, 224))
    first = summary.layers[0]
    assert (first.name, first.kind, first.output_shape) == ("features.0", "Conv2d", (64, 55, 55))
    assert first.params == 64 * 3 * 11 * 11 + 64
    assert first.macs == 64 * 55 * 55 * 3 * 11 * 11
    assert summary.layers[-1].output_shape == (1000,)
    assert sum(r.params for r in summary.layers) == summary.total_params
    assert summary.macs == sum(r.macs for r in summary.layers)
    # torchvision's AlexNet is commonly quoted at 0.71 GMACs per 224-px image.
    assert 0.70e9 < summary.macs < 0.72e9
    assert summary.param_bytes == 61_100_840 * 4


def test_grouped_conv_macs_count_one_tower_of_inputs():
    summary = summarize(get_architecture("alexnet_paper"), "alexnet_paper", (3, 227, 227))
    conv2 = next(r for r in summary.layers if r.name == "features.4")
    assert conv2.macs == 256 * 27 * 27 * 48 * 5 * 5


def test_too_small_input_names_the_smallest_that_works():
    with pytest.raises(InputError, match="alexnet cannot take a 32x32 input; the smallest that works is 63x63"):
        summarize(get_architecture("alexnet"), "alexnet", (3, 32, 32))


def test_channel_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="built for 3-channel images, not 1"):
        summarize(get_architecture("alexnet"), "alexnet", (1, 224, 224))


def test_format_shows_totals():
    text = format_summary(summarize(get_architecture("alexnet_bn", num_classes=10), "alexnet_bn", (3, 224, 224)))
    assert "Total params: 46,793,482" in text
    assert "Non-trainable params: 2,752" in text
    assert "features.0 (Conv2d)" in text
