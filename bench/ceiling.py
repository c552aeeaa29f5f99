"""The ceiling: raw model throughput in-process, onnxruntime and PyTorch eager, at batch sizes.

No HTTP, no video codecs, no batcher, no pixel conversions: the graphs are called back to back
on ready arrays (uint8 clips, float32 codes), in this process. onnxruntime runs through the
service's own runner (service.engine.runner.OnnxRunner, with the VDIS_* settings of the
environment), three ways:
- `onnxruntime`: as the service runs it by default on CPU: one call at a time on all the cores,
  threads sleeping between calls;
- `onnxruntime-side-by-side`: one call per core at once, each on one thread, from one Python
  thread per call (VDIS_MAX_CONCURRENT_RUNS = the cores; service.engine.local);
- `onnxruntime-spinning`: one call at a time with onnxruntime's own default of spinning threads.
PyTorch runs the shipped checkpoint, loaded with model/checkpoint.py, under
torch.inference_mode(), one call at a time on its default threads.

An operation is the model work of one request; its throughput is in operations (videos) per
second, over `batch` operations per round of calls:
- encode: the encoder on `batch` clips (B, T, 3, 64, 64);
- decode: the decoder on `batch` codes (B, F), (B, T, Z);
- swap: the encoder on `batch` appearance clips, the encoder on `batch` motion clips, the
  decoder on the swapped codes (what /swap asks of the model: 2 clips encoded, 1 decoded);
- generate: the encoder on `batch` clips, the prior and the decoder on `n` x `batch` rows
  (/generate with n=4 results per request; batch sizes up to 64 rows).

    python -m bench.ceiling --out docs/benchmarks             # ~2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    REPO,
    csv_ints,
    csv_words,
    machine,
    machine_line,
    md_table,
    write_results,
)
from service.engine.manifest import Manifest, load_manifest  # noqa: E402

OPS = ("encode", "decode", "swap", "generate")
ONNX_BACKENDS = ("onnxruntime", "onnxruntime-side-by-side", "onnxruntime-spinning")
BACKENDS = (*ONNX_BACKENDS, "pytorch")
BATCHES = (1, 2, 4, 8, 16, 32, 64)
GENERATE_N = 4  # /generate's default n
MAX_ROWS = 64  # generate: batch x n rows at most

Call = tuple[str, dict[str, np.ndarray]]  # (graph, inputs)


class OnnxBackend:
    """The service's runner with the environment's VDIS_* settings, as `name` says (ONNX_BACKENDS):
    `calls` is how many calls run at once (each from its own Python thread)."""

    def __init__(self, model_dir: Path, name: str = "onnxruntime"):
        from service.engine.local import build_runner, resolve_parallelism, usable_cores
        from service.settings import Settings

        if name not in ONNX_BACKENDS:
            raise ValueError(f"unknown backend {name!r}; there are {ONNX_BACKENDS}")
        settings = Settings(MODEL_DIR=model_dir)
        if name == "onnxruntime-side-by-side":
            settings = settings.model_copy(update={"MAX_CONCURRENT_RUNS": usable_cores(),
                                                   "INTRA_OP_THREADS": 1})
        elif name == "onnxruntime-spinning":
            settings = settings.model_copy(update={"INTRA_OP_SPINNING": True})
        settings = resolve_parallelism(settings)
        self.name = name
        self.runner = build_runner(settings)
        self.manifest: Manifest = self.runner.manifest
        self.calls = settings.MAX_CONCURRENT_RUNS
        self.threads = (f"{self.calls} x {settings.INTRA_OP_THREADS}" if self.calls > 1
                        else settings.INTRA_OP_THREADS or "default")

    def run(self, graph: str, inputs: dict[str, np.ndarray]) -> None:
        self.runner.run(graph, inputs)


class TorchBackend:
    name = "pytorch"

    def __init__(self, checkpoint: Path, manifest: Manifest, threads: int = 0):
        import torch

        from model.checkpoint import load_model

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model, _ = load_model(checkpoint)
        self.manifest = manifest
        self.threads = torch.get_num_threads()
        config = self.model.cfg
        if (config.appearance_dim, config.motion_dim) != (manifest.appearance_dim,
                                                          manifest.motion_dim):
            raise ValueError(f"{checkpoint} is not the model exported in {manifest.folder}")

    def run(self, graph: str, inputs: dict[str, np.ndarray]) -> None:
        tensors = {k: self.torch.from_numpy(v) for k, v in inputs.items()}
        with self.torch.inference_mode():
            if graph == "encoder":  # the graph's uint8 (B, T, S, S, 3) -> (B, T, 3, S, S)
                self.model.encode(tensors["video"].permute(0, 1, 4, 2, 3).float() / 255.0)
            elif graph == "decoder":
                self.model.decode(tensors["appearance"], tensors["motion"])
            else:
                self.model.sample_motion(tensors["appearance"], tensors["noise"])


def op_calls(op: str, batch: int, manifest: Manifest, seed: int = 0) -> list[Call]:
    """The graph calls of `batch` operations `op`, on random inputs of the model's shapes."""
    rng = np.random.default_rng(seed)
    t, s = manifest.seq_len, manifest.frame_size

    def clips(rows):  # (rows, T, S, S, 3) uint8 pixels, what the encoder takes
        return {"video": rng.integers(0, 256, (rows, t, s, s, 3), np.uint8)}

    def codes(rows, name="motion"):  # (rows, F), (rows, T, Z)
        return {"appearance": rng.standard_normal((rows, manifest.appearance_dim), np.float32),
                name: rng.standard_normal((rows, t, manifest.motion_dim), np.float32)}

    if op == "encode":
        return [("encoder", clips(batch))]
    if op == "decode":
        return [("decoder", codes(batch))]
    if op == "swap":
        return [("encoder", clips(batch)), ("encoder", clips(batch)), ("decoder", codes(batch))]
    if op == "generate":
        rows = GENERATE_N * batch
        return [("encoder", clips(batch)), ("prior", codes(rows, "noise")),
                ("decoder", codes(rows))]
    raise ValueError(f"unknown operation {op!r}; there are {OPS}")


