"""Async HTTP jobs (`POST ...?async=true`): the request runs in the background and its whole
answer (status, media type, body) is kept for `GET /jobs/{id}`.

With the Redis engine the answers live in Redis, so any API process can serve the GET; with the
in-process engine they live in this process's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.problems import problem_response
from service.engine import Engine, EngineUnavailable
from service.engine.redis_engine import REDIS_DOWN, RedisEngine

log = logging.getLogger(__name__)
ASYNC_PATHS = ("/encode", "/decode", "/swap", "/generate")
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


def build_store(engine: Engine, ttl_s: int) -> JobStore:
    if isinstance(engine, RedisEngine):
        return RedisJobStore(engine, ttl_s)
    return MemoryJobStore(ttl_s)


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
    return (request.method == "POST" and request.url.path in ASYNC_PATHS
            and request.query_params.get("async", "").lower() in ("true", "1"))


async def submit(request: Request) -> Response:
    """202 with the job's URL; the request itself runs in the background, without `async`."""
    app: FastAPI = request.app
    job_id = uuid.uuid4().hex
    url = f"/jobs/{job_id}"
    body = await request.body()
    try:
        await app.state.jobs.put(job_id, {"status": "queued"})
    except EngineUnavailable as error:
        return problem_response("engine-unavailable", str(error), request.url.path)
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "async"]
    headers = [(k, v) for k, v in request.headers.items()
               if k.lower() not in ("content-length", "host")]
    task = asyncio.create_task(_run(app, job_id, request.url.path, query, headers, body))
    app.state.async_tasks.add(task)
    task.add_done_callback(app.state.async_tasks.discard)
    return JSONResponse({"id": job_id, "status": "queued", "url": url}, status_code=202,
                        headers={"Location": url})


async def _run(app: FastAPI, job_id: str, path: str, query: list, headers: list,
               body: bytes) -> None:
    store: JobStore = app.state.jobs
    # The app answers its own request in-process: every route, limit and error mapping applies.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        await store.put(job_id, {"status": "running"})
        async with httpx.AsyncClient(transport=transport, base_url="http://vdis.internal",
                                     timeout=None) as client:
            answer = await client.post(path, params=query, headers=headers, content=body)
        kept = {k: v for k, v in answer.headers.items()
                if k in KEPT_HEADERS or k.startswith("x-vdis-")}
        await store.put(job_id, {"status": "done", "code": answer.status_code, "headers": kept},
                        answer.content)
    except EngineUnavailable:
        log.warning("async job %s: Redis went away; its answer is lost", job_id)
    except Exception:
        log.exception("async job %s failed", job_id)
