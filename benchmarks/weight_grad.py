"""bf16 weight gradients on small maps: oneDNN's against one matrix product per kernel tap, on this CPU.

    .venv/bin/python benchmarks/weight_grad.py [--recipes cifar10-small,cifar10,...] [--rounds 6] [--steps 4]

``alexnet.models.layers.Conv2d`` takes the taps' weight gradient (``tap_weight_grad``) where its rule
(``_uses_taps``, drawn per CPU by ``TAP_AREA_SHARE``) says they win; the rule was measured on an AMX Xeon and
a Zen 4 without AMX. This measures it again wherever it runs:
(1) each shape of the ablation's table (batch x channels on an HxW map, 3x3 kernels, bf16, channels_last), the
two gradients alternating, best of 3 x 4 calls, with the rule's choice beside it; (2) whole training steps of
each recipe's network at its batch in bare bf16 loops, the taps switched off and on in the order off, on, on,
off for each round (a machine's speed drifts), as the taps' images/s over oneDNN's. One JSON line per result.
Without fast bf16 the engine trains in fp32, where the rule takes oneDNN's everywhere: nothing to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from unittest import mock

import numpy as np
import torch

from alexnet.data import BatchLoader, ImageSet, Preprocess
from alexnet.data.datasets import DATASETS
from alexnet.models import get_model
from alexnet.models.layers import Conv2d, tap_weight_grad
from alexnet.training.config import resolve_config
from alexnet.training.optim import build_optimizer

import common
from common import parse_args, report, report_peaks, training_precision, training_steps

# batch, channels (in = out), map side: the ablation's table (benchmarks/cifar10_ablation.md)
SHAPES = [
    (512, 48, 6), (512, 48, 3), (512, 64, 7), (512, 64, 3), (512, 128, 7), (512, 128, 3), (512, 256, 7),
    (512, 256, 3), (1024, 384, 7), (1024, 384, 3), (512, 64, 15), (512, 256, 15), (256, 256, 8), (128, 512, 2),
]  # fmt: skip
QUICK_SHAPES = [(8, 64, 2), (8, 64, 15)]  # the taps under either CPU's rule, then oneDNN's
RECIPES = ("cifar10-small", "cifar10", "fashion-mnist-best", "fashion-mnist")  # named datasets, at their own size


def _ms_per_call(call: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e3


def shape_times(batch: int, channels: int, side: int, repeats: int, calls: int) -> tuple[float, float]:
    """Best ms per call of oneDNN's weight gradient and of the taps', alternating."""
    generator = torch.Generator().manual_seed(0)

    def tensor(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(torch.bfloat16)

    x = tensor(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
    grad = tensor(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
    weight = tensor(channels, channels, 3, 3).contiguous(memory_format=torch.channels_last)

    def onednn() -> torch.Tensor:
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False]
        )[1]

    def taps() -> torch.Tensor:
        return tap_weight_grad(grad, x, 3, 1)

    expected = onednn().float()
    error = (taps().float() - expected).norm() / expected.norm()
    if error > 1e-2:
        raise AssertionError(f"the taps' gradient is off by {error:.2e} relative for {(batch, channels, side)}")
    times = ([], [])
    for _ in range(repeats):
        for which, call in enumerate((onednn, taps)):
            times[which].append(_ms_per_call(call, calls))
    return min(times[0]), min(times[1])


def _uses_taps(channels: int, side: int) -> bool:
    """The rule's choice for a 3x3, stride-1, padding-1 bf16 convolution on a side x side map."""
    layer = Conv2d(channels, channels, 3, padding=1).train()
    return layer._uses_taps(torch.empty(1, channels, side, side), torch.bfloat16)


@contextlib.contextmanager
def taps_off() -> Iterator[None]:
    """Every ``Conv2d`` takes oneDNN's weight gradient."""
    with mock.patch.object(Conv2d, "_uses_taps", lambda self, x, dtype: False):
        yield


def recipe_loop(recipe: str, steps: int) -> tuple[Callable[[], None], int]:
    """``steps`` bare bf16 training steps of ``recipe``'s network at its batch (model, optimiser and data built
    once); returns (the loop, its batch)."""
    config = resolve_config(recipe=recipe)
    channels, _, side = DATASETS[config.data].shape
    batch = 16 if common.QUICK else config.batch_size
    model = get_model(config.model, num_classes=10, in_channels=channels, **config.model_options)
    model = model.to(memory_format=torch.channels_last).train()
    optimiser = build_optimizer(model, config)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch * (steps + 1), channels, side, side), dtype=np.uint8)
    data = ImageSet(images, rng.integers(0, 10, len(images)), tuple(map(str, range(10))))
    prep = Preprocess(image_size=side, channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels, padding=2)
    loader = BatchLoader(data, batch, shuffle=True, drop_last=True)
    return training_steps(model, optimiser, loader, prep, steps, bf16=True), batch


def step_ratios(recipe: str, steps: int, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Images/s of ``recipe``'s loop with oneDNN's weight gradients and with the taps, per round, and their
    ratio (taps / oneDNN), in the order off, on, on, off each round."""
    loop, batch = recipe_loop(recipe, steps)
    with taps_off():
        loop()  # warm-up of both paths
    loop()
    off, on = [], []
    for _ in range(rounds):
        seconds = [0.0, 0.0]
        for taps in (False, True, True, False):
            with contextlib.nullcontext() if taps else taps_off():
                start = time.perf_counter()
                loop()
                seconds[taps] += time.perf_counter() - start
        off.append(2 * batch * steps / seconds[0])
        on.append(2 * batch * steps / seconds[1])
    return off, on, [b / a for a, b in zip(off, on, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--no-shapes", action="store_true", help="only the recipes' training steps")
    args = parse_args(parser)
    report_peaks()
    if training_precision() != "bf16":
        report("bf16 weight gradients", [0.0], unit="-", note="no fast bf16: the engine trains in fp32, oneDNN's")
        return
    repeats, calls = (1, 1) if common.QUICK else (3, 4)
    for batch, channels, side in [] if args.no_shapes else QUICK_SHAPES if common.QUICK else SHAPES:
        onednn, taps = shape_times(batch, channels, side, repeats, calls)
        report(
            f"weight gradient {batch} x {channels} on {side}x{side}: oneDNN / taps", [onednn / taps], unit="x",
            digits=2, onednn_ms=round(onednn, 1), taps_ms=round(taps, 1), rule_takes_taps=_uses_taps(channels, side),
        )  # fmt: skip
    steps, rounds = (1, 1) if common.QUICK else (args.steps, args.rounds)
    for recipe in args.recipes.split(","):
        off, on, ratios = step_ratios(recipe, steps, rounds)
        report(
            f"{recipe} training steps: taps / oneDNN images/s", ratios, unit="x", digits=3,
            onednn_images_per_s=round(statistics.median(off), 1), taps_images_per_s=round(statistics.median(on), 1),
        )  # fmt: skip


if __name__ == "__main__":
    main()
