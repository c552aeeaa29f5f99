"""Shared fixtures: a small freshly initialised model exported to ONNX (for export and service)."""

from __future__ import annotations

from pathlib import Path

import pytest

# F and Z pinned so that tests reading code shapes do not follow the shipped defaults
TINY = {"width": 8, "hidden": 32, "appearance_width": 16, "appearance_dim": 32, "motion_dim": 16}


def tiny_model(seed: int = 0, **config):
    """A small seeded SequentialVAE in eval mode (config overrides the tiny defaults)."""
    import torch

    from model.config import ModelConfig
    from model.vae import SequentialVAE

    torch.manual_seed(seed)
    model = SequentialVAE(ModelConfig(**{**TINY, **config})).eval()
    if model.decoder.palette is not None:
        # freshly initialised palette logits are nearly equal, so every pixel would be the same
        # mix of the palette, whatever the codes: sharper logits make outputs differ visibly
        torch.nn.init.normal_(model.decoder.out.weight, std=0.5)
    if model.decoder.colour_table is not None:  # an exact-colour decoder: its table of colours
        model.decoder.colour_table.copy_(colour_table(model.cfg.decoder_colours, seed))
    return model


def colour_table(n: int, seed: int = 0):
    """n distinct colours sorted by their 24-bit value, as vae.Decoder.colour_table keeps them."""
    import numpy as np
    import torch

    keys = np.sort(np.random.default_rng(seed).choice(1 << 24, n, replace=False))
    rgb = np.stack([keys >> 16, (keys >> 8) & 255, keys & 255], 1)
    return torch.from_numpy((rgb / 255).astype(np.float32))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """encoder/decoder/prior .onnx (+ float16 variants) and manifest.json of a tiny dsvae."""
    from export.onnx_export import export_model

    out = tmp_path_factory.mktemp("tiny-model")
    export_model(tiny_model(), out, name="tiny-dsvae",
                 meta={"dataset": "sprites", "commit": "test"})
    return out


@pytest.fixture(scope="session")
def service_url(request) -> str:
    """The URL of a real `vdis serve` on the tiny model (VDIS_TEST_MODEL_DIR overrides it)."""
    import os

    from tests.liveservice import running_service

    model_dir = os.environ.get("VDIS_TEST_MODEL_DIR") or request.getfixturevalue("tiny_model_dir")
    with running_service(Path(model_dir)) as url:
        yield url


SECOND_MODEL = "tiny-b"


@pytest.fixture(scope="session")
def second_model_dir(tmp_path_factory) -> Path:
    """Another tiny model (other weights, another data set named), exported as export does."""
    from export.onnx_export import export_model

    out = tmp_path_factory.mktemp("second-model")
    export_model(tiny_model(seed=1), out, name=SECOND_MODEL, fp16=False,
                 meta={"dataset": "mmnist", "commit": "test"})
    return out


@pytest.fixture(scope="session")
def models_root(tiny_model_dir, second_model_dir, tmp_path_factory) -> Path:
    """models/ as a deployment has it: two model folders (the second with a sample clip), a
    judge's weights and a README, which are not models."""
    import json
    import shutil

    from service.settings import REPO

    root = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_model_dir, root / "tiny")
    shutil.copytree(second_model_dir, root / "second")
    samples = root / "second" / "samples"
    samples.mkdir()
    shutil.copy(REPO / "service" / "static" / "samples" / "sprite-1-walk-front.mp4",
                samples / "walk.mp4")
    (samples / "index.json").write_text(json.dumps([{"file": "walk.mp4", "label": "A walk"}]))
    (root / "judge").mkdir()
    (root / "judge" / "sprites-judge.safetensors").write_bytes(b"not a model")
    (root / "README.md").write_text("models")
    return root


@pytest.fixture(scope="session")
def two_models_url(models_root) -> str:
    """A real `vdis serve` of the models root, tiny-dsvae the default."""
    from tests.liveservice import running_service

    env = {"VDIS_MODEL_DIR": "", "VDIS_MODELS_DIR": str(models_root),
           "VDIS_DEFAULT_MODEL": "tiny-dsvae"}
    with running_service(models_root, env=env) as url:
        yield url
