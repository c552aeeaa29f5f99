"""Security: API keys (401 without a valid one), the body cap enforced before the body is read
(Content-Length up front, a chunked body while it streams, on a real uvicorn), no pickle on the
request path."""

import asyncio
import os
import pickle
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api import guard
from service.app import create_app
from service.engine import wire
from service.settings import REPO
from tests.liveservice import running_service
from tests.service.conftest import make_settings
from tests.service.redisutil import wait_for
from vdis import AsyncClient, Client, VdisError

KEYS = ("first-key-0123456789", "second-key-abcdefghij")
KEYED = [("POST", "/encode"), ("POST", "/decode"), ("POST", "/swap"), ("POST", "/generate"),
         ("GET", "/jobs/0123"), ("POST", "/encode?async=true")]
OPEN = ["/health", "/ready", "/metrics", "/model", "/problems/too-large", "/", "/docs",
        "/openapi.json", "/static/style.css"]
SAMPLE = REPO / "service" / "static" / "samples" / "sprite-1-walk-front.mp4"
UPLOAD_LIMIT = 200_000  # bytes per file on the live server; its body limit is 2x + 64 KiB


@pytest.fixture(scope="module")
def keyed(model_dir):
    with TestClient(create_app(make_settings(model_dir, API_KEYS=",".join(KEYS)))) as client:
        yield client


def _unauthorized(response, challenge: str) -> dict:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == challenge
    body = response.json()
    assert body["type"] == "/problems/unauthorized" and "X-API-Key" in body["detail"]
    return body


@pytest.mark.parametrize("method, path", KEYED)
def test_model_endpoints_need_a_key(keyed, mp4, method, path):
    files = {"video": ("a.mp4", mp4, "video/mp4")} if method == "POST" else None
    missing = keyed.request(method, path, files=files)
    assert "needs an API key" in _unauthorized(missing, 'Bearer realm="vdis"')["detail"]
    for wrong in ({"X-API-Key": "nope"}, {"X-API-Key": KEYS[0][:-1]},
                  {"X-API-Key": KEYS[0] + "x"}, {"Authorization": f"Basic {KEYS[0]}"},
                  {"Authorization": "Bearer " + KEYS[0].upper()}):
        refused = keyed.request(method, path, files=files, headers=wrong)
        challenge = 'Bearer realm="vdis"' if "Basic" in str(wrong) else \
            'Bearer realm="vdis", error="invalid_token"'
        _unauthorized(refused, challenge)


def test_every_route_not_declared_public_refuses_a_request_without_a_key(keyed):
    """Taken from the app's own routes, so an endpoint added later is covered: each of its
    methods answers 401 without a key, unless its router uses guard.PublicRoute."""
    from fastapi.routing import APIRoute

    keyed_seen, public_seen = set(), set()
    for route in guard.flat_routes(keyed.app.routes):
        if not isinstance(route, APIRoute):
            continue
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        for method in route.methods:
            answer = keyed.request(method, path)
            if guard.is_keyed(route):
                assert answer.status_code == 401, (method, path, answer.status_code)
                keyed_seen.add(route.path)
            else:
                assert answer.status_code != 401, (method, path)
                public_seen.add(route.path)
    assert {"/encode", "/decode", "/swap", "/generate", "/jobs/{job_id}"} <= keyed_seen
    # the open routes are exactly these: probes, the model cards and their sample clips,
    # problem types, page and docs
    assert public_seen - {"/favicon.ico"} == {
        "/health", "/ready", "/metrics", "/model", "/models", "/models/{name}",
        "/models/{name}/samples/{file}", "/problems/{slug}", "/", "/docs",
        "/docs/oauth2-redirect", "/redoc"} - ({"/redoc"} - public_seen)
    # a new route on a plain router is keyed with no list to update
    from fastapi import APIRouter

    router = APIRouter()

    @router.post("/brand-new-model-endpoint")
    async def brand_new() -> dict:
        return {"served": True}
    keyed.app.include_router(router)
    try:
        _unauthorized(keyed.post("/brand-new-model-endpoint"), 'Bearer realm="vdis"')
        assert keyed.post("/brand-new-model-endpoint",
                          headers={"X-API-Key": KEYS[0]}).json() == {"served": True}
    finally:
        keyed.app.router.routes.pop()


