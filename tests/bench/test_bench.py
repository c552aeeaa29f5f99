"""The benchmark scripts run end to end with tiny counts on the tiny model (smoke tests: the
figures themselves are not checked, only that every table, plot and check is produced)."""

import json
import subprocess
import sys

import pytest
import redis

from service.settings import REPO
from tests.conftest import tiny_model
from tests.service.redisutil import REDIS_URL


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_ceiling_measures_each_backend_operation_and_batch(tiny_model_dir, tmp_path):
    from model.checkpoint import save_model

    checkpoint = tmp_path / "tiny.safetensors"
    save_model(tiny_model(), checkpoint)
    out = tmp_path / "out"
    run("bench.ceiling", "--model-dir", str(tiny_model_dir), "--checkpoint", str(checkpoint),
        "--batches", "1,2", "--ops", "encode,swap,generate", "--seconds", "0.01",
        "--out", str(out))
    data = json.loads((out / "ceiling.json").read_text())
    measured = {(p["backend"], p["op"], p["batch"]) for p in data["points"]}
    assert measured == {(b, op, n) for b in ("onnxruntime", "onnxruntime-side-by-side",
                                                         "onnxruntime-spinning", "pytorch")
                        for op in ("encode", "swap", "generate") for n in (1, 2)}
    assert all(p["ops_per_s"] > 0 and p["cpu_ms_per_op"] > 0 for p in data["points"])
    assert set(data["best"]["pytorch"]) == {"encode", "swap", "generate"}
    table = (out / "ceiling.md").read_text()
    assert "| onnxruntime | swap |" in table and "best" in table
    assert (out / "ceiling.png").stat().st_size > 10_000


def test_served_drives_a_real_server_and_writes_the_report(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    with redis.Redis.from_url(REDIS_URL) as client:
        before = set(client.scan_iter("vdis-bench-*"))
    stdout = run("bench.served", "--model-dir", str(tiny_model_dir), "--redis-url", REDIS_URL,
                 "--configs", "batched,redis-1", "--endpoints", "encode,swap",
                 "--concurrency", "1,2", "--requests", "6", "--seconds", "5",
                 "--ceiling-batches", "1", "--ceiling-seconds", "0.01", "--target-concurrency",
                 "2", "--leak-configs", "batched", "--leak-first", "3", "--leak-total", "6",
                 "--out", str(out))
    data = json.loads((out / "served.json").read_text())
    runs = {(r["config"], r["endpoint"], r["concurrency"]): r for r in data["runs"]}
    assert set(runs) == {(c, e, n) for c in ("batched", "redis-1") for e in ("encode", "swap")
                         for n in (1, 2)}
    for r in runs.values():
        assert r["ok"] > 0 and not r["errors"], r
        assert r["p50_ms"] <= r["p99_ms"] and r["ratio"] > 0 and r["server_cpu_ms"] > 0
        assert abs(sum(r["shares"].values()) - 1) < 0.02 and r["shares"]["model"] > 0
    assert set(data["memory"]["redis-1"]["idle"]) == {"api", "worker-1"}
    assert data["leaks"][0]["config"] == "batched" and data["leaks"][0]["total"]["api"] > 0
    report = (out / "served.md").read_text()
    assert "### Targets" in report and "at concurrency 2, batching on: served / ceiling" in report
    for plot in ("served-throughput.png", "served-latency.png", "served-phases.png"):
        assert (out / plot).stat().st_size > 10_000
    assert "ceiling" in stdout
    with redis.Redis.from_url(REDIS_URL) as client:  # the run's keys are gone
        assert set(client.scan_iter("vdis-bench-*")) <= before


def test_report_replaces_only_the_text_between_markers():
    from bench.report import fill

    doc = "intro\n<!-- served -->\nold table\n<!-- /served -->\nafter\n"
    assert fill(doc, "served", "| new |\n") == (
        "intro\n<!-- served -->\n| new |\n<!-- /served -->\nafter\n")
    with pytest.raises(ValueError, match="<!-- ceiling -->"):
        fill(doc, "ceiling", "x")
