"""Optimisers and learning-rate schedules built from a ``TrainConfig``."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import torch
from torch import nn


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    decay_norms_and_biases: bool,
    *,
    lr: float,
    scaled: Collection[str] = (),
    scale: float = 1.0,
    exclude: Collection[str] = (),
    bias_scale: float = 1.0,
) -> list[dict]:
    """Parameter groups by weight decay and learning rate.

    Weight decay spares every one-dimensional parameter (BatchNorm scales and shifts, biases), which decay
    only pulls toward zero, unless ``decay_norms_and_biases``. Parameters named in ``scaled`` (pretrained
    weights being fine-tuned) get ``lr * scale``: discriminative learning rates. One-dimensional
    parameters get ``lr * bias_scale`` and ``weight_decay / bias_scale``: SGD's decay per step is
    lr x decay, so it keeps its strength while their steps grow (airbench trains BatchNorm shifts 64x
    faster). ``exclude`` names parameters that never train; a parameter frozen only for a while (stage 1
    of fine-tuning, a whitening conv's bias) stays in its group, and the optimiser skips it while it has
    no gradient.
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if name in exclude:
            continue
        decay = weight_decay if decay_norms_and_biases or parameter.ndim > 1 else 0.0
        rate = lr * scale if name in scaled else lr
        if parameter.ndim == 1 and bias_scale != 1.0:
            rate, decay = rate * bias_scale, decay / bias_scale
        groups.setdefault((decay, rate), []).append(parameter)
    return [{"params": params, "weight_decay": decay, "lr": rate} for (decay, rate), params in groups.items()]


def build_optimizer(model: nn.Module, config, *, scaled: Collection[str] = (), exclude: Collection[str] = ()):
    """SGD (momentum, optionally Nesterov) or AdamW over ``parameter_groups``."""
    groups = parameter_groups(
        model, config.weight_decay, config.decay_norms_and_biases, lr=config.lr,
        scaled=scaled, scale=config.backbone_lr_scale, exclude=exclude, bias_scale=config.bias_lr_scale,
    )  # fmt: skip
    if config.optimizer == "sgd":
        nesterov = config.nesterov and config.momentum > 0
        return _fused(torch.optim.SGD, groups, lr=config.lr, momentum=config.momentum, nesterov=nesterov)
    if config.optimizer == "adamw":
        return _fused(torch.optim.AdamW, groups, lr=config.lr)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def _fused(optimizer: type[torch.optim.Optimizer], groups: list[dict], **options) -> torch.optim.Optimizer:
    # The fused kernels update every parameter in one pass: for AlexNet's 61 M parameters, SGD with weight
    # decay and Nesterov momentum took 25 ms a step here instead of 90 ms (14% of a 224-px training step).
    try:
        return optimizer(groups, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # a torch or device without the fused kernel
        return optimizer(groups, **options)


def start_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Give each trainable parameter that has no momentum buffer yet a zero one.

    torch's fused SGD starts a group's buffers only when none of them exists, so a parameter that begins
    to train later (stage 2 of fine-tuning) in a group whose others have stepped would fail. With no
    dampening, a zero buffer gives the first step torch gives (buffer = gradient).
    """
    for group in optimizer.param_groups:
        if not group.get("momentum"):
            continue
        for parameter in group["params"]:
            state = optimizer.state[parameter]
            if parameter.requires_grad and state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(parameter)


class SharpnessAware:
    """SAM, sharpness-aware minimisation (Foret et al., 2021): each step descends with the gradient taken at
    ``w + rho g / ||g||``, the highest point of the loss within ``rho`` of the weights to first order, so
    training favours minima whose surroundings are low too. ``g`` is the gradient at ``w`` (every parameter
    that has one, one norm over all of them). A step costs two forward and backward passes.

    ``ascend`` moves the weights there and keeps the originals; ``restore`` puts them back exactly, to be called
    after the second backward pass and before the optimiser steps with its gradient. BatchNorm running
    statistics are a separate matter: see ``kept_norm_statistics``.
    """

    def __init__(self, rho: float) -> None:
        if rho <= 0:
            raise ValueError(f"SAM's rho must be positive, got {rho}")
        self.rho = rho
        self._saved: list[tuple[nn.Parameter, torch.Tensor]] = []

    @torch.no_grad()
    def ascend(self, model: nn.Module) -> None:
        moving = [p for p in model.parameters() if p.grad is not None]
        if not moving:
            return
        norm = torch.nn.utils.get_total_norm([p.grad for p in moving])
        scale = self.rho / (norm + 1e-12)
        self._saved = [(p, p.detach().clone()) for p in moving]
        for p in moving:
            p.add_(p.grad * scale)

    @torch.no_grad()
    def restore(self) -> None:
        for parameter, original in self._saved:
            parameter.copy_(original)
        self._saved = []


@contextlib.contextmanager
def kept_norm_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise by their batch as ever, but leave their running statistics as they found them:
    SAM's second pass sees the batch again, at moved weights, and must not count it twice."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved, strict=True):
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)


@dataclass
class StepSchedule:
    """Learning-rate factor at optimiser step ``t`` (a picklable callable for ``LambdaLR``).

    Linear warm-up over ``warmup_steps`` from ``start`` of the peak, then:
    ``onecycle`` and ``cosine`` anneal to zero along a half cosine (one-cycle ends at 1e-4 of the peak),
    ``linear`` falls in a straight line to ``final`` of the peak at the last step (with the warm-up, a
    triangle: airbench's schedule for large batches), ``step`` multiplies by ``gamma`` every
    ``step_size`` steps, ``constant`` stays at the peak.
    The factor depends only on ``t`` and the run's total length, so a resumed run continues exactly; a
    run extended with more epochs follows the longer schedule from the step it reached.
    """

    kind: str
    total_steps: int
    warmup_steps: int
    step_size: int = 1
    gamma: float = 0.1
    start: float = 1 / 25
    final: float = 0.0

    def __call__(self, t: int) -> float:
        if t < self.warmup_steps:
            return self.start + (1 - self.start) * t / self.warmup_steps
        if self.kind == "linear":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (t - self.warmup_steps) / span)
            return 1 + (self.final - 1) * progress
        if self.kind in ("onecycle", "cosine"):
            floor = 1e-4 if self.kind == "onecycle" else 0.0
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (t - self.warmup_steps) / span)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "step":
            return self.gamma ** ((t - self.warmup_steps) // max(1, self.step_size))
        return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config, steps_per_epoch: int) -> dict:
    """A Lightning ``lr_scheduler`` entry: per step for the warm-up schedules, per epoch on ``val_acc``
    for ``plateau`` (the paper's rule: divide by 10 when validation accuracy stops improving)."""
    if config.schedule == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.1, patience=config.plateau_patience
        )
        return {"scheduler": plateau, "interval": "epoch", "monitor": "val_acc"}
    total_steps = config.epochs * steps_per_epoch
    schedule = StepSchedule(
        kind=config.schedule,
        total_steps=total_steps,
        # At most 30% of a short run warms up, so even a one-epoch run anneals.
        warmup_steps=min(round(config.warmup_epochs * steps_per_epoch), int(0.3 * total_steps)),
        step_size=config.step_epochs * steps_per_epoch,
        gamma=config.step_gamma,
        start=config.warmup_start,
        final=config.final_lr,
    )
    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), "interval": "step"}