def batches_for(op: str, batches: list[int]) -> list[int]:
    return [b for b in batches if op != "generate" or b * GENERATE_N <= MAX_ROWS]


@dataclass
class Point:
    backend: str
    op: str
    batch: int
    ops_per_s: float
    rounds: int
    seconds: float
    cpu_ms_per_op: float  # CPU time of this process (all its threads) per operation


def measure(backend, op: str, batch: int, seconds: float) -> Point:
    """Rounds of the op's calls back to back for at least `seconds` (and one round), after one
    warm-up round at this shape; with `backend.calls` > 1, that many threads side by side, each
    doing its own rounds (the operations of all of them are counted)."""
    calls = op_calls(op, batch, backend.manifest)
    for graph, inputs in calls:
        backend.run(graph, inputs)
    started, cpu = time.perf_counter(), time.process_time()

    def rounds_until_time() -> int:
        rounds = 0
        while rounds == 0 or time.perf_counter() - started < seconds:
            for graph, inputs in calls:
                backend.run(graph, inputs)
            rounds += 1
        return rounds

    parallel = getattr(backend, "calls", 1)
    if parallel > 1:
        with ThreadPoolExecutor(parallel) as pool:
            rounds = sum(pool.map(lambda _: rounds_until_time(), range(parallel)))
    else:
        rounds = rounds_until_time()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Point(backend.name, op, batch, rounds * batch / elapsed, rounds, elapsed,
                 1000 * cpu / (rounds * batch))


def sweep(backend, ops: list[str], batches: list[int], seconds: float,
          log=print) -> list[Point]:
    points = []
    for op in ops:
        for batch in batches_for(op, batches):
            point = measure(backend, op, batch, seconds)
            log(f"  {point.backend:11} {op:8} B={batch:<3} {point.ops_per_s:8.1f} /s, "
                f"{point.cpu_ms_per_op:6.1f} ms CPU each ({point.rounds} rounds)")
            points.append(point)
    return points


def best(points: list[Point]) -> dict[str, dict[str, Point]]:
    """backend -> op -> the batch size with the highest throughput."""
    top: dict[str, dict[str, Point]] = {}
    for p in points:
        held = top.setdefault(p.backend, {}).get(p.op)
        if held is None or p.ops_per_s > held.ops_per_s:
            top[p.backend][p.op] = p
    return top


