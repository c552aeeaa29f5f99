"""Stochastic Moving MNIST: determinism, the digit split, bouncing, labels against pixels."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from model.data import moving_mnist
from model.data.paths import ASSETS


@pytest.fixture(scope="module")
def mnist():
    """The shipped digits read here with the fixed IDX header sizes (16 and 8 bytes)."""
    folder = ASSETS / "mnist"
    images = np.frombuffer(gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes()),
                           np.uint8, offset=16).reshape(10000, 28, 28)
    classes = np.frombuffer(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()),
                            np.uint8, offset=8)
    return images, classes


FIELDS = ("videos", "digits", "source", "positions", "velocities")


def _equal(a: moving_mnist.MovingMnistSplit, b: moving_mnist.MovingMnistSplit) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


@pytest.mark.parametrize(("frames", "digits"), [(8, 2), (15, 1), (20, 2)])
def test_shapes(frames, digits):
    data = moving_mnist.generate("train", 6, frames=frames, digits=digits)
    assert len(data) == 6
    assert data.videos.shape == (6, frames, 64, 64, 3) and data.videos.dtype == np.uint8
    assert data.digits.shape == data.source.shape == (6, digits)
    assert data.positions.shape == data.velocities.shape == (6, frames, digits, 2)
    # Grey replicated to 3 channels.
    np.testing.assert_array_equal(data.videos[..., 0], data.videos[..., 2])


def test_deterministic_given_a_seed():
    seven = moving_mnist.generate("test", 10, seed=7)
    assert _equal(seven, moving_mnist.generate("test", 10, seed=7))
    assert not _equal(seven, moving_mnist.generate("test", 10, seed=8))
    # Clip i depends on (seed, i) only: a small set is a prefix of a large one.
    small, large = moving_mnist.generate("train", 4), moving_mnist.generate("train", 12)
    assert _equal(small, moving_mnist.MovingMnistSplit(*(getattr(large, f)[:4] for f in FIELDS)))


def test_digit_split(mnist):
    train = moving_mnist.generate("train", 300, frames=1)
    test = moving_mnist.generate("test", 300, frames=1)
    assert train.source.min() >= 0 and train.source.max() <= 7999
    assert test.source.min() >= 8000 and test.source.max() <= 9999
    # Digit labels are the MNIST classes of the images used.
    np.testing.assert_array_equal(train.digits, mnist[1][train.source])
    np.testing.assert_array_equal(test.digits, mnist[1][test.source])
    assert set(train.digits.ravel()) == set(range(10))


def test_bouncing_keeps_digits_inside():
    data = moving_mnist.generate("train", 50, frames=30)
    p, v = data.positions, data.velocities
    assert p.min() >= 0 and p.max() <= 64 - 28
    assert np.all(np.abs(v) >= 1) and np.all(np.abs(v) <= 4)
    # Each step moves by the velocity, stopped at the border.
    np.testing.assert_array_equal(p[:, 1:], np.clip(p[:, :-1] + v[:, :-1], 0, 36))
    # Over 30 frames digits do hit borders: velocities flip sign there, pointing back inside.
    flips = np.sign(v[:, 1:]) != np.sign(v[:, :-1])
    assert flips.any()
    at_low = p[:, 1:] == 0
    at_high = p[:, 1:] == 36
    assert np.all(v[:, 1:][flips & at_low] > 0) and np.all(v[:, 1:][flips & at_high] < 0)
    # Nothing is drawn outside the frame, so no ink is lost: each frame holds every digit's ink.
    one = moving_mnist.generate("train", 20, frames=30, digits=1)
    ink = one.videos[..., 0].astype(int).sum(axis=(2, 3))  # (N, T)
    np.testing.assert_array_equal(ink, ink[:, :1].repeat(30, axis=1))


def test_labels_match_pixels(mnist):
    images = mnist[0]
    data = moving_mnist.generate("test", 10, frames=12, digits=2)
    for i in range(10):
        for t in range(12):
            expected = np.zeros((64, 64), np.uint8)
            for d in range(2):
                x, y = data.positions[i, t, d]
                box = expected[y:y + 28, x:x + 28]  # positions are (x, y) of the top-left
                np.maximum(box, images[data.source[i, d]], out=box)
            np.testing.assert_array_equal(data.videos[i, t, :, :, 1], expected)


def test_load_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIS_CACHE", str(tmp_path))
    first = moving_mnist.load("test", n=5, frames=9, digits=1, progress=False)
    folder = moving_mnist.cache_path("test", 5, 9, 1, moving_mnist.DEFAULT_SEED["test"])
    assert (folder / "meta.json").exists() and folder.parent == tmp_path
    again = moving_mnist.load("test", n=5, frames=9, digits=1, progress=False)
    assert _equal(first, again)
    assert _equal(first, moving_mnist.generate("test", 5, frames=9, digits=1))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        moving_mnist.generate("val", 3)
    with pytest.raises(ValueError, match="digits 1 or 2"):
        moving_mnist.generate("train", 3, digits=3)


def test_the_extra_judge_digits_are_new_handwriting_and_none_is_a_test_image():
    images, classes = moving_mnist.read_mnist()
    more, more_classes = moving_mnist.extra_training_digits()
    assert more.shape == (5000, 28, 28) and more.dtype == np.uint8
    assert np.bincount(more_classes, minlength=10).tolist() == [500] * 10
    shipped = {image.tobytes() for image in images}  # test split and judge training digits
    assert not any(image.tobytes() in shipped for image in more)
