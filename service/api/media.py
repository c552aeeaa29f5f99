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
from service.api.domain import DomainReport
from service.api.problems import Problem

Format = Literal["mp4", "gif", "png", "npz", "json"]
MEDIA_TYPES: dict[str, str] = {
    "mp4": "video/mp4", "gif": "image/gif", "png": "image/png",
    "npz": "application/x-npz", "json": "application/json",
}
# The OpenAPI `content` of a video result, one entry per format: the binary ones declared as
# such, so Swagger's "Try it out" offers the file (with the Content-Disposition below).
BINARY = {"schema": {"type": "string", "format": "binary"}}
VIDEO_CONTENT: dict[str, dict] = {
    **{MEDIA_TYPES[f]: BINARY for f in ("mp4", "gif", "png", "npz")},
    "application/json": {"example": {"shape": [1, 2, 1, 1, 3],
                                     "videos": [[[[[0, 0, 0]]], [[[255, 255, 255]]]]]}},
}


def download(fmt: str) -> dict[str, str]:
    """Content-Disposition of a binary answer: a file to save (fetch and curl -o ignore it)."""
    return {"Content-Disposition": f'attachment; filename="vdis.{fmt}"'}


@dataclass
class OutputOptions:
    format: Format
    out_fps: float
    scale: int


async def output_options(  # async: no worker thread for it (service.api.deps)
    format: Annotated[Format | None, Query(description=(
        "mp4 | gif | png | npz | json; default from the Accept header, else mp4 (an Accept "
        "that allows none of them: 406)"))] = None,
    out_fps: Annotated[float, Query(gt=0, le=60, description="frame rate of MP4/GIF")] = 8.0,
    scale: Annotated[int, Query(ge=1, le=8, description=(
        "upscale MP4/GIF/PNG frames by this factor (nearest neighbour)"))] = 1,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> OutputOptions:
    return OutputOptions(format or negotiate(accept, VIDEO_FORMATS), out_fps, scale)


OutputDep = Annotated[OutputOptions, Depends(output_options)]
VIDEO_FORMATS: tuple[str, ...] = ("mp4", "gif", "png", "npz", "json")  # the first: the default


def negotiate(accept: str | None, formats: tuple[str, ...]) -> str:
    """The format to answer in, from an Accept header (RFC 9110 12.5.1); formats[0] without one.

    The highest q wins; among equals, a range naming the type exactly before a wildcard, then
    the order of Accept, then the order of `formats`. Nothing acceptable: a 406 Problem that
    lists what the endpoint can send.
    """
    ranges = _accept_ranges(accept)
    if not ranges:
        return formats[0]
    ranked = []
    for preference, fmt in enumerate(formats):
        kind = MEDIA_TYPES[fmt].split("/")[0]
        for position, (media_range, q) in enumerate(ranges):
            specificity = {MEDIA_TYPES[fmt]: 2, f"{kind}/*": 1, "*/*": 0}.get(media_range)
            if specificity is not None:
                ranked.append((-q, -specificity, position, preference, fmt))
                break  # the first range naming a type decides its q
    best = min(ranked, default=None)
    if best is None or best[0] == 0:
        can = [MEDIA_TYPES[f] for f in formats]
        raise Problem("not-acceptable", f"Accept: {accept} allows none of what this endpoint "
                      f"sends: {', '.join(can)}; ask for one of them (or pass ?format=)",
                      available=can)
    return best[-1]


def _accept_ranges(accept: str | None) -> list[tuple[str, float]]:
    """[(media range, q)] in the header's order, most specific duplicates first."""
    ranges = []
    for part in (accept or "").split(","):
        media_range, *params = (p.strip() for p in part.split(";"))
        if not media_range:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0  # a q we cannot read: not a preference we can honour
        ranges.append((media_range.lower(), q))
    # RFC 9110: the most specific range that matches decides, so exact types come first.
    return sorted(ranges, key=lambda r: r[0].count("*"))


async def render(videos: np.ndarray, options: OutputOptions, headers: dict | None = None,
                 model: str | None = None, domain: DomainReport | None = None) -> Response:
    """videos: (N, T, H, W, 3) uint8 -> one HTTP response in the chosen format; `model`: the
    name of the model that made them (X-Vdis-Model); `domain`: the verdict on the inputs
    (X-Vdis-Domain..., and `domain` in a JSON body)."""
    extra = {"domain": domain.body()} if domain is not None else {}
    with timing.phase("encode"):
        content = await asyncio.to_thread(_encode, videos, options, extra)
    n = len(videos)
    columns = math.ceil(math.sqrt(n))
    headers = {"X-Vdis-Results": str(n), "X-Vdis-Shape": "x".join(map(str, videos.shape)),
               **({"X-Vdis-Model": model} if model else {}),
               **(domain.headers() if domain is not None else {}), **(headers or {})}
    if options.format in ("mp4", "gif"):
        headers["X-Vdis-Grid"] = f"{math.ceil(n / columns)}x{columns}"
    if options.format != "json":
        headers.update(download(options.format))
    return Response(content, media_type=MEDIA_TYPES[options.format], headers=headers)


def check_size(options: OutputOptions, n: int, frames: int, frame_size: int, limit: int
               ) -> None:
    """Refuse (422) before the model runs an answer of more than `limit` pixels x frames."""
    side = frame_size * (options.scale if options.format in ("mp4", "gif", "png") else 1)
    cells = n
    if options.format in ("mp4", "gif"):  # tiled: the grid's empty cells are pixels too
        columns = math.ceil(math.sqrt(n))
        cells = columns * math.ceil(n / columns)
    pixels = cells * frames * side * side
    if pixels > limit:
        raise Problem("too-much-output", (
            f"the answer would hold {pixels} pixels x frames ({n} result(s) of {frames} frames "
            f"of {side}x{side} as {options.format}); the limit is {limit} "
            "(VDIS_MAX_OUTPUT_PIXELS): ask for fewer results (n), fewer frames or a smaller "
            "scale"), pixels=pixels, limit=limit)


def _encode(videos: np.ndarray, options: OutputOptions, extra: dict) -> bytes:
    if options.format == "npz":
        return videoio.encode_npz(videos=videos)
    if options.format == "json":
        return videoio.encode_json(videos, **extra)
    if options.format == "gif":  # its palette is chosen from the frames before upscaling
        return videoio.encode_gif(videoio.tile(videos), options.out_fps, options.scale)
    videos = videoio.upscale(videos, options.scale)
    if options.format == "png":
        return videoio.encode_png_strip(videos)
    return videoio.encode_mp4(videoio.tile(videos), options.out_fps)  # (T, rows*H, cols*W, 3)