def markdown(points: list[Point], batches: list[int], info: dict, threads: dict) -> str:
    top = best(points)
    rows = []
    for backend in dict.fromkeys(p.backend for p in points):
        for op in dict.fromkeys(p.op for p in points if p.backend == backend):
            rates = {p.batch: p.ops_per_s for p in points if (p.backend, p.op) == (backend, op)}
            peak = top[backend][op]
            rows.append([backend, op, *[f"{rates[b]:.1f}" if b in rates else "-"
                                        for b in batches],
                         f"**{peak.ops_per_s:.1f}** (B={peak.batch})"])
    best_rows = [[backend, op, p.batch, f"{p.ops_per_s:.1f}", f"{p.cpu_ms_per_op:.1f}",
                  f"{p.ops_per_s * p.cpu_ms_per_op / 1000:.2f}"]
                 for backend, ops in top.items() for op, p in ops.items()]
    lines = [f"Machine: {machine_line(info)}.",
             "Threads: " + ", ".join(f"{k} {v}" for k, v in threads.items()) + ".", "",
             "Operations (videos) per second; B = operations per call.", "",
             md_table(["backend", "operation", *[f"B={b}" for b in batches], "best"], rows), "",
             "At the best batch size: CPU time per operation, and the cores it kept busy "
             "(operations/s x CPU s/operation).", "",
             md_table(["backend", "operation", "B", "ops/s", "CPU ms/op", "cores busy"],
                      best_rows)]
    for onnx in ONNX_BACKENDS:
        if onnx in top and "pytorch" in top:
            lines += ["", f"{onnx} vs PyTorch eager at each one's best batch size: " + ", ".join(
                f"{op} {top[onnx][op].ops_per_s / top['pytorch'][op].ops_per_s:.2f}x"
                for op in top[onnx] if op in top["pytorch"]) + "."]
    return "\n".join(lines)


def plot(points: list[Point], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = dict(zip(OPS, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=True))
    for backend, style in zip(BACKENDS, ("-", "-.", ":", "--"), strict=True):
        for op in OPS:
            chosen = [p for p in points if (p.backend, p.op) == (backend, op)]
            if chosen:
                ax.plot([p.batch for p in chosen], [p.ops_per_s for p in chosen], style,
                        marker="o", color=colours[op], label=f"{op} ({backend})")
    ax.set_xscale("log", base=2)
    batches = sorted({p.batch for p in points})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size (operations per call)")
    ax.set_ylabel("operations (videos) per second")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / "models" / "sprites")
    parser.add_argument("--checkpoint", type=Path,
                        default=REPO / "checkpoints" / "sprites-dsvae.safetensors")
    parser.add_argument("--batches", type=csv_ints, default=list(BATCHES))
    parser.add_argument("--ops", type=csv_words, default=list(OPS))
    parser.add_argument("--backends", type=csv_words, default=list(BACKENDS))
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="time per (backend, op, batch) point, after a warm-up round")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: PyTorch's default")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    args = parser.parse_args()

    info = machine()
    print(machine_line(info))
    points, threads = [], {}
    for name in args.backends:
        if name == "pytorch":
            manifest = load_manifest(args.model_dir)
            backend = TorchBackend(args.checkpoint, manifest, args.torch_threads)
        else:
            backend = OnnxBackend(args.model_dir, name)
        threads[name] = backend.threads
        points += sweep(backend, args.ops, args.batches, args.seconds)
        del backend

    text = markdown(points, args.batches, info, threads)
    print(text)
    data = {"machine": info, "threads": threads, "seconds_per_point": args.seconds,
            "environment": {k: v for k, v in os.environ.items() if k.startswith("VDIS_")},
            "points": [p.__dict__ for p in points],
            "best": {b: {op: p.__dict__ for op, p in ops.items()}
                     for b, ops in best(points).items()}}
    write_results(args.out, "ceiling", data, text)
    plot(points, args.out / "ceiling.png",
         f"Model throughput in-process ({info['cores']} cores, {info['cpu']})")
    print(f"wrote {args.out}/ceiling.json, ceiling.md, ceiling.png")


if __name__ == "__main__":
    main()
