"""The Docker deployment, checked without a Docker engine.

(a) docker-compose.yml and docker-compose.cpu.yml against the compose specification (the schema
    vendored in check-jsonschema, so it runs offline), alone and merged as compose merges them;
(b) docker/Dockerfile, structurally, for each image it builds (its target stage and the stages
    under it): pinned base images, dependencies before code, non-root user, health check,
    exec-form commands, one onnxruntime; what .dockerignore leaves in;
(c) every command the containers run (CMD, compose `command`, health checks), started outside
    Docker with the environment compose gives it, against the local Redis.
tests/docker/test_stack.py builds the CPU images and runs the stack in Docker.
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
DOCKERFILE = REPO / "docker" / "Dockerfile"
# The images compose builds from it: (target, FLAVOUR)
IMAGES = {"api": ("api", "cpu"), "worker-cpu": ("worker", "cpu"), "worker-gpu": ("worker", "gpu")}
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
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert set(services) == {"redis", "api", "worker"}
    redis, api, worker = services["redis"], services["api"], services["worker"]
    assert interpolate(redis["image"]) == "redis:7-alpine"
    assert interpolate(redis["image"], {"VDIS_REDIS_IMAGE": "vdis-redis"}) == "vdis-redis"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for service in (api, worker):
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert service["environment"]["VDIS_REDIS_URL"] == "redis://redis:6379/0"
    assert interpolate(api["ports"][0]) == "8000:8000"
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert interpolate(worker["environment"]["VDIS_REQUIRE_GPU"]) == "true"
    builds = {name: (services[name]["build"]["target"],
                     services[name]["build"].get("args", {}).get("FLAVOUR", "cpu"))
              for name in ("api", "worker")}
    assert builds == {"api": IMAGES["api"], "worker": IMAGES["worker-gpu"]}


def test_redis_keeps_accepted_jobs_across_a_restart():
    """The job streams are in an append-only file, fsynced each second, on a named volume."""
    compose = load_yaml(COMPOSE)
    command = compose["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert command[0] == "redis-server"
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    (volume,) = compose["services"]["redis"]["volumes"]
    name, target = volume.split(":")
    assert target == options["--dir"] == "/data" and name in compose["volumes"]


def test_cpu_override_drops_the_gpu():
    worker = merged_cpu()["services"]["worker"]
    assert "deploy" not in worker
    assert (worker["build"]["target"], worker["build"]["args"]["FLAVOUR"]) == IMAGES["worker-cpu"]
    assert worker["build"]["dockerfile"] == "docker/Dockerfile"
    assert interpolate(worker["image"]).startswith("vdis-worker-cpu:")
    assert worker["environment"]["VDIS_PROVIDERS"] == "CPUExecutionProvider"
    assert worker["environment"]["VDIS_REQUIRE_GPU"] == "false"
    assert "command" not in worker and "healthcheck" not in worker  # the worker stage's own


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


# -- (b) the Dockerfile ---------------------------------------------------------------------

def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def build_args(path: Path = DOCKERFILE) -> dict[str, str]:
    """The global ARGs (before the first FROM) and their defaults."""
    args = {}
    for kind, value in instructions(path):
        if kind == "FROM":
            break
        name, _, default = value.partition("=")
        args[name] = default
    return args


def stages(path: Path = DOCKERFILE) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Each stage's name: (what it is FROM, its instructions after the FROM)."""
    found, current = {}, None
    for kind, value in instructions(path):
        if kind == "FROM":
            base, _, name = value.partition(" AS ")
            current = found[name.strip()] = (base.strip(), [])
        elif current is not None:
            current[1].append((kind, value))
    return found


def image_steps(image: str) -> tuple[str, list[tuple[str, str]]]:
    """The base image an image of IMAGES starts from and every instruction it runs, as BuildKit
    chains the stages for its target and FLAVOUR (the default BASE)."""
    target, flavour = IMAGES[image]
    args, found = {**build_args(), "FLAVOUR": flavour}, stages()
    chain, name = [], target
    while name in found:
        base, steps = found[name]
        chain[:0] = steps
        name = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    return name, chain


