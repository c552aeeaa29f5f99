"""Async HTTP jobs (`POST ...?async=true`): the request runs in the background and its whole
answer (status, media type, body) is kept for `GET /jobs/{id}`.

With the Redis engine the accepted requests and their answers live in Redis: any API process
can serve the GET, and a request whose process died is taken over by another (RedisRunner).
With the in-process engine they live in this process's memory and die with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from redis.exceptions import ResponseError
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.guard import is_keyed, route_of
from service.api.problems import problem_response
from service.engine import Engine, EngineUnavailable
from service.engine.keys import ASYNC_GROUP
from service.engine.redis_engine import REDIS_DOWN, RedisEngine

log = logging.getLogger(__name__)
KEPT_HEADERS = ("content-type",)  # and every X-Vdis-* header
Record = tuple[dict, bytes]  # ({"status", and once done "code", "headers"}, body)


class JobStore(ABC):
    @abstractmethod
    async def put(self, job_id: str, state: dict, body: bytes = b"") -> None: ...

    @abstractmethod
    async def get(self, job_id: str) -> Record | None: ...


class MemoryJobStore(JobStore):
    def __init__(self, ttl_s: int):
        self.ttl_s = ttl_s
        self.records: dict[str, tuple[float, dict, bytes]] = {}

    async def put(self, job_id: str, state: dict, body: bytes = b"") -> None:
        now = time.monotonic()
        self.records = {k: v for k, v in self.records.items() if v[0] > now}
        self.records[job_id] = (now + self.ttl_s, state, body)

    async def get(self, job_id: str) -> Record | None:
        expires, state, body = self.records.get(job_id, (0.0, {}, b""))
        return (state, body) if expires > time.monotonic() else None


class RedisJobStore(JobStore):
    def __init__(self, engine: RedisEngine, ttl_s: int):
        self.redis, self.keys, self.ttl_s = engine.redis, engine.keys, ttl_s
        self.address = engine.address

    async def put(self, job_id: str, state: dict, body: bytes = b"") -> None:
        key = self.keys.async_job(job_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"state": json.dumps(state), "body": body})
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
        except REDIS_DOWN as error:
            raise EngineUnavailable(f"Redis at {self.address} is unreachable ({error})") from error

    async def get(self, job_id: str) -> Record | None:
        try:
            record = await self.redis.hgetall(self.keys.async_job(job_id))
        except REDIS_DOWN as error:
            raise EngineUnavailable(f"Redis at {self.address} is unreachable ({error})") from error
        return (json.loads(record[b"state"]), record[b"body"]) if record else None


class AsyncJobs:
    """ASGI middleware: a POST with `?async=true` is answered 202 at once and runs in the
    background (`submit`); every other request goes through."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            if wants_async(request):
                await (await submit(request))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def wants_async(request: Request) -> bool:
    """A POST with `?async=true` to a keyed route (the model operations: the routes a key
    protects are the ones worth a job)."""
    return (request.method == "POST"
            and request.query_params.get("async", "").lower() in ("true", "1")
            and is_keyed(route_of(request.app.router.routes, request.scope)))


async def submit(request: Request) -> Response:
    """202 with the job's URL; the request itself runs in the background, without `async`."""
    runner: AsyncRunner = request.app.state.async_runner
    job_id = uuid.uuid4().hex
    url = f"/jobs/{job_id}"
    body = await request.body()
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "async"]
    headers = [(k, v) for k, v in request.headers.items()
               if k.lower() not in ("content-length", "host")]
    try:
        await runner.accept(job_id, request.url.path, query, headers, body)
    except EngineUnavailable as error:
        return problem_response("engine-unavailable", str(error), request.url.path)
    return JSONResponse({"id": job_id, "status": "queued", "url": url}, status_code=202,
                        headers={"Location": url})


