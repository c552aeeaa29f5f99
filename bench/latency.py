"""Median latency of one /encode and one /swap against the in-process app, and where it goes.

The HTTP calls run through the whole app (multipart parsing, video decode, batcher, onnxruntime,
video encode). The parts are then timed alone on the same inputs: video decode
(`service.videoio.read_video`), model (the engine's calls, batcher included) and video encode
(`encode_mp4`); "HTTP and the rest" is what the total leaves over.

    python bench/latency.py --model-dir models/sprites --calls 50
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service import videoio  # noqa: E402
from service.app import create_app  # noqa: E402
from service.engine import LocalEngine  # noqa: E402
from service.settings import REPO, Settings  # noqa: E402
from tests.service.videos import encode, moving_square  # noqa: E402

SHIPPED_MODEL = REPO / "models" / "sprites"


def median_ms(fn, calls: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--source-frames", type=int, default=48, help="frames in the upload")
    parser.add_argument("--max-wait-ms", type=float, default=Settings().MAX_WAIT_MS)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads")
    args = parser.parse_args()

    settings = Settings(MODEL_DIR=args.model_dir, MAX_WAIT_MS=args.max_wait_ms,
                        INTRA_OP_THREADS=args.threads)
    upload = encode(moving_square(args.source_frames, args.width, args.height), "mp4", fps=24)
    other = encode(moving_square(args.source_frames, args.width, args.height, seed=1), "mp4",
                   fps=24)
    files = {"video": ("a.mp4", upload, "video/mp4")}
    pair = {"appearance": ("a.mp4", upload, "video/mp4"), "motion": ("b.mp4", other, "video/mp4")}

    with TestClient(create_app(settings)) as client:
        seq_len = client.get("/model").json()["seq_len"]
        provider = client.get("/ready").json()["provider"]
        total = {
            "encode": median_ms(lambda: client.post("/encode", files=files).raise_for_status(),
                                args.calls),
            "swap": median_ms(lambda: client.post("/swap", files=pair).raise_for_status(),
                              args.calls),
        }

    clip = videoio.read_video(upload, seq_len).frames  # (T, 64, 64, 3)
    video_decode = median_ms(lambda: videoio.read_video(upload, seq_len), args.calls)
    # /swap decodes its two uploads in two threads at once: time them the same way.
    with ThreadPoolExecutor(2) as pool:
        def both():
            list(pool.map(lambda data: videoio.read_video(data, seq_len), (upload, other)))

        two_decodes = median_ms(both, args.calls)
    video_encode = median_ms(lambda: videoio.encode_mp4(clip, 8.0), args.calls)
    model_encode, model_swap = asyncio.run(time_model(settings, clip, args.calls))

    parts = {
        "encode": (video_decode, model_encode, 0.0),
        "swap": (two_decodes, model_swap, video_encode),
    }
    print(f"model {args.model_dir} on {provider}; upload {args.width}x{args.height}, "
          f"{args.source_frames} frames, {len(upload)} bytes; T={seq_len}; "
          f"median of {args.calls} calls; MAX_WAIT_MS={args.max_wait_ms:g}")
    print(f"| {'endpoint':8} | {'total ms':>8} | {'video decode':>14} | {'model':>14} | "
          f"{'video encode':>14} | {'HTTP and rest':>14} |")
    print(f"|{'-' * 10}|{'-' * 10}|{'-' * 16}|{'-' * 16}|{'-' * 16}|{'-' * 16}|")
    for name, (dec, mod, enc) in parts.items():
        whole = total[name]
        rest = max(whole - dec - mod - enc, 0.0)
        cells = [f"{v:6.1f} ({100 * v / whole:3.0f}%)" for v in (dec, mod, enc, rest)]
        print(f"| /{name:7} | {whole:8.1f} | " + " | ".join(f"{c:>14}" for c in cells) + " |")


async def time_model(settings: Settings, clip: np.ndarray, calls: int) -> tuple[float, float]:
    """Median ms of the engine work of /encode (1 encode) and /swap (2 encodes, 1 decode)."""
    engine = LocalEngine(settings)
    await engine.start()
    try:
        async def encode_once():
            await engine.encode(clip)

        async def swap_once():
            a, b = await asyncio.gather(engine.encode(clip), engine.encode(clip))
            await engine.decode(a.appearance_mean, b.motion_mean)

        results = []
        for step in (encode_once, swap_once):
            await step()
            times = []
            for _ in range(calls):
                started = time.perf_counter()
                await step()
                times.append(time.perf_counter() - started)
            results.append(1000 * statistics.median(times))
        return results[0], results[1]
    finally:
        await engine.close()


if __name__ == "__main__":
    main()
