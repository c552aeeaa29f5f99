"""The afternoon peer: the FastAPI + onnxruntime app one would write first, to measure vdis
against. POST /encode (`video` -> JSON codes) and POST /swap (`appearance`, `motion` -> MP4)
with vdis's multipart fields and answers; sync `def` routes (FastAPI runs each in its thread
pool), no batching, one onnxruntime session per graph with 1 intra-op thread (the calls of
concurrent requests run side by side on the cores), and service.videoio for the video IO.

    VDIS_MODEL_DIR=models/sprites .venv/bin/python -m uvicorn bench.peers.plain_app:app
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import Response

from bench.peers.common import codes_body, decode, encode, model_dir, open_sessions, read_clip
from service import videoio

manifest, sessions = open_sessions(model_dir(), threads=1)
app = FastAPI(title="plain FastAPI + onnxruntime peer")


def clip_of(upload: UploadFile) -> videoio.Clip:
    try:
        return read_clip(upload.file.read(), manifest)
    except videoio.VideoError as error:
        raise HTTPException(422, f"{upload.filename}: {error}") from error


@app.post("/encode")
def encode_route(video: Annotated[UploadFile, File()]) -> dict:
    clip = clip_of(video)
    codes = encode(sessions, clip.frames[None])  # each with a batch axis of 1
    return codes_body(manifest, [c[0] for c in codes], clip)


@app.post("/swap")
def swap_route(appearance: Annotated[UploadFile, File()],
               motion: Annotated[UploadFile, File()]) -> Response:
    clip_a, clip_m = clip_of(appearance), clip_of(motion)
    f_mean, _, _, _ = encode(sessions, clip_a.frames[None])
    _, _, z_mean, _ = encode(sessions, clip_m.frames[None])
    video = decode(sessions, f_mean, z_mean)[0]  # (T, S, S, 3)
    return Response(videoio.encode_mp4(video, 8.0), media_type="video/mp4")


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}
