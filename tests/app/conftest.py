"""An app over the tiny models, and a TestClient that runs its lifespan."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app


def make_client(models_dir, **overrides) -> TestClient:
    values = {"models_dir": models_dir, "default_model": "tiny-lstm", "rescan_seconds": 0, **overrides}
    settings = Settings(**values)
    return TestClient(create_app(settings))


@pytest.fixture()
def client(tiny_models_dir):
    with make_client(tiny_models_dir) as c:
        yield c


@pytest.fixture()
def service(client):
    return client.app.state.service
