"""The Sprites benchmark (Li & Mandt 2018), rebuilt exactly from the LPC sheets in assets/.

Facts (cell numbers, frame offsets, layer order, label encoding, split seed) come from
assets/lpc-sprites/LAYOUT.md. The built set is cached on disk as uint8 .npy files and
memory-mapped on load, so the 1.1 GB of clips never has to sit in RAM twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from model.data.paths import ASSETS, cache_dir

SHEETS = ASSETS / "lpc-sprites"
CELL = 64
COLUMNS = 13
N_FRAMES = 8
N_CLASSES = 6  # per appearance attribute
N_CHARACTERS = N_CLASSES**4  # 1296
N_TRAIN_CHARACTERS = 1000
SPLIT_SEED = 423

ATTRIBUTES = ("body", "bottom", "top", "hair")
LAYER_DIRS = ("body", "bottomwear", "topwear", "hair")
SHOES = "shoes/1.png"
ACTIONS = ("walk", "spellcard", "slash")
DIRECTIONS = ("front", "left", "right")
MOTIONS = tuple(f"{a}-{d}" for a in ACTIONS for d in DIRECTIONS)  # label = 3*action + direction

# First cell of each (action, direction) strip, and the cell offset shown at frames 0..7.
FIRST_CELL = {
    "spellcard": {"left": 13, "front": 26, "right": 39},
    "walk": {"left": 118, "front": 131, "right": 144},
    "slash": {"left": 169, "front": 182, "right": 195},
}
FRAME_OFFSETS = {
    "spellcard": (0, 1, 2, 3, 4, 5, 4, 6),
    "walk": (7, 0, 1, 2, 3, 4, 5, 6),
    "slash": (0, 1, 2, 3, 4, 5, 4, 0),
}
CACHE_VERSION = 1


def motion_cells(motion: int) -> list[int]:
    """The 8 sheet cells shown by motion label `motion` (0..8), frame by frame."""
    action, direction = ACTIONS[motion // 3], DIRECTIONS[motion % 3]
    first = FIRST_CELL[action][direction]
    return [first + offset for offset in FRAME_OFFSETS[action]]


def character_id(body: int, bottom: int, top: int, hair: int) -> int:
    return 216 * body + 36 * bottom + 6 * top + hair


def character_attributes(cid: int) -> tuple[int, int, int, int]:
    return cid // 216, (cid // 36) % 6, (cid // 6) % 6, cid % 6


def split_characters() -> tuple[np.ndarray, np.ndarray]:
    """The standard split: (train ids (1000,), test ids (296,)) in permutation order."""
    perm = np.random.RandomState(SPLIT_SEED).permutation(N_CHARACTERS)
    return perm[:N_TRAIN_CHARACTERS], perm[N_TRAIN_CHARACTERS:]


def _read_sheet(path: Path) -> np.ndarray:
    """An RGBA sheet as float32 (21*64, 13*64, 4) in [0, 255]."""
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgra is None or bgra.ndim != 3 or bgra.shape[2] != 4:
        raise RuntimeError(f"{path}: not an RGBA PNG sheet")
    return bgra[..., [2, 1, 0, 3]].astype(np.float32)


def _cells(sheet: np.ndarray, cells: list[int]) -> np.ndarray:
    """Cut cells from a sheet: (len(cells), 64, 64, 4)."""
    return np.stack(
        [sheet[(n // COLUMNS) * CELL:(n // COLUMNS + 1) * CELL,
               (n % COLUMNS) * CELL:(n % COLUMNS + 1) * CELL] for n in cells]
    )


def _over(dst_rgb: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """Alpha-composite an RGBA layer (..., 4) over an opaque RGB canvas (..., 3)."""
    alpha = layer[..., 3:] / 255.0
    return layer[..., :3] * alpha + dst_rgb * (1.0 - alpha)


def render_clip(character: int, motion: int) -> np.ndarray:
    """One clip of one character: (8, 64, 64, 3) uint8, the same pixels as render_all's."""
    body, bottom, top, hair = character_attributes(character)
    cells = motion_cells(motion)
    rgb = np.zeros((len(cells), CELL, CELL, 3), np.float32)
    layers = [SHEETS / d / f"{i}.png" for d, i in zip(LAYER_DIRS, (body, bottom, top, hair),
                                                      strict=True)]
    for path in [*layers, SHEETS / SHOES]:
        rgb = _over(rgb, _cells(_read_sheet(path), cells))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


LAYER_NAMES = ("skin", "trousers", "top", "hair", "shoes")  # what layer_maps' codes 0..4 are


@lru_cache(maxsize=1)
def _layer_alphas() -> tuple[np.ndarray, np.ndarray]:
    """Opaque-pixel masks of every sheet on the 72 benchmark cells, motion-major.

    (4 attributes, 6 classes, 72, 64, 64) bool for the four attribute layers, (72, 64, 64) for
    the shoes, which every character wears.
    """
    cells = [c for m in range(len(MOTIONS)) for c in motion_cells(m)]
    layers = np.stack([
        np.stack([_cells(_read_sheet(SHEETS / d / f"{i}.png"), cells)[..., 3] > 0
                  for i in range(N_CLASSES)]) for d in LAYER_DIRS])
    return layers, _cells(_read_sheet(SHEETS / SHOES), cells)[..., 3] > 0


