"""Knowledge distillation (``distill``): the model learns a trained teacher's class probabilities besides the
labels (Hinton, Vinyals and Dean, 2015). The teacher, a run, model or ensemble directory, sees each training
batch exactly as the model does, augmentations included (Beyer et al., 2022: a "consistent" teacher), and the
loss is ``(1 - distill_weight) x cross-entropy + distill_weight x T² x KL(teacher || model)`` at temperature T."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alexnet.errors import InputError
from alexnet.inference import Ensemble, EnsembleGraph, load_ensemble, shown_classes
from alexnet.modelcard import InputSpec


def load_teacher(source: str, inputs: InputSpec, classes: tuple[str, ...]) -> EnsembleGraph:
    """The teacher in ``source`` (its members' mean, for an ensemble) as one frozen module in eval mode that
    takes the model's inputs (normalised as ``inputs`` says); ``InputError`` when it classifies other classes
    or takes another input size or channel count."""
    loaded = load_ensemble(source, precision="fp32", device="cpu")
    members = loaded.members if isinstance(loaded, Ensemble) else (loaded,)
    for member in members:
        if member.backend != "pytorch":
            raise InputError(f"{source}: an ONNX model cannot teach; give its run or model directory")
        if member.classes != classes:
            raise InputError(
                f"{source}: a teacher of {len(member.classes)} classes {shown_classes(member.classes)}, "
                f"not the data's {len(classes)} {shown_classes(classes)}"
            )
        theirs = member.card.preprocess
        if (theirs.image_size, theirs.channels) != (inputs.image_size, inputs.channels):
            raise InputError(
                f"{source}: a teacher of {theirs.image_size}-px, {theirs.channels}-channel input, not the "
                f"model's {inputs.image_size} px and {inputs.channels} channel(s)"
            )
    return EnsembleGraph(members, inputs.mean, inputs.std).eval().requires_grad_(False)


def distillation_loss(logits: torch.Tensor, teacher_log_probabilities: torch.Tensor, temperature: float):
    """T² x KL(teacher || model) at temperature T, averaged over the batch; the teacher's log-probabilities
    already at T. T² keeps the gradients' scale that of cross-entropy whatever T (Hinton et al.)."""
    student = F.log_softmax(logits.float() / temperature, -1)
    kl = F.kl_div(student, teacher_log_probabilities, log_target=True, reduction="batchmean")
    return kl * temperature**2
