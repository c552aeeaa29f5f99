"""The Moving MNIST digit judge: multiset scoring, learning a trivial case, the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import torch

from model import evaluate
from model.checkpoint import save_model
from model.data import moving_mnist
from tests.conftest import tiny_model


def test_digit_sets_are_unordered_and_duplicates_count():
    assert evaluate.digit_accuracy(np.array([[7, 3]]), np.array([[3, 7]])) == {
        "set": 1.0, "digit": 1.0}
    assert evaluate.digit_accuracy(np.array([[3, 3]]), np.array([[3, 7]])) == {
        "set": 0.0, "digit": 0.5}
    assert evaluate.digit_counts(np.array([[3, 3]]))[0, 3] == 2
    assert evaluate._multisets(2).shape == (55, 10)


def test_judge_shapes_and_predictions_in_range():
    torch.manual_seed(0)
    judge = evaluate.DigitJudge().eval()
    assert judge(torch.rand(2, 3, 3, 64, 64)).shape == (2, 10, 3)
    clips = moving_mnist.load("test", n=5, frames=2, cache=False, progress=False)
    pred = evaluate.predict_digits(judge, clips.videos, batch=2)
    assert pred.shape == (5, 2) and pred.dtype.kind == "i"
    assert ((0 <= pred) & (pred <= 9)).all() and (np.diff(pred, axis=1) >= 0).all()


def _zeros_and_ones(split: str, n: int):
    data = moving_mnist.load(split, n=n, frames=1, digits=1, cache=False, progress=False)
    keep = data.digits[:, 0] <= 1
    return data.videos[keep], data.digits[keep]


def test_judge_learns_zeros_from_ones():
    torch.manual_seed(0)
    videos, digits = _zeros_and_ones("train", 240)
    judge = evaluate.DigitJudge(evaluate.DigitJudgeConfig(width=8, feature=32, digits=1))
    evaluate.fit_digit_judge(judge, videos, digits, epochs=6, batch_size=8, lr=1e-2)
    test_videos, test_digits = _zeros_and_ones("test", 200)
    accuracy = evaluate.digit_accuracy(evaluate.predict_digits(judge, test_videos), test_digits)
    assert accuracy["set"] > 0.8  # chance among the ten classes is 0.1, between the two 0.5


def test_train_and_run_commands_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIS_CACHE", str(tmp_path / "cache"))
    judge_path = tmp_path / "judge.safetensors"
    evaluate.main(["train-mmnist-judge", "--out", str(judge_path), "--steps", "2",
                   "--n-test", "8"])
    judge, meta = evaluate.load_digit_judge(judge_path)
    assert meta["kind"] == "mmnist" and judge.cfg.digits == 2 and meta["steps"] == 2
    assert set(meta["test_accuracy"]) == {"set", "digit", "per_class"}
    accuracy = meta["test_accuracy"]
    assert all(0.0 <= v <= 1.0 for v in [accuracy["set"], accuracy["digit"],
                                         *accuracy["per_class"]])
    assert len(accuracy["per_class"]) == 10
    # a warm restart with the extra digits: the file keeps both schedules
    continued = tmp_path / "judge-2.safetensors"
    evaluate.main(["train-mmnist-judge", "--init-from", str(judge_path), "--out", str(continued),
                   "--steps", "2", "--n-test", "8", "--lr", "5e-4", "--seed", "2",
                   "--extra-digits"])
    _, meta2 = evaluate.load_digit_judge(continued)
    assert meta2["lr"] == 5e-4 and meta2["seed"] == 2
    assert meta2["train_digits"].endswith(moving_mnist.EXTRA_DIGITS)
    assert meta2["continued_from"]["steps"] == 2
    assert meta2["continued_from"]["test_accuracy"] == meta["test_accuracy"]
    model_path = tmp_path / "model.safetensors"
    save_model(tiny_model(), model_path, {"dataset": "mmnist", "epochs": 1})
    out = tmp_path / "eval"
    evaluate.main(["run-mmnist", "--model", str(model_path), "--judge", str(judge_path),
                   "--out", str(out), "--n", "6", "--seeds", "2"])
    results = json.loads((out / "results.json").read_text())
    assert results["clips"] == 6 and len(results["runs"]) == 2
    assert results["judge"]["kind"] == "mmnist"
    summary = results["summary"]
    for key in ("b_acc", "b_set", "c_acc", "c_set", "c_leak"):
        assert 0.0 <= summary[key]["mean"] <= 1.0
    assert 1.0 <= summary["b_is"]["mean"] <= 10.0
    assert 0.0 <= summary["b_h_y"]["mean"] <= np.log(10) + 1e-9
    assert summary["c_centroid_px_to_b"]["mean"] >= 0.0
    assert (out / "mmnist-swaps.png").stat().st_size > 0
    assert (out / "judge-misses.png").stat().st_size > 0
    table = (out / "table.md").read_text()
    assert "digits of A" in table and "S3VAE (published) | 95.09%" in table


def test_judge_misses_name_each_missed_image_and_how_often():
    digits = np.array([[3, 3], [1, 7], [3, 5], [1, 7], [7, 9]])
    source = np.array([[10, 11], [20, 21], [10, 30], [20, 21], [21, 40]])
    pred = np.array([[3, 8], [1, 1], [2, 5], [1, 7], [1, 9]])
    # clip 0 kept one 3 (its first), so image 11 is the missed 3; image 21 (a 7) read as a 1 in
    # clips 1 and 4, so it comes first; image 10 (a 3) missed in clip 2
    assert evaluate.judge_misses(pred, digits, source) == [(21, 7, 2), (10, 3, 1), (11, 3, 1)]
    assert evaluate.judge_misses(digits, digits, source) == []


def test_jittered_frames_without_jitter_are_the_clips_rendering():
    images, _ = moving_mnist.read_mnist()
    pool = torch.from_numpy(images[:50].astype(np.float32) / 255)
    frames, pick = moving_mnist.jittered_frames(pool, 3, 2, torch.Generator().manual_seed(0),
                                                rotate=0, scale=(1, 1), shear=0, elastic=0)
    assert frames.shape == (3, 64, 64) and pick.shape == (3, 2)
    # each digit sits whole at an integer corner: the frame holds the pair's pixels exactly
    for frame, digits in zip(frames.numpy(), pick.numpy(), strict=True):
        assert abs(frame.max() - pool[digits].max().item()) < 1e-5
        assert frame.sum() <= pool[digits].sum().item() + 1e-3  # overlaps combine by max
    jittered, _ = moving_mnist.jittered_frames(pool, 3, 2, torch.Generator().manual_seed(0))
    assert not torch.allclose(jittered, frames)


def test_metrics_of_a_sure_judge_on_balanced_digits():
    digits = np.array([[c, (c + 1) % 10] for c in range(10)])  # every class twice
    digits.sort(axis=1)
    probs = np.eye(10)[digits]  # (10, 2, 10): each digit's class for sure
    m = evaluate.mmnist_metrics(probs, digits)
    assert m["acc"] == 1.0 and abs(m["is"] - 10) < 1e-6
    assert abs(m["h_y"] - np.log(10)) < 1e-6 and m["h_yx"] < 1e-9
    judge = evaluate.DigitJudge(evaluate.MMNIST_JUDGE).eval()
    pred, p = evaluate.judge_digits(judge, torch.rand(2, 3, 3, 64, 64))
    assert pred.shape == (2, 2) and p.shape == (2, 2, 10)
    assert np.allclose(p.sum(-1), 1.0)
