"""Print the serving dependencies of pyproject.toml as a requirements file, for the images.

`--onnxruntime cpu` pins plain onnxruntime, `gpu` pins onnxruntime-gpu, at the version
pyproject.toml pins, so an image never holds both (they install the same `onnxruntime` module).
Run before the code is copied into an image: only pyproject.toml is needed.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

PACKAGES = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}


def requirements(pyproject: Path, onnxruntime: str) -> list[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    kept, versions = [], set()
    for dep in deps:
        name = re.split(r"[=<>!~;\[ ]", dep, maxsplit=1)[0].strip().lower()
        if name in PACKAGES.values():
            versions.add(dep.split(";")[0].split("==")[1].strip())
        else:
            kept.append(dep)
    if len(versions) != 1:
        raise SystemExit(f"{pyproject}: onnxruntime pins {sorted(versions)}; expected one version")
    return [*kept, f"{PACKAGES[onnxruntime]}=={versions.pop()}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--onnxruntime", choices=sorted(PACKAGES), required=True)
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args()
    print("\n".join(requirements(args.pyproject, args.onnxruntime)))


if __name__ == "__main__":
    main()
