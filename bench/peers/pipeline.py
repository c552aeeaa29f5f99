"""The in-process pipeline limit: the work of a /swap or an /encode with no HTTP, no server and
no batcher, in this process, back to back. What a served system could reach at best.

- swap: decode the 2 uploads (service.videoio), the encoder on both clips, the decoder on the
  swapped codes, one MP4 encoded;
- encode: decode the upload, the encoder, the codes as the JSON /encode answers;
- swap+domain, encode+domain: the same and the domain check vdis does on every answer by
  default (VDIS_DOMAIN_CHECK=full): frame 0 of each upload decoded from its own codes (one
  decoder call on all of the round's uploads), its error and the verdicts
  (service.engine.domain). Not the issue's limit: what the limit is with the work vdis adds.

A round does `batch` operations: all their uploads decoded, one encoder call on all their clips,
one decoder call (swap), then the B answers encoded. Measured at each batch size with 1 or 2
independent pipelines side by side (`sessions`: each has its own onnxruntime sessions, on
cores / sessions intra-op threads, driven by its own thread; PyAV and onnxruntime release the
GIL); the limit is the best point. bench/ceiling.py is the model alone, without the video IO.

    .venv/bin/python -m bench.peers.pipeline --seconds 2 --json pipeline.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import csv_ints, csv_words, upload_clips  # noqa: E402
from bench.peers.common import (  # noqa: E402
    codes_body,
    decode,
    encode,
    model_dir,
    open_sessions,
    read_clip,
)
from service import videoio  # noqa: E402
from service.engine import domain  # noqa: E402

OPS = ("swap", "encode", "swap+domain", "encode+domain")
BATCHES = (1, 2, 4, 8, 16)
SESSIONS = (1, 2)


@dataclass
class Point:
    op: str
    batch: int
    sessions: int
    ops_per_s: float
    cpu_ms_per_op: float  # this process's CPU time (all threads) per operation
    operations: int
    seconds: float


class Pipeline:
    """One pipeline: its own sessions, the uploads it sends (the first two shipped samples as
    64x64 MP4s, as bench/compare.py uploads them)."""

    def __init__(self, folder: Path, threads: int, uploads: list[bytes]):
        self.manifest, self.sessions = open_sessions(folder, threads)
        self.appearance, self.motion = uploads[0], uploads[1]

    def round(self, op: str, batch: int) -> None:
        base, _, check = op.partition("+")
        if base == "swap":
            clips = np.stack([read_clip(data, self.manifest).frames
                              for data in [self.appearance] * batch + [self.motion] * batch])
            f_mean, _, _, z_mean = encode(self.sessions, clips)  # rows: B A's, B M's
            videos = decode(self.sessions, f_mean[:batch], z_mean[batch:])  # (B, T, S, S, 3)
            if check:
                self.judge(clips, f_mean, z_mean)
            for video in videos:
                videoio.encode_mp4(video, 8.0)
        elif base == "encode":
            clips = [read_clip(self.appearance, self.manifest) for _ in range(batch)]
            frames = np.stack([c.frames for c in clips])
            codes = encode(self.sessions, frames)
            if check:
                self.judge(frames, codes[0], codes[2])
            for i, clip in enumerate(clips):
                json.dumps(codes_body(self.manifest, [c[i] for c in codes], clip)).encode()
        else:
            raise ValueError(f"unknown operation {op!r}; there are {OPS}")

    def judge(self, clips: np.ndarray, appearance: np.ndarray, motion: np.ndarray) -> None:
        """The domain verdicts of uploads (B, T, S, S, 3) from their codes, as vdis computes
        them by default: frame 0 decoded back, its error, and the code's distance (nothing for
        a model without domain statistics, as in service.engine.ops)."""
        if self.manifest.doc.domain_stats is None:
            return
        frame = decode(self.sessions, appearance, np.ascontiguousarray(motion[:, :1]))
        errors = domain.reconstruction_error(clips, frame)
        domain.upload_verdicts(self.manifest.doc.domain_stats, errors, appearance)


def measure(pipelines: list[Pipeline], op: str, batch: int, seconds: float) -> Point:
    """Each pipeline does rounds back back for `seconds` (one at least), after one warm-up."""
    def rounds(pipeline: Pipeline, until: float) -> int:
        done = 0
        while done == 0 or time.perf_counter() < until:
            pipeline.round(op, batch)
            done += 1
        return done

    with ThreadPoolExecutor(len(pipelines)) as pool:
        list(pool.map(lambda p: rounds(p, 0.0), pipelines))  # warm-up at this shape
        started, cpu = time.perf_counter(), time.process_time()
        done = sum(pool.map(lambda p: rounds(p, started + seconds), pipelines))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    operations = done * batch
    return Point(op, batch, len(pipelines), operations / elapsed, 1000 * cpu / operations,
                 operations, elapsed)


def sweep(folder: Path, ops: list[str], batches: list[int], sessions: list[int],
          seconds: float, log=print) -> list[Point]:
    uploads = upload_clips(64)
    cores = len(os.sched_getaffinity(0))
    points = []
    for count in sessions:
        pipelines = [Pipeline(folder, max(1, cores // count), uploads) for _ in range(count)]
        for op in ops:
            for batch in batches:
                point = measure(pipelines, op, batch, seconds)
                log(f"  pipeline {op:6} B={batch:<3} sessions={count} "
                    f"{point.ops_per_s:7.1f} /s, {point.cpu_ms_per_op:6.1f} ms CPU each")
                points.append(point)
    return points


def best(points: list[Point]) -> dict[str, Point]:
    """op -> its fastest point."""
    top: dict[str, Point] = {}
    for p in points:
        if p.op not in top or p.ops_per_s > top[p.op].ops_per_s:
            top[p.op] = p
    return top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=model_dir())
    parser.add_argument("--ops", type=csv_words, default=list(OPS))
    parser.add_argument("--batches", type=csv_ints, default=list(BATCHES))
    parser.add_argument("--sessions", type=csv_ints, default=list(SESSIONS))
    parser.add_argument("--seconds", type=float, default=1.0, help="time per point")
    parser.add_argument("--json", type=Path, help="write the points and the best here")
    args = parser.parse_args()
    points = sweep(args.model_dir, args.ops, args.batches, args.sessions, args.seconds,
                   log=lambda line: print(line, file=sys.stderr))
    top = best(points)
    for op, p in top.items():
        print(f"{op}: {p.ops_per_s:.1f} /s at B={p.batch}, {p.sessions} session(s)")
    if args.json:
        args.json.write_text(json.dumps({"points": [asdict(p) for p in points],
                                         "best": {op: asdict(p) for op, p in top.items()}},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
