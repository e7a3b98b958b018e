"""Plans to modules: builds a ``ConvNet`` from an ``Architecture`` and initialises it."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from alexnet.models import plan as p
from alexnet.models.layers import Conv2d, ConvNet, LocalResponseNorm, Scale, Sequential


def _module(layer: p.Layer) -> nn.Module:
    match layer:
        case p.Conv():
            return Conv2d(
                layer.in_channels, layer.out_channels, layer.kernel,
                stride=layer.stride, padding=layer.padding, groups=layer.groups, bias=layer.bias,
            )  # fmt: skip
        case p.MaxPool():
            return nn.MaxPool2d(layer.kernel, layer.stride, padding=layer.padding)
        case p.BatchNorm():
            return nn.BatchNorm2d(layer.channels)
        case p.ReLU():
            return nn.ReLU(inplace=True)
        case p.GELU():
            return nn.GELU()
        case p.LRN():
            return LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k, groups=layer.groups)
        case p.Dropout():
            return nn.Dropout(layer.p)
        case p.Linear():
            return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
        case p.Scale():
            return Scale(layer.factor)
    raise TypeError(f"no module for {layer!r}")


def build(arch: p.Architecture) -> ConvNet:
    """The ``nn.Module`` for a plan, initialised as the plan says (nothing is filled on the meta device)."""
    features = Sequential(*map(_module, arch.features))
    classifier = nn.Sequential(*map(_module, arch.classifier))
    model = ConvNet(
        features, arch.pool_size, classifier, first_conv=arch.first_conv, last_conv=arch.last_conv, head=arch.head
    )
    if has_values(model):
        INITIALISERS[arch.init](model)
    return model


def set_norm_eps(model: nn.Module, eps: float) -> None:
    """Every BatchNorm layer's epsilon, added to the variance: a training setting (``bn_eps``) that the model
    card carries (``ModelCard.norm_eps``), since it changes what the layers compute."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = eps


def has_values(model: nn.Module) -> bool:
    """False for a model built on the meta device (shapes only), which initialisers must leave alone:
    random fills on meta tensors go through torch's reference kernels and import the compiler (~1 s)."""
    return not any(p.is_meta for p in model.parameters())


def init_kaiming(model: nn.Module) -> None:
    """He-normal weights for every conv and hidden Linear, N(0, 0.01) for the output layer, zero biases.

    Keeps activations at unit scale through depth, so a network trains from the first step.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            if linears and m is linears[-1]:
                nn.init.normal_(m.weight, 0.0, 0.01)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_paper(model: ConvNet) -> None:
    """The 2012 paper's initialisation: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden
    fully connected layers ("accelerates the early stages of learning by providing the ReLUs with
    positive inputs"), 0 elsewhere."""
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    biased_one = {convs[1], convs[3], convs[4], *linears[:-1]}
    for m in [*convs, *linears]:
        nn.init.normal_(m.weight, 0.0, 0.01)
        nn.init.constant_(m.bias, 1.0 if m in biased_one else 0.0)


def init_vgg(model: nn.Module) -> None:
    """torchvision's VGG initialisation, so a model trained from scratch here behaves like one trained there."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def init_dirac(model: nn.Module) -> None:
    """PyTorch's default fills, then each 3x3 conv with at least as many outputs as inputs passes its input
    through unchanged on its first filters (a Dirac delta kernel): an identity path through the plain stack
    at initialisation, the effect a residual connection has, without one (airbench's initialisation)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1 and m.out_channels >= m.in_channels:
            nn.init.dirac_(m.weight.data[: m.in_channels])
            if m.bias is not None:
                nn.init.zeros_(m.bias)


INITIALISERS: dict[str, Callable[[nn.Module], None]] = {
    "torch": lambda model: None,  # PyTorch's default fills, as torchvision's AlexNet keeps them
    "kaiming": init_kaiming,
    "paper": init_paper,
    "vgg": init_vgg,
    "dirac": init_dirac,
}
