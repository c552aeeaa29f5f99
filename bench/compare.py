"""vdis against its peers and the in-process pipeline limit, in one interleaved run, driven by
Apache Bench (`ab`, Debian's apache2-utils) from outside the servers.

Systems, each started alone on a free loopback port, measured, then stopped:
- `vdis`: `python -m uvicorn service.app:app` with the service's defaults;
- `plain`: bench/peers/plain_app.py (sync FastAPI routes, no batching, 1-thread sessions);
- `bento`: bench/peers/bento_service.py under `bentoml serve` from the bench venv
  (.venv-bench, made by `make bench-peers`; skipped, with the reason printed, without it);
- the pipeline limit: bench/peers/pipeline.py in its own process (the same work, no HTTP; the
  best of batch 1-16 with 1 or 2 sessions), and `pipeline+domain`, the same with the domain
  check vdis adds to every answer by default (frame 0 of each upload decoded back).
Round-robin over the systems, `--rounds` times (2), so slow drift on the machine falls on all.

Load: `ab` with a new connection per request (no keep-alive, for every system alike), the same
multipart body for every request: /encode one 64x64 8-frame MP4 (`video`), /swap two
(`appearance`, `motion`; the first two shipped samples, as bench/served.py makes them), at each
`--concurrency`, `--requests` timed after max(concurrency, 16) untimed ones. CPU ms per request
is the server's process tree's CPU time (its workers and children included) over the timed
requests.

Ratios, at the highest concurrency measured (32 by default) and at 1: vdis / pipeline limit
and vdis / best peer for /swap; vdis / limit for /encode; vdis p50 / plain p50 at 1.

    .venv/bin/python -m bench.compare --out docs/benchmarks        # ~8 minutes on 2 cores
    .venv/bin/python -m bench.compare --requests 20 --concurrency 1,4 --systems vdis,plain

Figures mean something only on an otherwise idle machine (the machine line says its load).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
    upload_clips,
    write_results,
)
from bench.served import BOUNDARY, http_request  # noqa: E402

SYSTEMS = ("vdis", "plain", "bento")
# the pipeline limit (the issue's), and the same with the domain check vdis does by default
LIMIT_WITH_DOMAIN = "pipeline+domain"
LIMITS = ("pipeline", LIMIT_WITH_DOMAIN)
PEERS = ("plain", "bento")
ENDPOINTS = {"swap": ("/swap", ("appearance", "motion")), "encode": ("/encode", ("video",))}
BENCH_VENV = REPO / ".venv-bench"
AB_TIMEOUT_S = 120
# Untimed requests before each run, at its concurrency: one per client, and at least this many
# (BentoML's dispatcher learns its batches' latency over its first calls).
WARMUP_MIN = 16


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass
class System:
    name: str
    command: list[str]
    ready_path: str


def systems(model_dir: Path, bench_venv: Path) -> dict[str, System]:
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}"]
    return {
        "vdis": System("vdis", [*uvicorn, "service.app:app"], "/ready"),
        "plain": System("plain", [*uvicorn, "bench.peers.plain_app:app"], "/health"),
        "bento": System("bento", [str(bench_venv / "bin" / "bentoml"), "serve",
                                  "bench.peers.bento_service:Peer", "--host", "127.0.0.1",
                                  "--port", "{port}", "--working-dir", str(REPO)], "/readyz"),
    }


def unavailable(name: str, bench_venv: Path) -> str | None:
    """Why a system cannot run here, or None."""
    if name == "bento" and not (bench_venv / "bin" / "bentoml").exists():
        return (f"no BentoML venv at {bench_venv} (make it with `make bench-peers`, or "
                f"`python -m venv {bench_venv.name} && {bench_venv.name}/bin/pip install -e "
                "'.[bench-peers]'`)")
    return None


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and all its live descendants (threads included), plus what its
    reaped children used."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grown = {pid}, True
    while grown:
        children = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    reaped = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime
    except (FileNotFoundError, ProcessLookupError):
        pass
    return sum(cpu_s(p) for p in tree) + reaped


class Server:
    """One system as a subprocess in its own process group (bentoml serve starts workers)."""

    def __init__(self, system: System, model_dir: Path, log: Path):
        self.system, self.log = system, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [part.replace("{port}", str(self.port)) for part in system.command]
        env = {**os.environ, "VDIS_MODEL_DIR": str(model_dir)}
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.system.name} exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + self.system.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.system.name}: not ready after {timeout_s} s ({self.log})")

    def cpu_s(self) -> float:
        return tree_cpu_s(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# ---------------------------------------------------------------------------------------------
# Apache Bench


def ab_binary() -> str:
    found = shutil.which("ab")
    if not found:
        raise RuntimeError("Apache Bench (ab) is not installed: `apt-get install apache2-utils` "
                           "(`make bench-peers` does it where it runs as root)")
    return found


def body_files(folder: Path) -> dict[str, Path]:
    """endpoint -> a file holding its multipart body (the uploads of bench.served's requests)."""
    clips = upload_clips(64)
    files = {}
    for endpoint, (path, fields) in ENDPOINTS.items():
        request = http_request(path, 0, list(zip(fields, clips, strict=False)))
        files[endpoint] = folder / f"{endpoint}.body"
        files[endpoint].write_bytes(request.split(b"\r\n\r\n", 1)[1])  # the body, no head
    return files


def parse_ab(stdout: str, per_request_tsv: str) -> dict:
    """ab's summary -> counts and seconds; p50/p99 latency (ms) from its -g file of each
    request's total time (whole ms; ab's own -e percentiles are wrong near 100 at small -n)."""
    def number(label: str) -> float:
        found = re.search(rf"^{label}:\s+([\d.]+)", stdout, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    failed = re.search(r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)",
                       stdout)
    # Length "failures" are answers whose size differs from the first one's: not errors.
    broken = sum(int(failed.group(i)) for i in (1, 2, 4)) if failed else 0
    complete, non_2xx = int(number("Complete requests")), int(number("Non-2xx responses"))
    seconds = number("Time taken for tests")  # whole ms: the rate below is ab's, finer
    times_ms = [float(line.split("\t")[4]) for line in per_request_tsv.splitlines()[1:] if line]
    ok = complete - non_2xx
    return {"complete": complete, "ok": ok, "errors": non_2xx + broken, "seconds": seconds,
            "req_per_s": number("Requests per second") * ok / complete if complete else 0.0,
            "p50_ms": percentile(times_ms, 50), "p99_ms": percentile(times_ms, 99)}


def ab(url: str, body: Path, concurrency: int, requests: int, folder: Path) -> dict:
    tsv = folder / "requests.tsv"
    command = [ab_binary(), "-q", "-n", str(max(requests, concurrency)), "-c", str(concurrency),
               "-s", str(AB_TIMEOUT_S), "-p", str(body),
               "-T", f"multipart/form-data; boundary={BOUNDARY}", "-g", str(tsv), url]
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=AB_TIMEOUT_S * max(requests, 1))
    if done.returncode != 0:
        raise RuntimeError(f"ab failed on {url}: {done.stderr[-2000:]}")
    return parse_ab(done.stdout, tsv.read_text())


