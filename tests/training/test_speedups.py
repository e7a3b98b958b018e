import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet.models import get_model
from alexnet.training.speedups import (
    Lookahead,
    configure_norms,
    first_conv,
    whiten_first_conv,
    whitening_filters,
)


def _correlated_images(n=64, side=12):
    """Images whose channels and neighbouring pixels are strongly correlated (as in photographs)."""
    base = torch.randn(n, 1, side + 1, side + 1)
    smooth = (base[..., 1:, 1:] + base[..., :-1, :-1] + base[..., 1:, :-1]) / 3
    return torch.cat([smooth, 0.8 * smooth + 0.2 * torch.randn_like(smooth), torch.randn_like(smooth) * 0.3], 1)


def test_whitening_filters_decorrelate_patches_to_unit_variance():
    images = _correlated_images()
    filters = whitening_filters(images, kernel=2, count=24)
    assert filters.shape == (24, 3, 2, 2)
    assert torch.allclose(filters[12:], -filters[:12])  # each filter with its negation
    responses = F.conv2d(images, filters[:12]).permute(1, 0, 2, 3).reshape(12, -1)
    moments = responses @ responses.T / responses.shape[1]
    # The eps keeps the weakest directions a little under unit variance; the strong ones are white.
    assert torch.allclose(moments[:6, :6], torch.eye(6), atol=0.02)
    off_diagonal = moments - torch.diag(torch.diagonal(moments))
    assert off_diagonal.abs().max() < 0.02


def test_whitening_keeps_the_strongest_directions_when_the_conv_is_narrower():
    images = _correlated_images()
    filters = whitening_filters(images, kernel=3, count=8)
    full = whitening_filters(images, kernel=3, count=54)
    assert filters.shape == (8, 3, 3, 3) and full.shape == (54, 3, 3, 3)
    assert torch.allclose(filters[:4].abs(), full[:4].abs(), atol=1e-5)


def test_large_inputs_whiten_from_sampled_patches_without_unfolding_them_all():
    images = _correlated_images(n=8, side=40)
    sampled = whitening_filters(images, kernel=5, count=16, max_patches=4000, max_unfolded=1000)
    responses = F.conv2d(images, sampled[:8]).permute(1, 0, 2, 3).reshape(8, -1)
    moments = responses @ responses.T / responses.shape[1]
    assert torch.allclose(torch.diagonal(moments)[:4], torch.ones(4), atol=0.15)  # white on the whole set
    model = get_model("alexnet", num_classes=3)
    conv = whiten_first_conv(model, torch.randn(2, 3, 67, 67))
    assert conv.out_channels == 64 and not conv.weight.requires_grad  # 11x11x3 patches: 32 directions, +-


def test_whiten_first_conv_sets_and_fixes_the_filters():
    model = get_model("alexnet_cifar_fast", widths=(8, 8, 8))
    images = _correlated_images(side=16)
    conv = whiten_first_conv(model, images)
    assert conv is first_conv(model) and conv is model.features[0]
    assert not conv.weight.requires_grad and conv.bias.requires_grad
    assert torch.count_nonzero(conv.bias) == 0
    assert torch.equal(conv.weight, whitening_filters(images, 2, 24))


def test_configure_norms():
    model = get_model("alexnet_cifar_fast", widths=(8, 8, 8))
    configure_norms(model, momentum=0.4, eps=1e-12, train_scale=False)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.4 and m.eps == 1e-12 for m in norms)
    assert all(not m.weight.requires_grad and m.bias.requires_grad for m in norms)


def test_lookahead_update_rule():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    lookahead = Lookahead(decay=0.9, every=2, total_steps=8)
    lookahead.step(model, 1)  # not an update step, and no slow weights yet
    assert lookahead.state_dict()["slow"] == {}
    lookahead.step(model, 2)  # the first update: the slow weights are the fast ones (1.0)
    assert model.weight[0, 0].item() == 1.0 and lookahead.updated_at == 2
    with torch.no_grad():
        model.weight.fill_(3.0)
    lookahead.step(model, 3)  # not an update step: nothing changes
    assert model.weight[0, 0].item() == 3.0
    lookahead.step(model, 4)  # rho = 0.9**2 * (4/8)**3
    rho = 0.81 * 0.125
    expected = 1.0 + (1 - rho) * (3.0 - 1.0)
    assert model.weight[0, 0].item() == pytest.approx(expected)
    assert lookahead.state_dict()["slow"]["weight"][0, 0].item() == pytest.approx(expected)
    restored = Lookahead(decay=0.9, every=2, total_steps=8)
    restored.load_state_dict(lookahead.state_dict())
    assert torch.equal(restored.state_dict()["slow"]["weight"], lookahead.state_dict()["slow"]["weight"])
    assert restored.updated_at == 4
    # An epoch that ends one step after an update: that step is averaged in with rho = 0.9**1 * (5/8)**3,
    # not thrown away, and the next regular update counts from there.
    with torch.no_grad():
        model.weight.fill_(10.0)
    lookahead.step(model, 5, epoch_end=True)
    slow = expected + (1 - 0.9 * (5 / 8) ** 3) * (10.0 - expected)
    assert model.weight[0, 0].item() == pytest.approx(slow)
    lookahead.step(model, 6)  # one step since the last update: no update
    assert lookahead.updated_at == 5
    lookahead.step(model, 5, epoch_end=True)  # no step since the last update: nothing to average
    assert model.weight[0, 0].item() == pytest.approx(slow)


def test_a_run_shorter_than_one_lookahead_period_keeps_its_steps():
    # Four steps, an epoch's end before the first regular update: the slow weights start there, so
    # validation sees the trained weights, not an average pulled back toward the initialisation.
    model = nn.Linear(1, 1, bias=False)
    lookahead = Lookahead(decay=0.95, every=5, total_steps=4)
    for step in (1, 2, 3, 4):
        with torch.no_grad():
            model.weight.fill_(float(step))
        lookahead.step(model, step, epoch_end=step == 4)
    assert model.weight.item() == 4.0 and lookahead.state_dict()["slow"]["weight"].item() == 4.0


def test_lookahead_reads_a_checkpoint_holding_the_slow_weights_alone():
    lookahead = Lookahead(decay=0.9, every=2, total_steps=4)
    lookahead.load_state_dict({"weight": torch.ones(1, 2)})
    assert torch.equal(lookahead.state_dict()["slow"]["weight"], torch.ones(1, 2))
    assert lookahead.updated_at == 0


def test_lookahead_averages_more_strongly_as_training_ends():
    rhos = []
    for step in (2, 3, 4):
        model = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            model.weight.fill_(0.0)
        lookahead = Lookahead(decay=0.95, every=1, total_steps=4)
        lookahead.step(model, step - 1)  # the first update: the slow weights (0), one step before this one
        with torch.no_grad():
            model.weight.fill_(1.0)
        lookahead.step(model, step)
        rhos.append(1 - model.weight.item())
    assert rhos == pytest.approx([0.95 * (s / 4) ** 3 for s in (2, 3, 4)])


def test_lookahead_rejects_a_decay_outside_0_1():
    with pytest.raises(ValueError, match="decay"):
        Lookahead(decay=1.0, every=5, total_steps=10)