async def answer_in_process(app: ASGIApp, path: str, query: list, headers: list,
                            body: bytes) -> tuple[dict, bytes]:
    """The app answers a request in-process: every route, limit and error mapping applies.

    Returns the record to keep: status "done" (a 2xx) or "failed" (the request's own
    problem+json, e.g. a 422), with the answer's code and headers; an error the app did not
    map is a "failed" 500 problem, never dropped.
    """
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://vdis.internal",
                                 timeout=None) as client:
        answer = await client.post(path, params=query, headers=headers, content=body)
    kept = {k: v for k, v in answer.headers.items()
            if k in KEPT_HEADERS or k.startswith("x-vdis-")}
    status = "done" if answer.status_code < 400 else "failed"
    return {"status": status, "code": answer.status_code, "headers": kept}, answer.content


def _failure(detail: str, path: str) -> tuple[dict, bytes]:
    problem = problem_response("internal-error", detail, path)
    return ({"status": "failed", "code": problem.status_code,
             "headers": {"content-type": problem.media_type}}, problem.body)


class AsyncRunner(ABC):
    """Where accepted async requests wait and which process answers them."""

    store: JobStore

    @abstractmethod
    async def accept(self, job_id: str, path: str, query: list, headers: list,
                     body: bytes) -> None: ...

    async def start(self, app: ASGIApp) -> None:
        self.app = app

    @abstractmethod
    async def close(self) -> None: ...


