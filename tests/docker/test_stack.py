"""`docker compose up`, really run: the CPU images built, the stack started, used and stopped.

Where a Docker daemon runs or can be started (root and Debian's docker.io), with BuildKit and a
compose implementation:
  - docker/build-local.sh builds the images on a local Debian base (no registry here), once;
    later runs reuse the base and the build cache;
  - Redis, the API and two CPU workers start from docker-compose.yml + docker-compose.cpu.yml
    and the test waits for every health check;
  - /encode, /swap and /generate through the API, the videos checked;
  - one worker container SIGKILLed mid-batch: every request is still answered;
  - SIGTERM to the workers while they hold a batch: they finish it and exit 0;
  - async jobs accepted with no worker running survive a Redis restart (append-only file on
    the compose volume) and are answered once workers start;
  - the stack stopped with SIGTERM: every container exits cleanly.
Each step prints its figures. Compose reads one file derived from the two compose files, as
compose merges them, plus what this machine needs and nothing else (`derived_compose`): host
networking and 127.0.0.1 ports for every container, since nothing here may talk to the
bridge's private addresses. docker-compose 1.29 (the one the registries here have) cannot
read `!reset` or `name:`, which the derived file does not need.

Part of `make test` where Docker can run (about 90 s with the images cached, 2 minutes more
to build them cold); `make docker-test` runs it alone. Where it cannot, or with
VDIS_DOCKER_TEST=0, it is skipped with the reason in pytest's summary.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import redis

from bench.common import free_port
from service.engine.keys import ASYNC_GROUP, GROUP, Keys
from service.engine.manifest import load_manifest
from service.settings import REPO
from tests.docker.test_compose import (
    container_command,
    healthcheck,
    interpolate,
    merged_cpu,
    on_port,
)
from tests.service.redisutil import wait_for
from tests.service.videos import encode, moving_square
from vdis.client import Client

# The compose project: one per test run, named by its pytest process, so that two runs (two
# engineers' `make test` on one machine) never take each other's stack down; a run that died
# without its teardown is taken down by the next (`take_down_dead_runs`).
PROJECT_PREFIX = "vdistest"
PROJECT = f"{PROJECT_PREFIX}{os.getpid()}"
TAG = "local"
BASE = "vdis-base:bookworm"
DOCKERD_LOG = Path("/var/log/vdis-dockerd.log")
# What compose interpolates into the files (the rest are the files' defaults). A short claim
# timeout so that a killed worker's jobs are taken over well within the request deadline; a
# worker waits 500 ms for its batch to fill, so that it holds what it read long enough for
# the test to SIGKILL or SIGTERM it mid-batch on a busy machine.
# VDIS_MAX_BATCH 16 (the CPU default is 4): the burst tests need a worker to read a whole burst
# of 8 jobs in one batch and hold it through the 500 ms wait, so SIGTERM and SIGKILL find every
# job of the burst read and none answered
COMPOSE_ENV = {"VDIS_TAG": TAG, "VDIS_REDIS_IMAGE": f"vdis-redis:{TAG}",
               "VDIS_INTRA_OP_THREADS": "1", "VDIS_CLAIM_IDLE_MS": "3000",
               "VDIS_MAX_WAIT_MS": "500", "VDIS_REQUEST_TIMEOUT_S": "60", "VDIS_MAX_BATCH": "16"}
# The keys on the stack's own Redis, under the compose file's default VDIS_REDIS_PREFIX
PREFIX = Keys(interpolate(merged_cpu()["services"]["api"]["environment"]["VDIS_REDIS_PREFIX"]))
SPRITES_JOBS = PREFIX.jobs("sprites-dsvae")  # the default model's job stream


def report(pytestconfig, line: str) -> None:
    """A figure for the test's output, shown even when pytest captures it."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[docker] {line}", flush=True)


def run(command: list[str], timeout_s: float = 120, check: bool = True,
        env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env,
                          cwd=REPO)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


# -- what this machine has ------------------------------------------------------------------

def buildkit_cli() -> str | None:
    """A docker CLI that builds with BuildKit: one with buildx, or a pre-23 one (Debian's
    docker.io 20.10) that has it built in behind DOCKER_BUILDKIT=1."""
    for cli in ("docker", "/usr/bin/docker"):
        if not shutil.which(cli):
            continue
        if run([cli, "buildx", "version"], check=False).returncode == 0:
            return cli
        version = run([cli, "version", "--format", "{{.Client.Version}}"], check=False)
        if version.stdout.strip().split(".")[0].isdigit() \
                and int(version.stdout.split(".")[0]) < 23:
            return cli
    return None


