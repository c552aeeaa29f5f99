"""Sample clips: Moving MNIST test clips as MP4s the service reads back, listed in index.json."""

from __future__ import annotations

import json

import numpy as np

from export import samples
from model.data import moving_mnist
from service import videoio


def test_mmnist_samples_are_the_test_clips_named_by_their_digits(tmp_path):
    samples.main(["--dataset", "mmnist", "--out", str(tmp_path), "--scale", "1"])
    listed = json.loads((tmp_path / "index.json").read_text())
    test = moving_mnist.load("test", n=samples.MMNIST_SAMPLES, cache=False, progress=False)
    assert [entry["digits"] for entry in listed] == test.digits.tolist()
    first = listed[0]
    assert first["file"] == f"mmnist-1-digits-{test.digits[0, 0]}-{test.digits[0, 1]}.mp4"
    clip = videoio.read_video((tmp_path / first["file"]).read_bytes(), 8).frames
    assert clip.shape == (8, 64, 64, 3)
    # lossy MP4: the digits come back where they were, within a few grey levels on average
    assert np.abs(clip.astype(int) - test.videos[0].astype(int)).mean() < 8
