"""Plans against the modules built from them: the pure-Python shape arithmetic must agree with torch."""

import pytest
import torch
from torch import nn

from alexnet.models import get_architecture, get_model, list_models
from alexnet.models.build import build
from alexnet.models.plan import ShapeError, fits, forward_shapes, smallest_input_size

from parameters import count_parameters


def _traced(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple]:
    """(name, class, output shape, Keras-style params) of every leaf module in a real forward pass."""
    names = {m: n for n, m in model.named_modules()}
    rows = []

    def record(module, _inputs, output):
        rows.append((names[module], type(module).__name__, tuple(output.shape[1:]), sum(count_parameters(module))))

    handles = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model.eval()(torch.zeros((1, *input_shape)))
    for h in handles:
        h.remove()
    return rows


def _planned(arch, input_shape):
    return [(r.name, r.kind, r.output_shape, r.params) for r in forward_shapes(arch, input_shape)]


@pytest.mark.parametrize("name", list_models())
def test_plan_matches_a_real_forward_at_the_smallest_and_next_sizes(name):
    arch = get_architecture(name, num_classes=7, in_channels=2, hidden=(16, 8), image_size=40)
    model = build(arch)
    smallest = smallest_input_size(arch)
    for side in (smallest, smallest + 1, smallest + 13):
        assert _planned(arch, (2, side, side)) == _traced(model, (2, side, side)), side
    # One pixel less fails in torch exactly where the plan says it does.
    assert not fits(arch, (2, smallest - 1, smallest - 1))
    with pytest.raises(RuntimeError):
        model(torch.zeros(1, 2, smallest - 1, smallest - 1))


@pytest.mark.parametrize("name", list_models())
def test_plan_counts_equal_the_built_module(name):
    arch = get_architecture(name, num_classes=10)
    with torch.device("meta"):
        model = get_model(name, num_classes=10)
    trainable, non_trainable = count_parameters(model)
    assert (arch.params, arch.statistics) == (trainable, non_trainable)
    assert arch.num_classes == 10


def test_default_sizes_match_published_shapes():
    assert forward_shapes(get_architecture("alexnet_paper"), (3, 227, 227))[0].output_shape == (96, 55, 55)
    assert smallest_input_size(get_architecture("alexnet")) == 63
    assert smallest_input_size(get_architecture("vgg16")) == 32
    assert fits(get_architecture("alexnet"), (3, 63, 63))
    assert not fits(get_architecture("alexnet"), (3, 62, 62))


def test_wrong_channel_count_is_a_shape_error():
    with pytest.raises(ShapeError, match="takes 3 channels, not 1"):
        forward_shapes(get_architecture("alexnet"), (1, 224, 224))


def test_initialisers_follow_the_plan():
    torch.manual_seed(0)
    paper = get_model("alexnet_paper", init="paper", num_classes=10)
    assert paper.features[4].bias.eq(1).all() and paper.features[0].bias.eq(0).all()
    kaiming = get_model("alexnet_paper", num_classes=10)
    assert kaiming.features[4].bias.eq(0).all()
    vgg = get_model("vgg11", num_classes=10, image_size=32)
    assert vgg.classifier[-1].weight.std().item() == pytest.approx(0.01, rel=0.1)
