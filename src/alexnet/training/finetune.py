"""Which parameters train when: permanent freezing and the two-stage fine-tuning schedule.

Stage 1 (``head_epochs``): only the new head (the parameters the pretrained weights did not provide)
trains. Stage 2: everything trains except what ``freeze`` holds for the whole run (``features``: the
convolutional part; ``all-but-head``: every pretrained parameter). BatchNorm layers whose parameters are
frozen stay in eval mode, so their running statistics keep the pretrained values too.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from torch import nn

from alexnet.models.weights import Loaded


@dataclass(frozen=True)
class FreezeSchedule:
    head: frozenset[str]  # parameter names left fresh by the pretrained weights
    always_frozen: frozenset[str]
    head_epochs: int = 0

    @classmethod
    def build(cls, loaded: Loaded, freeze: str, head_epochs: int, fixed: Collection[str] = ()) -> FreezeSchedule:
        """``fixed``: parameters the run keeps at their values whatever the stage (a BatchNorm scale with
        ``bn_scale`` off)."""
        if freeze == "features":
            frozen = {n for n in loaded.loaded if n.startswith("features.")}
        elif freeze == "all-but-head":
            frozen = set(loaded.loaded)
        else:
            frozen = set()
        return cls(frozenset(loaded.fresh) - set(fixed), frozenset(frozen | set(fixed)), head_epochs)

    def trainable(self, name: str, epoch: int) -> bool:
        if epoch < self.head_epochs:
            return name in self.head
        return name not in self.always_frozen


def apply_freeze(model: nn.Module, plan: FreezeSchedule, epoch: int) -> None:
    """Set ``requires_grad`` for ``epoch``, and BatchNorm modes to match (``freeze_norms``)."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(plan.trainable(name, epoch))
    if model.training:
        freeze_norms(model)


def freeze_norms(model: nn.Module) -> None:
    """Eval mode for every BatchNorm layer none of whose parameters trains (its running statistics stay),
    train mode for the others: at the switch to stage 2 its layers normalise by batch statistics again."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parameters = list(module.parameters())
            if parameters:
                module.train(any(p.requires_grad for p in parameters))
