"""A folder of the user's own videos as training clips (`--dataset folder:PATH`).

Decoding is `service.videoio`'s, so training sees frames exactly as the service will. The clips
are decoded once, one video at a time, into a file in the cache (raw uint8, memory-mapped on
load), so a folder larger than memory trains: only one video's frames are ever held at once,
and training reads the clips it batches from the page cache. The cache is keyed by the folder's
path and every file's path, size and modification time: adding, changing or removing a video
decodes the folder again. A video is read up to MAX_VIDEO_FRAMES frames (the service's cap on an
upload is far lower); a longer one gives the clips of its start, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.data.paths import cache_dir
from service.videoio import VIDEO_SUFFIXES, Limits, VideoError, read_clips

SIZE = 64
# frames decoded from one video: all of them are held while it is cut into clips (64x64, so
# 12 KiB each: 240 MiB at most), about 11 minutes at 30 fps
MAX_VIDEO_FRAMES = 20_000


def video_files(folder: str | Path) -> list[Path]:
    """Every video under `folder` (mp4, webm, avi, mov, mkv, gif), in sorted path order."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{folder} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    return files


def cache_key(files: list[Path], seq_len: int) -> str:
    """What names the folder's decoded clips (and the flow labels of them) in the cache."""
    listing = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    text = json.dumps({"files": listing, "seq_len": seq_len, "size": SIZE,
                       "max_frames": MAX_VIDEO_FRAMES, "version": 1})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder_key(folder: str | Path, seq_len: int = 8) -> str:
    """The cache key of `folder`'s clips as they are now (its files' paths, sizes and times)."""
    return cache_key(video_files(folder), seq_len)


def video_clips(path: Path, seq_len: int) -> np.ndarray:
    """One video cut into consecutive clips, (K, seq_len, 64, 64, 3) uint8, at most
    MAX_VIDEO_FRAMES frames of it; ValueError naming the file when it cannot be read."""
    # read up to one clip past the cap: more whole clips than the cap holds means it was cut
    limits = Limits(max_bytes=2**31, max_decoded_frames=MAX_VIDEO_FRAMES + seq_len)
    try:
        clips = read_clips(path, seq_len, size=SIZE, limits=limits)
    except VideoError as error:
        raise ValueError(f"{path}: {error} (move it out of the folder to train on the "
                         "others)") from error
    if len(clips) * seq_len > MAX_VIDEO_FRAMES:
        warnings.warn(f"{path}: only its first {MAX_VIDEO_FRAMES} frames are used; cut it "
                      "into shorter files to train on all of it", stacklevel=3)
        clips = clips[:MAX_VIDEO_FRAMES // seq_len]
    return clips


def load_clips(folder: str | Path, seq_len: int = 8, progress: bool = True) -> np.ndarray:
    """Every video under `folder` cut into consecutive clips, memory-mapped from the cache.

    Each file gives floor(frames / seq_len) clips; frames are centre-cropped and resized to
    64x64. Returns a read-only (N, seq_len, 64, 64, 3) uint8 array, files in sorted path order.
    """
    files = video_files(folder)
    key = cache_key(files, seq_len)
    data, meta = cache_dir() / f"folder-{key}.u8", cache_dir() / f"folder-{key}.json"
    if not meta.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        partial = data.with_suffix(".partial")
        count = 0
        with partial.open("wb") as out:
            for path in tqdm(files, desc=f"decoding {folder}", unit="video", disable=not progress):
                clips = video_clips(path, seq_len)  # (K, T, 64, 64, 3)
                out.write(clips.tobytes())
                count += len(clips)
        if not count:
            partial.unlink()
            raise ValueError(f"no video under {folder} has {seq_len} frames or more")
        partial.replace(data)
        meta.write_text(json.dumps({"folder": str(Path(folder).resolve()), "clips": count,
                                    "seq_len": seq_len, "videos": len(files)}))
    count = json.loads(meta.read_text())["clips"]
    return np.memmap(data, np.uint8, mode="r", shape=(count, seq_len, SIZE, SIZE, 3))
