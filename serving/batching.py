"""Adaptive batching: concurrent single-image requests for one model share one ONNX Runtime call.

There is no fixed waiting window. A request that arrives while the model is idle runs at once; every
request that arrives while a call is running queues and joins the next call (up to `max_batch`), so
batches grow with the traffic and a lone request never waits for company.

(BentoML's own `batchable=True` API needs a second HTTP request from the service to itself, through an
in-process connector that dropped about 4% of requests under 8 concurrent clients in BentoML 1.4.39.)
"""

from __future__ import annotations

import asyncio
from typing import Callable

import numpy as np


class Batcher:
    """Runs `run` on stacked inputs; callers await their own row. One per model, used from one event loop."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int,
                 on_batch: Callable[[int], None] | None = None):
        self._run, self._max_batch, self._on_batch = run, max_batch, on_batch
        self._queue: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        """run(batch)[i] for the batch this input `x` (one item, no batch axis) ends up in."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((x, future))
        if self._worker is None:
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch:]
                try:  # the batch is off the queue: whatever fails now must reach its callers
                    if self._on_batch is not None:
                        self._on_batch(len(batch))
                    outputs = await asyncio.to_thread(self._run, np.stack([x for x, _ in batch]))
                except Exception as err:  # every caller of this batch gets the error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(err)
                else:
                    for (_, future), output in zip(batch, outputs):
                        if not future.done():  # a caller that went away is skipped
                            future.set_result(output)
        finally:
            self._worker = None  # no await since the queue was seen empty: nothing slipped in between
