"""Domain statistics at export (export/domain.py) and the service's scores from them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from export.domain import ERROR_FACTOR, as_uploaded, domain_stats
from export.onnx_export import export_model
from service.engine.domain import code_verdicts, upload_verdicts
from service.engine.manifest import load_manifest
from service.engine.ops import Operations
from service.engine.runner import OnnxRunner
from tests.conftest import tiny_model
from tests.service.videos import encode, moving_square


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory):
    """A tiny model with domain statistics measured on a folder of 3 videos (6 clips)."""
    videos = tmp_path_factory.mktemp("videos")
    for seed in range(3):
        (videos / f"v{seed}.mp4").write_bytes(encode(moving_square(16, seed=seed), "mp4"))
    model = tiny_model()
    stats = domain_stats(model, f"folder:{videos}", clips=100, log=lambda _: None)
    out = tmp_path_factory.mktemp("model")
    export_model(model, out, name="tiny-folder", domain_stats=stats)
    return model, stats, load_manifest(out), videos


def test_statistics_describe_the_calibration_clips(folder_model):
    _, stats, manifest, _ = folder_model
    assert stats.clips == 6 and "folder:" in stats.source
    r = stats.reconstruction
    assert 0 < r.quantiles.q50 <= r.quantiles.q99 <= r.quantiles.q999 <= r.quantiles.max
    assert r.limit == pytest.approx(ERROR_FACTOR * r.quantiles.q999)
    assert r.test is None  # a folder has no test split
    assert len(stats.appearance.mean) == 32 and np.shape(stats.appearance.precision) == (32, 32)
    assert manifest.doc.domain_stats == stats  # written into the manifest and read back


def test_the_service_scores_clips_as_export_measured_them(folder_model):
    """The reconstruction errors the service computes with the ONNX graphs are the ones export
    measured with PyTorch (so the limit means the same thing), and clips far from the training
    folder score far above 1."""
    from export.domain import clip_statistics
    from model.data.folder import load_clips

    model, stats, manifest, videos = folder_model
    runner = OnnxRunner(manifest, ["CPUExecutionProvider"], 1)

    async def submit(graph, inputs):
        return runner.run(graph, inputs)

    ops = Operations(manifest, submit)
    clips = as_uploaded(np.array(load_clips(videos, progress=False)))  # as calibrated
    codes = asyncio.run(ops.encode(clips))
    expected, _ = clip_statistics(model, clips)
    np.testing.assert_allclose(codes.reconstruction_error, expected, rtol=1e-3, atol=1e-7)
    # the verdict is the error over the limit (an untrained tiny model cannot tell footage
    # apart: the separation is tested on the shipped model, tests/service/test_domain.py)
    limit = stats.reconstruction.limit
    mean = np.asarray(stats.appearance.mean)
    verdicts = upload_verdicts(stats, np.array([0.5 * limit, 2 * limit]), np.stack([mean, mean]))
    assert [v.domain for v in verdicts] == ["in", "out"]
    assert [v.score for v in verdicts] == pytest.approx([0.5, 2.0])
    assert [v.basis for v in verdicts] == ["reconstruction"] * 2
    far = upload_verdicts(stats, np.array([0.0]), mean[None] + 100.0)[0]  # the code is off
    assert far.domain == "out" and far.basis == "appearance code"
    # the calibration clips' own scores: at most their maximum over the 99.9% quantile
    scores = [v.score for v in code_verdicts(stats, codes.appearance_mean)]
    a = stats.appearance
    assert max(scores) <= a.quantiles.max / a.limit * (1 + 1e-4), scores


def test_without_statistics_there_is_no_score(tiny_model_dir):
    manifest = load_manifest(tiny_model_dir)
    assert manifest.doc.domain_stats is None
    runner = OnnxRunner(manifest, ["CPUExecutionProvider"], 1)

    async def submit(graph, inputs):
        return runner.run(graph, inputs)

    codes = asyncio.run(Operations(manifest, submit).encode(
        np.zeros((1, 8, 64, 64, 3), np.uint8)))
    assert codes.reconstruction_error is None
    assert upload_verdicts(None, np.zeros(1), np.zeros((1, 32))) == [None]
