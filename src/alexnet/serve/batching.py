"""Requests batched for throughput: each request's image waits at most a few milliseconds for others, then
the batch runs through the model in one forward pass on a worker thread while the event loop keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import numpy as np


class Batcher:
    """Collects uint8 images (C, S, S) into batches of at most ``max_batch`` and resolves each request with
    its row of ``run(batch)`` (a (B, K) array)."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], *, max_batch: int = 32, wait_s: float = 0.004):
        self.run, self.max_batch, self.wait_s = run, max_batch, wait_s
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.batches = 0  # how many forward passes served how many requests: for /healthz
        self.requests = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def submit(self, image: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((image, future))
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(pending) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    pending.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            try:
                rows = await loop.run_in_executor(None, self.run, np.stack([image for image, _ in pending]))
            except Exception as error:  # the model failed on this batch: every request in it hears why
                for _, future in pending:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            self.requests += len(pending)
            for (_, future), row in zip(pending, rows, strict=True):
                if not future.done():
                    future.set_result(row)
