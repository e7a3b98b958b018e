"""Input-pipeline throughput: batched augmentation from uint8 in memory to normalised model input.

    .venv/bin/python benchmarks/pipeline.py [--device cpu|cuda] [--shared ../shared/data]

Cases: CIFAR at 32 px (pad-4 crop, flip), CIFAR upscaled to 224 px, a folder cache at 256 -> 224
(random crop, flip, PCA lighting), plus the one-time folder decode rate and the resident memory of
a full-size CIFAR-10 held whole. One JSON line per result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet.data import BatchLoader, ImageSet, Preprocess, load_splits
from alexnet.data.folder import load_folder
from alexnet.runtime import resolve_precision, tune_allocator

from common import measure, parse_args, report, report_peaks, write_tiny_cifar

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _epoch_rate(data: ImageSet, prep: Preprocess, batch: int, device: str, batches: int) -> list[float]:
    loader = BatchLoader(data, batch, shuffle=True, drop_last=True, device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    def run() -> None:
        for i, (images, _) in enumerate(loader):
            prep.train(images, generator)
            if i + 1 == batches:
                break

    return measure(run, items=batch * min(batches, len(loader)), device=device, warmup=1, repeats=5)


def _training_rate(model_name: str, image_size: int, batch: int, device: str, precision: str) -> list[float]:
    """A bare channels_last SGD step of the model the pipeline feeds, in ``precision`` (what ``auto`` picks on
    ``device``), for the ratio."""
    from alexnet.models import get_model

    model = get_model(model_name, num_classes=10).to(device).to(memory_format=torch.channels_last)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, image_size, image_size, device=device).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    kind, bf16 = device.split(":")[0], precision == "bf16"

    def step() -> None:
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return measure(step, items=batch, device=device, warmup=2, repeats=3)


def _cifar(shared: Path | None) -> ImageSet:
    if shared and (shared / "cifar10-train-subset").exists():
        return load_splits("cifar10", shared / "cifar10-train-subset").train
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5000, 3, 32, 32), dtype=np.uint8)
    return ImageSet(images, rng.integers(0, 10, 5000), tuple(map(str, range(10))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parse_args(parser)
    device = args.device
    tune_allocator()  # as the CLI does
    report_peaks()
    precision = resolve_precision("auto", device.split(":")[0])
    # --quick: synthetic data, small batches, a few photos and a tiny CIFAR-10 for the memory probe.
    small_batch, large_batch, photos_per_class = (16, 8, 4) if args.quick else (256, 128, 80)

    cifar = _cifar(None if args.quick else args.shared)
    small = report(
        f"training alexnet_cifar 32px {precision} (bare step)",
        _training_rate("alexnet_cifar", 32, small_batch, device, precision),
    )
    large = report(
        f"training alexnet 224px {precision} (bare step)",
        _training_rate("alexnet", 224, large_batch, device, precision),
    )

    def feed(name: str, rates: list[float], trained: dict) -> None:
        report(name, rates, device=device, x_training=round(statistics.fmean(rates) / trained["mean"], 1))

    at32 = Preprocess(image_size=32, channels=3, mean=CIFAR_MEAN, std=CIFAR_STD, padding=4)
    feed("pipeline cifar 32px (pad-4 crop, flip, normalise)", _epoch_rate(cifar, at32, small_batch, device, 19), small)
    at224 = Preprocess(image_size=224, channels=3, mean=CIFAR_MEAN, std=CIFAR_STD, padding=4)
    feed("pipeline cifar 32->224px (crop, flip, upscale)", _epoch_rate(cifar, at224, large_batch, device, 8), large)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        rng = np.random.default_rng(0)
        for c in range(5):
            (folder / f"class{c}").mkdir(parents=True)
            for i in range(photos_per_class):
                pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"class{c}" / f"{i}.jpg", quality=90)
        start = time.perf_counter()
        photos = load_folder(folder, Path(tmp) / "cache", storage_size=256, test_fraction=0.1)
        elapsed = time.perf_counter() - start
        report(
            "folder decode 500x375 JPEG -> 256px cache (once)", [5 * photos_per_class / elapsed], workers=os.cpu_count()
        )
        imagenet = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
        paper = Preprocess(image_size=224, channels=3, lighting=0.1, **imagenet)
        feed(
            "pipeline folder 256->224px (crop, flip, PCA lighting)",
            _epoch_rate(photos.train, paper, large_batch, device, 5),
            large,
        )

        write_tiny_cifar(Path(tmp), rows=64 if args.quick else 10_000)
        # A fresh process, so that nothing else this benchmark allocated blurs the figure.
        probe = (
            "import json, os, resource, torch; from alexnet.data import load_splits; "
            "page = os.sysconf('SC_PAGE_SIZE') / 2**20; "
            "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * page; "
            f"before = rss(); d = load_splits('cifar10', {tmp!r}); after = rss(); "
            "raw = (d.train.images.nbytes + d.test.images.nbytes) / 2**20; "
            "print(json.dumps([before, after, raw, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))"
        )
        before, after, raw, peak = json.loads(subprocess.check_output([sys.executable, "-c", probe], text=True))
        report(
            f"cifar10 {'tiny (384 images)' if args.quick else 'full (60,000 images)'} held whole",
            [after - before],
            unit="MiB resident added by loading",
            raw_mib=round(raw, 1),
            beyond_raw_mib=round(after - before - raw, 1),
            peak_rss_mib=round(peak, 1),
            rss_before_load_mib=round(before, 1),
        )


if __name__ == "__main__":
    main()