def measure_server(server: Server, bodies: dict[str, Path], endpoints: list[str],
                   concurrency: list[int], requests: int, folder: Path, log=print) -> list[dict]:
    runs = []
    for endpoint in endpoints:
        url = server.url + ENDPOINTS[endpoint][0]
        for c in concurrency:
            ab(url, bodies[endpoint], c, max(c, WARMUP_MIN), folder)  # untimed
            cpu = server.cpu_s()
            result = ab(url, bodies[endpoint], c, requests, folder)
            result["cpu_ms"] = 1000 * (server.cpu_s() - cpu) / max(result["complete"], 1)
            result.update(system=server.system.name, endpoint=endpoint, concurrency=c)
            log(f"  {server.system.name:6} /{endpoint:6} c={c:<3} {result['req_per_s']:7.1f} "
                f"req/s, p50 {result['p50_ms']:6.0f} ms, p99 {result['p99_ms']:6.0f} ms, "
                f"{result['cpu_ms']:6.1f} ms CPU each, {result['errors']} errors")
            runs.append(result)
    return runs


def measure_pipeline(model_dir: Path, endpoints: list[str], batches: list[int],
                     sessions: list[int], seconds: float, folder: Path, log=print) -> list[dict]:
    """One bench/peers/pipeline.py process; its best point per endpoint, as rows like ab's."""
    out = folder / "pipeline.json"
    ops = [*endpoints, *(f"{e}+domain" for e in endpoints)]
    command = [sys.executable, "-m", "bench.peers.pipeline", "--model-dir", str(model_dir),
               "--ops", ",".join(ops), "--batches", ",".join(map(str, batches)),
               "--sessions", ",".join(map(str, sessions)), "--seconds", str(seconds),
               "--json", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"the pipeline failed: {done.stderr[-2000:]}")
    rows = []
    for op, p in json.loads(out.read_text())["best"].items():
        endpoint, _, check = op.partition("+")
        system = LIMIT_WITH_DOMAIN if check else "pipeline"
        rows.append({"system": system, "endpoint": endpoint, "concurrency": None,
                     "req_per_s": p["ops_per_s"], "cpu_ms": p["cpu_ms_per_op"],
                     "batch": p["batch"], "sessions": p["sessions"], "errors": 0})
        log(f"  {system:15} /{endpoint:6} {p['ops_per_s']:7.1f} req/s (B={p['batch']}, "
            f"{p['sessions']} session(s)), {p['cpu_ms_per_op']:6.1f} ms CPU each")
    return rows


