"""Helpers for the Redis engine tests: worker and API subprocesses, a private redis-server,
unique key prefixes so tests never see each other's keys on the shared Redis, and the right
answers from the in-process engine to compare the Redis path with."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import redis

from bench.common import free_port
from service.engine import LocalEngine
from service.engine.keys import Keys
from service.settings import REPO
from tests.service.conftest import make_settings

# Database 9 of the shared server (started by .ci/run); each test also has its own prefix.
REDIS_URL = os.environ.get("VDIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


def unique_prefix(name: str) -> str:
    return f"vdis-test-{name}-{uuid.uuid4().hex[:8]}"


def service_env(model_dir: Path | None, prefix: str, url: str = REDIS_URL, **overrides) -> dict:
    """Environment for a worker or API subprocess: VDIS_* from keyword arguments.

    `model_dir`: the one model folder to serve; None: the models under MODELS_DIR=...
    """
    env = {**os.environ, "VDIS_REDIS_URL": url,
           "VDIS_REDIS_PREFIX": prefix, "VDIS_INTRA_OP_THREADS": "1",
           "VDIS_INTER_OP_THREADS": "1", "VDIS_HEARTBEAT_S": "0.2"}
    env.pop("VDIS_MODEL_DIR", None)
    if model_dir is not None:
        env["VDIS_MODEL_DIR"] = str(model_dir)
    env.update({f"VDIS_{k}": str(v) for k, v in overrides.items()})
    return env


def heartbeat(prefix: str, name: str, url: str = REDIS_URL) -> dict | None:
    with redis.Redis.from_url(url) as client:
        beat = client.get(Keys(prefix).worker(name))
    return json.loads(beat) if beat else None


def wait_for(condition, timeout_s: float, what: str, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Worker:
    """`python -m service.worker` as a subprocess, logging to a file."""

    def __init__(self, model_dir: Path | None, prefix: str, name: str, log_dir: Path,
                 url: str = REDIS_URL, wait: bool = True, **settings):
        self.prefix, self.name, self.url = prefix, name, url
        self.log = log_dir / f"{name}.log"
        env = service_env(model_dir, prefix, url, WORKER_NAME=name, **settings)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "service.worker"], env=env,
                                            cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float = 60.0) -> dict:
        def beating():
            assert self.process.poll() is None, self.log.read_text()
            return heartbeat(self.prefix, self.name, self.url)
        return wait_for(beating, timeout_s, f"worker {self.name}'s heartbeat")

    def beat(self) -> dict | None:
        return heartbeat(self.prefix, self.name, self.url)

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout_s)


class Api:
    """`uvicorn service.app:app` with the Redis engine, as a subprocess on a free port."""

    def __init__(self, model_dir: Path | None, prefix: str, log_dir: Path, url: str = REDIS_URL,
                 **settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"api-{self.port}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "service.app:app", "--port", str(self.port),
                 "--log-level", "warning"],
                env=service_env(model_dir, prefix, url, **settings), cwd=REPO, stdout=out,
                stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        import httpx

        def up():
            assert self.process.poll() is None, self.log.read_text()
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(up, timeout_s, f"the API on port {self.port}", every_s=0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


class RedisServer:
    """A private redis-server (never the shared one), which a test may stop and start again."""

    def __init__(self, port: int, log_dir: Path):
        self.port, self.log_dir = port, log_dir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.log_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers():
            try:
                return redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
            except redis.ConnectionError:
                return False
        wait_for(answers, 10, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def delete_keys(prefix: str, url: str = REDIS_URL) -> None:
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)


@contextmanager
def workers(model_dir: Path, prefix: str, log_dir: Path, names: list[str], **settings):
    """Several workers started together (their start-ups overlap), stopped at the end."""
    started = [Worker(model_dir, prefix, n, log_dir, wait=False, **settings) for n in names]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.stop()


def local_decode(model_dir, f, z) -> np.ndarray:
    """The right answers: f (n, F), z (n, T, Z) -> (n, T, S, S, 3) from the in-process engine."""
    async def main():
        local = LocalEngine(make_settings(model_dir))
        await local.start()
        try:
            return await local.decode(f, z)
        finally:
            await local.close()
    return asyncio.run(main())
