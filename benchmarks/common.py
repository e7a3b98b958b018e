"""Shared timing helpers for the benchmarks: warm up, repeat, report mean ± std as one JSON line."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import torch

from alexnet.runtime import device_name


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(step: Callable[[], object], *, items: int, device: str = "cpu", warmup: int = 2, repeats: int = 5):
    """Items per second of ``step`` (which handles ``items`` items): a list, one value per repeat."""
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


def matmul_peak_flops(dtype: torch.dtype, n: int = 4096) -> float:
    """Best of a few n x n matrix products: the machine's practical peak for ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    rates = measure(lambda: a @ b, items=2 * n**3, warmup=2, repeats=5)
    return max(rates)


def report_peaks() -> float:
    """Print the bf16 and fp32 matmul peaks (machines of our kind differ by 1.5x and more); returns bf16's."""
    peak = matmul_peak_flops(torch.bfloat16)
    report("bf16 matmul peak (4096^3)", [peak / 1e9], unit="GFLOP/s")
    report("fp32 matmul peak (4096^3)", [matmul_peak_flops(torch.float32) / 1e9], unit="GFLOP/s")
    return peak


def report(name: str, rates: list[float], *, unit: str = "images/s", device: str = "cpu", **extra) -> dict:
    """Print and return one JSON line: mean ± std of ``rates`` with the device and torch version."""
    line = {
        "benchmark": name,
        "mean": round(statistics.fmean(rates), 1),
        "std": round(statistics.stdev(rates), 1) if len(rates) > 1 else 0.0,
        "unit": unit,
        "device": device_name(),
        "torch": torch.__version__,
        **extra,
    }
    print(json.dumps(line), flush=True)
    return line
