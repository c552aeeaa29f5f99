"""Request and response bodies."""

from __future__ import annotations

from typing import Literal

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


# Shortened: the shipped model's appearance code has 32 numbers, its motion codes 16 per frame.
ENCODE_EXAMPLE = {
    "model": "sprites-dsvae",
    "appearance": {"mean": [0.12, -1.3, 0.8], "logvar": [-6.1, -5.8, -6.4],
                   "std": [0.047, 0.055, 0.041]},
    "motion": {"mean": [[0.5, -0.2], [0.7, -0.1]], "logvar": [[-3.2, -2.9], [-3.0, -3.1]],
               "std": [[0.2, 0.23], [0.22, 0.21]]},
    "frames": {"count": 2, "indices": [0, 7], "times_s": [0.0, 0.875], "source_fps": 8.0,
               "source_size": [256, 256], "source_frames": 8},
    "domain": {"verdict": "in", "score": 0.13, "basis": "reconstruction",
               "inputs": {"video": {"verdict": "in", "score": 0.13, "basis": "reconstruction"}},
               "warning": None},
}


class InputVerdict(BaseModel):
    verdict: Literal["in", "out"]
    score: float = Field(description="1.0 is the edge of the model's training data")
    basis: str = Field(description="what it was measured on: the upload's `reconstruction`, "
                       "or the `appearance code` sent")


class DomainPublic(BaseModel):
    """How far the input is from what the model was trained on (service/api/domain.py)."""

    verdict: Literal["in", "out", "unknown"] = Field(description=(
        "`out`: some input is beyond the model's limit; `unknown`: the model has no domain "
        "statistics"))
    score: float | None = Field(description="the highest score of the inputs")
    basis: str | None
    inputs: dict[str, InputVerdict | None] = Field(description="each input by its field")
    warning: str | None = Field(description="when out: which input, and what the model expects")


class EncodePublic(BaseModel):
    """A video's codes: `appearance` (what is in it, one vector), `motion` (what happens, one
    vector per frame), each with its uncertainty, which frames of the video were used, and how
    far the video is from the model's domain."""

    model_config = ConfigDict(json_schema_extra={"examples": [ENCODE_EXAMPLE]})
    model: str
    appearance: AppearanceCode
    motion: MotionCode
    frames: FramesUsed
    domain: DomainPublic


class DecodeRequest(BaseModel):
    """Codes as /encode returns them (extra fields ignored); only the means are used.

    `appearance` and `motion` may also be bare lists: (F,) and (T, Z).
    """

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"appearance": ENCODE_EXAMPLE["appearance"], "motion": ENCODE_EXAMPLE["motion"]}]})
    model: str | None = Field(None, description=(
        "the model that made the codes (as /encode writes it): it runs them, unless the query's "
        "`model` names one, which must then be the same"))
    appearance: AppearanceCode | list[float]
    motion: MotionCode | list[list[float]]

    def appearance_mean(self) -> list[float]:
        a = self.appearance
        return a.mean if isinstance(a, AppearanceCode) else a

    def motion_mean(self) -> list[list[float]]:
        m = self.motion
        return m.mean if isinstance(m, MotionCode) else m
