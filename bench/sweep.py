"""vdis under Apache Bench in several configurations, interleaved, to choose the CPU defaults.

Each configuration is a set of environment variables (VDIS_*, or UVICORN_* for uvicorn's own
options) on top of the current ones; every configuration runs once per round, in turn, so
drift on the machine falls on all of them. Load and figures as bench/compare.py's (a new
connection per request, the same 64x64 8-frame MP4 uploads, CPU ms per request of the server's
process tree, and its workers'). A configuration with VDIS_REDIS_URL also starts WORKERS=n
Redis workers (1 by default) with the same variables. With `--leak`, each configuration also
answers `--leak-total` /swap requests on a fresh server, and its RSS after the first
`--leak-first` and after all is printed.

    .venv/bin/python -m bench.sweep --config default: \\
        --config 'runs2:VDIS_MAX_CONCURRENT_RUNS=2' --concurrency 1,32 --endpoints swap
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, csv_ints, csv_words, machine, machine_line, rss_mb  # noqa: E402
from bench.compare import ENDPOINTS, Server, ab, body_files, systems, tree_cpu_s  # noqa: E402


def parse_config(text: str) -> tuple[str, dict[str, str]]:
    """'name:KEY=VALUE,KEY=VALUE' (or 'name:' for the defaults) -> (name, env)."""
    name, _, assignments = text.partition(":")
    env = {}
    for item in filter(None, re.split(r",(?=[A-Z][A-Z0-9_]*=)", assignments)):  # 1,16 stays
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE")
        env[key.strip()] = value.strip()
    return name, env


class Stack:
    """The API server, and with VDIS_REDIS_URL in the configuration, `workers` Redis workers
    (`python -m service.worker`, the same environment) started first."""

    def __init__(self, env: dict[str, str], model_dir: Path, log: Path):
        env = dict(env)
        count = int(env.pop("WORKERS", "1")) if env.get("VDIS_REDIS_URL") else 0
        full = {**os.environ, **env, "VDIS_MODEL_DIR": str(model_dir)}
        self.workers = [subprocess.Popen([sys.executable, "-m", "service.worker"], cwd=REPO,
                                         env=full, stdout=log.with_suffix(f".w{i}").open("wb"),
                                         stderr=subprocess.STDOUT)
                        for i in range(count)]
        saved = dict(os.environ)
        os.environ.update(env)
        try:  # Server passes os.environ on to the process it starts
            self.server = Server(systems(model_dir, Path())["vdis"], model_dir, log)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.server.wait_ready()

    def cpu_s(self) -> float:
        return self.server.cpu_s() + sum(tree_cpu_s(w.pid) for w in self.workers)

    def stop(self) -> None:
        self.server.stop()
        for worker in self.workers:
            worker.terminate()
            worker.wait(30)


def leak(env: dict[str, str], model_dir: Path, body: Path, first: int, total: int,
         concurrency: int, folder: Path) -> dict:
    server = Stack(env, model_dir, folder / "leak.log")
    try:
        url = server.server.url + ENDPOINTS["swap"][0]
        ab(url, body, concurrency, first, folder)
        after_first = rss_mb(server.server.process.pid)
        ab(url, body, concurrency, total - first, folder)
        after_all = rss_mb(server.server.process.pid)
    finally:
        server.stop()
    return {"first": after_first, "total": after_all, "growth": after_all / after_first - 1}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=parse_config, action="append", required=True,
                   help="name:KEY=VALUE,... (repeat; 'name:' alone: the defaults)")
    p.add_argument("--model-dir", type=Path, default=REPO / "models" / "sprites")
    p.add_argument("--endpoints", type=csv_words, default=["swap", "encode"])
    p.add_argument("--concurrency", type=csv_ints, default=[1, 32])
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--leak", action="store_true")
    p.add_argument("--leak-first", type=int, default=200)
    p.add_argument("--leak-total", type=int, default=2000)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    where = machine_line(machine())
    print(where, flush=True)
    rows: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bodies = body_files(folder)
        for round_ in range(args.rounds):
            for name, env in args.config:
                server = Stack(env, args.model_dir, folder / f"{name}.log")
                try:
                    for endpoint in args.endpoints:
                        url = server.server.url + ENDPOINTS[endpoint][0]
                        for c in args.concurrency:
                            ab(url, bodies[endpoint], c, max(c, 16), folder)  # untimed
                            cpu = server.cpu_s()
                            r = ab(url, bodies[endpoint], c, args.requests, folder)
                            r["cpu_ms"] = 1000 * (server.cpu_s() - cpu) / max(r["complete"], 1)
                            rows.setdefault((name, endpoint, c), []).append(r)
                            print(f"round {round_ + 1} {name:14} /{endpoint:6} c={c:<3} "
                                  f"{r['req_per_s']:7.1f} req/s, p50 {r['p50_ms']:5.0f} ms, "
                                  f"{r['cpu_ms']:5.1f} ms CPU each, {r['errors']} errors",
                                  flush=True)
                finally:
                    server.stop()
                time.sleep(1)
        leaks = {}
        if args.leak:
            for name, env in args.config:
                leaks[name] = leak(env, args.model_dir, bodies["swap"], args.leak_first,
                                   args.leak_total, 32, folder)
                print(f"leak {name:14} RSS after {args.leak_first}: "
                      f"{leaks[name]['first']:.0f} MiB, after {args.leak_total}: "
                      f"{leaks[name]['total']:.0f} MiB ({100 * leaks[name]['growth']:+.1f}%)",
                      flush=True)
    print("\n| config | endpoint | c | req/s (median) | rounds | p50 ms | CPU ms |")
    print("|---|---|---:|---:|---|---:|---:|")
    summary = []
    for (name, endpoint, c), runs in rows.items():
        med = statistics.median(r["req_per_s"] for r in runs)
        summary.append({"config": name, "endpoint": endpoint, "concurrency": c,
                        "req_per_s": med, "rounds": [r["req_per_s"] for r in runs],
                        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                        "cpu_ms": statistics.median(r["cpu_ms"] for r in runs)})
        s = summary[-1]
        print(f"| {name} | /{endpoint} | {c} | {med:.1f} | "
              f"{' / '.join(f'{x:.1f}' for x in s['rounds'])} | {s['p50_ms']:.0f} | "
              f"{s['cpu_ms']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": where, "runs": summary,
                                         "leaks": leaks}, indent=2))


if __name__ == "__main__":
    main()
