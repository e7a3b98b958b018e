import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet.models import get_architecture, get_model, layers
from alexnet.models.layers import LocalResponseNorm
from alexnet.models.plan import smallest_input_size

from parameters import count_parameters


def _params(name, **kwargs) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in get_model(name, **kwargs).parameters())


def test_alexnet_parameter_counts():
    assert _params("alexnet") == 61_100_840
    assert _params("alexnet", num_classes=10, hidden=(4096, 1024)) == 44_428_106


def test_transfer_head_is_9216_4096_1024_10():
    with torch.device("meta"):
        model = get_model("alexnet", num_classes=10, hidden=(4096, 1024))
    linears = [(m.in_features, m.out_features) for m in model.classifier if isinstance(m, nn.Linear)]
    assert linears == [(9216, 4096), (4096, 1024), (1024, 10)]


def test_alexnet_paper_parameter_counts():
    assert _params("alexnet_paper") == 60_965_224
    assert _params("alexnet_paper", towers=1) == 62_378_344


def test_alexnet_paper_two_towers_group_conv2_conv4_conv5_only():
    with torch.device("meta"):
        model = get_model("alexnet_paper")
    groups = [m.groups for m in model.features if isinstance(m, nn.Conv2d)]
    assert groups == [1, 2, 1, 2, 2]
    assert tuple(model.features[4].weight.shape) == (256, 48, 5, 5)


def test_alexnet_paper_at_227_gives_the_papers_maps():
    model = get_model("alexnet_paper").eval()
    shapes = []
    hooks = [model.features[i].register_forward_hook(lambda m, i, o: shapes.append(o.shape[1:])) for i in (0, 3, 7)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 227, 227))
    for h in hooks:
        h.remove()
    assert shapes == [(96, 55, 55), (96, 27, 27), (256, 13, 13)]


def test_alexnet_paper_rejects_three_towers():
    with pytest.raises(ValueError, match="towers"):
        get_model("alexnet_paper", towers=3)


def test_paper_initialisation():
    model = get_model("alexnet_paper", init="paper").requires_grad_(False)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [float(m.bias.mean()) for m in convs] == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert [float(m.bias.mean()) for m in linears] == [1.0, 1.0, 0.0]
    assert abs(float(linears[0].weight.std()) - 0.01) < 1e-3
    assert abs(float(linears[0].weight.mean())) < 1e-3


def test_alexnet_keeps_torchs_fills_unless_told_kaiming():
    torch.manual_seed(0)
    default = get_model("alexnet", num_classes=10).requires_grad_(False)
    kaiming = get_model("alexnet", num_classes=10, init="kaiming").requires_grad_(False)
    conv3 = default.features[6].weight  # 384 x 192 x 3 x 3: fan_in 1,728
    assert abs(float(conv3.std()) - (1 / (3 * 1728)) ** 0.5) < 1e-3  # uniform(±1/sqrt(fan_in))
    assert abs(float(kaiming.features[6].weight.std()) - (2 / 1728) ** 0.5) < 1e-3  # He-normal
    assert float(default.features[6].bias.abs().max()) > 0 and float(kaiming.features[6].bias.abs().max()) == 0
    assert float(kaiming.classifier[-1].weight.std()) == pytest.approx(0.01, abs=1e-3)
    with pytest.raises(ValueError, match="init must be 'torch' or 'kaiming'"):
        get_model("alexnet", init="paper")


def test_lrn_uses_the_papers_formula():
    """b = a / (k + alpha * sum over 5 neighbouring channels of a^2) ** beta, alpha undivided."""
    x = torch.randn(2, 7, 3, 3) * 20
    lrn = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
    expected = torch.empty_like(x)
    for c in range(7):
        window = x[:, max(0, c - 2) : c + 3]
        expected[:, c] = x[:, c] / (2.0 + 1e-4 * (window**2).sum(1)) ** 0.75
    torch.testing.assert_close(lrn(x), expected)
    # torch's module divides alpha by size: the same constants there normalise more weakly.
    assert not torch.allclose(F.local_response_norm(x, 5, 1e-4, 0.75, 2.0), expected)


