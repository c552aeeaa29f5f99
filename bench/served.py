"""Served throughput and latency: a real uvicorn server with the shipped model, driven over
loopback by a load generator in another process (bench/loadgen.py), against the ceiling
measured in the same run (bench/ceiling.py, onnxruntime, same threads).

Configurations: the in-process engine with batching (the service's MAX_BATCH and MAX_WAIT_MS,
or --max-batch / --max-wait-ms) and without (VDIS_MAX_BATCH=1); the Redis engine with 1 and 2
`python -m service.worker` processes (a private VDIS_REDIS_PREFIX per run, its keys deleted
after). For each: POST /encode, /swap and /generate at each concurrency, closed loop, bounded by
--requests and --seconds after one untimed request per client (16 at most).

What is sent: the four shipped Sprites clips (service/static/samples) as 64x64, 8-frame H.264
MP4 uploads (--upload-size 256: the shipped 256x256 files), T=8 frames, `fit=crop`:
- /encode: one clip; codes answered as JSON (the API's default);
- /swap: two clips; one 64x64 MP4 answered (format=mp4, scale=1: the API's and the Python
  client's defaults);
- /generate: one clip, n=4 new motions, seed 0; one MP4 with the 4 results tiled 2x2.

Each answer's Server-Timing header (service/timing.py) splits its time into model, queue,
decode, encode and other; the memory of the API and worker processes is read from /proc.

    python -m bench.served --out docs/benchmarks          # ~8 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ceiling  # noqa: E402
from bench.common import (  # noqa: E402
    REPO,
    cpu_s,
    csv_ints,
    csv_words,
    free_port,
    machine,
    machine_line,
    md_table,
    percentile,
    rss_mb,
    upload_clips,
    write_results,
)
from service.settings import Settings  # noqa: E402

PHASES = ("model", "queue", "decode", "encode", "other")
ENDPOINTS = {  # name -> (path and query, upload fields, the ceiling's operation)
    "encode": ("/encode", ("video",), "encode"),
    "swap": ("/swap?format=mp4", ("appearance", "motion"), "swap"),
    "generate": (f"/generate?n={ceiling.GENERATE_N}&seed=0&format=mp4", ("video",), "generate"),
}
CONFIGS = ("batched", "unbatched", "redis-1", "redis-2")
BOUNDARY = "vdis-bench-boundary"
WARMUP_MAX = 16  # untimed requests before each run: one per client, up to this many


# ---------------------------------------------------------------------------------------------
# Requests


def http_request(path: str, port: int, fields: list[tuple[str, bytes]]) -> bytes:
    """The exact bytes of a multipart POST with one MP4 per field."""
    parts = []
    for name, data in fields:
        parts.append(f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                     f"filename=\"{name}.mp4\"\r\nContent-Type: video/mp4\r\n\r\n".encode())
        parts += [data, b"\r\n"]
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def request_files(folder: Path, endpoint: str, port: int, clips: list[bytes]) -> list[Path]:
    """One file per request variant: clip i (and clip i+1 as the motion of /swap)."""
    path, fields, _ = ENDPOINTS[endpoint]
    files = []
    for i in range(len(clips)):
        data = [clips[(i + k) % len(clips)] for k in range(len(fields))]
        file = folder / f"{endpoint}-{i}.http"
        file.write_bytes(http_request(path, port, list(zip(fields, data, strict=True))))
        files.append(file)
    return files


# ---------------------------------------------------------------------------------------------
# Servers and memory


@dataclass
class Config:
    name: str
    workers: int = 0  # 0: the in-process engine
    env: dict[str, str] = field(default_factory=dict)


def configs(args) -> dict[str, Config]:
    batched = {}
    if args.max_batch is not None:
        batched["VDIS_MAX_BATCH"] = str(args.max_batch)
    if args.max_wait_ms is not None:
        batched["VDIS_MAX_WAIT_MS"] = str(args.max_wait_ms)
    return {"batched": Config("batched", 0, batched),
            "unbatched": Config("unbatched", 0, {"VDIS_MAX_BATCH": "1"}),
            "redis-1": Config("redis-1", 1, batched),
            "redis-2": Config("redis-2", 2, batched)}


class Stack:
    """The API (uvicorn) and, for the Redis engine, its workers, as subprocesses."""

    def __init__(self, config: Config, args, logs: Path):
        self.config, self.logs = config, logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = f"vdis-bench-{uuid.uuid4().hex[:8]}"
        self.redis_url = args.redis_url if config.workers else ""
        self.env = {**os.environ, "VDIS_MODEL_DIR": str(args.model_dir),
                    "VDIS_REDIS_URL": self.redis_url, "VDIS_REDIS_PREFIX": self.prefix,
                    **config.env}
        self.processes: dict[str, subprocess.Popen] = {}
        # The cores shared among the workers: each makes one onnxruntime call at a time on its
        # share (the service's CPU default), or on --worker-threads; VDIS_MAX_CONCURRENT_RUNS
        # and VDIS_INTRA_OP_THREADS in the environment override both.
        share = max(1, (os.cpu_count() or 1) // max(config.workers, 1))
        one_call = {"VDIS_INTRA_OP_THREADS": str(args.worker_threads or share),
                    "VDIS_MAX_CONCURRENT_RUNS": "1"}
        for i in range(config.workers):
            env = {**self.env, "VDIS_WORKER_NAME": f"bench-{i + 1}",
                   **{k: self.env.get(k, v) for k, v in one_call.items()}}
            self._start(f"worker-{i + 1}", [sys.executable, "-m", "service.worker"], env)
        self._start("api", [sys.executable, "-m", "uvicorn", "service.app:app", "--host",
                            "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                    self.env)

    def _start(self, name: str, command: list[str], env: dict) -> None:
        log = (self.logs / f"{self.config.name}-{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                                stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """/ready answers 200: the model is loaded (and, through Redis, a worker beats)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    log = self.logs / f"{self.config.name}-{name}.log"
                    raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
            try:
                ready = httpx.get(self.url + "/ready", timeout=2)
                if ready.status_code == 200 and (
                        len(ready.json().get("workers", [])) >= self.config.workers):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.config.name}: not ready after {timeout_s} s")

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.config.workers:
            import redis

            with redis.Redis.from_url(self.redis_url) as client:
                keys = list(client.scan_iter(f"{self.prefix}:*", count=500))
                if keys:
                    client.delete(*keys)


