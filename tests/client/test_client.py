"""vdis.client against a real `vdis serve` on the tiny model: every endpoint, sync and async."""

from __future__ import annotations

import asyncio
import io

import av
import numpy as np
import pytest

from service.settings import REPO
from tests.liveservice import free_port
from vdis import AsyncClient, Client, ClipOptions, Codes, ServiceUnreachable, VdisError

SAMPLES = sorted((REPO / "service" / "static" / "samples").glob("*.mp4"))


def mp4_frames(data: bytes) -> np.ndarray:
    """(T, H, W, 3) uint8 decoded from MP4 bytes."""
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def vdis(service_url):
    with Client(service_url) as client:
        yield client


def test_operations(vdis):
    assert vdis.health() == {"status": "ok"}
    assert vdis.ready()["status"] == "ready"
    model = vdis.model()
    assert model["seq_len"] == 8 and model["frame_size"] == 64


def test_encode_returns_arrays_of_the_models_shapes(vdis):
    model = vdis.model()
    codes = vdis.encode(SAMPLES[0])
    assert codes.appearance.shape == (model["appearance_dim"],)
    assert codes.motion.shape == (8, model["motion_dim"])
    assert codes.appearance.dtype == np.float32 and codes.motion_logvar.shape == (8, 16)
    assert codes.model == model["name"] and codes.frame_indices.tolist() == list(range(8))
    # bytes and an open file give the same codes as the path
    same = vdis.encode(SAMPLES[0].read_bytes())
    np.testing.assert_array_equal(same.motion, codes.motion)
    with open(SAMPLES[0], "rb") as f:
        np.testing.assert_array_equal(vdis.encode(f).appearance, codes.appearance)
    short = vdis.encode(SAMPLES[0], ClipOptions(frames=4, fit="pad"))
    assert short.motion.shape == (4, model["motion_dim"])


def test_decode_of_encode_as_mp4_and_npz(vdis):
    codes = vdis.encode(SAMPLES[1])
    video = vdis.decode(codes.appearance, codes.motion, model=codes.model, scale=2)
    assert video.media_type == "video/mp4" and video.shape == (1, 8, 64, 64, 3)
    assert mp4_frames(video.content).shape == (8, 128, 128, 3)
    arrays = vdis.decode(codes.appearance, codes.motion, format="npz")
    assert arrays.array.shape == (1, 8, 64, 64, 3) and arrays.array.dtype == np.uint8
    with pytest.raises(ValueError, match="format='npz'"):
        video.array  # noqa: B018
    with pytest.raises(ValueError, match=r"\(F,\)"):
        vdis.decode(codes.motion, codes.motion)


def test_decode_takes_the_codes_encode_returns(vdis):
    codes = vdis.encode(SAMPLES[1], frames=4)  # clip options as keywords
    assert codes.motion.shape == (4, 16)
    arrays = vdis.decode(codes, format="npz").array
    assert arrays.shape == (1, 4, 64, 64, 3)
    same = vdis.decode(codes.appearance, codes.motion, format="npz").array
    np.testing.assert_array_equal(arrays, same)
    # the JSON of /encode (or vdis encode -o codes.json) gives the same Codes back
    again = Codes.from_json(codes.to_json())
    np.testing.assert_array_equal(again.motion, codes.motion)
    assert again.model == codes.model
    with pytest.raises(ValueError, match="Codes alone"):
        vdis.decode(codes, codes.motion)
    with pytest.raises(ValueError, match="not the codes /encode returns"):
        Codes.from_json({"appearance": [1, 2]})


def test_clip_options_as_keywords_on_every_method(vdis):
    model = vdis.model()
    assert vdis.encode(SAMPLES[0], start=0, fps=4, frames=3).motion.shape == (3, 16)
    # keywords override a ClipOptions given as well
    short = vdis.encode(SAMPLES[0], ClipOptions(frames=6, fit="pad"), frames=5)
    assert short.motion.shape == (5, model["motion_dim"])
    swapped = vdis.swap(SAMPLES[0], SAMPLES[1], frames=4, fit="pad", format="npz")
    assert swapped.array.shape == (1, 4, 64, 64, 3)
    generated = vdis.generate(SAMPLES[2], n=2, seed=0, frames=6, start=0.0, format="npz",
                              out_fps=4)
    assert generated.array.shape == (2, 6, 64, 64, 3)
    video = vdis.generate(SAMPLES[2], n=1, seed=0, frames=2, out_fps=2)
    with av.open(io.BytesIO(video.content)) as container:
        assert float(container.streams.video[0].average_rate) == 2


def test_swap_both_is_tiled_and_npz_matches(vdis):
    video = vdis.swap(SAMPLES[0], SAMPLES[1], both=True)
    assert video.grid == (1, 2) and video.shape == (2, 8, 64, 64, 3)
    assert mp4_frames(video.content).shape == (8, 64, 128, 3)
    arrays = vdis.swap(SAMPLES[0], SAMPLES[1], both=True, format="npz").array
    assert arrays.shape == (2, 8, 64, 64, 3)
    # the first result is decode(f of A, z of B)
    a, b = vdis.encode(SAMPLES[0]), vdis.encode(SAMPLES[1])
    direct = vdis.decode(a.appearance, b.motion, format="npz").array[0]
    assert np.abs(direct.astype(int) - arrays[0].astype(int)).max() <= 1


