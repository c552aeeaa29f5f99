"""The in-process engine: a micro-batcher in front of onnxruntime, in the API's own process."""

from __future__ import annotations

import numpy as np

from service.engine.base import Engine
from service.engine.batcher import BatchObserver, MicroBatcher
from service.engine.manifest import load_manifest
from service.engine.runner import OnnxRunner, choose_providers
from service.settings import Settings


def build_runner(settings: Settings) -> OnnxRunner:
    """Load and verify the model folder named by the settings (RuntimeError if it is broken)."""
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
        self.runner = build_runner(settings)
        self.manifest = self.runner.manifest
        self.batcher = MicroBatcher(self.runner.run, settings.MAX_BATCH, settings.MAX_WAIT_MS,
                                    settings.MAX_CONCURRENT_RUNS, on_batch)

    async def start(self) -> None:
        self.batcher.start()

    async def close(self) -> None:
        await self.batcher.stop()

    async def infer(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return await self.batcher.submit(graph, inputs)

    def status(self) -> dict:
        return {"engine": "local", **self.runner.status(), "queue": self.batcher.state()}