def daemon_up(cli: str) -> bool:
    return run([cli, "info"], check=False, timeout_s=30).returncode == 0


def start_daemon(cli: str) -> str | None:
    """Start dockerd by hand (no systemd here) if none answers; None, or why it cannot be.

    No default bridge and no iptables rules: every container of this test uses the host's
    network. The daemon is left running, so the next run reuses it and its image cache."""
    if daemon_up(cli):
        return None
    if not shutil.which("dockerd"):
        return "no Docker daemon answers and dockerd is not installed (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "no Docker daemon answers, and starting dockerd needs root"
    with DOCKERD_LOG.open("ab") as log:
        subprocess.Popen(["dockerd", "--bridge=none", "--iptables=false"], stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if daemon_up(cli):
            return None
        time.sleep(0.5)
    return f"dockerd did not answer within 60 s (its log: {DOCKERD_LOG})"


def take_down_dead_runs(cli: str, compose: list[str]) -> None:
    """Remove the containers and volumes of earlier runs whose pytest process is gone."""
    listed = run([cli, "ps", "-a", "--filter", "label=com.docker.compose.project",
                  "--format", '{{.Label "com.docker.compose.project"}}'], check=False).stdout
    for project in set(listed.split()):
        pid = project.removeprefix(PROJECT_PREFIX)
        if project.startswith(PROJECT_PREFIX) and pid.isdigit() \
                and not Path(f"/proc/{pid}").exists():
            run([*compose, "-p", project, "down", "-v"], check=False, timeout_s=180)


def compose_cli(cli: str) -> list[str] | None:
    for command in ([cli, "compose"], ["docker-compose"]):
        if shutil.which(command[0]) and run([*command, "version"], check=False).returncode == 0:
            return command
    return None


# -- the compose file this test runs ----------------------------------------------------------

def derived_compose(redis_port: int, api_port: int) -> dict:
    """docker-compose.yml + docker-compose.cpu.yml merged, changed only where this machine
    needs it: every container on the host's network, Redis and the API on free ports of
    127.0.0.1 (their commands and health checks told so), and the workers in the host's PID
    namespace, because a worker names itself <hostname>-<pid> and on the host's network every
    container has the host's name (two workers, both pid 1, would share one consumer name)."""
    document = merged_cpu()
    document.pop("name", None)  # the project name is given with -p
    for key in [k for k in document if k.startswith("x-")]:
        del document[key]  # anchors, resolved when the files were read
    services = document["services"]
    for service in services.values():
        service["network_mode"] = "host"
        service.pop("ports", None)
    redis_service = services["redis"]
    redis_service["command"] = [*redis_service["command"], "--port", str(redis_port),
                                "--bind", "127.0.0.1"]
    redis_service["healthcheck"]["test"] = [*redis_service["healthcheck"]["test"],
                                            "-p", str(redis_port)]
    for name in ("api", "worker"):
        services[name]["environment"]["VDIS_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    services["api"]["command"] = on_port(container_command("api"), api_port)
    services["api"]["healthcheck"] = {"test": ["CMD", *on_port(healthcheck("api"), api_port)]}
    services["worker"]["pid"] = "host"
    return document


class Stack:
    """The compose project: compose commands, its containers, its Redis, its API."""

    def __init__(self, cli: str, compose: list[str], path: Path, redis_port: int,
                 api_port: int):
        self.cli, self.path = cli, path
        self.compose_base = [*compose, "-p", PROJECT, "-f", str(path)]
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("VDIS_")},
                    **COMPOSE_ENV}
        self.url = f"http://127.0.0.1:{api_port}"
        self.redis = redis.Redis(port=redis_port, socket_timeout=10)

    def compose(self, *args: str, timeout_s: float = 180) -> str:
        return run([*self.compose_base, *args], timeout_s, env=self.env).stdout

    def containers(self, service: str, every: bool = False) -> list[str]:
        """The service's running containers (`every`: stopped ones too)."""
        listed = [c for c in self.compose("ps", "-a", "-q", service).split() if c]
        return [c for c in listed if every or self.inspect(c, "{{.State.Running}}") == "true"]

    def inspect(self, container: str, template: str) -> str:
        return run([self.cli, "inspect", "-f", template, container]).stdout.strip()

    def health(self, container: str) -> str:
        return self.inspect(container, "{{if .State.Health}}{{.State.Health.Status}}"
                                       "{{else}}{{.State.Status}}{{end}}")

    def logs(self, container: str) -> str:
        done = run([self.cli, "logs", container], check=False)
        return done.stdout + done.stderr

    def wait_healthy(self, services: dict[str, int], timeout_s: float = 240) -> None:
        def healthy():
            found = {s: self.containers(s) for s in services}
            for service, ids in found.items():
                for container in ids:
                    status = self.health(container)
                    assert status not in ("unhealthy", "exited", "dead"), \
                        f"{service}: {status}\n{self.logs(container)[-3000:]}"
            return all(len(ids) == services[s] and all(self.health(c) == "healthy"
                                                       for c in ids)
                       for s, ids in found.items())
        wait_for(healthy, timeout_s, f"healthy {services}", every_s=0.5)

    def worker_containers(self) -> dict[int, str]:
        """The running workers by the pid each names itself with."""
        return {int(self.inspect(c, "{{.State.Pid}}")): c for c in self.containers("worker")}


