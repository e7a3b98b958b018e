"""Keras-style model summaries: output shapes, parameter counts and MACs, read from the model's plan."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from alexnet.errors import InputError
from alexnet.models.plan import Architecture, BatchNorm, LayerRow, ShapeError, forward_shapes, smallest_input_size


@dataclass(frozen=True)
class Summary:
    """What ``alexnet summary`` prints."""

    model: str
    input_shape: tuple[int, ...]  # (C, H, W)
    layers: list[LayerRow] = field(default_factory=list)
    trainable_params: int = 0
    non_trainable_params: int = 0  # BatchNorm running statistics (a freshly built model freezes nothing)
    macs: int = 0  # per image
    param_bytes: int = 0  # parameters and buffers in float32, BatchNorm's int64 step counters

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    def to_dict(self) -> dict:
        out = asdict(self)
        out["total_params"] = self.total_params
        return out


def summarize(arch: Architecture, name: str, input_shape: tuple[int, ...]) -> Summary:
    """Layer table and totals for one image of ``input_shape`` (C, H, W).

    An input the model cannot take raises ``InputError`` naming the smallest side that works.
    """
    channels = arch.features[0].in_channels
    if input_shape[0] != channels:
        raise InputError(f"{name} is built for {channels}-channel images, not {input_shape[0]}")
    try:
        rows = forward_shapes(arch, input_shape)
    except ShapeError:
        smallest = smallest_input_size(arch)
        raise InputError(
            f"{name} cannot take a {input_shape[1]}x{input_shape[2]} input; the smallest that works is "
            f"{smallest}x{smallest}"
        ) from None
    batch_norms = sum(isinstance(layer, BatchNorm) for layer in arch.features)
    param_bytes = 4 * (arch.params + arch.statistics) + 8 * batch_norms
    macs = sum(r.macs for r in rows)
    return Summary(name, tuple(input_shape), rows, arch.params, arch.statistics, macs, param_bytes)


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
