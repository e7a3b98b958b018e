"""Building blocks shared by the AlexNet and VGG families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvNet(nn.Module):
    """``features`` -> ``avgpool`` -> flatten -> ``classifier``: torchvision's layout for AlexNet and VGG.

    Keeping these three submodule names (and torchvision's ``nn.Sequential`` order inside them) makes
    our ``state_dict`` keys equal to the published ImageNet checkpoints, so they load with ``strict=True``.
    """

    def __init__(
        self,
        features: nn.Sequential,
        pool_size: int,
        classifier: nn.Sequential,
        *,
        first_conv: str,
        last_conv: str,
        head: str,
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = classifier
        # state_dict prefixes, declared by the plan: weight loading, whitening and explanations read them.
        self.first_conv_name, self.last_conv_name, self.head_name = first_conv, last_conv, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) float -> logits (N, num_classes)."""
        x = self.features(images)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class Scale(nn.Module):
    """``x * factor``: a fixed temperature on the logits, so the output layer's weights and learning rate
    keep the scale of the rest of the network."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


class LocalResponseNorm(nn.Module):
    """Cross-channel local response normalisation with the 2012 paper's constants and formula.

    The paper computes ``b = a / (k + alpha * sum(a_j ** 2)) ** beta`` over ``size`` adjacent channels.
    ``torch.nn.LocalResponseNorm`` (like Caffe) divides ``alpha`` by ``size`` inside the sum, so the
    same ``alpha=1e-4`` there normalises five times more weakly than the paper did. We keep ``alpha`` in
    the paper's convention, so that the paper's numbers mean what the paper says, and pass
    ``alpha * size`` to the torch kernel.

    ``groups`` normalises each tower's channels on their own, as the two-GPU network did: a channel at
    the edge of one tower never sees the other tower's channels.

    The sum over neighbouring channels is a 1x1 convolution of ``a ** 2`` with a fixed band matrix (block
    diagonal across towers): the same window as ``F.local_response_norm``, at matrix-multiply speed in
    channels_last and bf16, where torch's kernel (an ``avg_pool3d`` over a 5-d view, and a chunk and cat
    per tower) ran far slower on CPUs.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0, groups: int = 1):
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups

    def band(self, channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(C, C, 1, 1): 1 where channel j is in channel i's window (i - size//2 .. i + (size-1)//2, as
        torch's kernel pads) and in the same tower, else 0. Built on each call (microseconds), not kept: a
        tensor made under inference mode could not take part in a later backward pass (Grad-CAM's)."""
        index = torch.arange(channels, device=device)
        offset = index[None, :] - index[:, None]  # j - i
        inside = (offset >= -(self.size // 2)) & (offset <= (self.size - 1) // 2)
        tower = channels // self.groups
        inside &= (index[:, None] // tower) == (index[None, :] // tower)
        return inside.to(dtype)[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sums = F.conv2d(x * x, self.band(x.shape[1], x.device, x.dtype))
        return x / (self.k + self.alpha * sums).pow(self.beta)

    def extra_repr(self) -> str:
        paper = f"size={self.size}, alpha={self.alpha} (paper convention), beta={self.beta}, k={self.k}"
        return f"{paper}, groups={self.groups}"
