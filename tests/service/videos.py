"""Videos the tests make with PyAV: moving coloured squares, in real containers."""

from __future__ import annotations

import io
import tempfile

import av
import numpy as np

from export.footage import PHOTOS, photo_pan  # noqa: F401  natural-looking footage

CODECS = {"mp4": ("mp4", "libx264", "yuv420p"), "webm": ("webm", "libvpx-vp9", "yuv420p"),
          "avi": ("avi", "mpeg4", "yuv420p"), "mov": ("mov", "libx264", "yuv420p"),
          "gif": ("gif", "gif", "rgb8"),
          "lossless": ("mov", "png", "rgb24")}  # exact pixels, for tests that compare them


def moving_square(frames: int = 12, width: int = 96, height: int = 80, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a coloured square moving right over a coloured background."""
    rng = np.random.default_rng(seed)
    background, colour = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    video = np.empty((frames, height, width, 3), np.uint8)
    video[:] = background
    side = min(width, height) // 3
    for t in range(frames):
        left = (t * 5) % (width - side)
        top = (height - side) // 2
        video[t, top:top + side, left:left + side] = colour
    return video


def encode(video: np.ndarray, fmt: str = "mp4", fps: int = 8, faststart: bool = False) -> bytes:
    """(T, H, W, 3) uint8 -> the bytes of a real file in the format `fmt`."""
    container, codec, pix_fmt = CODECS[fmt]
    # faststart (the index before the data) needs a real file: the muxer rewrites it at the end.
    target = tempfile.NamedTemporaryFile(suffix="." + fmt) if faststart else io.BytesIO()
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(target if not faststart else target.name, mode="w", format=container,
                 options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt = pix_fmt
        for image in video:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    if faststart:
        with target, open(target.name, "rb") as f:
            return f.read()
    return target.getvalue()


def sprite_clip(character: int = 0, motion: int = 0) -> np.ndarray:
    """(8, 64, 64, 3) uint8: one Sprites clip composed from the shipped LPC sheets."""
    from model.data import sprites

    return sprites.render_clip(character, motion)


def unknown_codec() -> bytes:
    """A Matroska file whose video track names a codec FFmpeg has never heard of."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="matroska") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for image in moving_square(4, 64, 64):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    # Same length as the real codec id, so the EBML element sizes stay right.
    return buffer.getvalue().replace(b"V_MPEG4/ISO/ASP", b"V_VDIS/NOCODEC!")
