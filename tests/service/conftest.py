"""Fixtures for the service: a real exported model, a running app, real video files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import REPO, Settings
from tests.service.videos import encode, moving_square

SHIPPED_MODEL = REPO / "models" / "sprites"


@pytest.fixture(scope="session")
def model_dir(request) -> Path:
    """The small random model exported by tests/conftest.py (`tiny_model_dir`).

    VDIS_TEST_MODEL_DIR overrides it (a model exported by hand, for quick local runs).
    """
    if os.environ.get("VDIS_TEST_MODEL_DIR"):
        return Path(os.environ["VDIS_TEST_MODEL_DIR"])
    return Path(request.getfixturevalue("tiny_model_dir"))


def make_settings(model_dir: Path, **overrides) -> Settings:
    return Settings(MODEL_DIR=model_dir, INTRA_OP_THREADS=1, INTER_OP_THREADS=1, **overrides)


@pytest.fixture(scope="module")
def client(model_dir):
    with TestClient(create_app(make_settings(model_dir))) as client:
        yield client


@pytest.fixture(scope="session")
def mp4() -> bytes:
    return encode(moving_square(12, seed=0), "mp4")


@pytest.fixture(scope="session")
def webm() -> bytes:
    return encode(moving_square(12, seed=1), "webm")


@pytest.fixture(scope="session")
def gif() -> bytes:
    return encode(moving_square(12, seed=2), "gif")
