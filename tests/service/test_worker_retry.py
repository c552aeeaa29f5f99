"""A batch that fails inside a Redis worker costs only the job that broke it: the worker retries
each job of the failed batch alone, answers the good ones with their results and the bad one
with a clear error, and leaves nothing behind in the stream. Real Redis, the real exported
test model, the worker in this process so that its model call can be made to fail."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis

from service.engine.base import JobFailed
from service.engine.keys import GROUP
from service.engine.redis_engine import RedisEngine
from service.worker import Worker
from tests.service.conftest import make_settings
from tests.service.redisutil import REDIS_URL, delete_keys, local_decode, unique_prefix

POISON = 123.0  # an appearance code holding this value breaks any model call it is part of


@pytest.fixture
def prefix():
    name = unique_prefix("retry")
    yield name
    delete_keys(name)


def test_one_bad_job_in_a_batch_fails_alone_and_the_others_get_their_results(model_dir, prefix):
    settings = make_settings(model_dir, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix, MAX_BATCH=8,
                             MAX_WAIT_MS=200, MAX_CONCURRENT_RUNS=1, WORKER_NAME="retrier",
                             REQUEST_TIMEOUT_S=60)  # one call at a time: the batch is one call
    rng = np.random.default_rng(0)

    async def scenario():
        engine = RedisEngine(settings)
        await engine.start()
        f, z = engine.manifest.appearance_dim, engine.manifest.motion_dim
        codes = [(rng.normal(size=(1, f)), rng.normal(size=(1, 8, z))) for _ in range(3)]
        codes[1][0][0, 0] = POISON
        # all three are queued before the worker reads, so they arrive as one batch
        jobs = [asyncio.create_task(engine.decode(a, m)) for a, m in codes]
        with redis.Redis.from_url(REDIS_URL) as plain:
            for _ in range(200):
                if plain.xlen(engine.keys.jobs(engine.manifest.name)) == 3:
                    break
                await asyncio.sleep(0.01)
            assert plain.xlen(engine.keys.jobs(engine.manifest.name)) == 3

        worker = Worker(settings)
        model_calls: list[int] = []
        batcher = worker.models.loaded[engine.manifest.name].batcher
        real_run = batcher.run

        def flaky_run(graph, inputs):
            model_calls.append(len(inputs["appearance"]))
            if (inputs["appearance"] == POISON).any():
                raise RuntimeError("a poisoned row")
            return real_run(graph, inputs)

        batcher.run = flaky_run
        serving = asyncio.create_task(worker.run())
        try:
            answers = await asyncio.wait_for(
                asyncio.gather(*jobs, return_exceptions=True), 60)
        finally:
            worker.stop()
            await serving
        await engine.close()
        return answers, codes, model_calls, worker.counts, engine.keys.jobs(engine.manifest.name)

    answers, codes, model_calls, counts, jobs_key = asyncio.run(scenario())
    expected = [local_decode(model_dir, a, m) for a, m in codes[::2]]  # each in a call of its own
    good, bad = [answers[0], answers[2]], answers[1]
    assert model_calls == [3, 1, 1, 1]  # the batch, then each of its jobs alone
    for got, want in zip(good, expected, strict=True):
        assert isinstance(got, np.ndarray), got
        np.testing.assert_array_equal(got, want)  # the same pixels as a call of its own
    assert isinstance(bad, JobFailed)
    assert "the model failed on this decode job" in str(bad) and "poisoned row" in str(bad)
    assert counts["jobs"] == 3 and counts["failed"] == 1
    with redis.Redis.from_url(REDIS_URL) as plain:  # every job answered: none left pending
        assert plain.xlen(jobs_key) == 0
        assert plain.xpending(jobs_key, GROUP)["pending"] == 0

