"""The load generator, run as its own process: `concurrency` clients on keep-alive loopback
connections send ready-made HTTP/1.1 requests back to back (a closed loop) until `requests`
are answered or `seconds` have passed, after `warmup` untimed requests. Prints one JSON object.

It is a plain asyncio client on raw sockets: the requests are built once (files named on the
command line hold each request's exact bytes, cycled through), and answers are read by
Content-Length, so it takes little of the CPU it shares with the server on a small machine
(its own CPU time is reported).

    python -m bench.loadgen --port 8000 --concurrency 32 --requests 400 --seconds 10 req-*.http
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from pathlib import Path

TIMING = re.compile(rb"(\w+);dur=([\d.]+)")
REQUEST_TIMEOUT_S = 120.0


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], int]:
    """(status, headers with lower-case names, body length) of one HTTP/1.1 answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            name, value = line.split(b":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        size = 0
        while True:
            chunk = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(chunk + 2)
            size += chunk
            if chunk == 0:
                return status, headers, size
    length = int(headers.get(b"content-length", b"0"))
    await reader.readexactly(length)
    return status, headers, length


class Client:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> tuple[int, dict[bytes, bytes], int]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        try:
            answer = await read_answer(self.reader)
        except BaseException:
            self.close()
            raise
        if answer[1].get(b"connection", b"").lower() == b"close":
            self.close()
        return answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def drive(host: str, port: int, requests: list[bytes], concurrency: int, count: int,
                seconds: float, warmup: int) -> dict:
    clients = [Client(host, port) for _ in range(concurrency)]
    taken = 0

    async def loop(client: Client, limit: int, deadline: float, records: list | None):
        nonlocal taken
        while taken < limit and time.perf_counter() < deadline:
            request = requests[taken % len(requests)]
            taken += 1
            started = time.perf_counter()
            try:
                status, headers, size = await asyncio.wait_for(client.send(request),
                                                               REQUEST_TIMEOUT_S)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
                client.close()
                status, headers, size = type(error).__name__, {}, 0
            if records is not None:
                records.append((status, time.perf_counter() - started, size,
                                headers.get(b"server-timing", b"")))

    await asyncio.gather(*[loop(c, warmup, float("inf"), None) for c in clients])
    taken, records = 0, []
    cpu, started = os.times(), time.perf_counter()
    await asyncio.gather(*[loop(c, count, started + seconds, records) for c in clients])
    elapsed = time.perf_counter() - started
    used = os.times()
    for client in clients:
        client.close()

    ok = [r for r in records if r[0] == 200]
    errors: dict[str, int] = {}
    for status, *_ in records:
        if status != 200:
            errors[str(status)] = errors.get(str(status), 0) + 1
    phases: dict[str, list[float]] = {}
    for *_, timing in ok:
        for name, ms in TIMING.findall(timing):
            phases.setdefault(name.decode(), []).append(float(ms))
    return {"concurrency": concurrency, "sent": len(records), "ok": len(ok), "errors": errors,
            "elapsed_s": elapsed, "throughput": len(ok) / elapsed if elapsed else 0.0,
            "latency_ms": [1000 * r[1] for r in ok], "bytes_out": sum(r[2] for r in ok),
            "phases_ms": phases,
            "client_cpu_s": (used.user + used.system) - (cpu.user + cpu.system)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=200, help="timed requests at most")
    parser.add_argument("--seconds", type=float, default=10.0, help="time to send them in")
    parser.add_argument("--warmup", type=int, default=0, help="untimed requests first")
    parser.add_argument("files", nargs="+", type=Path, help="files holding whole requests")
    args = parser.parse_args()
    requests = [f.read_bytes() for f in args.files]
    result = asyncio.run(drive(args.host, args.port, requests, args.concurrency, args.requests,
                               args.seconds, args.warmup))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