# ---------------------------------------------------------------------------------------------
# Report


def summary(runs: list[dict]) -> dict[tuple, dict]:
    """(system, endpoint, concurrency) -> its rounds' figures and their medians."""
    grouped: dict[tuple, list[dict]] = {}
    for r in runs:
        grouped.setdefault((r["system"], r["endpoint"], r["concurrency"]), []).append(r)
    table = {}
    for key, rounds in grouped.items():
        row = {"rounds": [r["req_per_s"] for r in rounds],
               "req_per_s": statistics.median(r["req_per_s"] for r in rounds),
               "cpu_ms": statistics.median(r["cpu_ms"] for r in rounds),
               "errors": sum(r["errors"] for r in rounds)}
        if key[0] not in LIMITS:
            row["p50_ms"] = statistics.median(r["p50_ms"] for r in rounds)
            row["p99_ms"] = statistics.median(r["p99_ms"] for r in rounds)
        else:
            row["points"] = [f"B={r['batch']} x{r['sessions']}" for r in rounds]
        table[key] = row
    return table


def ratios(table: dict[tuple, dict], concurrency: list[int]) -> list[dict]:
    """The issue's bar: vdis against the limit and the best peer at the highest concurrency,
    and vdis's p50 against the plain app's at the lowest. Only those whose systems ran."""
    high, low = max(concurrency), min(concurrency)
    found = []

    def add(what: str, vdis: dict | None, other: dict | None, field: str = "req_per_s"):
        if vdis and other:
            found.append({"ratio": what, "vdis": vdis[field], "other": other[field],
                          "value": vdis[field] / other[field]})

    for endpoint in ENDPOINTS:
        vdis = table.get(("vdis", endpoint, high))
        add(f"/{endpoint} at {high}: vdis / pipeline limit", vdis,
            table.get(("pipeline", endpoint, None)))
        add(f"/{endpoint} at {high}: vdis / pipeline limit with vdis's domain check", vdis,
            table.get((LIMIT_WITH_DOMAIN, endpoint, None)))
        peers = [(p, table[(p, endpoint, high)]) for p in PEERS if (p, endpoint, high) in table]
        if peers:
            name, best = max(peers, key=lambda kv: kv[1]["req_per_s"])
            add(f"/{endpoint} at {high}: vdis / best peer ({name})", vdis, best)
        add(f"/{endpoint} at {low}: vdis p50 / plain p50", table.get(("vdis", endpoint, low)),
            table.get(("plain", endpoint, low)), field="p50_ms")
    return found


