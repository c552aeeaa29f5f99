"""The `vdis` command end to end: each client subcommand against a real `vdis serve`, a worker
through Redis, and train/evaluate/export handed to their own command lines."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from service.settings import REPO
from tests.liveservice import free_port, running_service
from tests.service.redisutil import delete_keys

SAMPLES = sorted((REPO / "service" / "static" / "samples").glob("*.mp4"))
# The installed console script when there is one (pip install -e .), else the module.
SCRIPT = Path(sys.executable).with_name("vdis")
VDIS = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "vdis"]


def vdis(*args, url: str | None = None, env: dict | None = None, timeout_s: float = 300,
         ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("VDIS_URL", None)
    if url:
        full_env["VDIS_URL"] = url
    return subprocess.run([*VDIS, *map(str, args)], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout_s)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def mp4_frames(path: Path) -> np.ndarray:
    with av.open(io.BytesIO(path.read_bytes())) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_help_lists_every_command():
    out = ok(vdis("--help")).stdout
    for command in ("serve", "worker", "models", "encode", "decode", "swap", "generate",
                    "train", "evaluate", "export"):
        assert f"    {command} " in out
    assert "VDIS_URL" in out
    swap_help = ok(vdis("swap", "--help")).stdout
    assert "usage: vdis swap" in swap_help and "-o OUT" in swap_help and "--both" in swap_help
    assert "--model NAME" in swap_help
    assert "--models-dir" in ok(vdis("serve", "--help")).stdout
    assert "--model-dir" in ok(vdis("serve", "--help")).stdout
    assert "--redis-url" in ok(vdis("worker", "--help")).stdout


def test_encode_prints_json_and_writes_npz(service_url, tmp_path):
    result = ok(vdis("encode", SAMPLES[0], "--url", service_url))
    codes = json.loads(result.stdout)
    assert np.array(codes["motion"]["mean"]).shape == (8, 16)
    assert len(codes["appearance"]["mean"]) == 32 and codes["model"] == "tiny-dsvae"
    out = tmp_path / "codes.npz"
    result = ok(vdis("encode", SAMPLES[0], "--frames", "4", "-o", out, url=service_url))
    assert "motion (4, 16)" in result.stderr
    with np.load(out) as arrays:
        assert arrays["motion_mean"].shape == (4, 16) and arrays["appearance_mean"].shape == (32,)
    as_json = tmp_path / "codes.json"
    ok(vdis("encode", SAMPLES[0], "-o", as_json, url=service_url))
    written = json.loads(as_json.read_text())
    assert written["appearance"]["mean"] == codes["appearance"]["mean"]
    assert written["motion"]["logvar"] == codes["motion"]["logvar"]


def test_decode_turns_codes_back_into_a_video(service_url, tmp_path):
    for name in ("codes.json", "codes.npz"):
        codes = tmp_path / name
        ok(vdis("encode", SAMPLES[2], "--frames", "5", "-o", codes, url=service_url))
        out = tmp_path / f"recon-{codes.suffix[1:]}.mp4"
        result = ok(vdis("decode", codes, "-o", out, "--scale", "2", url=service_url))
        assert mp4_frames(out).shape == (5, 128, 128, 3)
        assert f"{out}: " in result.stderr and "results 1x5x64x64x3" in result.stderr
    # the JSON /encode answers (not only what vdis encode writes) decodes too
    answer = tmp_path / "answer.json"
    with SAMPLES[0].open("rb") as f:
        answer.write_bytes(httpx.post(service_url + "/encode", files={"video": f}).content)
    strip = tmp_path / "recon.png"
    ok(vdis("decode", answer, "-o", strip, url=service_url))
    assert strip.read_bytes().startswith(b"\x89PNG")
    notes = tmp_path / "notes.json"
    notes.write_text('{"appearance": 1}')
    result = vdis("decode", notes, "-o", tmp_path / "x.mp4", url=service_url)
    assert result.returncode != 0 and "is not codes from `vdis encode`" in result.stderr
    result = vdis("decode", tmp_path / "missing.json", "-o", tmp_path / "x.mp4",
                  url=service_url)
    assert result.returncode == 2 and "no such file" in result.stderr


def test_swap_writes_a_video(service_url, tmp_path):
    out = tmp_path / "swap.mp4"
    result = ok(vdis("swap", SAMPLES[0], SAMPLES[1], "-o", out, "--scale", "2", url=service_url))
    assert mp4_frames(out).shape == (8, 128, 128, 3)
    assert f"{out}: " in result.stderr and "results 1x8x64x64x3" in result.stderr
    both = tmp_path / "both.npz"
    ok(vdis("swap", SAMPLES[0], SAMPLES[1], "--both", "-o", both, "--url", service_url))
    with np.load(both) as arrays:
        assert arrays["videos"].shape == (2, 8, 64, 64, 3)


def test_generate_writes_a_grid_and_says_the_seed(service_url, tmp_path):
    out = tmp_path / "generated.mp4"
    result = ok(vdis("generate", SAMPLES[2], "-n", 4, "--seed", 11, "-o", out, url=service_url))
    assert mp4_frames(out).shape == (8, 128, 128, 3)  # 2 x 2 results of 64 x 64
    assert "grid 2x2, seed 11" in result.stderr
    png = tmp_path / "appearances.png"
    ok(vdis("generate", SAMPLES[2], "-n", 2, "--sample", "appearance", "-o", png,
            url=service_url))
    assert png.read_bytes().startswith(b"\x89PNG")


def test_models_lists_them_and_model_picks_one(two_models_url, tmp_path):
    listed = ok(vdis("models", url=two_models_url))
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["model", "frames", "T", "F", "Z", "domain"]
    assert lines[1].split()[:5] == ["tiny-b", "64x64", "8", "32", "16"]
    assert "Moving MNIST" in lines[1]
    assert lines[2].startswith("* tiny-dsvae") and "the default" in listed.stderr
    codes = tmp_path / "codes.json"
    ok(vdis("encode", SAMPLES[0], "-o", codes, "--model", "tiny-b", url=two_models_url))
    assert json.loads(codes.read_text())["model"] == "tiny-b"
    out = tmp_path / "swap.npz"
    ok(vdis("swap", SAMPLES[0], SAMPLES[1], "-o", out, "--model", "tiny-b", url=two_models_url))
    unknown = vdis("generate", SAMPLES[0], "-o", out, "--model", "nope", url=two_models_url)
    assert unknown.returncode == 1
    assert "404 No model of that name is served here" in unknown.stderr


def test_client_errors_are_one_clear_line(service_url, tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    result = vdis("encode", notes, url=service_url)
    assert result.returncode == 1
    # a progress line, then the problem in one line: status, title, detail
    assert result.stderr.splitlines()[-1].startswith(
        "vdis encode: 400 The upload is not a video FFmpeg can read: `video` (notes.mp4) is "
        "refused: no video container")
    result = vdis("generate", SAMPLES[0], "-n", 99, "-o", tmp_path / "x.mp4", url=service_url)
    assert result.returncode == 1 and "n=99 is above the limit" in result.stderr
    result = vdis("swap", SAMPLES[0], SAMPLES[1], "-o", tmp_path / "x.avi", url=service_url)
    assert result.returncode != 0 and "cannot tell the format from 'x.avi'" in result.stderr
    result = vdis("swap", SAMPLES[0], tmp_path / "missing.mp4", "-o", tmp_path / "x.mp4",
                  url=service_url)
    assert result.returncode == 2 and "no such file" in result.stderr
    result = vdis("encode", SAMPLES[0], "--url", f"http://127.0.0.1:{free_port()}",
                  "--timeout", "5")
    assert result.returncode == 1 and "service unreachable: no answer from" in result.stderr


def test_worker_serves_an_api_through_redis(model_dir_for_cli, tmp_path):
    redis = pytest.importorskip("redis")
    url = os.environ.get("VDIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {url}")
    prefix = f"vdis-test-cli-{os.getpid()}"
    env = {"VDIS_REDIS_PREFIX": prefix, "VDIS_INTRA_OP_THREADS": "1",
           "VDIS_INTER_OP_THREADS": "1", "VDIS_HEARTBEAT_S": "0.2"}
    worker = subprocess.Popen([*VDIS, "worker", "--redis-url", url, "--model-dir",
                               str(model_dir_for_cli)], cwd=REPO, env={**os.environ, **env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with running_service(model_dir_for_cli, env={**env, "VDIS_REDIS_URL": url}) as api:
            out = tmp_path / "swap.gif"
            ok(vdis("swap", SAMPLES[3], SAMPLES[0], "-o", out, url=api))
            assert out.read_bytes().startswith(b"GIF8")
    finally:
        worker.terminate()
        assert worker.wait(20) == 0  # SIGTERM drains and exits cleanly
        delete_keys(prefix, url)  # the jobs stream has no TTL: it would outlive the test
    with redis.Redis.from_url(url) as client:
        assert not list(client.scan_iter(f"{prefix}:*"))
    missing = vdis("worker", env={"VDIS_REDIS_URL": ""})
    assert missing.returncode == 1 and "VDIS_REDIS_URL is not set" in missing.stderr


@pytest.fixture(scope="module")
def model_dir_for_cli(request) -> Path:
    return Path(os.environ.get("VDIS_TEST_MODEL_DIR") or request.getfixturevalue("tiny_model_dir"))


# ---------------------------------------------------------------------------------------------
# train, evaluate, export: handed to python -m model.train / model.evaluate / export


@pytest.mark.parametrize("command, expected", [
    ("train", "usage: vdis train"), ("evaluate", "usage: vdis evaluate"),
    ("export", "checkpoint out_dir"),
])
def test_delegated_help(command, expected):
    pytest.importorskip("torch")
    assert expected in ok(vdis(command, "--help")).stdout


def test_delegated_commands_say_when_torch_is_missing():
    code = ("import sys; sys.modules['torch'] = None; from vdis.cli import main; "
            "sys.exit(main(['train', '--epochs', '1']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "vdis train: needs the training extras, and 'torch' is not installed" in result.stderr
    assert "pip install -e '.[train]'" in result.stderr


def test_train_export_and_serve_a_tiny_model(tmp_path):
    """vdis train (one epoch on the four sample clips) -> vdis export -> vdis serve -> encode."""
    pytest.importorskip("torch")
    clips = tmp_path / "clips"
    clips.mkdir()
    for sample in SAMPLES:
        (clips / sample.name).write_bytes(sample.read_bytes())
    run = tmp_path / "run"
    ok(vdis("train", "--dataset", f"folder:{clips}", "--epochs", 1, "--batch-size", 4,
            "--width", 8, "--hidden", 32, "--appearance-dim", 8, "--motion-dim", 4,
            "--threads", 1, "--no-bf16", "--out", run,
            env={"VDIS_CACHE": str(tmp_path / "cache")}))  # flow labels: not the repo's .cache
    assert (run / "model.safetensors").exists() and (run / "swaps.png").exists()

    out = tmp_path / "exported"
    result = ok(vdis("export", run / "model.safetensors", out, "--no-fp16", "--name", "cli"))
    assert "cli, 3 graphs" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "cli" and set(manifest["graphs"]) == {"encoder", "decoder",
                                                                      "prior"}
    with running_service(out) as url:
        codes = json.loads(ok(vdis("encode", SAMPLES[1], url=url)).stdout)
    assert codes["model"] == "cli" and np.array(codes["motion"]["mean"]).shape == (8, 4)
