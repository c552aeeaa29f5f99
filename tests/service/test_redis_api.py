"""The HTTP API on the Redis engine, with real worker subprocesses and a real Redis: every
endpoint answers as the in-process engine does; batching across clients; async jobs; two API
processes and two workers; a full queue (503) and a missed deadline (504)."""

import asyncio
import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine import wire
from service.engine.keys import Keys
from service.engine.manifest import load_manifest
from service.engine.redis_engine import RedisEngine
from tests.service.conftest import make_settings
from tests.service.redisutil import (
    REDIS_URL,
    Api,
    Worker,
    delete_keys,
    unique_prefix,
    wait_for,
    workers,
)


def arrays(response) -> dict:
    assert response.status_code == 200, response.text
    return dict(np.load(io.BytesIO(response.content)))


def redis_settings(model_dir, prefix, **overrides):
    return make_settings(model_dir, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix, **overrides)


@pytest.fixture(scope="module")
def prefix():
    name = unique_prefix("api")
    yield name
    delete_keys(name)


@pytest.fixture(scope="module")
def worker(model_dir, prefix, tmp_path_factory):
    worker = Worker(model_dir, prefix, "w1", tmp_path_factory.mktemp("logs"), MAX_WAIT_MS=50)
    yield worker
    assert worker.stop() == 0  # SIGTERM: drains and exits cleanly
    assert "stopped after" in worker.log.read_text()


@pytest.fixture(scope="module")
def remote(model_dir, prefix, worker):
    with TestClient(create_app(redis_settings(model_dir, prefix))) as client:
        yield client


def random_codes(client, seed: int, frames: int = 8) -> dict:
    model = client.get("/model").json()
    rng = np.random.default_rng(seed)
    return {"appearance": rng.standard_normal(model["appearance_dim"]).tolist(),
            "motion": rng.standard_normal((frames, model["motion_dim"])).tolist()}


