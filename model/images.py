"""Images a person looks at: clip grids (one clip per row) and loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from model.vae import SequentialVAE  # noqa: E402


def grid_image(clips: torch.Tensor | np.ndarray, pad: int = 2) -> np.ndarray:
    """clips (N, T, 3, H, W) float in [0, 1] or (N, T, H, W, 3) uint8 -> one RGB uint8 image."""
    if isinstance(clips, torch.Tensor):
        clips = (clips.detach().float().clamp(0, 1) * 255).round().byte()
        clips = clips.permute(0, 1, 3, 4, 2).numpy()
    n, t, h, w, c = clips.shape
    out = np.full((n * (h + pad) + pad, t * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        for j in range(t):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = clips[i, j]
    return out


def save_grid(clips, path: Path, scale: int = 1) -> None:
    image = grid_image(clips)
    if scale > 1:
        image = image.repeat(scale, 0).repeat(scale, 1)
    plt.imsave(str(path), image)


def save_image_row(images: list[np.ndarray], titles: list[str], path: Path,
                   title: str) -> None:
    """Grey images (H, W) side by side, each with its title, under one title."""
    fig, axes = plt.subplots(1, max(len(images), 1), figsize=(1.3 * max(len(images), 1), 1.9),
                             squeeze=False)
    for ax, image, caption in zip(axes[0], images, titles, strict=False):
        ax.imshow(image, cmap="gray")
        ax.set_title(caption, fontsize=7)
    for ax in axes[0]:
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def swap_grid(model: SequentialVAE, video: torch.Tensor) -> torch.Tensor:
    """Rows: for each clip A, its appearance with the motion of every clip B.

    video (N, T, 3, H, W) -> (N + N*N... ) laid out as: row 0 the originals (motion sources);
    then for each A: A's first frame repeated is not shown; rows are A's appearance with the
    motion of clip B = (A + 1) mod N and B = (A + 2) mod N, so a row pair shows two swaps.
    """
    f_mean, _, z_mean, _ = model.encode(video)
    n = video.shape[0]
    rows = [video]
    for shift in (1, 2):
        rows.append(model.decode(f_mean, z_mean.roll(-shift, 0)))
    # interleave: original A, A with motion of A+1, A with motion of A+2
    return torch.stack(rows, 1).flatten(0, 1)[: 3 * n]


def save_curves(history: list[dict], path: Path) -> None:
    """One panel per loss term, by epoch."""
    keys = [k for k in history[0] if k not in ("epoch", "step")]
    cols = min(4, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, key in zip(axes.flat, keys, strict=False):  # the grid may have spare panels
        ax.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", ms=3)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
