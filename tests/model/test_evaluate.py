"""Evaluation: the metrics on known cases, and the whole Sprites protocol on a tiny subset."""

from __future__ import annotations

import math

import numpy as np

from model import evaluate
from tests.conftest import tiny_model


def test_motion_metrics_on_known_cases():
    labels = np.arange(9).repeat(4)
    perfect = np.eye(9)[labels]
    m = evaluate.motion_metrics(perfect, labels)
    assert m["acc"] == 1.0
    assert math.isclose(m["is"], 9.0, rel_tol=1e-6)
    assert m["h_yx"] < 1e-6 and math.isclose(m["h_y"], math.log(9), rel_tol=1e-6)
    uniform = np.full((36, 9), 1 / 9)
    m = evaluate.motion_metrics(uniform, labels)
    assert math.isclose(m["is"], 1.0, rel_tol=1e-6)
    assert math.isclose(m["h_yx"], math.log(9), rel_tol=1e-6)


def test_judge_and_protocols_run_end_to_end_on_a_tiny_subset(tmp_path):
    judge_path = tmp_path / "judge.safetensors"
    accuracy = evaluate.train_judge(judge_path, epochs=1, batch_size=16, subset=32)
    assert set(accuracy) == {"motion", "body", "bottom", "top", "hair", "test_motion_metrics"}
    assert 1.0 - 1e-6 <= accuracy["test_motion_metrics"]["is"] <= 9.0 + 1e-6
    judge = evaluate.load_judge(judge_path)
    results = evaluate.evaluate(tiny_model(), judge, seeds=2, subset=18, images=tmp_path / "img")
    assert len(results["runs"]) == 2 and results["clips"] == 18
    summary = results["summary"]
    for key in ("a_acc", "b_body", "b_hair", "c_appearance", "c_motion"):
        assert 0.0 <= summary[key]["mean"] <= 1.0
    assert 1.0 - 1e-6 <= summary["a_is"]["mean"] <= 9.0 + 1e-6
    for name in ("motion-kept-appearance-sampled.png", "appearance-kept-motion-sampled.png",
                 "swaps.png"):
        assert (tmp_path / "img" / name).stat().st_size > 0
    table = evaluate.markdown_table(results)
    assert "| S3VAE | 99.49% | 8.637 |" in table and "vdis (ours)" in table
    assert f"*{results['real']['is']:.3f}*" in table  # the judge on the real clips
