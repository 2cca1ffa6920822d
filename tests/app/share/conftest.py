"""Apps over the tiny models, each with its own share database in a temp folder."""

from __future__ import annotations

import re
from html import unescape

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app

from tests.conftest import char_spans

TEXTAREA = re.compile(r'<textarea id="text"[^>]*>\n?(.*?)</textarea>', re.S)


def make_client(models_dir, data_dir, **overrides) -> TestClient:
    # share_rate_limit 0: these tests make many links from the one test client; test_limits.py passes its own
    # limits, and tests/hostile/test_share_limits.py checks the default one against a real server.
    values = {"models_dir": models_dir, "data_dir": data_dir, "default_model": "tiny-lstm", "rescan_seconds": 0,
              "share_rate_limit": 0, **overrides}
    return TestClient(create_app(Settings(**values)))


@pytest.fixture()
def client(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "data") as c:
        yield c


def spans(html: str) -> list[tuple[str, float, str]]:
    """(classes, colour position, character) for every character span of the page's view."""
    return [(s.cls, s.v, s.ch) for s in char_spans(html)]


def textarea(html: str) -> str:
    m = TEXTAREA.search(html)
    assert m, "the page has no text box"
    return unescape(m.group(1))


def selected(html: str, select_id: str) -> str | None:
    block = html.split(f'<select id="{select_id}"', 1)
    if len(block) < 2:
        return None
    m = re.search(r'<option value="([^"]*)"[^>]*\bselected\b', block[1].split("</select>", 1)[0])
    return m.group(1) if m else None


def unit_value(html: str) -> str | None:
    m = re.search(r'<input id="unit" name="unit"[^>]*\bvalue="([^"]*)"', html)
    return m.group(1) if m else None