@pytest.fixture(scope="module")
def stack(pytestconfig, tmp_path_factory):
    if os.environ.get("VDIS_DOCKER_TEST") == "0":
        pytest.skip("VDIS_DOCKER_TEST=0: the Docker stack test is turned off")
    cli = buildkit_cli()
    if cli is None:
        pytest.skip("no docker CLI that builds with BuildKit (buildx, or Debian's docker.io)")
    why = start_daemon(cli)
    if why:
        pytest.skip(why)
    compose = compose_cli(cli)
    if compose is None:
        pytest.skip("no compose implementation (docker compose, or docker-compose 1.29)")
    if run([cli, "image", "inspect", BASE], check=False).returncode != 0 \
            and not shutil.which("debootstrap"):
        pytest.skip(f"no {BASE} image and no debootstrap to make it (apt-get install "
                    "debootstrap)")

    started = time.monotonic()
    built = run(["docker/build-local.sh"], timeout_s=1200,
                env={**os.environ, "DOCKER": cli, "VDIS_TAG": TAG, "VDIS_BASE": BASE})
    for line in built.stdout.splitlines():
        if line.startswith("build-local:") and " took " in line:
            report(pytestconfig, line.removeprefix("build-local: ").replace(" took", ":"))
    report(pytestconfig, f"images built in {time.monotonic() - started:.1f} s "
                         f"(CLI {cli}, compose {' '.join(compose)})")

    redis_port, api_port = free_port(), free_port()
    path = tmp_path_factory.mktemp("compose") / "docker-compose.test.json"
    path.write_text(json.dumps(derived_compose(redis_port, api_port), indent=1))
    stack = Stack(cli, compose, path, redis_port, api_port)
    take_down_dead_runs(cli, compose)
    try:
        started = time.monotonic()
        stack.compose("up", "-d", "--no-build", "--scale", "worker=2")
        stack.wait_healthy({"redis": 1, "api": 1, "worker": 2})
        networks = {stack.inspect(c, "{{.HostConfig.NetworkMode}}")
                    for service in ("redis", "api", "worker") for c in stack.containers(service)}
        assert networks == {"host"}, networks  # nothing on a bridge
        users = {stack.inspect(c, "{{.Config.User}}")
                 for service in ("api", "worker") for c in stack.containers(service)}
        assert users == {"vdis"}, users  # the images' own non-root user, untouched by compose
        report(pytestconfig, f"compose up to healthy (Redis, the API, 2 workers): "
                             f"{time.monotonic() - started:.1f} s")
        yield stack
    finally:
        for service in ("redis", "api", "worker"):
            for container in stack.containers(service, every=True):
                (path.parent / f"{service}-{container[:12]}.log").write_text(
                    stack.logs(container))
        stack.compose("down", "-v", "--remove-orphans")
        stack.redis.close()


# -- the tests, in the order they run: each leaves the stack as the next expects it -----------

MANIFEST = load_manifest(REPO / "models" / "sprites")  # the model the images bake in
T, SIZE = MANIFEST.seq_len, MANIFEST.frame_size


def clip(seed: int) -> bytes:
    return encode(moving_square(frames=T, width=SIZE, height=SIZE, seed=seed))


