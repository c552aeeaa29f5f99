"""POST /encode (video -> codes) and POST /decode (codes -> video)."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Header, Query, Request, UploadFile
from fastapi.responses import Response

from service import videoio
from service.api.deps import (
    MODEL_QUERY,
    ClipDep,
    EngineDep,
    ModelDep,
    SettingsDep,
    frame_count,
    load_clip,
    model_headers,
    resolve_model,
)
from service.api.domain import StrictDep, judge_codes, judge_uploads
from service.api.media import (
    BINARY,
    VIDEO_CONTENT,
    OutputDep,
    check_size,
    download,
    negotiate,
    render,
)
from service.api.problems import MODEL_PROBLEMS, UPLOAD_PROBLEMS, Problem, responses
from service.api.schemas import DecodeRequest, EncodePublic

router = APIRouter(tags=["codes"])


@router.post("/encode", response_model=EncodePublic, summary="Split a video into its codes",
             responses={200: {"content": {"application/x-npz": BINARY}},
                        **responses(*UPLOAD_PROBLEMS)})
async def encode(
    engine: EngineDep, manifest: ModelDep, settings: SettingsDep, clip_options: ClipDep,
    response: Response, strict: StrictDep,
    video: Annotated[UploadFile, File(description="a video: mp4, webm, avi, mov, gif, ...")],
    format: Annotated[Literal["json", "npz"] | None, Query(description=(
        "json, or npz arrays; default from the Accept header, else json"))] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
):
    """Upload a video and get two kinds of numbers back: its appearance code (one list of
    numbers for the whole clip: how it looks) and its motion codes (one short list per frame:
    how it moves), each with its uncertainty. Send them to /decode to get the video back.

    Example: `curl -F video=@service/static/samples/sprite-1-walk-front.mp4
    localhost:8000/encode > codes.json`
    """
    format = format or negotiate(accept, ("json", "npz"))
    clip = await load_clip(video, clip_options, manifest, settings, "video")
    codes = await engine.encode(clip.frames, model=manifest.name)
    domain = judge_uploads(manifest, [("video", video)], codes.reconstruction_error,
                           codes.appearance_mean)
    domain.enforce(strict)
    f_mean, f_logvar = codes.appearance_mean[0], codes.appearance_logvar[0]  # (F,)
    z_mean, z_logvar = codes.motion_mean[0], codes.motion_logvar[0]  # (T, Z)
    if format == "npz":
        content = videoio.encode_npz(
            appearance_mean=f_mean, appearance_logvar=f_logvar, motion_mean=z_mean,
            motion_logvar=z_logvar, frame_indices=np.asarray(clip.indices),
            model=np.asarray(manifest.name), domain=np.asarray(domain.verdict),
            domain_score=np.asarray(np.nan if domain.worst is None else domain.worst[2].score),
        )
        return Response(content, media_type="application/x-npz", headers={
            **download("npz"), **model_headers(manifest), **domain.headers()})
    response.headers.update({**model_headers(manifest), **domain.headers()})
    return EncodePublic(
        model=manifest.name,
        appearance={"mean": f_mean.tolist(), "logvar": f_logvar.tolist(),
                    "std": np.exp(0.5 * f_logvar).tolist()},
        motion={"mean": z_mean.tolist(), "logvar": z_logvar.tolist(),
                "std": np.exp(0.5 * z_logvar).tolist()},
        frames={"count": len(clip.indices), "indices": clip.indices, "times_s": clip.times_s,
                "source_fps": clip.source_fps, "source_size": clip.source_size,
                "source_frames": clip.source_frames},
        domain=domain.body(),
    )


async def require_json(request: Request) -> None:  # async: no worker thread (service.api.deps)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("application/json"):
        raise Problem("unsupported-media-type",
                      f"send the codes as application/json, not {content_type!r}")


@router.post("/decode", dependencies=[Depends(require_json)], summary="Make a video from codes",
             response_class=Response,
             responses={200: {"content": VIDEO_CONTENT}, **responses(*MODEL_PROBLEMS)})
async def decode(body: DecodeRequest, request: Request, engine: EngineDep,
                 settings: SettingsDep, output: OutputDep, strict: StrictDep,
                 model: Annotated[str | None, MODEL_QUERY] = None):
    """Send codes as /encode returns them (JSON) and get the video they describe. Put the
    appearance of one clip with the motion of another to make a swap by hand.

    Example: `curl -H 'content-type: application/json' -d @codes.json localhost:8000/decode
    -o recon.mp4`
    """
    # The body's `model` (as /encode wrote it) picks the model when the query names none; when
    # both name one they must agree: codes of one model mean nothing to another.
    if body.model is not None and model is not None and body.model != model:
        raise Problem("invalid-codes", f"the codes come from model {body.model!r}, and the "
                      f"request asks for model {model!r}; send them to the model that made them")
    manifest = resolve_model(request, engine, model or body.model)
    # float64 as sent: the engine casts to float32 and refuses what does not fit
    appearance = np.asarray([body.appearance_mean()], np.float64)  # (1, F)
    try:
        motion = np.asarray([body.motion_mean()], np.float64)  # (1, T, Z)
    except ValueError as error:  # ragged lists
        raise Problem("invalid-codes", "motion must be T lists of equal length Z") from error
    frames = frame_count(motion.shape[1] if motion.ndim == 3 else None, manifest, settings)
    check_size(output, 1, frames, manifest.frame_size, settings.MAX_OUTPUT_PIXELS)
    videos = await engine.decode(appearance, motion, model=manifest.name)  # (1, T, S, S, 3)
    domain = judge_codes(manifest, "appearance", appearance)
    domain.enforce(strict)
    return await render(videos, output, model=manifest.name, domain=domain)
