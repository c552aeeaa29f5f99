"""service.videoio on real files made with PyAV: sampling, fitting, limits, damage, encoders."""

import io

import av
import numpy as np
import pytest

from service import videoio as vio
from tests.service.videos import encode, moving_square


@pytest.mark.parametrize("fmt", ["mp4", "webm", "avi", "mov", "gif"])
def test_every_container_gives_evenly_spread_64x64_frames(fmt):
    clip = vio.read_video(encode(moving_square(12, 96, 80), fmt), 8)
    assert clip.frames.shape == (8, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.indices == [0, 2, 3, 5, 6, 8, 9, 11]
    assert clip.source_size == (96, 80)
    assert clip.frames.std() > 0


def test_frames_follow_the_source_after_crop_and_resize():
    source = moving_square(8, 96, 64)
    clip = vio.read_video(encode(source, "lossless"), 8)
    import cv2

    expected = cv2.resize(source[0, :, 16:80], (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(clip.frames[0], expected)


def test_start_time_and_fps_pick_frames_by_time():
    clip = vio.read_video(encode(moving_square(24), "mp4", fps=8), 4, start_s=1.0, fps=2)
    assert clip.indices == [8, 12, 16, 20]
    assert clip.times_s == pytest.approx([1.0, 1.5, 2.0, 2.5])


def test_pad_keeps_the_whole_frame_with_black_bars():
    clip = vio.read_video(encode(np.full((8, 32, 64, 3), 200, np.uint8), "lossless"), 8,
                          fit="pad")
    assert (clip.frames[0, :16] == 0).all()  # top bar
    assert (clip.frames[0, 16:48] == 200).all()  # the picture
    assert (clip.frames[0, 48:] == 0).all()  # bottom bar


@pytest.mark.parametrize("faststart", [False, True])
@pytest.mark.parametrize("keep", [0.5, 0.8, 0.95])
def test_a_cut_short_mp4_is_an_error_never_black_frames(keep, faststart):
    data = encode(moving_square(12), "mp4", faststart=faststart)
    with pytest.raises(vio.TruncatedVideo):
        vio.read_video(data[: int(len(data) * keep)], 8)


def test_a_cut_short_webm_is_an_error():
    data = encode(moving_square(12), "webm")
    with pytest.raises(vio.TruncatedVideo):
        vio.read_video(data[: int(len(data) * 0.9)], 8)


@pytest.mark.parametrize("data, error", [
    (b"", vio.EmptyVideo),
    (b"hello, this is text" * 20, vio.NotAVideo),
    (bytes(4000), vio.NotAVideo),
])
def test_bad_bytes_get_their_error(data, error):
    with pytest.raises(error):
        vio.read_video(data, 8)


def test_limits_are_checked_before_decoding():
    data = encode(moving_square(12, 96, 80), "mp4")
    with pytest.raises(vio.TooLarge):
        vio.read_video(data, 8, limits=vio.Limits(max_bytes=len(data) - 1))
    with pytest.raises(vio.TooManyPixels):
        vio.read_video(data, 8, limits=vio.Limits(max_pixels=96 * 80 - 1))
    with pytest.raises(vio.TooShort):
        vio.read_video(data, 13)
    # The decoded-frame cap bounds the work. Frames spread over a longer clip than the cap are
    # refused: from the header's frame count (mp4), or once past the cap (webm says none).
    capped = vio.Limits(max_decoded_frames=10)
    for fmt in ("mp4", "webm"):
        with pytest.raises(vio.TooLong, match="at most 10 are decoded"):
            vio.read_video(encode(moving_square(40), fmt), 4, limits=capped)
    clip = vio.read_video(encode(moving_square(10), "webm"), 4, limits=capped)
    assert clip.indices == [0, 3, 6, 9]  # exactly the cap is fine
    # Frames picked by time need only the first ones
    clip = vio.read_video(encode(moving_square(40), "webm"), 4, start_s=0, fps=8, limits=capped)
    assert clip.indices == [0, 1, 2, 3]


def test_an_audio_only_file_is_not_a_video():
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with pytest.raises(vio.NotAVideo, match="no video stream"):
        vio.read_video(buffer.getvalue(), 8)


def test_mp4_and_gif_encoders_round_trip():
    video = moving_square(6, 64, 64)
    mp4 = vio.encode_mp4(video, fps=8)
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 6 and np.abs(frames[3].astype(int) - video[3]).mean() < 6
    assert vio.read_video(vio.encode_gif(video), 6).frames.shape == (6, 64, 64, 3)


def test_tile_and_png_strip_layouts():
    videos = np.stack([np.full((2, 4, 4, 3), 50 * (i + 1), np.uint8) for i in range(3)])
    grid = vio.tile(videos)  # 3 results -> 2 columns, 2 rows
    assert grid.shape == (2, 8, 8, 3)
    assert grid[0, 0, 0, 0] == 50 and grid[0, 0, 4, 0] == 100 and grid[0, 4, 0, 0] == 150
    assert grid[0, 4, 4, 0] == 0  # the empty cell
    import cv2

    strip = cv2.imdecode(np.frombuffer(vio.encode_png_strip(videos), np.uint8), cv2.IMREAD_COLOR)
    assert strip.shape == (12, 8, 3)


def _gif_colour_tables(data: bytes) -> tuple[bool, int, int]:
    """(has a global colour table, frames, frames with a local colour table) of a GIF file."""
    assert data[:6] in (b"GIF87a", b"GIF89a")
    flags = data[10]
    at = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = local = 0
    while data[at] != 0x3B:  # the trailer
        if data[at] == 0x21:  # an extension: label, then sub-blocks
            at += 2
        else:  # 0x2C, an image: its descriptor, maybe a local table, the LZW code size
            assert data[at] == 0x2C
            image_flags = data[at + 9]
            frames += 1
            local += bool(image_flags & 0x80)
            at += 10 + (3 * 2 ** ((image_flags & 7) + 1) if image_flags & 0x80 else 0) + 1
        while data[at]:  # sub-blocks up to the empty one
            at += data[at] + 1
        at += 1
    return bool(flags & 0x80), frames, local


def test_gif_has_one_palette_and_keeps_the_colours_when_upscaled():
    import imageio.v3 as iio

    videos = np.stack([moving_square(8, 64, 64, seed=s) for s in range(4)])  # (4, 8, 64, 64, 3)
    grid = vio.tile(videos)  # (8, 128, 128, 3)
    data = vio.encode_gif(grid, fps=8, scale=3)
    assert _gif_colour_tables(data) == (True, 8, 0)  # one global palette, none per frame
    back = iio.imread(data, index=None)[..., :3]  # (8, 384, 384, 3)
    assert back.shape == (8, 384, 384, 3)
    np.testing.assert_array_equal(back, vio.upscale(grid, 3))  # 8 colours: exact


def test_gif_of_a_large_answer_is_fast():
    """n=16 results of 64 frames at scale 8 (2048 x 2048): imageio took 32 s (48 s on a busy
    machine) choosing a palette per upscaled frame; one palette from the small frames: ~4 s."""
    import time

    videos = np.stack([moving_square(64, 64, 64, seed=s) for s in range(16)])
    grid = vio.tile(videos)  # (64, 256, 256, 3)
    started = time.perf_counter()
    data = vio.encode_gif(grid, fps=8, scale=8)
    took = time.perf_counter() - started
    assert _gif_colour_tables(data)[1] == 64
    assert took < 15, f"{took:.1f} s"