def mp4_frames(content: bytes) -> np.ndarray:
    """(T, H, W, 3) uint8 decoded from an MP4 answer."""
    with av.open(io.BytesIO(content)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def swap_requests(client: httpx.AsyncClient, n: int) -> list[asyncio.Task]:
    """n /swap requests (npz answers) started now, on the running event loop."""
    return [asyncio.create_task(client.post(
        "/swap", params={"format": "npz"},
        files={"appearance": ("a.mp4", clip(i), "video/mp4"),
               "motion": ("m.mp4", clip(i + 100), "video/mp4")})) for i in range(n)]


def held(stack: Stack) -> dict[str, int]:
    """Jobs each worker has read and not answered (answered jobs are deleted from the stream)."""
    try:
        consumers = stack.redis.xinfo_consumers(SPRITES_JOBS, GROUP)
    except redis.ResponseError:  # no group yet
        return {}
    return {c["name"].decode(): c["pending"] for c in consumers if c["pending"]}


def test_encode_swap_generate_through_the_api(stack, pytestconfig):
    started = time.monotonic()
    with Client(stack.url, timeout_s=60) as vdis:
        ready = vdis.ready()
        assert ready["engine"] == "redis" and len(ready["workers"]) == 2
        assert {(w["provider"], w["device"]) for w in ready["workers"]} == \
            {("CPUExecutionProvider", "cpu")}
        assert vdis.model()["name"] == MANIFEST.name
        codes = vdis.encode(clip(0))
        assert codes.appearance.shape == (MANIFEST.appearance_dim,)
        assert codes.motion.shape == (T, MANIFEST.motion_dim)
        assert np.isfinite(codes.appearance).all() and np.isfinite(codes.motion).all()
        swapped = vdis.swap(clip(0), clip(1))
        frames = mp4_frames(swapped.content)
        assert swapped.media_type == "video/mp4" and frames.shape == (T, SIZE, SIZE, 3)
        assert frames.std() > 1  # a picture, not a flat colour
        generated = vdis.generate(clip(2), n=4, seed=7, format="npz")
        assert generated.array.shape == (4, T, SIZE, SIZE, 3)
        # motion sampled, appearance kept: four different videos
        assert len({generated.array[i].tobytes() for i in range(4)}) == 4
        # the same request and seed through the other worker (or the same): the same videos
        again = vdis.generate(clip(2), n=4, seed=7, format="npz")
        np.testing.assert_allclose(again.array.astype(int), generated.array.astype(int), atol=2)
    report(pytestconfig, f"/encode, /swap, /generate answered and checked in "
                         f"{time.monotonic() - started:.1f} s")


def test_a_worker_container_killed_mid_batch_loses_no_request(stack, pytestconfig):
    n = 24

    async def main():
        async with httpx.AsyncClient(base_url=stack.url, timeout=90) as client:
            tasks = swap_requests(client, n)
            workers = stack.worker_containers()
            victim, lost = None, 0
            deadline = time.monotonic() + 60
            while victim is None:
                assert time.monotonic() < deadline, "no worker ever held 4 jobs at once"
                for name, count in held(stack).items():
                    pid = int(name.rsplit("-", 1)[1])
                    if pid in workers and count >= 4:
                        victim, lost = workers[pid], count
                        break
                await asyncio.sleep(0.02)
            await asyncio.to_thread(run, [stack.cli, "kill", victim])
            killed = time.monotonic()
            answers = await asyncio.gather(*tasks, return_exceptions=True)
            return victim, lost, answers, time.monotonic() - killed

    victim, lost, answers, after_s = asyncio.run(main())
    codes = [a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers]
    report(pytestconfig, f"worker {victim[:12]} SIGKILLed holding {lost} jobs: "
                         f"{codes.count(200)}/{len(answers)} requests answered 200, the last "
                         f"{after_s:.1f} s after the kill")
    assert lost > 0
    assert codes == [200] * len(answers), codes
    for answer in answers:
        assert np.load(io.BytesIO(answer.content))["videos"].shape == (1, T, SIZE, SIZE, 3)
    assert stack.inspect(victim, "{{.State.ExitCode}}") == "137"
    # back to two workers for the next tests
    stack.compose("up", "-d", "--no-build", "--no-recreate", "--scale", "worker=2")
    stack.wait_healthy({"worker": 2})


def test_sigterm_lets_the_workers_finish_their_batch(stack, pytestconfig):
    """/encode: one model job per request, so "every job read by a worker, none answered" is
    "every request in a batch being run" when SIGTERM comes."""
    n = 8

    async def main():
        async with httpx.AsyncClient(base_url=stack.url, timeout=90) as client:
            tasks = [asyncio.create_task(client.post(
                "/encode", files={"video": ("v.mp4", clip(i), "video/mp4")})) for i in range(n)]
            deadline = time.monotonic() + 60
            while True:
                assert time.monotonic() < deadline, "the workers never held the whole burst"
                holding = held(stack)
                if sum(holding.values()) == n == stack.redis.xlen(SPRITES_JOBS):
                    break
                await asyncio.sleep(0.02)
            started = time.monotonic()
            await asyncio.to_thread(stack.compose, "stop", "worker")  # SIGTERM, grace 30 s
            stopped_s = time.monotonic() - started
            return holding, await asyncio.gather(*tasks, return_exceptions=True), stopped_s

    holding, answers, stopped_s = asyncio.run(main())
    codes = [a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers]
    workers = stack.containers("worker", every=True)
    exits = {c[:12]: stack.inspect(c, "{{.State.ExitCode}}") for c in workers}
    report(pytestconfig, f"SIGTERM to the workers holding {sorted(holding.values())} of {n} "
                         f"jobs: stopped in {stopped_s:.1f} s, exit codes {exits}, "
                         f"{codes.count(200)}/{n} requests answered 200")
    assert codes == [200] * n, codes
    assert set(exits.values()) == {"0"}
    for container in workers:
        log = stack.logs(container)
        assert "finishing the batches in flight" in log and "stopped after" in log


def test_async_jobs_survive_a_redis_restart(stack, pytestconfig):
    """Accepted with no worker running, Redis restarted, then workers started: all answered."""
    n = 6
    stack.compose("stop", "worker")  # the test before stopped them; run alone, it does
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        ids = []
        for i in range(n):
            accepted = http.post("/swap", params={"async": "true", "format": "npz"},
                                 files={"appearance": ("a.mp4", clip(i), "video/mp4"),
                                        "motion": ("m.mp4", clip(i + 50), "video/mp4")})
            assert accepted.status_code == 202, accepted.text
            ids.append(accepted.json()["id"])

        def streams() -> tuple[int, int, int]:
            """(async request entries, those an API process took, model jobs queued)"""
            taken = stack.redis.xpending(PREFIX.async_requests, ASYNC_GROUP)["pending"]
            return stack.redis.xlen(PREFIX.async_requests), taken, stack.redis.xlen(SPRITES_JOBS)
        # the API took every request and queued its model job (one per swap), which no
        # worker reads
        wait_for(lambda: streams() == (n, n, n), 60, f"{n} requests' model jobs queued")
        before = streams()
        started = time.monotonic()
        stack.compose("restart", "redis")
        stack.wait_healthy({"redis": 1})
        after = streams()
        restarted_s = time.monotonic() - started
        assert after == before, f"streams before the restart {before}, after {after}"
        stack.compose("start", "worker")

        def answered():  # {"status": "queued" | "running"} until then
            states = [http.get(f"/jobs/{i}") for i in ids]
            return states if all("x-vdis-job-status" in s.headers for s in states) else None
        answers = wait_for(answered, 120, "the async jobs' answers", every_s=0.5)
        done_s = time.monotonic() - started
    codes = [a.status_code for a in answers]
    report(pytestconfig, f"{n} async jobs accepted with no worker; Redis restarted in "
                         f"{restarted_s:.1f} s with both streams kept {after}; "
                         f"{codes.count(200)}/{n} answered 200, the last {done_s:.1f} s after "
                         "the restart began")
    assert codes == [200] * n, [a.text[:300] for a in answers]
    for answer in answers:
        assert np.load(io.BytesIO(answer.content))["videos"].shape == (1, T, SIZE, SIZE, 3)
    stack.wait_healthy({"worker": 2})


def test_the_stack_stops_cleanly_on_sigterm(stack, pytestconfig):
    started = time.monotonic()
    stack.compose("stop")  # SIGTERM to each container, then its grace period
    stopped_s = time.monotonic() - started
    exits = {}
    for service in ("redis", "api", "worker"):
        for container in stack.containers(service, every=True):
            exits[f"{service} {container[:12]}"] = stack.inspect(container,
                                                                 "{{.State.ExitCode}}")
            log = stack.logs(container)
            if service == "worker":
                assert "stopped after" in log, log[-2000:]
            if service == "api":
                assert "Application shutdown complete" in log, log[-2000:]
    report(pytestconfig, f"compose stop (SIGTERM): {stopped_s:.1f} s, exit codes {exits}")
    # uvicorn re-raises SIGTERM after its clean shutdown; as pid 1 it is ignored: exit 0
    assert set(exits.values()) <= {"0", "143"} and exits, exits
    assert sum(s.startswith("worker") for s in exits) == 2
