"""Links against a real `rnnscope serve`: they outlive the process, and parallel requests agree on ids."""

from __future__ import annotations

import sqlite3
import threading
import urllib.parse

import pytest

from tests.conftest import write_tiny_model

from .conftest import selected, spans, textarea, unit_value
from tests.share.server import get_text, post_json, running_server

pytestmark = pytest.mark.slow

VIEW = {"model": "tiny-lstm", "layer": 0, "state": "h", "unit": 11, "mode": "neuron",
        "text": 'After "the restart", the link still opens.\nYes.'}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-models")
    write_tiny_model(root / "tiny-lstm", "lstm", seed=7)
    return root


def test_a_link_survives_a_server_restart(models, tmp_path):
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    with running_server(models, data, log) as base:
        status, body = post_json(base + "/api/v1/share", VIEW)
        assert status == 200, body
        sid, url = body["id"], body["url"]
        assert url == f"{base}/s/{sid}"
        status, before = get_text(url)
        assert status == 200
    # the first process is gone: nothing but the database in data/ carries the link over
    assert (data / "shares.sqlite3").is_file()
    with running_server(models, data, log) as base2:
        status, after = get_text(f"{base2}/s/{sid}")
        assert status == 200
        assert textarea(after) == VIEW["text"]
        assert (selected(after, "model"), selected(after, "layer"), selected(after, "state"), unit_value(after)) == (
            "tiny-lstm", "0", "h", "11")
        assert spans(after) == spans(before) and len(spans(after)) == len(VIEW["text"])
        query = urllib.parse.urlencode({k: str(v) for k, v in VIEW.items()})
        assert spans(get_text(f"{base2}/?{query}")[1]) == spans(after)
        status, again = post_json(base2 + "/api/v1/share", VIEW)
        assert status == 200 and again["id"] == sid  # same view, same id, in a new process
    con = sqlite3.connect(data / "shares.sqlite3")
    assert con.execute("SELECT COUNT(*) FROM shares").fetchone()[0] == 1
    assert con.execute("SELECT opened FROM shares").fetchone()[0] == 2  # both page opens were counted
    con.close()


def test_concurrent_creation_of_the_same_and_different_links(models, tmp_path):
    n = 24
    results: list[tuple[int, int, dict]] = []
    lock = threading.Lock()
    start = threading.Barrier(n)
    # 24 links at once from one address: over the default share rate limit (tests/hostile/test_share_limits.py)
    with running_server(models, tmp_path / "data", tmp_path / "serve.log", RNNSCOPE_SHARE_RATE_LIMIT="0") as base:
        def make(i: int) -> None:
            view = VIEW if i % 2 == 0 else {**VIEW, "unit": i % 16, "text": f"text number {i}"}
            start.wait()
            status, body = post_json(base + "/api/v1/share", view, timeout=120)
            with lock:
                results.append((i, status, body))

        threads = [threading.Thread(target=make, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert len(results) == n
        assert all(status == 200 for _, status, _ in results), [b for _, s, b in results if s != 200][:3]
        same = {body["id"] for i, _, body in results if i % 2 == 0}
        different = {body["id"] for i, _, body in results if i % 2 == 1}
        assert len(same) == 1 and len(different) == n // 2 and not same & different
        by_id = {body["id"]: i for i, _, body in results}
        for sid, i in by_id.items():  # every id opens its own view
            status, html = get_text(f"{base}/s/{sid}")
            assert status == 200 and textarea(html) == (VIEW["text"] if i % 2 == 0 else f"text number {i}")
    con = sqlite3.connect(tmp_path / "data" / "shares.sqlite3")
    assert con.execute("SELECT COUNT(*) FROM shares").fetchone()[0] == 1 + n // 2
    con.close()
