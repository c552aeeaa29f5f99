"""The engine interface the HTTP layer talks to, and the array conventions around the model.

An implementation supplies `infer` (one graph call on float32 arrays) and `status`; pixel
scaling and shape checks live here once, so the in-process and Redis engines only differ in
transport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from service.engine.manifest import Manifest


class InvalidCodes(ValueError):
    """Codes a caller sent that do not fit the model (wrong sizes, not finite)."""


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


@dataclass
class Codes:
    """Posterior of one or more clips: appearance (B, F); motion (B, T, Z); means and log-vars."""

    appearance_mean: np.ndarray
    appearance_logvar: np.ndarray
    motion_mean: np.ndarray
    motion_logvar: np.ndarray


class Engine(ABC):
    manifest: Manifest

    @abstractmethod
    async def infer(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of `graph` (encoder, decoder, prior) on float32 arrays with a batch axis."""

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

    async def encode(self, video: np.ndarray) -> Codes:
        """video: (B, T, S, S, 3) or (T, S, S, 3) uint8 RGB -> Codes with a batch axis."""
        if video.ndim == 4:
            video = video[None]
        s = self.manifest.frame_size
        if video.ndim != 5 or video.shape[2:] != (s, s, 3) or video.dtype != np.uint8:
            raise ValueError(f"video must be (B, T, {s}, {s}, 3) uint8, not {video.shape} "
                             f"{video.dtype}")
        pixels = video.transpose(0, 1, 4, 2, 3).astype(np.float32) / 255.0  # (B, T, 3, S, S)
        out = await self.infer("encoder", {"video": pixels})
        return Codes(out["appearance_mean"], out["appearance_logvar"],
                     out["motion_mean"], out["motion_logvar"])

    async def decode(self, appearance: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """appearance (B, F), motion (B, T, Z) -> video (B, T, S, S, 3) uint8 RGB."""
        appearance, motion = self._check_codes(appearance, motion)
        out = await self.infer("decoder", {"appearance": appearance, "motion": motion})
        video = out["video"]  # (B, T, 3, S, S) in [0, 1]
        return np.clip(np.rint(video * 255.0), 0, 255).astype(np.uint8).transpose(0, 1, 3, 4, 2)

    async def sample_prior(self, appearance: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """appearance (B, F), noise (B, T, Z) ~ N(0, I) -> motion (B, T, Z) from the prior."""
        appearance, noise = self._check_codes(appearance, noise)
        out = await self.infer("prior", {"appearance": appearance, "noise": noise})
        return out["motion"]

    def _check_codes(self, appearance: np.ndarray, motion: np.ndarray):
        f, z = self.manifest.appearance_dim, self.manifest.motion_dim
        with np.errstate(over="ignore"):  # beyond float32's range -> inf, refused below
            appearance = np.ascontiguousarray(appearance, np.float32)
            motion = np.ascontiguousarray(motion, np.float32)
        if appearance.ndim != 2 or appearance.shape[1] != f:
            raise InvalidCodes(f"appearance must be (B, {f}), not {appearance.shape}")
        if motion.ndim != 3 or motion.shape[2] != z or motion.shape[0] != appearance.shape[0]:
            raise InvalidCodes(f"motion must be (B, T, {z}) with B = {appearance.shape[0]}, "
                             f"not {motion.shape}")
        if not (np.isfinite(appearance).all() and np.isfinite(motion).all()):
            raise InvalidCodes("codes must be finite numbers within float32's range "
                               "(|x| < 3.4e38; no NaN or Infinity)")
        return appearance, motion
