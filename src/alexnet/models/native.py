"""The compiled kernels (``lrn.c``, built by ``pip install`` into ``alexnet/models/_lrn``): found, loaded and
called here, on the CPU, in the threads torch would use.

Local response normalisation is about ten passes over the largest maps of ``alexnet_paper`` when written with
torch's operators, each bound by memory; ``lrn.c`` does the forward pass in one read of ``x`` and one write of
``y``, the backward pass in reads of ``x`` and the gradient and one write, optionally with the ReLU before the
layer applied on the way (on an AMX Xeon, with AVX-512: 33–35 ms for both of ``alexnet_paper``'s LRN layers at
batch 128, forward and backward, ReLU included, against about 235 for the layers alone on the operators), and
optionally with the max-pool after it (``lrn_pool_forward``: the layer's output is pooled from a row buffer and
never written; 58 ms for both layers with their pools, against 109 for the kernels followed by torch's pool).
The build is optional (``setup.py``): without a C compiler the package installs without it, ``available()`` is
False and the layer runs on torch's operators, with the same results to rounding."""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import math
import os
from concurrent.futures import ThreadPoolExecutor

import torch

_MODULE = "alexnet.models._lrn"
_FUNCTIONS = {torch.float32: "f32", torch.bfloat16: "bf16"}  # the storage types lrn.c reads and writes


@functools.cache
def _library() -> ctypes.CDLL | None:
    """``lrn.c`` built for this platform, or None where the install built no such file (no compiler)."""
    try:
        spec = importlib.util.find_spec(_MODULE)
    except ImportError:
        return None
    if spec is None or not spec.origin:
        return None
    library = ctypes.CDLL(spec.origin)
    sizes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    constants = [ctypes.c_float] * 3 + [ctypes.c_int]  # alpha, beta, k; relu
    for suffix in _FUNCTIONS.values():
        for name, pointers in (("lrn_forward", 2), ("lrn_backward", 3)):
            function = getattr(library, f"{name}_{suffix}")
            function.argtypes, function.restype = [ctypes.c_void_p] * pointers + sizes + constants, None
        pool = [ctypes.c_int64, ctypes.c_int64] + [ctypes.c_int] * 5 + constants + [ctypes.c_int] * 2
        for name, pointers in (("lrn_pool_forward", 3), ("lrn_pool_backward", 4)):
            function = getattr(library, f"{name}_{suffix}")
            function.argtypes, function.restype = [ctypes.c_void_p] * pointers + pool, ctypes.c_int
    library.lrn_max_tower.restype = library.lrn_max_size.restype = library.lrn_avx512.restype = ctypes.c_int
    return library


@functools.cache
def _limits() -> tuple[int, int]:
    """(widest tower, window bound) of the kernels' buffers, as ``lrn.c`` declares them: read once, since every
    forward pass asks."""
    return _library().lrn_max_tower(), _library().lrn_max_size()


@functools.cache
def _pool(threads: int, process: int) -> ThreadPoolExecutor:
    """Worker threads of this ``process`` (a forked child gets its own: its parent's threads are not in it)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="alexnet-lrn")


def available() -> bool:
    """Whether the compiled kernels were built and load here."""
    return _library() is not None


def avx512() -> bool:
    """Whether the kernels take the paper's window (5, beta 0.75) on towers of whole 16-channel vectors with
    AVX-512 here (a CPU with AVX512-BF16: the AMX Xeons and Zen 4s); elsewhere they take the plain C loops."""
    return available() and bool(_library().lrn_avx512())


def lrn_supported(x: torch.Tensor, size: int, groups: int) -> bool:
    """Whether ``lrn_forward`` takes ``x``: a CPU (N, C, H, W) map stored channels_last in float32 or bf16,
    towers and a window no wider than the kernels' buffers, and the kernels built."""
    return (
        x.device.type == "cpu" and x.dim() == 4 and x.dtype in _FUNCTIONS and x.shape[1] % groups == 0
        and x.is_contiguous(memory_format=torch.channels_last) and available()
        and 0 < size < _limits()[1] and x.shape[1] // groups <= _limits()[0]
    )  # fmt: skip


