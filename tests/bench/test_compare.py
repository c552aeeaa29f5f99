"""bench/compare.py end to end in its tiny mode against the shipped model: real servers, real
Apache Bench, real uploads (a smoke test: the figures are not checked, only that every row,
ratio and plot is produced). The BentoML peer runs where its venv (.venv-bench) exists and is
skipped with the reason otherwise; without `ab` the whole module is skipped with the reason."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from bench.compare import BENCH_VENV, LIMITS, unavailable
from service.settings import REPO
from tests.bench.test_bench import run

pytestmark = pytest.mark.skipif(
    shutil.which("ab") is None,
    reason="Apache Bench (ab) is not installed: apt-get install apache2-utils")

CONCURRENCY = (1, 4)
ENDPOINTS = ("swap", "encode")
WITH_DOMAIN = {f"/{e} at 4: vdis / pipeline limit with vdis's domain check" for e in ENDPOINTS}


def compare(out, systems: str, *extra: str) -> tuple[dict, str]:
    stdout = run("bench.compare", "--model-dir", str(REPO / "models" / "sprites"),
                 "--systems", systems, "--requests", "20", "--concurrency", "1,4",
                 "--rounds", "2", "--pipeline-batches", "1,2", "--pipeline-seconds", "0.2",
                 "--out", str(out), *extra)
    assert f"wrote {out}/peers.json" in stdout
    return json.loads((out / "peers.json").read_text()), stdout


def check_rows(data: dict, out, servers: tuple[str, ...]) -> None:
    rows = {tuple(row["key"]): row for row in data["table"]}
    assert set(rows) == ({(s, e, c) for s in servers for e in ENDPOINTS for c in CONCURRENCY}
                         | {(limit, e, None) for limit in LIMITS for e in ENDPOINTS})
    for key, row in rows.items():
        assert len(row["rounds"]) == 2 and row["req_per_s"] > 0, key
        assert row["errors"] == 0 and row["cpu_ms"] > 0, key
        if key[0] not in LIMITS:
            assert 0 < row["p50_ms"] <= row["p99_ms"], key
    table = (out / "peers.md").read_text()
    for system in (*LIMITS, *servers):
        assert f"| {system} | /swap |" in table and f"| {system} | /encode |" in table
    assert (out / "peers.png").stat().st_size > 10_000


def check_ratios(data: dict, out, expected: set[str]) -> None:
    ratios = {r["ratio"]: r["value"] for r in data["ratios"]}
    assert set(ratios) == expected
    assert all(math.isfinite(v) and v > 0 for v in ratios.values()), ratios
    for name in expected:
        assert f"| {name} |" in (out / "peers.md").read_text()


def test_compare_vdis_and_the_plain_app_and_say_why_bento_is_not_there(tmp_path):
    no_venv = tmp_path / "no-venv"
    data, stdout = compare(tmp_path, "vdis,plain,bento", "--bench-venv", str(no_venv))
    assert data["systems"] == ["vdis", "plain"] and set(data["skipped"]) == {"bento"}
    assert f"skipping bento: no BentoML venv at {no_venv}" in stdout
    assert "Not measured: bento: no BentoML venv" in (tmp_path / "peers.md").read_text()
    check_rows(data, tmp_path, ("vdis", "plain"))
    check_ratios(data, tmp_path, {*WITH_DOMAIN, "/swap at 4: vdis / pipeline limit",
                        "/swap at 4: vdis / best peer (plain)",
                        "/swap at 1: vdis p50 / plain p50",
                        "/encode at 4: vdis / pipeline limit",
                        "/encode at 4: vdis / best peer (plain)",
                        "/encode at 1: vdis p50 / plain p50"})


def test_compare_the_bentoml_peer(tmp_path):
    why = unavailable("bento", BENCH_VENV)
    if why:
        print(f"skipping the BentoML peer: {why}")
        pytest.skip(why)
    data, _ = compare(tmp_path, "vdis,bento")
    check_rows(data, tmp_path, ("vdis", "bento"))
    check_ratios(data, tmp_path, {*WITH_DOMAIN, "/swap at 4: vdis / pipeline limit",
                        "/swap at 4: vdis / best peer (bento)",
                        "/encode at 4: vdis / pipeline limit",
                        "/encode at 4: vdis / best peer (bento)"})
