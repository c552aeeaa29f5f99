"""The engine interface the HTTP layer talks to: the operations users ask for, on uint8 clips.

An implementation supplies `run` (one whole operation, as service.engine.ops defines it) and
`status`. The operations here check the caller's arrays once, before anything is queued, so a
bad code is a 422 in either engine and never a job; the in-process and Redis engines then only
differ in where `run` happens.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from service.engine.catalogue import Catalogue
from service.engine.manifest import Manifest
from service.engine.ops import (
    CODE_NAMES,
    Arrays,
    Codes,
    GenerateParams,
    InvalidCodes,
    Result,
    check_clips,
    check_codes,
    check_generate,
    check_swap,
)

__all__ = ["Codes", "InvalidCodes", "Result"]  # defined with the operations, re-exported here


class EngineBusy(RuntimeError):
    """The queue is full: the caller should retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineUnavailable(RuntimeError):
    """The engine's transport (Redis) cannot be reached; it recovers by itself."""


class DeadlineExceeded(RuntimeError):
    """A job was not answered before its deadline; it is dropped, not computed."""


class JobFailed(RuntimeError):
    """A worker gave up on a job. `kind`: "dead-lettered" or "job-failed"."""

    def __init__(self, message: str, kind: str = "job-failed"):
        super().__init__(message)
        self.kind = kind


class ModelUnavailable(RuntimeError):
    """No live worker serves the model a request names (the Redis engine); 503."""


class Engine(ABC):
    catalogue: Catalogue  # the models served, by name, and the default

    @property
    def manifest(self) -> Manifest:
        """The default model's manifest."""
        return self.catalogue.resolve(None)

    def resolve(self, model: str | None) -> Manifest:
        """The manifest of `model` (None: the default); UnknownModel if it is not served."""
        return self.catalogue.resolve(model)

    @abstractmethod
    async def run(self, operation: str, model: str | None, arrays: Arrays,
                  params: dict) -> Arrays:
        """One whole operation (service.engine.ops.Operations.run) of `model` (a name the
        catalogue holds, or None: the default), on arrays already checked."""

    @abstractmethod
    def status(self) -> dict:
        """What /ready reports: provider in use, queue state."""

    async def probe(self) -> dict:
        """What /ready reports, after checking the transport; `ready: False` gives a 503."""
        return {"ready": True, **self.status()}

    async def start(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    async def encode(self, clips: np.ndarray, model: str | None = None) -> Codes:
        """clips (B, T, S, S, 3) or (T, S, S, 3) uint8 RGB -> Codes with a batch axis."""
        m = self.resolve(model)
        out = await self.run("encode", m.name, {"clips": check_clips(m, clips)}, {})
        return Codes(*(out[name] for name in CODE_NAMES), out.get("reconstruction_error"))

    async def decode(self, appearance: np.ndarray, motion: np.ndarray,
                     model: str | None = None) -> np.ndarray:
        """appearance (B, F), motion (B, T, Z) -> video (B, T, S, S, 3) uint8 RGB."""
        m = self.resolve(model)
        appearance, motion = check_codes(m, appearance, motion)
        out = await self.run("decode", m.name, {"appearance": appearance, "motion": motion}, {})
        return out["videos"]

    async def swap(self, appearance_clip: np.ndarray, motion_clip: np.ndarray,
                   both: bool = False, model: str | None = None) -> Result:
        """The look of one clip with the motion of the other ((T, S, S, 3) uint8 each, the same
        T) -> videos (1, T, S, S, 3) uint8; `both`: the converse too -> (2, T, S, S, 3); and the
        two clips' reconstruction errors (service.engine.ops.Result)."""
        manifest = self.resolve(model)
        a, m = check_swap(manifest, appearance_clip, motion_clip)
        out = await self.run("swap", manifest.name, {"appearance": a, "motion": m},
                             {"both": both})
        return Result(out["videos"], out.get("reconstruction_error"),
                      out.get("upload_appearance"))

    async def generate(self, sample: str, n: int, seed: int, frames: int | None = None,
                       clip: np.ndarray | None = None, appearance: np.ndarray | None = None,
                       model: str | None = None) -> Result:
        """n new videos (n, T, S, S, 3) uint8 and, from a clip, its reconstruction error
        (service.engine.ops.Operations.generate).

        sample=motion: the look of `clip` ((T, S, S, 3) uint8) or of the code `appearance`
        (1, F), new motions of `frames` steps (default: the model's seq_len) from the prior;
        sample=appearance: the motion of `clip`, new looks from N(0, I).
        """
        m = self.resolve(model)
        params = GenerateParams(sample, n, seed, frames or m.seq_len)
        arrays = check_generate(m, params, clip, appearance)
        out = await self.run("generate", m.name, arrays, {
            "sample": sample, "n": n, "seed": seed, "frames": params.frames})
        return Result(out["videos"], out.get("reconstruction_error"),
                      out.get("upload_appearance"))