def test_ready_and_metrics_show_redis_and_the_workers(remote):
    ready = remote.get("/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["engine"] == "redis" and body["redis"]["connected"] is True
    assert body["queue"]["max"] == 256 and body["queue"]["dead_letters"] == 0
    assert [w["name"] for w in body["workers"]] == ["w1"]
    assert body["workers"][0]["provider"] == "CPUExecutionProvider"
    metrics = remote.get("/metrics").text
    assert "vdis_workers 1.0" in metrics and "vdis_queue_length" in metrics


def test_every_endpoint_answers_as_the_local_engine(client, remote, mp4, webm):
    local = client.post("/encode", files={"video": ("a.mp4", mp4, "video/mp4")}).json()
    queued = remote.post("/encode", files={"video": ("a.mp4", mp4, "video/mp4")}).json()
    assert queued["frames"] == local["frames"] and queued["model"] == local["model"]
    for factor in ("appearance", "motion"):
        for what in ("mean", "logvar"):
            np.testing.assert_allclose(queued[factor][what], local[factor][what], atol=1e-5)
    calls = [
        ("/encode?format=npz", {"files": {"video": ("a.webm", webm, "video/webm")}}),
        ("/decode?format=npz", {"json": {"appearance": local["appearance"],
                                         "motion": local["motion"]}}),
        ("/swap?format=npz&both=true", {"files": {"appearance": ("a.mp4", mp4, "video/mp4"),
                                                  "motion": ("b.webm", webm, "video/webm")}}),
        ("/generate?format=npz&n=3&seed=5", {"files": {"video": ("a.mp4", mp4, "video/mp4")}}),
        ("/generate?format=npz&n=2&seed=6&sample=appearance",
         {"files": {"video": ("a.mp4", mp4, "video/mp4")}}),
    ]
    for path, body in calls:
        expected, got = arrays(client.post(path, **body)), arrays(remote.post(path, **body))
        assert expected.keys() == got.keys(), path
        for name in expected:
            assert got[name].shape == expected[name].shape, (path, name)
            if got[name].dtype.kind not in "fiu":
                assert (got[name] == expected[name]).all(), (path, name)
                continue
            # the same operations on the same graphs: bit for bit the in-process answer
            np.testing.assert_array_equal(got[name], expected[name], err_msg=path)
    mp4_answer = remote.post("/swap", files={"appearance": ("a.mp4", mp4, "video/mp4"),
                                             "motion": ("b.webm", webm, "video/webm")})
    assert mp4_answer.status_code == 200 and mp4_answer.headers["content-type"] == "video/mp4"
    bad = remote.post("/decode", json={"appearance": [0.0] * 3, "motion": [[0.0]]})
    assert bad.status_code == 422 and bad.json()["type"] == "/problems/invalid-codes"


def test_a_request_is_one_job_of_uint8_clips(model_dir, mp4, webm):
    """/swap puts ONE job on the stream (the operation, the model, the two uint8 clips), not
    three graph calls; no worker reads this queue, so the job stays to be looked at."""
    prefix = unique_prefix("one-job")
    settings = redis_settings(model_dir, prefix, REQUEST_TIMEOUT_S=0.5)
    files = {"appearance": ("a.mp4", mp4, "video/mp4"), "motion": ("b.webm", webm, "video/webm")}
    try:
        with TestClient(create_app(settings)) as remote:
            name = remote.get("/model").json()["name"]
            assert remote.post("/swap?both=true", files=files).status_code == 504
            with redis.Redis.from_url(REDIS_URL) as r:
                entries = r.xrange(Keys(prefix).jobs(name))
        assert len(entries) == 1
        fields = entries[0][1]
        assert fields[b"op"] == b"swap" and fields[b"model"] == name.encode()
        meta, sent = wire.unpack(fields[b"payload"])
        assert meta == {"params": {"both": True}}
        assert {k: (a.dtype, a.shape) for k, a in sent.items()} == {
            "appearance": (np.uint8, (1, 8, 64, 64, 3)), "motion": (np.uint8, (1, 8, 64, 64, 3))}
    finally:
        delete_keys(prefix)


def test_a_worker_runs_each_request_as_one_job(remote, worker, mp4, webm):
    files = {"appearance": ("a.mp4", mp4, "video/mp4"), "motion": ("b.webm", webm, "video/webm")}
    for path, body in (("/swap?format=npz&both=true", files),
                       ("/generate?format=npz&n=3&seed=1",
                        {"video": ("a.mp4", mp4, "video/mp4")})):
        before = worker.beat()["counts"].get("jobs", 0)
        assert remote.post(path, files=body).status_code == 200
        time.sleep(0.5)  # a heartbeat period or two
        assert worker.beat()["counts"]["jobs"] - before == 1, path


def test_async_jobs_answer_202_then_the_result(remote, mp4):
    files = {"video": ("a.mp4", mp4, "video/mp4")}
    accepted = remote.post("/generate?async=true&format=npz&n=2&seed=9", files=files)
    assert accepted.status_code == 202, accepted.text
    url = accepted.json()["url"]
    assert accepted.headers["location"] == url and accepted.json()["status"] == "queued"

    def answered():
        r = remote.get(url)
        assert r.status_code == 200, r.text
        return r if r.headers["content-type"] == "application/x-npz" else None
    result = wait_for(answered, 30, "the async job")
    direct = remote.post("/generate?format=npz&n=2&seed=9", files=files)
    assert result.headers["x-vdis-seed"] == "9"
    np.testing.assert_allclose(arrays(result)["videos"], arrays(direct)["videos"], atol=1.0)
    failed = remote.post("/decode?async=true", json={"appearance": [1.0], "motion": [[1.0]]})
    problem = wait_for(lambda: remote.get(failed.json()["url"]).json().get("type"), 30, "job")
    assert problem == "/problems/invalid-codes"
    missing = remote.get("/jobs/nope")
    assert missing.status_code == 404 and "no job 'nope'" in missing.json()["detail"]


def test_concurrent_clients_share_one_call(model_dir, prefix, worker, remote):
    settings = redis_settings(model_dir, prefix)

    async def many():
        engine = RedisEngine(settings)
        await engine.start()
        try:
            rng, m = np.random.default_rng(0), engine.manifest
            f = rng.standard_normal((16, m.appearance_dim)).astype(np.float32)  # (16, F)
            z = rng.standard_normal((16, 8, m.motion_dim)).astype(np.float32)  # (16, T, Z)
            together = await asyncio.gather(*[engine.decode(f[i:i + 1], z[i:i + 1])
                                              for i in range(16)])
            return np.concatenate(together), await engine.decode(f, z)
        finally:
            await engine.close()

    calls_before = sum(worker.beat()["batch_rows"].values())
    together, stacked = asyncio.run(many())
    np.testing.assert_allclose(together, stacked, atol=1)
    time.sleep(0.5)  # a heartbeat period or two
    beat = worker.beat()
    assert max(int(rows) for rows in beat["batch_rows"]) > 1, beat
    assert sum(beat["batch_rows"].values()) - calls_before < 16, beat  # fewer calls than jobs


def test_more_jobs_in_flight_than_redis_pys_default_pool_are_answered(model_dir, prefix, worker):
    """Each job holds a connection for its reply; redis-py's pool stops at 100 by default."""
    async def many():
        engine = RedisEngine(redis_settings(model_dir, prefix))
        await engine.start()
        try:
            clips = np.zeros((150, 8, 64, 64, 3), np.uint8)  # (N, T, S, S, 3)
            return await asyncio.gather(*[engine.encode(clip) for clip in clips])
        finally:
            await engine.close()

    codes = asyncio.run(many())
    assert len(codes) == 150 and all(c.motion_mean.shape[:2] == (1, 8) for c in codes)


def test_two_api_processes_and_two_workers(model_dir, prefix, worker, client, tmp_path):
    apis = [Api(model_dir, prefix, tmp_path) for _ in range(2)]
    try:
        with workers(model_dir, prefix, tmp_path, ["w2"], MAX_WAIT_MS=50) as (second,):
            for api in apis:
                api.wait_ready()
            jobs_before = worker.beat()["counts"].get("jobs", 0)
            bodies = [random_codes(client, seed) for seed in range(24)]

            def call(i):
                return httpx.post(f"{apis[i % 2].url}/decode?format=npz", json=bodies[i],
                                  timeout=60)
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(call, range(24)))
            for body, answer in zip(bodies, answers, strict=True):
                expected = arrays(client.post("/decode?format=npz", json=body))["videos"]
                np.testing.assert_allclose(arrays(answer)["videos"], expected, atol=1)
            time.sleep(0.5)
            done = [worker.beat()["counts"].get("jobs", 0) - jobs_before,
                    second.beat()["counts"].get("jobs", 0)]
            assert sum(done) == 24 and min(done) > 0, done
            ready = httpx.get(f"{apis[1].url}/ready").json()
            assert {w["name"] for w in ready["workers"]} == {"w1", "w2"}
    finally:
        for api in apis:
            api.stop()


