"""Process-wide performance settings, applied once by the entry points (never on import)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
import sys
from typing import Literal

from alexnet.errors import InputError

PRECISIONS = ("auto", "fp32", "bf16")  # what --precision takes, in training and inference alike

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator(threshold_bytes: int = 1 << 30) -> bool:
    """Keep large freed blocks in glibc's heap instead of returning them to the OS.

    By default glibc serves every allocation over 32 MiB with a fresh mmap and unmaps it on free, so
    each batch-sized tensor (a 64 x 3 x 224 x 224 float batch is 38 MB) is page-faulted in anew:
    measured here, an elementwise op on such a batch took 30 ms instead of 8. Raising the mmap and
    trim thresholds to ``threshold_bytes`` lets those blocks be reused; the cost is up to that much
    freed memory staying resident. Returns whether the settings took (False off glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    value = ctypes.c_int(min(threshold_bytes, 2**31 - 1))
    return bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (the ``flags`` lines of ``/proc/cpuinfo``), read once; empty where they cannot be
    read."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(word for line in f if line.startswith("flags") for word in line.partition(":")[2].split())
    except OSError:
        return frozenset()


def cpu_supports_bf16() -> bool:
    """True where bf16 matrix work is fast on this CPU: AVX512-BF16 or AMX."""
    return not cpu_flags().isdisjoint({"avx512_bf16", "amx_bf16"})


def cpu_has_amx() -> bool:
    """True where this CPU multiplies bf16 matrices on AMX tiles (Intel Xeons since Sapphire Rapids)."""
    return "amx_bf16" in cpu_flags()


def resolve_precision(precision: str, device_type: str) -> Literal["bf16", "fp32"]:
    """The precision a run or a classifier uses on a ``device_type`` ("cpu" or "cuda") device: ``auto`` is
    bf16 where bf16 matrix work is fast (an AVX512-BF16 or AMX CPU, measured 4-6x fp32 matmul on our
    machines; a GPU that supports it), else fp32. An unknown name raises ``InputError``."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device_type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def precision_note(precision: str, device_type: str) -> str:
    """Why ``precision`` trains or runs slower than it could here, for the start-up line: ``auto`` on a CPU
    without fast bf16 falls back to fp32 (4-5x fewer multiply-adds per second than bf16 on CPUs that have
    it); empty otherwise."""
    if precision == "auto" and device_type == "cpu" and not cpu_supports_bf16():
        return " (this CPU has no AVX512-BF16 or AMX: fp32, several times slower than a CPU with them)"
    return ""


def device_name() -> str:
    """The GPU's name, else the CPU model with the number of threads torch uses."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({torch.get_num_threads()} threads)"
