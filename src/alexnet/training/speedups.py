"""Model-side training options that any architecture can take: a whitened first convolution, BatchNorm
settings, and lookahead weight averaging (the ideas behind airbench's CIFAR-10 speed record, made general)."""

from __future__ import annotations

import torch
from torch import nn

from alexnet.models.build import set_norm_eps


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The convolution that sees the images, as the model's plan declares it (``ConvNet.first_conv_name``)."""
    return model.get_submodule(model.first_conv_name)


def whitening_filters(
    images: torch.Tensor,
    kernel: int,
    count: int,
    *,
    eps: float = 5e-4,
    max_patches: int = 2_000_000,
    max_unfolded: int = 100_000_000,
    seed: int = 0,
) -> torch.Tensor:
    """Filters that whiten ``kernel`` x ``kernel`` patches of ``images`` (N, C, H, W, normalised float).

    The eigenvectors of the patches' second-moment matrix, strongest first, each divided by the square root
    of its eigenvalue (+ ``eps``), so the responses have unit variance and are uncorrelated; each comes with
    its negation, so a ReLU after the conv keeps both signs. Returns (min(count, 2 C k²) rounded down to
    even, C, k, k) float32. At most ``max_patches`` patches, drawn with ``seed``, are used; when all the
    patches together hold more than ``max_unfolded`` values (AlexNet's 11x11 at 224 px), the drawn ones are
    gathered without unfolding the rest.
    """
    n, c, h, w = images.shape
    rows, cols = h - kernel + 1, w - kernel + 1
    generator = torch.Generator().manual_seed(seed)
    if n * rows * cols * c * kernel * kernel <= max_unfolded:
        patches = images.float().unfold(2, kernel, 1).unfold(3, kernel, 1)  # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel)
        if len(patches) > max_patches:
            patches = patches[torch.randperm(len(patches), generator=generator)[:max_patches]]
    else:  # one kernel offset at a time
        where = torch.randint(0, n * rows * cols, (max_patches,), generator=generator)
        image, y, x = where // (rows * cols), where % (rows * cols) // cols, where % cols
        patches = torch.empty(max_patches, c, kernel, kernel)
        for dy in range(kernel):
            for dx in range(kernel):
                patches[:, :, dy, dx] = images[image, :, y + dy, x + dx].float()
        patches = patches.reshape(max_patches, -1)
    patches = patches.double()
    moments = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(moments)  # ascending
    keep = min(count // 2, len(eigenvalues))
    eigenvalues, eigenvectors = eigenvalues.flip(0)[:keep], eigenvectors.flip(1)[:, :keep]
    filters = (eigenvectors.T / (eigenvalues.clamp_min(0) + eps).sqrt()[:, None]).reshape(keep, c, kernel, kernel)
    return torch.cat([filters, -filters]).float()


@torch.no_grad()
def whiten_first_conv(model: nn.Module, images: torch.Tensor, *, eps: float = 5e-4, seed: int = 0) -> nn.Conv2d:
    """Set the first convolution's filters to ``whitening_filters`` of ``images`` (model inputs), zero its
    bias and fix the filters (``requires_grad=False``). Filters beyond 2 C k² keep their initial values.
    A larger ``eps`` caps the gain on the weakest directions, which JPEG compression of the training images
    all but removes: clean test images carry several times more energy there.

    The first layer then starts where training would take it slowly: decorrelated, equal-variance
    responses, so every later layer sees well-conditioned inputs from the first step (airbench).
    """
    conv = first_conv(model)
    kernel_h, kernel_w = conv.kernel_size
    if kernel_h != kernel_w or conv.groups != 1:
        raise ValueError(f"whitening needs a square, ungrouped first conv, not {conv}")
    filters = whitening_filters(images, kernel_h, conv.out_channels, eps=eps, seed=seed)
    conv.weight[: len(filters)] = filters.to(conv.weight.dtype)
    if conv.bias is not None:
        conv.bias.zero_()
    conv.weight.requires_grad_(False)
    return conv


def configure_norms(model: nn.Module, *, momentum: float, eps: float, train_scale: bool) -> None:
    """BatchNorm settings for every BatchNorm layer: running-statistics ``momentum`` (torch convention),
    ``eps``, and whether the scale trains (``False`` keeps it at its value, 1 from a fresh start)."""
    set_norm_eps(model, eps)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
            if m.weight is not None:
                m.weight.requires_grad_(train_scale)


class Lookahead:
    """Lookahead with a warming decay, as airbench uses it: every ``every`` optimiser steps the slow weights
    move toward the fast ones, ``slow += (1 - rho) (fast - slow)``, and the fast weights restart from them.

    ``rho = decay ** k * (step / total_steps) ** 3``, ``k`` the steps since the last update (``every``, or
    fewer at the end of an epoch), grows from 0 (the slow weights follow the fast ones while the learning
    rate is high) to ``decay ** every`` (strong averaging at the end). Every floating-point entry of the state
    dict takes part, BatchNorm's running statistics included. The slow weights start where the first update
    finds the fast ones (airbench starts them at the initialisation): the average never holds the random
    initial weights, which a run of a few steps would otherwise be pulled back to.
    """

    def __init__(self, decay: float, every: int, total_steps: int) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"lookahead decay must be in (0, 1), got {decay}")
        self.decay, self.every, self.total_steps = decay, max(1, every), max(1, total_steps)
        self.slow: dict[str, torch.Tensor] | None = None
        self.updated_at = 0  # the optimiser step of the last update

    def _pairs(self, model: nn.Module):
        fast = model.state_dict()
        if self.slow is None:
            self.slow = {k: v.detach().clone() for k, v in fast.items() if v.is_floating_point()}
        return [(self.slow[k], fast[k]) for k in self.slow]

    @torch.no_grad()
    def step(self, model: nn.Module, step: int, *, epoch_end: bool = False) -> None:
        """Call after optimiser step number ``step`` (1-based). At an epoch's end (``epoch_end``, before its
        validation) the update comes whatever the step, so that validation and checkpoints see the slow
        weights and the steps since the last update are averaged in, not thrown away."""
        steps = step - self.updated_at
        if steps <= 0 or (steps < self.every and not epoch_end):
            return  # most steps: no state_dict walk on the hot path
        rho = self.decay**steps * min(1.0, step / self.total_steps) ** 3
        for slow, fast in self._pairs(model):  # the first update records the slow weights: a no-op lerp
            slow.lerp_(fast, 1 - rho)
            fast.copy_(slow)
        self.updated_at = step

    def state_dict(self) -> dict:
        return {"slow": dict(self.slow or {}), "updated_at": self.updated_at}

    def load_state_dict(self, state: dict) -> None:
        slow = state.get("slow", {}) if "updated_at" in state else state  # older checkpoints: the slow weights
        self.slow = {k: v.clone() for k, v in slow.items()} if slow else None
        self.updated_at = int(state.get("updated_at", 0))
