"""Training across processes: Lightning's DDP strategy (gloo on CPUs, NCCL on GPUs), read from the launcher.

Three ways in, one code path:
- ``alexnet train --devices N``: Lightning starts N-1 more processes running the same command.
- ``torchrun --nproc_per_node N [--nnodes M ...] -m alexnet train ...``: torchrun starts them; Lightning
  reads ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` (its TorchElastic environment).
- SLURM (``srun``): Lightning's SLURM environment, with ``--devices`` tasks per node and ``--num-nodes``.

Every process trains on its own shard of each epoch; only global rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

RUN_DIR_ENV = "ALEXNET_RUN_DIR"  # rank 0's run directory, inherited by the processes Lightning starts


@dataclass(frozen=True)
class Layout:
    """How many processes train, and where this one sits."""

    devices: int  # processes per node
    num_nodes: int
    rank: int  # global rank of this process
    launched_by: str  # "single", "lightning", "torchrun" or "slurm"

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def is_zero(self) -> bool:
        return self.rank == 0


def detect_layout(devices: int, num_nodes: int = 1, env: dict[str, str] | None = None) -> Layout:
    """The process layout from the launcher's environment, else from ``--devices``/``--num-nodes``."""
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" in env or ("LOCAL_WORLD_SIZE" in env and "RANK" in env):
        local = int(env.get("LOCAL_WORLD_SIZE", "1"))
        world = int(env.get("WORLD_SIZE", str(local)))
        return Layout(local, max(1, world // max(local, 1)), int(env.get("RANK", "0")), "torchrun")
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return Layout(devices, num_nodes, int(env.get("SLURM_PROCID", "0")), "slurm")
    # Lightning's own launcher: the processes it starts carry LOCAL_RANK and NODE_RANK.
    rank = int(env.get("NODE_RANK", "0")) * devices + int(env.get("LOCAL_RANK", "0"))
    return Layout(devices, num_nodes, rank, "lightning" if devices * num_nodes > 1 else "single")


def threads_per_process(layout: Layout, cpus: int | None = None) -> int:
    """CPU threads each process may use: the cores divided between the processes of this node."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(layout.devices, 1))


def build_strategy(layout: Layout, accelerator: str, timeout_s: float):
    """Lightning's DDP strategy with gloo (CPU) or NCCL (GPU) and a collective timeout, or "auto" for one
    process. The timeout bounds how long a process waits on a peer that died."""
    if layout.world_size == 1:
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy

    backend = "nccl" if accelerator == "gpu" else "gloo"
    return DDPStrategy(process_group_backend=backend, timeout=timedelta(seconds=timeout_s))


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process died or timed out."""
    text = f"{type(error).__name__}: {error}"
    signs = ("Connection closed by peer", "Connection reset by peer", "DistBackendError", "timed out",
             "Timeout", "Broken pipe", "ProcessGroupGloo", "NCCL communicator was aborted")  # fmt: skip
    return any(sign in text for sign in signs)
