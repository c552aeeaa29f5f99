"""Shared fixtures: a small freshly initialised model exported to ONNX (for export and service)."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = {"width": 8, "hidden": 32, "appearance_width": 16}


def tiny_model(seed: int = 0, **config):
    """A small seeded SequentialVAE in eval mode (config overrides the tiny defaults)."""
    import torch

    from model.config import ModelConfig
    from model.vae import SequentialVAE

    torch.manual_seed(seed)
    return SequentialVAE(ModelConfig(**{**TINY, **config})).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """encoder/decoder/prior .onnx (+ float16 variants) and manifest.json of a tiny dsvae."""
    from export.onnx_export import export_model

    out = tmp_path_factory.mktemp("tiny-model")
    export_model(tiny_model(), out, name="tiny-dsvae",
                 meta={"dataset": "sprites", "commit": "test"})
    return out
