"""What the benchmark scripts share: the machine they ran on, the uploads they send, process
memory from /proc, a free loopback port, and results written as JSON + markdown into an `--out`
folder. (The tests that start servers take their ports from here too.)"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "service" / "static" / "samples"  # four shipped Sprites clips, 256x256, 8 frames


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> dict:
    """CPU model, cores, memory, library versions and the load average when it was called."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    memory_gb = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        memory_gb = round(total_kb / 2**20, 1)
    import onnxruntime as ort

    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gb": memory_gb, "python": platform.python_version(),
            "onnxruntime": ort.__version__, "onnxruntime_build": ort.get_device(),
            "load_average": list(os.getloadavg()),
            "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def loaded(info: dict) -> bool:
    """Other work was running when the benchmark started (1-minute load above a quarter core)."""
    return info["load_average"][0] > 0.25


def machine_line(info: dict) -> str:
    line = (f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB, onnxruntime "
            f"{info['onnxruntime']} ({info['onnxruntime_build']} build), Python {info['python']}; "
            f"{info['when']}; load average {info['load_average'][0]:.2f} at the start")
    if loaded(info):
        line += " (**the machine was busy with other work: figures are distorted**)"
    return line


def upload_clips(size: int = 64) -> list[bytes]:
    """The shipped Sprites samples as `size`x`size` 8-frame H.264 MP4s, as the service writes
    them (service.videoio.encode_mp4); `size` 256 gives the files as shipped."""
    from service import videoio

    files = sorted(SAMPLES.glob("*.mp4"))
    if size == 256:
        return [f.read_bytes() for f in files]
    return [videoio.encode_mp4(videoio.read_all_frames(f.read_bytes(), size=size), 8.0)
            for f in files]


def rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    """Resident memory of a live process in MiB (`VmHWM`: its peak so far); None once gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a live process has used (its threads included); 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the two nearest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(out: Path, name: str, data: dict, markdown: str) -> None:
    """`out/name.json` (every figure) and `out/name.md` (the tables docs/benchmarks.md shows)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown.rstrip() + "\n")


def csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def csv_words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]
