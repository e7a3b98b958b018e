"""An ensemble trained in one command (``members: N``): N runs of one configuration, seeds ``seed``, ``seed+1``,
... (``seeding.member_seed``), all on the images of one split (the ensemble's ``data_seed``), trained one after
another, each a run directory of its own inside the ensemble's (``modeldir.member_folder``); then the average
of their class probabilities is validated and tested (``alexnet evaluate``'s ensemble, with the run's ``tta``).

The ensemble's run directory holds ``config.yaml`` (the settings, ``members`` included), the members, the
evaluation of the ensemble (``eval-<split>-<tta>.json`` and its confusion matrix) and, last, ``report.json``.
``alexnet evaluate``, ``predict``, ``export`` and ``serve`` take that directory as the ensemble. ``--resume``
keeps the members that finished, continues the one that was stopped and trains the rest; with ``--epochs N``
every member that started trains to N epochs, as one run resumed with them would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from alexnet.atomic import write_text
from alexnet.errors import InputError
from alexnet.modeldir import REPORT_FILE, member_folder, run_report
from alexnet.seeding import member_seed
from alexnet.training.config import CONFIG_FILE, TrainConfig, load_resume, read_config_file, write_config
from alexnet.training.distributed import detect_layout
from alexnet.training.run import check_run_dir, default_run_dir, train

log = logging.getLogger("alexnet.train")


def member_configs(config: TrainConfig) -> list[TrainConfig]:
    """The members' settings: one model each, their own seeds, the ensemble's split, a share of its budget."""
    budget = config.time_budget / config.members
    return [
        config.replace(members=1, seed=member_seed(config.seed, k), split_seed=config.data_seed, time_budget=budget)
        for k in range(config.members)
    ]


def train_ensemble(
    config: TrainConfig, *, out: Path | None = None, resume: Path | None = None, callbacks: Sequence = ()
) -> dict[str, Any]:
    """Train ``config.members`` models in turn, test them as an ensemble and return the ensemble's report
    (written to ``report.json``); ``resume``: an ensemble run directory to finish, whose stopped member
    continues as its own ``config.yaml`` says (the epochs a time budget chose for it included)."""
    if detect_layout(config.devices, config.num_nodes).world_size > 1:
        raise InputError(
            "members train one after another in one process; train them with --devices 1 (or train each member "
            "as its own distributed run and evaluate them together: alexnet evaluate RUN RUN ...)"
        )
    run_dir = Path(resume or out or default_run_dir(config))
    check_run_dir(run_dir, resume)
    with outer_config(config, run_dir, resume, first=member_folder(run_dir, 0)):
        reports = [
            train_inner(member, member_folder(run_dir, k), f"member {k + 1} of {config.members}",
                        precision=config.precision, epochs=_asked_epochs(config, member_folder(run_dir, k)),
                        callbacks=callbacks)
            for k, member in enumerate(member_configs(config))
        ]  # fmt: skip
    return _finish(config, run_dir, reports)


@contextlib.contextmanager
def outer_config(config: TrainConfig, run_dir: Path, resume: Path | None, *, first: Path) -> Iterator[None]:
    """``config.yaml`` of a run directory that trains runs inside it (an ensemble's members, a born-again run's
    teacher), written before they start; bad input (``InputError``) before the ``first`` of them wrote anything
    takes it away again, with the directory where this made it."""
    created = not run_dir.exists()
    written = write_config(config, run_dir)
    try:
        yield
    except InputError:
        if resume is None and not first.exists():
            written.unlink()
            if created:
                run_dir.rmdir()
        raise


def train_inner(
    config: TrainConfig, folder: Path, name: str, *, precision: str, callbacks: Sequence, epochs: int | None = None
) -> dict[str, Any]:
    """The report of the run in ``folder`` (``name`` it in the log, e.g. "member 1 of 2"): kept where it
    finished (unless ``epochs`` asks for more), continued where it stopped (to ``epochs``, where given), else
    trained afresh from ``config``. A run trained afresh is named by its own first line ("training ... run
    directory RUN/member-K")."""
    done = run_report(folder)
    if done is not None and (epochs is None or epochs <= done["epochs"]):
        log.info("%s (seed %d): finished before; kept", name, config.seed)
        return done
    if (folder / "checkpoints" / "last.ckpt").exists():
        log.info("%s (seed %d): continues where it stopped", name, config.seed)
        return train(
            load_resume(folder, {"precision": precision, "epochs": epochs}), resume=folder, callbacks=callbacks
        )
    if folder.exists():
        shutil.rmtree(folder)  # stopped before its first epoch ended: nothing trained to keep
    return train(config, out=folder, callbacks=callbacks)


def _asked_epochs(config: TrainConfig, folder: Path) -> int | None:
    """The ensemble's epochs where a member that started has other epochs (``--resume RUN --epochs N``: as for
    one run, a stopped member trains to N and a finished one continues to N, if more); None with a time budget,
    whose members keep the epochs it chose for each."""
    if config.time_budget or not (folder / CONFIG_FILE).exists():
        return None
    return config.epochs if read_config_file(folder / CONFIG_FILE)["epochs"] != config.epochs else None


def _finish(config: TrainConfig, run_dir: Path, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Validate and test the members as one ensemble (the splits the run has) and write its ``report.json``."""
    from alexnet.evaluation import evaluate_splits
    from alexnet.inference import ensemble_name

    first = reports[0]
    tested = all(r.get("test_top1") is not None for r in reports)
    splits = ("val",) * (config.val_fraction > 0) + ("test",) * tested
    evaluated = evaluate_splits(run_dir, splits, tta=config.tta, precision=config.precision) if splits else {}
    validated = evaluated.get("val", {})
    figures = evaluated.get("test", validated)
    test = {}
    if tested:
        test = {"test_top1": figures["top1"], "test_top5": figures["top5"], "test_loss": figures["loss"],
                "test_images": figures["n"], "test_split": first["test_split"]}  # fmt: skip
    members = [
        {"run_dir": r["run_dir"], "seed": r["config"]["seed"], "test_top1": r.get("test_top1"),
         "best_val_acc": r.get("best_val_acc"), "train_time_s": r["train_time_s"]}
        for r in reports
    ]  # fmt: skip
    speeds = [r["images_per_s"] for r in reports if r.get("images_per_s")]
    report = {
        "model": ensemble_name([r["model"] for r in reports]),
        "data": first["data"],
        "epochs": first["epochs"],
        **test,
        "tta": config.tta,
        "best_val_acc": validated.get("top1"),  # the ensemble's, of the members' best weights
        "train_time_s": round(sum(r["train_time_s"] for r in reports), 1),  # all members'
        "fit_wall_s": round(sum(r["fit_wall_s"] for r in reports), 1),
        "images_per_s": round(statistics.median(speeds), 1) if speeds else None,
        "members": members,
        "evaluation": figures.get("outputs", {}).get("report"),
        "precision": first["precision"],
        "device": first["device"],
        "classes": first["classes"],
        "run_dir": str(run_dir),
        "config": config.to_dict(),
    }
    write_text(run_dir / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    return report