def test_one_dockerfile_builds_every_image():
    """api and worker are targets over one runtime stage: a GPU worker runs the lines that the
    CPU images run in tests/docker/test_stack.py, less its base stage."""
    found = stages()
    assert found["api"][0] == found["worker"][0] == "runtime"
    assert found["runtime"][0] == "base-${FLAVOUR}"
    assert build_args()["FLAVOUR"] == "cpu"
    assert found["base-cpu"] == ("${BASE}", [])
    assert image_steps("worker-gpu")[1][len(found["base-gpu"][1]):] == image_steps("worker-cpu")[1]


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dockerfile_structure(image):
    base, steps = image_steps(image)
    kinds = [k for k, _ in steps]
    assert re.fullmatch(r"[\w./-]+:\d+(\.\d+)+[\w.-]*", base), f"pin the base image: {base}"
    # dependencies are installed before the code is copied, so code edits reuse that layer
    install = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "pip install" in a)
    code = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and a.startswith("service/"))
    assert install < code
    assert all(not a.startswith(("service", ".")) for k, a in steps[:install] if k == "COPY")
    for kind, args in steps:
        if kind == "COPY" and not args.startswith("--from="):
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: no such path"
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1] not in ("root", "0") and kinds.index("USER") > code
    assert kinds.count("HEALTHCHECK") == 1 and kinds[-1] == "CMD"
    for kind, args in steps:
        if kind in ("CMD", "HEALTHCHECK"):
            assert json.loads(args[args.index("["):]), f"{kind} in exec form"
    assert "VDIS_MODELS_DIR=/app/models" in " ".join(a for k, a in steps if k == "ENV")


def test_containers_run_as_non_root():
    """Each image ends as a system user made with a non-zero uid, and compose takes nothing
    back: no `user: root`, no privileged mode, no added capabilities."""
    for image in IMAGES:
        steps = image_steps(image)[1]
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
    # the runtime stage installs what the requirements stage (on the same base) wrote
    requirements_base, requirements_steps = stages()["requirements"]
    assert requirements_base == stages()["runtime"][0]
    written = next(a for k, a in requirements_steps if k == "RUN" and "requirements.py" in a)
    assert "--onnxruntime ${FLAVOUR}" in written and written.endswith("> /requirements.txt")
    copied = [a for k, a in stages()["runtime"][1] if k == "COPY" and a.startswith("--from=")]
    assert copied == ["--from=requirements /requirements.txt /tmp/requirements.txt"]
    for image, (_, flavour) in IMAGES.items():
        base, steps = image_steps(image)
        assert ("nvidia" in base) == (flavour == "gpu"), image
        assert "VDIS_REQUIRE_GPU=true" in " ".join(a for k, a in steps if k == "ENV") \
            or flavour == "cpu", image


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

def container_command(target: str) -> list[str]:
    cmd = next(a for k, a in stages()[target][1] if k == "CMD")
    return json.loads(cmd)


def healthcheck(target: str) -> list[str]:
    args = next(a for k, a in stages()[target][1] if k == "HEALTHCHECK")
    return json.loads(args[args.index("["):])


def on_port(command: list[str], port: int) -> list[str]:
    """A container command that serves (or checks) `port` on 127.0.0.1 instead of :8000."""
    command = [c.replace(":8000/", f":{port}/") for c in command]
    if "--port" in command:
        command[command.index("--port") + 1] = str(port)
    if "--host" in command:
        command[command.index("--host") + 1] = "127.0.0.1"
    return command


def local(command: list[str], port: int | None = None) -> list[str]:
    """A container command for this machine: this Python, and a free port for 8000."""
    command = [sys.executable if c == "python" else c for c in command]
    return command if port is None else on_port(command, port)


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
    worker_cmd = local(container_command("worker"))
    worker_check = local(healthcheck("worker"))
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
