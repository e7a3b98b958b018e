"""Training images/s through `alexnet train`'s engine against a plain PyTorch loop, in one run.

    .venv/bin/python benchmarks/train_throughput.py [--models alexnet,alexnet_paper,...] [--steps 8]

For each model: (1) a plain fp32 eager loop fed by a torch DataLoader (the notebook baseline: NCHW,
resize and normalise per batch), (2) the same bare loop with our choices (the precision ``--precision auto``
picks here: bf16 autocast where the CPU does bf16 fast, else fp32; channels_last; our batched pipeline), (3)
the Lightning engine that `alexnet train` runs. Reports images/s, the engine's speed-up over the plain loop,
Lightning's overhead over the bare loop, and model FLOPs utilisation against the matmul peak of that
precision, which this benchmark measures first. One JSON line per result. The 2012 network
(`alexnet_paper`: with two towers it has the MACs of `alexnet`, with one 1.57x) has its engine speed also
given as a fraction of `alexnet`'s (`x_alexnet`, measured in the same run), the cost of its LRN and towers,
and again from bare loops of the two run alternately (``paired``), the figure to trust on a machine whose
speed drifts; a third paired row runs `alexnet_paper` with its LRN layers replaced by identities (a
diagnostic, not a model), which splits what is left between LRN and the rest (conv1's 96 maps, the towers);
there the ReLUs before the LRN layers run on their own, where the model's LRN kernels take them in.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alexnet.data import BatchLoader, ImageSet, Preprocess
from alexnet.models import get_architecture, get_model
from alexnet.models.layers import LocalResponseNorm
from alexnet.models.summary import summarize
from alexnet.runtime import tune_allocator
from alexnet.training.config import TrainConfig
from alexnet.training.optim import build_optimizer

import common
from common import measure, parse_args, report, report_peaks, training_precision, training_steps

# case: (registered model, builder options, image size, batch)
CASES = {
    "alexnet": ("alexnet", {}, 224, 128),
    "alexnet_paper": ("alexnet_paper", {}, 227, 128),
    "alexnet_paper_towers1": ("alexnet_paper", {"towers": 1}, 227, 128),
    "alexnet_bn": ("alexnet_bn", {}, 224, 128),
    "alexnet_cifar": ("alexnet_cifar", {}, 32, 256),
}
# What a case's speed is compared with, measured alternately in the same minutes (``paired``).
REFERENCE = {"alexnet_paper": "alexnet", "alexnet_paper_towers1": "alexnet"}
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def _data(n: int) -> ImageSet:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    return ImageSet(images, rng.integers(0, 10, n), tuple(map(str, range(10))))


def plain_loop(name: str, options: dict, size: int, batch: int, steps: int) -> list[float]:
    """The notebook baseline: DataLoader over uint8 tensors, per-batch resize and normalise, fp32, NCHW."""
    data = _data(batch * (steps + 2))
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(data.images), torch.from_numpy(data.labels))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)
    model = get_model(name, num_classes=10, **options)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)

    def epoch() -> None:
        for i, (images, labels) in enumerate(loader):
            x = F.interpolate(images.float() / 255, size=(size, size), mode="bilinear", align_corners=False)
            loss = F.cross_entropy(model((x - mean) / std), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if i + 1 == steps:
                break

    return measure(epoch, items=batch * steps, warmup=1, repeats=3)


def bare_loop(name: str, options: dict, size: int, batch: int, steps: int) -> list[float]:
    """Our choices without Lightning: BatchLoader, batched Preprocess, the engine's precision, channels_last, and
    the engine's optimiser (fused SGD, Nesterov, weight decay), so the difference to the engine is Lightning's."""
    return measure(_bare_epoch(name, options, size, batch, steps), items=batch * steps, warmup=1, repeats=3)


def _bare_epoch(
    name: str, options: dict, size: int, batch: int, steps: int, without_lrn: bool = False
) -> Callable[[], None]:
    """``steps`` training steps of ``bare_loop`` (model, optimiser and data built once, here); ``without_lrn``
    replaces every LRN layer by an identity."""
    model = get_model(name, num_classes=10, **options)
    if without_lrn and not _replace_lrn(model):
        raise ValueError(f"{name} has no LRN layer to replace")
    model = model.to(memory_format=torch.channels_last)
    optimiser = build_optimizer(model, TrainConfig(model=name, lr=0.01))  # the engine's optimiser, step for step
    prep = Preprocess(image_size=size, channels=3, mean=MEAN, std=STD, padding=4)
    loader = BatchLoader(_data(batch * (steps + 2)), batch, shuffle=True, drop_last=True)
    return training_steps(model, optimiser, loader, prep, steps, bf16=training_precision() == "bf16")


def _replace_lrn(model: nn.Module) -> int:
    """Replace every LRN layer of ``model`` by an identity; return how many there were."""
    found = [(parent, child_name) for parent in model.modules() for child_name, child in parent.named_children()
             if isinstance(child, LocalResponseNorm)]  # fmt: skip
    for parent, child_name in found:
        setattr(parent, child_name, nn.Identity())
    return len(found)


def paired(reference: str, case: str, steps: int, rounds: int, without_lrn: bool = False) -> list[float]:
    """``case``'s images/s as a fraction of ``reference``'s, one value per round of bare loops in the order
    reference, case, case, reference: a shared machine's speed drifts by 1.5x within minutes (one run of
    this benchmark measured `alexnet_paper`'s engine at 1.09x `alexnet`'s, minutes apart), and the
    symmetric order puts a steady drift on both sides of the ratio alike. ``without_lrn``: the case's LRN
    layers replaced by identities."""
    loops = [
        _bare_epoch(*CASES[c][:3], _batch(c), steps, without_lrn=without_lrn and c == case) for c in (reference, case)
    ]  # name, options, size
    for loop in loops:
        loop()  # warm-up
    ratios = []
    for _ in range(rounds):
        seconds = [0.0, 0.0]
        for side in (0, 1, 1, 0):
            start = time.perf_counter()
            loops[side]()
            seconds[side] += time.perf_counter() - start
        ratios.append((_batch(case) / seconds[1]) / (_batch(reference) / seconds[0]))
    return ratios


def _batch(case: str) -> int:
    return 16 if common.QUICK else CASES[case][3]


def engine(name: str, options: dict, size: int, batch: int, steps: int) -> list[float]:
    """`alexnet train`'s engine: Lightning Trainer, our task, data module and callbacks, ``--precision auto``."""
    import tempfile
    from pathlib import Path

    import lightning.pytorch as pl

    from alexnet.data.imageset import Dataset
    from alexnet.training.run import build_engine, fit, prepare

    repeats = 2 if common.QUICK else 3
    data = _data(batch * (steps + 1) * (repeats + 1))
    config = TrainConfig(
        model=name, model_options=options, epochs=repeats + 1, batch_size=batch, lr=0.01, precision="auto",
        image_size=size, padding=4,
    )  # fmt: skip
    rates: list[float] = []

    class Clock(pl.Callback):
        # Time batches 1..steps (each epoch runs steps + 1; batch 0 absorbs the epoch's start-up) of every
        # epoch after the first (warm-up).
        def on_train_batch_start(self, trainer, pl_module, batch_, batch_idx) -> None:
            if batch_idx == 1:
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch_, batch_idx) -> None:
            if batch_idx == steps and trainer.current_epoch > 0:
                rates.append(batch * steps / (time.perf_counter() - self.start))

    with tempfile.TemporaryDirectory() as tmp:
        # The steps `alexnet train` runs, on data in memory.
        run = prepare(config, out=Path(tmp) / "run", dataset=Dataset("synthetic", data, None))
        engine = build_engine(run, callbacks=[Clock()])
        engine.trainer.fit_loop.epoch_loop.max_steps = -1
        engine.trainer.limit_train_batches = steps + 1
        fit(run, engine)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=8)
    args = parse_args(parser)
    if args.quick:
        args.models, args.steps = "alexnet_cifar", 2
    paired_with = {**REFERENCE, "alexnet_cifar": "alexnet_cifar"} if args.quick else REFERENCE
    tune_allocator()  # as the CLI does
    peak, precision = report_peaks(), training_precision()
    alexnet_speed = None  # the engine's images/s for `alexnet`, when measured in this run
    for case in args.models.split(","):
        if case not in CASES:
            parser.error(f"--models: unknown case {case!r} (one of {', '.join(CASES)})")
        name, options, size, _ = CASES[case]
        batch = _batch(case)
        macs = summarize(get_architecture(name, num_classes=10, **options), name, (3, size, size)).macs
        train_flops = 3 * 2 * macs  # forward, then backward at about twice the forward
        plain = plain_loop(name, options, size, batch, args.steps)
        report(f"{case} {size}px b{batch}: plain fp32 loop + DataLoader", plain)
        bare = bare_loop(name, options, size, batch, args.steps)
        report(f"{case} {size}px b{batch}: bare loop, {precision} + channels_last + our pipeline", bare)
        ours = engine(name, options, size, batch, args.steps)
        speed = statistics.fmean(ours)
        alexnet_speed = speed if case == "alexnet" else alexnet_speed
        paper = {"x_alexnet": round(speed / alexnet_speed, 2)} if name == "alexnet_paper" and alexnet_speed else {}
        report(
            f"{case} {size}px b{batch}: alexnet train engine (Lightning)",
            ours,
            **paper,
            x_plain=round(speed / statistics.fmean(plain), 2),
            lightning_overhead_pct=round(100 * (1 - speed / statistics.fmean(bare)), 1),
            precision=precision,
            mfu_pct_of_peak=round(100 * speed * train_flops / peak, 1),
            train_gflop_per_image=round(train_flops / 1e9, 3),
        )
        if case in paired_with:  # quick mode pairs alexnet_cifar with a second copy of itself: a ratio near 1
            report_paired(paired_with[case], case, args.steps, rounds=1 if args.quick else 3)
        if case == "alexnet_paper":
            report_paired(paired_with[case], case, args.steps, rounds=3, without_lrn=True)
    if args.quick:  # the diagnostic's code path, one round of one step at batch 16
        report_paired("alexnet", "alexnet_paper", steps=1, rounds=1, without_lrn=True)


def report_paired(reference: str, case: str, steps: int, rounds: int, without_lrn: bool = False) -> None:
    """One JSON line: ``paired``'s ratios, their mean and spread."""
    ratios = paired(reference, case, steps, rounds, without_lrn)
    report(
        f"{case}{' without LRN (diagnostic)' if without_lrn else ''} against {reference}: bare loops alternating "
        f"(reference, case, case, reference) x {len(ratios)}", ratios, unit=f"x {reference} images/s", digits=2,
    )  # fmt: skip


if __name__ == "__main__":
    main()
