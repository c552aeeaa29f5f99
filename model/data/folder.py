"""A folder of the user's own videos as training clips (`--dataset folder:PATH`).

Decoding is `service.videoio`'s, so training sees frames exactly as the service will.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.videoio import VIDEO_SUFFIXES, read_clips


def load_clips(folder: str, seq_len: int = 8) -> np.ndarray:
    """Every video under `folder` (mp4, webm, avi, mov, mkv, gif), cut into consecutive clips.

    Each file gives floor(frames / seq_len) clips; frames are centre-cropped and resized to
    64x64. Returns (N, seq_len, 64, 64, 3) uint8, files in sorted path order.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{folder} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    clips = [read_clips(path, seq_len) for path in files]
    clips = np.concatenate(clips) if clips else np.zeros((0, seq_len, 64, 64, 3), np.uint8)
    if not len(clips):
        raise ValueError(f"no video under {folder} has {seq_len} frames or more")
    return clips
