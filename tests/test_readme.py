"""The README's usage commands, run as written against a real `vdis serve` on the shipped model.

Each block runs from a folder that looks like the repository root (its `service/` is the
repository's, so `service/static/samples/...` resolves) but keeps what the commands write. The
only change to the text: the service's address, `localhost:8000` / `127.0.0.1:8000`, becomes
the test server's.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from service.settings import REPO
from tests.liveservice import running_service

README = (REPO / "README.md").read_text()
SHIPPED_MODEL = REPO / "models" / "sprites"


def section(title: str) -> str:
    """The text of the README's `## title` section."""
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"no section {title!r} in the README"
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


@pytest.fixture(scope="module")
def server():
    with running_service(SHIPPED_MODEL) as url:
        yield url.removeprefix("http://")


@pytest.fixture
def root(tmp_path) -> Path:
    """A folder standing for the repository root: `service` links to the real one."""
    (tmp_path / "service").symlink_to(REPO / "service")
    return tmp_path


def run(script: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `vdis`
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PATH": path, **(env or {})})


def mp4_shape(path: Path) -> tuple[int, ...]:
    with av.open(io.BytesIO(path.read_bytes())) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).shape


def test_the_curl_lines_run_as_written_and_all_answer_2xx(server, root):
    usage = section("Two commands on a fresh machine")
    script = next(b for b in blocks(usage, "bash") if "curl" in b)
    count = len(re.findall(r"(?:^|;\s*)curl ", script, re.M))
    # every curl call appends its status to codes.txt; the commands themselves are untouched
    wrapper = ("set -eo pipefail\ncurl() { command curl -sS -w '%{stderr}HTTP %{http_code}\\n' "
               "\"$@\"; }\n")
    result = run(wrapper + script.replace("localhost:8000", server), root)
    assert result.returncode == 0, result.stderr
    statuses = re.findall(r"^HTTP (\d{3})$", result.stderr, re.M)
    assert len(statuses) == count >= 10, result.stderr
    assert all(s.startswith("2") for s in statuses), statuses
    codes = json.loads((root / "codes.json").read_text())
    assert np.array(codes["motion"]["mean"]).shape[0] == 8
    with np.load(root / "codes.npz") as arrays:
        assert arrays["motion_mean"].shape[0] == 4
    assert mp4_shape(root / "recon.mp4") == (8, 64, 64, 3)
    assert mp4_shape(root / "swap.mp4") == (8, 64, 64, 3)
    assert (root / "both.gif").read_bytes().startswith(b"GIF8")
    assert mp4_shape(root / "motions.mp4") == (8, 128, 128, 3)  # 4 results tiled 2 x 2
    assert mp4_shape(root / "looks.mp4") == (8, 128, 128, 3)


def test_the_domain_line_runs_as_written_and_says_in(server, root):
    usage = section("Two commands on a fresh machine")
    script = next(b for b in blocks(usage, "bash") if "x-vdis-domain" in b)
    result = run("set -eo pipefail\n" + script.replace("localhost:8000", server), root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.lower().split("\n")
    assert lines[0].split() == ["x-vdis-domain:", "in"], result.stdout
    assert float(lines[1].split()[1]) < 1  # x-vdis-domain-score


def test_the_python_client_example_runs_as_written(server, root):
    code = blocks(section("Python client and command line"), "python")[0]
    result = subprocess.run([sys.executable, "-c", code.replace("127.0.0.1:8000", server)],
                            cwd=root, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert mp4_shape(root / "recon.mp4") == (8, 256, 256, 3)
    assert mp4_shape(root / "ab.mp4") == (8, 256, 256, 3)


def test_the_command_lines_run_as_written(server, root):
    script = blocks(section("Python client and command line"), "bash")[0]
    lines = script.splitlines()
    long_running = [line for line in lines if line.startswith(("vdis serve", "vdis worker"))]
    assert len(long_running) == 2  # they serve until stopped: the other tests start them
    pytest.importorskip("torch")  # `vdis train --help` needs the training extras
    runnable = "set -e\n" + "\n".join(line for line in lines if line not in long_running)
    result = run(runnable, root, env={"VDIS_URL": f"http://{server}"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert mp4_shape(root / "recon.mp4") == (8, 64, 64, 3)
    assert mp4_shape(root / "swap.mp4") == (8, 256, 512, 3)  # both: two results side by side
    assert (root / "motions.gif").read_bytes().startswith(b"GIF8")
    assert "usage: vdis train" in result.stdout


def test_make_serve_takes_the_port_the_readme_says():
    said = re.search(r"`make serve PORT=(\d+) HOST=([\d.]+)`", README)
    assert said, "the README says how to serve on another port"
    port, host = said.groups()
    plan = subprocess.run(["make", "-n", "serve", f"PORT={port}", f"HOST={host}"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert f"--host {host} --port {port}" in plan.stdout
