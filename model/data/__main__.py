"""Build a data set's cache and write a preview grid a person can check by eye.

    python -m model.data build sprites --preview docs/sprites-preview.png
    python -m model.data build mmnist --preview docs/mmnist-preview.png [--frames 15 --digits 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _size_mb(folders: list[Path]) -> float:
    return sum(f.stat().st_size for d in folders for f in d.rglob("*") if f.is_file()) / 2**20


def build_sprites(force: bool) -> tuple[list[Path], np.ndarray, list[str]]:
    """Build Sprites; preview: all 9 motions of the first test character."""
    from model.data import sprites

    folder = sprites.build(force=force)
    test = sprites.load("test")
    rows = np.flatnonzero(test.character == test.character[0])  # its 9 clips, by motion
    names = [f"{sprites.MOTIONS[m]} (character {test.character[i]})"
             for i, m in zip(rows, test.motion[rows], strict=True)]
    return [folder], np.asarray(test.videos[rows]), names


def build_mmnist(force: bool, frames: int, digits: int) -> tuple[list[Path], np.ndarray, list[str]]:
    """Build both Moving MNIST splits (9000 / 2664 clips); preview: the first 6 test clips."""
    from model.data import moving_mnist

    splits = {}
    for split, n in (("train", 9000), ("test", 2664)):
        splits[split] = moving_mnist.load(split, n=n, frames=frames, digits=digits, force=force)
    folders = [moving_mnist.cache_path(split, n, frames, digits, moving_mnist.DEFAULT_SEED[split])
               for split, n in (("train", 9000), ("test", 2664))]
    test = splits["test"]
    names = [f"digits {row.tolist()}" for row in test.digits[:6]]
    return folders, test.videos[:6], names


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a data set's cache (and a preview image)")
    b.add_argument("dataset", choices=["sprites", "mmnist"])
    b.add_argument("--preview", type=Path, help="write a PNG grid of a few clips here")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.add_argument("--frames", type=int, default=8, help="mmnist: frames per clip")
    b.add_argument("--digits", type=int, default=2, choices=[1, 2], help="mmnist: digits per clip")
    a = p.parse_args(argv)

    start = time.perf_counter()
    if a.dataset == "sprites":
        folders, clips, names = build_sprites(a.force)
    else:
        folders, clips, names = build_mmnist(a.force, a.frames, a.digits)
    print(f"{a.dataset}: ready in {time.perf_counter() - start:.1f} s; cache "
          f"{', '.join(str(f) for f in folders)} holds {_size_mb(folders):.0f} MB")
    if a.preview:
        from model.images import save_grid  # imports torch: only when a preview is asked for

        a.preview.parent.mkdir(parents=True, exist_ok=True)
        save_grid(clips, a.preview, scale=2)
        print(f"preview {a.preview}, one clip per row:")
        for i, name in enumerate(names):
            print(f"  row {i}: {name}")


if __name__ == "__main__":
    main()
