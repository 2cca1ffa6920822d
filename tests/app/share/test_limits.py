"""Share store growth: a per-client rate limit on making links (429) and a size budget of the store (507).

On by default (share_rate_limit 30 a minute, burst 10; share_store_bytes 512 MiB). A view already stored
still gets its link when the store is full, since it stores nothing new, and nothing stored is ever lost.
"""

from __future__ import annotations

import sqlite3

import pytest

from app.core.config import Settings
from app.share.store import SCHEMA_VERSION, ShareStore, ShareStoreFull, canonical, sqlite_url

from .conftest import make_client, textarea

VIEW = {"model": "tiny-lstm", "text": "Plain words.", "layer": 0, "state": "h", "unit": 1, "mode": "neuron"}
FORM = {"model": "tiny-lstm", "text": "Plain words.", "layer": "0", "state": "h", "unit": "1", "mode": "neuron"}


def view(i: int, chars: int = 40) -> dict:
    return {**VIEW, "text": f"link {i} " + "x" * chars}


def test_the_defaults_limit_share_creation():
    s = Settings()
    assert (s.share_rate_limit, s.share_rate_burst, s.share_store_bytes) == (30, 10, 512 * 1024 * 1024)


def test_the_rate_limit_answers_429_after_the_burst_naming_the_limit(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "data", share_rate_limit=6, share_rate_burst=3) as client:
        statuses = [client.post("/api/v1/share", json=view(i)).status_code for i in range(3)]
        assert statuses == [200, 200, 200]
        r = client.post("/api/v1/share", json=view(3))
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/json"
        assert 1 <= int(r.headers["retry-after"]) <= 10  # 6 a minute: one token back in 10 s
        detail = r.json()["detail"]
        assert "too many share links from your address" in detail and "at most 6 a minute (3 at once)" in detail
        # the Share button (an htmx form) draws from the same bucket, and says so in its partial
        form = client.post("/share", data=FORM, headers={"HX-Request": "true"})
        assert form.status_code == 429 and "retry-after" in form.headers
        assert "Cannot share: too many share links" in form.text
        # reading and opening links is not limited
        assert client.get("/").status_code == 200
        assert client.app.state.shares.store.count() == 3


def test_the_rate_limit_is_per_client_and_refills(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "data", share_rate_limit=60, share_rate_burst=1) as client:
        shares = client.app.state.shares
        now = [1000.0]
        shares.buckets.clock = lambda: now[0]
        assert shares.buckets.take("198.51.100.7") == 0.0
        assert shares.buckets.take("198.51.100.7") == pytest.approx(1.0)  # 60 a minute: 1 s to the next
        assert shares.buckets.take("198.51.100.8") == 0.0  # another address has its own bucket
        now[0] += 1.0
        assert client.post("/api/v1/share", json=view(0)).status_code == 200  # the test client's own bucket
        assert client.post("/api/v1/share", json=view(1)).status_code == 429
        now[0] += 1.0
        assert client.post("/api/v1/share", json=view(1)).status_code == 200


def test_rate_limit_zero_turns_it_off(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "data", share_rate_limit=0) as client:
        assert client.app.state.shares.buckets is None
        assert {client.post("/api/v1/share", json=view(i)).status_code for i in range(15)} == {200}


def test_a_full_store_refuses_new_links_with_507_and_keeps_serving_the_old_ones(tiny_models_dir, tmp_path):
    budget = 1000
    with make_client(tiny_models_dir, tmp_path / "data", share_rate_limit=0, share_store_bytes=budget) as client:
        made = []
        for i in range(50):
            r = client.post("/api/v1/share", json=view(i, chars=100))
            if r.status_code != 200:
                break
            made.append(r.json())
        assert r.status_code == 507, r.text
        assert r.headers["content-type"] == "application/json" and "retry-after" not in r.headers
        detail = r.json()["detail"]
        assert detail.startswith("the share store is full (") and "of its 1,000 bytes budget used" in detail
        assert "links already made still open" in detail
        store = client.app.state.shares.store
        assert 3 <= len(made) == store.count()
        used = sum(len(canonical(m["view"]).encode()) for m in made)
        assert store.stored_bytes() == used <= budget
        # every existing link still opens, and sharing one of them again still gets its link
        for m in made:
            page = client.get(f"/s/{m['id']}")
            assert page.status_code == 200 and textarea(page.text) == m["view"]["text"]
            again = client.post("/api/v1/share", json=view(made.index(m), chars=100))
            assert again.status_code == 200 and again.json()["id"] == m["id"]
        # the Share button says the same in its partial
        form = client.post("/share", data={**FORM, "text": "a new text"}, headers={"HX-Request": "true"})
        assert form.status_code == 507 and "Cannot share: the share store is full" in form.text
        assert store.count() == len(made) and store.stored_bytes() == used  # nothing lost, nothing added


