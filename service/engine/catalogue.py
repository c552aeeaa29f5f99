"""The models a deployment serves, by manifest name, and which one answers when none is named.

A model is a folder holding a manifest.json (what `python -m export` writes) directly under
VDIS_MODELS_DIR; anything else there (the judges' weights, a README) is not a model and is
passed over. VDIS_MODEL_DIR instead serves that one folder alone. VDIS_MODELS narrows the set
to the names it lists. A folder whose manifest is broken stops the start with its path.

Only manifests are read here (validated, not hashed): the engines hash and load a model's
graphs when they load it, at start (VDIS_LOAD=eager) or on its first request (lazy).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from service.engine.manifest import Manifest, describe_manifest
from service.settings import Settings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # it goes into URLs and Redis keys


class UnknownModel(LookupError):
    """A request named a model this deployment does not serve; `names` are the ones it does."""

    def __init__(self, name: str, names: list[str]):
        super().__init__(f"no model {name!r} is served here; there are {names} "
                         "(GET /models describes them)")
        self.name, self.names = name, names


@dataclass(frozen=True)
class Sample:
    """A sample clip shipped with a model: `file` in its folder's samples/, and a label."""

    file: str
    label: str


@dataclass(frozen=True)
class Catalogue:
    manifests: dict[str, Manifest]  # name -> its manifest, sorted by name
    default: str | None  # None: a worker, which serves only named models

    @property
    def names(self) -> list[str]:
        return list(self.manifests)

    def resolve(self, name: str | None) -> Manifest:
        """The manifest of model `name` (None: the default); UnknownModel if it is not here."""
        name = name or self.default
        if name not in self.manifests:
            raise UnknownModel(str(name), self.names)
        return self.manifests[name]

    def samples(self, name: str) -> list[Sample]:
        """The clips listed in the model folder's samples/index.json (export.samples' format);
        none if it has no such list."""
        index = self.manifests[name].folder / "samples" / "index.json"
        if not index.is_file():
            return []
        try:
            listed = json.loads(index.read_text())
            samples = [Sample(str(s["file"]), str(s.get("label", s["file"]))) for s in listed]
        except (ValueError, KeyError, TypeError) as error:
            raise RuntimeError(f"{index} is not a list of {{file, label}}: {error}") from error
        return [s for s in samples if "/" not in s.file and s.file not in ("", ".", "..")]

    def sample_path(self, name: str, file: str) -> Path | None:
        """The path of one listed sample clip of model `name`, or None."""
        if file not in {s.file for s in self.samples(name)}:
            return None
        path = self.manifests[name].folder / "samples" / file
        return path if path.is_file() else None


def model_folders(settings: Settings) -> list[Path]:
    """VDIS_MODEL_DIR alone, else every folder with a manifest.json under VDIS_MODELS_DIR."""
    if settings.MODEL_DIR is not None:
        return [Path(settings.MODEL_DIR)]
    root = Path(settings.MODELS_DIR)
    if not root.is_dir():
        raise RuntimeError(f"VDIS_MODELS_DIR={root} is not a folder (it should hold one "
                           "folder per exported model)")
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "manifest.json").is_file())


def discover(settings: Settings, with_default: bool = True) -> Catalogue:
    """The models the settings name; RuntimeError (a broken deployment) naming what is off.

    `with_default`: the API needs a default model (VDIS_DEFAULT_MODEL, or the one folder of
    VDIS_MODEL_DIR); a worker does not.
    """
    manifests: dict[str, Manifest] = {}
    for folder in model_folders(settings):
        try:
            manifest = describe_manifest(folder, settings.PRECISION)
        except RuntimeError as error:
            raise RuntimeError(f"model folder {folder} cannot be served: {error}") from None
        if not NAME.match(manifest.name):
            raise RuntimeError(f"model folder {folder}: the name {manifest.name!r} is not "
                               f"one letters, digits, '.', '_' and '-' make ({NAME.pattern})")
        if manifest.name in manifests:
            raise RuntimeError(f"model folders {manifests[manifest.name].folder} and {folder} "
                               f"both hold a model named {manifest.name!r}")
        manifests[manifest.name] = manifest
    where = (f"VDIS_MODEL_DIR={settings.MODEL_DIR}" if settings.MODEL_DIR is not None
             else f"VDIS_MODELS_DIR={settings.MODELS_DIR}")
    wanted = settings.model_names()
    if wanted:
        missing = [n for n in wanted if n not in manifests]
        if missing:
            raise RuntimeError(f"VDIS_MODELS names {missing}, which {where} does not hold "
                               f"(it holds {sorted(manifests)})")
        manifests = {n: m for n, m in manifests.items() if n in wanted}
    if not manifests:
        raise RuntimeError(f"{where} holds no exported model (a folder with a manifest.json)")
    manifests = dict(sorted(manifests.items()))
    default = None
    if with_default:
        default = (next(iter(manifests)) if settings.MODEL_DIR is not None
                   else settings.DEFAULT_MODEL)
        if default not in manifests:
            raise RuntimeError(f"VDIS_DEFAULT_MODEL={default!r} is not among the models "
                               f"served, {sorted(manifests)} ({where}); set it to one of them")
    return Catalogue(manifests, default)


def rss_bytes() -> int:
    """This process's resident memory now (Linux: /proc/self/statm; elsewhere 0)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
