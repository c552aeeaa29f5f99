"""POST /generate: new motions for a fixed appearance, or new appearances for a fixed motion."""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response

from service.api.deps import ClipDep, EngineDep, ModelDep, SettingsDep, frame_count, load_clip
from service.api.domain import StrictDep, judge_codes, judge_uploads
from service.api.media import VIDEO_CONTENT, OutputDep, check_size, render
from service.api.problems import UPLOAD_PROBLEMS, Problem, responses

router = APIRouter(tags=["latent operations"])


@router.post("/generate", response_class=Response,
             summary="New motions for a video's look, or new looks",
             responses={200: {"content": VIDEO_CONTENT}, **responses(*UPLOAD_PROBLEMS)})
async def generate(
    engine: EngineDep, manifest: ModelDep, settings: SettingsDep, clip_options: ClipDep,
    output: OutputDep, strict: StrictDep,
    video: Annotated[UploadFile | None, File(description=(
        "the video that gives the fixed appearance (sample=motion) or motion "
        "(sample=appearance)"))] = None,
    appearance: Annotated[str | None, Form(description=(
        "instead of a video, with sample=motion: the appearance code as a JSON list (F,)"))
    ] = None,
    sample: Annotated[Literal["motion", "appearance"], Query(description=(
        "what is drawn: `motion` from the learned prior p(z|f) for a fixed appearance, or "
        "`appearance` from N(0, I) for a fixed motion"))] = "motion",
    n: Annotated[int, Query(ge=1, description="how many results (at most VDIS_MAX_SAMPLES)")] = 4,
    seed: Annotated[int | None, Query(ge=0, description=(
        "seed for the draws; default a random one, returned in X-Vdis-Seed"))] = None,
):
    """Upload a video and get n new videos that keep its look and move in new ways the model
    makes up (sample=motion), or keep its motion with new looks (sample=appearance). The same
    seed gives the same results; several results come tiled in one video.

    With sample=motion, `frames` sets how long the new motions are (default: the model's
    training length), and an appearance code from /encode can stand in for the video.

    Example: `curl -F video=@service/static/samples/sprite-2-spellcard-left.mp4
    'localhost:8000/generate?n=4&seed=0' -o motions.mp4`
    """
    if n > settings.MAX_SAMPLES:
        raise Problem("invalid-parameters", f"n={n} is above the limit of {settings.MAX_SAMPLES}")
    check_size(output, n, frame_count(clip_options.frames, manifest, settings),
               manifest.frame_size, settings.MAX_OUTPUT_PIXELS)
    seed = secrets.randbelow(2**31) if seed is None else seed
    frames = frame_count(clip_options.frames, manifest, settings)
    if sample == "motion" and (video is None) == (appearance is None):
        raise Problem("invalid-parameters",
                      "give exactly one of `video` (a file) or `appearance` (a JSON code)")
    if sample == "appearance" and video is None:
        raise Problem("invalid-parameters", "sample=appearance needs `video` (a file)")
    clip = code = None
    if video is not None:
        clip = (await load_clip(video, clip_options, manifest, settings, "video")).frames
    if sample == "motion" and appearance is not None:
        code = _parse_appearance(appearance, manifest.appearance_dim)  # (1, F)
    result = await engine.generate(sample, n, seed, frames, clip=clip, appearance=code,
                                   model=manifest.name)  # videos (n, T, S, S, 3)
    domain = (judge_uploads(manifest, [("video", video)], result.reconstruction_error,
                            result.appearance)
              if video is not None else judge_codes(manifest, "appearance", code))
    domain.enforce(strict)
    return await render(result.videos, output, {"X-Vdis-Seed": str(seed)}, model=manifest.name,
                        domain=domain)


def _parse_appearance(text: str, size: int) -> np.ndarray:
    try:
        # integers parsed as floats: a 400-digit one becomes inf (refused by the engine, as
        # anything beyond float32's range is) rather than overflowing the conversion
        code = np.asarray(json.loads(text, parse_int=float), np.float64)
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise Problem("invalid-codes", f"`appearance` must be a JSON list of {size} numbers"
                      ) from error
    if code.shape != (size,):
        raise Problem("invalid-codes", f"`appearance` must have {size} numbers, not "
                      f"shape {list(code.shape)}")
    return code[None]  # (1, F)