class InProcessRunner(AsyncRunner):
    """The in-process engine: the request runs as a task of this process (gone if it dies)."""

    def __init__(self, ttl_s: int):
        self.store = MemoryJobStore(ttl_s)
        self.tasks: set[asyncio.Task] = set()

    async def accept(self, job_id, path, query, headers, body) -> None:
        await self.store.put(job_id, {"status": "queued"})
        task = asyncio.create_task(self._run(job_id, path, query, headers, body))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, job_id, path, query, headers, body) -> None:
        await self.store.put(job_id, {"status": "running"})
        try:
            state, answer = await answer_in_process(self.app, path, query, headers, body)
        except Exception as error:  # stored as the job's answer, not dropped
            log.exception("async job %s failed", job_id)
            state, answer = _failure(f"the job failed: {error}", path)
        await self.store.put(job_id, state, answer)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class RedisRunner(AsyncRunner):
    """The Redis engine: an accepted request is an entry of a Redis stream until it is answered.

    Every API process reads the stream as one consumer group (ASYNC_GROUP) and answers up to
    `concurrency` requests at once. While it runs one it renews its claim; an entry whose claim
    has not been renewed for `claim_idle_s` (its process died) is taken over by another
    process (XAUTOCLAIM) and run again from the start. Answers, failures included, go to the
    job's hash; the entry is then acknowledged and deleted. A request that has been started
    `max_attempts` times without an answer (it keeps killing its process) is failed.
    """

    def __init__(self, engine: RedisEngine, ttl_s: int, claim_idle_s: float, concurrency: int,
                 max_attempts: int = 3):
        self.store = RedisJobStore(engine, ttl_s)
        self.redis, self.keys, self.address = engine.redis, engine.keys, engine.address
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.concurrency, self.max_attempts = concurrency, max_attempts
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.loop: asyncio.Task | None = None
        self.tasks: set[asyncio.Task] = set()

    async def accept(self, job_id, path, query, headers, body) -> None:
        fields = {"id": job_id, "path": path, "query": json.dumps(query),
                  "headers": json.dumps(headers), "body": body}
        key = self.keys.async_job(job_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"state": json.dumps({"status": "queued"}), "body": b""})
                pipe.expire(key, self.store.ttl_s)
                pipe.xadd(self.keys.async_requests, fields)
                await pipe.execute()
        except REDIS_DOWN as error:
            raise EngineUnavailable(f"Redis at {self.address} is unreachable ({error})") from error

    async def start(self, app: ASGIApp) -> None:
        await super().start(app)
        self.loop = asyncio.create_task(self._serve())

    async def close(self) -> None:
        # What is running stays unacknowledged in Redis: another process takes it over.
        for task in [self.loop, *self.tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [self.loop, *self.tasks] if t is not None],
                             return_exceptions=True)

    async def _serve(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        grouped = False
        while True:
            await slots.acquire()
            try:
                if not grouped:
                    grouped = await self._ensure_group()
                entry = await self._next() if grouped else None
            except REDIS_DOWN as error:
                log.warning("async requests: Redis at %s is unreachable (%s)", self.address, error)
                entry = None
                await asyncio.sleep(1.0)
            if entry is None:
                slots.release()
                continue
            task = asyncio.create_task(self._handle(*entry))
            self.tasks.add(task)
            task.add_done_callback(lambda t: (self.tasks.discard(t), slots.release()))

    async def _ensure_group(self) -> bool:
        try:
            await self.redis.xgroup_create(self.keys.async_requests, ASYNC_GROUP, id="0",
                                           mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        return True

    async def _next(self) -> tuple[bytes, dict] | None:
        """A request another process left (claim not renewed), else a new one, else None."""
        stream = self.keys.async_requests
        _, claimed, _ = await self.redis.xautoclaim(stream, ASYNC_GROUP, self.consumer,
                                                    self.claim_idle_ms, "0-0", count=1)
        if claimed:
            return claimed[0]
        read = await self.redis.xreadgroup(ASYNC_GROUP, self.consumer, {stream: ">"}, count=1,
                                           block=1000)
        return read[0][1][0] if read and read[0][1] else None

    async def _handle(self, entry_id: bytes, fields: dict) -> None:
        job_id = fields[b"id"].decode()
        path = fields[b"path"].decode()
        key = self.keys.async_job(job_id)
        renew = asyncio.create_task(self._renew(entry_id))
        try:
            attempts = await self.redis.hincrby(key, "attempts", 1)
            if attempts > self.max_attempts:
                state, answer = _failure(f"the job was started {attempts - 1} times and its "
                                         "process stopped each time; send it again", path)
            else:
                await self.store.put(job_id, {"status": "running"})
                try:
                    state, answer = await answer_in_process(
                        self.app, path, json.loads(fields[b"query"]),
                        json.loads(fields[b"headers"]), fields[b"body"])
                except EngineUnavailable:
                    raise  # Redis went away: the entry stays pending and is taken over
                except Exception as error:  # stored as the job's answer, not dropped
                    log.exception("async job %s failed", job_id)
                    state, answer = _failure(f"the job failed: {error}", path)
                if state["code"] == 503:  # Redis was away or the queue full: not an answer
                    await self.redis.hincrby(key, "attempts", -1)
                    await self.store.put(job_id, {"status": "queued"})
                    log.warning("async job %s: 503 (%s); it stays queued and is retried",
                                job_id, answer[:200])
                    return  # left pending: taken again once its claim is stale
            await self.store.put(job_id, state, answer)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xack(self.keys.async_requests, ASYNC_GROUP, entry_id)
                pipe.xdel(self.keys.async_requests, entry_id)
                await pipe.execute()
        except (EngineUnavailable, *REDIS_DOWN) as error:
            log.warning("async job %s: Redis went away (%s); it stays queued", job_id, error)
        finally:
            renew.cancel()

    async def _renew(self, entry_id: bytes) -> None:
        """Keep this process's claim on a running request fresh, so nobody takes it over."""
        while True:
            await asyncio.sleep(self.claim_idle_ms / 3000)
            try:
                await self.redis.xclaim(self.keys.async_requests, ASYNC_GROUP, self.consumer,
                                        0, [entry_id], justid=True)
            except REDIS_DOWN:
                pass


def build_runner(engine: Engine, settings) -> AsyncRunner:
    if isinstance(engine, RedisEngine):
        return RedisRunner(engine, settings.ASYNC_RESULT_TTL_S, settings.ASYNC_CLAIM_IDLE_S,
                           settings.ASYNC_CONCURRENCY)
    return InProcessRunner(settings.ASYNC_RESULT_TTL_S)