@pytest.mark.parametrize("size", [3, 4, 5])
def test_lrn_window_is_torchs_for_odd_and_even_sizes(size):
    x = torch.randn(2, 9, 4, 4) * 10
    expected = F.local_response_norm(x, size, 1e-3 * size, 0.75, 2.0)
    torch.testing.assert_close(LocalResponseNorm(size, 1e-3, 0.75, 2.0)(x), expected)
    channels_last = x.to(memory_format=torch.channels_last)
    torch.testing.assert_close(LocalResponseNorm(size, 1e-3, 0.75, 2.0)(channels_last), expected)


@pytest.mark.parametrize("size", [3, 4, 5])
@pytest.mark.parametrize("groups", [1, 2])
def test_lrn_backward_is_torchs(size, groups):
    """The hand-written backward against autograd through torch's own kernel, per tower, in float64."""
    x = (torch.randn(2, 8, 3, 3, dtype=torch.float64) * 20).requires_grad_(True)
    lrn = LocalResponseNorm(size, 1e-3, 0.75, 2.0, groups=groups)
    assert torch.autograd.gradcheck(lrn, (x,))
    towers = x.chunk(groups, dim=1)
    expected = torch.cat([F.local_response_norm(t, size, 1e-3 * size, 0.75, 2.0) for t in towers], dim=1)
    upstream = torch.randn_like(expected)
    torch.testing.assert_close(lrn(x), expected)
    ours = torch.autograd.grad(lrn(x), x, upstream)[0]
    torch.testing.assert_close(ours, torch.autograd.grad(expected, x, upstream)[0])


def test_lrn_trains_in_bf16_and_channels_last_under_autocast():
    x = (torch.randn(4, 96, 7, 7) * 30).to(memory_format=torch.channels_last)
    upstream = torch.randn(4, 96, 7, 7)
    reference = x.clone().requires_grad_(True)
    F.local_response_norm(reference, 5, 5e-4, 0.75, 2.0).backward(upstream)
    low = x.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = LocalResponseNorm()(low)
    out.backward(upstream.to(torch.bfloat16))
    assert out.dtype == low.grad.dtype == torch.bfloat16  # no fp32 round trip
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.float(), F.local_response_norm(x, 5, 5e-4, 0.75, 2.0), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(low.grad.float(), reference.grad, rtol=3e-2, atol=3e-2)


def test_lrn_op_by_op_formula_trains_like_the_autograd_function(monkeypatch):
    """The formula that torch.compile and the ONNX exporter trace: same output and gradient as ``_LRN``."""
    x = (torch.randn(2, 8, 3, 3, dtype=torch.float64) * 20).requires_grad_(True)
    upstream = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    lrn = LocalResponseNorm(groups=2)
    fused = lrn(x)
    expected = torch.autograd.grad(fused, x, upstream)[0]
    monkeypatch.setattr(layers, "_tracing", lambda: True)
    traced = lrn(x)
    assert traced.grad_fn.name() != fused.grad_fn.name()  # the other path ran
    torch.testing.assert_close(traced, fused)
    torch.testing.assert_close(torch.autograd.grad(traced, x, upstream)[0], expected)


