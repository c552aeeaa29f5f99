"""Dependencies shared by the routes, as `Annotated` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Query, Request, UploadFile

from service import timing
from service.api.problems import Problem
from service.engine import Engine
from service.engine.manifest import Manifest
from service.metrics import Metrics
from service.settings import Settings
from service.videoio import Clip, Limits, VideoError, read_video

# What a multipart upload may be labelled as; curl sends application/octet-stream by default.
ACCEPTED_UPLOAD_TYPES = ("video/", "image/gif", "image/webp", "application/octet-stream")


# The dependencies are `async def` although they never wait: FastAPI runs a plain `def`
# dependency in a worker thread, a thread hop per dependency per request.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
MODEL_QUERY = Query(description=(
    "the model to run, by name (GET /models lists them); default: the service's default "
    "model"))


def resolve_model(request: Request, engine: Engine, name: str | None) -> Manifest:
    """The manifest of model `name` (None: the default); an unknown name is a 404 problem
    (service.engine.catalogue.UnknownModel). The name is kept for the metrics' labels."""
    manifest = engine.resolve(name)
    request.state.model = manifest.name
    return manifest


async def get_model(request: Request, engine: EngineDep,
                    model: Annotated[str | None, MODEL_QUERY] = None) -> Manifest:
    return resolve_model(request, engine, model)


ModelDep = Annotated[Manifest, Depends(get_model)]


def model_headers(manifest: Manifest) -> dict[str, str]:
    """The headers every model answer carries: which model answered."""
    return {"X-Vdis-Model": manifest.name}


@dataclass
class ClipOptions:
    """How an uploaded video becomes the model's input (query parameters)."""

    frames: int | None
    start: float | None
    fps: float | None
    fit: Literal["crop", "pad"]


async def clip_options(
    frames: Annotated[int | None, Query(ge=1, description=(
        "T, frames taken from the video (default: the model's training length; at most "
        "VDIS_MAX_FRAMES)"))] = None,
    start: Annotated[float | None, Query(ge=0, description=(
        "take frames from this time in seconds on (default: spread over the whole clip)"))] = None,
    fps: Annotated[float | None, Query(gt=0, le=1000, description=(
        "take one frame every 1/fps s (with `start`; default: the source's rate)"))] = None,
    fit: Annotated[Literal["crop", "pad"], Query(description=(
        "make frames square by centre-cropping or by padding with black"))] = "crop",
) -> ClipOptions:
    return ClipOptions(frames, start, fps, fit)


ClipDep = Annotated[ClipOptions, Depends(clip_options)]


def frame_count(requested: int | None, manifest: Manifest, settings: Settings) -> int:
    limit = min(settings.MAX_FRAMES, manifest.max_frames)
    frames = requested or manifest.seq_len
    if frames > limit:
        raise Problem("invalid-parameters", f"frames={frames} is above the limit of {limit}")
    return frames


def upload_label(field: str, upload: UploadFile) -> str:
    """How an answer names one uploaded file: its form field, and its file name if it has one."""
    return f"`{field}` ({upload.filename})" if upload.filename else f"`{field}`"


def upload_problem(slug: str, upload: UploadFile, field: str, what: str) -> Problem:
    """A problem with one uploaded file: its form field and file name lead the detail and are
    extension members (`field`, `filename`), so a caller of /swap knows which file to fix."""
    return Problem(slug, f"{upload_label(field, upload)} {what}", field=field,
                   filename=upload.filename or "")


async def read_upload(upload: UploadFile, settings: Settings, field: str) -> bytes:
    """The bytes of one uploaded file, after checking its label and size."""
    content_type = (upload.content_type or "").lower()
    if content_type and not content_type.startswith(ACCEPTED_UPLOAD_TYPES):
        raise upload_problem("unsupported-media-type", upload, field,
                             f"is labelled {content_type!r}; upload a video "
                             "(video/*, image/gif or application/octet-stream)")
    data = await upload.read(settings.MAX_UPLOAD_BYTES + 1)
    if len(data) > settings.MAX_UPLOAD_BYTES:
        raise upload_problem("too-large", upload, field, "is larger than the limit of "
                             f"{settings.MAX_UPLOAD_BYTES} bytes (VDIS_MAX_UPLOAD_BYTES)")
    return data


async def load_clip(upload: UploadFile, options: ClipOptions, manifest: Manifest,
                    settings: Settings, field: str) -> Clip:
    """An upload -> a model-sized clip (T, S, S, 3) uint8; a Problem naming it if bad."""
    import asyncio

    data = await read_upload(upload, settings, field)
    frames = frame_count(options.frames, manifest, settings)
    limits = Limits(settings.MAX_UPLOAD_BYTES, settings.MAX_PIXELS, settings.MAX_DECODED_FRAMES)
    # Decoding is CPU work in C that releases the GIL: keep it off the event loop.
    try:
        with timing.phase("decode"):
            return await asyncio.to_thread(
                read_video, data, frames, start_s=options.start, fps=options.fps,
                fit=options.fit, size=manifest.frame_size, limits=limits,
            )
    except VideoError as error:
        raise upload_problem(error.kind, upload, field, f"is refused: {error}") from error
