"""Model files: weights as safetensors (no pickle), with the config and provenance in metadata."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from model.config import ModelConfig
from model.vae import SequentialVAE


def save_model(model: SequentialVAE, path: Path, meta: dict | None = None) -> None:
    """Write weights and {config, meta} as safetensors metadata (strings only)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"config": json.dumps(model.cfg.to_dict()), "meta": json.dumps(meta or {})}
    tmp = Path(path).with_suffix(".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(path)  # a crash mid-write never leaves a half file under the real name


def read_metadata(path: Path) -> tuple[ModelConfig, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if "config" not in metadata:
        raise ValueError(f"{path}: not a vdis model file (no config in its metadata)")
    meta = json.loads(metadata.get("meta", "{}"))
    return ModelConfig.from_dict(json.loads(metadata["config"])), meta


def load_model(path: Path, device: str = "cpu") -> tuple[SequentialVAE, dict]:
    """Rebuild the model from the config its file carries; returns (model in eval mode, meta)."""
    cfg, meta = read_metadata(path)
    model = SequentialVAE(cfg)
    model.load_state_dict(load_file(str(path), device=device))
    return model.to(device).eval(), meta
