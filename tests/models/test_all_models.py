"""Every registered model, at its smallest legal input: shapes, finiteness, gradients, precisions, layouts."""

import pytest
import torch

from alexnet.models import get_architecture, get_model, list_models
from alexnet.models.plan import smallest_input_size

CLASSES = 3


def _smallest(name: str) -> tuple[torch.nn.Module, int]:
    size = smallest_input_size(get_architecture(name, num_classes=CLASSES))
    return get_model(name, num_classes=CLASSES, image_size=size), size


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_at_smallest_input(name):
    model, size = _smallest(name)
    images = torch.randn(2, 3, size, size)
    logits = model(images)
    assert logits.shape == (2, CLASSES)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing}"


@pytest.mark.parametrize("name", list_models())
def test_bf16_autocast_and_channels_last_agree_with_fp32(name):
    model, size = _smallest(name)
    model = model.eval().to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, size, size).to(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = model(images.contiguous())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(images)
    assert low.shape == (2, CLASSES)
    assert torch.isfinite(low).all()
    # bf16 keeps ~3 significant digits; logits of an untrained net agree to a few percent of their scale.
    scale = reference.abs().max().clamp_min(1e-3)
    assert (low.float() - reference).abs().max() / scale < 0.1


def _compiles(name: str) -> None:
    torch._dynamo.reset()
    model, size = _smallest(name)
    model.eval()
    compiled = torch.compile(model)
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), model(images), rtol=1e-3, atol=1e-4)


def test_compile_alexnet_cifar():
    _compiles("alexnet_cifar")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if n != "alexnet_cifar"])
def test_compile(name):
    _compiles(name)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list_models())
def test_cuda_forward_backward(name):
    model, size = _smallest(name)
    model = model.cuda()
    logits = model(torch.randn(2, 3, size, size, device="cuda"))
    logits.sum().backward()
    assert logits.shape == (2, CLASSES)
