"""The Redis engine: the API side of the queue. A transport only; workers run the model.

One job per request: `run` XADDs the whole operation (its name, the model, uint8 clips or codes
packed by service.engine.wire, its parameters) to the jobs stream, then BLPOPs on the job's
reply list until the deadline; a worker (service.worker) runs the operation, sets the result key
(uint8 frames, or codes) and pushes the reply. Redis errors become EngineUnavailable (503), a
full queue EngineBusy (503 with Retry-After), a missed deadline DeadlineExceeded (504).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service import timing
from service.engine import wire
from service.engine.base import (
    DeadlineExceeded,
    Engine,
    EngineBusy,
    EngineUnavailable,
    JobFailed,
    ModelUnavailable,
)
from service.engine.catalogue import discover
from service.engine.keys import GROUP, Keys
from service.engine.ops import Arrays
from service.settings import Settings

log = logging.getLogger(__name__)
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
SPARE_CONNECTIONS = 16  # beyond one per queued job: /ready probes, async-job records

# Check the queue's length and add the job in one step: with XLEN then XADD, concurrent requests
# all saw room and a burst could overshoot QUEUE_MAX by as many requests as were in flight.
# KEYS[1]: the jobs stream; ARGV: the limit, then the entry's fields and values. Returns -1 when
# the job was queued, else the queue's length that refused it.
ENQUEUE_LUA = """
local queued = redis.call('XLEN', KEYS[1])
if queued >= tonumber(ARGV[1]) then return queued end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
return -1
"""


def connect(settings: Settings, read_timeout_s: float) -> aioredis.Redis:
    """A client that fails fast: one immediate retry (a pooled connection a restart killed),
    then the error. `read_timeout_s` must exceed the longest blocking call made on it.

    Each job in flight holds a connection for its BLPOP, and up to QUEUE_MAX jobs are: the pool
    has room for them and a few more, and a command that finds every connection taken waits for
    one (up to a job's deadline) rather than failing. redis-py's default pool (100, failing at
    once) answered the 101st job in flight 503 "Too many connections".
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=settings.QUEUE_MAX + SPARE_CONNECTIONS,
        timeout=settings.REQUEST_TIMEOUT_S,
        socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT_S, socket_timeout=read_timeout_s,
        retry=Retry(NoBackoff(), 1), health_check_interval=10,
    )
    return aioredis.Redis.from_pool(pool)


def redis_address(client: aioredis.Redis) -> str:
    """host:port/db, without credentials, for /ready and logs."""
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


