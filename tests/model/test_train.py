"""Training: a few steps lower the loss on real Sprites clips; the command runs end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
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
                      loss=LossConfig(kl_warmup_steps=0, swap_cycle=30.0,  # these four are
                                      prior_moments=1.0, aggregate_prior=1.0,  # off by default
                                      palette_spread=1.0))
    model = SequentialVAE(cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    history = []
    bank = losses.AggregateBank(cfg.loss.aggregate_bank)
    for _ in range(12):
        terms = train.compute_losses(model, video, train.colour_augment(video, gen), flow, cfg, 1.0,
                                     bank)
        assert set(terms) >= {"recon", "kl_f", "kl_z", "triplet", "cycle", "moments", "aggregate",
                              "spread", "flow", "mi", "loss"}
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


def test_the_sprites_recipe_sets_every_option_and_flags_still_win(tmp_path):
    cfg, _ = train.parse_args(["--recipe", "sprites"])
    assert cfg.recipe == "sprites" and cfg.init_from == ""
    assert cfg.model.decoder_palette == 48 and cfg.exact_colours
    assert cfg.loss.aggregate_prior == 5.0 and cfg.loss.prior_warmup_steps == 5000
    assert cfg.loss.palette_spread == 0.0 and cfg.max_minutes == 120
    cfg, _ = train.parse_args(["--recipe", "sprites", "--max-minutes", "5", "--palette", "16"])
    assert cfg.max_minutes == 5 and cfg.model.decoder_palette == 16
    bad = tmp_path / "bad.toml"
    bad.write_text("palette = 48\naggregate_prior_weight = 3\n")  # a misspelt weight
    with pytest.raises(SystemExit):
        train.parse_args(["--recipe", str(bad)])
    with pytest.raises(SystemExit):
        train.parse_args(["--recipe", "no-such-recipe"])


def test_a_recipe_run_records_its_recipe_and_no_lineage(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text("subset = 32\nepochs = 1\nbatch_size = 16\nwidth = 8\nhidden = 32\n"
                      "palette = 8\npalette_spread = 1.0\naggregate_prior = 1.0\n")
    path = train.main(["--recipe", str(recipe), "--out", str(tmp_path / "run"), "--no-bf16"])
    model, meta = load_model(path)
    assert model.cfg.decoder_palette == 8 and meta["started_from"] == {}
    assert meta["train_config"]["recipe"] == str(recipe)
    assert meta["train_config"]["loss"]["palette_spread"] == 1.0


def test_palette_spread_is_the_gap_between_expected_and_mixed_error():
    torch.manual_seed(0)
    model = SequentialVAE(ModelConfig(width=8, hidden=32, appearance_width=16, decoder_palette=6))
    model.eval()
    f, z = torch.randn(2, 32), torch.randn(2, 3, 8)
    frames, spread = model.decoder(f, z, with_spread=True)
    assert spread.shape == (2, 3, 64, 64) and float(spread.min()) >= 0
    assert torch.allclose(frames, model.decode(f, z))
    # recompute by hand at one pixel: sum_k p_k |c_k - mix|^2
    dec = model.decoder
    colours = dec.palette(f).unflatten(1, (6, 3))  # (B, K, 3)
    h = dec.fc(torch.cat([f[:, None].expand(-1, 3, -1), z], -1).flatten(0, 1))
    h = h.unflatten(1, (8 * dec.w, 4, 4))
    start = 0
    film = dec.film(f).repeat_interleave(3, 0)
    for up in dec.ups:
        h = up(h)
        c = h.shape[1]
        h = dec.act(h * (1 + film[:, start:start + c, None, None])
                    + film[:, start + c:start + 2 * c, None, None])
        start += 2 * c
    p = dec.out(h).softmax(1)[:, :, 10, 20].unflatten(0, (2, 3))  # (B, T, K)
    mix = frames[:, :, :, 10, 20]
    by_hand = (p[..., None] * (colours[:, None] - mix[..., None, :]) ** 2).sum((-1, -2))
    assert torch.allclose(spread[:, :, 10, 20], by_hand, atol=1e-5)


def test_prior_scale_weighs_the_prior_terms_apart_from_the_kl():
    torch.manual_seed(0)
    clips = np.asarray(sprites.load("train", progress=False).videos[:4])
    video = train.to_tensor(clips)
    cfg = TrainConfig(model=ModelConfig(width=8, hidden=32, appearance_width=16),
                      loss=LossConfig(aggregate_prior=10.0, dynamic_prediction=0.0))
    model = SequentialVAE(cfg.model)
    model.eval()  # the same frames and codes in every call below

    def total(prior_scale):
        torch.manual_seed(1)
        return train.compute_losses(model, video, video, None, cfg, 0.5, None, prior_scale)
    off, on = total(0.0), total(1.0)
    assert torch.allclose(on["loss"] - off["loss"], 10.0 * on["aggregate"], atol=0.02)
    assert torch.allclose(total(None)["loss"] - off["loss"], 5.0 * on["aggregate"], atol=0.02)


def test_the_shipped_recipes_parse_and_the_unordered_one_differs_only_where_it_must():
    from model.train import RECIPES, parse_args

    configs = {p.stem: parse_args(["--recipe", p.stem])[0] for p in RECIPES.glob("*.toml")}
    assert {"sprites", "sprites-unordered", "mmnist"} <= set(configs)
    mmnist = configs["mmnist"]
    assert mmnist.dataset == "mmnist" and mmnist.model.appearance_encoder == "conv"
    recurrent, unordered = configs["sprites"].to_dict(), configs["sprites-unordered"].to_dict()
    assert unordered["model"].pop("arch") == "unordered"
    assert recurrent["model"].pop("arch") == "dsvae"
    differ = {k for k in recurrent if recurrent[k] != unordered[k]}
    # the unordered model was trained on the recipe before exact colours (RGB palette, its
    # spread term, the earlier aggregate-prior ramp): the graph and every other option agree
    assert differ == {"max_minutes", "recipe", "exact_colours", "loss"}
    loss_differ = {k for k in recurrent["loss"]
                   if recurrent["loss"][k] != unordered["loss"][k]}
    assert loss_differ == {"aggregate_prior", "prior_warmup_steps", "palette_spread"}


def test_exact_colours_train_and_travel_with_the_checkpoint(tmp_path):
    """--exact-colours: the table is every colour of the training clips; a few steps lower the
    likelihood term; the model reloads with its table and draws only those colours."""
    clips = np.asarray(sprites.load("train", progress=False).videos[:32])
    table = train.exact_colour_table(clips)
    keys = (np.round(table * 255).astype(np.int64) * [65536, 256, 1]).sum(1)
    flat = clips.reshape(-1, 3).astype(np.int64)
    assert np.array_equal(keys, np.unique(flat[:, 0] * 65536 + flat[:, 1] * 256 + flat[:, 2]))
    path = train.main(["--subset", "32", "--epochs", "3", "--batch-size", "16", "--width", "8",
                       "--hidden", "32", "--palette", "8", "--exact-colours", "--no-bf16",
                       "--out", str(tmp_path / "run")])
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["recon"] < history[0]["recon"]
    model, meta = load_model(path)
    assert model.cfg.decoder_colours == len(table) and meta["train_config"]["exact_colours"]
    assert torch.equal(model.decoder.colour_table, torch.from_numpy(table))
    with torch.no_grad():
        f, _, z, _ = model.encode(train.to_tensor(clips[:4]))
        drawn = model.decode(f, z).permute(0, 1, 3, 4, 2).reshape(-1, 3)
    assert torch.isin(model.decoder.colour_index(drawn.T[:, :, None]).flatten(),
                      torch.arange(len(table))).all()
    assert (drawn[:, None] == model.decoder.colour_table[None]).all(-1).any(1).all()


def test_too_many_colours_for_exact_colours_is_refused_with_what_to_do():
    clips = np.random.default_rng(0).integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(SystemExit, match="leave it off"):
        train.exact_colour_table(clips)
