"""Puts the tables the benchmark scripts wrote (`--out`, e.g. docs/benchmarks/ceiling.md and
served.md) into docs/benchmarks.md, each between its `<!-- NAME -->` and `<!-- /NAME -->`
markers; the text around them is left as it is.

    python -m bench.report --out docs/benchmarks
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO  # noqa: E402

TABLES = ("ceiling", "served")


def fill(doc: str, name: str, table: str) -> str:
    """`doc` with the text between the markers of `name` replaced by `table`."""
    pattern = re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.DOTALL)
    if not pattern.search(doc):
        raise ValueError(f"no <!-- {name} --> ... <!-- /{name} --> markers in the document")
    return pattern.sub(lambda m: m.group(1) + table.rstrip() + "\n" + m.group(2), doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    doc = args.doc.read_text()
    for name in TABLES:
        table = args.out / f"{name}.md"
        if table.exists():
            doc = fill(doc, name, table.read_text())
            print(f"{args.doc}: {name} tables from {table}")
    args.doc.write_text(doc)


if __name__ == "__main__":
    main()