def _run(name: str, tensors: list[torch.Tensor], rows: int, *arguments) -> None:
    """``lrn.c``'s ``name`` over ``rows`` rows (pixels, or rows of pixels), split between torch's threads (ctypes
    lets go of the GIL)."""
    function = getattr(_library(), f"{name}_{_FUNCTIONS[tensors[0].dtype]}")
    pointers = [t.data_ptr() for t in tensors]
    threads = max(1, min(torch.get_num_threads(), rows // 64))
    step = math.ceil(rows / threads)
    if threads == 1:
        results = [function(*pointers, 0, rows, *arguments)]
    else:
        pool = _pool(threads, os.getpid())
        calls = [
            pool.submit(function, *pointers, begin, min(begin + step, rows), *arguments)
            for begin in range(0, rows, step)
        ]
        results = [call.result() for call in calls]
    if any(result == -1 for result in results):
        raise MemoryError(f"{name}: no memory for the kernels' row buffers")


def lrn_forward(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int, relu: bool = False
) -> torch.Tensor:
    """``x * (k + alpha * window_sum(x ** 2)) ** -beta`` over channels in towers of C / ``groups`` (``alpha`` in
    the paper's convention); ``x`` as ``lrn_supported`` says, the result in its dtype and layout. With ``relu``,
    of ``x.relu()`` (the ReLU fused: ``x`` is the ReLU's input and stays as it is)."""
    y = torch.empty_like(x, memory_format=torch.channels_last)
    _run("lrn_forward", [x, y], x.numel() // x.shape[1], x.shape[1], groups, size, alpha, beta, k, relu)
    return y


def lrn_backward(
    x: torch.Tensor, grad: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int, relu: bool = False
) -> torch.Tensor:
    """The gradient of ``lrn_forward`` by ``x`` (with ``relu``, through the ReLU), given that of its result."""
    grad = grad.to(x.dtype).contiguous(memory_format=torch.channels_last)
    dx = torch.empty_like(x, memory_format=torch.channels_last)
    _run("lrn_backward", [x, grad, dx], x.numel() // x.shape[1], x.shape[1], groups, size, alpha, beta, k, relu)
    return dx


def lrn_pool_supported(x: torch.Tensor, size: int, groups: int, pool: torch.nn.MaxPool2d) -> bool:
    """Whether ``lrn_pool_forward`` takes ``x`` and ``pool``: as ``lrn_supported``, and a square max-pool without
    padding, dilation, ceil mode or indices, with windows of at most 15 x 15 that fit the map."""
    kernel, stride = pool.kernel_size, pool.stride
    return (
        lrn_supported(x, size, groups) and isinstance(kernel, int) and isinstance(stride, int)
        and pool.padding == 0 and pool.dilation == 1 and not pool.ceil_mode and not pool.return_indices
        and 0 < kernel <= 15 and stride > 0 and kernel <= min(x.shape[-2:])
    )  # fmt: skip


def _pool_arguments(x: torch.Tensor, size, alpha, beta, k, groups, relu, kernel, stride) -> tuple:
    _, channels, height, width = x.shape
    return height, width, channels, groups, size, alpha, beta, k, relu, kernel, stride


def lrn_pool_forward(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int, relu: bool, kernel: int, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``max_pool2d(lrn_forward(x, ...), kernel, stride)`` without writing the layer's output, and each window's
    argmax as a byte (``kh * kernel + kw``, the first maximum), for ``lrn_pool_backward``."""
    n, channels, height, width = x.shape
    shape = (n, channels, (height - kernel) // stride + 1, (width - kernel) // stride + 1)
    pooled = torch.empty(shape, dtype=x.dtype, memory_format=torch.channels_last)
    argmax = torch.empty(shape, dtype=torch.uint8, memory_format=torch.channels_last)
    arguments = _pool_arguments(x, size, alpha, beta, k, groups, relu, kernel, stride)
    _run("lrn_pool_forward", [x, pooled, argmax], n * shape[2], *arguments)
    return pooled, argmax


def lrn_pool_backward(
    x: torch.Tensor,
    grad: torch.Tensor,
    argmax: torch.Tensor,
    size: int,
    alpha: float,
    beta: float,
    k: float,
    groups: int,
    relu: bool,
    kernel: int,
    stride: int,
) -> torch.Tensor:
    """The gradient of ``lrn_pool_forward`` by ``x``, given that of the pooled map and the forward pass's argmax."""
    grad = grad.to(x.dtype).contiguous(memory_format=torch.channels_last)
    dx = torch.empty_like(x, memory_format=torch.channels_last)
    arguments = _pool_arguments(x, size, alpha, beta, k, groups, relu, kernel, stride)
    _run("lrn_pool_backward", [x, grad, argmax, dx], x.shape[0] * x.shape[2], *arguments)
    return dx
