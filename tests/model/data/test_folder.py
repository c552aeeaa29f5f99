"""model.data.folder: a folder of real video files -> training clips."""

import numpy as np
import pytest

from model.data import folder
from model.data.folder import load_clips
from tests.service.videos import encode, moving_square


def test_load_clips_cuts_every_video_into_whole_clips(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.mp4").write_bytes(encode(moving_square(17), "mp4"))  # 2 clips of 8
    (tmp_path / "sub" / "b.webm").write_bytes(encode(moving_square(8, seed=1), "webm"))  # 1
    (tmp_path / "c.gif").write_bytes(encode(moving_square(10, seed=2), "gif"))  # 1
    (tmp_path / "notes.txt").write_text("not a video")
    clips = load_clips(str(tmp_path), seq_len=8)
    assert clips.shape == (4, 8, 64, 64, 3) and clips.dtype == np.uint8
    assert clips[1].std() > 0  # real pictures, not black padding


def test_load_clips_refuses_a_folder_without_videos(tmp_path):
    with pytest.raises(ValueError, match="holds no videos"):
        load_clips(str(tmp_path))


def test_clips_are_memory_mapped_from_a_cache_that_follows_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIS_CACHE", str(tmp_path / "cache"))
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(encode(moving_square(16), "mp4"))
    first = load_clips(videos, seq_len=8, progress=False)
    assert isinstance(first, np.memmap) and first.shape == (2, 8, 64, 64, 3)
    assert len(list((tmp_path / "cache").glob("folder-*.u8"))) == 1
    again = load_clips(videos, seq_len=8, progress=False)  # read back, not decoded again
    np.testing.assert_array_equal(again, first)
    (videos / "b.mp4").write_bytes(encode(moving_square(8, seed=3), "mp4"))
    grown = load_clips(videos, seq_len=8, progress=False)  # a new file: decoded again
    assert grown.shape[0] == 3
    np.testing.assert_array_equal(grown[:2], first)


def test_a_long_video_gives_the_clips_of_its_start_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(folder, "MAX_VIDEO_FRAMES", 16)
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "long.mp4").write_bytes(encode(moving_square(40), "mp4"))
    (videos / "short.mp4").write_bytes(encode(moving_square(16, seed=1), "mp4"))  # not cut
    with pytest.warns(UserWarning, match=r"long.mp4: only its first 16 frames are used") as seen:
        clips = load_clips(videos, seq_len=8, progress=False)
    assert len(seen) == 1 and clips.shape == (4, 8, 64, 64, 3)


def test_a_video_that_cannot_be_read_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "good.mp4").write_bytes(encode(moving_square(8), "mp4"))
    (tmp_path / "broken.mp4").write_bytes(encode(moving_square(8), "mp4")[:300])
    with pytest.raises(ValueError, match=r"broken.mp4: .*move it out of the folder"):
        load_clips(tmp_path, progress=False)
