"""Benchmarks stay alive: the quick mode of each benchmark that has one runs and prints its JSON lines."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_time_to_accuracy_quick_runs_each_seed_and_the_summary(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "time_to_accuracy.py"), "--quick", "--seeds", "0", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    names = [line["benchmark"] for line in lines]
    assert names == [
        "cifar10 [recipe as shipped] seed 0",
        "cifar10 [recipe as shipped] seed 1",
        "cifar10 [recipe as shipped] over 2 seed(s)",
    ]
    assert all(0 <= line["mean"] <= 100 and line["unit"] == "% test top-1" for line in lines)
    assert lines[-1]["train_time_s"] > 0 and lines[-1]["images_per_s"] > 0
