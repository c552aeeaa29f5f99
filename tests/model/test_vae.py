"""The graph: shapes for any T, both architectures and posteriors, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from model.checkpoint import load_model, save_model
from tests.conftest import tiny_model

CONFIGS = [
    {"arch": "dsvae", "posterior": "factorised"},
    {"arch": "dsvae", "posterior": "full"},
    {"arch": "unordered", "posterior": "factorised"},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['arch']}-{c['posterior']}")
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


def test_appearance_code_ignores_frame_order():
    """f is pooled over frames, so shuffling them must not change it."""
    model = tiny_model()
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


def test_a_file_without_config_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match="not a vdis model"):
        load_model(path)
