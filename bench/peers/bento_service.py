"""The BentoML peer: the same /encode and /swap as vdis (multipart `video`; `appearance` and
`motion`; JSON codes; an MP4) as a BentoML 1.4 service with adaptive batching, on the same ONNX
files and the same video IO (service.videoio), no torch.

Two services, as BentoML's adaptive batching asks for: `Peer`, the HTTP face (2 workers,
PEER_BENTO_WORKERS), decodes the uploads and encodes the MP4 in threads, and calls `Model`
(1 worker, PEER_BENTO_MODEL_WORKERS, so one dispatcher sees every request), whose batchable
methods run the encoder and the decoder on the batches BentoML's dispatcher forms (up to 16
clips, PEER_BENTO_MAX_BATCH), one session per graph on 1 intra-op thread (PEER_BENTO_THREADS;
0: onnxruntime's default, a spinning thread per core, against which the HTTP workers' video IO
competes: a smoke run on the busy 2-core host gave 126 ms of CPU per /swap, 64 with 1 thread).
A batchable method takes and gives one array, so the codes travel packed in one row per clip.

BentoML 1.4's client between services recycles its connection session every
`runner_connection.max_requests` (100) calls, closing it under the calls still in flight, which
then fail with 500s under load; `max_age` (300 s) does the same by time. Both are raised here.

BentoML lives in its own venv, never the serving one (pyproject's `bench-peers` extra):

    python -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench-peers]'
    VDIS_MODEL_DIR=models/sprites .venv-bench/bin/bentoml serve \
        bench.peers.bento_service:Peer --port 3000
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import bentoml
import numpy as np
from starlette.responses import Response

from bench.peers.common import (
    codes_body,
    decode,
    encode,
    model_dir,
    open_sessions,
    read_clip,
)
from service import videoio
from service.engine.manifest import load_manifest

WORKERS = int(os.environ.get("PEER_BENTO_WORKERS", "2"))
MODEL_WORKERS = int(os.environ.get("PEER_BENTO_MODEL_WORKERS", "1"))
THREADS = int(os.environ.get("PEER_BENTO_THREADS", "1"))
MAX_BATCH = int(os.environ.get("PEER_BENTO_MAX_BATCH", "16"))
NEVER_RECYCLE = {"max_requests": 2**31 - 1, "max_age": 1e9}  # see the module docstring
TIMEOUT = {"timeout": 120}


def split_sizes(manifest) -> list[int]:
    """Widths of appearance mean, logvar, motion mean, logvar in a packed code row."""
    f, tz = manifest.appearance_dim, manifest.seq_len * manifest.motion_dim
    return [f, f, tz, tz]


@bentoml.service(workers=MODEL_WORKERS, traffic=TIMEOUT, runner_connection=NEVER_RECYCLE)
class Model:
    def __init__(self) -> None:
        self.manifest, self.sessions = open_sessions(model_dir(), THREADS)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=60_000)
    def encode_batch(self, clips: np.ndarray) -> np.ndarray:
        """clips (B, T, S, S, 3) uint8 -> codes (B, 2F + 2TZ) float32, packed."""
        codes = encode(self.sessions, clips)
        return np.concatenate([c.reshape(len(clips), -1) for c in codes], axis=1)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=60_000)
    def decode_batch(self, codes: np.ndarray) -> np.ndarray:
        """codes (B, F + TZ) float32 -> video (B, T, S, S, 3) uint8."""
        m = self.manifest
        appearance, motion = np.split(codes, [m.appearance_dim], axis=1)
        return decode(self.sessions, np.ascontiguousarray(appearance),
                      motion.reshape(len(codes), m.seq_len, m.motion_dim))


@bentoml.service(workers=WORKERS, traffic=TIMEOUT)
class Peer:
    model = bentoml.depends(Model)

    def __init__(self) -> None:
        self.manifest = load_manifest(model_dir())
        self.sizes = np.cumsum(split_sizes(self.manifest))[:-1]

    async def _clip(self, upload: Path) -> videoio.Clip:
        return await asyncio.to_thread(read_clip, upload.read_bytes(), self.manifest)

    async def _codes(self, clip: videoio.Clip) -> list[np.ndarray]:
        """One clip's [f mean (F,), f logvar, z mean (T, Z), z logvar] through the batcher."""
        (row,) = await self.model.to_async.encode_batch(clip.frames[None])
        t, z = self.manifest.seq_len, self.manifest.motion_dim
        f_mean, f_logvar, z_mean, z_logvar = np.split(row, self.sizes)
        return [f_mean, f_logvar, z_mean.reshape(t, z), z_logvar.reshape(t, z)]

    @bentoml.api(route="/encode")
    async def encode(self, video: Path) -> dict:
        clip = await self._clip(video)
        return codes_body(self.manifest, await self._codes(clip), clip)

    # No return annotation: BentoML builds a schema from it, and has none for a Response,
    # which it sends as it is (an MP4, as vdis answers).
    @bentoml.api(route="/swap")
    async def swap(self, appearance: Path, motion: Path):
        clip_a, clip_m = await asyncio.gather(self._clip(appearance), self._clip(motion))
        codes_a, codes_m = await asyncio.gather(self._codes(clip_a), self._codes(clip_m))
        packed = np.concatenate([codes_a[0], codes_m[2].ravel()])[None]  # (1, F + TZ)
        (video,) = await self.model.to_async.decode_batch(packed)  # (T, S, S, 3)
        mp4 = await asyncio.to_thread(videoio.encode_mp4, video, 8.0)
        return Response(mp4, media_type="video/mp4")
