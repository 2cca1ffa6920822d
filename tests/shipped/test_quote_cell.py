"""The shipped austen-lstm really has the quote cell its card names: found by the probe, seen in the page.

These are the few tests that load the committed weights (everything else uses tiny random models).
Dialogue comes from the held-out split of the Austen corpus (Debian's r-cran-janeaustenr, which
.ci/run installs), so the model never trained on it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from models.checkpoint import load_checkpoint
from models.corpora import austen
from models.errors import RnnscopeError

MODELS = Path(__file__).resolve().parents[2] / "models" / "zoo"
LSTM = MODELS / "austen-lstm"

if not (LSTM / "model.safetensors").is_file():
    pytest.skip("the shipped austen-lstm checkpoint is not in this checkout", allow_module_level=True)


def quote_unit() -> tuple[int, str, int]:
    q = load_checkpoint(LSTM).card["quote_unit"]
    return q["layer"], q["state"], q["unit"]


def dialogue_paragraphs(n: int) -> list[str]:
    """The first n held-out paragraphs with at least two quoted spans and some narration."""
    try:
        val = austen().val
    except RnnscopeError as e:
        pytest.skip(str(e))
    found = []
    for para in re.split(r"\n\s*\n", val):
        para = para.strip()
        if para.count('"') >= 4 and para.count('"') % 2 == 0 and 200 <= len(para) <= 2000:
            found.append(para + "\n")
        if len(found) == n:
            break
    assert len(found) == n, f"only {len(found)} dialogue paragraphs in the held-out text"
    return found


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(models_dir=MODELS, data_dir=tmp_path_factory.mktemp("shipped-data"))
    with TestClient(create_app(settings)) as c:
        yield c


def test_the_inside_quotes_probe_puts_the_cards_quote_cell_in_its_top_3(client):
    want = quote_unit()
    for para in dialogue_paragraphs(5):
        r = client.post("/api/v1/probe", json={"model": "austen-lstm", "text": para, "probe": "quotes", "top": 3})
        assert r.status_code == 200, r.text
        top = [(u["layer"], u["state"], u["unit"]) for u in r.json()]
        assert want in top, (para[:80], r.json())


def test_the_app_opens_on_austen_lstm_and_its_quote_cell(client):
    page = client.get("/")
    assert page.status_code == 200
    layer, state, unit = quote_unit()
    assert re.search(r'<option value="austen-lstm"[^>]* selected>', page.text)
    assert f"<h2>layer {layer} · {state} · unit {unit}</h2>" in page.text
