"""Errors a new user meets: each says which upload or field it is about and what to change."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.conftest import make_settings
from tests.service.videos import encode, moving_square

PROBLEM = "application/problem+json"


def problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"/problems/{slug}", body
    return body


# ---------------------------------------------------------------------------------------------
# Upload errors name the form field and the file


@pytest.mark.parametrize("bad, status, slug", [
    (lambda: b"", 400, "empty-video"),
    (lambda: b"notes, not a video" * 10, 400, "not-a-video"),
    (lambda: encode(moving_square(4)), 422, "too-short"),
    (lambda: encode(moving_square(12, 96, 80)), 422, "too-many-pixels"),
])
@pytest.mark.parametrize("field", ["appearance", "motion"])
def test_a_bad_upload_to_swap_is_named(model_dir, mp4, bad, status, slug, field):
    settings = make_settings(model_dir, MAX_PIXELS=96 * 80 - 1 if slug == "too-many-pixels"
                             else 3840 * 2160)
    good = encode(moving_square(12, 64, 64))
    files = {"appearance": ("good.mp4", good, "video/mp4"),
             "motion": ("good.mp4", good, "video/mp4")}
    files[field] = ("broken.mp4", bad(), "video/mp4")
    with TestClient(create_app(settings)) as client:
        body = problem(client.post("/swap", files=files), status, slug)
    assert body["field"] == field and body["filename"] == "broken.mp4"
    assert body["detail"].startswith(f"`{field}` (broken.mp4) is refused: ")


def test_too_large_and_unsupported_type_name_the_field_and_file(model_dir, mp4):
    files = {"appearance": ("a.mp4", mp4, "video/mp4"), "motion": ("notes.txt", mp4, "text/plain")}
    with TestClient(create_app(make_settings(model_dir, MAX_UPLOAD_BYTES=len(mp4)))) as client:
        body = problem(client.post("/swap", files=files), 415, "unsupported-media-type")
        assert (body["field"], body["filename"]) == ("motion", "notes.txt")
        assert body["detail"].startswith("`motion` (notes.txt) is labelled 'text/plain'")
        files = {"appearance": ("big.mp4", mp4 + b"x", "video/mp4"),
                 "motion": ("b.mp4", mp4, "video/mp4")}
        body = problem(client.post("/swap", files=files), 413, "too-large")
        assert (body["field"], body["filename"]) == ("appearance", "big.mp4")


# ---------------------------------------------------------------------------------------------
# A misnamed form field says what was sent and what is expected


def test_a_misnamed_field_says_what_was_sent_and_what_is_expected(client, mp4):
    body = problem(client.post("/encode", files={"file": ("a.mp4", mp4, "video/mp4")}),
                   422, "invalid-parameters")
    assert body["sent"] == ["file"] and body["expected"] == ["video"]
    assert body["detail"] == ("missing `video`; the request sent `file`, and /encode takes "
                              "`video`: rename `file` to `video`")
    files = {"appearance": ("a.mp4", mp4, "video/mp4"), "motoin": ("b.mp4", mp4, "video/mp4")}
    body = problem(client.post("/swap", files=files), 422, "invalid-parameters")
    assert body["sent"] == ["appearance", "motoin"]
    assert body["expected"] == ["appearance", "motion"]
    assert body["detail"].endswith("rename `motoin` to `motion`")
    body = problem(client.post("/swap"), 422, "invalid-parameters")
    assert body["sent"] == [] and "the request sent no fields" in body["detail"]
    body = problem(client.post("/decode", json={"appearance": [1.0], "motions": []}),
                   422, "invalid-parameters")
    assert body["sent"] == ["appearance", "motions"] and "motion" in body["expected"]


# ---------------------------------------------------------------------------------------------
# Accept: what the service cannot send is a 406 that lists what it can


def test_an_accept_the_service_cannot_meet_is_406(client, mp4):
    video = {"video": ("a.mp4", mp4, "video/mp4")}
    body = problem(client.post("/generate?n=1&seed=0", files=video,
                               headers={"Accept": "image/webp"}), 406, "not-acceptable")
    assert body["available"] == ["video/mp4", "image/gif", "image/png", "application/x-npz",
                                 "application/json"]
    assert "image/webp" in body["detail"] and "video/mp4" in body["detail"]
    body = problem(client.post("/encode", files=video, headers={"Accept": "video/mp4"}),
                   406, "not-acceptable")
    assert body["available"] == ["application/json", "application/x-npz"]
    problem(client.post("/generate?n=1", files=video, headers={"Accept": "video/mp4;q=0"}),
            406, "not-acceptable")


@pytest.mark.parametrize("accept, media_type", [
    ("*/*", "video/mp4"),
    ("", "video/mp4"),
    ("image/*", "image/gif"),
    ("image/webp, image/png", "image/png"),
    ("video/mp4;q=0.5, image/gif", "image/gif"),
    ("video/mp4;q=0, */*", "image/gif"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "video/mp4"),
])
def test_accept_picks_the_format(client, mp4, accept, media_type):
    r = client.post("/generate?n=1&seed=0", files={"video": ("a.mp4", mp4, "video/mp4")},
                    headers={"Accept": accept})
    assert r.status_code == 200 and r.headers["content-type"] == media_type
    # ?format= wins over Accept
    r = client.post("/generate?n=1&seed=0&format=png", headers={"Accept": "image/webp"},
                    files={"video": ("a.mp4", mp4, "video/mp4")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


# ---------------------------------------------------------------------------------------------
# The size of an answer is capped, and the request's deadline covers all of its work


def test_an_answer_past_the_output_limit_is_refused_before_the_model_runs(client, mp4):
    video = {"video": ("a.mp4", mp4, "video/mp4")}
    r = client.post("/generate?n=16&frames=64&scale=8&format=gif", files=video)
    body = problem(r, 422, "too-much-output")
    assert body["limit"] == 2**25 and body["pixels"] == 16 * 64 * 512 * 512
    assert "VDIS_MAX_OUTPUT_PIXELS" in body["detail"] and "fewer results" in body["detail"]
    assert "model" not in r.headers["server-timing"].split("model;dur=0.00")[1]  # never ran
    # at the limit exactly: served (16 results of 8 frames at scale 8)
    ok = client.post("/generate?n=16&seed=0&scale=8&format=gif", files=video)
    assert ok.status_code == 200 and ok.content.startswith(b"GIF8")



def test_the_output_limit_covers_swap_and_decode(model_dir, mp4):
    limit = 2 * 8 * 256 * 256  # two results of 8 frames at scale 4
    files = {"appearance": ("a.mp4", mp4, "video/mp4"), "motion": ("b.mp4", mp4, "video/mp4")}
    with TestClient(create_app(make_settings(model_dir, MAX_OUTPUT_PIXELS=limit))) as client:
        assert client.post("/swap?both=true&scale=4", files=files).status_code == 200
        body = problem(client.post("/swap?both=true&scale=5", files=files), 422,
                       "too-much-output")
        assert body["pixels"] == 2 * 8 * 320 * 320 and body["limit"] == limit
        codes = client.post("/encode", files={"video": ("a.mp4", mp4, "video/mp4")}).json()
        problem(client.post("/decode?scale=8", json=codes), 422, "too-much-output")


def test_the_deadline_covers_encoding_the_answer(model_dir, mp4, monkeypatch):
    import time

    from service import videoio

    real = videoio.encode_mp4

    def slow(video, fps=8.0):  # an encode that outlasts the deadline, as a huge GIF once did
        time.sleep(3)
        return real(video, fps)

    monkeypatch.setattr(videoio, "encode_mp4", slow)
    settings = make_settings(model_dir, REQUEST_TIMEOUT_S=1.0)
    with TestClient(create_app(settings)) as client:
        started = time.perf_counter()
        r = client.post("/generate?n=1&seed=0", files={"video": ("a.mp4", mp4, "video/mp4")})
        took = time.perf_counter() - started
        body = problem(r, 504, "deadline-exceeded")
        assert took < 2.5, took
        assert "VDIS_REQUEST_TIMEOUT_S" in body["detail"]
        monkeypatch.setattr(videoio, "encode_mp4", real)
        assert client.get("/health").status_code == 200  # the service goes on
        r = client.post("/generate?n=1&seed=0", files={"video": ("a.mp4", mp4, "video/mp4")})
        assert r.status_code == 200


def test_a_stalled_or_trickled_body_gets_408_and_the_connection_closes(model_dir, mp4):
    import socket
    import time

    from tests.liveservice import running_service

    with running_service(model_dir, env={"VDIS_BODY_TIMEOUT_S": "1.5"}) as url:
        host, port = url.removeprefix("http://").split(":")
        body = (b"--x\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n"
                b"Content-Type: video/mp4\r\n\r\n" + mp4 + b"\r\n--x--\r\n")
        head = (f"POST /encode HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n\r\n").encode()
        for trickle in (False, True):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                started = time.perf_counter()
                sock.sendall(head + body[:100])  # then stall, or a byte every 0.2 s
                if trickle:
                    sock.settimeout(0.2)
                    for byte in body[100:200]:
                        try:
                            sock.sendall(bytes([byte]))
                            if sock.recv(1, socket.MSG_PEEK):
                                break
                        except TimeoutError:
                            continue
                    sock.settimeout(10)
                answer = b""
                while chunk := sock.recv(65536):  # until the server closes the connection
                    answer += chunk
                took = time.perf_counter() - started
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b"/problems/request-timeout" in answer and b"VDIS_BODY_TIMEOUT_S" in answer
            assert 1.4 < took < 5, took
        # a body sent at once is served as before
        import httpx
        r = httpx.post(url + "/encode", files={"video": ("a.mp4", mp4, "video/mp4")})
        assert r.status_code == 200
