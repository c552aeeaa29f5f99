"""The model manifest: one typed schema that `export/` writes and the service validates on load.

docs/manifest.md describes the format. `ManifestDoc` is the file itself (pydantic, so a missing
or mistyped field is refused with its path); `load_manifest` also checks every file's SHA-256
and picks the graphs of the requested precision. `export` builds a `ManifestDoc` and writes it
with `ManifestDoc.write`, so the two sides cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from service.engine.domain import DomainStats

# The version export writes and the only one this service reads. 2: the graphs take and give
# uint8 pixels (B, T, S, S, 3) (version 1 took float32 (B, T, 3, S, S) in [0, 1]); `domain`.
FORMAT_VERSION = 2
MAX_FRAMES = 64  # the longest T the exported graphs are checked at
GRAPHS = ("encoder", "decoder", "prior")
PIXELS = ("encoder", "video"), ("decoder", "video")  # (graph, tensor) of uint8 pixels
# What /model shows: everything but the local file layout.
PUBLIC_KEYS = ("format_version", "name", "architecture", "domain", "config", "appearance_dim",
               "motion_dim", "frame_size", "channels", "seq_len", "max_frames", "opset",
               "training", "metrics", "licence")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    dtype: Literal["float32", "uint8"]
    shape: list[int | str]  # ints are fixed axes, strings ("B", "T") dynamic ones
    # what the axes are, for pixels: "BTHWC" (RGB last, as decoded video frames are); codes
    # have none
    layout: Literal["BTHWC"] | None = None


class GraphSpec(_Strict):
    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class VariantSpec(_Strict):
    file: str
    sha256: str
    # max abs difference from the float32 graph: codes as they are, pixels in [0, 1] (uint8
    # levels / 255). A variant has its graph's inputs and outputs (the casts are inside).
    tolerance: float


class ManifestDoc(_Strict):
    format_version: Literal[2]
    name: str
    architecture: str
    domain: str = ""  # what the model was trained on and expects, in words (GET /models)
    # what uploads are scored against (service/engine/domain.py); None: no domain verdicts
    domain_stats: DomainStats | None = None
    config: dict
    appearance_dim: int
    motion_dim: int
    frame_size: int
    channels: int
    seq_len: int
    max_frames: int = MAX_FRAMES
    opset: int
    graphs: dict[str, GraphSpec]
    variants: dict[str, dict[str, VariantSpec]] = {}
    training: dict = {}
    metrics: dict = {}
    licence: str = ""

    @model_validator(mode="after")
    def _every_graph(self) -> ManifestDoc:
        missing = [g for g in GRAPHS if g not in self.graphs]
        if missing:
            raise ValueError(f"graphs {missing} are missing")
        unknown = sorted(set(self.graphs) - set(GRAPHS))
        if unknown:
            raise ValueError(f"graphs {unknown} are not ones the service runs {list(GRAPHS)}")
        for graph, tensor in PIXELS:  # the service hands the graphs decoded frames as they are
            specs = self.graphs[graph].inputs + self.graphs[graph].outputs
            spec = next((t for t in specs if t.name == tensor), None)
            size = [self.frame_size, self.frame_size, self.channels]
            if (spec is None or spec.dtype != "uint8" or spec.layout != "BTHWC"
                    or spec.shape[2:] != size):
                raise ValueError(f"{graph}.{tensor} must be uint8 BTHWC (B, T, {size[0]}, "
                                 f"{size[1]}, {size[2]}), not {spec}")
        return self

    def files(self) -> dict[str, GraphSpec | VariantSpec]:
        """Every file the manifest names, by where it is named ('graphs.encoder', ...)."""
        entries = {f"graphs.{name}": spec for name, spec in self.graphs.items()}
        for variant, graphs in self.variants.items():
            entries.update({f"variants.{variant}.{name}": spec for name, spec in graphs.items()})
        return entries

    def write(self, folder: Path) -> Path:
        path = Path(folder) / "manifest.json"
        path.write_text(self.model_dump_json(indent=2))
        return path


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: `files` maps graph name -> ONNX path for the chosen precision.

    `precision` "auto" loads the float32 graphs; the runner may switch a graph to its float16
    variant on CUDA (service.engine.runner).
    """

    folder: Path
    doc: ManifestDoc
    files: dict[str, Path]
    precision: str

    @property
    def name(self) -> str:
        return self.doc.name

    @property
    def appearance_dim(self) -> int:
        return self.doc.appearance_dim

    @property
    def motion_dim(self) -> int:
        return self.doc.motion_dim

    @property
    def frame_size(self) -> int:
        return self.doc.frame_size

    @property
    def seq_len(self) -> int:
        return self.doc.seq_len

    @property
    def max_frames(self) -> int:
        return self.doc.max_frames

    def graph(self, name: str) -> GraphSpec:
        return self.doc.graphs[name]

    def variant_files(self, variant: str) -> dict[str, tuple[Path, float]]:
        """graph -> (ONNX path, tolerance vs float32) of one variant; only the graphs it has."""
        graphs = self.doc.variants.get(variant, {})
        return {name: (self.folder / spec.file, spec.tolerance) for name, spec in graphs.items()
                if name in GRAPHS}

    def public(self) -> dict:
        raw = self.doc.model_dump()
        shown = {k: raw[k] for k in PUBLIC_KEYS}
        shown["precision"] = self.precision
        shown["graphs"] = {name: {k: spec[k] for k in ("inputs", "outputs", "sha256")}
                           for name, spec in raw["graphs"].items()}
        return shown


