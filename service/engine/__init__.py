"""The engine: the only thing that runs the model. The HTTP layer sees `Engine` only."""

from service.engine.base import (
    Codes,
    DeadlineExceeded,
    Engine,
    EngineBusy,
    EngineUnavailable,
    InvalidCodes,
    JobFailed,
)
from service.engine.local import LocalEngine
from service.settings import Settings


def build_engine(settings: Settings, on_batch=None) -> Engine:
    """The Redis engine when VDIS_REDIS_URL is set (workers run the model), else in-process."""
    if settings.REDIS_URL:
        from service.engine.redis_engine import RedisEngine

        return RedisEngine(settings)
    return LocalEngine(settings, on_batch)


__all__ = ["Codes", "DeadlineExceeded", "Engine", "EngineBusy", "EngineUnavailable",
           "InvalidCodes", "JobFailed", "LocalEngine", "build_engine"]