class AllClips:
    """Every character in every motion, from both splits' caches: clip(character, motion).

    The benchmark renders all 1296 characters, 1000 in the training split and 296 in the test
    split, so the clip of any attribute combination exists in one of them.
    """

    def __init__(self, root: Path | None = None):
        self.splits = [load(name, root, progress=False) for name in ("train", "test")]
        self.where = {}
        for k, split in enumerate(self.splits):
            for first in range(0, len(split), len(MOTIONS)):
                self.where[int(split.character[first])] = (k, first)

    def clips(self, character: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """(N, 8, 64, 64, 3) uint8: the clip of each (character, motion)."""
        out = np.empty((len(character), N_FRAMES, CELL, CELL, 3), np.uint8)
        for n, (cid, m) in enumerate(zip(character, motion, strict=True)):
            k, first = self.where[int(cid)]
            out[n] = self.splits[k].videos[first + int(m)]
        return out


def sheet_mean_colour(attribute: int, cls: int) -> np.ndarray:
    """The mean RGB (3,) of the opaque pixels of one attribute class's sheet."""
    sheet = _read_sheet(SHEETS / LAYER_DIRS[attribute] / f"{cls}.png")
    return sheet[..., :3][sheet[..., 3] > 0].mean(0)


def layer_maps(character: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Which layer painted each pixel of these clips: (N, 8, 64, 64) int8.

    -1 is the black background, 0..4 the layers of LAYER_NAMES (skin is the body sheet,
    trousers the bottomwear): the topmost layer with any opacity at that pixel, as composited.
    """
    layers, shoes = _layer_alphas()
    character, motion = np.asarray(character), np.asarray(motion)
    out = np.full((len(character), N_FRAMES, CELL, CELL), -1, np.int8)
    for n, (cid, m) in enumerate(zip(character, motion, strict=True)):
        frames = slice(int(m) * N_FRAMES, (int(m) + 1) * N_FRAMES)
        for k, cls in enumerate(character_attributes(int(cid))):
            out[n][layers[k, cls, frames]] = k
        out[n][shoes[frames]] = 4
    return out


def render_all(progress: bool = True) -> np.ndarray:
    """Every clip of every character: (1296, 9, 8, 64, 64, 3) uint8, indexed [cid, motion].

    Composites layer by layer (6 bodies, then 36 body+bottom pairs, ...) so each partial
    composite is computed once rather than once per character.
    """
    cells = [c for m in range(len(MOTIONS)) for c in motion_cells(m)]  # 72 cells
    layers = [
        [_cells(_read_sheet(SHEETS / d / f"{i}.png"), cells) for i in range(N_CLASSES)]
        for d in LAYER_DIRS
    ]
    shoes = _cells(_read_sheet(SHEETS / SHOES), cells)
    out = np.empty((N_CHARACTERS, len(cells), CELL, CELL, 3), np.uint8)
    black = np.zeros((len(cells), CELL, CELL, 3), np.float32)
    bar = tqdm(total=N_CHARACTERS, desc="sprites", unit="char", disable=not progress)
    for b in range(N_CLASSES):
        with_body = _over(black, layers[0][b])
        for o in range(N_CLASSES):
            with_bottom = _over(with_body, layers[1][o])
            for t in range(N_CLASSES):
                with_top = _over(with_bottom, layers[2][t])
                for h in range(N_CLASSES):
                    rgb = _over(_over(with_top, layers[3][h]), shoes)
                    out[character_id(b, o, t, h)] = np.clip(np.rint(rgb), 0, 255)
                    bar.update(1)
    bar.close()
    return out.reshape(N_CHARACTERS, len(MOTIONS), N_FRAMES, CELL, CELL, 3)


@dataclass
class SpritesSplit:
    """One split of Sprites. Clips are ordered by character (split order), then motion.

    videos: (N, 8, 64, 64, 3) uint8 (a read-only memory map)
    appearance: (N, 4) int64, [body, bottom, top, hair], 6 classes each
    motion: (N,) int64, 9 classes, 3*action + direction
    character: (N,) int64, character id 0..1295
    """

    videos: np.ndarray
    appearance: np.ndarray
    motion: np.ndarray
    character: np.ndarray

    def __len__(self) -> int:
        return len(self.motion)


def _cache_path(root: Path | None) -> Path:
    return (root or cache_dir()) / f"sprites-v{CACHE_VERSION}"


def build(root: Path | None = None, progress: bool = True, force: bool = False) -> Path:
    """Render Sprites once and cache it as uint8 .npy files; returns the cache folder."""
    folder = _cache_path(root)
    if (folder / "meta.json").exists() and not force:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    clips = render_all(progress)  # (1296, 9, 8, 64, 64, 3)
    for name, ids in zip(("train", "test"), split_characters(), strict=True):
        character = np.repeat(ids, len(MOTIONS))
        np.save(folder / f"{name}_videos.npy", clips[character, np.tile(np.arange(9), len(ids))])
        np.save(folder / f"{name}_character.npy", character.astype(np.int64))
    meta = {"version": CACHE_VERSION, "characters": N_CHARACTERS, "frames": N_FRAMES}
    (folder / "meta.json").write_text(json.dumps(meta))  # written last: marks a complete build
    return folder


def load(split: str, root: Path | None = None, progress: bool = True) -> SpritesSplit:
    """Load a split ('train' or 'test'), building the cache first if needed."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    folder = build(root, progress)
    character = np.load(folder / f"{split}_character.npy")
    appearance = np.array([character_attributes(c) for c in character], np.int64).reshape(-1, 4)
    motion = np.tile(np.arange(len(MOTIONS), dtype=np.int64), len(character) // len(MOTIONS))
    videos = np.load(folder / f"{split}_videos.npy", mmap_mode="r")
    return SpritesSplit(videos, appearance, motion, character)
