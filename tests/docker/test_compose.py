"""The Docker deployment, checked without a Docker engine.

(a) docker-compose.yml and docker-compose.cpu.yml against the compose specification (the schema
    vendored in check-jsonschema, so it runs offline), alone and merged as compose merges them;
(b) the Dockerfiles, structurally: pinned base images, dependencies before code, non-root user,
    health check, exec-form commands, what .dockerignore leaves in;
(c) every command the containers run (CMD, compose `command`, health checks), started outside
    Docker with the environment compose gives it, against the local Redis.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from ruamel.yaml import YAML

from service.engine.runner import cuda_usable
from service.settings import REPO, Settings
from tests.service.redisutil import REDIS_URL, delete_keys, free_port, wait_for

COMPOSE = REPO / "docker-compose.yml"
CPU_OVERRIDE = REPO / "docker-compose.cpu.yml"
DOCKERFILES = {"api": REPO / "docker" / "api.Dockerfile",
               "worker": REPO / "docker" / "worker.Dockerfile"}
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
RESET = object()  # compose's `!reset` tag: drop the key when merging


def load_requirements_script():
    """docker/requirements.py by path: `docker` is no package (and the name of a PyPI one)."""
    spec = importlib.util.spec_from_file_location("docker_requirements",
                                                  REPO / "docker" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_yaml(path: Path) -> dict:
    """A compose file as compose reads it: merge keys resolved, `!reset` kept as RESET."""
    yaml = YAML(typ="safe")
    yaml.constructor.add_constructor("!reset", lambda loader, node: RESET)
    return yaml.load(path.read_text())


def merge(base, override):
    """Compose's merge, for mappings and scalars (enough for these files)."""
    if override is RESET:
        return RESET
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base.get(key), value)
            if merged[key] is RESET:
                del merged[key]
        return merged
    return override


def without_reset(document):
    if isinstance(document, dict):
        return {k: without_reset(v) for k, v in document.items() if v is not RESET}
    return document


def validate(document: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / f"compose-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(document))
    return subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, timeout=120)


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """${VAR:-default} and ${VAR} as compose expands them (VAR taken from `env`)."""
    env = env or {}

    def one(match):
        name, default = match.group(1), match.group(3) or ""
        return env.get(name) or default
    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", one, value)


def merged_cpu() -> dict:
    return merge(load_yaml(COMPOSE), load_yaml(CPU_OVERRIDE))


# -- (a) the compose files ------------------------------------------------------------------

def test_compose_files_follow_the_compose_spec(tmp_path):
    done = subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec",
                           str(COMPOSE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    override = validate(without_reset(load_yaml(CPU_OVERRIDE)), tmp_path)
    assert override.returncode == 0, override.stdout + override.stderr
    merged = validate(merged_cpu(), tmp_path)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    # the validator does refuse a wrong file
    broken = load_yaml(COMPOSE)
    broken["services"]["api"]["ports"] = 8000
    assert validate(broken, tmp_path).returncode != 0


def test_services_redis_api_and_scalable_gpu_workers():
    services = load_yaml(COMPOSE)["services"]
    assert set(services) == {"redis", "api", "worker"}
    redis, api, worker = services["redis"], services["api"], services["worker"]
    assert redis["image"] == "redis:7-alpine"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for service in (api, worker):
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert service["environment"]["VDIS_REDIS_URL"] == "redis://redis:6379/0"
    assert interpolate(api["ports"][0]) == "8000:8000"
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert interpolate(worker["environment"]["VDIS_REQUIRE_GPU"]) == "true"


def test_cpu_override_drops_the_gpu():
    worker = merged_cpu()["services"]["worker"]
    assert "deploy" not in worker
    assert worker["build"]["dockerfile"] == "docker/api.Dockerfile"
    assert worker["environment"]["VDIS_PROVIDERS"] == "CPUExecutionProvider"
    assert worker["environment"]["VDIS_REQUIRE_GPU"] == "false"
    assert worker["healthcheck"]["test"][1:] == ["python", "-m", "service.worker", "--check"]


def test_every_setting_in_compose_is_a_real_setting():
    """A misspelt VDIS_ variable would be silently ignored by the service."""
    known = {f"VDIS_{name}" for name in Settings.model_fields} | {"VDIS_LOG_LEVEL"}
    for path in (COMPOSE, CPU_OVERRIDE):
        for name, service in load_yaml(path)["services"].items():
            for key, value in service.get("environment", {}).items():
                assert not key.startswith("VDIS_") or key in known, f"{path.name} {name}: {key}"
                # and each default parses as that setting
                if key in known - {"VDIS_LOG_LEVEL"} and interpolate(str(value)):
                    Settings(**{key[5:]: interpolate(str(value))})


# -- (b) the Dockerfiles --------------------------------------------------------------------

def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_structure(image):
    steps = instructions(DOCKERFILES[image])
    kinds = [k for k, _ in steps]
    base = steps[0][1]
    assert kinds[0] == "FROM" and kinds.count("FROM") == 1
    assert re.fullmatch(r"[\w./-]+:\d+(\.\d+)+[\w.-]*", base), f"pin the base image: {base}"
    # dependencies are installed before the code is copied, so code edits reuse that layer
    install = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "pip install" in a)
    code = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and a.startswith("service/"))
    assert install < code
    assert all(not a.startswith(("service", ".")) for k, a in steps[:install] if k == "COPY")
    for kind, args in steps:
        if kind == "COPY":
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: no such path"
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1] not in ("root", "0") and kinds.index("USER") > code
    assert kinds.count("HEALTHCHECK") == 1 and kinds[-1] == "CMD"
    for kind, args in steps:
        if kind in ("CMD", "HEALTHCHECK"):
            assert json.loads(args[args.index("["):]), f"{kind} in exec form"
    assert "VDIS_MODEL_DIR=/app/models/sprites" in " ".join(a for k, a in steps if k == "ENV")


