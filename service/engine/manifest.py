"""Reading and checking an exported model's `manifest.json` (the contract in docs/manifest.md)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSIONS = (1,)
GRAPHS = ("encoder", "decoder", "prior")
# What /model shows: everything but the local file layout.
PUBLIC_KEYS = ("format_version", "name", "architecture", "config", "appearance_dim",
               "motion_dim", "frame_size", "channels", "seq_len", "max_frames", "opset",
               "training", "metrics", "licence")


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: `files` maps graph name -> ONNX path for the chosen precision.

    `precision` "auto" loads the float32 graphs; the runner may switch a graph to its float16
    variant on CUDA (service.engine.runner).
    """

    folder: Path
    raw: dict
    files: dict[str, Path]
    precision: str

    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def appearance_dim(self) -> int:
        return int(self.raw["appearance_dim"])

    @property
    def motion_dim(self) -> int:
        return int(self.raw["motion_dim"])

    @property
    def frame_size(self) -> int:
        return int(self.raw["frame_size"])

    @property
    def seq_len(self) -> int:
        return int(self.raw["seq_len"])

    @property
    def max_frames(self) -> int:
        return int(self.raw.get("max_frames", 64))

    def variant_files(self, variant: str) -> dict[str, tuple[Path, float]]:
        """graph -> (ONNX path, tolerance vs float32) of one variant; only the graphs it has."""
        graphs = self.raw.get("variants", {}).get(variant, {})
        return {name: (self.folder / spec["file"], float(spec["tolerance"]))
                for name, spec in graphs.items() if name in GRAPHS}

    def public(self) -> dict:
        shown = {k: self.raw[k] for k in PUBLIC_KEYS if k in self.raw}
        shown["precision"] = self.precision
        shown["graphs"] = {
            name: {k: spec[k] for k in ("inputs", "outputs", "sha256") if k in spec}
            for name, spec in self.raw["graphs"].items()
        }
        return shown


def load_manifest(folder: str | Path, precision: str = "float32") -> Manifest:
    """Read `folder/manifest.json`, check its version and the SHA-256 of every file it lists.

    Raises RuntimeError (a broken deployment, not a caller mistake) when anything is off.
    """
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise RuntimeError(f"no model at {folder}: {path.name} is missing (set VDIS_MODEL_DIR)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RuntimeError(f"{path} is not valid JSON: {error}") from error
    version = raw.get("format_version")
    if version not in FORMAT_VERSIONS:
        raise RuntimeError(
            f"{path}: format_version {version!r} is not one this service reads {FORMAT_VERSIONS}"
        )
    missing = [g for g in GRAPHS if g not in raw.get("graphs", {})]
    if missing:
        raise RuntimeError(f"{path}: graphs {missing} are missing")
    entries = {f"graphs.{name}": spec for name, spec in raw["graphs"].items()}
    for variant, graphs in raw.get("variants", {}).items():
        entries.update({f"variants.{variant}.{name}": spec for name, spec in graphs.items()})
    for where, spec in entries.items():
        file = folder / spec["file"]
        if not file.is_file():
            raise RuntimeError(f"{path}: {where} names {spec['file']}, which is missing")
        digest = _sha256(file)
        if digest != spec.get("sha256"):
            raise RuntimeError(
                f"{file}: SHA-256 {digest} differs from the manifest's {spec.get('sha256')} "
                f"({where}); the model folder is corrupt or was edited"
            )
    if precision in ("float32", "auto"):  # auto: float32, the runner may swap graphs on CUDA
        chosen = raw["graphs"]
    else:  # a graph the variant leaves out (e.g. a recurrent prior) runs in float32
        variant = raw.get("variants", {}).get(precision)
        if not variant:
            raise RuntimeError(f"{path}: no {precision} variant for VDIS_PRECISION")
        chosen = {name: variant.get(name, raw["graphs"][name]) for name in GRAPHS}
    files = {name: folder / chosen[name]["file"] for name in GRAPHS}
    return Manifest(folder, raw, files, precision)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
