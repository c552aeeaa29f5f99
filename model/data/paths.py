"""Where shipped assets live and where built data sets are cached."""

from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
REPO = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """The cache folder: $VDIS_CACHE, else .cache/ at the repository root."""
    return Path(os.environ.get("VDIS_CACHE", REPO / ".cache"))
