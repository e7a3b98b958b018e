import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet import runtime
from alexnet.models import get_model, layers
from alexnet.models.layers import Conv2d, tap_weight_grad


@pytest.fixture(params=[True, False], ids=["amx", "no-amx"])
def amx(request, monkeypatch):
    """The taps' rule of a CPU with AMX, then of one without (an AVX512-BF16 Zen 4), whatever this one has."""
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: request.param)
    return request.param


def _pair(in_channels, out_channels, *, bias=False, padding=1, kernel=3):
    """Our Conv2d and torch's with the same weights, both in training mode."""
    torch.manual_seed(0)
    ours = Conv2d(in_channels, out_channels, kernel, padding=padding, bias=bias)
    theirs = nn.Conv2d(in_channels, out_channels, kernel, padding=padding, bias=bias)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _step(conv, x):
    """Forward and backward under bf16 autocast in channels_last: output and the gradients by x and weights."""
    x = x.clone().requires_grad_(True)
    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out, x.grad, conv.weight.grad, None if conv.bias is None else conv.bias.grad


@pytest.mark.parametrize(
    ("channels", "side", "bias", "kernel", "padding"), [(64, 3, False, 3, 1), (256, 7, True, 3, 1), (64, 4, True, 1, 0)]
)
def test_tap_weight_gradient_is_torchs(monkeypatch, channels, side, bias, kernel, padding):
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: True)  # the wider rule: every case here takes the taps
    ours, theirs = _pair(channels, 32, bias=bias, kernel=kernel, padding=padding)
    calls = []
    apply = layers._TapConv.apply
    monkeypatch.setattr(layers._TapConv, "apply", lambda *a: calls.append(1) or apply(*a))
    x = torch.randn(8, channels, side, side).contiguous(memory_format=torch.channels_last)
    steps = _step(ours, x), _step(theirs, x)
    assert calls == [1]  # ours took the taps, torch's did not
    for a, b in zip(*steps, strict=True):
        if b is not None:
            assert a.dtype == b.dtype
            torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2 * b.float().abs().max().item())


def test_tap_weight_gradient_matches_float64():
    x = torch.randn(4, 16, 5, 5, dtype=torch.float64)
    weight = torch.randn(8, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(4, 8, 5, 5, dtype=torch.float64)
    F.conv2d(x, weight, padding=1).backward(grad)
    torch.testing.assert_close(tap_weight_grad(grad, x, 3, 1), weight.grad)


@pytest.mark.parametrize(
    ("why", "channels", "side", "dtype", "training", "stride"),
    [
        ("map too large for its channels", 64, 5, torch.bfloat16, True, 1),
        ("too few channels", 48, 3, torch.bfloat16, True, 1),
        ("fp32", 256, 3, torch.float32, True, 1),
        ("evaluation", 256, 3, torch.bfloat16, False, 1),
        ("stride 2", 256, 6, torch.bfloat16, True, 2),
    ],
)
def test_other_convolutions_stay_torchs(monkeypatch, amx, why, channels, side, dtype, training, stride):
    conv = Conv2d(channels, 8, 3, padding=1, stride=stride).train(training)
    monkeypatch.setattr("alexnet.models.layers._TapConv.apply", lambda *a: pytest.fail(f"taps used: {why}"))
    x = torch.randn(2, channels, side, side, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        conv(x).sum().backward()


def test_alexnet_cifar_fast_uses_taps_on_its_small_maps_and_keeps_torchs_state_dict(amx):
    model = get_model("alexnet_cifar_fast", num_classes=10)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert all(type(m) is Conv2d for m in convs)
    sides = [32, 31, 15, 15, 7, 7, 3]  # input side of each conv at 32 px: stem, then two per block
    taps = [
        m._uses_taps(torch.empty(1, m.in_channels, s, s), torch.bfloat16) for m, s in zip(convs, sides, strict=True)
    ]
    # 256 channels: with AMX the taps on 7x7 and 3x3 maps; without it (oneDNN 1.25x the faster on 7x7) on 3x3
    assert taps == [False, False, False, False] + ([True, True, True] if amx else [False, False, True])
    assert "features.0.weight" in model.state_dict()


@pytest.mark.parametrize(("channels", "side", "with_amx", "without"), [(64, 3, True, False), (512, 2, True, True)])
def test_the_taps_rule_follows_the_cpu(monkeypatch, channels, side, with_amx, without):
    conv = Conv2d(channels, channels, 3, padding=1).train()
    x = torch.empty(1, channels, side, side)
    for amx, expected in ((True, with_amx), (False, without)):
        monkeypatch.setattr(runtime, "cpu_has_amx", lambda amx=amx: amx)
        assert conv._uses_taps(x, torch.bfloat16) is expected