def test_either_key_in_either_header_is_accepted(keyed, mp4):
    video = {"video": ("a.mp4", mp4, "video/mp4")}
    for headers in ({"X-API-Key": KEYS[0]}, {"X-API-Key": KEYS[1]},
                    {"Authorization": f"Bearer {KEYS[1]}"}, {"authorization": f"bearer {KEYS[0]}"}):
        r = keyed.post("/encode?format=npz", files=video, headers=headers)
        assert r.status_code == 200, (headers, r.text)
    accepted = keyed.post("/encode?async=true&format=npz", files=video,
                          headers={"X-API-Key": KEYS[0]})
    assert accepted.status_code == 202
    job = accepted.json()["url"]
    _unauthorized(keyed.get(job), 'Bearer realm="vdis"')  # the answer needs the key too

    def answer():  # the job ran with the caller's key: its own answer is the codes
        r = keyed.get(job, headers={"X-API-Key": KEYS[1]})
        assert r.status_code == 200, r.text
        return r.headers["content-type"] == "application/x-npz"
    wait_for(answer, 30, "the async job's answer")


@pytest.mark.parametrize("path", OPEN)
def test_probes_docs_and_page_stay_open(keyed, path):
    assert keyed.get(path).status_code == 200, path


def test_openapi_declares_the_keys_only_when_they_are_on(keyed, client):
    document = keyed.get("/openapi.json").json()
    assert set(document["components"]["securitySchemes"]) == {"apiKey", "bearer"}
    assert document["paths"]["/swap"]["post"]["security"] == [{"apiKey": []}, {"bearer": []}]
    assert "security" not in document["paths"]["/health"]["get"]
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_keys_are_compared_in_constant_time(keyed, monkeypatch):
    """Each request compares with hmac.compare_digest against every key (no early exit when the
    first matches), on SHA-256 digests (so the offered key's length shows nowhere)."""
    compared = []

    def spy(a, b):
        compared.append((len(a), len(b)))
        return real(a, b)
    real = guard.hmac.compare_digest
    monkeypatch.setattr(guard.hmac, "compare_digest", spy)
    for offered in (KEYS[0], "x", "y" * 1000):
        compared.clear()
        keyed.post("/decode", json={}, headers={"X-API-Key": offered})
        assert compared == [(32, 32)] * len(KEYS), offered


# ---------------------------------------------------------------------------------------------
# The body cap, on a real uvicorn: raw sockets, so the test controls what is sent when


