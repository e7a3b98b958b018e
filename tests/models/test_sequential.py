"""``layers.Sequential``: the runs of layers it does in a cheaper way give the bits of the layers in order."""

import pytest
import torch
from torch import nn

from alexnet.models import get_model, native


def _features_step(model, images, upstream, bf16: bool, fused: bool):
    """Output and gradients of ``model.features``, through its ``Sequential`` (``fused``) or a layer at a time."""
    model.zero_grad()
    x = images.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if fused:
            out = model.features(x)
        else:
            out = x
            for module in model.features:
                out = module(out)
    out.float().backward(upstream)
    return [out.detach(), x.grad] + [p.grad.clone() for p in model.features.parameters()]


def _calls(monkeypatch, kind: type[nn.Module]) -> list[tuple[nn.Module, torch.Size]]:
    """Each call of a ``kind`` module's forward from now on, with the shape it was given."""
    calls = []
    forward = kind.forward
    monkeypatch.setattr(kind, "forward", lambda self, x: calls.append((self, x.shape)) or forward(self, x))
    return calls


@pytest.mark.parametrize("bf16", [False, True])
def test_alexnet_papers_relus_run_inside_the_lrn_kernels_with_the_same_bits(bf16, monkeypatch):
    """``Sequential`` hands conv1's and conv2's ReLUs and max-pools to the LRN layers between them (three of the
    five ReLUs and one of the three pools run as modules) and the features' output and every gradient are those
    of the layers one after another."""
    assert native.available()
    torch.manual_seed(0)
    model = get_model("alexnet_paper", num_classes=5).to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 99, 99).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(2, 256, 2, 2)
    layered = _features_step(model, images, upstream, bf16, fused=False)
    relus, pools = _calls(monkeypatch, nn.ReLU), _calls(monkeypatch, nn.MaxPool2d)
    fused = _features_step(model, images, upstream, bf16, fused=True)
    assert [module for module, _ in relus] == [model.features[9], model.features[11], model.features[13]]
    assert [module for module, _ in pools] == [model.features[14]]
    for ours, theirs in zip(fused, layered, strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("name", ["alexnet", "alexnet_bn", "vgg11_bn"])
@pytest.mark.parametrize("bf16", [False, True])
def test_relus_before_max_pools_run_on_the_pooled_maps_with_the_same_bits(name, bf16, monkeypatch):
    """A ReLU followed by a max-pool runs after it, on the pooled map: the same output and gradients, to the
    bit, with every other row of the images zero (tied maxima in conv1's maps) and about half of each map
    negative (windows whose maximum is not positive)."""
    torch.manual_seed(0)
    model = get_model(name, num_classes=5).to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 67, 67)
    images[:, :, ::2] = 0  # every other row zero: windows whose maximum is tied, or zero, after conv1's bias
    images = images.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        upstream = torch.randn_like(model.features(images).float())
    layered = _features_step(model, images, upstream, bf16, fused=False)
    calls = _calls(monkeypatch, nn.ReLU)
    fused = _features_step(model, images, upstream, bf16, fused=True)
    pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
    before_pools = {model.features[i - 1] for i in pools if isinstance(model.features[i - 1], nn.ReLU)}
    assert len(before_pools) == len(pools)
    pooled = [shape for module, shape in calls if module in before_pools]
    assert len(pooled) == len(pools) and len(calls) == sum(isinstance(m, nn.ReLU) for m in model.features)
    with torch.no_grad():  # the ReLUs before the pools saw the pools' outputs
        x, expected = images, []
        for i, module in enumerate(model.features):
            x = module(x)
            if i in pools:
                expected.append(x.shape)
    assert pooled == expected
    for ours, theirs in zip(fused, layered, strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    ("name", "shape"), [("alexnet_paper", (2, 96, 23, 23)), ("alexnet", (2, 64, 24, 24))], ids=["lrn", "pool"]
)
def test_a_hooked_relu_runs_on_its_own(name, shape):
    """A hook on a ReLU sees what it would without the pairing: the ReLU's output on the whole map, never
    negative (conv1's ReLU, before alexnet_paper's LRN and before alexnet's pool)."""
    model = get_model(name, num_classes=5).to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 99, 99).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model.features(images)
        seen = []
        model.features[1].register_forward_hook(lambda module, inputs, output: seen.append(output.clone()))
        assert torch.equal(model.features(images), expected)
    assert len(seen) == 1 and seen[0].min() == 0 and seen[0].shape == shape


def test_a_last_relu_and_a_sliced_stack_run():
    """A ReLU with nothing after it, and a slice of the stack (a ``Sequential`` too), run as written."""
    model = get_model("alexnet", num_classes=5)
    images = torch.randn(1, 3, 67, 67)
    with torch.no_grad():
        head = model.features[:2]
        assert isinstance(head, type(model.features)) and torch.equal(
            head(images), model.features[1](model.features[0](images))
        )
        assert (head(images) >= 0).all()
