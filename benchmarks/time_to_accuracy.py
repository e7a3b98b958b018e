"""Time to accuracy of a recipe: test (or validation) top-1 and training time over several seeds, mean ± std,
with the machine's matmul peaks first. One JSON line per result.

    .venv/bin/python benchmarks/time_to_accuracy.py --recipe cifar10 --root DATA [--seeds 0 1 2] [--set K=V ...]
                                                    [--out DIR]   # keep the runs (curves, models) there
    .venv/bin/python benchmarks/time_to_accuracy.py --recipe cifar10 --root DATA --ablate   # one change at a time
    .venv/bin/python benchmarks/time_to_accuracy.py --quick                                  # CI: tiny data, 1 step

`--ablate` trains the recipe as it is, then once with each of its speed options undone (ABLATIONS), so
each option's worth is its own row. `--quick` writes a tiny CIFAR-10 in the official format to a temporary
folder and trains each seed one epoch of one step: it checks that the benchmark runs, not the figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from alexnet.cli import configure_logging
from alexnet.runtime import tune_allocator
from alexnet.training.config import parse_settings, resolve_config
from alexnet.training.run import train

from common import ACCURACY_DIGITS, parse_args, report, report_peaks, write_tiny_cifar

# Each row undoes one of the cifar10 recipe's speed options (what the engine does without it).
ABLATIONS: dict[str, dict] = {
    "recipe as shipped": {},
    "no whitening init": {"whiten": False},
    "no lookahead": {"lookahead": 0.0},
    "random flips (not alternating)": {"alternate_flips": False},
    "zero padding (not reflect)": {"padding_mode": "zeros"},
    "no flip-translate TTA (flip only)": {"tta": "flip"},
    "label smoothing 0.1 (not 0.2)": {"label_smoothing": 0.1},
    "BN shifts at 1x lr (not 64x)": {"bias_lr_scale": 1.0},
    "BN momentum 0.1, scale trained": {"bn_momentum": 0.1, "bn_eps": 1e-5, "bn_scale": True},
}


def run_seeds(name: str, recipe: str, overrides: dict, seeds: list[int], out: Path, settings: dict) -> dict:
    """Train ``recipe`` once per seed (``settings``: ``--set``, as ``train --set``); report each run and the
    mean ± std."""
    figures, times, speeds = [], [], []
    for seed in seeds:
        config = resolve_config(recipe=recipe, overrides={**overrides, "seed": seed}, settings=settings)
        outcome = train(config, out=out / f"{name.replace(' ', '_')}-{seed}")
        tested = outcome.get("test_top1") is not None
        figure = 100 * (outcome["test_top1"] if tested else outcome["best_val_acc"])
        split = "test" if tested else "validation"
        figures.append(figure)
        times.append(outcome["train_time_s"])
        speeds.append(outcome["images_per_s"])
        report(f"{recipe} [{name}] seed {seed}", [figure], unit=f"% {split} top-1", digits=ACCURACY_DIGITS,
               train_time_s=outcome["train_time_s"], images_per_s=outcome["images_per_s"], tta=config.tta)  # fmt: skip
    return report(
        f"{recipe} [{name}] over {len(seeds)} seed(s)",
        figures,
        unit=f"% {split} top-1",
        digits=ACCURACY_DIGITS,
        train_time_s=round(statistics.fmean(times), 1),
        train_time_std_s=round(statistics.stdev(times), 1) if len(times) > 1 else 0.0,
        images_per_s=round(statistics.fmean(speeds), 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="cifar10")
    parser.add_argument("--root", help="dataset root (the recipe's data)")
    parser.add_argument("--data", help="another dataset than the recipe's, e.g. folder:PATH")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="settings", action="append", default=[], help="KEY=VALUE, as `train --set`")
    parser.add_argument("--ablate", action="store_true", help="one run per row of ABLATIONS")
    parser.add_argument("--out", type=Path, help="keep the run directories here (default: a temporary folder)")
    args = parse_args(parser)
    configure_logging()
    tune_allocator()
    report_peaks()
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.out or Path(tmp)
        overrides = {"root": args.root, "data": args.data}
        if args.quick:
            # The batch is clamped to the 288 training images: one step per epoch.
            overrides.update(root=str(write_tiny_cifar(Path(tmp) / "data")), data="cifar10", epochs=1)
        settings = parse_settings(args.settings)
        shipped = "recipe with " + ", ".join(args.settings) if args.settings else "recipe as shipped"
        rows = {shipped: {}} | ({k: v for k, v in ABLATIONS.items() if v} if args.ablate else {})
        for name, changes in rows.items():
            run_seeds(name, args.recipe, overrides, args.seeds, runs, settings | changes)


if __name__ == "__main__":
    main()
