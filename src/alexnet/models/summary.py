"""Keras-style model summaries: output shapes, parameter counts and MACs, computed on the meta device."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from alexnet.errors import InputError

_BN_STATISTICS = ("running_mean", "running_var")


@dataclass(frozen=True)
class LayerRow:
    """One leaf module of a summary."""

    name: str  # state_dict prefix, e.g. "features.0"
    kind: str  # class name, e.g. "Conv2d"
    output_shape: tuple[int, ...]  # per image, without the batch axis
    params: int  # parameters plus BatchNorm running statistics, as Keras counts them
    macs: int  # multiply-accumulates per image


@dataclass(frozen=True)
class Summary:
    """What ``alexnet summary`` prints."""

    model: str
    input_shape: tuple[int, ...]  # (C, H, W)
    layers: list[LayerRow] = field(default_factory=list)
    trainable_params: int = 0
    non_trainable_params: int = 0  # frozen parameters and BatchNorm running statistics
    macs: int = 0  # per image
    param_bytes: int = 0  # parameters and buffers at their stored dtype

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    def to_dict(self) -> dict:
        out = asdict(self)
        out["total_params"] = self.total_params
        return out


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) the way Keras counts them.

    Non-trainable holds parameters with ``requires_grad=False`` and BatchNorm's running mean and
    variance (Keras's "moving" statistics); ``num_batches_tracked`` is bookkeeping and not counted.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    statistics = sum(b.numel() for name, b in model.named_buffers() if name.rsplit(".", 1)[-1] in _BN_STATISTICS)
    return trainable, frozen + statistics


def _on_meta(model: nn.Module) -> nn.Module:
    # Shapes only: a meta copy runs a 224-px VGG forward in milliseconds and allocates nothing.
    if all(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        return model
    return copy.deepcopy(model).to("meta")


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    per_image = output[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_image * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    return 0


def _materialised(model: nn.Module) -> nn.Module:
    # A meta model's first forward imports torch's reference kernels (~1 s here); uninitialised CPU
    # storage (no random fill) runs one image through AlexNet or VGG at 224 px in a fraction of that.
    if any(t.is_meta for t in model.parameters()):
        return copy.deepcopy(model).to_empty(device="cpu")
    return model


def _forward_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerRow]:
    rows: list[LayerRow] = []
    device = next(model.parameters()).device
    names = {m: n for n, m in model.named_modules()}

    def record(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        params = sum(count_parameters(module))
        shape = tuple(output.shape[1:])
        rows.append(LayerRow(names[module], type(module).__name__, shape, params, _layer_macs(module, output)))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    was_training = model.training
    model.eval()  # one image: BatchNorm in training mode would refuse a single value per channel
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return rows


def fits(model: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Whether ``model`` accepts one image of ``input_shape`` (C, H, W)."""
    try:
        _forward_shapes(_on_meta(model), input_shape)
    except RuntimeError:
        return False
    return True


def smallest_input_size(model: nn.Module, in_channels: int, *, largest: int = 4096) -> int:
    """The smallest square side the model accepts; valid sides are upward-closed, so bisect."""
    meta = _on_meta(model)
    if not fits(meta, (in_channels, largest, largest)):
        raise ValueError(f"model takes no input up to {largest} px")
    low, high = 0, largest  # low fails (or is 0), high fits
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(meta, (in_channels, mid, mid)) else (mid, high)
    return high


def summarize(model: nn.Module, name: str, input_shape: tuple[int, ...]) -> Summary:
    """Layer table and totals for one image of ``input_shape`` (C, H, W).

    An input the model cannot take raises ``InputError`` naming the smallest side that works.
    """
    try:
        rows = _forward_shapes(_materialised(model), input_shape)
    except RuntimeError:
        smallest = smallest_input_size(model, input_shape[0])
        raise InputError(
            f"{name} cannot take a {input_shape[1]}x{input_shape[2]} input; the smallest that works is "
            f"{smallest}x{smallest}"
        ) from None
    trainable, non_trainable = count_parameters(model)
    param_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    macs = sum(r.macs for r in rows)
    return Summary(name, tuple(input_shape), rows, trainable, non_trainable, macs, param_bytes)


def format_summary(summary: Summary) -> str:
    """The summary as a plain-text table, like Keras's ``model.summary()``."""
    header = ("Layer (type)", "Output Shape", "Param #", "MACs")
    body = [(f"{r.name} ({r.kind})", str(r.output_shape), f"{r.params:,}", f"{r.macs:,}") for r in summary.layers]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        return f"{cells[0]:<{widths[0]}}  {cells[1]:<{widths[1]}}  {cells[2]:>{widths[2]}}  {cells[3]:>{widths[3]}}"

    rule = "-" * len(line(header))
    c, h, w = summary.input_shape
    out = [f'Model: "{summary.model}"  input {c}x{h}x{w}', rule, line(header), rule.replace("-", "=")]
    out += [line(row) for row in body]
    out += [
        rule.replace("-", "="),
        f"Total params: {summary.total_params:,}",
        f"Trainable params: {summary.trainable_params:,}",
        f"Non-trainable params: {summary.non_trainable_params:,}",
        f"MACs per image: {summary.macs:,} ({summary.macs / 1e9:.2f} G)",
        f"Parameter memory: {summary.param_bytes / 2**20:.1f} MiB",
        rule,
    ]
    return "\n".join(out)
