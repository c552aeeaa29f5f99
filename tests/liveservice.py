"""A real service in a subprocess (`python -m vdis serve`), for the client, CLI and web tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import free_port

REPO = Path(__file__).resolve().parents[1]


@dataclass
class LiveService:
    """A running `vdis serve`: its URL and its process."""

    url: str
    process: subprocess.Popen

    def rss_bytes(self) -> int:
        """The server process's resident memory now (Linux /proc)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0]) * 1024


@contextmanager
def running_service(model_dir: Path, ready_timeout_s: float = 120.0,
                    env: dict[str, str] | None = None) -> Iterator[str]:
    """Start `vdis serve` on a free port; yield its URL once /ready says so.

    The in-process engine unless `env` (VDIS_* variables, applied last) says otherwise.
    """
    with live_service(model_dir, ready_timeout_s, env) as service:
        yield service.url


@contextmanager
def live_service(model_dir: Path, ready_timeout_s: float = 120.0,
                 env: dict[str, str] | None = None) -> Iterator[LiveService]:
    """`running_service`, yielding the process too (for its memory, or to see it still runs)."""
    port = free_port()
    env = {**os.environ, "VDIS_MODEL_DIR": str(model_dir), "VDIS_REDIS_URL": "",
           "VDIS_INTRA_OP_THREADS": "1", "VDIS_INTER_OP_THREADS": "1", **(env or {})}
    log = open(os.devnull, "wb") if not os.environ.get("VDIS_TEST_SERVER_LOG") else None
    process = subprocess.Popen(
        [sys.executable, "-m", "vdis", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT if log else None)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"vdis serve exited with {process.returncode} "
                                   "(VDIS_TEST_SERVER_LOG=1 shows its log)")
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vdis serve not ready after {ready_timeout_s} s")
            time.sleep(0.2)
        yield LiveService(url, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log:
            log.close()
