"""One way for training and evaluation to ask for a data set by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.data.paths import cache_dir


@dataclass
class TrainingData:
    """videos (N, T, 64, 64, 3) uint8; flow (N, T) int64 or None; preview (8, T, 64, 64, 3)."""

    videos: np.ndarray
    flow: np.ndarray | None
    preview: np.ndarray


def canonical(name: str) -> str:
    """The data set's name as a checkpoint records it: `folder:PATH` with PATH made absolute,
    so that export and evaluation find the folder from any working directory."""
    if name.startswith("folder:"):
        return "folder:" + str(Path(name.split(":", 1)[1]).expanduser().resolve())
    return name


def _flow_cached(name: str, videos: np.ndarray) -> np.ndarray:
    """Flow labels (N, T) of `videos`, computed one clip at a time (a memory-mapped folder is
    read through, never held whole) and cached as `name`."""
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
    key = name  # the flow labels' name in the cache
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

        path = name.split(":", 1)[1]
        videos = folder.load_clips(path)  # memory-mapped: batches are read as they are drawn
        if subset:
            videos = videos[:subset]
        preview = videos[:8]
        # by the folder's contents, not its name: a changed folder gets labels of its own
        key = f"folder-{folder.folder_key(path)}"
    else:
        raise ValueError(f"unknown data set {name!r}: use sprites, mmnist or folder:PATH")
    labels = _flow_cached(key, videos) if flow else None
    return TrainingData(videos, labels, preview)