def test_the_budget_counts_utf8_bytes_and_a_view_that_just_fits_is_stored(tmp_path):
    url = sqlite_url(tmp_path)
    one = {"text": "é" * 10}
    size = len(canonical(one).encode())
    assert size == len(canonical(one)) + 10  # two bytes a character
    store = ShareStore(url, max_bytes=size + 5)
    sid = store.create(one)
    assert store.stored_bytes() == size
    with pytest.raises(ShareStoreFull) as full:
        store.create({"text": "b"})
    assert (full.value.used, full.value.budget) == (size, size + 5)
    assert store.create(one) == sid  # the same view, again: nothing new to store
    store.close()
    bigger = ShareStore(url, max_bytes=0)  # no budget
    bigger.create({"text": "b"})
    assert bigger.stored_bytes() == size + len(canonical({"text": "b"}).encode())
    bigger.close()


def test_the_total_survives_restarts_and_a_recount_agrees(tmp_path):
    url = sqlite_url(tmp_path)
    store = ShareStore(url, max_bytes=10_000)
    for i in range(5):
        store.create({"text": f"text {i} ünï"})
    total = store.stored_bytes()
    store.close()
    again = ShareStore(url, max_bytes=10_000)
    assert again.stored_bytes() == total == again.recount_bytes()
    con = sqlite3.connect(tmp_path / "shares.sqlite3")
    assert con.execute("SELECT SUM(LENGTH(CAST(view AS BLOB))) FROM shares").fetchone()[0] == total
    con.execute("DELETE FROM share_totals")  # a total deleted by hand is recounted, not taken as "full"
    con.commit()
    con.close()
    again.create({"text": "one more"})
    assert again.stored_bytes() == again.recount_bytes() > total
    again.close()


def test_a_version_2_store_is_counted_when_it_upgrades(tmp_path):
    path = tmp_path / "shares.sqlite3"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE rnnscope_schema (version INTEGER NOT NULL)")
    con.execute("INSERT INTO rnnscope_schema VALUES (2)")
    con.execute("CREATE TABLE shares (id VARCHAR(12) PRIMARY KEY, view TEXT NOT NULL, created VARCHAR(32) NOT NULL, "
                "opened INTEGER NOT NULL DEFAULT 0)")
    rows = [("aaaaaaaaaaaa", canonical({"text": "old link"})), ("bbbbbbbbbbbb", canonical({"text": "ünïcode"}))]
    con.executemany("INSERT INTO shares (id, view, created) VALUES (?, ?, '2026-01-01T00:00:00+00:00')", rows)
    con.commit()
    con.close()
    store = ShareStore(sqlite_url(tmp_path), max_bytes=1_000)
    assert store.stored_bytes() == sum(len(v.encode()) for _, v in rows)
    assert store.get("bbbbbbbbbbbb") == {"text": "ünïcode"}
    store.close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT version FROM rnnscope_schema").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_concurrent_links_never_take_the_store_past_its_budget(tmp_path):
    import threading

    one = len(canonical({"text": "t00 " + "y" * 200}).encode())
    store = ShareStore(sqlite_url(tmp_path), max_bytes=5 * one + 10)
    results: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def make(i: int) -> None:
        start.wait()
        try:
            store.create({"text": f"t{i:02d} " + "y" * 200})
            outcome = "ok"
        except ShareStoreFull:
            outcome = "full"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["full"] * 11 + ["ok"] * 5
    assert store.count() == 5 and store.stored_bytes() == 5 * one == store.recount_bytes()
    store.close()
