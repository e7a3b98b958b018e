"""Building blocks shared by the AlexNet and VGG families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alexnet import runtime
from alexnet.models import native


class ConvNet(nn.Module):
    """``features`` -> ``avgpool`` -> flatten -> ``classifier``: torchvision's layout for AlexNet and VGG.

    Keeping these three submodule names (and torchvision's ``nn.Sequential`` order inside them) makes
    our ``state_dict`` keys equal to the published ImageNet checkpoints, so they load with ``strict=True``.
    """

    def __init__(
        self,
        features: nn.Sequential,
        pool_size: int,
        classifier: nn.Sequential,
        *,
        first_conv: str,
        last_conv: str,
        head: str,
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = classifier
        # state_dict prefixes, declared by the plan: weight loading, whitening and explanations read them.
        self.first_conv_name, self.last_conv_name, self.head_name = first_conv, last_conv, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) float -> logits (N, num_classes)."""
        x = self.features(images)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class Scale(nn.Module):
    """``x * factor``: a fixed temperature on the logits, so the output layer's weights and learning rate
    keep the scale of the rest of the network."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same ``state_dict``) whose weight gradient, for bf16 training on CPUs
    on small maps with many input channels, is one matrix product per kernel tap (nine for 3x3) instead of oneDNN's.

    oneDNN's backward-by-weights slows down as the map shrinks against the channels: on 2 cores of an AMX
    Xeon (bf16, channels_last, batch 512, 3x3 kernels, 2026-12-03) it took 94 ms for 256 channels on 3x3
    maps, where the taps' products take 23, and 163 against 111 ms on 7x7 maps; at 15x15 it is the faster,
    133 against 451 ms. ``_uses_taps`` draws that line. Such layers are ``alexnet_cifar_fast``'s later
    blocks, where the weight gradient was most of a step. Without AMX (a Zen 4 with AVX512-BF16, 2026-12-06,
    ``benchmarks/weight_grad.py``) oneDNN's does better: 77 against 96 ms for 256 channels on 7x7 maps, 337
    against 539 for 384 at batch 1024, and the taps win clearly only where the map is smaller still (256 channels
    on 3x3: 19 against 16 ms; 512 on 2x2: 14 against 6), so the line is drawn per CPU (``TAP_AREA_SHARE``). In
    fp32 (an AVX2-only EPYC) oneDNN's is the faster on them but for 256 channels on 3x3 maps (67 against 54 ms),
    so fp32 keeps it. The forward pass and the gradient by the input stay oneDNN's; under ``torch.compile``,
    ONNX export and without gradients this is ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        if not (self.training and torch.is_grad_enabled() and self._uses_taps(x, dtype) and not _tracing()):
            return super().forward(x)
        weight = self.weight.to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast("cpu", enabled=False):
            return _TapConv.apply(x.to(dtype), weight, bias, self.padding[0])

    def _uses_taps(self, x: torch.Tensor, dtype: torch.dtype) -> bool:
        """bf16 on a CPU, a square kernel at stride 1 with even zero padding, at least 64 input channels and an
        output map whose area is at most a share of them (``TAP_AREA_SHARE``; at 48 on 3x3 maps, the demo's last
        block, the two tie)."""
        k, p = self.kernel_size[0], self.padding
        side = x.shape[-1] + 2 * p[0] - k + 1 if isinstance(p, tuple) else 0
        return (
            x.device.type == "cpu" and dtype == torch.bfloat16 and x.dim() == 4 and x.shape[-2] == x.shape[-1]
            and self.kernel_size == (k, k) and self.stride == (1, 1) and self.dilation == (1, 1)
            and self.groups == 1 and self.padding_mode == "zeros" and isinstance(p, tuple) and p[0] == p[1]
            and self.in_channels >= 64 and 0 < tap_area_share() * side * side <= self.in_channels
        )  # fmt: skip


# How many input channels a tap-gradient convolution needs per pixel of its output map, by whether the CPU has
# AMX: the measured crossovers (``Conv2d``; ``benchmarks/weight_grad.py`` measures them on any machine). With AMX,
# 256 channels at 7x7 and 64 at 3x3 take the taps; without it, 256 at 3x3 and 64 at 2x2.
TAP_AREA_SHARE = {True: 4, False: 16}


def tap_area_share() -> int:
    """``TAP_AREA_SHARE`` for this CPU."""
    return TAP_AREA_SHARE[runtime.cpu_has_amx()]


class _TapConv(torch.autograd.Function):
    """A stride-1 convolution whose weight gradient is one matrix product per kernel tap (see ``Conv2d``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.to(x.dtype).contiguous(memory_format=torch.channels_last)
        p = ctx.padding
        grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad, padding=p) if ctx.needs_input_grad[0] else None
        grad_weight = tap_weight_grad(grad, x, weight.shape[-1], p) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None


def tap_weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel: int, padding: int) -> torch.Tensor:
    """The weight gradient (K, C, k, k) of a stride-1 convolution of ``x`` (N, C, H, W) whose output gradient
    is ``grad`` (N, K, H', W'): for each tap (i, j), ``grad`` as a (K, N H' W') matrix times the input window
    at that offset as (N H' W', C). Both in NHWC order, which channels_last tensors already are."""
    k_out, channels = grad.shape[1], x.shape[1]
    h, w = grad.shape[-2:]
    rows = grad.permute(0, 2, 3, 1).reshape(-1, k_out).t()
    padded = F.pad(x, (padding,) * 4).permute(0, 2, 3, 1)
    out = torch.empty(k_out, kernel, kernel, channels, dtype=x.dtype, device=x.device)
    for i in range(kernel):
        for j in range(kernel):
            torch.mm(rows, padded[:, i : i + h, j : j + w, :].reshape(-1, channels), out=out[:, i, j, :])
    return out.permute(0, 3, 1, 2)


