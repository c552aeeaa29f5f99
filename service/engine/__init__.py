"""The engine: the only thing that runs the model. The HTTP layer sees `Engine` only."""

from service.engine.base import Codes, Engine, InvalidCodes
from service.engine.local import LocalEngine
from service.settings import Settings


def build_engine(settings: Settings, on_batch=None) -> Engine:
    if settings.REDIS_URL:
        raise RuntimeError("VDIS_REDIS_URL is set but the Redis engine is not part of this build; "
                           "unset it to use the in-process engine")
    return LocalEngine(settings, on_batch)


__all__ = ["Codes", "Engine", "InvalidCodes", "LocalEngine", "build_engine"]
