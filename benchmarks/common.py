"""Shared helpers for the benchmarks: warm up, repeat, report mean ± std as one JSON line; the machine's
matmul peaks; ``--quick`` (a few steps on tiny data, run by CI so that no benchmark can silently rot)."""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alexnet.runtime import cpu_supports_bf16, device_name, resolve_precision


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


QUICK = False  # set by parse_args(--quick): one warm-up and two repeats at most, small peaks


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """``parser``'s arguments plus ``--quick``, which every benchmark takes."""
    global QUICK
    parser.add_argument("--quick", action="store_true", help="a few steps on tiny data: checks that it runs (CI)")
    args = parser.parse_args()
    QUICK = args.quick
    return args


def write_tiny_cifar(root: Path, rows: int = 64) -> Path:
    """Random images in the official CIFAR-10 python format (five training batches and a test batch) under
    ``root/cifar-10-batches-py``; returns ``root``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8), "labels": [i % 10 for i in range(rows)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def measure(step: Callable[[], object], *, items: int, device: str = "cpu", warmup: int = 2, repeats: int = 5):
    """Items per second of ``step`` (which handles ``items`` items): a list, one value per repeat."""
    if QUICK:
        warmup, repeats = min(warmup, 1), min(repeats, 2)
    for _ in range(warmup):
        step()
    _sync(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        rates.append(items / (time.perf_counter() - start))
    return rates


def training_steps(model, optimiser, loader, prep, steps: int, bf16: bool) -> Callable[[], None]:
    """``steps`` bare training steps (cross-entropy, bf16 autocast where ``bf16``) of ``model`` on ``loader``'s
    batches put through ``prep.train``, each call a new pass from the loader's start."""
    generator = torch.Generator().manual_seed(0)

    def loop() -> None:
        for i, (images, labels) in enumerate(loader):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(prep.train(images, generator)), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if i + 1 == steps:
                break

    return loop


def matmul_peak_flops(dtype: torch.dtype, n: int = 4096) -> float:
    """Best of a few n x n matrix products: the machine's practical peak for ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    rates = measure(lambda: a @ b, items=2 * n**3, warmup=2, repeats=5)
    return max(rates)


def report_peaks() -> float:
    """Print the bf16 and fp32 matmul peaks (machines of our kind differ by 1.5x and more, and some have no
    fast bf16 at all); returns the peak of the precision ``auto`` trains in here (``training_precision``)."""
    n = 256 if QUICK else 4096
    # Without AVX512-BF16 or AMX, bf16 products are emulated at about 1 GFLOP/s (an AVX2 EPYC): a 4096^3
    # product would take minutes, and 512^3 measures the same rate.
    fast = cpu_supports_bf16()
    bf16_n = n if fast else min(n, 512)
    bf16 = matmul_peak_flops(torch.bfloat16, bf16_n)
    fp32 = matmul_peak_flops(torch.float32, n)
    emulated = {} if fast else {"note": "no AVX512-BF16 or AMX: emulated, training runs in fp32"}
    report(f"bf16 matmul peak ({bf16_n}^3)", [bf16 / 1e9], unit="GFLOP/s", **emulated)
    report(f"fp32 matmul peak ({n}^3)", [fp32 / 1e9], unit="GFLOP/s")
    return bf16 if training_precision() == "bf16" else fp32


def training_precision() -> str:
    """What ``--precision auto`` resolves to on this machine's CPU: the precision the benchmarks train in."""
    return resolve_precision("auto", "cpu")


ACCURACY_DIGITS = 2  # accuracies in %: a 10,000-image test set resolves 0.01 points, and 95.0 must not hide 94.96


def report(
    name: str, rates: list[float], *, unit: str = "images/s", device: str = "cpu", digits: int = 1, **extra
) -> dict:
    """Print and return one JSON line: mean ± std of ``rates`` (to ``digits`` decimals) with the device and
    torch version."""
    line = {
        "benchmark": name,
        "mean": round(statistics.fmean(rates), digits),
        "std": round(statistics.stdev(rates), digits) if len(rates) > 1 else 0.0,
        "unit": unit,
        "device": device_name(),
        "torch": torch.__version__,
        **extra,
    }
    print(json.dumps(line), flush=True)
    return line
