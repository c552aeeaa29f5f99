"""The in-process engine: the operations (service.engine.ops) over a micro-batcher in front of
onnxruntime, in the API's own process; concurrent callers' rows share calls."""

from __future__ import annotations

import os

from service.engine.base import Engine
from service.engine.batcher import BatchObserver, MicroBatcher
from service.engine.manifest import load_manifest
from service.engine.ops import Arrays, Operations
from service.engine.runner import CUDA, OnnxRunner, choose_providers
from service.settings import Settings


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; a container's --cpuset-cpus)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_parallelism(settings: Settings, cores: int | None = None) -> Settings:
    """The settings with VDIS_MAX_CONCURRENT_RUNS and VDIS_INTRA_OP_THREADS decided (no 0s).

    On CPU: both unset -> one call at a time on every core; one set -> the other from the cores
    (MAX_CONCURRENT_RUNS=2 on 2 cores: two calls side by side, one thread each). On CUDA (asked
    for): one call at a time unless set; threads stay 0 (onnxruntime's default).

    Calls side by side gave 28% more /swap throughput on 2 cores, but with them the API's RSS
    climbs for the first 2000-4000 requests (to a plateau ~10% above one call's), which the
    leak check reads as growth, so they are not the default (docs/benchmarks.md, Memory).
    """
    runs, threads = settings.MAX_CONCURRENT_RUNS, settings.INTRA_OP_THREADS
    if CUDA in choose_providers(settings.PROVIDERS, settings.REQUIRE_GPU):
        runs = runs or 1
    else:
        cores = cores or usable_cores()
        if not runs:
            runs = max(1, cores // threads) if threads else 1
        threads = threads or max(1, cores // runs)
    return settings.model_copy(update={"MAX_CONCURRENT_RUNS": runs, "INTRA_OP_THREADS": threads})


def build_runner(settings: Settings) -> OnnxRunner:
    """Load and verify the model folder named by the settings (RuntimeError if it is broken).

    `settings` as resolve_parallelism returns them (a 0 for the threads: onnxruntime's default).
    """
    manifest = load_manifest(settings.MODEL_DIR, settings.PRECISION)
    return OnnxRunner(manifest, choose_providers(settings.PROVIDERS, settings.REQUIRE_GPU),
                      settings.INTRA_OP_THREADS, settings.INTER_OP_THREADS,
                      intra_op_spinning=settings.INTRA_OP_SPINNING,
                      require_gpu=settings.REQUIRE_GPU, device_id=settings.CUDA_DEVICE_ID,
                      conv_algo_search=settings.CUDNN_CONV_ALGO_SEARCH,
                      max_batch=settings.MAX_BATCH,
                      warmup_batches=warmup_batches(settings.WARMUP_BATCHES))


def warmup_batches(setting: str) -> list[int] | None:
    """VDIS_WARMUP_BATCHES -> batch sizes; None (empty setting): the runner's default."""
    if not setting.strip():
        return None
    if setting.strip().lower() == "none":
        return []
    try:
        sizes = [int(b) for b in setting.split(",") if b.strip()]
    except ValueError as error:
        raise RuntimeError(f"VDIS_WARMUP_BATCHES={setting!r} is not comma-separated batch "
                           "sizes (e.g. 1,16), empty or none") from error
    if any(b < 1 for b in sizes):
        raise RuntimeError(f"VDIS_WARMUP_BATCHES={setting!r}: batch sizes must be >= 1")
    return sizes


class LocalEngine(Engine):
    def __init__(self, settings: Settings, on_batch: BatchObserver | None = None):
        settings = resolve_parallelism(settings)
        self.runner = build_runner(settings)
        self.manifest = self.runner.manifest
        self.batcher = MicroBatcher(self.runner.run, settings.MAX_BATCH, settings.MAX_WAIT_MS,
                                    settings.MAX_CONCURRENT_RUNS, on_batch)
        self.operations = Operations(self.manifest, self.batcher.submit)

    async def start(self) -> None:
        self.batcher.start()

    async def close(self) -> None:
        await self.batcher.stop()

    async def run(self, operation: str, model: str | None, arrays: Arrays,
                  params: dict) -> Arrays:
        return await self.operations.run(operation, arrays, params)

    def status(self) -> dict:
        return {"engine": "local", **self.runner.status(), "queue": self.batcher.state()}
