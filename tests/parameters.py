"""Parameter counts of a built model, the way Keras counts them: the cross-check of the plans' own counts."""

from torch import nn

_BN_STATISTICS = ("running_mean", "running_var")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) of a built model.

    Non-trainable holds parameters with ``requires_grad=False`` (a frozen backbone) and BatchNorm's
    running mean and variance; ``num_batches_tracked`` is bookkeeping and not counted.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    statistics = sum(b.numel() for name, b in model.named_buffers() if name.rsplit(".", 1)[-1] in _BN_STATISTICS)
    return trainable, frozen + statistics
