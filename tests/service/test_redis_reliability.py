"""Nothing lost: a worker SIGKILLed mid-batch, a poison job, a Redis restart."""

import asyncio
import threading
import time

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine import JobFailed, LocalEngine
from service.engine.keys import GROUP, Keys
from service.engine.manifest import load_manifest
from service.engine.redis_engine import RedisEngine
from tests.service.conftest import make_settings
from tests.service.redisutil import (
    REDIS_URL,
    RedisServer,
    Worker,
    delete_keys,
    free_port,
    unique_prefix,
    wait_for,
)


@pytest.fixture
def prefix():
    name = unique_prefix("reliability")
    yield name
    delete_keys(name)


def codes(model_dir, n: int, frames: int, seed: int = 0):
    m = load_manifest(model_dir)
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, m.appearance_dim)).astype(np.float32),  # (n, F)
            rng.standard_normal((n, frames, m.motion_dim)).astype(np.float32))  # (n, T, Z)


def test_a_worker_killed_mid_batch_loses_nothing(model_dir, prefix, tmp_path):
    """50 decodes in flight; the worker that took them is SIGKILLed before it answers; another
    claims them after CLAIM_IDLE_MS and all 50 get their right answer."""
    settings = make_settings(model_dir, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix,
                             REQUEST_TIMEOUT_S=90)
    keys = Keys(prefix)
    f, z = codes(model_dir, 50, 32)
    worker_settings = {"MAX_BATCH": 64, "MAX_WAIT_MS": 100, "CLAIM_IDLE_MS": 500}
    doomed = None

    async def main():
        nonlocal doomed
        engine = RedisEngine(settings)
        watch = aioredis.Redis.from_url(REDIS_URL)
        await engine.start()
        try:
            calls = [asyncio.create_task(engine.decode(f[i:i + 1], z[i:i + 1]))
                     for i in range(50)]
            while await watch.xlen(keys.jobs) < 50:
                await asyncio.sleep(0.01)
            await watch.xgroup_create(keys.jobs, GROUP, id="0")
            doomed = Worker(model_dir, prefix, "doomed", tmp_path, wait=False, **worker_settings)
            held = 0
            while held == 0:  # the moment it has read the batch and not yet answered
                assert doomed.process.poll() is None, doomed.log.read_text()
                held = (await watch.xpending(keys.jobs, GROUP))["pending"]
                await asyncio.sleep(0.002)
            doomed.process.kill()
            doomed.process.wait()
            pending = await watch.xpending(keys.jobs, GROUP)
            assert pending["pending"] > 0 and not any(c.done() for c in calls)
            rescuer = Worker(model_dir, prefix, "rescuer", tmp_path, wait=False,
                             **worker_settings)
            try:
                answers = await asyncio.wait_for(asyncio.gather(*calls), 90)
                beat = await asyncio.to_thread(rescuer.wait_ready)
            finally:
                rescuer.stop()
            return pending["pending"], answers, beat
        finally:
            await engine.close()
            await watch.aclose()

    lost, answers, beat = asyncio.run(main())
    assert lost == 50  # one batch: all of it was read, none of it answered
    assert beat["counts"]["claimed"] == 50 and beat["counts"]["jobs"] == 50
    assert "claimed" in (tmp_path / "rescuer.log").read_text()

    async def expected():
        local = LocalEngine(make_settings(model_dir))
        await local.start()
        try:
            return await local.decode(f, z)
        finally:
            await local.close()
    np.testing.assert_allclose(np.concatenate(answers).astype(float), asyncio.run(expected()),
                               atol=1)