@contextmanager
def running(config: Config, args, logs: Path):
    stack = Stack(config, args, logs)
    try:
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


class MemoryWatch:
    """The largest RSS of each process, read every `every_s` in a thread."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.1):
        self.pids, self.every_s = pids, every_s
        self.peaks = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            for name, pid in self.pids.items():
                self.peaks[name] = max(self.peaks[name], rss_mb(pid) or 0.0)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def memory(pids: dict[str, int]) -> dict[str, float]:
    return {name: round(rss_mb(pid) or 0.0, 1) for name, pid in pids.items()}


# ---------------------------------------------------------------------------------------------
# Load


def load(port: int, files: list[Path], concurrency: int, requests: int, seconds: float,
         warmup: int) -> dict:
    """One bench/loadgen.py process; its JSON result."""
    command = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--concurrency",
               str(concurrency), "--requests", str(requests), "--seconds", str(seconds),
               "--warmup", str(warmup), *map(str, files)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          timeout=seconds + 600)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def summarise(config: str, endpoint: str, result: dict, ceiling: dict) -> dict:
    latencies = result["latency_ms"]
    phases = result["phases_ms"]
    total = sum(phases.get("total", [])) or float("nan")
    shares = {p: sum(phases.get(p, [])) / total for p in PHASES}
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return {"config": config, "endpoint": endpoint, "concurrency": result["concurrency"],
            "ok": result["ok"], "errors": result["errors"], "elapsed_s": result["elapsed_s"],
            "throughput": result["throughput"], "ceiling": ceiling["ops_per_s"],
            "ratio": result["throughput"] / ceiling["ops_per_s"],
            "model_cpu_ms": ceiling["cpu_ms_per_op"],
            "p50_ms": p50, "p95_ms": percentile(latencies, 95), "p99_ms": p99,
            "p99_over_p50": p99 / p50 if p50 else float("nan"),
            "server_ms": total / max(len(phases.get("total", [])), 1), "shares": shares,
            "client_cpu_s": result["client_cpu_s"]}


def leak_check(config: Config, args, logs: Path, clips: list[bytes], log=print) -> dict:
    """RSS after `first` /swap requests and after `total`, on a fresh stack."""
    with running(config, args, logs) as stack, tempfile.TemporaryDirectory() as folder:
        files = request_files(Path(folder), "swap", stack.port, clips)
        run = {"config": config.name, "idle": memory(stack.pids())}
        for count, label in ((args.leak_first, "first"),
                             (args.leak_total - args.leak_first, "total")):
            result = load(stack.port, files, args.leak_concurrency, count, 3600, 0)
            if result["ok"] != count:
                raise RuntimeError(f"leak check: {result['ok']} of {count} answered "
                                   f"({result['errors']})")
            time.sleep(0.5)
            run[label] = memory(stack.pids())
        run["growth"] = {name: run["total"][name] / run["first"][name] - 1
                         for name in run["first"]}
        log(f"  leak check {config.name}: after {args.leak_first} {run['first']} MiB, after "
            f"{args.leak_total} {run['total']} MiB")
        return run


# ---------------------------------------------------------------------------------------------
# Report


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def targets(runs: list[dict], leaks: list[dict], args) -> list[list[str]]:
    def find(config, endpoint, concurrency):
        return next((r for r in runs if (r["config"], r["endpoint"], r["concurrency"]) ==
                     (config, endpoint, concurrency)), None)

    rows = []
    c = args.target_concurrency
    on, off, one = find("batched", "swap", c), find("unbatched", "swap", c), find(
        "batched", "swap", 1)
    if on:
        rows.append([f"/swap at concurrency {c}, batching on: served / ceiling >= 85%",
                     f"{on['throughput']:.1f} / {on['ceiling']:.1f} = {pct(on['ratio'])}",
                     "yes" if on["ratio"] >= 0.85 else "**no**"])
    if on and off:
        rows.append([f"/swap at concurrency {c}: batching on >= off",
                     f"{on['throughput']:.1f} vs {off['throughput']:.1f} /s",
                     "yes" if on["throughput"] >= off["throughput"] else "**no**"])
    if on:
        rows.append([f"/swap at concurrency {c}, batching on: p99 <= 3x p50",
                     f"{on['p99_ms']:.0f} / {on['p50_ms']:.0f} ms = {on['p99_over_p50']:.2f}x",
                     "yes" if on["p99_over_p50"] <= 3 else "**no**"])
        worst = max((r for r in runs if r["ok"]), key=lambda r: r["p99_over_p50"])
        rows.append(["p99 <= 3x p50, every run", f"worst {worst['p99_over_p50']:.2f}x "
                     f"({worst['config']} /{worst['endpoint']} at {worst['concurrency']})",
                     "yes" if worst["p99_over_p50"] <= 3 else "**no**"])
    if one:
        outside = 1 - one["shares"]["model"]
        rows.append(["/swap at concurrency 1, batching on: outside the model (queue, decode, "
                     "encode, other) <= 15%", pct(outside), "yes" if outside <= 0.15 else
                     "**no**"])
    if on:
        path = sum(on["shares"][p] for p in ("decode", "encode", "other"))
        rows.append([f"/swap at concurrency {c}, batching on: request path (decode, encode, "
                     "other; not waiting for the busy model) <= 15%", pct(path),
                     "yes" if path <= 0.15 else "**no**"])
    for leak in leaks:
        worst = max(leak["growth"].items(), key=lambda kv: kv[1])
        rows.append([f"{leak['config']}: RSS after {args.leak_total} requests within 10% of "
                     f"after {args.leak_first}", f"{worst[0]} {worst[1]:+.1%}",
                     "yes" if worst[1] <= 0.10 else "**no**"])
    return rows


def markdown(data: dict, args) -> str:
    runs, info = data["runs"], data["machine"]
    top = data["ceiling"]
    lines = [f"Machine: {machine_line(info)}.", "",
             "Ceiling in the same run (onnxruntime in-process, the best of one call at a time "
             "with sleeping threads, one call per core side by side, and one call at a time "
             "with spinning threads, at the best batch size): " + ", ".join(
                 f"{op} {p['ops_per_s']:.1f}/s (B={p['batch']}, {p['backend']})"
                 for op, p in top.items()) + ".",
             f"Uploads: {data['uploads']}. Per run: at most {args.requests} requests or "
             f"{args.seconds:g} s after one untimed request per client (at most {WARMUP_MAX}).", "",
             "### Targets", "", md_table(["target", "measured", "met"], targets(
                 runs, data["leaks"], args)), "", "### Throughput and latency", ""]
    rows = []
    for r in runs:
        errors = sum(r["errors"].values())
        rows.append([r["config"], f"/{r['endpoint']}", r["concurrency"],
                     f"{r['throughput']:.1f}", pct(r["ratio"]), f"{r['p50_ms']:.0f}",
                     f"{r['p95_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['p99_over_p50']:.1f}",
                     *[pct(r["shares"][p]) for p in PHASES], f"{r['server_cpu_ms']:.1f}",
                     f"{r['ok']}" + (f" (+{errors} failed)" if errors else "")])
    lines += [md_table(["config", "endpoint", "conc.", "req/s", "of ceiling", "p50 ms",
                        "p95 ms", "p99 ms", "p99/p50", *PHASES, "CPU ms/req", "requests"],
                       rows), "",
              "Phases: shares of the server-side request time (Server-Timing). CPU ms/req: CPU "
              "time of the API and worker processes per request; the model's own, at the "
              "ceiling's best batch size: " + ", ".join(
                  f"{op} {p['cpu_ms_per_op']:.1f} ms" for op, p in top.items()) + ".", "",
              "### Memory (RSS, MiB)", ""]
    rows = []
    for config, mem in data["memory"].items():
        for process in mem["idle"]:
            rows.append([config, process, mem["idle"][process], round(mem["load"][process], 1),
                         mem["peak"][process]])
    lines.append(md_table(["config", "process", "idle", "under load (max)",
                           "peak over its life (VmHWM)"], rows))
    if data["leaks"]:
        rows = [[leak["config"], name, leak["idle"][name], leak["first"][name],
                 leak["total"][name], f"{leak['growth'][name]:+.1%}"]
                for leak in data["leaks"] for name in leak["first"]]
        lines += ["", f"Leak check: /swap at concurrency {args.leak_concurrency} on a fresh "
                  "stack.", "", md_table(["config", "process", "idle",
                                          f"after {args.leak_first}", f"after {args.leak_total}",
                                          "growth"], rows)]
    return "\n".join(lines)


def plot(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = data["runs"]
    endpoints = list(dict.fromkeys(r["endpoint"] for r in runs))
    configs_seen = list(dict.fromkeys(r["config"] for r in runs))
    colours = dict(zip(CONFIGS, ("tab:blue", "tab:orange", "tab:green", "tab:purple"),
                       strict=True))

    def series(config, endpoint, key):
        chosen = [r for r in runs if (r["config"], r["endpoint"]) == (config, endpoint)]
        return [r["concurrency"] for r in chosen], [r[key] for r in chosen]

    # Throughput as a share of the ceiling
    fig, axes = plt.subplots(1, len(endpoints), figsize=(4.2 * len(endpoints), 3.8),
                             squeeze=False)
    for ax, endpoint in zip(axes[0], endpoints, strict=True):
        for config in configs_seen:
            x, y = series(config, endpoint, "ratio")
            ax.plot(x, [100 * v for v in y], marker="o", color=colours.get(config), label=config)
        ax.axhline(85, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(c) for c in x])
        ax.set_title(f"/{endpoint}")
        ax.set_xlabel("concurrent clients")
        ax.set_ylim(0, 110)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("served throughput, % of the ceiling")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "served-throughput.png", dpi=110)
    plt.close(fig)

    # Latency percentiles
    fig, axes = plt.subplots(1, len(endpoints), figsize=(4.2 * len(endpoints), 3.8),
                             squeeze=False)
    for ax, endpoint in zip(axes[0], endpoints, strict=True):
        for config in configs_seen:
            for key, style in (("p50_ms", "-"), ("p99_ms", "--")):
                x, y = series(config, endpoint, key)
                ax.plot(x, y, style, marker="o", color=colours.get(config),
                        label=f"{config} {key[:3]}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(c) for c in x])
        ax.set_yscale("log")
        ax.set_title(f"/{endpoint}")
        ax.set_xlabel("concurrent clients")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("latency, ms (p50 solid, p99 dashed)")
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "served-latency.png", dpi=110)
    plt.close(fig)

    # Where a /swap's time goes
    chosen = [r for r in runs if r["endpoint"] == "swap"]
    if chosen:
        fig, ax = plt.subplots(figsize=(8, 0.32 * len(chosen) + 1.2))
        labels = [f"{r['config']}, {r['concurrency']}" for r in chosen]
        left = [0.0] * len(chosen)
        phase_colours = ("tab:blue", "tab:grey", "tab:orange", "tab:red", "tab:olive")
        for phase, colour in zip(PHASES, phase_colours, strict=True):
            widths = [100 * r["shares"][phase] for r in chosen]
            ax.barh(labels, widths, left=left, color=colour, label=phase)
            left = [a + b for a, b in zip(left, widths, strict=True)]
        ax.invert_yaxis()
        ax.set_xlabel("% of a /swap's server-side time (configuration, concurrent clients)")
        ax.legend(fontsize=8, ncol=5, loc="lower center", bbox_to_anchor=(0.5, 1.0))
        fig.tight_layout()
        fig.savefig(out / "served-phases.png", dpi=110)
        plt.close(fig)


# ---------------------------------------------------------------------------------------------


def main() -> None:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=defaults.MODELS_DIR / "sprites")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--configs", type=csv_words, default=list(CONFIGS))
    parser.add_argument("--endpoints", type=csv_words, default=list(ENDPOINTS))
    parser.add_argument("--concurrency", type=csv_ints, default=[1, 8, 32, 64])
    parser.add_argument("--requests", type=int, default=1000, help="timed requests per run, "
                        "at most")
    parser.add_argument("--seconds", type=float, default=4.0, help="time per run, at most")
    parser.add_argument("--max-batch", type=int, help="VDIS_MAX_BATCH of the batched configs "
                        f"(default: the service's, {defaults.MAX_BATCH})")
    parser.add_argument("--max-wait-ms", type=float, help="VDIS_MAX_WAIT_MS of the batched "
                        f"configs (default: the service's, {defaults.MAX_WAIT_MS:g})")
    parser.add_argument("--worker-threads", type=int, default=0, help="onnxruntime threads "
                        "of a Redis worker's one call at a time; 0: the cores shared among the "
                        "workers")
    parser.add_argument("--upload-size", type=int, default=64, choices=(64, 256))
    parser.add_argument("--ceiling-batches", type=csv_ints, default=list(ceiling.BATCHES))
    parser.add_argument("--ceiling-seconds", type=float, default=0.5)
    parser.add_argument("--target-concurrency", type=int, default=32)
    parser.add_argument("--leak-configs", type=csv_words, default=["batched", "redis-1"])
    parser.add_argument("--leak-first", type=int, default=200)
    parser.add_argument("--leak-total", type=int, default=2000)
    # 32: batches reach MAX_BATCH from the start, so onnxruntime's memory arena is at its high
    # water mark by the first reading and what grows after is a leak (at 8, a larger batch seen
    # late grew a worker's arena by 13% once)
    parser.add_argument("--leak-concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    args = parser.parse_args()
    wanted = configs(args)
    unknown = set(args.configs + args.leak_configs) - set(wanted)
    if unknown:
        parser.error(f"unknown configurations {sorted(unknown)}; there are {CONFIGS}")

    info = machine()
    print(machine_line(info))
    print("ceiling (onnxruntime in-process: one call, calls side by side, spinning):")
    ops = [ENDPOINTS[e][2] for e in args.endpoints]
    points = []
    for name in ceiling.ONNX_BACKENDS:
        backend = ceiling.OnnxBackend(args.model_dir, name)
        points += ceiling.sweep(backend, ops, args.ceiling_batches, args.ceiling_seconds)
        del backend
    top = ceiling.best(points)
    best = {op: max((top[b][op] for b in top), key=lambda p: p.ops_per_s).__dict__
            for op in ops}

    clips = upload_clips(args.upload_size)
    uploads = (f"the 4 shipped Sprites clips as {args.upload_size}x{args.upload_size} 8-frame "
               f"H.264 MP4s ({min(map(len, clips))}-{max(map(len, clips))} bytes)")
    logs = Path(tempfile.mkdtemp(prefix="vdis-bench-"))
    runs, mem = [], {}
    for name in args.configs:
        config = wanted[name]
        with running(config, args, logs) as stack, tempfile.TemporaryDirectory() as folder:
            time.sleep(1.0)
            idle = memory(stack.pids())
            with MemoryWatch(stack.pids()) as watch:
                for endpoint in args.endpoints:
                    files = request_files(Path(folder), endpoint, stack.port, clips)
                    for concurrency in args.concurrency:
                        used = {n: cpu_s(pid) for n, pid in stack.pids().items()}
                        warmup = min(concurrency, WARMUP_MAX)
                        result = load(stack.port, files, concurrency, args.requests,
                                      args.seconds, warmup)
                        used = sum(cpu_s(pid) - used[n] for n, pid in stack.pids().items())
                        run = summarise(name, endpoint, result, best[ENDPOINTS[endpoint][2]])
                        # warm-up requests included: the CPU counters cannot tell them apart
                        run["server_cpu_ms"] = 1000 * used / (result["sent"] + warmup)
                        runs.append(run)
                        print(f"  {name:9} /{endpoint:8} c={concurrency:<3} "
                              f"{run['throughput']:6.1f}/s ({pct(run['ratio'])} of ceiling) "
                              f"p50 {run['p50_ms']:6.0f} p99 {run['p99_ms']:6.0f} ms; model "
                              f"{pct(run['shares']['model'])}, queue "
                              f"{pct(run['shares']['queue'])}; {run['errors'] or ''}")
            peak = {n: round(rss_mb(pid, "VmHWM") or 0.0, 1) for n, pid in stack.pids().items()}
            mem[name] = {"idle": idle, "load": watch.peaks, "peak": peak}
    leaks = [leak_check(wanted[name], args, logs, clips) for name in args.leak_configs]

    data = {"machine": info, "arguments": {k: str(v) for k, v in vars(args).items()},
            "environment": {k: v for k, v in os.environ.items() if k.startswith("VDIS_")},
            "uploads": uploads, "ceiling": best, "runs": runs, "memory": mem, "leaks": leaks}
    text = markdown(data, args)
    print(text)
    write_results(args.out, "served", data, text)
    plot(data, args.out)
    print(f"wrote {args.out}/served.json, served.md, served-*.png; server logs in {logs}")


if __name__ == "__main__":
    main()
