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
    return model


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
