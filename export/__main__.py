"""Command line.

    python -m export CHECKPOINT OUT_DIR [--name NAME] [--no-fp16] [--metrics EVAL_JSON]
                     [--domain-clips N] [--no-domain-test]
    python -m export verify MODEL_DIR CHECKPOINT [--judge JUDGE_PATH] [--clips N]

`verify` exits with status 1 when a hash differs, a graph misses its tolerance or the ONNX
model's judge accuracy differs from the PyTorch model's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

LPC_LICENCE = ("Trained on Sprites rendered from LPC (Liberated Pixel Cup) art, CC-BY-SA 3.0 / "
               "GPL 3.0; authors in model/data/assets/lpc-sprites/CREDITS.md")


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _prog(command: str = "") -> str:
    """`vdis export` when run as that (vdis.cli sets argv[0]), else `python -m export`."""
    base = sys.argv[0] if sys.argv[0].startswith("vdis ") else "python -m export"
    return f"{base} {command}".strip()


def default_name(dataset: str, arch: str, out_dir: Path) -> str:
    """DATASET-ARCH for a benchmark (sprites-dsvae); for a folder of videos, OUT_DIR's name
    (`models/mine` serves as `mine`)."""
    if dataset.startswith("folder:"):
        return out_dir.resolve().name
    return f"{dataset or 'model'}-{arch}"


def name_problem(name: str, out_dir: Path) -> str | None:
    """Why the service could not serve a model `name` exported to `out_dir`, or None: a name
    off its rules, or another model of that name beside it in the same models root."""
    from service.engine.catalogue import NAME

    if not NAME.match(name):
        return (f"the model name {name!r} is not one the service can serve: letters, digits, "
                "'.', '_' and '-', at most 64, starting with a letter or digit; pass --name")
    root = out_dir.resolve().parent
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        manifest = folder / "manifest.json"
        if folder != out_dir.resolve() and manifest.is_file():
            try:
                other = json.loads(manifest.read_text()).get("name")
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # not ours to judge: the service names a broken folder at start
            if other == name:
                return (f"{folder} already holds a model named {name!r}, and the service "
                        f"refuses two of one name in a models root ({root}): pass another "
                        "--name")
    return None


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=_prog(),
                                     description="Export a checkpoint as ONNX graphs + manifest "
                                                 f"(`{_prog('verify')} -h` for checks).")
    parser.add_argument("checkpoint", type=Path, help="model.safetensors written by model.train")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--name", help=(
        "the model's name, as the service serves it (model=NAME); letters, digits, '.', '_', "
        "'-' (default: DATASET-ARCH, e.g. sprites-dsvae; for a folder of videos, OUT_DIR's "
        "name)"))
    parser.add_argument("--no-fp16", action="store_true", help="skip the float16 variants")
    parser.add_argument("--metrics", type=Path, help="evaluation JSON to put in the manifest")
    parser.add_argument("--domain-clips", type=int, default=2000, help=(
        "training clips the domain statistics are measured on (export/domain.py); 0: none, "
        "and the service gives no domain verdicts for this model"))
    parser.add_argument("--no-domain-test", action="store_true", help=(
        "skip measuring the flagged share on the data set's test split"))
    args = parser.parse_args(argv)

    from export.onnx_export import export_model
    from model.checkpoint import load_model
    from service.settings import REPO

    model, meta = load_model(args.checkpoint)
    c = model.cfg
    dataset = meta.get("dataset", "")
    name = args.name or default_name(dataset, c.arch, args.out_dir)
    problem = name_problem(name, args.out_dir)
    if problem:
        parser.error(problem)
    if meta.get("dataset") == "sprites" and "licence" not in meta:
        meta = {**meta, "licence": LPC_LICENCE}
    metrics = json.loads(args.metrics.read_text()) if args.metrics else None
    print(f"{args.checkpoint}: {c.arch}, posterior {c.posterior}, F={c.appearance_dim}, "
          f"Z={c.motion_dim}, trained on {meta.get('dataset', '?')} at "
          f"{meta.get('commit', '?')}", flush=True)

    def progress(path: Path, seconds: float) -> None:
        print(f"  {path.name:<18} {_size(path.stat().st_size):>10}  {seconds:5.1f} s", flush=True)

    start = time.perf_counter()
    stats = None
    if args.domain_clips > 0:
        from export.domain import domain_stats

        folder = Path(dataset.split(":", 1)[1]) if dataset.startswith("folder:") else None
        if folder is not None and not folder.is_dir():
            parser.error(f"{args.checkpoint} was trained on the videos in {folder}, which is "
                         "not a folder here (moved or deleted since training?), and the domain "
                         "statistics are measured on them: put the folder back, or pass "
                         "--domain-clips 0 to export without them (the service then gives no "
                         "domain verdicts for this model)")
        try:
            stats = domain_stats(model, dataset, args.domain_clips, test=not args.no_domain_test)
        except (ValueError, OSError) as error:
            parser.error(f"the domain statistics need the training data ({dataset!r}): "
                         f"{error}; pass --domain-clips 0 to export without them")
        r, a, t = stats.reconstruction, stats.appearance, stats.test
        print(f"  domain: limits: reconstruction error {r.limit:.3g}, appearance code distance "
              f"{a.limit:.3g} (99.9% of the training clips, as they are and as MP4 uploads)" + (
                  f"; flagged: {100 * t.flagged:.2f}% of the {t.clips} clips of the {t.source} "
                  f"({100 * t.lossless_flagged:.2f}% lossless)" if t else ""), flush=True)
    manifest_path = export_model(model, args.out_dir, meta=meta, name=name,
                                 fp16=not args.no_fp16, metrics=metrics, progress=progress,
                                 domain_stats=stats)
    manifest = json.loads(manifest_path.read_text())
    files = [s["file"] for s in manifest["graphs"].values()]
    files += [s["file"] for v in manifest["variants"].values() for s in v.values()]
    total = sum((args.out_dir / f).stat().st_size for f in files)
    fp32 = sum((args.out_dir / s["file"]).stat().st_size for s in manifest["graphs"].values())
    print(f"{manifest_path}: {name}, {len(files)} graphs, {_size(total)} in all "
          f"({_size(fp32)} float32), {time.perf_counter() - start:.1f} s")
    root = args.out_dir.resolve().parent
    where = ("`vdis serve` serves it" if root == REPO / "models"
             else f"`vdis serve --models-dir {root}` serves it with the models beside it")
    print(f"  {where} as model={name} (a running service: restart it)")
    if c.posterior == "full" and not args.no_fp16:
        print("  note: no float16 encoder (onnxruntime's CPU LSTM crashes on float16)")
    return 0


def verify_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=_prog("verify"),
                                     description="Hashes, ORT vs PyTorch parity over B in "
                                                 "{1,3,16} x T in {1,8,20,64}, judge accuracy.")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--judge", type=Path, help="judge weights (model/evaluate.py)")
    parser.add_argument("--clips", type=int, default=512, help="Sprites test clips to judge")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)

    from export.verify import check_hashes, format_table, judge_accuracy, parity
    from model.checkpoint import load_model

    if args.judge and not args.judge.is_file():
        parser.error(f"--judge {args.judge}: no such file")
    failed = False
    try:
        manifest = check_hashes(args.model_dir)
    except RuntimeError as error:
        print(f"hashes: FAIL: {error}")
        return 1
    print(f"hashes: ok ({manifest.name}, format_version {manifest.doc.format_version})")
    model, _ = load_model(args.checkpoint)
    print("parity, ONNX Runtime (CPU) vs PyTorch float32, max |diff| over all outputs, "
          "B in {1,3,16} x T in {1,8,20,64}:", flush=True)
    rows = parity(model, args.model_dir, threads=args.threads,
                  progress=lambda r: print(f"  {r.graph} {r.variant}: {r.max_abs:.3g}",
                                           flush=True))
    print(format_table(rows))
    failed |= not all(r.ok for r in rows)
    if args.judge:
        try:
            result = judge_accuracy(model, args.model_dir, args.judge, clips=args.clips,
                                    threads=args.threads)
        except ModuleNotFoundError as error:
            if error.name != "model.evaluate":
                raise
            print("judge: skipped, model/evaluate.py (load_judge) does not exist yet")
        else:
            print(f"judge accuracy on {args.clips} reconstructed Sprites test clips:")
            print(f"  {'':<10} {'motion':>7} {'appearance':>11}")
            for key in ("pytorch", "onnx", "agreement"):
                r = result[key]
                print(f"  {key:<10} {r['motion']:>7.4f} {r['appearance']:>11.4f}")
            same = all(abs(result["pytorch"][k] - result["onnx"][k]) <= 0.005
                       for k in ("motion", "appearance"))
            print(f"judge: {'ok' if same else 'FAIL'} (ONNX within 0.5 points of PyTorch)")
            failed |= not same
    print("verify: FAIL" if failed else "verify: ok")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "verify":
        return verify_main(argv[1:])
    return export_main(argv)


if __name__ == "__main__":
    sys.exit(main())
