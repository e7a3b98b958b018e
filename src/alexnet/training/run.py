"""One training run in named steps: ``prepare`` (settings, layout, run directory, data and model, each built
once), ``build_engine`` (the Lightning trainer, task and data module), ``fit`` and ``finalize`` (test, plots,
report and the exported model). ``train`` runs them in order; the benchmarks and tests call the same steps."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet.atomic import write_text
from alexnet.data import Preprocess, channel_stats, load_splits
from alexnet.data.datasets import FOLDER
from alexnet.data.imageset import Dataset
from alexnet.errors import InputError, TrainingStopped
from alexnet.modelcard import DataSpec, InputSpec, ModelCard
from alexnet.modeldir import REPORT_FILE, TEACHER_FOLDER, own_teacher
from alexnet.models import get_architecture, model_spec
from alexnet.models.build import build
from alexnet.models.plan import fits, smallest_input_size
from alexnet.models.weights import Loaded, load_weights
from alexnet.pretrained import Pretrained, load_pretrained
from alexnet.runtime import device_name, precision_note
from alexnet.training.config import CONFIG_FILE, TrainConfig, write_config
from alexnet.training.distributed import RUN_DIR_ENV, Layout, detect_layout, threads_per_process

log = logging.getLogger("alexnet.train")


@dataclass(frozen=True)
class PreparedRun:
    """Everything a run trains with, settled (and checked) before the engine is built."""

    config: TrainConfig
    layout: Layout
    run_dir: Path
    resume_from: Path | None  # last.ckpt of the run being continued
    dataset: Dataset
    model: torch.nn.Module  # built once, initialised, pretrained weights loaded, first conv whitened
    loaded: Loaded | None  # which parameters came from pretrained weights
    teacher: torch.nn.Module | None  # distill's teacher: the model's inputs in, log-probabilities out
    preprocess: Preprocess
    card: ModelCard
    batch_size: int  # per process
    lr: float  # peak learning rate, scaled by the number of processes with scale_lr

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.dataset.train) // self.layout.world_size // self.batch_size)


@dataclass(frozen=True)
class Engine:
    """The Lightning side of a run."""

    trainer: Any  # lightning.pytorch.Trainer
    task: Any  # ClassificationTask
    data: Any  # ImageDataModule


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<recipe or model-data>-<date>-<time>`` in the working directory."""
    stem = config.recipe or f"{config.model}-{config.data.removeprefix(FOLDER).replace('/', '_')}"
    return Path("runs") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def fit_batch_size(batch_size: int, train_images: int, world_size: int) -> int:
    """The per-process batch: ``batch_size``, or each process's share of the training set when that is
    smaller (every epoch then takes one step over the whole set, instead of none). Says so in one line."""
    share = train_images // world_size
    if share < 1:
        raise InputError(
            f"the training set has {train_images} image(s), fewer than the {world_size} processes training it"
        )
    if share < batch_size:
        log.info("batch size %d is larger than the training set; using %d (the whole set) per step", batch_size, share)
        return share
    return batch_size


def _input_spec(config: TrainConfig, dataset: Dataset, image_size: int, in_channels: int, pretrained) -> InputSpec:
    """Normalisation from the training images' statistics, or from the pretrained weights' own when the
    channel counts agree (ImageNet's for torchvision's files)."""
    mean, std = channel_stats(dataset.train.images)
    known = pretrained.preprocess if pretrained is not None else {}
    if known.get("mean") is not None and len(known["mean"]) == len(mean):
        mean, std = list(known["mean"]), list(known["std"])
    return InputSpec(
        image_size=image_size, channels=in_channels, mean=tuple(mean), std=tuple(max(s, 1e-3) for s in std),
        storage_size=dataset.train.image_shape[-1], padding=config.padding,
    )  # fmt: skip


def _preprocess(config: TrainConfig, spec: InputSpec) -> Preprocess:
    return Preprocess(
        image_size=spec.image_size, channels=spec.channels, mean=spec.mean, std=spec.std, crop=config.crop,
        padding=config.padding, padding_mode=config.padding_mode, flip=config.flip, lighting=config.lighting,
        cutout=config.cutout, trivial_augment=config.trivial_augment, scale=(config.scale_min, 1.0),
    )  # fmt: skip