def test_a_poison_job_is_dead_lettered_with_a_clear_error(model_dir, prefix, tmp_path):
    """A job every worker died on (simulated: read and never acknowledged, three times) goes to
    the dead-letter stream after MAX_DELIVERIES, and its client gets a problem saying so."""
    keys = Keys(prefix)
    settings = make_settings(model_dir, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix)
    f, z = codes(model_dir, 1, 8)
    answers = []
    with TestClient(create_app(settings)) as client:
        body = {"appearance": f[0].tolist(), "motion": z[0].tolist()}
        caller = threading.Thread(target=lambda: answers.append(client.post("/decode",
                                                                             json=body)))
        caller.start()
        with redis.Redis.from_url(REDIS_URL) as r:
            wait_for(lambda: r.exists(keys.jobs), 10, "the job")
            r.xgroup_create(keys.jobs, GROUP, id="0")
            (entry_id, _), = r.xreadgroup(GROUP, "crashed-1", {keys.jobs: ">"})[0][1]
            for crashed in ("crashed-2", "crashed-3"):  # each "dies" holding it
                r.xclaim(keys.jobs, GROUP, crashed, 0, [entry_id])
            worker = Worker(model_dir, prefix, "survivor", tmp_path, CLAIM_IDLE_MS=200,
                            MAX_DELIVERIES=3)
            try:
                caller.join(30)
                dead = r.xrange(keys.dead)
                beat = wait_for(lambda: "dead_lettered" in worker.beat()["counts"] and
                                worker.beat(), 5, "a heartbeat")
            finally:
                worker.stop()
    (answer,) = answers
    assert answer.status_code == 500
    problem = answer.json()
    assert problem["type"] == "/problems/dead-lettered"
    assert "delivered to workers 4 times" in problem["detail"]
    assert keys.dead in problem["detail"]
    assert len(dead) == 1 and dead[0][1][b"deliveries"] == b"4"
    assert beat["counts"]["dead_lettered"] == 1 and beat["counts"].get("jobs", 0) == 0


def test_the_engine_raises_job_failed_for_a_dead_letter(model_dir, prefix):
    """The failure a worker stores reaches the caller as JobFailed, not a hang."""
    from service.engine import wire

    settings = make_settings(model_dir, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix,
                             REQUEST_TIMEOUT_S=10)
    keys = Keys(prefix)

    async def main():
        engine = RedisEngine(settings)
        watch = aioredis.Redis.from_url(REDIS_URL)
        try:
            call = asyncio.create_task(engine.infer("prior", {"x": np.zeros((1, 2), "f4")}))
            while not await watch.exists(keys.jobs):
                await asyncio.sleep(0.01)
            (entry_id, fields), = (await watch.xrange(keys.jobs))
            job_id = fields[b"id"].decode()
            await watch.set(keys.result(job_id), wire.pack({}, {"status": "dead-lettered",
                                                                "detail": "set aside"}))
            await watch.rpush(keys.reply(job_id), b"1")
            with pytest.raises(JobFailed, match="set aside") as error:
                await call
            return error.value.kind
        finally:
            await engine.close()
            await watch.aclose()

    assert asyncio.run(main()) == "dead-lettered"


def test_a_redis_restart_is_survived(model_dir, tmp_path):
    server = RedisServer(free_port(), tmp_path)
    server.start()
    prefix = unique_prefix("restart")
    settings = make_settings(model_dir, REDIS_URL=server.url, REDIS_PREFIX=prefix,
                             REQUEST_TIMEOUT_S=10)
    f, z = codes(model_dir, 1, 8)
    body = {"appearance": f[0].tolist(), "motion": z[0].tolist()}
    worker = Worker(model_dir, prefix, "steady", tmp_path, url=server.url)
    try:
        with TestClient(create_app(settings)) as client:
            assert client.post("/decode?format=npz", json=body).status_code == 200
            server.stop()
            started = time.monotonic()
            down = client.post("/decode?format=npz", json=body)
            assert time.monotonic() - started < 5
            assert down.status_code == 503 and down.headers["retry-after"]
            assert down.json()["type"] == "/problems/engine-unavailable"
            ready = client.get("/ready")
            assert ready.status_code == 503 and "unreachable" in ready.json()["reason"]
            assert client.get("/metrics").status_code == 200
            server.start()
            wait_for(lambda: client.post("/decode?format=npz", json=body).status_code == 200,
                     30, "an answer after the restart", every_s=0.2)
            wait_for(lambda: client.get("/ready").status_code == 200, 10, "ready again")
        log = worker.log.read_text()
        assert "is unreachable" in log and "is back" in log
        assert worker.stop() == 0
    finally:
        worker.stop()
        server.stop()
