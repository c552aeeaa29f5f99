"""Your own videos, end to end: the README's four commands (train on a folder, export it into a
models root, serve it, call it) run as written on a folder of videos the test makes, then the
new model is called through the API beside the shipped one: a clip of the training folder is
`X-Vdis-Domain: in` on it, and `out` on the shipped Sprites model.

The one change to the text: the training line's budget (`--max-minutes 30`) becomes one epoch
of a tiny model, and `localhost:8000` the test server's address.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from service.settings import REPO
from tests.liveservice import running_service
from tests.service.videos import encode, moving_square

pytest.importorskip("torch")  # vdis train and export need the training extras

README = (REPO / "README.md").read_text()
BUDGET = "--max-minutes 30"
TINY = ("--epochs 1 --batch-size 4 --width 8 --hidden 32 --appearance-dim 8 --motion-dim 4 "
        "--threads 1 --no-bf16")
# the user's folder: 16 frames each, so two 8-frame clips per video, in two containers
VIDEOS = {"clip.mp4": 0, "square-2.mp4": 1, "square-3.webm": 2}
# what the README's first line copies into it
SAMPLES = sorted(p.name for p in (REPO / "service" / "static" / "samples").glob("*.mp4"))


def readme_commands() -> dict[str, str]:
    """The `## Your own videos` block's lines, by their first two words."""
    match = re.search(r"^## Your own videos$(.*?)(?=^## )", README, re.M | re.S)
    assert match, "no section 'Your own videos' in the README"
    block = re.search(r"^```bash\n(.*?)^```", match.group(1), re.M | re.S)
    assert block, "no bash block in the README's 'Your own videos'"
    lines = block.group(1).splitlines()
    commands = {" ".join(line.split()[:2]): line for line in lines}
    assert len(commands) == len(lines) == 5, lines
    return commands


