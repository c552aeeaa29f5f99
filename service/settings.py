"""The service's settings, read once from `VDIS_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO = Path(__file__).resolve().parents[1]
# Multipart framing around the uploaded files: part headers, boundaries, small form fields.
MULTIPART_SLACK_BYTES = 64 * 1024


class Settings(BaseSettings):
    """Every knob of the service. Durations carry their unit in the name (`_MS`, `_S`)."""

    model_config = SettingsConfigDict(env_prefix="VDIS_", extra="ignore")

    # The models: every exported folder (manifest.json + ONNX) under MODELS_DIR, by manifest
    # name (service.engine.catalogue); requests name one with `model=`, else DEFAULT_MODEL.
    # MODEL_DIR instead serves that one folder alone (its model is then the default).
    MODELS_DIR: Path = REPO / "models"
    MODEL_DIR: Path | None = None
    DEFAULT_MODEL: str = "sprites-dsvae"  # the manifest name of models/sprites
    MODELS: str = ""  # comma-separated names: serve (or, for a worker, run) only these
    # eager: every model's graphs are hashed and loaded at start; lazy: on its first request
    LOAD: Literal["eager", "lazy"] = "eager"
    # float16: the manifest's variants everywhere; auto: float32, except on CUDA where a graph
    # runs its float16 variant when it is within the variant's tolerance on that device
    PRECISION: Literal["auto", "float32", "float16"] = "auto"
    PROVIDERS: str = ""  # comma-separated onnxruntime providers; empty: CUDA if usable, then CPU
    REQUIRE_GPU: bool = False  # fail at start unless the sessions really run on CUDA
    CUDA_DEVICE_ID: int = Field(0, ge=0)
    # cuDNN convolution algorithm search (onnxruntime's cudnn_conv_algo_search): HEURISTIC picks
    # at once; EXHAUSTIVE (onnxruntime's default) benchmarks on each new input shape
    CUDNN_CONV_ALGO_SEARCH: Literal["HEURISTIC", "EXHAUSTIVE", "DEFAULT"] = "HEURISTIC"
    # batch sizes run once per graph at startup (T = the model's seq_len), comma-separated;
    # empty: 1 and MAX_BATCH on CUDA, MAX_BATCH on CPU; "none": no warm-up
    WARMUP_BATCHES: str = ""
    # How the cores are used on CPU: one onnxruntime call per core side by side, one thread each
    # (both 0, the default: on 2 cores 30% more /swap and /encode throughput than one call on
    # both cores, docs/benchmarks.md), or fewer calls on more threads each. Setting one of
    # them derives the other from the cores (calls = cores // threads, threads = cores // calls);
    # on CUDA one call at a time. service.engine.local.resolve_parallelism.
    INTRA_OP_THREADS: int = Field(0, ge=0)  # threads per onnxruntime call; 0: see above
    INTER_OP_THREADS: int = Field(0, ge=0)
    # onnxruntime's intra-op threads spin-wait for work between and after calls (its default) or
    # sleep: spinning burns cores the same process needs for video decoding and encoding, and
    # measured on 2 cores it cost more than it saved (docs/benchmarks.md)
    INTRA_OP_SPINNING: bool = False
    # How an upload's domain verdict is made (service/engine/domain.py): `full`, the higher of
    # its frame-0 reconstruction error and its appearance code's distance (one more decoder
    # frame per upload: 2-4 ms of CPU on the shipped Sprites model here, the pipeline's
    # /encode 6.6 -> 8.7 ms), or `code`, the code's distance alone (no model work; on the
    # shipped Sprites model it passes 2 of 27 photograph pans and 25% of Moving MNIST clips,
    # which the reconstruction flags all of: docs/model.md, Domain)
    DOMAIN_CHECK: Literal["full", "code"] = "full"
    # threads that decode uploads and encode answers; 0: one per usable core. asyncio's default
    # pool (cores + 4 threads) ran 6 decodes at once on 2 cores, each 1.5-2x slower, beside the
    # model's calls: /swap at concurrency 32 went from 56 to 65 req/s with 2 (docs/benchmarks.md)
    IO_THREADS: int = Field(0, ge=0)

    # The engine
    REDIS_URL: str = ""  # empty: the in-process engine
    # rows merged into one onnxruntime call; 0: 4 on CPU, 16 on CUDA (service.engine.local)
    MAX_BATCH: int = Field(0, ge=0)
    # how long a request waits for others to join its batch while the model is idle; 0: it
    # runs at once, and whatever arrives during a run joins the next batch. On CPU a bigger
    # batch is barely cheaper per row, so waiting only adds latency (docs/benchmarks.md);
    # a few ms can pay on a GPU (docker-compose.yml sets 5)
    MAX_WAIT_MS: float = Field(0.0, ge=0)
    MAX_CONCURRENT_RUNS: int = Field(0, ge=0)  # onnxruntime calls in flight at once; 0: above

    # The Redis engine (with REDIS_URL set): API processes queue jobs, `python -m service.worker`
    # runs them. Keys are `<REDIS_PREFIX>:...` (service.engine.keys).
    REDIS_PREFIX: str = "vdis"
    REDIS_CONNECT_TIMEOUT_S: float = Field(1.0, gt=0)  # Redis unreachable -> 503 after this
    # A request's deadline once its body is in: decoding, queue, model and encoding all count
    # (service.api.deadline); past it: 504, and a queued model job is dropped
    REQUEST_TIMEOUT_S: float = Field(30.0, gt=0)
    QUEUE_MAX: int = Field(256, ge=1)  # jobs waiting or running; above it: 503 + Retry-After
    RETRY_AFTER_S: int = Field(1, ge=0)  # the Retry-After of a 503
    RESULT_TTL_S: int = Field(60, ge=1)  # how long a result waits for its API process
    ASYNC_RESULT_TTL_S: int = Field(3600, ge=1)  # how long an `?async=true` job's answer is kept
    # With Redis, an accepted async request lives in Redis until an API process has answered
    # it; one that stops renewing its claim this long (it died) has its requests taken over.
    ASYNC_CLAIM_IDLE_S: float = Field(15.0, gt=0)
    ASYNC_CONCURRENCY: int = Field(8, ge=1)  # async requests one API process runs at once
    CLAIM_IDLE_MS: int = Field(30_000, ge=1)  # unacknowledged this long: another worker takes it
    MAX_DELIVERIES: int = Field(3, ge=1)  # delivered more often than this: the dead-letter stream
    HEARTBEAT_S: float = Field(2.0, gt=0)  # a worker's heartbeat period (its key lives 3 periods)
    WORKER_NAME: str = ""  # the consumer name; empty: <host>-<pid>

    # Access: comma-separated API keys; empty: no key needed. With keys, the model endpoints
    # (/encode, /decode, /swap, /generate, /jobs) answer 401 unless the request carries one in
    # `X-API-Key` or `Authorization: Bearer` (service.api.guard); the rest stays open.
    API_KEYS: SecretStr = SecretStr("")

    # Bounded work on uploads
    MAX_UPLOAD_BYTES: int = Field(50 * 1024 * 1024, ge=1)  # per uploaded file
    MAX_PIXELS: int = Field(3840 * 2160, ge=1)  # width x height of one source frame
    MAX_DECODED_FRAMES: int = Field(2000, ge=1)  # frames decoded from one upload, at most
    MAX_FRAMES: int = Field(64, ge=1)  # T, the longest clip the model is asked to process
    MAX_SAMPLES: int = Field(16, ge=1)  # n, the most results /generate returns at once
    # pixels x frames of one answer (results x T x its frames' height x width after `scale`,
    # a tiled MP4/GIF's empty cells included); above it: 422 before the model runs. 2**25 is
    # n=16 results of 8 frames at scale 8, which encode in about 2 s (docs/reliability.md)
    MAX_OUTPUT_PIXELS: int = Field(2**25, ge=1)
    # the whole request body must arrive within this many seconds of the request's start, else
    # 408 and the connection is closed: a stalled or trickled upload holds nothing for long
    BODY_TIMEOUT_S: float = Field(60.0, gt=0)

    @field_validator("MODEL_DIR", mode="before")
    @classmethod
    def _unset_if_empty(cls, value):  # VDIS_MODEL_DIR= (compose's default) means unset
        return None if value == "" else value

    def model_names(self) -> list[str]:
        """VDIS_MODELS as a list; empty: every model there is."""
        return [name.strip() for name in self.MODELS.split(",") if name.strip()]

    def api_keys(self) -> tuple[bytes, ...]:
        """The accepted API keys (empty: keys are off), as bytes for a constant-time compare."""
        keys = (k.strip() for k in self.API_KEYS.get_secret_value().split(","))
        return tuple(k.encode() for k in keys if k)

    def max_body_bytes(self) -> int:
        """The largest request body: two files (/swap) at their limit plus multipart framing."""
        return 2 * self.MAX_UPLOAD_BYTES + MULTIPART_SLACK_BYTES


@lru_cache
def get_settings() -> Settings:
    return Settings()
