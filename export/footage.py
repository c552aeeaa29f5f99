"""Natural-looking footage for checking the domain score: camera pans and zooms over the real
photographs inside scikit-image's wheel (public domain or CC0; the dev extra). No real video data
set can be had on these machines, so this is the nearest thing to a user's own film, made
without downloading anything. Used by export/domain_report.py and the tests.
"""

from __future__ import annotations

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "grass", "gravel", "brick",
          "hubble_deep_field")
MOVES = ((1.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.97))  # pan right, pan down, zoom in


def photo_pan(name: str = "astronaut", frames: int = 12, width: int = 160, height: int = 120,
              move: tuple[float, float, float] = MOVES[0]) -> np.ndarray:
    """(T, H, W, 3) uint8: a camera panning (move[:2], in shares of the view per frame) and
    zooming (move[2] per frame) over the photograph `name` of skimage.data."""
    import cv2
    import skimage.data

    photo = getattr(skimage.data, name)()
    photo = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]
    h, w = photo.shape[:2]
    view_w = min(w, h * width // height) * 3 // 4
    video = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        vw = max(8, int(view_w * move[2] ** t))
        vh = max(8, vw * height // width)
        x = int((w - vw) / 2 + move[0] * (t - frames / 2) * 0.02 * vw)
        y = int((h - vh) / 2 + move[1] * (t - frames / 2) * 0.02 * vh)
        x, y = min(max(x, 0), w - vw), min(max(y, 0), h - vh)
        video[t] = cv2.resize(photo[y:y + vh, x:x + vw], (width, height),
                              interpolation=cv2.INTER_AREA)
    return video


def photo_pans(frames: int = 8, size: int = 64) -> np.ndarray:
    """(27, T, S, S, 3) uint8: each photograph under each of the three camera moves."""
    return np.stack([photo_pan(name, frames, size, size, move)
                     for name in PHOTOS for move in MOVES])


def moving_squares(n: int = 30, frames: int = 8, size: int = 64, seed: int = 0) -> np.ndarray:
    """(n, T, S, S, 3) uint8: a coloured square moving over a coloured background."""
    rng = np.random.default_rng(seed)
    clips = np.empty((n, frames, size, size, 3), np.uint8)
    for i in range(n):
        clips[i] = rng.integers(0, 256, 3)
        side, colour = int(rng.integers(12, 32)), rng.integers(0, 256, 3)
        top = int(rng.integers(0, size - side))
        for t in range(frames):
            left = (t * 4 + i) % (size - side)
            clips[i, t, top:top + side, left:left + side] = colour
    return clips