def _whiten(model, config: TrainConfig, preprocess: Preprocess, train_images: np.ndarray) -> None:
    """The model-side settings of a run: BatchNorm momentum, eps and scale; the whitened first conv,
    computed from (at most 5,000 of) the training images as the model sees them (a fresh model's only:
    pretrained weights are never overwritten)."""
    from alexnet.training.speedups import configure_norms, whiten_first_conv

    configure_norms(model, momentum=config.bn_momentum, eps=config.bn_eps, train_scale=config.bn_scale)
    if config.whiten and not config.whitens:
        log.info("whiten: skipped, the first conv keeps its pretrained weights")
    elif config.whitens:
        count = min(len(train_images), 5000, max(16, 50_000_000 // max(1, train_images[0].size * 4)))
        sample = np.random.default_rng(config.seed).choice(len(train_images), count, replace=False)
        images = preprocess.evaluate(torch.from_numpy(train_images[np.sort(sample)]))[0]
        whiten_first_conv(model, images, eps=config.whiten_eps, seed=config.seed)


def prepare(
    config: TrainConfig, *, out: Path | None = None, resume: Path | None = None, dataset: Dataset | None = None
) -> PreparedRun:
    """Settle a run: check names, load the data, check the input size and the pretrained weights (every bad
    input fails here, before any file is written), then build the model once and write ``config.yaml`` and
    ``model.json`` into the run directory (global rank 0 only). ``dataset``, when given, is trained on
    instead of loading ``config.data`` (benchmarks and tests with data in memory)."""
    import lightning.pytorch as pl

    layout = detect_layout(config.devices, config.num_nodes)
    if layout.world_size > 1:
        torch.set_num_threads(threads_per_process(layout))  # the node's cores shared between its processes
    spec = model_spec(config.model)
    if dataset is None:
        dataset = load_splits(
            config.data, config.root, train_fraction=config.train_fraction, val_fraction=config.val_fraction,
            seed=config.data_seed, storage_size=config.storage_size,
        )  # fmt: skip
    for note in dataset.notes if layout.is_zero else ():
        log.info("%s: %s", dataset.name, note)
    if len(dataset.train.classes) < 2:
        raise InputError(f"{config.data}: found {len(dataset.train.classes)} class; a classifier needs two or more")
    stored_channels, stored_side = dataset.train.image_shape[0], dataset.train.image_shape[-1]
    image_size = config.image_size or (stored_side if spec.image_size <= 32 else spec.image_size)
    in_channels = config.in_channels or stored_channels
    kwargs: dict[str, Any] = {"num_classes": len(dataset.train.classes), "in_channels": in_channels,
                              "dropout": config.dropout}  # fmt: skip
    if config.hidden is not None:
        kwargs["hidden"] = tuple(config.hidden)
    kwargs.update(config.model_options)
    if spec.adapts_to_image_size:
        kwargs["image_size"] = image_size
    arch = get_architecture(config.model, **kwargs)
    if not fits(arch, (in_channels, image_size, image_size)):
        smallest = smallest_input_size(arch)
        raise InputError(
            f"{config.model} cannot take {image_size}x{image_size} images; the smallest it takes is {smallest}"
        )
    if (config.freeze != "none" or config.head_epochs > 0) and config.pretrained is None:
        raise InputError("--freeze and --head-epochs fine-tune pretrained weights; give --pretrained SRC")
    batch_size = fit_batch_size(config.batch_size, len(dataset.train), layout.world_size)
    pretrained: Pretrained | None = load_pretrained(config.pretrained, config.model) if config.pretrained else None

    pl.seed_everything(config.seed, workers=False, verbose=False)
    model = build(arch)
    loaded = load_weights(model, pretrained.state, pretrained.source, new_head=True) if pretrained else None
    inputs = _input_spec(config, dataset, image_size, in_channels, pretrained)
    preprocess = _preprocess(config, inputs)
    inputs = replace(inputs, augmented=preprocess.train_changes(stored_side))
    note = preprocess.unseen_views(config.tta, stored_side, inputs.augmented)
    if note and layout.is_zero:
        log.warning("note: tta: %s", note)
    _whiten(model, config, preprocess, dataset.train.images)
    teacher = None
    if config.distill:
        from alexnet.training.distill import load_teacher

        teacher = load_teacher(config.distill, inputs, tuple(dataset.train.classes))
    if resume is not None:
        _check_resumable(model, resume / "checkpoints" / "last.ckpt")
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    card = ModelCard(
        model=config.model, model_kwargs=kwargs, classes=tuple(dataset.train.classes), preprocess=inputs,
        data=DataSpec(config.data, config.root, config.train_fraction, config.val_fraction, config.data_seed),
        norm_eps=config.bn_eps,
    )  # fmt: skip

    # The processes Lightning starts inherit the environment: they all use rank 0's directory.
    inherited = os.environ.get(RUN_DIR_ENV) if not layout.is_zero else None
    run_dir = Path(resume or out or inherited or default_run_dir(config))
    if layout.world_size > 1:
        os.environ[RUN_DIR_ENV] = str(run_dir)
    if layout.is_zero:
        check_run_dir(run_dir, resume, config.distill)
    run = PreparedRun(
        config=config, layout=layout, run_dir=run_dir,
        resume_from=resume / "checkpoints" / "last.ckpt" if resume is not None else None,
        dataset=dataset, model=model, loaded=loaded, teacher=teacher, preprocess=preprocess, card=card,
        batch_size=batch_size,
        lr=config.lr * layout.world_size if config.scale_lr else config.lr,
    )  # fmt: skip
    if config.time_budget and resume is None:  # a resumed run keeps the epochs its budget chose
        from alexnet.training.budget import fit_to_budget

        run = fit_to_budget(run)
    if layout.is_zero:
        for stray in run_dir.rglob(".*.tmp") if resume is not None else ():
            stray.unlink()  # half-written files of a process killed mid-write (atomic_path's temporaries)
        write_config(run.config, run_dir)
        card.write(run_dir)  # now, so that the checkpoints of an unfinished run can be evaluated
    return run


def check_run_dir(run_dir: Path, resume: Path | None, teacher: str | None = None) -> None:
    """A new run's directory must be a new or empty folder, but for the teacher it distils when that is inside
    it (a born-again run's, with the settings it was started with); a resumed one is its own."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir}: is a file; --out takes a folder for the run")
    allowed = {TEACHER_FOLDER, CONFIG_FILE} if own_teacher(run_dir, teacher) else set()
    if resume is None and run_dir.exists() and any(p.name not in allowed for p in run_dir.iterdir()):
        raise InputError(f"{run_dir}: already holds files; choose another --out or --resume it")


def _check_resumable(model: torch.nn.Module, checkpoint: Path) -> None:
    """A truncated, empty or hostile checkpoint, or one whose weights do not fit the model config.yaml now
    describes (an edited file), fails here in one line, before Lightning restores it. The weights are loaded
    by the one loader of weights (``load_weights``); Lightning then restores the same ones."""
    from alexnet.modeldir import read_torch_weights

    saved = read_torch_weights(checkpoint, what="checkpoint")
    try:
        load_weights(model, saved, str(checkpoint))
    except InputError as error:
        raise InputError(f"{error}; was config.yaml edited?") from None


def build_engine(run: PreparedRun, *, callbacks: Sequence = (), trainer: Any = None) -> Engine:
    """The Lightning trainer (writing into the run directory; ``trainer`` instead, when given), the task and
    the data module of ``run``."""
    from alexnet.training.datamodule import ImageDataModule
    from alexnet.training.task import ClassificationTask
    from alexnet.training.trainer import build_trainer

    config = run.config
    data = ImageDataModule(
        run.dataset, run.preprocess, batch_size=run.batch_size, seed=config.seed, tta=config.tta,
        alternate_flips=config.alternate_flips, mixup=config.mixup, cutmix=config.cutmix,
    )  # fmt: skip
    if trainer is None:
        trainer = build_trainer(
            config, run.run_dir, run.layout, has_validation=run.dataset.val is not None,
            steps_per_epoch=run.steps_per_epoch, extra_callbacks=callbacks,
        )  # fmt: skip
    task = ClassificationTask(
        run.model,
        config.replace(lr=run.lr),
        run.dataset.train.classes,
        run.steps_per_epoch,
        run.loaded,
        teacher=run.teacher,
        finish_views=run.preprocess.finish_views,
    )
    return Engine(trainer, task, data)


@contextlib.contextmanager
def _stops(run_dir: Path) -> Iterator[None]:
    """Turn the ways a run stops early into ``TrainingStopped``, with what to do next."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from alexnet.training.callbacks import Interrupted
    from alexnet.training.distributed import is_peer_failure
    from alexnet.training.task import NonFiniteLoss

    resume = f"alexnet train --resume {run_dir}"
    try:
        yield
    except SIGTERMException:
        # Lightning's own SIGTERM exit (status 0) when the signal lands between our checks, e.g. while
        # an epoch-end checkpoint is written: report it as the interruption it is.
        stopped = Interrupted("SIGTERM", run_dir / "checkpoints" / "last.ckpt")
        raise TrainingStopped(128 + 15, f"{stopped}; continue with: {resume}") from None
    except Interrupted as error:
        raise TrainingStopped(
            128 + (2 if error.signal_name == "SIGINT" else 15), f"{error}; continue with: {resume}"
        ) from None
    except NonFiniteLoss as error:
        kept = (run_dir / "checkpoints" / "last.ckpt").exists()
        where = "the last good checkpoint is kept" if kept else "no epoch had finished, so there is no checkpoint"
        raise TrainingStopped(1, f"error: {error}; {where} (lower --lr, or clip gradients)") from None
    except Exception as error:
        if not is_peer_failure(error):
            raise
        reason = str(error).split("] ", 1)[-1].split(". ")[0][:160]
        raise TrainingStopped(
            1,
            f"error: another training process stopped or stopped answering ({reason}); this one stops too. "
            f"Continue from the last checkpoint with: {resume}",
        ) from error


def fit(run: PreparedRun, engine: Engine) -> float:
    """Train (from the resumed checkpoint, if any); returns the seconds ``fit`` took."""
    config, dataset = run.config, run.dataset
    if run.layout.is_zero:
        log.info(
            "training %s on %s: %d train / %s val / %d test images at %d px, %s, %d process%s (global batch %d), "
            "run directory %s",
            config.model, dataset.name, len(dataset.train), len(dataset.val) if dataset.val is not None else 0,
            len(dataset.test) if dataset.test is not None else 0, run.card.preprocess.image_size,
            engine.trainer.precision + precision_note(config.precision, engine.trainer.strategy.root_device.type),
            run.layout.world_size, "" if run.layout.world_size == 1 else "es",
            run.batch_size * run.layout.world_size, run.run_dir,
        )  # fmt: skip
        if config.mixup or config.cutmix:
            log.info("MixUp/CutMix on: train_acc is measured on the mixed batches (each image's dominant label)")
    started = time.perf_counter()
    with _stops(run.run_dir):
        engine.trainer.fit(engine.task, datamodule=engine.data, ckpt_path=run.resume_from, weights_only=True)
    return time.perf_counter() - started


def _best_state(trainer, run_dir: Path, is_zero: bool) -> dict:
    """Rank 0 reads the best checkpoint and hands its weights to every process (other nodes may not
    see rank 0's disk)."""
    state = None
    if is_zero:
        best = Path(trainer.checkpoint_callback.best_model_path or run_dir / "checkpoints" / "last.ckpt")
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    return trainer.strategy.broadcast(state, src=0)


def _test(run: PreparedRun, engine: Engine) -> tuple[dict, np.ndarray | None]:
    """Test figures of the loaded weights (every process, on its shard) and the confusion matrix."""
    if run.dataset.test is None:
        return {}, None
    [test] = engine.trainer.test(engine.task, datamodule=engine.data, verbose=False, weights_only=True)
    matrix = engine.task.test_confusion.compute().cpu().numpy().astype(np.int64)  # reduced over the processes
    return test, matrix


def _plot(run: PreparedRun, engine: Engine, rows: list[dict], matrix: np.ndarray | None) -> None:
    """curves.png, and for a test split confusion.png and predictions.png (32 test images)."""
    from alexnet.inference import average_views
    from alexnet.plots import plot_confusion, plot_curves, plot_predictions

    title = f"{run.config.model} on {run.dataset.name}"
    # distilled: the training loss mixes the labels' cross-entropy and the teacher's KL; validation's is plain
    plot_curves(
        rows,
        run.run_dir / "curves.png",
        title + (", distilled (train loss: labels + teacher)" * bool(run.config.distill)),
    )
    test_set = run.dataset.test
    if test_set is None:
        return
    plot_confusion(matrix, test_set.classes, run.run_dir / "confusion.png", f"{title}: test confusion")
    shown = np.linspace(0, len(test_set) - 1, min(32, len(test_set))).astype(int)
    task = engine.task.eval()
    crops = run.preprocess.test_crops(torch.from_numpy(test_set.images[shown]).to(task.device), run.config.tta)
    predicted = average_views(task, crops, task.finish_views).argmax(-1).cpu()  # as the test step scores them
    plot_predictions(
        test_set.images[shown], test_set.labels[shown].tolist(), predicted.tolist(),
        test_set.classes, run.run_dir / "predictions.png", f"{title}: test predictions",
    )  # fmt: skip


def finalize(run: PreparedRun, engine: Engine, fit_time_s: float) -> dict | None:
    """Test the best weights (every process, on its shard), then rank 0 writes the plots, report.json and
    the exported model (``model.safetensors`` and the card with the test figure)."""
    from alexnet.modeldir import save_model_dir
    from alexnet.training.callbacks import read_metrics

    config, trainer = run.config, engine.trainer
    with _stops(run.run_dir):
        engine.task.load_state_dict(_best_state(trainer, run.run_dir, run.layout.is_zero))
        test, matrix = _test(run, engine)
    if not run.layout.is_zero:
        return None
    rows = read_metrics(run.run_dir / "metrics.csv")
    _plot(run, engine, rows, matrix)
    if test:
        test = {"test_top1": test["test_top1"], "test_top5": test["test_top5"], "test_loss": test["test_loss"],
                "test_images": len(run.dataset.test), "test_split": run.dataset.test_origin}  # fmt: skip
    images_per_s = [float(r["images_per_s"]) for r in rows if r.get("images_per_s")]
    report = {
        "model": config.model,
        "data": run.dataset.name,
        "epochs": len(rows),
        **test,
        "tta": config.tta,
        "best_val_acc": max((float(r["val_acc"]) for r in rows if r.get("val_acc") not in ("", "nan")), default=None),
        # Every epoch's time, those before a resume included; fit_wall_s is this invocation's fit alone.
        "train_time_s": round(sum(float(r["time_s"]) for r in rows if r.get("time_s")), 1),
        "fit_wall_s": round(fit_time_s, 1),
        "images_per_s": round(float(np.median(images_per_s)), 1) if images_per_s else None,
        "parameters": sum(p.numel() for p in engine.task.model.parameters()),
        "precision": str(trainer.precision),
        "processes": run.layout.world_size,
        "batch_size_per_process": run.batch_size,
        "global_batch_size": run.batch_size * run.layout.world_size,
        "lr": run.lr,
        "device": device_name(),
        "torch": torch.__version__,
        "classes": list(run.dataset.train.classes),
        "confusion": matrix.tolist() if matrix is not None else None,
        "run_dir": str(run.run_dir),
        "config": config.to_dict(),
    }
    if own_teacher(run.run_dir, config.distill):
        from alexnet.training.distill import with_teacher

        report = with_teacher(report, run.run_dir / TEACHER_FOLDER)  # a born-again run: the teacher's time too
    # The exported model first: the report is what marks a run finished, so it is never there without it.
    save_model_dir(engine.task.evaluated, run.run_dir, replace(run.card, test_top1=report.get("test_top1")))
    write_text(run.run_dir / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    return report


def train(
    config: TrainConfig, *, out: Path | None = None, resume: Path | None = None, callbacks: Sequence = ()
) -> dict | None:
    """Train ``config`` and return the report written to report.json (``None`` in processes other than
    global rank 0, which train and test their shards but write nothing). A run that stops early raises
    ``TrainingStopped``.

    With ``resume`` (a run directory; ``config`` from ``load_resume``) training continues from its
    ``last.ckpt`` in the same directory. ``callbacks`` are extra Lightning callbacks. With ``members`` > 1 the
    members are trained in turn and tested as an ensemble (``training.ensemble``); with ``born_again`` a
    teacher, then this run distilled from it (``training.distill``).
    """
    if config.members > 1:
        from alexnet.training.ensemble import train_ensemble

        return train_ensemble(config, out=out, resume=resume, callbacks=callbacks)
    if config.born_again:
        from alexnet.training.distill import train_born_again

        return train_born_again(config, out=out, resume=resume, callbacks=callbacks)
    run = prepare(config, out=out, resume=resume)
    engine = build_engine(run, callbacks=callbacks)
    fit_time_s = fit(run, engine)
    report = finalize(run, engine, fit_time_s)
    _leave_process_group()
    return report


def _leave_process_group() -> None:
    """Shut this process's collectives down before it exits. Left to the interpreter's exit, gloo's threads
    can be torn down while running ("terminate called without an active exception"); the other processes'
    launcher then sees this one abort and kills them all (seen: 1 run in 3 of a two-process test)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
