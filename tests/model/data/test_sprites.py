"""Sprites against the facts in assets/lpc-sprites/LAYOUT.md, recomputed here independently.

Uses the cache (.cache/sprites-v1, or $VDIS_CACHE); on a clean clone the first load builds it
(about 20 s).
"""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from model.data import sprites
from model.data.paths import ASSETS

SHEETS = ASSETS / "lpc-sprites"
# LAYOUT.md's tables, typed again here rather than imported, so a typo in sprites.py shows.
FIRST = {("walk", "front"): 131, ("walk", "left"): 118, ("walk", "right"): 144,
         ("spellcard", "front"): 26, ("spellcard", "left"): 13, ("spellcard", "right"): 39,
         ("slash", "front"): 182, ("slash", "left"): 169, ("slash", "right"): 195}
OFFSETS = {"spellcard": [0, 1, 2, 3, 4, 5, 4, 6], "walk": [7, 0, 1, 2, 3, 4, 5, 6],
           "slash": [0, 1, 2, 3, 4, 5, 4, 0]}
ACTIONS, DIRECTIONS = ["walk", "spellcard", "slash"], ["front", "left", "right"]


@pytest.fixture(scope="module")
def train():
    return sprites.load("train", progress=False)


@pytest.fixture(scope="module")
def test():
    return sprites.load("test", progress=False)


def test_counts_and_shapes(train, test):
    for split, n in ((train, 9000), (test, 2664)):
        assert len(split) == n
        assert split.videos.shape == (n, 8, 64, 64, 3) and split.videos.dtype == np.uint8
        assert split.appearance.shape == (n, 4)
        assert split.motion.shape == (n,) and split.character.shape == (n,)


def test_standard_split(train, test):
    perm = np.random.RandomState(423).permutation(1296)
    # Clips are ordered by character (in permutation order), then by motion.
    np.testing.assert_array_equal(train.character, np.repeat(perm[:1000], 9))
    np.testing.assert_array_equal(test.character, np.repeat(perm[1000:], 9))
    assert not set(train.character) & set(test.character)
    assert len(set(train.character)) == 1000 and len(set(test.character)) == 296


def test_label_encoding(train, test):
    for split in (train, test):
        b, o, t, h = split.appearance.T
        np.testing.assert_array_equal(216 * b + 36 * o + 6 * t + h, split.character)
        assert split.appearance.min() == 0 and split.appearance.max() == 5
        np.testing.assert_array_equal(split.motion, np.tile(np.arange(9), len(split) // 9))
    every = np.concatenate([train.appearance, test.appearance])[::9]
    assert len({tuple(row) for row in every}) == 1296  # each (b, o, t, h) exactly once


def _sheet(folder: str, name: int) -> np.ndarray:
    rgba = iio.imread(SHEETS / folder / f"{name}.png", mode="RGBA")  # some are palette PNGs
    assert rgba.shape == (1344, 832, 4)
    return rgba.astype(np.float64)


def _composite_by_hand(cid: int, cell: int) -> np.ndarray:
    """One 64x64 cell of character cid, composited over black in LAYOUT.md's layer order."""
    b, o, t, h = cid // 216, cid // 36 % 6, cid // 6 % 6, cid % 6
    row, col = divmod(cell, 13)
    canvas = np.zeros((64, 64, 3))
    for folder, name in (("body", b), ("bottomwear", o), ("topwear", t), ("hair", h),
                         ("shoes", 1)):
        layer = _sheet(folder, name)[row * 64:(row + 1) * 64, col * 64:(col + 1) * 64]
        alpha = layer[..., 3:] / 255
        canvas = layer[..., :3] * alpha + canvas * (1 - alpha)
    return np.rint(canvas).astype(np.uint8)


@pytest.mark.parametrize(("split_name", "index", "action", "direction", "frame"), [
    ("train", 0, "walk", "front", 0),  # first clip of the set: frame 0 is cell 131 + 7
    ("test", 5, "slash", "right", 6),  # slash repeats offset 4 at frame 6
    ("test", 295, "spellcard", "left", 7),  # last test character
])
def test_exact_pixels_of_known_clips(train, test, split_name, index, action, direction, frame):
    split = train if split_name == "train" else test
    motion = 3 * ACTIONS.index(action) + DIRECTIONS.index(direction)
    clip = 9 * index + motion
    assert split.motion[clip] == motion
    cell = FIRST[(action, direction)] + OFFSETS[action][frame]
    expected = _composite_by_hand(int(split.character[clip]), cell)
    built = np.asarray(split.videos[clip, frame])
    assert expected.any(), "the cell should show a character"
    np.testing.assert_array_equal(built, expected)


def test_background_is_black(test):
    corners = np.asarray(test.videos[::37, :, 0, 0])  # (72, 8, 3): the top-left pixel
    assert corners.shape == (72, 8, 3) and not corners.any()


def test_load_rejects_unknown_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        sprites.load("validation")
