"""Evaluation: the metrics on known cases, and the whole Sprites protocol on a tiny subset."""

from __future__ import annotations

import json
import math

import numpy as np

from model import evaluate
from model.data import sprites
from model.train import to_tensor
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


def test_layer_maps_mark_exactly_the_painted_pixels():
    test = sprites.load("test", progress=False)
    layers = sprites.layer_maps(test.character[:18], test.motion[:18])
    videos = np.asarray(test.videos[:18])
    assert layers.shape == videos.shape[:-1]
    assert np.array_equal(layers >= 0, videos.max(-1) > 0)  # the background is pure black
    assert set(np.unique(layers)) == {-1, 0, 1, 2, 3, 4}


def test_colour_fidelity_counts_pixels_within_the_tolerance_on_the_character_only():
    test = sprites.load("test", progress=False)
    videos = np.asarray(test.videos[:9])
    exact = to_tensor(videos)
    result = evaluate.colour_fidelity(exact, videos, test.character[:9], test.motion[:9])
    assert result["within_8"] == 1.0 and result["mean_abs_error"] == 0.0
    assert set(result["per_layer_within_8"]) == set(sprites.LAYER_NAMES)
    # every channel 9 levels off on the character: none within 8, all within 16; the
    # background is not counted, so making it white changes nothing
    layers = sprites.layer_maps(test.character[:9], test.motion[:9])
    off = videos.astype(np.int16) + 9 * (videos < 128) - 9 * (videos >= 128)
    off[layers < 0] = 255
    result = evaluate.colour_fidelity(to_tensor(off.astype(np.uint8)), videos,
                                      test.character[:9], test.motion[:9])
    assert result["within_8"] == 0.0 and result["within_16"] == 1.0
    assert abs(result["mean_abs_error"] - 9.0) < 1e-6
    # only the skin wrong: the other layers stay exact
    skin_off = videos.copy()
    skin_off[layers == 0] = 0
    result = evaluate.colour_fidelity(to_tensor(skin_off), videos, test.character[:9],
                                      test.motion[:9])
    assert result["per_layer_within_8"]["skin"] == 0.0
    assert result["per_layer_within_8"]["hair"] == 1.0


def test_the_shipped_judge_calls_close_tones_by_their_neighbour_class():
    judge = evaluate.load_judge("checkpoints/judge/sprites-judge.safetensors")
    assert evaluate.neighbour_classes(0) == [1, 0, 3, 2, 5, 4]  # skin: nearest mean colours
    for attribute in (0, 1):  # skin and trousers, whose classes have close tones
        called = evaluate.tone_check(judge, attribute, clips=40)["called_as_expected"]
        assert called["1.0"] == 1.0 and called["0.75"] >= 0.95 and called["0.25"] >= 0.95


def test_the_colour_oracle_names_the_class_whose_true_colours_are_nearest():
    test = sprites.load("test", progress=False)
    clips = sprites.AllClips()
    character, motion = test.character[:9], test.motion[:9]
    videos = np.asarray(test.videos[:9])
    verdict = evaluate.colour_oracle(to_tensor(videos), character, motion, clips)
    assert np.array_equal(verdict["body"], test.appearance[:9, 0])
    assert np.array_equal(verdict["bottom"], test.appearance[:9, 1])
    # the same clips drawn with the neighbouring skin class, 80% of the way: that class
    body, bottom, top, hair = sprites.character_attributes(int(character[0]))
    other = evaluate.neighbour_classes(0)[body]
    moved = clips.clips(np.array([sprites.character_id(other, bottom, top, hair)] * 9), motion)
    blend = to_tensor(videos) * 0.2 + to_tensor(moved) * 0.8
    verdict = evaluate.colour_oracle(blend, character, motion, clips)
    assert set(verdict["body"]) == {other} and np.array_equal(verdict["bottom"],
                                                              test.appearance[:9, 1])


def test_prior_motions_judges_the_samples_of_each_prior_against_the_real_clips(tmp_path):
    from model.checkpoint import save_model
    from tests.conftest import tiny_model

    paths = []
    for arch in ("dsvae", "unordered"):
        paths += ["--model", str(tmp_path / f"{arch}.safetensors")]
        save_model(tiny_model(arch=arch), tmp_path / f"{arch}.safetensors", {"dataset": "sprites"})
    out = tmp_path / "prior.json"
    evaluate.main(["prior", *paths, "--n", "9", "--seeds", "2", "--out", str(out)])
    figures = json.loads(out.read_text())
    assert len(figures) == 2
    for result in figures.values():
        assert result["clips"] == 9 and set(result["prior"]) == {"is", "h_yx", "h_y",
                                                                   "frame_change"}
        assert 1.0 <= result["prior"]["is"]["mean"] <= 9.0
        assert result["real"]["frame_change"] > 0.0  # real Sprites clips move