@pytest.mark.slow
def test_compiled_alexnet_paper_trains_like_eager():
    """torch.compile of the 2012 network (LRN's op-by-op formula) gives eager's loss and gradients."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = get_model("alexnet_paper", num_classes=5, dropout=0.0).double()
    images, labels = torch.randn(2, 3, 227, 227, dtype=torch.float64) * 3, torch.tensor([0, 3])

    def gradients(forward) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = F.cross_entropy(forward(images), labels)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    eager_loss, eager = gradients(model)
    compiled_loss, compiled = gradients(torch.compile(model))
    torch.testing.assert_close(compiled_loss, eager_loss)
    for ours, expected in zip(compiled, eager, strict=True):
        torch.testing.assert_close(ours, expected)


def test_lrn_per_tower_never_mixes_towers():
    x = torch.randn(1, 8, 2, 2)
    per_tower = LocalResponseNorm(groups=2)(x)
    torch.testing.assert_close(per_tower[:, :4], LocalResponseNorm()(x[:, :4]))
    torch.testing.assert_close(per_tower[:, 4:], LocalResponseNorm()(x[:, 4:]))


def test_alexnet_bn_counts_as_keras_does():
    with torch.device("meta"):
        model = get_model("alexnet_bn", num_classes=10)
        gray = get_model("alexnet_bn", num_classes=10, in_channels=1)
    assert count_parameters(model) == (46_790_730, 2_752)
    assert sum(count_parameters(gray)) == 46_770_250


def test_alexnet_bn_flattens_6400_at_224():
    with torch.device("meta"):
        model = get_model("alexnet_bn", num_classes=10)
    assert model.classifier[1].in_features == 6400
    assert model.avgpool.output_size == (5, 5)


def test_frozen_parameters_count_as_non_trainable():
    model = get_model("alexnet_cifar")
    for p in model.features.parameters():
        p.requires_grad_(False)
    trainable, non_trainable = count_parameters(model)
    assert trainable == sum(p.numel() for p in model.classifier.parameters())
    assert non_trainable == sum(p.numel() for p in model.features.parameters()) + 1_920


def test_alexnet_cifar_reaches_a_4x4_map_at_32_and_28():
    for size in (32, 28):
        model = get_model("alexnet_cifar", in_channels=1 if size == 28 else 3).eval()
        with torch.no_grad():
            out = model.features(torch.zeros(1, 1 if size == 28 else 3, size, size))
        assert out.shape[1:] == (256, 4, 4)


def test_alexnet_cifar_fast_is_a_plain_stack_reaching_one_pixel():
    assert _params("alexnet_cifar_fast") == 1_972_792
    kinds = {type(m).__name__ for m in get_model("alexnet_cifar_fast").modules()}
    assert kinds == {"ConvNet", "Sequential", "Conv2d", "ReLU", "MaxPool2d", "BatchNorm2d", "AdaptiveAvgPool2d",
                     "Linear", "Scale"}  # fmt: skip
    for size, channels in ((32, 3), (28, 1)):
        model = get_model("alexnet_cifar_fast", in_channels=channels).eval()
        assert model.features[0].out_channels == 2 * channels * 4  # one whitening filter pair per patch value
        with torch.no_grad():
            assert model.features(torch.zeros(2, channels, size, size)).shape == (2, 256, 1, 1)
            assert model(torch.zeros(2, channels, size, size)).shape == (2, 10)
    head = get_model("alexnet_cifar_fast").classifier
    assert head[0].bias is None and head[1].factor == pytest.approx(1 / 9)


def test_alexnet_cifar_fast_takes_one_block_per_width():
    four = get_model("alexnet_cifar_fast", widths=(16, 32, 32, 64)).eval()
    assert sum(isinstance(m, nn.BatchNorm2d) for m in four.modules()) == 8  # two convs a block
    with torch.no_grad():  # at 64 px the fourth block takes the 7-px map to 3, and the last pool to 1
        assert four.features(torch.zeros(2, 3, 64, 64)).shape == (2, 64, 1, 1)
    # each block halves the map and the last pool needs 3 px: three blocks from 25 px, four from 49 (docstring)
    sides = [smallest_input_size(get_architecture("alexnet_cifar_fast", widths=(8,) * n)) for n in (3, 4)]
    assert sides == [25, 49]
    assert get_model("alexnet_cifar_fast", widths=(16,)).classifier[0].in_features == 16
    with pytest.raises(ValueError, match="one width per block"):
        get_model("alexnet_cifar_fast", widths=())


def test_alexnet_cifar_fast_block_convs_deepens_each_block_at_its_pooled_map():
    deep = get_model("alexnet_cifar_fast", widths=(16, 32, 32), block_convs=3).eval()
    convs = [m for m in deep.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 3 * 3  # the stem, then three convs a block
    assert sum(isinstance(m, nn.BatchNorm2d) for m in deep.modules()) == 9
    assert not any(isinstance(m, nn.Conv2d) and m.bias is not None for m in convs[1:])
    x = torch.zeros(2, 3, 32, 32)
    shapes = []
    for layer in deep.features:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            shapes.append(tuple(x.shape[1:]))
    # each further conv keeps its block's pooled map and width
    assert shapes[1:] == [(16, 31, 31), (16, 15, 15), (16, 15, 15), (32, 15, 15), (32, 7, 7), (32, 7, 7),
                          (32, 7, 7), (32, 3, 3), (32, 3, 3)]  # fmt: skip
    assert deep(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    # the default is the two-conv block, keys and all; one conv a block drops the second
    assert (
        get_model("alexnet_cifar_fast", block_convs=2).state_dict().keys()
        == get_model("alexnet_cifar_fast").state_dict().keys()
    )
    assert sum(isinstance(m, nn.Conv2d) for m in get_model("alexnet_cifar_fast", block_convs=1).modules()) == 4
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="block_convs must be a whole number, at least 1"):
            get_model("alexnet_cifar_fast", block_convs=bad)


def test_dropout_without_hidden_layers_drops_the_output_layers_input():
    # a head of one Linear used to ignore --dropout; now it drops that Linear's input, as timm's drop_rate does
    plain = get_model("alexnet_cifar_fast").classifier
    assert not any(isinstance(m, nn.Dropout) for m in plain)  # dropout 0: the head and its keys as before
    head = get_model("alexnet_cifar_fast", dropout=0.5).classifier
    assert isinstance(head[0], nn.Dropout) and head[0].p == 0.5 and head[1].bias is None
    torch.manual_seed(0)
    features = torch.ones(64, 256)
    train = head.train()(features)
    assert not torch.equal(train[0], train[1])  # each row drops different features
    assert torch.allclose(head.eval()(features)[0], head.eval()(features)[1])
    vgg = get_model("vgg11", hidden=(), dropout=0.5, num_classes=3).classifier
    assert [type(m).__name__ for m in vgg] == ["Dropout", "Linear"]


def test_alexnet_cifar_fast_stem_stride_halves_the_stems_map():
    strided = get_model("alexnet_cifar_fast", stem_stride=2).eval()
    assert strided.features[0].stride == (2, 2) and strided.features[0].kernel_size == (2, 2)
    with torch.no_grad():  # 64 px -> a 32-px map after the stem, then the 32-px network's blocks
        assert strided.features[:2](torch.zeros(2, 3, 64, 64)).shape == (2, 24, 32, 32)
        assert strided(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
    # the blocks need a 24-px stem map: 25 px at stride 1, 48 at stride 2
    assert smallest_input_size(get_architecture("alexnet_cifar_fast", stem_stride=2)) == 48
    assert get_model("alexnet_cifar_fast").state_dict().keys() == strided.state_dict().keys()


def test_dirac_init_passes_each_convs_input_through_its_first_filters():
    model = get_model("alexnet_cifar_fast", widths=(32, 64, 64))
    conv = model.features[2]  # 24 -> 32 channels, 3x3
    x = torch.randn(1, 24, 6, 6)
    assert torch.allclose(conv(x)[:, :24], x, atol=1e-6)
    assert not torch.allclose(conv(x)[:, 24:], torch.zeros(1, 8, 6, 6))  # the other filters keep random values


def test_weights_round_trip_without_pickle(tmp_path):
    model = get_model("alexnet_paper", num_classes=5)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    again = get_model("alexnet_paper", num_classes=5)
    again.load_state_dict(torch.load(tmp_path / "w.pth", weights_only=True), strict=True)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
