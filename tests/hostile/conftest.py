"""An app over the tiny models with its own share database; a TestClient that never re-raises server errors,
so a crash shows up as the 500 a real client would get, not as a Python exception in the test."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app

HX = {"HX-Request": "true"}


def make_client(models_dir, data_dir, **overrides) -> TestClient:
    values = {"models_dir": models_dir, "data_dir": data_dir, "default_model": "tiny-lstm", "rescan_seconds": 0,
              **overrides}
    return TestClient(create_app(Settings(**values)), raise_server_exceptions=False)


@pytest.fixture()
def client(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "data") as c:
        yield c
