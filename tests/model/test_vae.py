"""The graph: shapes for any T, both architectures and posteriors, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from model.checkpoint import load_model, save_model
from model.config import ModelConfig
from model.vae import SequentialVAE
from tests.conftest import colour_table, tiny_model

CONFIGS = [
    {"arch": "dsvae", "posterior": "factorised"},
    {"arch": "dsvae", "posterior": "full"},
    {"arch": "unordered", "posterior": "factorised"},
    {"arch": "dsvae", "posterior": "factorised", "appearance_encoder": "conv"},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['arch']}-{c['posterior']}"
                         f"-{c.get('appearance_encoder', 'patches')}")
@pytest.mark.parametrize("frames", [1, 8, 20])
def test_encode_swap_generate_shapes(config, frames):
    model = tiny_model(**config)
    c = model.cfg
    video = torch.rand(3, frames, 3, 64, 64)
    with torch.no_grad():
        f_mean, f_logvar, z_mean, z_logvar = model.encode(video)
        assert f_mean.shape == f_logvar.shape == (3, c.appearance_dim)
        assert z_mean.shape == z_logvar.shape == (3, frames, c.motion_dim)
        swap = model.decode(f_mean, z_mean.roll(1, 0))
        assert swap.shape == (3, frames, 3, 64, 64)
        assert 0.0 <= float(swap.min()) and float(swap.max()) <= 1.0
        motion = model.sample_motion(f_mean, torch.randn(3, frames, c.motion_dim))
        assert motion.shape == (3, frames, c.motion_dim)
        generated = model.decode(f_mean, motion)
        assert generated.shape == (3, frames, 3, 64, 64)


@pytest.mark.parametrize("encoder", ["patches", "conv"])
def test_appearance_code_ignores_frame_order(encoder):
    """f is pooled over frames, so shuffling them must not change it."""
    model = tiny_model(appearance_encoder=encoder)
    video = torch.rand(2, 8, 3, 64, 64)
    with torch.no_grad():
        f, _ = model.encode_appearance(video)
        f_shuffled, _ = model.encode_appearance(video[:, torch.randperm(8)])
    torch.testing.assert_close(f, f_shuffled, atol=1e-5, rtol=1e-5)


def test_recurrent_prior_sample_matches_its_density():
    """The roll-out feeds z_t back: its means equal the teacher-forced prior on its own codes."""
    model = tiny_model()
    f = torch.randn(2, model.cfg.appearance_dim)
    with torch.no_grad():
        z = model.sample_motion(f, torch.zeros(2, 6, model.cfg.motion_dim))  # noise 0: the means
        mean, _ = model.prior(z, f)
    torch.testing.assert_close(z, mean, atol=1e-5, rtol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    model = tiny_model(seed=3, posterior="full")
    path = tmp_path / "model.safetensors"
    save_model(model, path, {"dataset": "sprites", "epochs": 1})
    loaded, meta = load_model(path)
    assert loaded.cfg == model.cfg
    assert meta == {"dataset": "sprites", "epochs": 1}
    video = torch.rand(2, 8, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.encode(video), loaded.encode(video), strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("film", [True, False])
def test_a_file_from_before_the_film_option_loads_with_its_layout(tmp_path, film):
    import json

    from safetensors.torch import load_file, save_file

    model = tiny_model(seed=4, decoder_film=film)
    path = tmp_path / "model.safetensors"
    save_model(model, path)
    config = model.cfg.to_dict()
    del config["decoder_film"]  # as written by older code
    save_file(load_file(str(path)), str(path), metadata={"config": json.dumps(config)})
    loaded, _ = load_model(path)
    assert loaded.cfg.decoder_film is film
    f, z = torch.randn(2, model.cfg.appearance_dim), torch.randn(2, 3, model.cfg.motion_dim)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(f, z), model.decode(f, z))


def test_film_lets_the_appearance_code_scale_decoder_channels():
    model = tiny_model(seed=5)
    f, z = torch.randn(2, model.cfg.appearance_dim), torch.randn(2, 3, model.cfg.motion_dim)
    with torch.no_grad():
        plain = model.decode(f, z)  # FiLM starts at zero: the plain decoder
        torch.nn.init.normal_(model.decoder.film.weight)
        modulated = model.decode(f, z)
        assert float((plain - modulated).abs().max()) > 1e-3


def test_a_file_without_config_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match="not a vdis model"):
        load_model(path)


def test_a_file_from_before_the_silhouette_palette_and_bands_loads_with_its_layout(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    old = {"motion_view": "rgb", "decoder_palette": 0, "appearance_bands": 1,
           "appearance_patch": 2}
    model = tiny_model(seed=6, **old)
    path = tmp_path / "model.safetensors"
    save_model(model, path)
    config = {k: v for k, v in model.cfg.to_dict().items() if k not in old}
    save_file(load_file(str(path)), str(path), metadata={"config": json.dumps(config)})
    loaded, _ = load_model(path)
    assert {k: getattr(loaded.cfg, k) for k in old} == old
    video = torch.rand(2, 3, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.encode(video), loaded.encode(video), strict=True):
            torch.testing.assert_close(a, b)


def test_motion_codes_do_not_see_colours():
    """The silhouette view: recolouring a character (same shape) leaves z as it was."""
    model = tiny_model(seed=7)
    video = torch.zeros(2, 4, 3, 64, 64)
    video[:, :, :, 16:48, 20:40] = torch.rand(2, 4, 3, 32, 20) * 0.8 + 0.1  # a figure on black
    recoloured = video[:, :, [2, 0, 1]] * 0.9  # other colours, the same figure
    f = torch.zeros(2, model.cfg.appearance_dim)
    with torch.no_grad():
        z, _ = model.encode_motion(video, f)
        z_recoloured, _ = model.encode_motion(recoloured, f)
        f_mean, _ = model.encode_appearance(video)
        f_recoloured, _ = model.encode_appearance(recoloured)
    torch.testing.assert_close(z, z_recoloured)
    assert float((f_mean - f_recoloured).abs().max()) > 1e-4  # f does see the colours


def test_palette_decoder_paints_mixtures_of_the_colours_f_sets():
    model = tiny_model(seed=8)
    f, z = torch.randn(2, model.cfg.appearance_dim), torch.randn(2, 3, model.cfg.motion_dim)
    with torch.no_grad():
        frames = model.decode(f, z)  # (2, 3, 3, 64, 64)
        colours = model.decoder.palette(f).unflatten(1, (model.cfg.decoder_palette, 3))
        other_motion = model.decode(f, torch.randn_like(z))
    low = colours.amin(1)[:, None, :, None, None]  # (2, 1, 3, 1, 1)
    high = colours.amax(1)[:, None, :, None, None]
    assert bool(((frames >= low - 1e-6) & (frames <= high + 1e-6)).all())
    assert float((frames - other_motion).abs().max()) > 1e-6  # z moves the colours around


def test_spelled_out_softmax_is_torch_softmax_even_for_large_logits():
    from model.vae import softmax_over_channels

    x = torch.randn(3, 16, 5, 7) * torch.tensor([1.0, 50.0, 500.0])[:, None, None, None]
    assert torch.allclose(softmax_over_channels(x), x.softmax(1), atol=1e-6)
    assert torch.isfinite(softmax_over_channels(x)).all()


def test_widening_the_palette_keeps_what_the_decoder_draws():
    from model.vae import widen_palette

    model = tiny_model(seed=9)
    f, z = torch.randn(3, model.cfg.appearance_dim), torch.randn(3, 4, model.cfg.motion_dim)
    with torch.no_grad():
        before = model.decode(f, z)
        widen_palette(model, 40, noise=0.0)  # 16 -> 40: 2.5 copies of each colour
        exact = model.decode(f, z)
        assert model.cfg.decoder_palette == 40 and model.decoder.out.out_channels == 40
        assert model.decoder.palette(f).shape == (3, 40 * 3)
        torch.testing.assert_close(exact, before, atol=1e-6, rtol=0)
        nudged = tiny_model(seed=9)
        widen_palette(nudged, 40)  # with the default noise on the copies' colours
        drift = float((nudged.decode(f, z) - before).abs().max())
    assert 0 < drift < 1e-2
    with pytest.raises(ValueError, match="can only widen"):
        widen_palette(model, 8)


def test_the_exact_colour_likelihood_is_the_mixture_over_entries_at_every_pixel():
    """-log sum_k p_k q_k(c) with p the pixel's entry softmax and q_k entry k's colour softmax
    (from f alone); in eval mode a pixel shows its likeliest entry's likeliest colour."""
    torch.manual_seed(0)
    model = SequentialVAE(ModelConfig(width=8, hidden=32, appearance_width=16, decoder_palette=5,
                                      decoder_colours=7)).eval()
    dec = model.decoder
    dec.colour_table.copy_(colour_table(7))
    torch.nn.init.normal_(dec.out.weight, std=0.5)
    f, z = torch.randn(2, 32), torch.randn(2, 3, 8)
    target_index = torch.randint(0, 7, (2, 3, 64, 64))
    target = dec.colour_table[target_index].movedim(-1, 2)  # (B, T, 3, H, W)
    assert torch.equal(dec.colour_index(target), target_index)
    nll = dec.exact_colour_nll(f, z, target)
    logits, per_frame = dec._entry_logits(f, z)  # (B*T, K, H, W)
    p = logits.softmax(1)
    q = dec.colour_logits(f, per_frame).softmax(-1)  # (B*T, K, C)
    b, t, y, x = 1, 2, 10, 33
    n, c = b * 3 + t, int(target_index[b, t, y, x])
    by_hand = -torch.log((p[n, :, y, x] * q[n, :, c]).sum())
    assert torch.allclose(nll[b, t, y, x], by_hand, atol=1e-5)
    frames = model.decode(f, z)
    entry = int(p[n, :, y, x].argmax())
    assert torch.equal(frames[b, t, :, y, x], dec.colour_table[int(q[n, entry].argmax())])
    model.train()  # in training, the expected colour: differentiable, inside the table's hull
    soft = model.decode(f, z)
    assert soft.shape == frames.shape and float(soft.min()) >= 0 and float(soft.max()) <= 1