def markdown(data: dict) -> str:
    table = {tuple(row["key"]): row for row in data["table"]}
    rows = []
    for (system, endpoint, c), row in table.items():
        rounds = " / ".join(f"{x:.1f}" for x in row["rounds"])
        if system in LIMITS:
            rows.append([system, f"/{endpoint}", "-", rounds, "-", "-", f"{row['cpu_ms']:.1f}",
                         "best: " + ", ".join(row["points"])])
        else:
            rows.append([system, f"/{endpoint}", c, rounds, f"{row['p50_ms']:.0f}",
                         f"{row['p99_ms']:.0f}", f"{row['cpu_ms']:.1f}", row["errors"]])
    lines = [f"Machine: {machine_line(data['machine'])}.", "",
             f"{data['rounds']} interleaved rounds (req/s of each, in order); p50, p99 and CPU "
             f"the rounds' medians. ab, a new connection per request, {data['requests']} timed "
             "requests per run; CPU: the server's process tree per request; the pipeline: the "
             "same work in one process with no HTTP, its best batch (B) and sessions.", "",
             md_table(["system", "endpoint", "concurrency", "req/s", "p50 ms", "p99 ms",
                       "CPU ms/req", "errors"], rows), "",
             md_table(["ratio", "value"], [[r["ratio"], f"{r['value']:.2f}"]
                                           for r in data["ratios"]])]
    for name, why in data["skipped"].items():
        lines += ["", f"Not measured: {name}: {why}."]
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = {tuple(row["key"]): row for row in data["table"]}
    servers = [s for s in SYSTEMS if any(k[0] == s for k in table)]
    fig, axes = plt.subplots(1, len(ENDPOINTS), figsize=(10, 4.2))
    for ax, endpoint in zip(axes, ENDPOINTS, strict=True):
        levels = data["concurrency"]
        width = 0.8 / max(len(servers), 1)
        for i, system in enumerate(servers):
            heights = [table.get((system, endpoint, c), {}).get("req_per_s", 0) for c in levels]
            ax.bar([x + (i - (len(servers) - 1) / 2) * width for x in range(len(levels))],
                   heights, width, label=system)
        for system, style, label in (("pipeline", "--", "pipeline limit"),
                                     (LIMIT_WITH_DOMAIN, ":", "limit + domain check")):
            limit = table.get((system, endpoint, None))
            if limit:
                ax.axhline(limit["req_per_s"], color="black", linestyle=style, label=label)
        ax.set_xticks(range(len(levels)), [f"c={c}" for c in levels])
        ax.set_title(f"/{endpoint}")
        ax.set_ylabel("requests per second")
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # room for the legend above the bars and line
        ax.legend(fontsize=8, ncol=2, loc="upper left")
    fig.suptitle(f"vdis and its peers ({data['machine']['cores']} cores; "
                 f"median of {data['rounds']} rounds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / "models" / "sprites")
    parser.add_argument("--systems", type=csv_words, default=list(SYSTEMS),
                        help="servers among vdis, plain, bento (the pipeline limit always runs)")
    parser.add_argument("--endpoints", type=csv_words, default=list(ENDPOINTS))
    parser.add_argument("--concurrency", type=csv_ints, default=[1, 32])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pipeline-batches", type=csv_ints, default=[1, 2, 4, 8, 16])
    parser.add_argument("--pipeline-sessions", type=csv_ints, default=[1, 2])
    parser.add_argument("--pipeline-seconds", type=float, default=1.0, help="per point")
    parser.add_argument("--bench-venv", type=Path, default=BENCH_VENV)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    args = parser.parse_args()
    unknown = set(args.systems) - set(SYSTEMS) or set(args.endpoints) - set(ENDPOINTS)
    if unknown:
        parser.error(f"unknown {sorted(unknown)}; systems {SYSTEMS}, endpoints "
                     f"{tuple(ENDPOINTS)}")
    ab_binary()

    info = machine()
    print(machine_line(info))
    known = systems(args.model_dir, args.bench_venv)
    skipped = {name: why for name in args.systems
               if (why := unavailable(name, args.bench_venv))}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}")
    chosen = [name for name in args.systems if name not in skipped]

    runs = []
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        bodies = body_files(folder)
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_} of {args.rounds}")
            runs += measure_pipeline(args.model_dir, args.endpoints, args.pipeline_batches,
                                     args.pipeline_sessions, args.pipeline_seconds, folder)
            for name in chosen:
                server = Server(known[name], args.model_dir, folder / f"{name}.log")
                try:
                    server.wait_ready()
                    runs += measure_server(server, bodies, args.endpoints, args.concurrency,
                                           args.requests, folder)
                finally:
                    server.stop()

    table = summary(runs)
    data = {"machine": info, "systems": chosen, "skipped": skipped, "rounds": args.rounds,
            "requests": args.requests, "concurrency": args.concurrency, "runs": runs,
            "table": [{"key": list(key), **row} for key, row in table.items()],
            "ratios": ratios(table, args.concurrency)}
    text = markdown(data)
    print(text)
    write_results(args.out, "peers", data, text)
    plot(data, args.out / "peers.png")
    print(f"wrote {args.out}/peers.json, peers.md, peers.png")


if __name__ == "__main__":
    main()
