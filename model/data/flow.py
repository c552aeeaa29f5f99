"""Label-free motion targets for S3VAE's dynamic factor prediction.

For each pair of consecutive frames, dense optical flow (OpenCV Farneback) is summed over a
3x3 grid; the label is the cell with the strongest flow, or STILL when nothing moves.
The last frame has no successor and gets -1 (ignored by the loss).
"""

from __future__ import annotations

import cv2
import numpy as np
from tqdm import tqdm

GRID = 3
STILL = GRID * GRID  # class 9
STILL_THRESHOLD = 0.05  # mean flow magnitude (pixels) in the strongest cell


def flow_labels(clip: np.ndarray) -> np.ndarray:
    """clip (T, H, W, 3) uint8 -> labels (T,) int64 in 0..9, last frame -1."""
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in clip]
    h, w = gray[0].shape
    labels = np.full(len(clip), -1, np.int64)
    for t in range(len(clip) - 1):
        flow = cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, 0.5, 2, 9, 3, 5, 1.1, 0)
        magnitude = np.linalg.norm(flow, axis=-1)  # (H, W)
        cells = magnitude[: h - h % GRID, : w - w % GRID].reshape(
            GRID, h // GRID, GRID, w // GRID).mean((1, 3))
        labels[t] = STILL if cells.max() < STILL_THRESHOLD else int(cells.argmax())
    return labels


def flow_labels_for(videos: np.ndarray, progress: bool = True) -> np.ndarray:
    """videos (N, T, H, W, 3) uint8 -> labels (N, T) int64."""
    return np.stack([flow_labels(clip) for clip in tqdm(
        videos, desc="flow labels", unit="clip", disable=not progress, mininterval=2)])
