"""Knowledge distillation (``distill``): the model learns a trained teacher's class probabilities besides the
labels (Hinton, Vinyals and Dean, 2015). The teacher, a run, model or ensemble directory, sees each training
batch exactly as the model does, augmentations included (Beyer et al., 2022: a "consistent" teacher), and the
loss is ``(1 - distill_weight) x cross-entropy + distill_weight x T² x KL(teacher || model)`` at temperature T."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from alexnet.errors import InputError
from alexnet.inference import Ensemble, EnsembleGraph, load_ensemble, shown_classes
from alexnet.modelcard import InputSpec
from alexnet.modeldir import TEACHER_FOLDER, run_report
from alexnet.seeding import member_seed
from alexnet.training.config import TrainConfig, load_resume
from alexnet.training.distributed import detect_layout


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


def distillation_loss(
    logits: torch.Tensor, teacher_log_probabilities: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T² x KL(teacher || model) at temperature T, averaged over the batch; the teacher's log-probabilities
    already at T. T² keeps the gradients' scale that of cross-entropy whatever T (Hinton et al.)."""
    student = F.log_softmax(logits.float() / temperature, -1)
    kl = F.kl_div(student, teacher_log_probabilities, log_target=True, reduction="batchmean")
    return kl * temperature**2


def train_born_again(
    config: TrainConfig, *, out: Path | None = None, resume: Path | None = None, callbacks: Sequence = ()
) -> dict[str, Any]:
    """``born_again`` (Furlanello et al., 2018): the same settings trained first without a teacher, seed + 1 on
    the same images, into ``RUN/teacher``; then the run itself, its own seed, distilled from that teacher. Each
    gets half of a time budget. The report is the student's, with the teacher's figures beside it and the
    training time of both (``with_teacher``). ``resume`` keeps a finished teacher, continues a stopped one, then
    trains or continues the student."""
    from alexnet.training.ensemble import outer_config, train_inner
    from alexnet.training.run import check_run_dir, default_run_dir, train

    if config.distill is not None:
        raise InputError("born_again trains its own teacher; give it no --distill (or distil RUN without it)")
    if detect_layout(config.devices, config.num_nodes).world_size > 1:
        raise InputError("born_again trains in one process; train the teacher, then distil it with --distill")
    run_dir = Path(resume or out or default_run_dir(config))
    folder = run_dir / TEACHER_FOLDER
    student = config.replace(born_again=False, distill=str(folder), time_budget=config.time_budget / 2)
    if resume is not None and (run_dir / "checkpoints" / "last.ckpt").exists():  # the student had started
        return train(load_resume(run_dir, {"precision": config.precision}), resume=run_dir, callbacks=callbacks)
    check_run_dir(run_dir, resume, str(folder))
    teacher = config.replace(
        born_again=False, seed=member_seed(config.seed, 1), split_seed=config.data_seed,
        time_budget=config.time_budget / 2,
    )  # fmt: skip
    # config.yaml says born_again until the student writes its own: --resume RUN continues the teacher first
    with outer_config(config, run_dir, resume, first=folder):
        train_inner(teacher, folder, "teacher", precision=config.precision, callbacks=callbacks)
    return train(student, out=run_dir, callbacks=callbacks)


def with_teacher(report: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A born-again student's report with its teacher's figures beside it and the training time of both."""
    taught = run_report(folder)
    if taught is None:
        return report
    own = report["train_time_s"]
    return {
        **report,
        "train_time_s": round(own + taught["train_time_s"], 1),  # the teacher's and its own
        "teacher": {key: taught.get(key) for key in ("run_dir", "test_top1", "best_val_acc", "train_time_s")}
        | {"seed": taught["config"]["seed"], "student_train_time_s": own},
    }
