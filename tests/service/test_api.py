"""Every endpoint over HTTP on a real exported model, with videos the tests make."""

import asyncio
import io
import json

import av
import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine.manifest import load_manifest
from service.settings import Settings
from tests.service.conftest import SHIPPED_MODEL, make_settings
from tests.service.videos import encode, moving_square, sprite_clip, unknown_codec

PROBLEM = "application/problem+json"


def upload(data: bytes, name: str = "clip.mp4", content_type: str = "video/mp4"):
    return (name, data, content_type)


def npz(response) -> dict:
    assert response.status_code == 200, response.text
    return dict(np.load(io.BytesIO(response.content)))


def mp4_frames(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# ---------------------------------------------------------------------------------------------
# Operations


def test_health_ready_model_docs(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["provider"] == "CPUExecutionProvider" and ready["status"] == "ready"
    assert ready["queue"]["pending_requests"] == 0
    model = client.get("/model").json()
    assert model["format_version"] == 2 and model["seq_len"] == 8
    assert set(model["graphs"]) == {"encoder", "decoder", "prior"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert "/swap" in client.get("/openapi.json").json()["paths"]
    assert client.get("/problems/too-short").json()["status"] == 422


# ---------------------------------------------------------------------------------------------
# /encode and /decode


@pytest.mark.parametrize("fixture, name, content_type", [
    ("mp4", "a.mp4", "video/mp4"), ("webm", "a.webm", "video/webm"),
    ("gif", "a.gif", "image/gif"),
])
def test_encode_gives_codes_for_each_container(client, request, fixture, name, content_type):
    r = client.post("/encode", files={"video": (name, request.getfixturevalue(fixture),
                                                 content_type)})
    assert r.status_code == 200, r.text
    body = r.json()
    f, z = np.array(body["appearance"]["mean"]), np.array(body["motion"]["mean"])
    model = client.get("/model").json()
    assert f.shape == (model["appearance_dim"],) and z.shape == (8, model["motion_dim"])
    std = np.array(body["motion"]["std"])
    np.testing.assert_allclose(std, np.exp(0.5 * np.array(body["motion"]["logvar"])), rtol=1e-5)
    assert body["frames"]["count"] == 8 and body["frames"]["indices"][-1] == 11
    assert body["model"] == model["name"]


def test_encode_options_and_npz(client, mp4):
    r = client.post("/encode?frames=4&start=0.5&fps=4&fit=pad&format=npz",
                    files={"video": upload(mp4)})
    arrays = npz(r)
    assert arrays["motion_mean"].shape[0] == 4
    assert arrays["frame_indices"].tolist() == [4, 6, 8, 10]


def test_decode_takes_what_encode_gives(client, mp4):
    codes = client.post("/encode", files={"video": upload(mp4)}).json()
    r = client.post("/decode", json=codes)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert mp4_frames(r.content).shape == (8, 64, 64, 3)
    bare = {"appearance": codes["appearance"]["mean"], "motion": codes["motion"]["mean"]}
    as_json = client.post("/decode", json=bare, headers={"accept": "application/json"})
    assert np.array(as_json.json()["videos"]).shape == (1, 8, 64, 64, 3)
    gif = client.post("/decode?format=gif&scale=2", json=codes)
    assert gif.headers["content-type"] == "image/gif"
    # Pillow merges identical consecutive frames (summing their durations), so count time.
    with av.open(io.BytesIO(gif.content)) as container:
        frames = list(container.decode(video=0))
        assert (frames[0].width, frames[0].height) == (128, 128)
        played = frames[-1].time + float(frames[-1].duration * frames[-1].time_base)
    assert played == pytest.approx(8 / 8.0, abs=0.05)
    png = client.post("/decode?format=png", json=codes)
    image = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (64, 8 * 64, 3)


# ---------------------------------------------------------------------------------------------
# /swap and /generate


def test_swap_gives_appearance_of_one_and_motion_of_the_other(client, mp4, webm):
    files = {"appearance": upload(mp4), "motion": upload(webm, "b.webm", "video/webm")}
    one = npz(client.post("/swap?format=npz", files=files))["videos"]
    both = client.post("/swap?format=npz&both=true", files=files)
    assert one.shape == (1, 8, 64, 64, 3) and both.headers["x-vdis-results"] == "2"
    both = npz(both)["videos"]
    np.testing.assert_array_equal(both[0], one[0])
    codes_a = client.post("/encode", files={"video": upload(mp4)}).json()
    codes_b = client.post("/encode", files={"video": upload(webm, "b.webm", "video/webm")}).json()
    converse = {"appearance": codes_b["appearance"], "motion": codes_a["motion"]}
    np.testing.assert_array_equal(
        both[1], npz(client.post("/decode?format=npz", json=converse))["videos"][0])
    tiled = client.post("/swap?both=true", files=files)
    assert tiled.headers["x-vdis-grid"] == "1x2"
    assert mp4_frames(tiled.content).shape == (8, 64, 128, 3)


def test_swap_of_a_video_with_itself_reconstructs_it(model_dir):
    """On the shipped model: close to the input. On a random model: decode(encode(A)) exactly."""
    shipped = (SHIPPED_MODEL / "manifest.json").exists()
    video = sprite_clip(character=5, motion=1) if shipped else moving_square(8, 64, 64)
    data = encode(video, "lossless")
    settings = make_settings(SHIPPED_MODEL if shipped else model_dir)
    with TestClient(create_app(settings)) as client:
        files = {"appearance": upload(data, "a.mov"), "motion": upload(data, "a.mov")}
        swapped = npz(client.post("/swap?format=npz", files=files))["videos"][0]
        codes = client.post("/encode", files={"video": upload(data, "a.mov")}).json()
        recon = npz(client.post("/decode?format=npz", json=codes))["videos"][0]
    if shipped:
        error = np.abs(swapped.astype(float) - video).mean() / 255
        assert error < 0.05, f"mean absolute error {error:.3f} of the swap (A, A)"
    np.testing.assert_array_equal(swapped, recon)


def test_generate_samples_motion_for_a_fixed_appearance(client, mp4):
    r = client.post("/generate?n=3&seed=7&format=npz", files={"video": upload(mp4)})
    videos = npz(r)["videos"]
    assert videos.shape == (3, 8, 64, 64, 3) and r.headers["x-vdis-seed"] == "7"
    again = npz(client.post("/generate?n=3&seed=7&format=npz", files={"video": upload(mp4)}))
    np.testing.assert_array_equal(videos, again["videos"])  # a seed gives the same output
    other = npz(client.post("/generate?n=3&seed=8&format=npz", files={"video": upload(mp4)}))
    assert not np.array_equal(videos, other["videos"])
    # The same from the appearance code instead of the video, longer, tiled as a grid.
    f = client.post("/encode", files={"video": upload(mp4)}).json()["appearance"]["mean"]
    from_code = client.post("/generate?n=3&seed=7&frames=12",
                            data={"appearance": json.dumps(f)})
    assert from_code.headers["x-vdis-grid"] == "2x2"
    assert mp4_frames(from_code.content).shape == (12, 128, 128, 3)
    short = npz(client.post("/generate?n=3&seed=7&format=npz", data={"appearance": json.dumps(f)}))
    np.testing.assert_allclose(short["videos"], videos, atol=1)


def test_generate_samples_appearances_for_a_fixed_motion(client, gif):
    r = client.post("/generate?sample=appearance&n=2&seed=1&format=json",
                    files={"video": upload(gif, "a.gif", "image/gif")})
    assert r.status_code == 200, r.text
    videos = np.array(r.json()["videos"])
    assert videos.shape == (2, 8, 64, 64, 3) and not np.array_equal(videos[0], videos[1])


# ---------------------------------------------------------------------------------------------
# Bad input: every class gets its 4xx as problem+json


def _problem(r, status: int, slug: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == status and body["detail"]
    return body


@pytest.mark.parametrize("make, status, slug", [
    (lambda mp4: b"", 400, "empty-video"),
    (lambda mp4: b"just some text, not a video" * 10, 400, "not-a-video"),
    (lambda mp4: mp4[: len(mp4) // 2], 400, "truncated-video"),
    (lambda mp4: encode(moving_square(12), "mp4", faststart=True)[:-200], 400, "truncated-video"),
    (lambda mp4: unknown_codec(), 415, "unsupported-codec"),
    (lambda mp4: encode(moving_square(5)), 422, "too-short"),
])
def test_bad_videos(client, mp4, make, status, slug):
    _problem(client.post("/encode", files={"video": upload(make(mp4))}), status, slug)


def test_bad_parameters_and_content_types(client, mp4):
    video = {"video": upload(mp4)}
    _problem(client.post("/encode?frames=65", files=video), 422, "invalid-parameters")
    _problem(client.post("/encode?fit=stretch", files=video), 422, "invalid-parameters")
    _problem(client.post("/encode"), 422, "invalid-parameters")
    _problem(client.post("/encode", files={"video": upload(mp4, "a.txt", "text/plain")}),
             415, "unsupported-media-type")
    _problem(client.post("/swap", files=video), 422, "invalid-parameters")
    _problem(client.post("/generate?n=100", files=video), 422, "invalid-parameters")
    _problem(client.post("/generate"), 422, "invalid-parameters")
    _problem(client.post("/generate", data={"appearance": "[1, 2"}), 422, "invalid-codes")
    _problem(client.post("/generate?sample=appearance", data={"appearance": "[1]"}),
             422, "invalid-parameters")
    _problem(client.post("/decode", content=b"{}", headers={"content-type": "text/plain"}),
             415, "unsupported-media-type")
    _problem(client.post("/decode", json={"appearance": [1.0]}), 422, "invalid-parameters")
    _problem(client.post("/decode", json={"appearance": [1.0], "motion": [[1.0]]}),
             422, "invalid-codes")
    _problem(client.post("/decode", json={"appearance": [1.0], "motion": [[1.0], [1.0, 2.0]]}),
             422, "invalid-codes")
    _problem(client.post("/decode", content=b"{not json",
                         headers={"content-type": "application/json"}),
             422, "invalid-parameters")
    _problem(client.get("/nowhere"), 404, "not-found")


def test_codes_beyond_float32_or_not_finite_are_refused_with_the_range(client, mp4):
    codes = client.post("/encode", files={"video": upload(mp4)}).json()
    f = len(codes["appearance"]["mean"])
    for bad in (1e300, -1e39):  # finite in JSON, infinite as float32
        body = {"appearance": [bad] * f, "motion": codes["motion"]["mean"]}
        detail = _problem(client.post("/decode", json=body), 422, "invalid-codes")["detail"]
        assert "float32" in detail
    for bad in ("1e300", "1" + "0" * 400):  # a float, and an integer beyond any float
        r = client.post("/generate", data={"appearance": "[" + ", ".join([bad] * f) + "]"})
        assert "float32" in _problem(r, 422, "invalid-codes")["detail"]
    nan = '{"appearance": [' + ", ".join(["NaN"] * f) + '], "motion": [[0.0]]}'
    r = client.post("/decode", content=nan, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text


def test_size_limits(model_dir, mp4):
    settings = make_settings(model_dir, MAX_UPLOAD_BYTES=len(mp4) - 1, MAX_PIXELS=32 * 32)
    with TestClient(create_app(settings)) as client:
        _problem(client.post("/encode", files={"video": upload(mp4)}), 413, "too-large")
        _problem(client.post("/encode", files={"video": upload(bytes(10 * len(mp4)))}),
                 413, "too-large")  # refused from Content-Length, before parsing
    settings = make_settings(model_dir, MAX_PIXELS=32 * 32)
    with TestClient(create_app(settings)) as client:
        _problem(client.post("/encode", files={"video": upload(mp4)}), 422, "too-many-pixels")


# ---------------------------------------------------------------------------------------------
# Concurrency: requests are batched and each gets its own answer


def test_concurrent_requests_are_batched_and_answered_correctly(model_dir):
    settings: Settings = make_settings(model_dir, MAX_BATCH=6, MAX_WAIT_MS=300)
    app = create_app(settings)
    videos = [encode(moving_square(10, seed=s)) for s in range(6)]

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://vdis") as http:
                async def call(data):
                    r = await http.post("/encode?format=npz", files={"video": upload(data)})
                    return npz(r)

                together = await asyncio.gather(*[call(v) for v in videos])
                alone = [await call(v) for v in videos]
                metrics = (await http.get("/metrics")).text
        return together, alone, metrics

    together, alone, metrics = asyncio.run(main())
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_array_equal(a["appearance_mean"], b["appearance_mean"])
        np.testing.assert_array_equal(a["motion_mean"], b["motion_mean"])
    assert len({a["appearance_mean"].tobytes() for a in together}) == 6
    # 12 encoder rows in all: 6 alone (batches of 1), so fewer than 12 batches means merging.
    # labelled by model (prometheus_client writes the labels sorted)
    model = f'model="{load_manifest(model_dir).name}"'
    count = _sample(metrics, f'vdis_batch_size_count{{graph="encoder",{model}}}')
    total = _sample(metrics, f'vdis_batch_size_sum{{graph="encoder",{model}}}')
    assert total == 12 and count < 12
    assert _sample(metrics, f'vdis_batch_size_bucket{{graph="encoder",le="1.0",{model}}}') < count
    assert f'vdis_queue_wait_seconds_count{{graph="encoder",{model}}} 12.0' in metrics
    assert (f'vdis_requests_total{{method="POST",{model},route="/encode",status="200"}} 12.0'
            in metrics)


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")
