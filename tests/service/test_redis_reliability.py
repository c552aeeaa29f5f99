"""Nothing lost, nothing answered wrongly: a worker SIGKILLed mid-batch, a poison job, a Redis
restart (alone and under load), a full queue under load. Every client gets its right answer or a
clear error (503 with Retry-After, 504, a dead-letter 500), never a hang or someone else's."""

import asyncio
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine import JobFailed
from service.engine.keys import GROUP, Keys
from service.engine.manifest import load_manifest
from service.engine.redis_engine import RedisEngine
from tests.service.conftest import make_settings
from tests.service.redisutil import (
    REDIS_URL,
    Api,
    RedisServer,
    Worker,
    delete_keys,
    free_port,
    local_decode,
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
    claims them after CLAIM_IDLE_MS and all 50 get their right answer.

    The doomed worker reads all 50 at once and then waits up to 8 s for its batch of 64 to fill
    (MAX_WAIT_MS), so it holds them unanswered for far longer than this test can be delayed on
    a loaded machine: the kill always lands mid-batch. (With a 100 ms wait it could answer
    before a descheduled test looked, and the test then waited forever.)"""
    settings = make_settings(model_dir, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix,
                             REQUEST_TIMEOUT_S=90)
    keys = Keys(prefix)
    jobs = keys.jobs(load_manifest(model_dir).name)  # the model's stream
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
            while await watch.xlen(jobs) < 50:
                await asyncio.sleep(0.01)
            await watch.xgroup_create(jobs, GROUP, id="0")
            doomed = Worker(model_dir, prefix, "doomed", tmp_path, wait=False,
                            **{**worker_settings, "MAX_WAIT_MS": 8000})
            held, deadline = 0, time.monotonic() + 60
            while held < 50:  # it has read the whole batch, and waits for more before running
                assert doomed.process.poll() is None, doomed.log.read_text()
                assert time.monotonic() < deadline, "the doomed worker never read the jobs"
                held = (await watch.xpending(jobs, GROUP))["pending"]
                await asyncio.sleep(0.01)
            doomed.process.kill()
            doomed.process.wait()
            pending = await watch.xpending(jobs, GROUP)
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
    np.testing.assert_allclose(np.concatenate(answers).astype(float),
                               local_decode(model_dir, f, z), atol=1)


def test_a_poison_job_is_dead_lettered_with_a_clear_error(model_dir, prefix, tmp_path):
    """A job every worker died on (simulated: read and never acknowledged, three times) goes to
    the dead-letter stream after MAX_DELIVERIES, and its client gets a problem saying so."""
    keys = Keys(prefix)
    jobs = keys.jobs(load_manifest(model_dir).name)  # the model's stream
    settings = make_settings(model_dir, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix)
    f, z = codes(model_dir, 1, 8)
    answers = []
    with TestClient(create_app(settings)) as client:
        body = {"appearance": f[0].tolist(), "motion": z[0].tolist()}
        caller = threading.Thread(target=lambda: answers.append(client.post("/decode",
                                                                             json=body)))
        caller.start()
        with redis.Redis.from_url(REDIS_URL) as r:
            wait_for(lambda: r.exists(jobs), 10, "the job")
            r.xgroup_create(jobs, GROUP, id="0")
            (entry_id, _), = r.xreadgroup(GROUP, "crashed-1", {jobs: ">"})[0][1]
            for crashed in ("crashed-2", "crashed-3"):  # each "dies" holding it
                r.xclaim(jobs, GROUP, crashed, 0, [entry_id])
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
    jobs = keys.jobs(load_manifest(model_dir).name)  # the model's stream
    f, z = codes(model_dir, 1, 8)

    async def main():
        engine = RedisEngine(settings)
        watch = aioredis.Redis.from_url(REDIS_URL)
        try:
            call = asyncio.create_task(engine.decode(f, z))
            while not await watch.exists(jobs):
                await asyncio.sleep(0.01)
            (entry_id, fields), = (await watch.xrange(jobs))
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


# ---------------------------------------------------------------------------------------------
# Under load: many clients through a real API process (uvicorn) while the fault happens


class Clients:
    """`threads` clients sending /decode of random codes (body i of n) to `url` in a loop until
    stopped; every answer is kept with the body it answers."""

    def __init__(self, url: str, f: np.ndarray, z: np.ndarray, threads: int = 8):
        self.url, self.f, self.z = url, f, z
        self.answers: list[tuple[int, httpx.Response | Exception]] = []
        self.stopping = threading.Event()
        self.http = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=threads))
        self.threads = [threading.Thread(target=self._loop, args=(k,)) for k in range(threads)]

    def _loop(self, k: int) -> None:
        i = k
        while not self.stopping.is_set():
            self.answers.append((i % len(self.f), self.send(i % len(self.f))))
            i += len(self.threads)

    def send(self, i: int) -> httpx.Response | Exception:
        body = {"appearance": self.f[i].tolist(), "motion": self.z[i].tolist()}
        try:
            return self.http.post(f"{self.url}/decode?format=npz", json=body)
        except httpx.HTTPError as error:  # no answer at all: a failure of the test
            return error

    def wait_for_ok(self, after: int, timeout_s: float, what: str) -> None:
        wait_for(lambda: any(not isinstance(r, Exception) and r.status_code == 200
                             for _, r in self.answers[after:]), timeout_s, what)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(90)
        self.http.close()


def judge(answers, expected: np.ndarray, errors: dict[int, str]) -> dict[str, int]:
    """Each answer is the right video or one of the clear `errors` (status -> problem type, with
    Retry-After on a 503); returns the counts by outcome."""
    counts: dict[str, int] = {}
    for i, r in answers:
        assert not isinstance(r, Exception), f"no answer: {r!r}"
        if r.status_code == 200:
            video = np.load(io.BytesIO(r.content))["videos"][0]
            np.testing.assert_allclose(video.astype(float), expected[i], atol=1)
            outcome = "200 right video"
        else:
            assert r.status_code in errors, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"] == errors[r.status_code], r.text
            assert r.status_code != 503 or r.headers["retry-after"], r.headers
            outcome = f"{r.status_code} {errors[r.status_code]}"
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def test_a_redis_restart_under_load_answers_every_client(model_dir, tmp_path):
    """8 clients keep decoding while Redis is stopped and started again (losing every queued
    job, no persistence): each request gets its own right video, a 503 engine-unavailable or,
    for a job lost in the restart, a 504; after the restart, right videos again."""
    server = RedisServer(free_port(), tmp_path)
    server.start()
    prefix = unique_prefix("restart-load")
    f, z = codes(model_dir, 16, 8, seed=1)
    expected = local_decode(model_dir, f, z)
    worker = Worker(model_dir, prefix, "steady", tmp_path, url=server.url, wait=False)
    api = Api(model_dir, prefix, tmp_path, url=server.url, REQUEST_TIMEOUT_S=4)
    try:
        api.wait_ready()
        worker.wait_ready()
        with Clients(api.url, f, z) as clients:
            clients.wait_for_ok(0, 30, "answers before the restart")
            server.stop()
            time.sleep(1.0)
            down = len(clients.answers)
            server.start()
            clients.wait_for_ok(down, 60, "answers after the restart")
            time.sleep(0.5)
        counts = judge(clients.answers, expected,
                       {503: "/problems/engine-unavailable", 504: "/problems/deadline-exceeded"})
        print(f"\nRedis restart under load: {len(clients.answers)} requests: {counts}")
        assert counts.get("503 /problems/engine-unavailable", 0) > 0  # the outage was seen
    finally:
        api.stop()
        worker.stop()
        server.stop()


def test_a_full_queue_under_load_answers_every_client(model_dir, tmp_path):
    """QUEUE_MAX=4. 40 clients at once and no worker yet: the queue takes exactly 4 (the check
    and the XADD are one step), the other 36 get 503 busy with Retry-After at once; a worker
    then answers the queued ones rightly. Then 40 more with the worker running: each a right
    video or a 503 busy, none lost."""
    prefix = unique_prefix("full-load")
    f, z = codes(model_dir, 40, 8, seed=2)
    expected = local_decode(model_dir, f, z)
    api = Api(model_dir, prefix, tmp_path, QUEUE_MAX=4, REQUEST_TIMEOUT_S=60, RETRY_AFTER_S=3)
    clients = Clients("", f, z, threads=40)
    try:
        api.wait_ready()
        clients.url = api.url
        with ThreadPoolExecutor(40) as pool:
            calls = [pool.submit(clients.send, i) for i in range(40)]
            wait_for(lambda: sum(c.done() for c in calls) >= 36, 60, "the refusals")
            with redis.Redis.from_url(REDIS_URL) as r:
                queued = r.xlen(Keys(prefix).jobs(load_manifest(model_dir).name))
            late = Worker(model_dir, prefix, "late", tmp_path, MAX_BATCH=2)
            try:
                first = [(i, c.result(90)) for i, c in enumerate(calls)]
                second = list(enumerate(pool.map(clients.send, range(40))))
            finally:
                late.stop()
        busy = {503: "/problems/busy"}
        counts, again = judge(first, expected, busy), judge(second, expected, busy)
        print(f"\nfull queue: 40 with no worker: {counts}; 40 with one worker: {again}")
        assert queued == 4 and counts == {"200 right video": 4, "503 /problems/busy": 36}
        assert all(r.headers["retry-after"] == "3" for _, r in first if r.status_code == 503)
        assert again.get("200 right video", 0) >= 4
    finally:
        clients.http.close()
        api.stop()
        delete_keys(prefix)
