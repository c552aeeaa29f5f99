"""Request and response bodies."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AppearanceCode(BaseModel):
    """f: the appearance code (F,); `logvar`/`std` describe the posterior's uncertainty."""

    mean: list[float]
    logvar: list[float] | None = None
    std: list[float] | None = None


class MotionCode(BaseModel):
    """z_1:T: one motion code per frame, (T, Z)."""

    mean: list[list[float]]
    logvar: list[list[float]] | None = None
    std: list[list[float]] | None = None


class FramesUsed(BaseModel):
    count: int
    indices: list[int] = Field(description="index of each frame in the source video")
    times_s: list[float] = Field(description="time of each frame in the source video")
    source_fps: float
    source_size: tuple[int, int] = Field(description="(width, height) of the source frames")
    source_frames: int


class EncodePublic(BaseModel):
    model: str
    appearance: AppearanceCode
    motion: MotionCode
    frames: FramesUsed


class DecodeRequest(BaseModel):
    """Codes as /encode returns them (extra fields ignored); only the means are used.

    `appearance` and `motion` may also be bare lists: (F,) and (T, Z).
    """

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(None, description="if given, must name the loaded model")
    appearance: AppearanceCode | list[float]
    motion: MotionCode | list[list[float]]

    def appearance_mean(self) -> list[float]:
        a = self.appearance
        return a.mean if isinstance(a, AppearanceCode) else a

    def motion_mean(self) -> list[list[float]]:
        m = self.motion
        return m.mean if isinstance(m, MotionCode) else m
