"""Video in and out: bounded in-memory decoding to model-sized clips, and encoders for results.

Plain functions with no FastAPI in them, so training tools (`model/data/folder.py`) reuse them.

Bounded work on hostile input: the byte size is checked before anything is parsed, the frame
size is read from the container's stream header before any frame is decoded, decoding stops at a
frame cap or as soon as the frames asked for are in hand, and every kept frame is shrunk to
64x64 straight away, so memory never holds more than one full-size frame. A clip longer than the
cap is refused when its frames are to be spread over the whole of it (from its header where it
declares a frame count), as the cap would otherwise silently cut it short.

Arrays: a clip is `(T, S, S, 3) uint8` RGB with S the model's frame size (64).
"""

from __future__ import annotations

import io
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

Fit = Literal["crop", "pad"]
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".gif", ".m4v")
# Frames up to this size are decoded and encoded in the calling thread: FFmpeg's and x264's
# threads cost more to start and synchronise than such a frame costs, and a busy server already
# works on several videos side by side.
SMALL_FRAME_PIXELS = 256 * 256


class VideoError(ValueError):
    """An upload the service cannot turn into a clip; `kind` names it for the HTTP layer."""

    kind = "invalid-video"


class EmptyVideo(VideoError):
    kind = "empty-video"


class NotAVideo(VideoError):
    kind = "not-a-video"


class TruncatedVideo(VideoError):
    kind = "truncated-video"


class UnsupportedCodec(VideoError):
    kind = "unsupported-codec"


class TooLarge(VideoError):
    kind = "too-large"


class TooManyPixels(VideoError):
    kind = "too-many-pixels"


class TooShort(VideoError):
    kind = "too-short"


class TooLong(VideoError):
    kind = "too-long"