def read_manifest(folder: str | Path) -> ManifestDoc:
    """Parse and validate `folder/manifest.json` (no hashing). RuntimeError when it is off."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise RuntimeError(f"no model at {folder}: {path.name} is missing (set VDIS_MODELS_DIR "
                           "or VDIS_MODEL_DIR)")
    text = path.read_text()
    try:
        return ManifestDoc.model_validate_json(text)
    except ValidationError as error:
        version = _version_of(text)
        if version is not None and version != FORMAT_VERSION:
            raise RuntimeError(
                f"{path}: format_version {version!r} is not one this service reads "
                f"({FORMAT_VERSION}: graphs on uint8 pixels); re-export the checkpoint with "
                "`python -m export CHECKPOINT FOLDER`") from None
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}"
                             for e in error.errors())
        raise RuntimeError(f"{path} does not follow the manifest schema: {problems}") from None


def _version_of(text: str):
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        return None
    return raw.get("format_version") if isinstance(raw, dict) else None


def load_manifest(folder: str | Path, precision: str = "float32") -> Manifest:
    """Read `folder/manifest.json`, validate it and check the SHA-256 of every file it lists.

    Raises RuntimeError (a broken deployment, not a caller mistake) when anything is off.
    """
    manifest = describe_manifest(folder, precision)
    check_files(manifest)
    return manifest


def describe_manifest(folder: str | Path, precision: str = "float32") -> Manifest:
    """`folder/manifest.json` read and validated, its graphs of `precision` chosen, no file
    hashed (the model catalogue reads every folder at start; a model is hashed when loaded)."""
    folder = Path(folder)
    doc = read_manifest(folder)
    if precision in ("float32", "auto"):  # auto: float32, the runner may swap graphs on CUDA
        chosen = {name: doc.graphs[name].file for name in GRAPHS}
    else:  # a graph the variant leaves out (e.g. a recurrent prior) runs in float32
        variant = doc.variants.get(precision)
        if not variant:
            raise RuntimeError(f"{folder / 'manifest.json'}: no {precision} variant for "
                               "VDIS_PRECISION")
        chosen = {name: (variant[name] if name in variant else doc.graphs[name]).file
                  for name in GRAPHS}
    return Manifest(folder, doc, {name: folder / file for name, file in chosen.items()},
                    precision)


def check_files(manifest: Manifest) -> None:
    """RuntimeError unless every file the manifest names is there with its SHA-256."""
    folder, doc = manifest.folder, manifest.doc
    path = folder / "manifest.json"
    for where, spec in doc.files().items():
        file = folder / spec.file
        if not file.is_file():
            raise RuntimeError(f"{path}: {where} names {spec.file}, which is missing")
        digest = sha256(file)
        if digest != spec.sha256:
            raise RuntimeError(
                f"{file}: SHA-256 {digest} differs from the manifest's {spec.sha256} "
                f"({where}); the model folder is corrupt or was edited"
            )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
