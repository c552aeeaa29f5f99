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
    evaluate.main(["train-mmnist-judge", "--out", str(judge_path), "--n", "16", "--epochs", "1",
                   "--n-test", "8"])
    judge, meta = evaluate.load_digit_judge(judge_path)
    assert meta["kind"] == "mmnist" and judge.cfg.digits == 2
    assert set(meta["test_accuracy"]) == {"set", "digit"}
    assert all(0.0 <= v <= 1.0 for v in meta["test_accuracy"].values())
    model_path = tmp_path / "model.safetensors"
    save_model(tiny_model(), model_path, {"dataset": "mmnist", "epochs": 1})
    out = tmp_path / "eval"
    evaluate.main(["run-mmnist", "--model", str(model_path), "--judge", str(judge_path),
                   "--out", str(out), "--n", "6", "--seeds", "2"])
    results = json.loads((out / "results.json").read_text())
    assert results["clips"] == 6 and len(results["runs"]) == 2
    assert results["judge"]["kind"] == "mmnist"
    for value in results["summary"].values():
        assert 0.0 <= value["mean"] <= 1.0
    assert (out / "mmnist-swaps.png").stat().st_size > 0
    assert "digits of A" in (out / "table.md").read_text()
