"""Async jobs with the Redis engine live in Redis, not in the API process that accepted them:
kill that process (SIGKILL, mid-job) and start another, and the job is still answered; a
job's failure is kept as its answer. Real API subprocesses, a real worker, a real Redis."""

import io
import json
import signal

import httpx
import numpy as np
import redis

from service.engine.keys import Keys
from tests.service.redisutil import REDIS_URL, Api, Worker, delete_keys, unique_prefix, wait_for


def status(api: Api, url: str) -> httpx.Response:
    return httpx.get(api.url + url, timeout=5)


def test_an_accepted_job_outlives_the_api_process_that_accepted_it(model_dir, mp4, tmp_path):
    prefix = unique_prefix("durable")
    keys = Keys(prefix)
    apis, worker = [], None
    try:
        first = Api(model_dir, prefix, tmp_path, ASYNC_CLAIM_IDLE_S=2)
        apis.append(first)
        first.wait_ready()
        files = {"video": ("a.mp4", mp4, "video/mp4")}
        accepted = httpx.post(f"{first.url}/generate?async=true&format=npz&n=2&seed=4",
                              files=files, timeout=30)
        assert accepted.status_code == 202, accepted.text
        url = accepted.json()["url"]
        # no worker is running: the first API takes the job and waits for the model
        wait_for(lambda: status(first, url).json()["status"] == "running", 20, "job running")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        with redis.Redis.from_url(REDIS_URL) as r:
            assert r.xlen(keys.async_requests) == 1  # still there, unacknowledged

        second = Api(model_dir, prefix, tmp_path, ASYNC_CLAIM_IDLE_S=2)
        apis.append(second)
        second.wait_ready()
        worker = Worker(model_dir, prefix, "w1", tmp_path)
        worker.wait_ready()

        def answered():
            r = status(second, url)
            return r if r.headers["content-type"] == "application/x-npz" else None
        result = wait_for(answered, 90, "the job, taken over by the second API")
        assert result.status_code == 200 and result.headers["x-vdis-job-status"] == "done"
        videos = np.load(io.BytesIO(result.content))["videos"]
        assert videos.shape[:2] == (2, 8) and videos.dtype == np.uint8
        with redis.Redis.from_url(REDIS_URL) as r:
            assert r.xlen(keys.async_requests) == 0  # answered, acknowledged and deleted

        # a failure is the job's answer: its problem+json, status failed
        failed = httpx.post(f"{second.url}/decode?async=true", timeout=10,
                            json={"appearance": [1.0], "motion": [[1.0]]})
        problem = wait_for(lambda: (r := status(second, failed.json()["url"])).headers.get(
            "x-vdis-job-status") and r, 30, "the failed job")
        assert problem.status_code == 422 and problem.headers["x-vdis-job-status"] == "failed"
        assert problem.json()["type"] == "/problems/invalid-codes"
    finally:
        for api in apis:
            if api.process.poll() is None:
                api.stop()
        if worker is not None:
            worker.stop()
        delete_keys(prefix)


def test_a_503_is_not_kept_as_an_async_jobs_answer_it_is_retried():
    """Redis away for a moment (or the queue full) makes the request itself answer 503: the
    job stays queued and is run again once its claim is stale, instead of keeping the 503."""
    import asyncio

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from redis import asyncio as aioredis

    from service.jobs import RedisRunner

    calls = []
    app = FastAPI()

    @app.post("/encode")
    async def flaky() -> JSONResponse:
        calls.append(1)
        if len(calls) == 1:
            return JSONResponse({"type": "/problems/engine-unavailable"}, status_code=503)
        return JSONResponse({"ok": True})

    prefix = unique_prefix("retry503")

    class Transport:  # what RedisRunner takes from a RedisEngine
        redis = aioredis.Redis.from_url(REDIS_URL)
        keys = Keys(prefix)
        address = REDIS_URL

    async def main():
        runner = RedisRunner(Transport, ttl_s=60, claim_idle_s=0.3, concurrency=2)
        await runner.start(app)
        try:
            await runner.accept("job1", "/encode", [], [], b"")
            for _ in range(200):
                record = await runner.store.get("job1")
                if record and record[0]["status"] == "done":
                    return record
                await asyncio.sleep(0.05)
            raise AssertionError(f"not answered: {record}")
        finally:
            await runner.close()
            await Transport.redis.aclose()
    try:
        state, body = asyncio.run(main())
        assert state["code"] == 200 and json.loads(body) == {"ok": True} and len(calls) == 2
    finally:
        delete_keys(prefix)
