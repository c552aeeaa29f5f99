"""The in-process engine: for each model, the operations (service.engine.ops) over a
micro-batcher in front of onnxruntime, in the API's own process; concurrent callers' rows share
calls. `LoadedModels` (one runner and batcher per model, loaded at start or on first use) is
what a Redis worker runs too."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.engine.base import Engine
from service.engine.batcher import MicroBatcher
from service.engine.catalogue import Catalogue, discover, rss_bytes
from service.engine.manifest import load_manifest
from service.engine.ops import Arrays, Operations
from service.engine.runner import CUDA, OnnxRunner, choose_providers
from service.settings import Settings

log = logging.getLogger(__name__)
# on_batch(model, graph, rows, queue waits of its requests in s, run time in s): for metrics
ModelBatchObserver = Callable[[str, str, int, list[float], float], None]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; a container's --cpuset-cpus)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Rows in one onnxruntime call when VDIS_MAX_BATCH is 0. On CPU a batch is barely cheaper per
# row (9-16 rows cost 40-55% more per row than 1-4), and the memory onnxruntime keeps grows with
# the largest batch seen: /swap at concurrency 32 79 req/s and 470 MiB RSS at 4 (warmed up),
# 75 req/s and 880-1030 MiB at 16, still growing 18% from 200 to 2000 requests.
CPU_MAX_BATCH, GPU_MAX_BATCH = 4, 16


def resolve_parallelism(settings: Settings, cores: int | None = None) -> Settings:
    """The settings with VDIS_MAX_CONCURRENT_RUNS, VDIS_INTRA_OP_THREADS and VDIS_MAX_BATCH
    decided (no 0s).

    On CPU: both unset -> one call per core side by side, one thread each; one set -> the other
    from the cores (INTRA_OP_THREADS=2 on 2 cores: one call at a time on both). On CUDA (asked
    for): one call at a time unless set; threads stay 0 (onnxruntime's default).

    Measured on 2 cores (docs/benchmarks.md): two 1-thread calls side by side gave /swap at
    concurrency 32 56 req/s against 43 for one 2-thread call; with batches of CPU_MAX_BATCH
    warmed up at start the RSS grew 2.4% from 200 to 2000 /swaps.
    """
    runs, threads = settings.MAX_CONCURRENT_RUNS, settings.INTRA_OP_THREADS
    on_cuda = CUDA in choose_providers(settings.PROVIDERS, settings.REQUIRE_GPU)
    batch = settings.MAX_BATCH or (GPU_MAX_BATCH if on_cuda else CPU_MAX_BATCH)
    if on_cuda:
        runs = runs or 1
    else:
        cores = cores or usable_cores()
        if not runs:
            runs = max(1, cores // threads) if threads else cores
        threads = threads or max(1, cores // runs)
    return settings.model_copy(update={"MAX_CONCURRENT_RUNS": runs, "INTRA_OP_THREADS": threads,
                                       "MAX_BATCH": batch})


def build_runner(settings: Settings, folder: Path | None = None) -> OnnxRunner:
    """Load and verify one model folder (default: VDIS_MODEL_DIR, else the default model's);
    RuntimeError if it is broken.

    `settings` as resolve_parallelism returns them (a 0 for the threads: onnxruntime's default).
    """
    settings = resolve_parallelism(settings)  # as it was, where already resolved
    folder = folder or settings.MODEL_DIR or discover(settings).resolve(None).folder
    manifest = load_manifest(folder, settings.PRECISION)
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


@dataclass
class LoadedModel:
    """One model ready to run: its runner, its batcher and its operations on that batcher."""

    runner: OnnxRunner
    batcher: MicroBatcher
    operations: Operations
    alone: Operations  # the same, each graph call unbatched (a worker's retry of one job)
    memory_bytes: int  # the process's RSS growth while it loaded
    load_s: float

    def status(self) -> dict:
        return {"loaded": True, "memory_mb": round(self.memory_bytes / 2**20, 1),
                "load_s": round(self.load_s, 2), **self.runner.status(),
                "queue": self.batcher.state()}


class LoadedModels:
    """The models of a catalogue, each loaded once: at construction (VDIS_LOAD=eager) or by the
    first `get` of it (lazy, in a thread; one load at a time, so each one's memory is its own).

    `on_batch(model, graph, rows, waits_s, run_s)` sees every onnxruntime call.
    """

    def __init__(self, settings: Settings, catalogue: Catalogue, max_wait_ms: float,
                 on_batch: ModelBatchObserver | None = None):
        self.settings, self.catalogue = settings, catalogue
        self.max_wait_ms, self.on_batch = max_wait_ms, on_batch
        self.loaded: dict[str, LoadedModel] = {}
        self._lock: asyncio.Lock | None = None
        if settings.LOAD == "eager":
            for name in catalogue.names:
                self.loaded[name] = self._load(name)

    def _load(self, name: str) -> LoadedModel:
        s = self.settings
        started, before = time.perf_counter(), rss_bytes()
        runner = build_runner(s, self.catalogue.manifests[name].folder)
        observe = None
        if self.on_batch is not None:
            def observe(graph, rows, waits_s, run_s, on_batch=self.on_batch):
                on_batch(name, graph, rows, waits_s, run_s)
        batcher = MicroBatcher(runner.run, s.MAX_BATCH, self.max_wait_ms, s.MAX_CONCURRENT_RUNS,
                               observe)
        full = s.DOMAIN_CHECK == "full"
        return LoadedModel(runner, batcher, Operations(runner.manifest, batcher.submit, full),
                           Operations(runner.manifest, batcher.run_alone, full),
                           max(0, rss_bytes() - before), time.perf_counter() - started)

    def start(self) -> None:
        self._lock = asyncio.Lock()
        for model in self.loaded.values():
            model.batcher.start()

    async def get(self, name: str) -> LoadedModel:
        """Model `name` of the catalogue, loaded now if it is not yet."""
        model = self.loaded.get(name)
        if model is not None:
            return model
        async with self._lock:
            if name not in self.loaded:
                model = await asyncio.to_thread(self._load, name)
                model.batcher.start()
                self.loaded[name] = model
                log.info("model %s loaded on first use in %.1f s (+%.0f MB)", name,
                         model.load_s, model.memory_bytes / 2**20)
        return self.loaded[name]

    async def stop(self) -> None:
        for model in self.loaded.values():
            await model.batcher.stop()

    def status(self) -> dict[str, dict]:
        """Each model: loaded or not; if loaded, its memory, runner and queue."""
        return {name: self.loaded[name].status() if name in self.loaded else {"loaded": False}
                for name in self.catalogue.names}


class LocalEngine(Engine):
    def __init__(self, settings: Settings, on_batch: ModelBatchObserver | None = None):
        settings = resolve_parallelism(settings)
        self.catalogue = discover(settings)
        self.models = LoadedModels(settings, self.catalogue, settings.MAX_WAIT_MS, on_batch)
        self.load = settings.LOAD

    async def start(self) -> None:
        self.models.start()

    async def close(self) -> None:
        await self.models.stop()

    async def run(self, operation: str, model: str | None, arrays: Arrays,
                  params: dict) -> Arrays:
        loaded = await self.models.get(self.catalogue.resolve(model).name)
        return await loaded.operations.run(operation, arrays, params)

    def status(self) -> dict:
        """The default model's runner and queue (as before several models), then every
        model's state under `models`."""
        models = self.models.status()
        default = {k: v for k, v in models[self.catalogue.default].items()
                   if k not in ("loaded", "memory_mb", "load_s")}
        return {"engine": "local", **default, "default_model": self.catalogue.default,
                "load": self.load, "models": models}