def run(script: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `vdis`
    return subprocess.run(["bash", "-c", "set -e\n" + script], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PATH": path, **env})


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    """A folder standing for the repository root after the README's train and export lines:
    my-videos/ (made here), runs/mine/, and models/ holding the shipped model and mine."""
    root = tmp_path_factory.mktemp("user")
    (root / "service").symlink_to(REPO / "service")  # as from the repository root
    commands = readme_commands()
    ok(run(commands["mkdir -p"], root, {}))  # the shipped samples, one 8-frame clip each
    videos = root / "my-videos"
    assert sorted(p.name for p in videos.iterdir()) == SAMPLES
    for name, seed in VIDEOS.items():
        fmt = name.rsplit(".", 1)[1]
        (videos / name).write_bytes(encode(moving_square(16, seed=seed), fmt))
    (root / "models").mkdir()
    (root / "models" / "sprites").symlink_to(REPO / "models" / "sprites")  # the shipped one
    train, export = commands["vdis train"], commands["vdis export"]
    assert BUDGET in train, f"the test swaps the README's budget {BUDGET!r} for a tiny one"
    result = ok(run(f"{train.replace(BUDGET, TINY)}\n{export}", root,
                    {"VDIS_CACHE": str(root / "cache")}))
    assert (root / "runs" / "mine" / "model.safetensors").is_file()
    assert re.search(r"^models/mine/manifest.json: mine, \d graphs", result.stdout, re.M)
    assert "\n  domain: " in result.stdout  # measured on my-videos (the manifest: below)
    assert "serves it with the models beside it as model=mine" in result.stdout
    return root


def test_the_readme_commands_serve_a_model_of_your_own_videos(user):
    commands = readme_commands()
    assert commands["vdis serve"].split("#")[0].split() == ["vdis", "serve"]
    models = user / "models"
    manifest = json.loads((models / "mine" / "manifest.json").read_text())
    assert manifest["name"] == "mine"  # the folder's name: no --name needed
    assert manifest["training"]["dataset"] == f"folder:{(user / 'my-videos').resolve()}"
    stats = manifest["domain_stats"]
    assert stats["clips"] == 2 * len(VIDEOS) + len(SAMPLES)
    assert stats["reconstruction"]["limit"] > 0

    # `vdis serve` from the repository root serves its models/: here the test's models root
    env = {"VDIS_MODEL_DIR": "", "VDIS_MODELS_DIR": str(models)}
    with running_service(models, env=env) as url:
        curl = commands["curl -F"].replace("localhost:8000", url.removeprefix("http://"))
        codes = json.loads(ok(run(curl, user, {})).stdout)
        assert codes["model"] == "mine"
        assert np.array(codes["motion"]["mean"]).shape == (8, 4)
        assert len(codes["appearance"]["mean"]) == 8

        listed = {m["name"]: m for m in httpx.get(url + "/models").json()["models"]}
        assert set(listed) == {"mine", "sprites-dsvae"}
        assert listed["mine"]["domain"].startswith(
            "Videos like those in the folder 'my-videos' it was trained on")
        assert listed["mine"]["training"]["dataset"].endswith("/my-videos")
        assert not listed["mine"]["default"]

        clip, other = user / "my-videos" / "clip.mp4", user / "my-videos" / "square-3.webm"
        with clip.open("rb") as video:
            encoded = httpx.post(url + "/encode", params={"model": "mine"},
                                 files={"video": video}, timeout=60)
        assert encoded.status_code == 200, encoded.text
        assert encoded.headers["x-vdis-model"] == "mine"
        assert encoded.headers["x-vdis-domain"] == "in"  # a clip it was trained on
        assert float(encoded.headers["x-vdis-domain-score"]) <= 1
        with clip.open("rb") as video:  # no model=: the shipped default, which knows Sprites
            shipped = httpx.post(url + "/encode", files={"video": video}, timeout=60)
        assert shipped.status_code == 200, shipped.text
        assert shipped.headers["x-vdis-model"] == "sprites-dsvae"
        assert shipped.headers["x-vdis-domain"] == "out"
        with clip.open("rb") as a, other.open("rb") as b:
            swapped = httpx.post(url + "/swap", params={"model": "mine"},
                                 files={"appearance": a, "motion": b}, timeout=60)
        assert swapped.status_code == 200, swapped.text
        assert swapped.headers["x-vdis-model"] == "mine"
        assert swapped.headers["x-vdis-domain"] == "in"
        with av.open(io.BytesIO(swapped.content)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert np.stack(frames).shape == (8, 64, 64, 3)


def test_export_says_what_to_do_when_the_folder_has_moved(user):
    videos, moved = user / "my-videos", user / "moved-videos"
    checkpoint = user / "runs" / "mine" / "model.safetensors"
    videos.rename(moved)
    try:
        refused = run(f"vdis export {checkpoint} models/elsewhere --no-fp16", user, {})
        assert refused.returncode == 2
        assert f"was trained on the videos in {videos.resolve()}, which is not a folder here" \
            in refused.stderr
        assert "pass --domain-clips 0" in refused.stderr
        assert not (user / "models" / "elsewhere").exists()
        result = ok(run(f"vdis export {checkpoint} models/elsewhere --no-fp16 "
                        "--domain-clips 0", user, {}))
        assert "elsewhere, 3 graphs" in result.stdout
        clash = run(f"vdis export {checkpoint} models/again --name mine --domain-clips 0", user,
                    {})
        assert clash.returncode == 2 and "already holds a model named 'mine'" in clash.stderr
        bad = run(f"vdis export {checkpoint} 'models/my model' --domain-clips 0", user, {})
        assert bad.returncode == 2
        assert "the model name 'my model' is not one the service can serve" in bad.stderr
    finally:
        moved.rename(videos)
        shutil.rmtree(user / "models" / "elsewhere", ignore_errors=True)


def test_training_reads_the_folder_memory_mapped(user, monkeypatch):
    """The clips stay on disk (np.memmap), and the flow labels the training run computed are
    cached by the folder's contents."""
    from model.data import folder
    from model.data.registry import load_training_data

    monkeypatch.setenv("VDIS_CACHE", str(user / "cache"))
    data = load_training_data(f"folder:{user / 'my-videos'}")
    n = 2 * len(VIDEOS) + len(SAMPLES)  # two clips per test video, one per sample
    assert isinstance(data.videos, np.memmap) and data.videos.shape == (n, 8, 64, 64, 3)
    assert data.flow is not None and data.flow.shape == (n, 8)
    key = folder.folder_key(user / "my-videos")
    assert (user / "cache" / f"flow-folder-{key}-{n}.npy").is_file()  # written by vdis train
