"""One training run, end to end: check everything, train, test, plot, report and export into a run directory."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import yaml

from alexnet.atomic import write_text
from alexnet.data import Preprocess, channel_stats, load_splits
from alexnet.data.imageset import Dataset
from alexnet.errors import InputError
from alexnet.models import get_architecture, get_model, model_spec
from alexnet.models.plan import fits, smallest_input_size
from alexnet.pretrained import Pretrained, load_pretrained, transfer
from alexnet.runtime import device_name
from alexnet.training.config import TrainConfig, read_config_file

log = logging.getLogger("alexnet.train")


@dataclass(frozen=True)
class Plan:
    """What a run will build, settled before anything is written."""

    config: TrainConfig
    dataset: Dataset
    image_size: int
    in_channels: int
    model_kwargs: dict
    pretrained: Pretrained | None = None  # weights to start from, checked against the model


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<recipe or model-data>-<date>-<time>`` in the working directory."""
    stem = config.recipe or f"{config.model}-{config.data.replace('folder:', '').replace('/', '_')}"
    return Path("runs") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def plan_run(config: TrainConfig) -> Plan:
    """Check names, load the data and check the input size: every bad input fails here, before any file
    is written."""
    spec = model_spec(config.model)
    dataset = load_splits(
        config.data,
        config.root,
        train_fraction=config.train_fraction,
        val_fraction=config.val_fraction,
        seed=config.seed,
        storage_size=config.storage_size,
    )
    stored_channels, stored_side = dataset.train.image_shape[0], dataset.train.image_shape[-1]
    image_size = config.image_size or (stored_side if spec.image_size <= 32 else spec.image_size)
    in_channels = config.in_channels or stored_channels
    kwargs = {"num_classes": len(dataset.train.classes), "in_channels": in_channels, "dropout": config.dropout}
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
    pretrained = None
    if config.pretrained is not None:
        pretrained = load_pretrained(config.pretrained, config.model)
        with torch.device("meta"):  # every key and shape checked before anything is written or loaded
            transfer(get_model(config.model, **kwargs), pretrained)
    return Plan(config, dataset, image_size, in_channels, kwargs, pretrained)


def build_preprocess(plan: Plan) -> Preprocess:
    """Normalisation from the training images' statistics (or from the pretrained weights' own, when the
    channel counts agree: ImageNet's for torchvision's files), augmentation from the config."""
    config = plan.config
    mean, std = channel_stats(plan.dataset.train.images)
    known = plan.pretrained.preprocess if plan.pretrained is not None else {}
    if known.get("mean") is not None and len(known["mean"]) == len(mean):
        mean, std = list(known["mean"]), list(known["std"])
    return Preprocess(
        image_size=plan.image_size,
        channels=plan.in_channels,
        mean=tuple(mean),
        std=tuple(max(s, 1e-3) for s in std),
        crop=config.crop,
        padding=config.padding,
        padding_mode=config.padding_mode,
        flip=config.flip,
        lighting=config.lighting,
        scale=(config.scale_min, 1.0),
    )


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


