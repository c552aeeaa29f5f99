"""Training: a few steps lower the loss on real Sprites clips; the command runs end to end."""

from __future__ import annotations

import json

import numpy as np
import torch

from model import losses, train
from model.checkpoint import load_model
from model.config import LossConfig, ModelConfig, TrainConfig
from model.data import sprites
from model.data.flow import flow_labels_for
from model.vae import SequentialVAE


def test_a_few_steps_lower_the_loss_with_every_term_on():
    torch.manual_seed(0)
    clips = np.asarray(sprites.load("train", progress=False).videos[:8])
    video = train.to_tensor(clips)
    flow = torch.from_numpy(flow_labels_for(clips, progress=False))
    cfg = TrainConfig(model=ModelConfig(width=8, hidden=32, appearance_width=16),
                      loss=LossConfig(kl_warmup_steps=0, swap_cycle=30.0,  # these three are
                                      prior_moments=1.0, aggregate_prior=1.0))  # off by default
    model = SequentialVAE(cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    history = []
    bank = losses.AggregateBank(cfg.loss.aggregate_bank)
    for _ in range(12):
        terms = train.compute_losses(model, video, train.colour_augment(video, gen), flow, cfg, 1.0,
                                     bank)
        assert set(terms) >= {"recon", "kl_f", "kl_z", "triplet", "cycle", "moments", "aggregate",
                              "flow", "mi", "loss"}
        assert all(torch.isfinite(v) for v in terms.values())
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        history.append(float(terms["loss"]))
    assert history[-1] < 0.7 * history[0]
    assert len(bank.mean) == 12 * 8  # the bank kept every step's clips (fewer than its size)


def test_colour_augment_keeps_shapes_and_range():
    video = torch.rand(4, 3, 3, 8, 8)
    out = train.colour_augment(video, torch.Generator().manual_seed(1))
    assert out.shape == video.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    # a channel permutation and gains: where the clip is black it stays black
    black = torch.zeros_like(video)
    assert float(train.colour_augment(black, torch.Generator()).abs().max()) == 0.0


def test_colour_augment_share_recolours_that_share_of_clips():
    video = torch.rand(400, 1, 3, 2, 2)
    out = train.colour_augment(video, torch.Generator().manual_seed(2), share=0.7)
    untouched = (out == video).flatten(1).all(1).float().mean()
    assert 0.2 < float(untouched) < 0.4  # 30% kept as they are
    assert torch.equal(train.colour_augment(video, torch.Generator(), share=0.0), video)


def test_train_command_writes_checkpoint_curves_and_images(tmp_path):
    out = tmp_path / "run"
    path = train.main(["--subset", "32", "--epochs", "2", "--batch-size", "16", "--width", "8",
                       "--hidden", "32", "--out", str(out), "--no-bf16"])
    for name in ("model.safetensors", "last.pt", "curves.png", "recon.png", "swaps.png",
                 "log.csv", "history.json", "config.json"):
        assert (out / name).exists(), name
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    model, meta = load_model(path)
    assert model.cfg.width == 8 and meta["epochs"] == 2 and meta["dataset"] == "sprites"
    # --resume continues from the last epoch instead of starting again
    train.main(["--subset", "32", "--epochs", "3", "--batch-size", "16", "--width", "8",
                "--hidden", "32", "--out", str(out), "--no-bf16", "--resume"])
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_init_from_fine_tunes_a_model_file_with_its_config(tmp_path):
    first = train.main(["--subset", "32", "--epochs", "1", "--batch-size", "16", "--width", "8",
                        "--hidden", "32", "--out", str(tmp_path / "a"), "--no-bf16"])
    start, _ = load_model(first)
    # the width given here is ignored: the graph is the starting model's
    tuned = train.main(["--subset", "32", "--epochs", "1", "--batch-size", "16",
                        "--out", str(tmp_path / "b"), "--no-bf16", "--lr", "0",
                        "--init-from", str(first)])
    model, meta = load_model(tuned)
    assert model.cfg == start.cfg and model.cfg.width == 8
    assert meta["started_from"]["epochs"] == 1 and meta["train_config"]["init_from"] == str(first)
    # learning rate 0: the weights are the starting model's, not a fresh initialisation
    # (the batch-norm statistics, buffers, still move)
    tuned_params = dict(model.named_parameters())
    for name, value in start.named_parameters():
        assert torch.equal(value, tuned_params[name]), name


def test_init_from_with_a_larger_palette_widens_the_starting_model(tmp_path):
    first = train.main(["--subset", "32", "--epochs", "1", "--batch-size", "16", "--width", "8",
                        "--hidden", "32", "--out", str(tmp_path / "a"), "--no-bf16"])
    start, _ = load_model(first)
    tuned = train.main(["--subset", "32", "--epochs", "1", "--batch-size", "16", "--palette", "24",
                        "--out", str(tmp_path / "b"), "--no-bf16", "--init-from", str(first)])
    model, _ = load_model(tuned)
    assert start.cfg.decoder_palette == 16 and model.cfg.decoder_palette == 24
    written = json.loads((tmp_path / "b" / "config.json").read_text())
    assert written["model"]["decoder_palette"] == 24
    # --resume rebuilds the widened graph before it loads the last checkpoint into it
    train.main(["--subset", "32", "--epochs", "2", "--batch-size", "16", "--palette", "24",
                "--out", str(tmp_path / "b"), "--no-bf16", "--init-from", str(first), "--resume"])
    assert load_model(tuned)[1]["epochs"] == 2