@pytest.fixture(scope="module")
def live(model_dir):
    env = {"VDIS_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT), "VDIS_API_KEYS": KEYS[0]}
    with running_service(model_dir, env=env) as url:
        yield url


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _request_head(url: str, path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {url.removeprefix('http://')}",
             f"X-API-Key: {KEYS[0]}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_answer(sock: socket.socket, timeout_s: float = 10.0) -> tuple[int, bytes]:
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data or not _complete(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    return bool(length) and len(body) >= int(length.group(1))


def test_a_declared_length_over_the_limit_is_refused_before_the_body(live):
    """Headers only, announcing 10 GB: the 413 comes back though not one body byte was sent."""
    with socket.create_connection(_address(live)) as sock:
        sock.sendall(_request_head(live, "/encode", "Content-Length: 10000000000",
                                   "Content-Type: multipart/form-data; boundary=x"))
        started = time.monotonic()
        status, body = _read_answer(sock)
    assert status == 413 and time.monotonic() - started < 5
    assert b"/problems/too-large" in body and b"10000000000 bytes" in body
    assert httpx.get(f"{live}/health").status_code == 200


def test_a_chunked_body_is_cut_off_at_the_limit(live):
    """A chunked upload (no Content-Length) of up to 4x the limit: the 413 arrives while it is
    being sent, after about the limit, and the server answers the next request."""
    limit = 2 * UPLOAD_LIMIT + 64 * 1024
    chunk = os.urandom(16 * 1024)
    sent = 0
    with socket.create_connection(_address(live)) as sock:
        sock.sendall(_request_head(live, "/encode", "Transfer-Encoding: chunked",
                                   "Content-Type: multipart/form-data; boundary=vdisboundary"))
        part = (b'--vdisboundary\r\nContent-Disposition: form-data; name="video"; '
                b'filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n')
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))  # then the file, never ending
        sock.setblocking(False)
        answered = b""
        while sent < 4 * limit and not answered:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            time.sleep(0.002)
            try:
                answered = sock.recv(65536)
            except BlockingIOError:
                pass
        sock.settimeout(10)
        data = answered + (b"" if _complete(answered) else sock.recv(65536))
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert b"/problems/too-large" in data and f"passed {limit} bytes".encode() in data
    assert limit <= sent < 4 * limit, sent  # stopped early: the rest was never needed
    print(f"\nchunked upload: 413 after {sent} bytes sent, limit {limit}")
    assert httpx.get(f"{live}/health").status_code == 200


def test_a_streamed_body_under_the_limit_is_served(live, mp4):
    """The same chunked path with a real video under the limit gets its codes (httpx sends a
    generator body chunked)."""
    boundary = "vdisboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; "
            f"filename=\"a.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").encode() + mp4 + \
        f"\r\n--{boundary}--\r\n".encode()

    def pieces():
        for start in range(0, len(body), 1000):
            yield body[start:start + 1000]
    r = httpx.post(f"{live}/encode?format=npz", content=pieces(), timeout=30,
                   headers={"X-API-Key": KEYS[0],
                            "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    assert "transfer-encoding" not in r.request.headers or \
        r.request.headers["transfer-encoding"] == "chunked"


def test_keys_over_real_http(live, mp4):
    video = {"video": ("a.mp4", mp4, "video/mp4")}
    r = httpx.post(f"{live}/swap", files={"appearance": video["video"], "motion": video["video"]})
    _unauthorized(r, 'Bearer realm="vdis"')
    r = httpx.post(f"{live}/encode?format=npz", files=video,
                   headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=30)
    assert r.status_code == 200, r.text


def test_the_client_and_the_command_line_send_the_key(live, monkeypatch, tmp_path):
    monkeypatch.delenv("VDIS_API_KEY", raising=False)
    with Client(live) as anonymous, pytest.raises(VdisError) as refused:
        anonymous.encode(SAMPLE)
    assert refused.value.status == 401 and refused.value.slug == "unauthorized"
    with Client(live, api_key=KEYS[0]) as keyed_client:
        assert keyed_client.encode(SAMPLE).motion.ndim == 2
    monkeypatch.setenv("VDIS_API_KEY", KEYS[0])

    async def from_env():
        async with AsyncClient(live) as client:
            return await client.encode(SAMPLE)
    assert asyncio.run(from_env()).appearance.ndim == 1
    command = [sys.executable, "-m", "vdis", "encode", str(SAMPLE), "--url", live]
    env = {k: v for k, v in os.environ.items() if k != "VDIS_API_KEY"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("vdis encode: 401 A valid API key is needed")
    assert "--api-key or $VDIS_API_KEY" in result.stderr
    for extra, extra_env in ((["--api-key", KEYS[0]], {}), ([], {"VDIS_API_KEY": KEYS[0]})):
        result = subprocess.run(command + extra + ["-o", str(tmp_path / "codes.json")],
                                env={**env, **extra_env}, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# No pickle on the request path


class _Planted:
    """Unpickling this runs code: it creates the file at `path`."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_no_pickle_on_the_request_path(client, tmp_path):
    """Nothing in service/ can unpickle: no pickle module, no allow_pickle, no np.load; and a
    pickle sent where a video, codes or a queued job go is refused without running it."""
    pattern = re.compile(r"\bpickle\b|allow_pickle|np\.load\(|\bmarshal\b|\bshelve\b|\bdill\b|"
                         r"\bjoblib\b|torch\.load")
    for path in sorted((REPO / "service").rglob("*.py")):
        code = "\n".join(line for line in path.read_text().splitlines()
                         if not line.lstrip().startswith("#"))
        hits = [m.group(0) for m in pattern.finditer(code)
                if "Never pickle" not in code[max(0, m.start() - 40):m.end() + 40]]
        assert not hits, f"{path.relative_to(REPO)}: {hits}"

    marker = tmp_path / "ran"
    payload = pickle.dumps(_Planted(marker))
    npz_with_object = tmp_path / "object.npz"
    np.savez(npz_with_object, codes=np.array([_Planted(marker)], dtype=object))
    for data in (payload, npz_with_object.read_bytes()):
        r = client.post("/encode", files={"video": ("codes.npz", data, "application/octet-stream")})
        assert r.status_code == 400 and r.json()["type"] == "/problems/not-a-video", r.text
    r = client.post("/decode", content=payload,
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 415, r.text
    r = client.post("/decode", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["type"] == "/problems/invalid-body", r.text
    with pytest.raises(wire.WireError):
        wire.unpack(payload)  # what a worker does with a queued job's payload
    assert not marker.exists()
