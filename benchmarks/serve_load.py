"""`alexnet serve` under load on loopback: N requests at a given concurrency, requests/s, p50 and p99 latency,
and the server's resident memory before and after. One JSON line per result.

    .venv/bin/python benchmarks/serve_load.py [--source RUN_DIR|MODEL.onnx] [--requests 500] [--concurrency 16]

Without --source it serves a freshly built `alexnet_cifar` (10 classes, 32 px) and `alexnet` (1000 classes,
224 px); each request posts one PNG as the request body.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import numpy as np
import torch
from PIL import Image

from alexnet.serve.ready import NotUp, wait_until_up

from common import parse_args, report, report_peaks


def _model_dir(name: str, size: int, classes: int, folder: Path) -> Path:
    from alexnet.modelcard import InputSpec, ModelCard
    from alexnet.modeldir import save_model_dir
    from alexnet.models import get_model

    card = ModelCard(name, {"num_classes": classes}, tuple(map(str, range(classes))),
                     InputSpec(size, 3, (0.5,) * 3, (0.25,) * 3, size))  # fmt: skip
    save_model_dir(get_model(name, num_classes=classes).eval(), folder, card)
    return folder


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


async def _load(url: str, body: bytes, requests: int, concurrency: int) -> tuple[list[float], int]:
    latencies, errors = [], 0
    remaining = iter(range(requests))
    async with httpx2.AsyncClient(timeout=120) as client:

        async def worker() -> None:
            nonlocal errors
            for _ in remaining:
                start = time.perf_counter()
                answer = await client.post(f"{url}/predict", content=body, headers={"Content-Type": "image/png"})
                latencies.append(time.perf_counter() - start)
                errors += answer.status_code != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def run(source: Path, name: str, requests: int, concurrency: int, size: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "alexnet", "serve", str(source), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_up(url, server)
        except NotUp as e:
            raise SystemExit(f"serve_load: {e}") from None
        png = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(png, "PNG")
        body = png.getvalue()
        asyncio.run(_load(url, body, max(16, requests // 5), concurrency))  # warm-up
        before = _rss_mib(server.pid)
        start = time.perf_counter()
        latencies, errors = asyncio.run(_load(url, body, requests, concurrency))
        seconds = time.perf_counter() - start
        after = _rss_mib(server.pid)
        health = httpx2.get(f"{url}/healthz").json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    quantiles = statistics.quantiles(latencies, n=100)
    report(
        f"serve {name}: {requests} requests at concurrency {concurrency}", [requests / seconds], unit="requests/s",
        p50_ms=round(1000 * quantiles[49], 1), p99_ms=round(1000 * quantiles[98], 1), errors=errors,
        rss_before_mib=round(before, 1), rss_after_mib=round(after, 1),
        mean_batch=round(health["requests"] / max(1, health["batches"]), 1),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parse_args(parser)
    if args.quick:
        args.requests = 40
    report_peaks()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.source is not None:
            run(args.source, str(args.source), args.requests, args.concurrency, 256)
            return
        cases = [("alexnet_cifar", 32, 10)] + ([] if args.quick else [("alexnet", 224, 1000)])
        for name, size, classes in cases:
            folder = _model_dir(name, size, classes, Path(tmp) / name)
            run(folder, f"{name} {size}px", args.requests, args.concurrency, size)


if __name__ == "__main__":
    main()