def test_containers_run_as_non_root():
    """Each image ends as a system user made with a non-zero uid, and compose takes nothing
    back: no `user: root`, no privileged mode, no added capabilities."""
    for image, path in DOCKERFILES.items():
        steps = instructions(path)
        user = [a for k, a in steps if k == "USER"][-1]
        created = [a for k, a in steps if k == "RUN" and "useradd" in a]
        assert created and re.search(rf"--uid (\d+) .*\b{user}$", created[-1]), image
        assert int(re.search(r"--uid (\d+)", created[-1]).group(1)) >= 1000, image
    for path in (COMPOSE, CPU_OVERRIDE):
        for name, service in load_yaml(path)["services"].items():
            assert str(service.get("user", "")).split(":")[0] not in ("root", "0"), name
            assert not service.get("privileged") and not service.get("cap_add"), name


def test_one_onnxruntime_per_image():
    pyproject = REPO / "pyproject.toml"
    requirements = load_requirements_script().requirements
    names = {flavour: [r.split("==")[0] for r in requirements(pyproject, flavour)]
             for flavour in ("cpu", "gpu")}
    assert "onnxruntime" in names["cpu"] and "onnxruntime-gpu" not in names["cpu"]
    assert "onnxruntime-gpu" in names["gpu"] and "onnxruntime" not in names["gpu"]
    assert not any(n.startswith("torch") for n in names["cpu"])
    api = DOCKERFILES["api"].read_text()
    assert "--onnxruntime cpu" in api and "nvidia" not in api
    assert "--onnxruntime gpu" in DOCKERFILES["worker"].read_text()


def test_dockerignore_keeps_the_context_small():
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text()
               .splitlines() if line.strip() and not line.startswith("#")}
    assert {".venv", ".cache", "runs", ".git", "tests"} <= ignored
    assert not {"service", "models", "pyproject.toml", "docker"} & ignored


def test_the_shipped_model_is_there_to_bake_in():
    manifest = REPO / "models" / "sprites" / "manifest.json"
    if not manifest.is_file():
        pytest.skip("models/sprites is not exported yet: the images would have no default model")
    from service.engine.manifest import load_manifest
    assert load_manifest(manifest.parent).name


# -- (c) the containers' commands, outside Docker ---------------------------------------------

def container_command(image: str) -> list[str]:
    cmd = next(a for k, a in instructions(DOCKERFILES[image]) if k == "CMD")
    return json.loads(cmd)


def healthcheck(image: str) -> list[str]:
    args = next(a for k, a in instructions(DOCKERFILES[image]) if k == "HEALTHCHECK")
    return json.loads(args[args.index("["):])


