"""Throughput of the engine: in-process, and through Redis with 1 and 2 worker processes.

`concurrency` callers each send one-clip jobs back to back (encode of a (T, S, S, 3) clip, then
decode of its codes) until `jobs` are done; jobs/s is the rate over the whole run, after a
warm-up. The Redis runs start `python -m service.worker` subprocesses on a fresh key prefix.
On a machine with few cores the workers, the caller and Redis share them, which a table from a
bigger machine would not show.

    python bench/redis_throughput.py --model-dir models/sprites --jobs 400 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.engine import Engine, LocalEngine  # noqa: E402
from service.engine.redis_engine import RedisEngine  # noqa: E402
from service.settings import REPO, Settings  # noqa: E402
from tests.service.redisutil import Worker, delete_keys, unique_prefix  # noqa: E402

SHIPPED_MODEL = REPO / "models" / "sprites"


async def drive(engine: Engine, jobs: int, concurrency: int, frames: int) -> float:
    """jobs/s of `jobs` encode+decode pairs (2 jobs each) from `concurrency` callers."""
    s = engine.manifest.frame_size
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (concurrency, frames, s, s, 3), dtype=np.uint8)  # (C, T, S, S, 3)
    left = jobs // 2

    async def caller(i: int) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            codes = await engine.encode(clips[i])
            await engine.decode(codes.appearance_mean, codes.motion_mean)

    await asyncio.gather(*[caller(i) for i in range(concurrency)])  # warm-up
    left = jobs // 2
    started = time.perf_counter()
    await asyncio.gather(*[caller(i) for i in range(concurrency)])
    return 2 * (jobs // 2) / (time.perf_counter() - started)


async def measure(engine: Engine, args) -> float:
    await engine.start()
    try:
        return await drive(engine, args.jobs, args.concurrency, args.frames)
    finally:
        await engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--redis-url", default=os.environ.get("VDIS_REDIS_URL",
                                                              "redis://127.0.0.1:6379/9"))
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8, help="T of each clip")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = parser.parse_args()
    common = {"MAX_BATCH": args.max_batch, "MAX_WAIT_MS": args.max_wait_ms,
              "INTRA_OP_THREADS": args.threads, "INTER_OP_THREADS": 1}

    rows = [("in-process", 0, asyncio.run(measure(
        LocalEngine(Settings(MODEL_DIR=args.model_dir, **common)), args)))]
    for count in (1, 2):
        prefix = unique_prefix("bench")
        logs = Path(tempfile.mkdtemp(prefix="vdis-bench-"))
        started = [Worker(args.model_dir, prefix, f"bench-{i}", logs, url=args.redis_url,
                          wait=False, **common) for i in range(count)]
        try:
            for worker in started:
                worker.wait_ready()
            settings = Settings(MODEL_DIR=args.model_dir, REDIS_URL=args.redis_url,
                                REDIS_PREFIX=prefix, QUEUE_MAX=10 * args.concurrency, **common)
            rows.append(("redis", count, asyncio.run(measure(RedisEngine(settings), args))))
        finally:
            for worker in started:
                worker.stop()
            delete_keys(prefix, args.redis_url)

    print(f"{args.jobs} jobs (encode + decode of T={args.frames} clips), {args.concurrency} "
          f"callers, max batch {args.max_batch}, max wait {args.max_wait_ms:g} ms, "
          f"{os.cpu_count()} CPU cores")
    print(f"| {'engine':<10} | workers | jobs/s | vs in-process |")
    print(f"|{'-' * 12}|---------|--------|---------------|")
    base = rows[0][2]
    for name, workers, rate in rows:
        print(f"| {name:<10} | {workers or '-':>7} | {rate:6.1f} | {rate / base:12.2f}x |")


if __name__ == "__main__":
    main()