def test_generate_from_a_video_and_from_a_code(vdis, tmp_path):
    first = vdis.generate(SAMPLES[2], n=3, seed=7, format="npz")
    assert first.seed == 7 and first.array.shape == (3, 8, 64, 64, 3)
    again = vdis.generate(SAMPLES[2], n=3, seed=7, format="npz")
    np.testing.assert_array_equal(first.array, again.array)
    code = vdis.encode(SAMPLES[2]).appearance
    from_code = vdis.generate(appearance=code, n=2, seed=1, clip=ClipOptions(frames=5))
    assert from_code.shape == (2, 5, 64, 64, 3) and from_code.grid == (1, 2)
    path = from_code.save(tmp_path / "generated.mp4")
    assert mp4_frames(path.read_bytes()).shape == (5, 64, 128, 3)
    with pytest.raises(ValueError, match="exactly one"):
        vdis.generate()


def test_errors_carry_the_problem_fields(vdis):
    with pytest.raises(VdisError) as caught:
        vdis.encode(b"this is not a video")
    error = caught.value
    assert error.status == 400 and error.slug == "not-a-video"
    assert error.type == "/problems/not-a-video" and error.instance == "/encode"
    assert error.title == "The upload is not a video FFmpeg can read" and error.detail
    assert str(error).startswith("400 The upload is not a video")
    with pytest.raises(VdisError) as caught:
        vdis.generate(SAMPLES[0], n=999)
    assert caught.value.status == 422 and "n=999 is above the limit" in caught.value.detail
    with pytest.raises(VdisError) as caught:
        vdis.encode(SAMPLES[0], ClipOptions(frames=0))
    assert caught.value.slug == "invalid-parameters" and caught.value.extra["errors"]


def test_models_and_a_model_on_every_method(two_models_url):
    with Client(two_models_url) as vdis:
        listed = vdis.models()
        assert [(m["name"], m["default"]) for m in listed] == [("tiny-b", False),
                                                              ("tiny-dsvae", True)]
        assert vdis.model("tiny-b")["domain"].startswith("Moving MNIST")
        assert vdis.model()["name"] == "tiny-dsvae"
        codes, default = vdis.encode(SAMPLES[0], model="tiny-b"), vdis.encode(SAMPLES[0])
        assert (codes.model, default.model) == ("tiny-b", "tiny-dsvae")
        assert not np.allclose(codes.appearance, default.appearance)
        assert vdis.decode(codes, format="npz").model == "tiny-b"  # the codes' own model
        swapped = vdis.swap(SAMPLES[0], SAMPLES[1], model="tiny-b", format="npz")
        assert swapped.model == "tiny-b" and swapped.array.shape == (1, 8, 64, 64, 3)
        made = vdis.generate(SAMPLES[0], n=2, seed=0, model="tiny-b", format="npz")
        assert made.model == "tiny-b" and made.seed == 0
        with pytest.raises(VdisError) as error:
            vdis.swap(SAMPLES[0], SAMPLES[1], model="nope")
        assert error.value.status == 404 and error.value.slug == "unknown-model"
        assert error.value.extra["models"] == ["tiny-b", "tiny-dsvae"]


async def _async_models(url):
    async with AsyncClient(url) as vdis:
        return await vdis.models(), await vdis.encode(SAMPLES[0], model="tiny-b")


def test_async_client_takes_a_model_too(two_models_url):
    listed, codes = asyncio.run(_async_models(two_models_url))
    assert len(listed) == 2 and codes.model == "tiny-b"


def test_unreachable_service_is_a_clear_error():
    with Client(f"http://127.0.0.1:{free_port()}", timeout_s=2) as client:
        with pytest.raises(ServiceUnreachable, match="no answer from http://127.0.0.1"):
            client.health()


def test_async_client_runs_requests_side_by_side(service_url):
    async def main():
        async with AsyncClient(service_url) as vdis:
            assert (await vdis.health())["status"] == "ok"
            model = await vdis.model()
            codes, swapped, generated = await asyncio.gather(
                vdis.encode(SAMPLES[0]),
                vdis.swap(SAMPLES[0], SAMPLES[3], format="npz"),
                vdis.generate(SAMPLES[3], n=2, seed=3, format="npz"))
            decoded = await vdis.decode(codes.appearance, codes.motion, format="npz")
            with pytest.raises(VdisError) as caught:
                await vdis.swap(SAMPLES[0], b"")
            return model, codes, swapped, generated, decoded, caught.value

    model, codes, swapped, generated, decoded, error = asyncio.run(main())
    assert codes.motion.shape == (8, model["motion_dim"])
    assert swapped.array.shape == (1, 8, 64, 64, 3) and generated.array.shape[0] == 2
    assert decoded.array.shape == (1, 8, 64, 64, 3)
    assert error.slug == "empty-video" and error.status == 400