def local(command: list[str], port: int | None = None) -> list[str]:
    """A container command for this machine: this Python, and a free port for 8000."""
    command = [sys.executable if c == "python" else c for c in command]
    if port is not None:
        command = [c.replace(":8000/", f":{port}/") for c in command]
        if "--port" in command:
            command[command.index("--port") + 1] = str(port)
        if "--host" in command:
            command[command.index("--host") + 1] = "127.0.0.1"
    return command


def compose_env(service: dict, model_dir: Path, prefix: str) -> dict[str, str]:
    """The service's environment with compose's defaults; Redis and model made local."""
    env = {k: interpolate(str(v)) for k, v in service["environment"].items()}
    env.update(VDIS_REDIS_URL=REDIS_URL, VDIS_REDIS_PREFIX=prefix,
               VDIS_MODEL_DIR=str(model_dir), VDIS_INTRA_OP_THREADS="1",
               VDIS_INTER_OP_THREADS="1")
    return {**os.environ, **env}


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT)


def test_gpu_worker_refuses_to_run_on_cpu(tiny_model_dir, tmp_path):
    if cuda_usable():
        pytest.skip("a GPU is usable here: the GPU worker would start")
    prefix = f"vdis-test-docker-{uuid.uuid4().hex[:8]}"
    env = compose_env(load_yaml(COMPOSE)["services"]["worker"], tiny_model_dir, prefix)
    done = subprocess.run(local(container_command("worker")), env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "VDIS_REQUIRE_GPU is set but onnxruntime" in done.stderr
    delete_keys(prefix)


def test_api_and_cpu_worker_start_answer_and_stop(tiny_model_dir, tmp_path):
    services = merged_cpu()["services"]
    prefix = f"vdis-test-docker-{uuid.uuid4().hex[:8]}"
    api_env = compose_env(services["api"], tiny_model_dir, prefix)
    worker_env = compose_env(services["worker"], tiny_model_dir, prefix)
    worker_cmd = local(services["worker"]["command"])
    worker_check = local(services["worker"]["healthcheck"]["test"][1:])
    port = free_port()
    api_cmd, api_check = local(container_command("api"), port), local(healthcheck("api"), port)
    assert api_cmd[1:4] == ["-m", "uvicorn", "service.app:app"]
    assert worker_cmd[1:] == ["-m", "service.worker"]

    # before any worker beats, the worker's health check fails
    early = subprocess.run(worker_check, env=worker_env, cwd=REPO, capture_output=True,
                           text=True, timeout=60)
    assert early.returncode == 1 and "no worker on host" in early.stderr

    api = start(api_cmd, api_env, tmp_path / "api.log")
    worker = start(worker_cmd, worker_env, tmp_path / "worker.log")
    try:
        def ready():
            for process, log in ((api, "api.log"), (worker, "worker.log")):
                assert process.poll() is None, (tmp_path / log).read_text()
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
            except httpx.HTTPError:
                return None
            return answer.json() if answer.status_code == 200 else None
        body = wait_for(ready, 120, "/ready through the API and a worker", every_s=0.5)
        assert body["status"] == "ready" and body["engine"] == "redis"
        (beat,) = body["workers"]
        assert (beat["provider"], beat["device"]) == ("CPUExecutionProvider", "cpu")
        for check in (api_check, worker_check):
            done = subprocess.run(check, env=worker_env, cwd=REPO, capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, shlex.join(check) + "\n" + done.stderr
    finally:
        for process in (api, worker):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = [process.wait(30) for process in (api, worker)]
        delete_keys(prefix)
    logs = io.StringIO()
    for name in ("api.log", "worker.log"):
        logs.write((tmp_path / name).read_text())
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal so that its exit
    # status says how it ended (143 in `docker ps`): clean means the shutdown completed
    assert codes[0] in (0, -signal.SIGTERM), logs.getvalue()
    assert "Application shutdown complete" in (tmp_path / "api.log").read_text()
    assert "Finished server process" in (tmp_path / "api.log").read_text()
    assert codes[1] == 0, logs.getvalue()  # the worker drains its batch and returns
    assert "stopped after" in (tmp_path / "worker.log").read_text()