class RedisEngine(Engine):
    def __init__(self, settings: Settings):
        self.settings = settings
        # The API checks what callers send against the manifests; the workers hash and run the
        # graphs, so the API reads no ONNX file.
        self.catalogue = discover(settings)
        self.keys = Keys(settings.REDIS_PREFIX)
        self.redis = connect(settings, settings.REQUEST_TIMEOUT_S + 5.0)
        self.address = redis_address(self.redis)
        self._enqueue = self.redis.register_script(ENQUEUE_LUA)
        self._served: tuple[float, set[str], int] = (-math.inf, set(), 0)  # when, models, workers

    async def start(self) -> None:
        try:
            await self.redis.ping()
        except REDIS_DOWN as error:  # not fatal: /ready says so and requests get 503 until it is up
            log.warning("Redis at %s is not answering (%s); answering 503 until it is",
                        self.address, error)

    async def close(self) -> None:
        await self.redis.aclose()

    async def run(self, operation: str, model: str | None, arrays: Arrays,
                  params: dict) -> Arrays:
        s, keys = self.settings, self.keys
        model = self.resolve(model).name
        job_id = uuid.uuid4().hex
        sent = time.perf_counter()
        deadline_s = time.time() + s.REQUEST_TIMEOUT_S
        payload = wire.pack(arrays, {"params": params})
        try:
            await self._check_served(model)
            queued = await self._enqueue(
                keys=[keys.jobs(model)], args=[s.QUEUE_MAX, "id", job_id, "op", operation,
                                        "model", model, "deadline_ms", int(deadline_s * 1000),
                                        "payload", payload])
            if queued >= 0:
                raise EngineBusy(f"{queued} {model} jobs are queued, the limit is "
                                 f"{s.QUEUE_MAX} (VDIS_QUEUE_MAX); retry later", s.RETRY_AFTER_S)
            reply = await self.redis.blpop([keys.reply(job_id)],
                                           timeout=max(deadline_s - time.time(), 0.01))
            packed = None if reply is None else await self.redis.getdel(keys.result(job_id))
        except REDIS_DOWN as error:
            raise EngineUnavailable(f"Redis at {self.address} is unreachable ({error}); "
                                    "retry when it is back") from error
        if reply is None:
            raise DeadlineExceeded(
                f"no worker answered the {operation} job within {s.REQUEST_TIMEOUT_S:g} s "
                "(VDIS_REQUEST_TIMEOUT_S); it was dropped. The workers are too busy or none "
                "is running")
        if packed is None:  # the reply outlived the result's TTL: only on a badly stalled API
            raise JobFailed(f"the result of {operation} job {job_id} expired before it was read")
        meta, outputs = wire.unpack(packed)
        if meta.get("status") != "ok":
            raise JobFailed(meta.get("detail", "the worker gave no reason"),
                            meta.get("status", "job-failed"))
        # The round trip is queueing (Redis, a worker's wait for a batch) but for the worker's
        # onnxruntime calls, which it reports.
        answered = time.perf_counter()
        model_s = min(float(meta.get("model_s") or 0.0), answered - sent)
        timing.record("queue", sent, answered)
        timing.record("model", answered - model_s, answered)
        return outputs

    async def _check_served(self, model: str) -> None:
        """ModelUnavailable when workers are beating but none serves `model`: its job would
        wait for nobody. With no worker at all the job is queued, for one that starts to take
        (until its deadline), as before several models. The heartbeats are read at most once
        per heartbeat period."""
        checked_s, served, workers = self._served
        if time.monotonic() - checked_s > self.settings.HEARTBEAT_S:
            beats = await self._heartbeats()
            served = {name for beat in beats for name in beat.get("models", {})}
            self._served = checked_s, served, workers = time.monotonic(), served, len(beats)
        if workers and model not in served:
            raise ModelUnavailable(
                f"none of the {workers} live workers serves model {model!r} (they serve "
                f"{sorted(served)}); start one whose VDIS_MODELS_DIR holds it and whose "
                "VDIS_MODELS, if set, names it")

    async def _heartbeats(self) -> list[dict]:
        names = [k async for k in self.redis.scan_iter(self.keys.worker_pattern, count=100)]
        beats = await self.redis.mget(names) if names else []
        return sorted((json.loads(b) for b in beats if b), key=lambda w: w["name"])

    def status(self) -> dict:
        return {"engine": "redis", "redis": self.address}

    async def probe(self) -> dict:
        """Redis reachable, each model's queue and the live workers serving it, their counts."""
        info = {"engine": "redis", "redis": {"address": self.address, "connected": False}}
        names = self.catalogue.names
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.xlen(self.keys.jobs(name))
                    pipe.xpending(self.keys.jobs(name), GROUP)
                pipe.xlen(self.keys.dead)
                *queues, dead = await pipe.execute(raise_on_error=False)
            workers = await self._heartbeats()
        except REDIS_DOWN as error:
            return {"ready": False, "reason": f"Redis at {self.address} is unreachable: {error}",
                    **info}
        models = {}
        for name, length, pending in zip(names, queues[::2], queues[1::2], strict=True):
            pending = 0 if isinstance(pending, ResponseError) else pending["pending"]  # no group
            serving = [w["name"] for w in workers if name in w.get("models", {})]
            models[name] = {"ready": bool(serving), "workers": serving, "queued": length,
                            "pending": pending}
        info["redis"]["connected"] = True
        info["queue"] = {"length": sum(m["queued"] for m in models.values()),
                         "pending": sum(m["pending"] for m in models.values()),
                         "max": self.settings.QUEUE_MAX, "dead_letters": dead}
        info["default_model"] = self.catalogue.default
        info["models"] = models
        info["workers"] = workers
        if not workers:
            return {"ready": False, "reason": "no worker has sent a heartbeat recently "
                    "(start one: python -m service.worker)", **info}
        return {"ready": True, **info}
