"""How well the domain score separates each served model's own clips from footage unlike them.

    python -m export.domain_report models/sprites models/mmnist ... --out docs/evaluation/domain

For each model folder, the service's own scoring (service.engine.ops through onnxruntime, as an
answer's X-Vdis-Domain is computed) on, every clip uploaded as an H.264 MP4 (crf 23) and read
back by the service's decoder:
- its test split (sprites, mmnist: the benchmark's held-out clips), when it has one;
- natural-looking footage: camera pans and zooms over the real photographs in scikit-image's
  wheel (the dev extra; the same clips tests/service/videos.py makes);
- moving coloured squares on coloured backgrounds, and the other benchmark's test clips.
Writes table.md (the share flagged of each group, the score range, and the share the appearance
code alone flags, as with VDIS_DOMAIN_CHECK=code) and scores.png (the score
distributions on a log axis, the limit at 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np

from export.domain import as_uploaded, test_clips
from export.footage import moving_squares, photo_pans
from service.engine.domain import code_verdicts, upload_verdicts
from service.engine.manifest import load_manifest
from service.engine.ops import Operations
from service.engine.runner import OnnxRunner


def scorer(folder: Path):
    """clips -> the service's domain scores (its verdicts' ratios) of them uploaded to the model
    in `folder`, through one onnxruntime runner."""
    manifest = load_manifest(folder)
    runner = OnnxRunner(manifest, ["CPUExecutionProvider"], 2)

    async def submit(graph, inputs):
        return runner.run(graph, inputs)

    ops = Operations(manifest, submit)

    def scores(clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the full check's scores, the appearance code's alone), (N,) each"""
        full, code = [], []
        for i in range(0, len(clips), 64):
            codes = asyncio.run(ops.encode(clips[i:i + 64]))
            stats, appearance = manifest.doc.domain_stats, codes.appearance_mean
            full += [v.score for v in upload_verdicts(stats, codes.reconstruction_error,
                                                      appearance)]
            code += [v.score for v in code_verdicts(stats, appearance)]
        return np.asarray(full), np.asarray(code)

    return scores


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", type=Path, nargs="+")
    p.add_argument("--out", type=Path, default=Path("docs/evaluation/domain"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    groups_all = {"natural footage (pans over 9 photographs, 27 clips)": photo_pans(),
                  "moving squares (30 clips)": moving_squares()}
    for dataset in ("sprites", "mmnist"):
        clips, _ = test_clips(dataset)
        groups_all[f"{dataset} test split ({len(clips)} clips)"] = np.asarray(clips)
    uploaded = {name: as_uploaded(clips) for name, clips in groups_all.items()}
    rows, results = [], {}
    for folder in args.models:
        manifest = load_manifest(folder)
        if manifest.doc.domain_stats is None:
            print(f"{folder}: no domain statistics, skipped")
            continue
        dataset = manifest.doc.training.get("dataset", "")
        results[manifest.name] = {}
        scores = scorer(folder)
        for group, clips in uploaded.items():
            s, code = scores(clips)
            own = group.startswith(f"{dataset} test")
            results[manifest.name][group] = s.tolist()
            rows.append(f"| {manifest.name} | {group}{' (its own)' if own else ''} | "
                        f"{100 * (s > 1).mean():.2f}% | {s.min():.3g} - {s.max():.3g} | "
                        f"{100 * (code > 1).mean():.2f}% |")
            print(rows[-1], flush=True)
    table = ["| model | clips, uploaded as H.264 MP4 | flagged out | score range | flagged "
             "by the code alone (VDIS_DOMAIN_CHECK=code) |", "|---|---|---:|---|---:|", *rows]
    (args.out / "table.md").write_text("\n".join(table) + "\n")
    rounded = {model: {group: [round(x, 4) for x in s] for group, s in groups.items()}
               for model, groups in results.items()}
    (args.out / "scores.json").write_text(json.dumps(rounded))
    plot(results, args.out / "scores.png")
    print(f"wrote {args.out}/table.md, scores.json, scores.png")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(8, 2.6 * len(results)), squeeze=False)
    for ax, (model, groups) in zip(axes[:, 0], results.items(), strict=True):
        bins = np.logspace(-1.5, 3, 60)
        for group, s in groups.items():
            ax.hist(np.clip(s, bins[0], bins[-1]), bins=bins, alpha=0.55, label=group,
                    density=True)
        ax.axvline(1.0, color="k", lw=1)
        ax.set_xscale("log")
        ax.set_title(f"{model}: domain score of uploads (1 = the limit; above it: out)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
