"""Several models in one service: a models root with two exported models (and a judge's weights,
which are not a model), served side by side in-process and through Redis with a worker
subprocess; model=NAME on every endpoint, GET /models, unknown names, lazy loading."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine.catalogue import discover
from service.engine.keys import Keys
from service.settings import Settings
from tests.conftest import SECOND_MODEL
from tests.service.redisutil import REDIS_URL, Worker, delete_keys, unique_prefix, wait_for
from tests.service.videos import encode, moving_square

SECOND = SECOND_MODEL


@pytest.fixture(scope="module")
def default_name(tiny_model_dir) -> str:  # the first model of tests/conftest.py's models_root
    return json.loads((tiny_model_dir / "manifest.json").read_text())["name"]


def root_settings(root: Path, default: str, **overrides) -> Settings:
    return Settings(MODELS_DIR=root, DEFAULT_MODEL=default, INTRA_OP_THREADS=1,
                    INTER_OP_THREADS=1, **overrides)


@pytest.fixture(scope="module")
def served(models_root, default_name):
    with TestClient(create_app(root_settings(models_root, default_name))) as client:
        yield client


def npz(response) -> dict:
    assert response.status_code == 200, response.text
    return dict(np.load(io.BytesIO(response.content)))


def test_models_lists_each_model_and_what_it_expects(served, default_name):
    body = served.get("/models").json()
    assert body["default"] == default_name
    listed = {m["name"]: m for m in body["models"]}
    assert sorted(listed) == sorted([default_name, SECOND])  # the judge and README are no models
    second = listed[SECOND]
    assert second["default"] is False and listed[default_name]["default"] is True
    assert second["domain"].startswith("Moving MNIST")
    assert listed[default_name]["domain"].startswith("Sprites")
    assert (second["frame_size"], second["seq_len"], second["appearance_dim"],
            second["motion_dim"]) == (64, 8, 32, 16)
    assert second["training"] == {"dataset": "mmnist", "commit": "test"}
    assert second["samples"] == [{"url": f"/models/{SECOND}/samples/walk.mp4",
                                  "label": "A walk"}]
    clip = served.get(second["samples"][0]["url"])
    assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
    assert served.get(f"/models/{SECOND}/samples/index.json").status_code == 404  # not listed
    one = served.get(f"/models/{SECOND}").json()
    assert one["name"] == SECOND and one["format_version"] == 2 and one["default"] is False
    assert "file" not in json.dumps(one["graphs"])
    assert served.get("/model").json()["name"] == default_name  # /model: the default's


def test_each_request_runs_the_model_it_names(served, second_model_dir, mp4, webm):
    files = {"video": ("a.mp4", mp4, "video/mp4")}
    default = served.post("/encode?format=npz", files=files)
    second = served.post(f"/encode?format=npz&model={SECOND}", files=files)
    assert second.headers["x-vdis-model"] == SECOND == str(npz(second)["model"])
    assert default.headers["x-vdis-model"] == str(npz(default)["model"]) != SECOND
    assert not np.allclose(npz(second)["appearance_mean"], npz(default)["appearance_mean"])
    # beside another model, a model answers as it does served alone, bit for bit
    with TestClient(create_app(Settings(MODEL_DIR=second_model_dir, INTRA_OP_THREADS=1,
                                        INTER_OP_THREADS=1))) as only:
        calls = [("/encode?format=npz", files),
                 ("/swap?format=npz&both=true", {"appearance": ("a.mp4", mp4, "video/mp4"),
                                                 "motion": ("b.webm", webm, "video/webm")}),
                 ("/generate?format=npz&n=2&seed=1", files)]
        for path, body in calls:
            beside = served.post(f"{path}&model={SECOND}", files=body)
            assert beside.headers["x-vdis-model"] == SECOND, path
            expected = npz(only.post(path, files=body))
            for name, array in npz(beside).items():
                np.testing.assert_array_equal(array, expected[name], err_msg=path)
    answer = served.post(f"/encode?model={SECOND}", files=files)
    assert answer.headers["x-vdis-model"] == SECOND and answer.json()["model"] == SECOND


def test_an_unknown_model_is_404_listing_the_names(served, default_name, mp4):
    names = sorted([default_name, SECOND])
    for answer in (served.post("/encode?model=nope", files={"video": ("a.mp4", mp4)}),
                   served.get("/models/nope")):
        assert answer.status_code == 404 and answer.headers["content-type"] == (
            "application/problem+json")
        problem = answer.json()
        assert problem["type"] == "/problems/unknown-model" and problem["models"] == names
        assert "no model 'nope' is served here" in problem["detail"]


def test_decode_takes_the_model_from_the_body_or_the_query_but_they_must_agree(served):
    codes = served.post(f"/encode?model={SECOND}", files={"video": (
        "a.mp4", encode(moving_square(8, seed=3)), "video/mp4")}).json()
    by_body = served.post("/decode?format=npz", json=codes)
    assert by_body.headers["x-vdis-model"] == SECOND
    by_query = served.post(f"/decode?format=npz&model={SECOND}", json={**codes, "model": None})
    np.testing.assert_array_equal(npz(by_body)["videos"], npz(by_query)["videos"])
    clash = served.post("/decode?model=other", json=codes)
    assert clash.status_code == 422 and clash.json()["type"] == "/problems/invalid-codes"
    assert f"come from model '{SECOND}'" in clash.json()["detail"]


def test_metrics_and_ready_are_by_model(served, default_name, mp4):
    served.post(f"/encode?model={SECOND}", files={"video": ("a.mp4", mp4, "video/mp4")})
    metrics = served.get("/metrics").text
    assert f'vdis_batch_size_count{{graph="encoder",model="{SECOND}"}}' in metrics
    assert f'model="{SECOND}",route="/encode"' in metrics
    ready = served.get("/ready").json()
    assert ready["default_model"] == default_name and ready["load"] == "eager"
    assert set(ready["models"]) == {default_name, SECOND}
    for model in ready["models"].values():
        assert model["loaded"] is True and model["memory_mb"] >= 0
        assert model["provider"] == "CPUExecutionProvider"


def test_lazy_loading_loads_a_model_on_its_first_request(models_root, default_name, mp4):
    settings = root_settings(models_root, default_name, LOAD="lazy")
    with TestClient(create_app(settings)) as client:
        before = client.get("/ready").json()["models"]
        assert before == {default_name: {"loaded": False}, SECOND: {"loaded": False}}
        answer = client.post(f"/encode?model={SECOND}", files={"video": ("a.mp4", mp4)})
        assert answer.status_code == 200
        after = client.get("/ready").json()["models"]
        assert after[default_name] == {"loaded": False}
        assert after[SECOND]["loaded"] is True and after[SECOND]["load_s"] > 0
        assert after[SECOND]["memory_mb"] >= 0


def test_the_catalogue_refuses_a_broken_root_clearly(models_root, default_name, tmp_path):
    assert discover(root_settings(models_root, default_name)).names == sorted(
        [default_name, SECOND])
    only = discover(root_settings(models_root, SECOND, MODELS=SECOND))
    assert only.names == [SECOND] and only.default == SECOND
    with pytest.raises(RuntimeError, match=r"VDIS_MODELS names \['nope'\]"):
        discover(root_settings(models_root, default_name, MODELS="nope"))
    with pytest.raises(RuntimeError, match="VDIS_DEFAULT_MODEL='sprites-dsvae' is not among"):
        discover(root_settings(models_root, "sprites-dsvae"))
    broken = tmp_path / "models"
    shutil.copytree(models_root, broken)
    (broken / "second" / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeError, match=f"model folder {broken / 'second'} cannot be served"):
        discover(root_settings(broken, default_name))
    with pytest.raises(RuntimeError, match="is not a folder"):
        discover(root_settings(tmp_path / "nowhere", default_name))


# ---------------------------------------------------------------------------------------------
# Through Redis: a worker subprocess serving the whole root


@pytest.fixture(scope="module")
def prefix():
    name = unique_prefix("models")
    yield name
    delete_keys(name)


def test_redis_serves_both_models_and_says_which_are_ready_where(
        models_root, default_name, prefix, tmp_path, served, mp4):
    worker = Worker(None, prefix, "both", tmp_path, MODELS_DIR=models_root, LOAD="lazy")
    try:
        beat = worker.beat()
        assert beat["models"] == {default_name: {"loaded": False}, SECOND: {"loaded": False}}
        settings = root_settings(models_root, default_name, REDIS_URL=REDIS_URL,
                                 REDIS_PREFIX=prefix)
        files = {"video": ("a.mp4", mp4, "video/mp4")}
        with TestClient(create_app(settings)) as remote:
            ready = remote.get("/ready").json()
            assert ready["models"][SECOND]["workers"] == ["both"]
            assert ready["models"][default_name]["ready"] is True
            for model in (SECOND, default_name):
                queued = remote.post(f"/encode?format=npz&model={model}", files=files)
                assert queued.headers["x-vdis-model"] == model
                local = served.post(f"/encode?format=npz&model={model}", files=files)
                for name in ("appearance_mean", "motion_logvar"):
                    np.testing.assert_array_equal(npz(queued)[name], npz(local)[name])
            assert remote.post("/swap?model=nope", files={"appearance": ("a.mp4", mp4),
                                                         "motion": ("b.mp4", mp4)}
                               ).status_code == 404
        beat = wait_for(lambda: (b := worker.beat())["counts"].get("jobs") == 2 and b, 10,
                        "a heartbeat after both jobs")
        assert beat["models"][SECOND]["loaded"] and beat["models"][SECOND]["memory_mb"] >= 0
        with redis.Redis.from_url(REDIS_URL) as r:  # one stream per model, both emptied
            assert r.xlen(Keys(prefix).jobs(SECOND)) == 0
            assert r.exists(Keys(prefix).jobs(default_name))
    finally:
        assert worker.stop() == 0


def test_a_model_no_live_worker_serves_is_503_with_the_reason(models_root, default_name,
                                                               tmp_path, mp4):
    prefix = unique_prefix("models-one")
    worker = Worker(None, prefix, "only-default", tmp_path, MODELS_DIR=models_root,
                    MODELS=default_name)
    try:
        settings = root_settings(models_root, default_name, REDIS_URL=REDIS_URL,
                                 REDIS_PREFIX=prefix, REQUEST_TIMEOUT_S=10)
        files = {"video": ("a.mp4", mp4, "video/mp4")}
        with TestClient(create_app(settings)) as remote:
            started = time.monotonic()
            refused = remote.post(f"/encode?model={SECOND}", files=files)
            assert time.monotonic() - started < 5  # at once, not at the deadline
            assert refused.status_code == 503 and refused.headers["retry-after"]
            problem = refused.json()
            assert problem["type"] == "/problems/model-unavailable"
            assert f"serves model '{SECOND}'" in problem["detail"]
            assert default_name in problem["detail"]
            assert remote.post("/encode", files=files).status_code == 200
            ready = remote.get("/ready").json()
            assert ready["models"][SECOND] == {"ready": False, "workers": [], "queued": 0,
                                               "pending": 0}
    finally:
        worker.stop()
        delete_keys(prefix)
