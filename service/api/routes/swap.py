"""POST /swap: the appearance of one video with the motion of another."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import Response

from service.api.deps import ClipDep, EngineDep, ModelDep, SettingsDep, frame_count, load_clip
from service.api.domain import StrictDep, judge_uploads
from service.api.media import VIDEO_CONTENT, OutputDep, check_size, render
from service.api.problems import UPLOAD_PROBLEMS, responses

router = APIRouter(tags=["latent operations"])


@router.post("/swap", response_class=Response, summary="Swap the look and the motion of two videos",
             responses={200: {"content": VIDEO_CONTENT}, **responses(*UPLOAD_PROBLEMS)})
async def swap(
    engine: EngineDep, manifest: ModelDep, settings: SettingsDep, clip_options: ClipDep,
    output: OutputDep, strict: StrictDep,
    appearance: Annotated[UploadFile, File(description="the video whose appearance is kept")],
    motion: Annotated[UploadFile, File(description="the video whose motion is kept")],
    both: Annotated[bool, Query(description=(
        "also return the converse (motion's appearance with appearance's motion), as a "
        "second result"))] = False,
):
    """Upload two videos and get one that looks like `appearance` and moves like `motion`.
    With both=true you also get the converse, side by side.

    Example: `curl -F appearance=@service/static/samples/sprite-1-walk-front.mp4
    -F motion=@service/static/samples/sprite-3-slash-right.webm localhost:8000/swap -o swap.mp4`
    """
    frames = frame_count(clip_options.frames, manifest, settings)
    check_size(output, 1 + both, frames, manifest.frame_size, settings.MAX_OUTPUT_PIXELS)
    clip_a, clip_m = await asyncio.gather(  # the two decodes run in threads side by side
        load_clip(appearance, clip_options, manifest, settings, "appearance"),
        load_clip(motion, clip_options, manifest, settings, "motion"),
    )
    result = await engine.swap(clip_a.frames, clip_m.frames, both, model=manifest.name)
    domain = judge_uploads(manifest, [("appearance", appearance), ("motion", motion)],
                           result.reconstruction_error, result.appearance)
    domain.enforce(strict)
    return await render(result.videos, output, model=manifest.name,  # (1 or 2, T, S, S, 3)
                        domain=domain)
