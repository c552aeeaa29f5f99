"""The Redis worker: `python -m service.worker` (settings from the same VDIS_* variables).

It serves every model under VDIS_MODELS_DIR (or the one VDIS_MODEL_DIR names; VDIS_MODELS
narrows them), each with its own runner and batcher, loaded at start or on its first job
(VDIS_LOAD). It reads up to MAX_BATCH jobs from those models' job streams (one per model) as
one consumer of the group, waiting at most MAX_WAIT_MS for the batch to fill. A job is one
whole request (encode, decode, swap or generate on uint8 clips or codes); the jobs of a batch
run side by side through the same operations (service.engine.ops), micro-batchers and
onnxruntime runners as the in-process engine, so their rows share one call per model, graph
and shape. It writes each result (uint8 frames, or codes) under its own key with a TTL, wakes
the waiting API request and only then acknowledges. Jobs a dead worker left pending are claimed
after CLAIM_IDLE_MS; a job delivered more than MAX_DELIVERIES times goes to the dead-letter
stream and its client gets the reason. Up to MAX_CONCURRENT_RUNS batches are in flight at once
(the next is read while one runs). SIGTERM finishes the batches in flight, then stops. The
heartbeat lists the models it serves (`models`: loaded or not, memory, queue).

`python -m service.worker --check` is the container's health check: it exits 0 when a worker on
this host has a fresh heartbeat in Redis (the API counts only those), else 1 with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
from redis.exceptions import ResponseError

from service import timing
from service.engine import wire
from service.engine.catalogue import discover
from service.engine.keys import GROUP, Keys
from service.engine.local import LoadedModels, resolve_parallelism
from service.engine.redis_engine import REDIS_DOWN, connect, redis_address
from service.settings import Settings

log = logging.getLogger(__name__)

BLOCK_MS = 1000  # longest wait for new jobs, so a stop request is seen within a second
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0  # reconnecting to Redis
DEAD_LETTERS_KEPT = 10_000  # the dead-letter stream is trimmed to about this many entries


@dataclass
class Job:
    stream: str
    entry_id: bytes
    id: str
    operation: str  # service.engine.ops.OPERATIONS
    model: str
    deadline_ms: int
    arrays: dict[str, np.ndarray]
    params: dict

    @property
    def entry(self) -> tuple[str, bytes]:
        return self.stream, self.entry_id

    @classmethod
    def parse(cls, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Job:
        """A stream entry -> Job; ValueError (WireError) for anything malformed."""
        try:
            job_id, operation = fields[b"id"].decode(), fields[b"op"].decode()
            model = fields[b"model"].decode()
            deadline_ms, payload = int(fields[b"deadline_ms"]), fields[b"payload"]
        except (KeyError, UnicodeDecodeError) as error:
            raise ValueError(f"entry {entry_id!r} lacks a field or is not text: {error}") from error
        meta, arrays = wire.unpack(payload)
        params = meta.get("params", {}) if isinstance(meta, dict) else None
        if not isinstance(params, dict):
            raise ValueError(f"entry {entry_id!r}: the parameters are not an object")
        return cls(stream, entry_id, job_id, operation, model, deadline_ms, arrays, params)


def failure(kind: str, detail: str) -> bytes:
    return wire.pack({}, {"status": kind, "detail": detail})


class Worker:
    def __init__(self, settings: Settings):
        self.settings = settings = resolve_parallelism(settings)
        self.keys = Keys(settings.REDIS_PREFIX)
        self.name = settings.WORKER_NAME or f"{socket.gethostname()}-{os.getpid()}"
        self.catalogue = discover(settings, with_default=False)
        # No wait inside the batchers: the batch was already gathered from Redis, and all its
        # jobs start before the batchers' tasks run, so each step (graph and shape) of the
        # batch's operations becomes onnxruntime calls of up to MAX_BATCH rows, shared among the
        # MAX_CONCURRENT_RUNS calls at once (1 by default).
        self.models = LoadedModels(settings, self.catalogue, 0.0, self._on_batch)
        self.streams = {self.keys.jobs(name): name for name in self.catalogue.names}
        self.redis = connect(settings, BLOCK_MS / 1000.0 + 10.0)
        self.address = redis_address(self.redis)
        self.stopping = asyncio.Event()
        self.counts: Counter[str] = Counter()  # jobs, rows, calls, claimed, expired, ...
        self.batch_rows: Counter[int] = Counter()  # rows in one onnxruntime call -> calls
        self.started_s = time.time()
        self.claim_every_s = min(settings.CLAIM_IDLE_MS / 2000.0, 1.0)
        self._last_claim_s = 0.0
        self._rate = (time.monotonic(), 0)  # (when, rows) at the previous heartbeat
        self.rows_per_s = 0.0
        self._handling: set[asyncio.Task] = set()  # batches being run and answered

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: finishing the batches in flight")
        self.stopping.set()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        self.models.start()
        beat = None
        delay_s, down = BACKOFF_MIN_S, False
        try:
            while not self.stopping.is_set():
                try:
                    if beat is None:
                        await self._create_group()
                        beat = asyncio.create_task(self._heartbeat())
                        log.info("worker %s reading %s on Redis %s", self.name,
                                 list(self.streams), self.address)
                    await self._step()
                    if down:
                        log.info("Redis at %s is back", self.address)
                    delay_s, down = BACKOFF_MIN_S, False
                except REDIS_DOWN as error:
                    log.warning("Redis at %s is unreachable (%s); retrying in %.1f s",
                                self.address, error, delay_s)
                    down = True
                    await self._sleep(delay_s)
                    delay_s = min(delay_s * 2, BACKOFF_MAX_S)
                except ResponseError as error:
                    if "NOGROUP" not in str(error):
                        raise
                    log.warning("the consumer group is gone (Redis restarted?); recreating it")
                    await self._create_group()
        finally:
            # the batches in flight are run and answered before the batcher stops
            await asyncio.gather(*self._handling, return_exceptions=True)
            if beat is not None:
                beat.cancel()
            await self.models.stop()
            try:
                await self.redis.delete(self.keys.worker(self.name))
            except REDIS_DOWN:
                pass
            await self.redis.aclose()
            log.info("worker %s stopped after %d jobs", self.name, self.counts["jobs"])

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _create_group(self) -> None:
        for stream in self.streams:
            try:  # from id 0: jobs queued before the group existed are served too
                await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    async def _step(self) -> None:
        """Read a batch and start running it. As many batches are in flight as onnxruntime calls
        may run at once (MAX_CONCURRENT_RUNS, 1 by default): with more, the next batch is read
        while the current one runs; a finished batch's error is raised here, in the loop.

        Stale jobs are claimed only with no batch of this worker's in flight: its own jobs, if
        a batch ran longer than CLAIM_IDLE_MS, would be claimed again and run twice.
        """
        claim = time.monotonic() - self._last_claim_s >= self.claim_every_s
        if self._handling and (claim or len(self._handling) >= self.settings.MAX_CONCURRENT_RUNS):
            await asyncio.wait(self._handling, return_when=asyncio.ALL_COMPLETED if claim
                               else asyncio.FIRST_COMPLETED)
        for task in [t for t in self._handling if t.done()]:
            self._handling.discard(task)
            task.result()
        entries = []
        if claim:
            self._last_claim_s = time.monotonic()
            entries = await self._claim_stale()
        if not entries:
            entries = await self._read()
        if entries:
            self._handling.add(asyncio.create_task(self._handle(entries)))

    async def _read(self) -> list:
        """Up to MAX_BATCH new entries (stream, id, fields) of any model: block for the first,
        then wait MAX_WAIT_MS for more."""
        s = self.settings
        block_ms = max(1, min(BLOCK_MS, int(self.claim_every_s * 1000)))
        entries = await self._xread(s.MAX_BATCH, block_ms)
        deadline = time.monotonic() + s.MAX_WAIT_MS / 1000.0
        while entries and len(entries) < s.MAX_BATCH:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms < 1:  # BLOCK 0 would wait forever
                break
            more = await self._xread(s.MAX_BATCH - len(entries), left_ms)
            if not more:
                break
            entries += more
        return entries

    async def _xread(self, count: int, block_ms: int) -> list:
        found = await self.redis.xreadgroup(GROUP, self.name, dict.fromkeys(self.streams, ">"),
                                            count=count, block=block_ms)
        entries = [(stream.decode(), entry_id, fields) for stream, read in found or []
                   for entry_id, fields in read]
        return entries[:count]  # COUNT is per stream; the rest stay pending, claimed later

    async def _claim_stale(self) -> list:
        """Entries (stream, id, fields) other consumers left unacknowledged for CLAIM_IDLE_MS
        (they died), up to MAX_BATCH, the streams in turn."""
        entries: list = []
        for stream in self.streams:
            if len(entries) < self.settings.MAX_BATCH:
                entries += await self._claim_stale_of(stream,
                                                      self.settings.MAX_BATCH - len(entries))
        return entries

    async def _claim_stale_of(self, jobs: str, count: int) -> list:
        s = self.settings
        _, claimed, deleted = await self.redis.xautoclaim(
            jobs, GROUP, self.name, min_idle_time=s.CLAIM_IDLE_MS, start_id="0-0",
            count=count)
        if deleted:
            await self.redis.xack(jobs, GROUP, *deleted)
        if not claimed:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in claimed:
                pipe.xpending_range(jobs, GROUP, min=entry_id, max=entry_id, count=1)
            pending = await pipe.execute()
        self.counts["claimed"] += len(claimed)
        log.warning("claimed %d jobs left pending for over %d ms by a stopped worker",
                    len(claimed), s.CLAIM_IDLE_MS)
        keep, poison = [], []
        for (entry_id, fields), info in zip(claimed, pending, strict=True):
            deliveries = info[0]["times_delivered"] if info else 1
            (poison if deliveries > s.MAX_DELIVERIES else keep).append(
                (jobs, entry_id, fields, deliveries))
        if poison:
            await self._dead_letter(poison)
        return [(stream, entry_id, fields) for stream, entry_id, fields, _ in keep]

    # -- answering --------------------------------------------------------------------------

    async def _handle(self, entries: list) -> None:
        now_ms = time.time() * 1000.0
        # (stream, entry id) -> (job id, packed answer)
        answers: dict[tuple[str, bytes], tuple[str, bytes]] = {}
        dropped: list[tuple[str, bytes]] = []
        jobs: list[Job] = []
        for stream, entry_id, fields in entries:
            try:
                job = Job.parse(stream, entry_id, fields)
                if job.model != self.streams[stream]:
                    raise ValueError(f"a job of model {job.model!r} in the stream of "
                                     f"{self.streams[stream]!r}")
            except ValueError as error:
                job_id = fields.get(b"id", b"").decode(errors="replace")
                self._refuse(answers, dropped, (stream, entry_id), job_id, error)
                continue
            if job.deadline_ms < now_ms:  # its client has had its 504: computing it helps nobody
                self.counts["expired"] += 1
                dropped.append(job.entry)
                continue
            jobs.append(job)
        outputs = await asyncio.gather(*(self._submit(j) for j in jobs), return_exceptions=True)
        for job, out in zip(jobs, outputs, strict=True):
            meta = {"status": "ok", "worker": self.name}
            if isinstance(out, ValueError):  # the job's arrays or parameters, checked first
                self._refuse(answers, dropped, job.entry, job.id, out)
                continue
            if isinstance(out, BaseException):
                out = await self._run_alone(job, out)
            else:
                out, meta["model_s"] = out
            answers[job.entry] = (job.id, out if isinstance(out, bytes) else wire.pack(out, meta))
        self.counts["jobs"] += len(jobs)
        await self._answer(answers, dropped)

    def _refuse(self, answers: dict, dropped: list, entry: tuple[str, bytes], job_id: str,
                error: ValueError) -> None:
        """A malformed job: its client (if it has an id) gets the reason, nothing runs."""
        log.warning("job %s refused: %s", job_id or entry, error)
        self.counts["failed"] += 1
        if job_id:
            answers[entry] = (job_id, failure("job-failed", f"bad job: {error}"))
        else:
            dropped.append(entry)

    async def _submit(self, job: Job) -> tuple[dict, float]:
        """The job's outputs, and the seconds its onnxruntime calls ran (the API's
        Server-Timing `model`)."""
        intervals = timing.begin()  # this task's own context: only this job's intervals
        model = await self.models.get(job.model)  # loaded now if VDIS_LOAD=lazy
        outputs = await model.operations.run(job.operation, job.arrays, job.params)
        return outputs, timing.total(intervals, "model")

    async def _run_alone(self, job: Job, error: Exception) -> dict | bytes:
        """A failed batch may have failed for one job: retry each alone to find which."""
        try:
            model = await self.models.get(job.model)
            return await model.alone.run(job.operation, job.arrays, job.params)
        except Exception as alone:  # the model's own error, stored as this job's result
            log.exception("job %s (%s) failed: %s (in its batch: %s)", job.id, job.operation,
                          alone, error)
            self.counts["failed"] += 1
            return failure("job-failed", f"the model failed on this {job.operation} job: "
                           f"{alone}")

    async def _answer(self, answers: dict[tuple[str, bytes], tuple[str, bytes]],
                      dropped: list[tuple[str, bytes]]):
        """Results under their own keys, then the wake-ups, then XACK + XDEL, in one MULTI."""
        ttl_s = self.settings.RESULT_TTL_S
        done: dict[str, list[bytes]] = {}  # stream -> its entries answered or dropped
        for stream, entry_id in [*answers, *dropped]:
            done.setdefault(stream, []).append(entry_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for job_id, packed in answers.values():
                pipe.set(self.keys.result(job_id), packed, ex=ttl_s)
                pipe.rpush(self.keys.reply(job_id), b"1")
                pipe.expire(self.keys.reply(job_id), ttl_s)
            for stream, entry_ids in done.items():
                pipe.xack(stream, GROUP, *entry_ids)
                pipe.xdel(stream, *entry_ids)  # the payload is not kept once answered
            await pipe.execute()

    async def _dead_letter(self, poison: list) -> None:
        answers = {}
        for stream, entry_id, fields, deliveries in poison:
            job_id = fields.get(b"id", b"").decode(errors="replace")
            operation = fields.get(b"op", b"?").decode(errors="replace")
            detail = (f"the {operation} job was delivered to workers {deliveries} times and never "
                      f"finished (each stopped while running it, VDIS_MAX_DELIVERIES="
                      f"{self.settings.MAX_DELIVERIES}); it is kept in the dead-letter stream "
                      f"{self.keys.dead} as job {job_id}")
            log.error("dead-lettering job %s after %d deliveries", job_id, deliveries)
            await self.redis.xadd(self.keys.dead, {**fields, b"deliveries": deliveries,
                                                   b"entry_id": entry_id, b"worker": self.name},
                                  maxlen=DEAD_LETTERS_KEPT, approximate=True)
            if job_id:
                answers[stream, entry_id] = (job_id, failure("dead-lettered", detail))
            self.counts["dead_lettered"] += 1
        await self._answer(answers, [(stream, entry_id) for stream, entry_id, *_ in poison
                                     if (stream, entry_id) not in answers])

    # -- heartbeat and counts ---------------------------------------------------------------

    def _on_batch(self, model: str, graph: str, rows: int, waits_s: list[float],
                  run_s: float) -> None:
        self.batch_rows[rows] += 1
        self.counts["calls"] += 1
        self.counts["rows"] += rows

    def snapshot(self) -> dict:
        now = time.monotonic()
        when, rows = self._rate
        if now - when > 0.1:
            self.rows_per_s = (self.counts["rows"] - rows) / (now - when)
            self._rate = (now, self.counts["rows"])
        models = self.models.status()
        runner = next((m for m in models.values() if m["loaded"]), {})  # the same for all
        shared = {k: runner[k] for k in ("provider", "device", "device_name", "intra_op_threads")
                  if k in runner}
        return {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(),
                "models": models, **shared, "load": self.settings.LOAD,
                "started_s": self.started_s, "beat_s": time.time(),
                "max_batch": self.settings.MAX_BATCH,
                "concurrent_runs": self.settings.MAX_CONCURRENT_RUNS,
                "rows_per_s": round(self.rows_per_s, 2),
                "counts": dict(self.counts),
                "batch_rows": {str(k): v for k, v in sorted(self.batch_rows.items())}}

    async def _heartbeat(self) -> None:
        ttl_s = max(1, math.ceil(3 * self.settings.HEARTBEAT_S))
        while True:
            try:
                await self.redis.set(self.keys.worker(self.name), json.dumps(self.snapshot()),
                                     ex=ttl_s)
            except REDIS_DOWN:
                pass  # the main loop logs and backs off
            await asyncio.sleep(self.settings.HEARTBEAT_S)


async def serve(settings: Settings) -> None:
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()


def check(settings: Settings) -> str:
    """The fresh heartbeat of a worker on this host (its name), or RuntimeError saying why not.

    Fresh: beaten within 3 HEARTBEAT_S, which is also how long the key lives.
    """
    import redis

    keys, host = Keys(settings.REDIS_PREFIX), socket.gethostname()
    try:
        with redis.Redis.from_url(settings.REDIS_URL,
                                  socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT_S,
                                  socket_timeout=settings.REDIS_CONNECT_TIMEOUT_S) as client:
            names = list(client.scan_iter(keys.worker_pattern, count=100))
            beats = [json.loads(b) for b in client.mget(names) if b] if names else []
    except REDIS_DOWN as error:
        raise RuntimeError(f"Redis at {settings.REDIS_URL} is unreachable: {error}") from error
    oldest_s = time.time() - 3 * settings.HEARTBEAT_S
    fresh = [b["name"] for b in beats if b.get("host") == host and b["beat_s"] >= oldest_s]
    if not fresh:
        raise RuntimeError(f"no worker on host {host} has beaten in the last "
                           f"{3 * settings.HEARTBEAT_S:g} s under {keys.worker_pattern}")
    return fresh[0]


def main(health_check: bool = False) -> None:
    """Run a worker (or, with `health_check`, exit 0/1 on this host's heartbeat) from VDIS_*."""
    logging.basicConfig(level=os.environ.get("VDIS_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if not settings.REDIS_URL:
        sys.exit("VDIS_REDIS_URL is not set: a worker needs the Redis the API queues jobs on")
    if health_check:
        try:
            print(f"worker {check(settings)} is beating")
        except RuntimeError as error:
            sys.exit(f"unhealthy: {error}")
        return
    asyncio.run(serve(settings))


def cli(argv: list[str] | None = None) -> None:
    """`python -m service.worker [--check]` (`vdis worker` calls main() with its own options)."""
    parser = argparse.ArgumentParser(prog="python -m service.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="exit 0 if a worker on this host is beating, else 1 (health check)")
    main(health_check=parser.parse_args(argv).check)


if __name__ == "__main__":
    cli()