def test_full_queue_is_503_and_a_missed_deadline_504(model_dir, client, tmp_path):
    prefix = unique_prefix("idle")  # no worker reads this queue yet
    settings = redis_settings(model_dir, prefix, QUEUE_MAX=1, REQUEST_TIMEOUT_S=0.5,
                              RETRY_AFTER_S=2)
    try:
        with TestClient(create_app(settings)) as remote:
            not_ready = remote.get("/ready")
            assert not_ready.status_code == 503
            assert "no worker" in not_ready.json()["reason"]
            late = remote.post("/decode", json=random_codes(client, 0))
            assert late.status_code == 504, late.text
            assert late.json()["type"] == "/problems/deadline-exceeded"
            assert "within 0.5 s" in late.json()["detail"]
            # the expired job still waits in the stream, so the queue (max 1) is full
            busy = remote.post("/decode", json=random_codes(client, 1))
            assert busy.status_code == 503 and busy.headers["retry-after"] == "2"
            assert busy.json()["type"] == "/problems/busy"
            assert "VDIS_QUEUE_MAX" in busy.json()["detail"]
        late_worker = Worker(model_dir, prefix, "late", tmp_path)
        try:
            with redis.Redis.from_url(REDIS_URL) as r:
                stream = Keys(prefix).jobs(load_manifest(model_dir).name)
                wait_for(lambda: r.xlen(stream) == 0, 30, "the queue to empty")
            beat = wait_for(lambda: late_worker.beat()["counts"].get("expired"), 10, "a beat")
            assert beat == 1 and late_worker.beat()["counts"].get("jobs", 0) == 0
        finally:
            late_worker.stop()
    finally:
        delete_keys(prefix)
