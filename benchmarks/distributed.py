"""What DDP costs and buys on CPUs: gradient all-reduce over gloo, and 1 process x N threads against
N processes x 1 thread.

    .venv/bin/python benchmarks/distributed.py [--processes 2] [--params 61100840] [--train]

The all-reduce part starts ``--processes`` processes on this machine (gloo over loopback) and times a
sum-all-reduce of one float32 tensor the size of the model's gradients (AlexNet: 61,100,840 parameters,
233 MiB), as DDP does every step (in 25 MiB buckets; the volume is the same). With ``--train`` it also
runs `alexnet train` on a fifth of Fashion-MNIST (default recipe, 1 epoch) with 1 process using every
core, then with one process per core, and reports both rates. One JSON line per result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from common import parse_args, report, report_peaks, write_tiny_cifar


def _allreduce(rank: int, world: int, numel: int, repeats: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    grads = torch.randn(numel)
    dist.all_reduce(grads)  # warm-up: connections and buffers
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(grads)
        times.append(time.perf_counter() - start)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def allreduce_seconds(world: int, numel: int, repeats: int = 5) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.json")
        mp.spawn(_allreduce, args=(world, numel, repeats, 29517, out), nprocs=world, join=True)
        return json.loads(Path(out).read_text())


def train_rate(devices: int, tmp: Path, data: list[str]) -> float:
    out = tmp / f"run-{devices}"
    cmd = [sys.executable, "-m", "alexnet", "train", *data, "--epochs", "1",
           "--devices", str(devices), "--batch-size", str(256 // devices), "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads((out / "report.json").read_text())["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--params", type=int, default=61_100_840)
    parser.add_argument("--train", action="store_true")
    args = parse_args(parser)
    if args.quick:  # a small all-reduce, and one epoch of a tiny CIFAR-10 with 1 and 2 processes
        args.params, args.train = 100_000, True
    report_peaks()
    times = allreduce_seconds(args.processes, args.params, repeats=2 if args.quick else 5)
    mib = args.params * 4 / 2**20
    report(
        f"gloo all-reduce of {args.params:,} float32 gradients ({mib:.0f} MiB), {args.processes} processes, loopback",
        [t * 1000 for t in times], unit="ms", bytes_per_process=args.params * 4,
        # a ring all-reduce sends and receives 2 (N-1)/N of the buffer per process
        wire_mib_per_process=round(2 * (args.processes - 1) / args.processes * mib, 1),
    )  # fmt: skip
    if args.train:
        with tempfile.TemporaryDirectory() as tmp:
            data = ["--train-fraction", "0.2"]  # of Fashion-MNIST, the default recipe's data
            if args.quick:
                root = write_tiny_cifar(Path(tmp) / "data", rows=256)
                data = ["--data", "cifar10", "--root", str(root), "--val-fraction", "0"]
            one = train_rate(1, Path(tmp), data)
            report("alexnet train, 1 process x all cores, global batch 256", [one])
            many = train_rate(args.processes, Path(tmp), data)
            report(f"alexnet train, {args.processes} processes x 1 thread, global batch 256", [many])


if __name__ == "__main__":
    main()
