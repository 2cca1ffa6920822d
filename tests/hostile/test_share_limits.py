"""Share store growth against a real `rnnscope serve`: the default per-client rate limit on making links,
the store's size budget (507) with every existing link still opening and re-sharing, and a forged Host
header kept out of links when RNNSCOPE_PUBLIC_URL is set.

Before these limits one client wrote 2,000 links of 20,000 characters (41 MB) in 9.6 s.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
from email.message import Message

import pytest

from tests.conftest import write_tiny_model
from tests.share.server import get_text, running_server

pytestmark = pytest.mark.slow

VIEW = {"model": "tiny-lstm", "layer": 0, "state": "h", "unit": 2, "mode": "neuron"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("share-limit-models")
    write_tiny_model(root / "tiny-lstm", "lstm", seed=3)
    return root


def post(url: str, body: dict, client: str | None = None, host: str | None = None) -> tuple[int, Message, dict]:
    headers = {"Content-Type": "application/json"}
    if client:
        headers["X-Forwarded-For"] = client  # uvicorn trusts it from the loopback "proxy" (the test)
    if host:
        headers["Host"] = host
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def test_the_default_rate_limit_stops_a_flood_of_links_after_the_burst(models, tmp_path):
    data = tmp_path / "data"
    with running_server(models, data, tmp_path / "serve.log") as base:
        t0 = time.monotonic()
        statuses, refused = [], None
        text = "x" * 20_000  # the flood of the report: the longest texts, as fast as one client can
        for i in range(60):
            status, headers, body = post(base + "/api/v1/share", {**VIEW, "text": f"{i} {text}"[:20_000]},
                                         client="203.0.113.5")
            statuses.append(status)
            if status == 429 and refused is None:
                refused = (headers, body)
        elapsed = time.monotonic() - t0
        made = statuses.count(200)
        print(f"flood: {len(statuses)} requests in {elapsed:.1f} s, {made} links stored, "
              f"{statuses.count(429)} refused with 429")
        assert statuses[:10] == [200] * 10  # the burst
        assert set(statuses) == {200, 429}
        assert made <= 10 + elapsed * 30 / 60 + 1  # then 30 a minute
        headers, body = refused
        assert 1 <= int(headers["Retry-After"]) <= 2
        assert body["detail"].startswith("too many share links from your address: this server makes at most 30 "
                                         "a minute (10 at once) per client")
        # another address is not held back, and reading links costs no share token
        assert post(base + "/api/v1/share", {**VIEW, "text": "someone else"}, client="203.0.113.6")[0] == 200
        assert get_text(base + "/healthz")[0] == 200
    con = sqlite3.connect(data / "shares.sqlite3")
    rows, size = con.execute("SELECT COUNT(*), SUM(LENGTH(CAST(view AS BLOB))) FROM shares").fetchone()
    stored = con.execute("SELECT bytes FROM share_totals").fetchone()[0]
    con.close()
    print(f"stored: {rows} links, {size:,} bytes")
    assert rows == made + 1 and stored == size < 12 * 20_200 + 10_000


def test_a_full_store_answers_507_and_every_existing_link_still_opens_and_reshares(models, tmp_path):
    data = tmp_path / "data"
    env = {"RNNSCOPE_SHARE_STORE_BYTES": "20000", "RNNSCOPE_SHARE_RATE_LIMIT": "0"}
    made: list[tuple[dict, str]] = []
    with running_server(models, data, tmp_path / "serve.log", **env) as base:
        for i in range(40):
            view = {**VIEW, "text": f"link {i}: " + "words " * 400}  # ~2.5 KB each
            status, headers, body = post(base + "/api/v1/share", view)
            if status != 200:
                break
            made.append((view, body["id"]))
        assert status == 507, body
        assert "Retry-After" not in headers
        assert body["detail"].startswith("the share store is full (") and "links already made still open" in body[
            "detail"]
        assert 5 <= len(made) <= 8
        for view, sid in made:
            assert get_text(f"{base}/s/{sid}")[0] == 200
            status, _, again = post(base + "/api/v1/share", view)  # re-sharing stores nothing new: still works
            assert status == 200 and again["id"] == sid
    # the running total outlives the process: a restarted server is still full, and still serves every link
    with running_server(models, data, tmp_path / "serve.log", **env) as base:
        assert post(base + "/api/v1/share", {**VIEW, "text": "one more after the restart"})[0] == 507
        view, sid = made[0]
        assert get_text(f"{base}/s/{sid}")[0] == 200
        assert post(base + "/api/v1/share", view)[2]["id"] == sid
    con = sqlite3.connect(data / "shares.sqlite3")
    assert con.execute("SELECT COUNT(*) FROM shares").fetchone()[0] == len(made)
    assert con.execute("SELECT SUM(LENGTH(CAST(view AS BLOB))) FROM shares").fetchone()[0] <= 20_000
    con.close()


def test_public_url_keeps_a_forged_host_out_of_links_previews_and_exports(models, tmp_path):
    env = {"RNNSCOPE_PUBLIC_URL": "https://rnnscope.example.org/demo/"}
    with running_server(models, tmp_path / "data", tmp_path / "serve.log", **env) as base:
        status, _, body = post(base + "/api/v1/share", {**VIEW, "text": "Hosted."}, host="evil.example")
        assert status == 200 and body["url"] == f"https://rnnscope.example.org/demo/s/{body['id']}"
        req = urllib.request.Request(f"{base}/s/{body['id']}", headers={"Host": "evil.example"})
        with urllib.request.urlopen(req, timeout=60) as r:
            page = r.read().decode()
        assert "evil.example" not in page
        assert f'<meta property="og:url" content="https://rnnscope.example.org/demo/s/{body["id"]}">' in page
        req = urllib.request.Request(base + "/export.html?model=tiny-lstm&text=Hosted.",
                                     headers={"Host": "evil.example"})
        with urllib.request.urlopen(req, timeout=60) as r:
            export = r.read().decode()
        assert "evil.example" not in export and "from https://rnnscope.example.org/demo/" in export
