"""One way for training and evaluation to ask for a data set by name."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.data.paths import cache_dir


@dataclass
class TrainingData:
    """videos (N, T, 64, 64, 3) uint8; flow (N, T) int64 or None; preview (8, T, 64, 64, 3)."""

    videos: np.ndarray
    flow: np.ndarray | None
    preview: np.ndarray


def _flow_cached(name: str, videos: np.ndarray) -> np.ndarray:
    from model.data.flow import flow_labels_for

    path = cache_dir() / f"flow-{name}-{len(videos)}.npy"
    if path.exists():
        return np.load(path)
    labels = flow_labels_for(videos)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, labels)
    return labels


def load_training_data(name: str, subset: int = 0, flow: bool = True) -> TrainingData:
    """name: 'sprites', 'mmnist', or 'folder:PATH' (a folder of the user's videos)."""
    if name == "sprites":
        from model.data import sprites

        split = sprites.load("train")
        videos = np.asarray(split.videos[:subset] if subset else split.videos)
        test = sprites.load("test")
        preview = np.asarray(test.videos[[0, 10, 20, 30, 40, 50, 60, 70]])
    elif name == "mmnist":
        from model.data import moving_mnist

        split = moving_mnist.load("train", n=subset or 9000)
        videos = split.videos
        preview = moving_mnist.load("test", n=8).videos
    elif name.startswith("folder:"):
        from model.data import folder

        videos = folder.load_clips(name.split(":", 1)[1])
        if subset:
            videos = videos[:subset]
        preview = videos[:8]
    else:
        raise ValueError(f"unknown data set {name!r}: use sprites, mmnist or folder:PATH")
    labels = _flow_cached(name.replace("/", "_").replace(":", "_"), videos) if flow else None
    return TrainingData(videos, labels, preview)
