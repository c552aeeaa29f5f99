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
        names = list(f.keys())
    if "config" not in metadata:
        raise ValueError(f"{path}: not a vdis model file (no config in its metadata)")
    meta = json.loads(metadata.get("meta", "{}"))
    config = json.loads(metadata["config"])
    # files written before the decoder's FiLM option existed: their weights tell the layout
    config.setdefault("decoder_film", any(n.startswith("decoder.film.") for n in names))
    config.setdefault("motion_view", "rgb")  # files from before the silhouette view
    config.setdefault("appearance_patch", 2)  # and before the patch size was an option
    config.setdefault("decoder_palette", 0)  # and before the palette output
    config.setdefault("appearance_bands", 1)  # and before f pooled by bands
    return ModelConfig.from_dict(config), meta


def load_model(path: Path, device: str = "cpu") -> tuple[SequentialVAE, dict]:
    """Rebuild the model from the config its file carries; returns (model in eval mode, meta)."""
    cfg, meta = read_metadata(path)
    model = SequentialVAE(cfg)
    model.load_state_dict(load_file(str(path), device=device))
    return model.to(device).eval(), meta