@dataclass(frozen=True)
class Limits:
    """Caps on the work one upload may cause."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 3840 * 2160  # width x height of one source frame
    max_decoded_frames: int = 2000


@dataclass
class Clip:
    """frames: (T, S, S, 3) uint8; indices/times_s: where each frame came from in the source."""

    frames: np.ndarray
    indices: list[int]
    times_s: list[float]
    source_fps: float
    source_size: tuple[int, int]  # (width, height)
    source_frames: int  # frames in the source as far as it was read (or as its header says)
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Decoding


def read_video(
    data: bytes,
    frames: int,
    *,
    start_s: float | None = None,
    fps: float | None = None,
    fit: Fit = "crop",
    size: int = 64,
    limits: Limits = Limits(),
) -> Clip:
    """Decode `frames` (T) frames from an encoded video held in memory.

    By default the T frames are spread evenly over the whole clip (first and last included).
    With `start_s` and/or `fps`, they are taken from `start_s` seconds on, one every 1/fps
    seconds (default: the source's own rate). Each is centre-cropped to a square (`fit="crop"`)
    or padded with black to one (`fit="pad"`), then resized to `size` with area filtering.

    Raises a `VideoError` subclass for anything wrong with the upload; `ValueError` for bad
    arguments.
    """
    if frames < 1:
        raise ValueError(f"frames must be at least 1, not {frames}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    if start_s is not None and start_s < 0:
        raise ValueError(f"start_s must be 0 or more, not {start_s}")
    with _open(data, limits) as (container, stream):
        width, height = stream.codec_context.width, stream.codec_context.height
        source_fps = _rate(stream)
        declared = stream.frames  # 0 where the container does not say (webm, gif, ...)
        if start_s is None and fps is None:
            picked = _pick_evenly(container, stream, frames, declared, fit, size, limits)
        else:
            picked = _pick_by_time(
                container, stream, frames, start_s or 0.0, fps or source_fps, declared,
                fit, size, limits,
            )
        indices, times, clip, seen = picked
    return Clip(clip, indices, times, source_fps, (width, height), seen)


def read_all_frames(
    data: bytes, *, fit: Fit = "crop", size: int = 64, limits: Limits = Limits()
) -> np.ndarray:
    """Every frame of a video (up to the decoded-frame cap) -> (N, size, size, 3) uint8."""
    with _open(data, limits) as (container, stream):
        frames = [
            _square(f, fit, size)
            for _, _, f in _decode(container, stream, stream.frames, limits)
        ]
    return np.stack(frames) if frames else np.zeros((0, size, size, 3), np.uint8)


def read_clips(path: str | Path, seq_len: int, *, fit: Fit = "crop", size: int = 64,
               limits: Limits = Limits(max_bytes=2**31)) -> np.ndarray:
    """A video file cut into consecutive clips of `seq_len` frames -> (K, seq_len, S, S, 3) uint8.

    The frames left over after the last whole clip are dropped. For training-data tools.
    """
    frames = read_all_frames(Path(path).read_bytes(), fit=fit, size=size, limits=limits)
    k = len(frames) // seq_len
    return frames[: k * seq_len].reshape(k, seq_len, size, size, 3)


class _open:
    """Context manager: checks bytes and header limits, yields (container, video stream)."""

    def __init__(self, data: bytes, limits: Limits):
        if not data:
            raise EmptyVideo("the uploaded file is empty")
        if len(data) > limits.max_bytes:
            raise TooLarge(
                f"the file is {len(data)} bytes; the limit is {limits.max_bytes} bytes"
            )
        self.data, self.limits = data, limits

    def __enter__(self):
        try:
            self.container = av.open(io.BytesIO(self.data), mode="r", metadata_errors="ignore")
        except av.error.FFmpegError as error:
            if _looks_like_mp4(self.data):
                raise TruncatedVideo(
                    f"the MP4 file is cut short or damaged (FFmpeg: {error.strerror})"
                ) from error
            raise NotAVideo(
                f"no video container could be read (FFmpeg: {error.strerror})"
            ) from error
        try:
            stream = self._video_stream()
        except BaseException:
            self.container.close()
            raise
        return self.container, stream

    def _video_stream(self):
        streams = self.container.streams.video
        if not streams:
            raise NotAVideo("the file holds no video stream")
        stream = streams[0]
        if stream.codec_context is None or stream.codec_context.name in ("none", ""):
            raise UnsupportedCodec("the video stream's codec has no decoder here")
        ctx = stream.codec_context
        if ctx.width * ctx.height > self.limits.max_pixels:
            raise TooManyPixels(
                f"frames are {ctx.width}x{ctx.height} = {ctx.width * ctx.height} pixels; "
                f"the limit is {self.limits.max_pixels}"
            )
        stream.thread_type = "AUTO"
        if ctx.width * ctx.height <= SMALL_FRAME_PIXELS:
            stream.codec_context.thread_count = 1
        return stream

    def __exit__(self, *exc) -> None:
        self.container.close()


def _looks_like_mp4(data: bytes) -> bool:
    return data[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")


def _rate(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _decode(
    container, stream, declared: int, limits: Limits
) -> Iterator[tuple[int, float, av.VideoFrame]]:
    """Yields (index, time in s, frame) up to the frame cap; errors on a cut-short stream."""
    rate = _rate(stream) or 25.0
    index, time = -1, 0.0
    try:
        for index, frame in enumerate(container.decode(stream)):
            if index >= limits.max_decoded_frames:
                return
            if frame.width * frame.height > limits.max_pixels:
                raise TooManyPixels(
                    f"frames are {frame.width}x{frame.height}; the limit is "
                    f"{limits.max_pixels} pixels"
                )
            time = frame.time if frame.time is not None else index / rate
            yield index, float(time), frame
    except av.error.FFmpegError as error:
        raise TruncatedVideo(
            f"decoding failed after {index + 1} frames: the file is damaged or cut short "
            f"(FFmpeg: {error.strerror})"
        ) from error
    # The header promised more than the stream held: the file was cut short. Never pad.
    seen = index + 1
    if declared and seen < min(declared, limits.max_decoded_frames):
        raise TruncatedVideo(
            f"the file declares {declared} frames but only {seen} could be decoded: "
            "it is cut short or damaged"
        )
    # Containers without a frame count (webm, mkv) still declare a duration in their header.
    duration = _declared_duration(container, stream)
    last = time if seen else 0.0
    if duration and last + 2.0 / rate < duration:
        raise TruncatedVideo(
            f"the file declares {duration:.2f} s but its frames end at {last:.2f} s: "
            "it is cut short or damaged"
        )


def _declared_duration(container, stream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else 0.0


def _pick_evenly(container, stream, frames, declared, fit, size, limits):
    cap = limits.max_decoded_frames
    if declared > cap:
        raise TooLong(_too_long(f"declares {declared} frames", cap))
    if declared:
        # Known length: choose indices up front and stop decoding after the last one.
        total = declared
        if total < frames:
            raise TooShort(_too_short(total, frames))
        wanted = _even(total, frames)
        kept: dict[int, tuple[float, np.ndarray]] = {}
        for index, time, frame in _decode(container, stream, declared, limits):
            if index in wanted:
                kept[index] = (time, _square(frame, fit, size))
            if index >= wanted[-1]:
                break
        if len(kept) < len(set(wanted)):
            raise TruncatedVideo(
                f"the file declares {declared} frames but ended after {len(kept)} of the "
                "sampled ones: it is cut short or damaged"
            )
        return (wanted, [kept[i][0] for i in wanted], np.stack([kept[i][1] for i in wanted]),
                declared)
    # Unknown length: shrink every frame as it comes (cheap at 64x64), then choose. One frame
    # past the cap is read to tell a clip of exactly `cap` frames from a longer one.
    times, small = [], []
    for _, time, frame in _decode(container, stream, declared,
                                  replace(limits, max_decoded_frames=cap + 1)):
        if len(small) == cap:
            raise TooLong(_too_long(f"has more than {cap} frames", cap))
        times.append(time)
        small.append(_square(frame, fit, size))
    if len(small) < frames:
        raise TooShort(_too_short(len(small), frames))
    wanted = _even(len(small), frames)
    return wanted, [times[i] for i in wanted], np.stack([small[i] for i in wanted]), len(small)


def _pick_by_time(container, stream, frames, start_s, fps, declared, fit, size, limits):
    if fps <= 0:
        raise ValueError("the source has no frame rate; pass fps")
    targets = [start_s + k / fps for k in range(frames)]
    half_frame = 0.5 / (_rate(stream) or fps)
    indices, times, kept = [], [], []
    seen = 0
    for index, time, frame in _decode(container, stream, declared, limits):
        seen = index + 1
        small = None
        # A frame stands for every target time it is the nearest frame at or before.
        while len(kept) < frames and targets[len(kept)] <= time + half_frame:
            small = _square(frame, fit, size) if small is None else small
            indices.append(index)
            times.append(time)
            kept.append(small)
        if len(kept) == frames:
            break
    if len(kept) < frames:
        raise TooShort(
            f"from {start_s:g} s at {fps:g} fps the clip yields {len(kept)} frames, "
            f"{frames} were asked for (the source has {seen} frames at {_rate(stream):g} fps)"
        )
    return indices, times, np.stack(kept), declared or seen


def _even(total: int, frames: int) -> list[int]:
    return [int(round(i)) for i in np.linspace(0, total - 1, frames)]


def _too_long(what: str, cap: int) -> str:
    return (f"the video {what}; at most {cap} are decoded (VDIS_MAX_DECODED_FRAMES): send a "
            "shorter clip, or take frames from part of it with `start` and `fps`")


def _too_short(have: int, want: int) -> str:
    return f"the video has {have} frames and {want} were asked for; ask for {have} or fewer"


def _square(frame, fit: Fit, size: int) -> np.ndarray:
    """An av frame -> centre-cropped (or black-padded) square -> (size, size, 3) uint8."""
    rgb = _rgb(frame)  # (H, W, 3)
    h, w = rgb.shape[:2]
    if fit == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        rgb = rgb[top:top + side, left:left + side]
    else:
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        rgb = cv2.copyMakeBorder(rgb, top, side - h - top, left, side - w - left,
                                 cv2.BORDER_CONSTANT, value=(0, 0, 0))
    interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


_thread = threading.local()


def _rgb(frame) -> np.ndarray:
    """An av frame -> (H, W, 3) uint8 RGB through one swscale context per thread, reused.

    `frame.to_ndarray(format="rgb24")` sets up a new context for every frame, which costs more
    than decoding a small frame; the pixels are the same.
    """
    reformatter = getattr(_thread, "reformatter", None)
    if reformatter is None:
        reformatter = _thread.reformatter = VideoReformatter()
    return reformatter.reformat(frame, format="rgb24").to_ndarray()


# ---------------------------------------------------------------------------------------------
# Encoding


def tile(videos: np.ndarray, columns: int | None = None) -> np.ndarray:
    """(N, T, H, W, 3) -> (T, rows*H, columns*W, 3): results left to right, then top to bottom.

    `columns` defaults to ceil(sqrt(N)); cells past the last result stay black.
    """
    n, t, h, w, c = videos.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * columns, t, h, w, c), np.uint8)
    grid[:n] = videos
    grid = grid.reshape(rows, columns, t, h, w, c).transpose(2, 0, 3, 1, 4, 5)  # (T, R, H, C, W, 3)
    return np.ascontiguousarray(grid.reshape(t, rows * h, columns * w, c))


def upscale(video: np.ndarray, factor: int) -> np.ndarray:
    """(..., H, W, 3) -> (..., H*factor, W*factor, 3), nearest neighbour (keeps pixels crisp)."""
    if factor == 1:
        return video
    return video.repeat(factor, axis=-3).repeat(factor, axis=-2)


def encode_mp4(video: np.ndarray, fps: float = 8.0, crf: int = 12) -> bytes:
    """(T, H, W, 3) uint8 -> MP4 bytes, H.264 yuv420p (odd sizes padded by one black pixel);
    `crf`: x264's constant rate factor (12: near lossless; 23, x264's default, is what most
    cameras and tools write)."""
    t, h, w, _ = video.shape
    video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=_fraction(fps))
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        threads = "1" if video.shape[1] * video.shape[2] <= SMALL_FRAME_PIXELS else "0"  # 0: auto
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": threads}
        for image in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def encode_gif(video: np.ndarray, fps: float = 8.0, scale: int = 1) -> bytes:
    """(T, H, W, 3) uint8 -> looping GIF bytes, its frames upscaled `scale` times.

    One palette for the whole clip, chosen once (median cut, no dithering) from every frame at
    its own size; the frames are then mapped to it and upscaled as palette indices. imageio
    chose a palette per frame at the output size, which took 32 s (of a 40 s request) for
    n=16 x 64 frames at scale 8; this takes about 2 s (docs/reliability.md).
    """
    from PIL import Image

    t, h, w, _ = video.shape
    strip = Image.fromarray(np.ascontiguousarray(video).reshape(t * h, w, 3))  # (T*H, W, 3)
    quantized = strip.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = quantized.getpalette()
    indices = upscale(np.asarray(quantized).reshape(t, h, w, 1), scale)[..., 0]  # (T, H*s, W*s)
    frames = []
    for image in indices:
        frame = Image.fromarray(image, mode="P")
        frame.putpalette(palette)
        frames.append(frame)
    buffer = io.BytesIO()
    # `palette`: the one global colour table (without it Pillow writes one per frame)
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:],
                   duration=1000.0 / fps, loop=0, optimize=False, palette=bytes(palette))
    return buffer.getvalue()


def encode_png_strip(videos: np.ndarray) -> bytes:
    """(N, T, H, W, 3) uint8 -> one PNG: a row per result, its frames left to right."""
    n, t, h, w, c = videos.shape
    strip = videos.transpose(0, 2, 1, 3, 4).reshape(n * h, t * w, c)  # (N*H, T*W, 3)
    ok, png = cv2.imencode(".png", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return png.tobytes()


def encode_npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def encode_json(videos: np.ndarray, **extra) -> bytes:
    """(N, T, H, W, 3) uint8 -> {"shape": [...], "videos": nested lists, **extra}."""
    return json.dumps({"shape": list(videos.shape), "videos": videos.tolist(), **extra}).encode()


def _fraction(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
