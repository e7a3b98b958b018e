"""Training across processes: layouts read from the launchers, and real 2-process DDP runs over gloo."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from alexnet.data.mnist import system_copy
from alexnet.training.distributed import detect_layout, is_peer_failure, threads_per_process

FASHION = system_copy("fashion-mnist")
needs_fashion = pytest.mark.skipif(FASHION is None, reason="Debian's dataset-fashion-mnist is not installed")


def test_layout_from_torchrun_lightning_slurm_and_a_single_process():
    torchrun = {"TORCHELASTIC_RUN_ID": "x", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"}
    layout = detect_layout(1, env=torchrun)
    assert (layout.devices, layout.num_nodes, layout.rank, layout.world_size, layout.launched_by) == (
        2, 2, 3, 4, "torchrun",
    )  # fmt: skip
    child = detect_layout(2, env={"LOCAL_RANK": "1", "NODE_RANK": "0"})
    assert (child.rank, child.world_size, child.is_zero, child.launched_by) == (1, 2, False, "lightning")
    slurm = detect_layout(4, 2, env={"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_JOB_NAME": "train"})
    assert (slurm.rank, slurm.world_size, slurm.launched_by) == (5, 8, "slurm")
    single = detect_layout(1, env={})
    assert (single.rank, single.world_size, single.launched_by) == (0, 1, "single")


def test_cores_are_shared_between_a_nodes_processes():
    assert threads_per_process(detect_layout(2, env={}), cpus=2) == 1
    assert threads_per_process(detect_layout(1, env={}), cpus=16) == 16
    assert threads_per_process(detect_layout(4, env={}), cpus=2) == 1


def test_peer_failures_are_recognised():
    assert is_peer_failure(RuntimeError("[pair.cc:537] Read error [127.0.0.1]:4757: Connection reset by peer."))
    assert not is_peer_failure(ValueError("bad value"))


COMMON = [
    "--model", "alexnet_cifar", "--data", "fashion-mnist", "--train-fraction", "0.04", "--val-fraction", "0.02",
    "--epochs", "1", "--precision", "fp32", "--seed", "3",
]  # fmt: skip


def _config(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(json.dumps({"model_options": {"widths": [8, 16, 16, 16, 16]}, "hidden": [32], "tta": "none"}))
    return str(path)


def _run(tmp_path, out, *extra, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "alexnet", "train", *COMMON, "--config", _config(tmp_path), "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def _rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@needs_fashion
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    two = _run(tmp_path, tmp_path / "two", "--devices", "2", "--batch-size", "32")
    assert two.returncode == 0, two.stderr[-2000:]
    one = _run(tmp_path, tmp_path / "one", "--devices", "1", "--batch-size", "64")
    assert one.returncode == 0, one.stderr[-2000:]
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert (report["processes"], report["batch_size_per_process"], report["global_batch_size"]) == (2, 32, 64)
    assert report["test_images"] == 10_000
    assert not (tmp_path / "one" / "two").exists() and len(list(tmp_path.glob("*/report.json"))) == 2
    rows_two, rows_one = _rows(tmp_path / "two"), _rows(tmp_path / "one")
    assert len(rows_two) == len(rows_one) == 1
    # Same samples in each global step; the processes draw their own crops and dropout, and BatchNorm sees
    # 32 images per process instead of 64 (no SyncBatchNorm on CPUs): close, not equal.
    assert abs(float(rows_two[0]["train_loss"]) - float(rows_one[0]["train_loss"])) < 0.08  # measured: 0.023
    # The reduced test figure is the single-process figure of the same weights on the same data.
    evaluated = subprocess.run(
        [sys.executable, "-m", "alexnet", "evaluate", str(tmp_path / "two"), "--precision", "fp32", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(evaluated.stdout)["top1"] == pytest.approx(report["test_top1"], abs=1.5e-4)


@pytest.mark.slow
@needs_fashion
def test_a_two_process_checkpoint_resumes_in_one_process(tmp_path):
    first = _run(tmp_path, tmp_path / "run", "--devices", "2", "--batch-size", "32")
    assert first.returncode == 0, first.stderr[-2000:]
    cmd = [
        sys.executable,
        "-m",
        "alexnet",
        "train",
        "--resume",
        str(tmp_path / "run"),
        "--epochs",
        "2",
        "--devices",
        "1",
    ]
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["epoch"] for r in _rows(tmp_path / "run")] == ["1", "2"]
    assert json.loads((tmp_path / "run" / "report.json").read_text())["processes"] == 1


@pytest.mark.slow
@needs_fashion
def test_a_killed_process_takes_the_job_down_with_a_clear_message(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "alexnet", "train", *COMMON, "--config", _config(tmp_path), "--out", str(out),
           "--devices", "2", "--batch-size", "32", "--epochs", "50", "--train-fraction", "0.2"]  # fmt: skip
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 180
    while not (out / "metrics.csv").exists():  # the first epoch is done: both processes are training
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-2000:]
        time.sleep(0.5)
    children = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1, children  # Lightning started rank 1 as our child
    os.kill(int(children[0]), signal.SIGKILL)
    killed = time.monotonic()
    _, err = job.communicate(timeout=150)
    assert job.returncode == 1
    assert time.monotonic() - killed < 130  # bounded by the collective timeout, not a hang
    assert "another training process stopped" in err and f"alexnet train --resume {out}" in err
    assert "Traceback" not in err
