"""Choosing and rendering the output format of video results.

Several results in one answer: MP4 and GIF tile them into one video, left to right then top to
bottom in a grid of ceil(sqrt(N)) columns (the `X-Vdis-Grid` header says `rows x columns`);
PNG puts one result per row with its frames left to right; JSON and npz keep them apart as a
list / an (N, T, H, W, 3) array.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, Header, Query
from fastapi.responses import Response

from service import timing, videoio

Format = Literal["mp4", "gif", "png", "npz", "json"]
MEDIA_TYPES: dict[str, str] = {
    "mp4": "video/mp4", "gif": "image/gif", "png": "image/png",
    "npz": "application/x-npz", "json": "application/json",
}
_BY_MEDIA_TYPE = {v: k for k, v in MEDIA_TYPES.items()}
# The OpenAPI `content` of a video result: one entry per format.
VIDEO_CONTENT: dict[str, dict] = {media_type: {} for media_type in MEDIA_TYPES.values()}


@dataclass
class OutputOptions:
    format: Format
    out_fps: float
    scale: int


async def output_options(  # async: no worker thread for it (service.api.deps)
    format: Annotated[Format | None, Query(description=(
        "mp4 | gif | png | npz | json; default from the Accept header, else mp4"))] = None,
    out_fps: Annotated[float, Query(gt=0, le=60, description="frame rate of MP4/GIF")] = 8.0,
    scale: Annotated[int, Query(ge=1, le=8, description=(
        "upscale MP4/GIF/PNG frames by this factor (nearest neighbour)"))] = 1,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> OutputOptions:
    return OutputOptions(format or from_accept(accept) or "mp4", out_fps, scale)


OutputDep = Annotated[OutputOptions, Depends(output_options)]


def from_accept(accept: str | None) -> str | None:
    """The first media type in Accept that names a format we write (q-values ignored)."""
    for part in (accept or "").split(","):
        media_type = part.split(";")[0].strip().lower()
        if media_type in _BY_MEDIA_TYPE:
            return _BY_MEDIA_TYPE[media_type]
    return None


async def render(videos: np.ndarray, options: OutputOptions, headers: dict | None = None
                 ) -> Response:
    """videos: (N, T, H, W, 3) uint8 -> one HTTP response in the chosen format."""
    with timing.phase("encode"):
        content = await asyncio.to_thread(_encode, videos, options)
    n = len(videos)
    columns = math.ceil(math.sqrt(n))
    headers = {"X-Vdis-Results": str(n), "X-Vdis-Shape": "x".join(map(str, videos.shape)),
               **(headers or {})}
    if options.format in ("mp4", "gif"):
        headers["X-Vdis-Grid"] = f"{math.ceil(n / columns)}x{columns}"
    return Response(content, media_type=MEDIA_TYPES[options.format], headers=headers)


def _encode(videos: np.ndarray, options: OutputOptions) -> bytes:
    if options.format == "npz":
        return videoio.encode_npz(videos=videos)
    if options.format == "json":
        return videoio.encode_json(videos)
    videos = videoio.upscale(videos, options.scale)
    if options.format == "png":
        return videoio.encode_png_strip(videos)
    grid = videoio.tile(videos)  # (T, rows*H, columns*W, 3)
    if options.format == "gif":
        return videoio.encode_gif(grid, options.out_fps)
    return videoio.encode_mp4(grid, options.out_fps)
