"""A dynamic micro-batcher: concurrent requests of the same graph and shape share one call.

It knows nothing about HTTP, Redis or onnxruntime: it is given a blocking `run(graph, inputs)`
and runs it on a pool of its own `concurrency` threads, so the event loop stays free. A request
is a dict of arrays that all share a leading batch axis (B rows); requests whose arrays agree on
every other axis are merged by concatenating along B, up to `max_batch` rows or until the oldest
has waited `max_wait_ms`, and the outputs are split back by row counts.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service import timing

Arrays = dict[str, np.ndarray]
RunFn = Callable[[str, Arrays], Arrays]
# on_batch(graph, rows, queue waits of its requests in s, run time in s): a hook for metrics.
BatchObserver = Callable[[str, int, list[float], float], None]


@dataclass
class _Request:
    inputs: Arrays
    rows: int
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float = 0.0  # its batch's run, set before the future's result
    finished_at: float = 0.0


class MicroBatcher:
    def __init__(self, run: RunFn, max_batch: int = 16, max_wait_ms: float = 0.0,
                 concurrency: int = 1, on_batch: BatchObserver | None = None):
        self.run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.concurrency = concurrency
        self.on_batch = on_batch
        self.pending: dict[tuple, list[_Request]] = {}
        self.running = 0
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task] = []
        self._threads: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        # The calls run on exactly `concurrency` threads of their own, not on asyncio's shared
        # pool (up to cores + 4 threads, taken as they come free): glibc gives each thread that
        # allocates its own malloc arena, so the threads that touch the model's buffers, and
        # their arenas, are as many as the calls allowed at once (docs/benchmarks.md, Memory).
        self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="vdis-model")
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.concurrency)]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None
        for queue in self.pending.values():
            for request in queue:
                request.future.cancel()
        self.pending.clear()

    def state(self) -> dict:
        return {"pending_requests": sum(len(q) for q in self.pending.values()),
                "running_batches": self.running, "concurrent_runs": self.concurrency,
                "max_batch": self.max_batch,
                "max_wait_ms": self.max_wait_s * 1000.0}

    async def submit(self, graph: str, inputs: Arrays) -> Arrays:
        """Queue one request (arrays with a shared leading axis B) and wait for its outputs."""
        if not self._workers:
            raise RuntimeError("the batcher is not started")
        rows = {len(a) for a in inputs.values()}
        if len(rows) != 1:
            raise ValueError(f"inputs of {graph} disagree on the batch axis: {rows}")
        key = (graph, tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(inputs.items())))
        request = _Request(inputs, rows.pop(), asyncio.get_running_loop().create_future())
        self.pending.setdefault(key, []).append(request)
        self._wakeup.set()
        outputs = await request.future
        timing.record("queue", request.queued_at, request.started_at)
        timing.record("model", request.started_at, request.finished_at)
        return outputs

    async def _work(self) -> None:
        while True:
            key = await self._next_ready()
            batch = self._take(key)
            self.running += 1
            try:
                await self._run(key[0], batch)
            finally:
                self.running -= 1

    async def _next_ready(self) -> tuple:
        """Wait for the oldest queue to fill up or for its oldest request to wait long enough."""
        while True:
            if not self.pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            key = min(self.pending, key=lambda k: self.pending[k][0].queued_at)
            queue = self.pending[key]
            left_s = queue[0].queued_at + self.max_wait_s - time.perf_counter()
            if sum(r.rows for r in queue) >= self.max_batch or left_s <= 0:
                return key
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left_s)
            except TimeoutError:
                pass

    def _take(self, key: tuple) -> list[_Request]:
        """The oldest requests of a queue, up to max_batch rows or this call's share of them.

        With several calls allowed at once (VDIS_MAX_CONCURRENT_RUNS > 1), the waiting rows
        are shared among the calls that are free, so that 8 waiting rows make two
        calls of 4 on two idle cores rather than one of 8 beside an idle core.
        """
        queue = self.pending[key]
        free = max(1, self.concurrency - self.running)
        limit = min(self.max_batch, math.ceil(sum(r.rows for r in queue) / free))
        batch = [queue.pop(0)]
        rows = batch[0].rows
        while queue and rows + queue[0].rows <= limit:
            rows += queue[0].rows
            batch.append(queue.pop(0))
        if not queue:
            del self.pending[key]
        return batch

    async def run_alone(self, graph: str, inputs: Arrays) -> Arrays:
        """One call of `run` as it is, unbatched, on the batcher's own threads."""
        if self._threads is None:
            raise RuntimeError("the batcher is not started")
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.run, graph,
                                                                inputs)

    async def _run(self, graph: str, batch: list[_Request]) -> None:
        batch = [r for r in batch if not r.future.cancelled()]
        if not batch:
            return
        started = time.perf_counter()
        names = batch[0].inputs.keys()
        merged = {n: np.concatenate([r.inputs[n] for r in batch]) if len(batch) > 1
                  else batch[0].inputs[n] for n in names}  # (sum of B, ...)
        try:
            outputs = await self.run_alone(graph, merged)
        except Exception as error:  # the failure belongs to every request in the batch
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        finished = time.perf_counter()
        if self.on_batch:
            self.on_batch(graph, sum(r.rows for r in batch),
                          [started - r.queued_at for r in batch], finished - started)
        start = 0
        for request in batch:
            part = {n: a[start:start + request.rows] for n, a in outputs.items()}
            start += request.rows
            request.started_at, request.finished_at = started, finished
            if not request.future.done():
                request.future.set_result(part)
