"""Gate saturation measures held-out text in a fresh clone: rebuilt from the corpus source (once per
process), checked against the model card's hash, a data/ file where the source is missing, and a
specific message (never a silent stand-in text) where there is neither."""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from app.dynamics.heldout import HeldOutTexts, NoHeldOut
from app.dynamics.service import DynamicsService
from models import corpora
from models.checkpoint import load_checkpoint
from models.corpora import AUSTEN_DIR, Corpus
from models.dynamics import gate_saturation
from models.errors import RnnscopeError
from tests.app.conftest import make_client
from tests.conftest import write_tiny_model

HX = {"HX-Request": "true"}
TRAIN = "Training text the model saw. " * 50
VAL = "".join(f'"Held out {i}," she said. ' for i in range(2_000))  # ~50,000 characters
NOT_INSTALLED = ("Jane Austen's novels are not installed (/nowhere/Rdata.rdb missing): run `apt-get install "
                 "r-cran-janeaustenr` (Debian) and try again")


def fake_austen() -> Corpus:
    return Corpus("austen", TRAIN, VAL, "last 5% of each novel held out", 1, 1)


def missing_austen() -> Corpus:
    raise RnnscopeError(NOT_INSTALLED)


@pytest.fixture()
def models(tmp_path) -> Path:
    root = tmp_path / "models"
    write_tiny_model(root / "tiny-austen", "lstm", card={"corpus": "austen", "corpus_sha256": corpora.sha256_text(TRAIN)})
    write_tiny_model(root / "tiny-stale", "gru", seed=1, card={"corpus": "austen", "corpus_sha256": "0" * 64})
    write_tiny_model(root / "tiny-own", "lstm", seed=2, card={"corpus": "my-notes"})
    return root


@contextmanager
def client_with(models: Path, data: Path, builder):
    """An app whose held-out texts come from `builder` (and files under `data`)."""
    with make_client(models, default_model="tiny-austen") as c:
        texts = HeldOutTexts(data, 20_000, {"austen": builder})
        c.app.state.dynamics = DynamicsService(c.app.state.service, data_dir=data, heldout=texts)
        yield c, texts


def test_a_fresh_clone_measures_the_rebuilt_held_out_split_once(models, tmp_path):
    with client_with(models, tmp_path / "no-data", fake_austen) as (c, texts):
        out = c.get("/api/v1/saturation/tiny-austen").json()
        stale = c.get("/api/v1/saturation/tiny-stale").json()
        again = c.get("/api/v1/saturation/tiny-austen", params={"text": "ignored: held-out text wins"}).json()
    assert out["held_out"] is True and out["warning"] is None and out["chars"] == 20_000
    assert "the first 20,000 characters of the held-out austen text" in out["source"]
    assert "matches the model card's sha256, so the model never saw this text" in out["source"]
    assert "differs from the model card's sha256" in stale["source"] and stale["held_out"] is True
    assert again["cached"] is True and again["chars"] == 20_000
    assert texts.builds == 1  # two models, three requests: the corpus was built once
    ck = load_checkpoint(models / "tiny-austen")
    ref = gate_saturation(ck.model, ck.vocab, VAL[:20_000])
    np.testing.assert_allclose(out["layers"][1]["gates"]["f"]["left"], ref[1]["f"]["left"], atol=1e-6)


def test_concurrent_first_requests_build_the_corpus_once(tmp_path):
    calls = []
    gate = threading.Event()

    def slow() -> Corpus:
        calls.append(1)
        gate.wait(2)
        return fake_austen()

    texts = HeldOutTexts(tmp_path, 100, {"austen": slow})
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(texts.get("austen").text)) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1 and got == [VAL[:100]] * 4


def test_without_the_source_a_held_out_file_from_rnnscope_corpus_is_used(models, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "austen.val.txt").write_text("It is a truth universally acknowledged. " * 700, encoding="utf-8")
    with client_with(models, data, missing_austen) as (c, _):
        out = c.get("/api/v1/saturation/tiny-austen").json()
    assert out["held_out"] is True and out["chars"] == 20_000
    assert "data/austen.val.txt" in out["source"] and "held-out austen" in out["source"]
    assert "apt-get install r-cran-janeaustenr" in out["source"]  # and says the source itself is missing


def test_without_source_or_file_the_api_says_how_to_install_it(models, tmp_path):
    with client_with(models, tmp_path / "no-data", missing_austen) as (c, _):
        bare = c.get("/api/v1/saturation/tiny-austen")
        given = c.get("/api/v1/saturation/tiny-austen", params={"text": 'She said, "no."'})
    assert bare.status_code == 503
    detail = bare.json()["detail"]
    assert detail.startswith("tiny-austen has no held-out text here: the held-out austen text cannot be rebuilt here")
    assert "apt-get install r-cran-janeaustenr" in detail and "Send a text to measure on instead" in detail
    out = given.json()
    assert given.status_code == 200 and out["held_out"] is False and out["chars"] == 15
    assert "not held-out text" in out["source"] and "apt-get install r-cran-janeaustenr" in out["warning"]


def test_without_source_or_file_the_page_says_so_above_the_plots(models, tmp_path):
    with client_with(models, tmp_path / "no-data", missing_austen) as (c, _):
        r = c.get("/saturation", params={"model": "tiny-austen"}, headers=HX)
    assert r.status_code == 200
    warn = re.search(r'<p class="warn" role="note">([^<]*)</p>', r.text)
    assert warn, "no warning on the page"
    said = warn.group(1)
    assert said.startswith("Not held-out text. tiny-austen has no held-out text here")
    assert "apt-get install r-cran-janeaustenr" in said
    assert "the main page&#39;s default text" in said and "characters, against the 20,000 held-out" in said
    assert 'data-held-out="false"' in r.text


def test_a_corpus_rnnscope_cannot_rebuild_is_named(models, tmp_path):
    with client_with(models, tmp_path / "no-data", fake_austen) as (c, _):
        r = c.get("/api/v1/saturation/tiny-own")
        page = c.get("/saturation", params={"model": "tiny-own", "text": "Some text."}, headers=HX)
    assert r.status_code == 422
    assert "its model card names corpus 'my-notes', which rnnscope cannot rebuild (it knows austen)" in r.json()["detail"]
    assert "Not held-out text. tiny-own has no held-out text here: its model card names corpus" in page.text
    assert "Measured on the current text (carried from the view you came from) instead: 10 characters" in page.text


def test_no_corpus_on_the_card_is_said_too(tmp_path):
    texts = HeldOutTexts(tmp_path, 10)
    with pytest.raises(NoHeldOut, match="names no training corpus"):
        texts.get(None)


@pytest.mark.skipif(not (AUSTEN_DIR / "Rdata.rdb").is_file(), reason="r-cran-janeaustenr is not installed")
def test_the_real_austen_held_out_text_is_the_corpus_commands_split(tmp_path):
    texts = HeldOutTexts(tmp_path, 20_000)
    held = texts.get("austen", corpora.sha256_text(corpora.austen().train))
    assert held.text == corpora.austen().val[:20_000] and len(held.text) == 20_000
    assert "matches the model card's sha256" in held.source and held.total > 100_000
