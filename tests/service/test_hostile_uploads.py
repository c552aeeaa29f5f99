"""Hostile uploads against a real `vdis serve` (uvicorn in a subprocess, default limits): each is
answered with a 4xx problem+json that names it, within a time bound; the server stays up and
its resident memory stays bounded across rounds of them.

The hostile files are made cheaply: byte edits of real small videos, a YUV4MPEG2 stream of
2x2 frames (100k frames in 1.2 MB), headers that declare huge sizes without the pixels.
"""

import struct
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.liveservice import live_service
from tests.service.videos import encode, moving_square

TIME_BOUND_S = 5.0  # per request, on a loaded 2-core CI machine (they take ~10-300 ms)
ROUNDS = 3  # of every hostile case, after a first round that warms the allocators up
RSS_GROWTH_BOUND = 40 * 2**20  # bytes, from after the first round to after the last


def y4m(width: int, height: int, frames: int, pixels: bool = True) -> bytes:
    """A raw YUV4MPEG2 stream (4:2:0); without `pixels`, only the frame markers."""
    header = f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode()
    frame = b"FRAME\n" + (bytes(width * height * 3 // 2) if pixels else b"")
    return header + frame * frames


def patched(data: bytes, box: bytes, offset: int, value: int, fmt: str = ">I") -> bytes:
    """`data` with the field at `offset` bytes after the four-letter MP4 box name replaced."""
    at = data.index(box) + offset
    edited = bytearray(data)
    edited[at:at + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(edited)


def hostile_cases() -> dict[str, tuple[bytes, int, str]]:
    """name -> (file, status, problem slug)."""
    rng = np.random.default_rng(0)
    mp4 = encode(moving_square(12, 64, 64), "mp4")
    webm = encode(moving_square(12, 64, 64, seed=1), "webm")
    gif = encode(moving_square(12, 64, 64, seed=2), "gif")
    wide_gif = bytearray(gif)
    wide_gif[6:10] = struct.pack("<HH", 10_000, 10_000)  # the logical screen size
    return {
        "random 1 KiB": (rng.bytes(1024), 400, "not-a-video"),
        "random 1 MiB": (rng.bytes(2**20), 400, "not-a-video"),
        "random after an MP4 ftyp": (mp4[:32] + rng.bytes(4096), 400, "truncated-video"),
        "mp4 cut at 10%": (mp4[: len(mp4) // 10], 400, "truncated-video"),
        "mp4 cut at 50%": (mp4[: len(mp4) // 2], 400, "truncated-video"),
        "mp4 cut at 90%": (mp4[: len(mp4) * 9 // 10], 400, "truncated-video"),
        "webm cut at 50%": (webm[: len(webm) // 2], 400, "truncated-video"),
        # A GIF declares neither frame count nor duration: cut short, it is a shorter GIF.
        "gif cut at 50%": (gif[: len(gif) // 2], 422, "too-short"),
        "mp4 whose mdat declares 4 GiB": (patched(mp4, b"mdat", -4, 2**32 - 1), 400,
                                          "truncated-video"),
        "mp4 whose stsz declares 1e9 samples": (patched(mp4, b"stsz", 12, 10**9), 400,
                                                "truncated-video"),
        "mp4 whose stts declares 100k frames": (patched(mp4, b"stts", 12, 100_000), 422,
                                                "too-long"),
        "100k frames of 2x2 (y4m)": (y4m(2, 2, 100_000), 422, "too-long"),
        "10k x 10k frames (y4m header)": (y4m(10_000, 10_000, 2, pixels=False), 422,
                                          "too-many-pixels"),
        "10k x 10k gif screen": (bytes(wide_gif), 422, "too-many-pixels"),
        "empty file": (b"", 400, "empty-video"),
    }


@pytest.fixture(scope="module")
def server(model_dir):
    with live_service(model_dir) as service:
        yield service


@pytest.fixture(scope="module")
def http():
    """One pooled client for all the requests (httpx clients are thread-safe)."""
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=16)) as client:
        yield client


@pytest.fixture(scope="module")
def good_video() -> bytes:
    return encode(moving_square(12, seed=3), "mp4")


def _post(http: httpx.Client, url: str, data: bytes, path: str = "/encode"
          ) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = http.post(url + path, files={"video": ("upload.mp4", data, "video/mp4")})
    return r, time.monotonic() - started


def _served(http: httpx.Client, url: str, good_video: bytes) -> None:
    r, _ = _post(http, url, good_video, "/encode?format=npz")
    assert r.status_code == 200, r.text


def test_each_hostile_upload_gets_its_4xx_in_time_and_memory_stays_bounded(server, http,
                                                                           good_video):
    cases = hostile_cases()
    slowest: dict[str, float] = {}
    rss = []
    for _ in range(ROUNDS + 1):
        for name, (data, status, slug) in cases.items():
            r, took_s = _post(http, server.url, data)
            assert r.status_code == status, (name, r.text)
            assert r.headers["content-type"] == "application/problem+json", name
            problem = r.json()
            assert problem["type"] == f"/problems/{slug}" and problem["detail"], (name, problem)
            assert took_s < TIME_BOUND_S, (name, took_s)
            slowest[name] = max(slowest.get(name, 0.0), took_s)
        _served(http, server.url, good_video)  # still up, and answering right
        rss.append(server.rss_bytes())
    growth = rss[-1] - rss[0]
    print(f"\n{len(cases)} hostile cases x {ROUNDS + 1} rounds; slowest "
          f"{max(slowest, key=slowest.get)!r} {max(slowest.values()):.2f} s; RSS after each "
          f"round (MiB): {[round(b / 2**20, 1) for b in rss]}; growth {growth / 2**20:.1f} MiB")
    assert growth < RSS_GROWTH_BOUND, rss
    assert server.process.poll() is None


def test_corrupted_real_videos_never_get_a_5xx(server, http, good_video):
    """Real videos with 1..64 random bytes overwritten past their first 64: FFmpeg may conceal
    the damage (200) or not (4xx); nothing else is allowed."""
    rng = np.random.default_rng(1)
    sources = {fmt: encode(moving_square(12, 64, 64, seed=4), fmt) for fmt in ("mp4", "webm")}
    answers: dict[int, int] = {}
    for fmt, data in sources.items():
        for _ in range(30):
            edited = bytearray(data)
            for _ in range(int(rng.integers(1, 65))):
                edited[int(rng.integers(64, len(data)))] = int(rng.integers(0, 256))
            r, took_s = _post(http, server.url, bytes(edited))
            assert r.status_code == 200 or (
                400 <= r.status_code < 500
                and r.headers["content-type"] == "application/problem+json"), (fmt, r.text)
            assert took_s < TIME_BOUND_S
            answers[r.status_code] = answers.get(r.status_code, 0) + 1
    print(f"\n60 corrupted videos: answers by status {answers}")
    _served(http, server.url, good_video)


def test_many_tiny_requests_at_once(server, http, good_video):
    """600 tiny bad requests from 16 threads: each gets its 4xx, then a good one is served."""
    bodies = [
        ({"files": {"video": ("a.mp4", b"", "video/mp4")}}, 400),  # empty file
        ({"files": {"video": ("a.mp4", b"x", "video/mp4")}}, 400),  # one byte
        ({"files": {"other": ("a.mp4", b"x", "video/mp4")}}, 422),  # no `video` field
        ({"content": b"--x\r\nnot a form",
          "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400),
    ]
    started = time.monotonic()

    def call(i: int) -> tuple[int, int, str]:
        kwargs, status = bodies[i % len(bodies)]
        r = http.post(server.url + "/encode", **kwargs)
        return r.status_code, status, r.headers.get("content-type", "")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(600)))
    took_s = time.monotonic() - started
    assert all(got == want and kind == "application/problem+json"
               for got, want, kind in answers), answers[:10]
    print(f"\n600 tiny requests in {took_s:.1f} s ({600 / took_s:.0f}/s)")
    _served(http, server.url, good_video)
