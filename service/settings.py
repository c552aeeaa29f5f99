"""The service's settings, read once from `VDIS_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """Every knob of the service. Durations carry their unit in the name (`_MS`, `_S`)."""

    model_config = SettingsConfigDict(env_prefix="VDIS_", extra="ignore")

    # The model
    MODEL_DIR: Path = REPO / "models" / "sprites"
    PRECISION: Literal["float32", "float16"] = "float32"  # float16 uses the manifest's variants
    PROVIDERS: str = ""  # comma-separated onnxruntime providers; empty: CUDA if usable, then CPU
    INTRA_OP_THREADS: int = Field(0, ge=0)  # 0: onnxruntime's default
    INTER_OP_THREADS: int = Field(0, ge=0)

    # The engine
    REDIS_URL: str = ""  # empty: the in-process engine
    MAX_BATCH: int = Field(16, ge=1)  # rows merged into one onnxruntime call
    MAX_WAIT_MS: float = Field(5.0, ge=0)  # how long a request waits for others to join its batch
    MAX_CONCURRENT_RUNS: int = Field(1, ge=1)  # onnxruntime calls in flight at once

    # Bounded work on uploads
    MAX_UPLOAD_BYTES: int = Field(50 * 1024 * 1024, ge=1)  # per uploaded file
    MAX_PIXELS: int = Field(3840 * 2160, ge=1)  # width x height of one source frame
    MAX_DECODED_FRAMES: int = Field(2000, ge=1)  # frames decoded from one upload, at most
    MAX_FRAMES: int = Field(64, ge=1)  # T, the longest clip the model is asked to process
    MAX_SAMPLES: int = Field(16, ge=1)  # n, the most results /generate returns at once


@lru_cache
def get_settings() -> Settings:
    return Settings()
