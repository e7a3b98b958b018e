"""Benchmarks stay alive: every script in benchmarks/ runs in its quick mode and prints its JSON lines."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet.runtime import resolve_precision

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Not benchmarks: the shared helpers, and the script that builds the held-out CIFAR-10 split (tested below).
HELPERS = {"common.py", "cifar10_heldout.py"}
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name not in HELPERS)


def _run_quick(tmp_path, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", *args],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip


def _quick(tmp_path, script: str, *args: str) -> list[dict]:
    result = _run_quick(tmp_path, script, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """A script's quick-mode lines, each script run once for all the tests that read them."""

    @functools.cache
    def lines(script: str) -> list[dict]:
        return _quick(tmp_path_factory.mktemp(script.removesuffix(".py")), script)

    return lines


def test_every_benchmark_script_is_covered():
    assert SCRIPTS == [
        "distributed.py", "inference.py", "pipeline.py", "precision_accuracy.py", "serve_load.py",
        "time_to_accuracy.py", "train_throughput.py", "weight_grad.py",
    ]  # fmt: skip


def test_heldout_split_keeps_the_jpegs_that_are_not_copies_of_the_real_images(tmp_path):
    (line,) = _quick(tmp_path, "cifar10_heldout.py")
    # 10 classes of 7 JPEGs, 3 of each the copies of real images: those become the test batch
    assert (line["train"], line["test"], line["matched_right"]) == (40, 30, True)
    assert 0 < line["rms_mean"] <= line["rms_max"] < 20  # the JPEG coding's error, far below a wrong match


def test_folds_split_the_real_images_and_train_on_them_or_on_their_jpeg_copies(tmp_path):
    (line,) = _quick(tmp_path, "cifar10_heldout.py", "--folds", "3")
    # the 30 real images, 3 a class: each fold tests on 10 and trains on the other 20 (or their JPEG copies)
    assert (line["train"], line["test"], line["folds_right"]) == ([20, 20, 20], [10, 10, 10], True)


def test_more_folds_than_a_class_has_real_images_is_a_one_line_error(tmp_path):
    result = _run_quick(tmp_path, "cifar10_heldout.py", "--folds", "4")
    # 3 real images a class cannot fill 4 folds' test batches
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith("subset: a class holds 3 real images, too few for 4 folds"), line


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_mode_runs_and_prints_the_peaks_then_its_figures(quick, script):
    lines = quick(script)
    assert [line["benchmark"].split(" (")[0] for line in lines[:2]] == ["bf16 matmul peak", "fp32 matmul peak"]
    assert len(lines) > 2
    for line in lines:
        assert {"benchmark", "mean", "std", "unit", "device", "torch"} <= set(line), line


def test_time_to_accuracy_quick_runs_each_seed_and_the_summary(quick):
    lines = [line for line in quick("time_to_accuracy.py") if "peak" not in line["benchmark"]]
    names = [line["benchmark"] for line in lines]
    assert names == [
        "cifar10 [recipe as shipped] seed 0",
        "cifar10 [recipe as shipped] seed 1",
        "cifar10 [recipe as shipped] seed 2",
        "cifar10 [recipe as shipped] over 3 seed(s)",
    ]  # the default seeds
    assert all(0 <= line["mean"] <= 100 and line["unit"] == "% test top-1" for line in lines)
    assert lines[-1]["train_time_s"] > 0 and lines[-1]["images_per_s"] > 0


def test_train_throughput_quick_pairs_two_copies_of_one_network_near_one(quick):
    lines = quick("train_throughput.py")
    paired = [line for line in lines if line["benchmark"].startswith("alexnet_cifar against alexnet_cifar")]
    assert len(paired) == 1 and paired[0]["unit"] == "x alexnet_cifar images/s"
    assert 0.5 < paired[0]["mean"] < 2.0  # the same loop twice, timed alternately


def test_train_throughput_quick_runs_the_diagnostic_without_lrn(quick):
    lines = quick("train_throughput.py")
    # alexnet_paper with its LRN layers replaced by identities (the script stops where it finds none to replace)
    (diagnostic,) = [line for line in lines if line["benchmark"].startswith("alexnet_paper without LRN (diagnostic)")]
    assert diagnostic["unit"] == "x alexnet images/s" and diagnostic["mean"] > 0


def test_weight_grad_quick_times_both_gradients_and_each_recipes_steps(quick):
    lines = [line for line in quick("weight_grad.py") if "peak" not in line["benchmark"]]
    if resolve_precision("auto", "cpu") != "bf16":  # fp32 training takes oneDNN's gradient everywhere
        assert [line["benchmark"] for line in lines] == ["bf16 weight gradients"]
        return
    shapes = {line["benchmark"]: line for line in lines if line["benchmark"].startswith("weight gradient")}
    # the rule's choice beside each timing: 64 channels on 2x2 maps take the taps (with AMX or not), on 15x15 oneDNN's
    assert shapes["weight gradient 8 x 64 on 2x2: oneDNN / taps"]["rule_takes_taps"] is True
    assert shapes["weight gradient 8 x 64 on 15x15: oneDNN / taps"]["rule_takes_taps"] is False
    assert all(line["onednn_ms"] >= 0 and line["taps_ms"] >= 0 and line["mean"] > 0 for line in shapes.values())
    steps = [line for line in lines if "training steps" in line["benchmark"]]
    assert [line["benchmark"].split()[0] for line in steps] == [
        "cifar10-small", "cifar10", "fashion-mnist-best", "fashion-mnist",
    ]  # fmt: skip
    assert all(line["onednn_images_per_s"] > 0 and line["taps_images_per_s"] > 0 for line in steps)