class Sequential(nn.Sequential):
    """``nn.Sequential`` (the same modules, ``state_dict`` keys and printout) that runs some runs of layers in a
    cheaper way with the same bits, forward and backward:

    - a ``LocalResponseNorm`` where its compiled kernels take the map, with the ReLU before it and the max-pool
      after it, as one operation: the kernels apply the ReLU as they read its input and pool the layer's output
      from a buffer a row of pixels at a time, so the full-size output is never written (nor, backward, its
      gradient), and mask the gradient by the ReLU as they write theirs. Op by op, ``alexnet_paper``'s conv1 and
      conv2 ReLUs were about 90 ms of each training step (bf16, batch 128, 2 cores of an AMX Xeon, torch's
      profiler), and the LRN layers and their pools 109 ms forward and backward, against 58 for the three in one
      (2026-12-05);
    - a ReLU and the max-pool after it, in the other order: max-pooling commutes with the ReLU (a window's
      maximum is positive where and only where its ReLU'd maximum is, and then at the same place), so the ReLU
      runs on the pooled map, a quarter of the size for 3/2 and 2/2 pools. ``alexnet``'s training step at batch
      128 in bf16 went from 587-608 to 537-553 ms on the same machine.

    A run whose layers have hooks, which would see different inputs, runs as written; so does everything under
    ``torch.compile`` and the exporters, which see the layers in order.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self)
        i = 0
        while i < len(modules):
            used, x = self._pairing(modules[i : i + 3], x) if not _tracing() else (0, x)
            if not used:
                x, used = modules[i](x), 1
            i += used
        return x

    @staticmethod
    def _pairing(modules: list[nn.Module], x: torch.Tensor) -> tuple[int, torch.Tensor]:
        """(layers taken, output) for the layers that start ``modules``, run as one of the pairings; (0, ``x``)
        where none applies."""
        if any(_hooked(module) for module in modules[:2]):
            return 0, x
        relu = isinstance(modules[0], nn.ReLU)
        lrn = modules[int(relu)] if len(modules) > int(relu) else None
        if isinstance(lrn, LocalResponseNorm) and lrn.on_kernels(x):
            after = modules[int(relu) + 1] if len(modules) > int(relu) + 1 else None
            if isinstance(after, nn.MaxPool2d) and not _hooked(after):  # the layer pools on the kernels if it can
                return int(relu) + 2, lrn(x, relu=relu, pool=after)
            if relu:
                return 2, lrn(x, relu=True)
        if relu and isinstance(lrn, nn.MaxPool2d) and not lrn.return_indices:
            return 2, modules[0](lrn(x))
        return 0, x


def _hooked(module: nn.Module) -> bool:
    """Whether a hook would see ``module``'s input or output: its own hooks or any module's global ones."""
    hooks = nn.modules.module
    return any(
        (module._forward_pre_hooks, module._forward_hooks, module._backward_pre_hooks, module._backward_hooks,
         hooks._global_forward_pre_hooks, hooks._global_forward_hooks, hooks._global_backward_pre_hooks,
         hooks._global_backward_hooks)
    )  # fmt: skip


class LocalResponseNorm(nn.Module):
    """Cross-channel local response normalisation with the 2012 paper's constants and formula.

    The paper computes ``b = a / (k + alpha * sum(a_j ** 2)) ** beta`` over ``size`` adjacent channels.
    ``torch.nn.LocalResponseNorm`` (like Caffe) divides ``alpha`` by ``size`` inside the sum, so the
    same ``alpha=1e-4`` there normalises five times more weakly than the paper did. We keep ``alpha`` in
    the paper's convention, so that the paper's numbers mean what the paper says (torch's module with
    ``alpha * size`` computes the same).

    ``groups`` normalises each tower's channels on their own, as the two-GPU network did: a channel at
    the edge of one tower never sees the other tower's channels.

    The sum over neighbouring channels is a 1x1 convolution of ``a ** 2`` with a fixed band matrix (block
    diagonal across towers): the same window as ``F.local_response_norm``, at matrix-multiply speed. In
    training the whole layer is one autograd function (``_LRN``) with a hand-written backward, computed in
    the input's layout and dtype (bf16 under autocast, where the op-by-op version spent most of its time
    casting to fp32 and back): ``alexnet_paper``'s training step ran at half ``alexnet``'s speed with the
    op-by-op version, though the two have the same multiply-adds. Without gradients, under
    ``torch.compile`` and in ONNX export the same formula runs op by op (the compiler fuses it; exporters
    see plain operators).

    On a CPU, for channels_last maps in float32 or bf16, the layer runs on compiled kernels instead
    (``native``, ``_NativeLRN``), with or without gradients: one pass over memory forward and one backward,
    where the formula above makes about a dozen, with the ReLU before it and the max-pool after it inside them
    (``Sequential``). They are used where the install built them.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0, groups: int = 1):
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups

    def band(self, channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(C, C, 1, 1): 1 where channel j is in channel i's window (i - size//2 .. i + (size-1)//2, as
        torch's kernel pads) and in the same tower, else 0. Built on each call (microseconds), not kept: a
        tensor made under inference mode could not take part in a later backward pass (Grad-CAM's)."""
        index = torch.arange(channels, device=device)
        offset = index[None, :] - index[:, None]  # j - i
        inside = (offset >= -(self.size // 2)) & (offset <= (self.size - 1) // 2)
        tower = channels // self.groups
        inside &= (index[:, None] // tower) == (index[None, :] // tower)
        return inside.to(dtype)[:, :, None, None]

    def on_kernels(self, x: torch.Tensor) -> bool:
        """Whether ``forward`` runs ``x`` on the compiled kernels."""
        return not _tracing() and native.lrn_supported(x, self.size, self.groups)

    def pools(self, x: torch.Tensor, pool: nn.MaxPool2d) -> bool:
        """Whether ``forward`` runs ``x`` with ``pool`` after the layer on the compiled kernels, as one operation."""
        return not _tracing() and native.lrn_pool_supported(x, self.size, self.groups, pool)

    def forward(self, x: torch.Tensor, relu: bool = False, pool: nn.MaxPool2d | None = None) -> torch.Tensor:
        """The layer of ``x``; with ``relu``, of ``x.relu()``; with ``pool``, followed by it: each done inside the
        kernels where they run (``Sequential`` pairs the layers so)."""
        constants = self.size, self.alpha, self.beta, self.k, self.groups, relu
        if pool is not None and self.pools(x, pool):
            return _NativeLRNPool.apply(x, *constants, pool.kernel_size, pool.stride)
        if self.on_kernels(x):
            out = _NativeLRN.apply(x, *constants)
            return out if pool is None else pool(out)
        if relu:
            x = F.relu(x)
        if pool is not None:
            return pool(self(x))
        band = self.band(x.shape[1], x.device, x.dtype)
        if torch.is_grad_enabled() and x.requires_grad and not _tracing():
            return _LRN.apply(x, band, self.alpha, self.beta, self.k)
        with torch.autocast(x.device.type, enabled=False):  # in x's dtype, as in training
            return x * _inverse_power(F.conv2d(x * x, band * self.alpha).add_(self.k), self.beta)

    def extra_repr(self) -> str:
        paper = f"size={self.size}, alpha={self.alpha} (paper convention), beta={self.beta}, k={self.k}"
        return f"{paper}, groups={self.groups}"


def _tracing() -> bool:
    """True while torch.compile, torch.export or the ONNX exporter traces the model."""
    return torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def _inverse_power(d: torch.Tensor, beta: float) -> torch.Tensor:
    """``d ** -beta`` for positive ``d``. The paper's beta, 0.75, is ``rsqrt(d) * sqrt(rsqrt(d))``: two
    vectorised roots take 2.1-2.6x less time than ``pow``'s general path on 2 CPU cores (bf16, LRN-sized
    tensors: 48 against 23 ms at 64 x 96 x 55 x 55), with the same error against float64. In place where no
    gradient flows through ``d`` (``_LRN`` and inference): autograd needs ``rsqrt``'s output unchanged (the op-by-op
    formula that ``torch.compile`` traces in training)."""
    if beta != 0.75:
        return d.pow(-beta)
    root = d.rsqrt()
    return root * root.sqrt() if d.requires_grad else root.mul_(root.sqrt())


class _NativeLRN(torch.autograd.Function):
    """The layer on ``native``'s kernels: the forward pass keeps only ``x``; the backward pass recomputes the
    window sums from it. With ``relu``, ``x`` is the preceding ReLU's input (``Sequential`` fuses the two)."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int, relu: bool
    ) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.constants = size, alpha, beta, k, groups, relu
        return native.lrn_forward(x, *ctx.constants)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return native.lrn_backward(x, grad, *ctx.constants), None, None, None, None, None, None


class _NativeLRNPool(torch.autograd.Function):
    """The layer and the max-pool after it on ``native``'s kernels (with ``relu``, the ReLU before it too): the
    forward pass keeps ``x`` and a byte per pooled value (its window's argmax), the backward pass recomputes the
    rest; the layer's full-size output and its gradient are never written to memory."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k, groups, relu, kernel, stride) -> torch.Tensor:
        ctx.constants = size, alpha, beta, k, groups, relu, kernel, stride
        pooled, argmax = native.lrn_pool_forward(x, *ctx.constants)
        ctx.save_for_backward(x, argmax)
        ctx.mark_non_differentiable(argmax)
        return pooled

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, argmax = ctx.saved_tensors
        return (native.lrn_pool_backward(x, grad, argmax, *ctx.constants),) + (None,) * 8


class _LRN(torch.autograd.Function):
    """``y = x * d ** -beta`` with ``d = k + alpha * band(x ** 2)``, forward and backward in ``x``'s dtype.

    Backward, with ``g`` the incoming gradient and ``p = d ** -beta``:
    ``dx = g p - 2 alpha beta x * bandT(g p x / d)``: the direct path, and the path through every window
    that ``x`` falls in (``bandT``: the band transposed, which differs from the band for even sizes).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, band: torch.Tensor, alpha: float, beta: float, k: float) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            denominator = F.conv2d(x * x, band * alpha, torch.full((x.shape[1],), k, dtype=x.dtype, device=x.device))
            scale = _inverse_power(denominator, beta)
        ctx.save_for_backward(x, band, denominator, scale)
        ctx.factor = 2 * alpha * beta
        return x * scale

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, band, denominator, scale = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            direct = grad.to(x.dtype) * scale
            windows = F.conv2d((direct * x).div_(denominator), band.transpose(0, 1) * ctx.factor)
            return direct.addcmul_(x, windows, value=-1), None, None, None, None