def prepare_model(model, config: TrainConfig, preprocess: Preprocess, train_images: np.ndarray) -> None:
    """The model-side settings of a run: BatchNorm momentum, eps and scale; the whitened first conv,
    computed from (at most 5,000 of) the training images as the model sees them (a fresh model's only:
    pretrained weights are never overwritten)."""
    from alexnet.training.speedups import configure_norms, whiten_first_conv

    configure_norms(model, momentum=config.bn_momentum, eps=config.bn_eps, train_scale=config.bn_scale)
    if config.whiten and config.pretrained is not None:
        log.info("whiten: skipped, the first conv keeps its pretrained weights")
    elif config.whiten:
        count = min(len(train_images), 5000, max(16, 50_000_000 // max(1, train_images[0].size * 4)))
        sample = np.random.default_rng(config.seed).choice(len(train_images), count, replace=False)
        images = preprocess.evaluate(torch.from_numpy(train_images[np.sort(sample)]))[0]
        whiten_first_conv(model, images, eps=config.whiten_eps, seed=config.seed)


def load_resume(run_dir: Path, overrides: dict) -> TrainConfig:
    """The config of an earlier run with ``overrides`` (epochs, devices, precision) applied."""
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if not (run_dir / "config.yaml").exists():
        raise InputError(f"{run_dir}: no config.yaml (not a run directory)")
    if not checkpoint.exists():
        raise InputError(f"{run_dir}: no checkpoints/last.ckpt to resume from")
    allowed = {"epochs", "devices", "num_nodes", "precision"}
    refused = sorted(k for k, v in overrides.items() if v is not None and k not in allowed)
    if refused:
        changeable = "--epochs, --devices, --num-nodes and --precision"
        raise InputError(
            f"--resume continues a run as configured; only {changeable} may change, not {', '.join(refused)}"
        )
    settings = read_config_file(run_dir / "config.yaml")
    return TrainConfig().replace(**settings).replace(**{k: v for k, v in overrides.items() if v is not None})


def train(
    config: TrainConfig, *, out: Path | None = None, resume: Path | None = None, callbacks: Sequence = ()
) -> dict | None:
    """Train ``config`` and return the report written to report.json (``None`` in processes other than
    global rank 0, which train and test their shards but write nothing).

    With ``resume`` (a run directory; ``config`` from ``load_resume``) training continues from its
    ``last.ckpt`` in the same directory. ``callbacks`` are extra Lightning callbacks.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from alexnet.training.callbacks import Interrupted
    from alexnet.training.datamodule import ImageDataModule
    from alexnet.training.distributed import RUN_DIR_ENV, detect_layout, threads_per_process
    from alexnet.training.task import ClassificationTask
    from alexnet.training.trainer import build_trainer

    layout = detect_layout(config.devices, config.num_nodes)
    if layout.world_size > 1:
        torch.set_num_threads(threads_per_process(layout))  # the node's cores shared between its processes
    checkpoint = resume / "checkpoints" / "last.ckpt" if resume is not None else None
    plan = plan_run(config)
    # The processes Lightning starts inherit the environment: they all use rank 0's directory.
    inherited = os.environ.get(RUN_DIR_ENV) if not layout.is_zero else None
    run_dir = Path(resume or out or inherited or default_run_dir(config))
    if layout.world_size > 1:
        os.environ[RUN_DIR_ENV] = str(run_dir)
    if layout.is_zero:
        if resume is None and run_dir.exists() and any(run_dir.iterdir()):
            raise InputError(f"{run_dir}: already holds files; choose another --out or --resume it")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))

    pl.seed_everything(config.seed, workers=False, verbose=False)
    model = get_model(config.model, **plan.model_kwargs)
    transferred = transfer(model, plan.pretrained) if plan.pretrained is not None else None
    preprocess = build_preprocess(plan)
    prepare_model(model, config, preprocess, plan.dataset.train.images)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if layout.is_zero:
        meta = {"format_version": 1, **model_meta(plan, preprocess)}
        write_text(run_dir / "model.json", json.dumps(meta, indent=2))
    batch_size = fit_batch_size(config.batch_size, len(plan.dataset.train), layout.world_size)
    data = ImageDataModule(
        plan.dataset, preprocess, batch_size=batch_size, seed=config.seed, tta=config.tta,
        alternate_flips=config.alternate_flips,
    )  # fmt: skip
    has_validation = plan.dataset.val is not None
    steps_per_epoch = max(1, len(plan.dataset.train) // layout.world_size // batch_size)
    trainer = build_trainer(
        config, run_dir, layout, has_validation=has_validation, steps_per_epoch=steps_per_epoch,
        extra_callbacks=callbacks,
    )  # fmt: skip
    trained = config.replace(lr=config.lr * layout.world_size) if config.scale_lr else config
    task = ClassificationTask(model, trained, plan.dataset.train.classes, steps_per_epoch, transferred)
    if layout.is_zero:
        log.info(
            "training %s on %s: %d train / %s val / %d test images at %d px, %s, %d process%s (global batch %d), "
            "run directory %s",
            config.model, plan.dataset.name, len(plan.dataset.train), len(plan.dataset.val) if has_validation else 0,
            len(plan.dataset.test) if plan.dataset.test is not None else 0, plan.image_size, trainer.precision,
            layout.world_size, "" if layout.world_size == 1 else "es", batch_size * layout.world_size, run_dir,
        )  # fmt: skip
    started = time.perf_counter()
    try:
        trainer.fit(task, datamodule=data, ckpt_path=checkpoint, weights_only=True)
    except SIGTERMException:
        # Lightning's own SIGTERM exit (status 0) when the signal lands between our checks, e.g. while
        # an epoch-end checkpoint is written: report it as the interruption it is.
        raise Interrupted("SIGTERM", run_dir / "checkpoints" / "last.ckpt") from None
    train_time_s = time.perf_counter() - started
    return _finish(trainer, task, data, plan, preprocess, run_dir, train_time_s, layout)


def _best_state(trainer, run_dir: Path, is_zero: bool) -> dict:
    """Rank 0 reads the best checkpoint and hands its weights to every process (other nodes may not
    see rank 0's disk)."""
    state = None
    if is_zero:
        best = Path(trainer.checkpoint_callback.best_model_path or run_dir / "checkpoints" / "last.ckpt")
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    return trainer.strategy.broadcast(state, src=0)


def _finish(
    trainer, task, data, plan: Plan, preprocess: Preprocess, run_dir: Path, train_time_s: float, layout
) -> dict | None:
    """Test the best weights (every process, on its shard), then rank 0 writes the plots, report.json and
    the exported model."""
    from alexnet.export import save_model_dir
    from alexnet.inference import average_views
    from alexnet.plots import plot_confusion, plot_curves, plot_predictions
    from alexnet.training.callbacks import read_metrics

    config = plan.config
    task.load_state_dict(_best_state(trainer, run_dir, layout.is_zero))
    test = {}
    if plan.dataset.test is not None:
        [test] = trainer.test(task, datamodule=data, verbose=False, weights_only=True)
        matrix = task.test_confusion.compute().cpu().numpy().astype(np.int64)  # reduced over the processes
    if not layout.is_zero:
        return None
    rows = read_metrics(run_dir / "metrics.csv")
    title = f"{config.model} on {plan.dataset.name}"
    plot_curves(rows, run_dir / "curves.png", title)
    if plan.dataset.test is not None:
        test_set = plan.dataset.test
        plot_confusion(matrix, test_set.classes, run_dir / "confusion.png", f"{title}: test confusion")
        shown = np.linspace(0, len(test_set) - 1, min(32, len(test_set))).astype(int)
        task.eval()
        views = preprocess.evaluate(torch.from_numpy(test_set.images[shown]).to(task.device), config.tta)
        predicted = average_views(task, views).argmax(-1).cpu()
        plot_predictions(
            test_set.images[shown], test_set.labels[shown].tolist(), predicted.tolist(),
            test_set.classes, run_dir / "predictions.png", f"{title}: test predictions",
        )  # fmt: skip
        test = {"test_top1": test["test_top1"], "test_top5": test["test_top5"], "test_loss": test["test_loss"],
                "test_images": len(test_set), "confusion": matrix.tolist()}  # fmt: skip
    images_per_s = [float(r["images_per_s"]) for r in rows if r.get("images_per_s")]
    report = {
        "model": config.model,
        "data": plan.dataset.name,
        "epochs": len(rows),
        **{k: v for k, v in test.items() if k != "confusion"},
        "tta": config.tta,
        "best_val_acc": max((float(r["val_acc"]) for r in rows if r.get("val_acc") not in ("", "nan")), default=None),
        # Every epoch's time, those before a resume included; fit_wall_s is this invocation's fit alone.
        "train_time_s": round(sum(float(r["time_s"]) for r in rows if r.get("time_s")), 1),
        "fit_wall_s": round(train_time_s, 1),
        "images_per_s": round(float(np.median(images_per_s)), 1) if images_per_s else None,
        "parameters": sum(p.numel() for p in task.model.parameters()),
        "precision": str(trainer.precision),
        "processes": layout.world_size,
        "batch_size_per_process": data.batch_size,
        "global_batch_size": data.batch_size * layout.world_size,
        "lr": config.lr * layout.world_size if config.scale_lr else config.lr,
        "device": device_name(),
        "torch": torch.__version__,
        "classes": list(plan.dataset.train.classes),
        "confusion": test.get("confusion"),
        "run_dir": str(run_dir),
        "config": config.to_dict(),
    }
    write_text(run_dir / "report.json", json.dumps(report, indent=2) + "\n")
    save_model_dir(task.evaluated, run_dir, {**model_meta(plan, preprocess), "test_top1": report.get("test_top1")})
    return report


def model_meta(plan: Plan, preprocess: Preprocess) -> dict:
    """model.json: the architecture, classes and preprocessing; written when training starts (so that the
    checkpoints of an unfinished run can be evaluated) and again, with the test figure, beside the weights."""
    return {
        "model": plan.config.model,
        "model_kwargs": plan.model_kwargs,
        "classes": list(plan.dataset.train.classes),
        "preprocess": {
            "image_size": preprocess.image_size,
            "channels": preprocess.channels,
            "mean": list(preprocess.mean),
            "std": list(preprocess.std),
            "storage_size": plan.dataset.train.image_shape[-1],
            "padding": preprocess.padding,
        },  # fmt: skip
        "data": plan.dataset.name,
    }
