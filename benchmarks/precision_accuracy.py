"""bf16 autocast against fp32 on the same recipe, seed and data: test accuracy and time, one JSON line each.

    .venv/bin/python benchmarks/precision_accuracy.py [--recipe fashion-mnist] [--epochs 5]

`--epochs` shortens the recipe's schedule identically for both precisions (fp32 is several times
slower here); the claim checked is that bf16 lands within 0.3 points of fp32.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from alexnet.cli import configure_logging
from alexnet.runtime import tune_allocator
from alexnet.training.config import resolve_config
from alexnet.training.run import train

from common import ACCURACY_DIGITS, parse_args, report, report_peaks, write_tiny_cifar


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser)
    configure_logging()
    tune_allocator()
    report_peaks()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"epochs": args.epochs, "seed": args.seed}
        run = f"{args.recipe} ({args.epochs} epochs)"
        # --quick: the recipe (the small default unless asked) on a tiny CIFAR-10 for one epoch, since a CPU
        # without fast bf16 emulates it: the cifar10 recipe's network took 125 s there for this one step.
        if args.quick:
            run = f"{args.recipe} (1 epoch, tiny CIFAR-10)"
            overrides.update(epochs=1, data="cifar10", root=str(write_tiny_cifar(Path(tmp) / "data")))
        for precision in ("bf16", "fp32"):
            config = resolve_config(recipe=args.recipe, overrides={**overrides, "precision": precision})
            outcome = train(config, out=Path(tmp) / precision)
            results[precision] = outcome["test_top1"]
            report(
                f"{run} {precision}",
                [100 * outcome["test_top1"]],
                unit="% test top-1",
                digits=ACCURACY_DIGITS,
                train_time_s=outcome["train_time_s"],
                images_per_s=outcome["images_per_s"],
            )
    gap = 100 * (results["bf16"] - results["fp32"])
    report(f"{args.recipe} bf16 minus fp32", [gap], unit="points", digits=ACCURACY_DIGITS, within_0_3=abs(gap) <= 0.3)


if __name__ == "__main__":
    main()
