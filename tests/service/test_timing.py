"""Where a request's time goes (service.timing): the Server-Timing header and its metric, on the
in-process engine and through Redis."""

import asyncio
import re

import numpy as np

from service import timing
from service.engine.redis_engine import RedisEngine
from tests.service.conftest import make_settings
from tests.service.redisutil import REDIS_URL, Worker, delete_keys, unique_prefix


def phases(response) -> dict[str, float]:
    """Server-Timing `name;dur=ms, ...` -> {name: ms}."""
    return {name: float(ms) for name, ms in
            re.findall(r"(\w+);dur=([\d.]+)", response.headers["server-timing"])}


def test_each_instant_counts_once_for_the_first_phase_running():
    intervals = [("decode", 0.0, 4.0), ("decode", 1.0, 5.0),  # two uploads side by side
                 ("queue", 5.0, 7.0), ("model", 6.0, 8.0), ("encode", 9.0, 9.5)]
    spent = timing.attribute(intervals, 0.0, 10.0)
    assert spent == {"model": 2.0, "queue": 1.0, "decode": 5.0, "encode": 0.5, "other": 1.5}
    assert timing.total(intervals, "decode") == 5.0
    assert timing.total(intervals, "model") == 2.0
    assert timing.total(intervals, "encode") == 0.5
    assert timing.attribute([("model", -1.0, 20.0)], 0.0, 10.0)["model"] == 10.0  # clipped
    assert timing.header({"model": 0.002, "other": 0.0005}) == (
        "model;dur=2.00, other;dur=0.50, total;dur=2.50")


def test_a_swap_says_where_its_time_went(client, mp4, webm):
    files = {"appearance": ("a.mp4", mp4, "video/mp4"), "motion": ("b.webm", webm, "video/webm")}
    spent = phases(client.post("/swap", files=files))
    assert set(spent) == {"model", "queue", "decode", "encode", "other", "total"}
    assert spent["model"] > 0 and spent["decode"] > 0 and spent["encode"] > 0
    assert abs(sum(v for k, v in spent.items() if k != "total") - spent["total"]) < 0.05
    assert phases(client.get("/health"))["model"] == 0
    metrics = client.get("/metrics").text
    assert re.search(r'vdis_request_phase_seconds_total\{phase="model",route="/swap"\} '
                     r'0\.0*[1-9]', metrics)


def test_through_redis_the_model_time_is_the_workers(model_dir, tmp_path):
    prefix = unique_prefix("timing")
    worker = Worker(model_dir, prefix, "w-timing", tmp_path)
    settings = make_settings(model_dir, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix)

    async def encode_once():
        engine = RedisEngine(settings)
        await engine.start()
        try:
            intervals = timing.begin()
            started = asyncio.get_running_loop().time()
            await engine.encode(np.zeros((8, 64, 64, 3), np.uint8))
            return intervals, asyncio.get_running_loop().time() - started
        finally:
            await engine.close()

    try:
        intervals, elapsed = asyncio.run(encode_once())
    finally:
        worker.stop()
        delete_keys(prefix)
    model, queue = timing.total(intervals, "model"), timing.total(intervals, "queue")
    assert 0 < model < queue <= elapsed
