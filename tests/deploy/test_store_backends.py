"""The share store on SQLite and on a real PostgreSQL: the same schema versioning, the same content-hash
ids, writers in two processes at once, and a restart in the middle of a burst of links.

test_store_postgres.py runs tests/app/share's suite on PostgreSQL; the tests here are the ones that
suite cannot run there (it opens the SQLite file itself), each for both backends where it applies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from app.share.store import (SCHEMA_VERSION, ShareStore, ShareStoreError, canonical, share_id,
                             sqlite_url)
from deploy.stack import PostgresCluster, Replica
from tests.app.share.conftest import make_client
from tests.conftest import write_tiny_model

from .conftest import need_postgres

ROOT = Path(__file__).resolve().parents[2]
VIEW = {"model": "tiny-lstm", "text": 'He said "hi".\nShe left.', "layer": 0, "state": "h", "unit": 5, "mode": "neuron"}


def raw_engine(url: str):
    """A plain SQLAlchemy engine on the store's database, to write what an older version wrote."""
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def stored_views(url: str) -> dict[str, str]:
    eng = raw_engine(url)
    try:
        with eng.connect() as conn:
            return dict(conn.execute(text("SELECT id, view FROM shares")).all())
    finally:
        eng.dispose()


def stored_bytes_by_scan(url: str) -> int:
    eng = raw_engine(url)
    sql = ("SELECT COALESCE(SUM(LENGTH(CAST(view AS BLOB))), 0) FROM shares" if url.startswith("sqlite")
           else "SELECT COALESCE(SUM(OCTET_LENGTH(view)), 0) FROM shares")
    try:
        with eng.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        eng.dispose()


# ---- schema versioning ---------------------------------------------------------------------------
def test_the_schema_is_versioned_and_a_newer_one_refused(backend_url):
    ShareStore(backend_url).close()
    ShareStore(backend_url).close()  # opening again migrates nothing and adds no version row
    eng = raw_engine(backend_url)
    with eng.begin() as conn:
        assert conn.execute(text("SELECT version FROM rnnscope_schema")).all() == [(SCHEMA_VERSION,)]
        assert {"shares", "share_totals", "rnnscope_schema"} <= set(inspect(conn).get_table_names())
        conn.execute(text("UPDATE rnnscope_schema SET version = :v"), {"v": SCHEMA_VERSION + 1})
    eng.dispose()
    with pytest.raises(ShareStoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this rnnscope"):
        ShareStore(backend_url)


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_schema_is_migrated_and_its_links_still_open(backend_url, version):
    """A database written by an earlier rnnscope (version 1: no open counter; 2: no byte total)."""
    rows = {share_id(v): canonical(v) for v in (VIEW, {**VIEW, "text": "ünïcødé ✓ 🙂", "probe": "vowel"})}
    eng = raw_engine(backend_url)
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE rnnscope_schema (version INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO rnnscope_schema VALUES (:v)"), {"v": version})
        opened = ", opened INTEGER NOT NULL DEFAULT 0" if version >= 2 else ""
        conn.execute(text(f"CREATE TABLE shares (id VARCHAR(12) PRIMARY KEY, view TEXT NOT NULL, "
                          f"created VARCHAR(32) NOT NULL{opened})"))
        for sid, view in rows.items():
            conn.execute(text("INSERT INTO shares (id, view, created) VALUES (:id, :view, '2026-01-01T00:00:00+00:00')"),
                         {"id": sid, "view": view})
    store = ShareStore(backend_url, max_bytes=10_000)
    try:
        for sid, view in rows.items():
            assert store.get(sid) == json.loads(view)
        assert store.stored_bytes() == sum(len(v.encode()) for v in rows.values()) == store.recount_bytes()
        assert store.create(dict(reversed(list(VIEW.items())))) == share_id(VIEW)  # the same link, nothing new
        assert store.count() == 2
        with eng.connect() as conn:
            assert conn.execute(text("SELECT version FROM rnnscope_schema")).all() == [(SCHEMA_VERSION,)]
            assert conn.execute(text("SELECT opened FROM shares WHERE id = :id"), {"id": share_id(VIEW)}).scalar() == 1
    finally:
        store.close()
        eng.dispose()


# ---- content-hash ids ----------------------------------------------------------------------------
VIEWS = [VIEW, {**VIEW, "units": [7, 8]}, {**VIEW, "text": "é" * 10}, {**VIEW, "text": "emoji 🙂 and 中文 and \u00a0"},
         {**VIEW, "text": "a NUL \x00 and a tab \t and \r\n"}, {**VIEW, "text": "x" * 20_000},
         {**VIEW, "probe": "regex", "pattern": "(?i)\\bshe\\b"}]


def test_ids_and_stored_bytes_are_the_same_on_both_backends(tmp_path, pg_url):
    """The same view gets the same id, stored as the same canonical JSON, on SQLite and PostgreSQL."""
    urls = {"sqlite": sqlite_url(tmp_path), "postgresql": pg_url}
    ids = {}
    for name, url in urls.items():
        store = ShareStore(url)
        ids[name] = [store.create(v) for v in VIEWS] + [store.create(dict(reversed(list(v.items())))) for v in VIEWS]
        assert [store.get(i, count_open=False) for i in ids[name][: len(VIEWS)]] == VIEWS
        assert store.count() == len(VIEWS) and store.stored_bytes() == store.recount_bytes()
        store.close()
    assert ids["sqlite"] == ids["postgresql"] == [share_id(v) for v in VIEWS] * 2
    assert stored_views(urls["sqlite"]) == stored_views(urls["postgresql"]) == {share_id(v): canonical(v) for v in VIEWS}
    assert stored_bytes_by_scan(urls["sqlite"]) == stored_bytes_by_scan(urls["postgresql"])


def test_the_byte_total_survives_restarts_and_a_recount_agrees(backend_url):
    store = ShareStore(backend_url, max_bytes=10_000)
    for i in range(5):
        store.create({"text": f"text {i} ünï"})
    total = store.stored_bytes()
    store.close()
    again = ShareStore(backend_url, max_bytes=10_000)
    assert again.stored_bytes() == total == again.recount_bytes() == stored_bytes_by_scan(backend_url)
    eng = raw_engine(backend_url)
    with eng.begin() as conn:
        conn.execute(text("DELETE FROM share_totals"))  # deleted by hand: recounted, not taken as "full"
    eng.dispose()
    again.create({"text": "one more"})
    assert again.stored_bytes() == again.recount_bytes() == stored_bytes_by_scan(backend_url) > total
    again.close()


# ---- PostgreSQL's own failure modes ----------------------------------------------------------------
def test_a_read_only_database_keeps_serving_its_links(tiny_models_dir, tmp_path, pg_cluster, pg_url):
    """A standby, a database set read-only, or a role allowed only SELECT: links open, new ones are a clear 503."""
    db = pg_url.rsplit("/", 1)[1]
    with make_client(tiny_models_dir, tmp_path / "data", database_url=pg_url) as c:
        old = c.post("/api/v1/share", json=VIEW).json()["id"]
    pg_cluster.execute(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
    with make_client(tiny_models_dir, tmp_path / "data", database_url=pg_url) as c:
        page = c.get(f"/s/{old}")
        assert page.status_code == 200 and "She left." in page.text
        r = c.post("/api/v1/share", json={**VIEW, "unit": 9})
        assert r.status_code == 503
        assert "cannot save the link" in r.json()["detail"] and "is read-only: existing links still open" in r.json()["detail"]
        assert pg_cluster.password not in r.json()["detail"]
    pg_cluster.execute(f'ALTER DATABASE "{db}" SET default_transaction_read_only = off')
    pg_cluster.execute("DROP ROLE IF EXISTS reader")
    pg_cluster.execute("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'")
    pg_cluster.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader", database=db)
    try:
        reader = pg_cluster.url(db, user="reader", password="reader-pw")
        with make_client(tiny_models_dir, tmp_path / "data", database_url=reader) as c:
            assert c.get(f"/s/{old}").status_code == 200
            r = c.post("/api/v1/share", json={**VIEW, "unit": 9})
            assert r.status_code == 503 and "permission denied" in r.json()["detail"]
    finally:
        pg_cluster.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM reader", database=db)
        pg_cluster.execute("DROP ROLE reader")
    store = ShareStore(pg_url)
    assert store.count() == 1 and stored_views(pg_url) == {old: canonical(store.get(old))}
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT opened FROM shares")).scalar() == 1  # only the writable open counted
    store.close()


def test_a_held_lock_is_a_clear_error_within_the_lock_timeout_not_a_hang(pg_url):
    store = ShareStore(pg_url, lock_timeout=0.3)
    old = store.create(VIEW)
    with store.engine.connect() as conn:
        assert conn.execute(text("SHOW lock_timeout")).scalar() == "300ms"
    blocker = raw_engine(pg_url).connect()
    blocker.execute(text("UPDATE share_totals SET bytes = bytes"))  # held, uncommitted: every insert waits on it
    try:
        t0 = time.monotonic()
        with pytest.raises(ShareStoreError, match="is locked by another process; try again in a moment"):
            store.create({**VIEW, "unit": 9})
        assert time.monotonic() - t0 < 3
        assert store.get(old) == VIEW  # readers (and the open counter) are not blocked
    finally:
        blocker.rollback()
        blocker.close()
    assert store.create({**VIEW, "unit": 9}) == share_id({**VIEW, "unit": 9})
    assert store.count() == 2 and store.stored_bytes() == store.recount_bytes()
    store.close()


def test_an_unreachable_server_turns_sharing_off_and_says_why(tiny_models_dir, tmp_path, pg_cluster, pg_url):
    """Down, wrong password, no such database: each named (password never echoed); traces still serve."""
    db = pg_url.rsplit("/", 1)[1]
    closed = pg_url.replace(f":{pg_cluster.port}/", f":{_closed_port()}/")
    wrong_pw = pg_cluster.url(db, password="not-the-password")
    no_db = pg_cluster.url("no_such_database")
    for url, reason in [(closed, "connection refused"), (wrong_pw, "password authentication failed"),
                        (no_db, 'database "no_such_database" does not exist')]:
        with make_client(tiny_models_dir, tmp_path / "data", database_url=url) as c:
            assert c.post("/api/v1/trace", json={"model": "tiny-lstm", "text": "abc", "layer": 0,
                                                 "state": "h"}).status_code == 200
            r = c.post("/api/v1/share", json=VIEW)
            detail = r.json()["detail"]
            assert r.status_code == 503 and detail.startswith("sharing is unavailable on this server") and reason in detail
            assert pg_cluster.password not in detail and "not-the-password" not in detail
            assert c.get("/s/aaaaaaaaaaaa").status_code == 503


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket closes


def test_rows_written_by_hand_open_or_say_they_are_damaged(client_pg, pg_url):
    """The twins of the SQLite tests that insert rows directly: an old-format view keeps its id; junk is a 410."""
    old = {"model": "tiny-lstm", "layer": "0", "state": "h", "unit": "5", "mode": "neuron", "text": VIEW["text"]}
    eng = raw_engine(pg_url)
    with eng.begin() as conn:
        for view in (old, {**old, "unit": "6"}):
            conn.execute(text("INSERT INTO shares (id, view, created) VALUES (:id, :v, '2026-01-01T00:00:00+00:00')"),
                         {"id": share_id(view), "v": json.dumps(view)})
        conn.execute(text("UPDATE shares SET view = '[1, 2]' WHERE id = :id"), {"id": share_id({**old, "unit": "6"})})
    eng.dispose()
    sid = share_id(old)
    assert sid == "7t5xp7sfvjgc"  # the id this view had before probes were shared (tests/app/share/test_probe_links.py)
    r = client_pg.get(f"/s/{sid}")
    assert r.status_code == 200 and f"Shared view <code>{sid}</code>" in r.text
    assert client_pg.post("/api/v1/share", json=VIEW).json()["id"] == sid
    damaged = share_id({**old, "unit": "6"})
    r = client_pg.get(f"/api/v1/share/{damaged}")
    assert r.status_code == 410 and "is damaged in the database" in r.json()["detail"]


@pytest.fixture
def client_pg(tiny_models_dir, tmp_path, pg_url):
    with make_client(tiny_models_dir, tmp_path / "data", database_url=pg_url) as c:
        yield c


# ---- two processes writing at once ----------------------------------------------------------------
WRITER = r"""
import json, sys, time
from app.share.store import ShareStore, ShareStoreFull
url, first, count, start_at, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
while time.time() < start_at:
    time.sleep(0.005)
store = ShareStore(url, max_bytes=budget)  # both open (and migrate) a fresh database at the same moment
out = []
for i in range(first, first + count):
    try:
        out.append([i, "ok", store.create({"text": f"view {i:04d} " + "y" * 100, "n": i % 7})])
    except ShareStoreFull:
        out.append([i, "full", None])
print(json.dumps(out))
"""


def _view(i: int) -> dict:
    return {"text": f"view {i:04d} " + "y" * 100, "n": i % 7}


@pytest.mark.parametrize("budget_views", [0, 25])
def test_two_processes_writing_at_once_agree_and_keep_the_budget(backend_url, budget_views):
    """Two processes open a fresh store and write overlapping views at once: the same ids, one row per
    view, an exact byte total, and with a budget exactly as many views as fit, never one more."""
    size = len(canonical(_view(0)).encode())
    assert all(len(canonical(_view(i)).encode()) == size for i in range(200))
    budget = budget_views * size
    start_at = time.time() + 4  # past both interpreters' start-up
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, backend_url, str(first), "60", str(start_at), str(budget)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for first in (0, 30)]  # views 0-59 and 30-89: 30 written by both
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-3000:]
            outputs.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = [r for out in outputs for r in out]
    for i, outcome, sid in results:
        if outcome == "ok":
            assert sid == share_id(_view(i))
    ok_views = {i for i, outcome, _ in results if outcome == "ok"}
    stored = stored_views(backend_url)
    assert set(stored) == {share_id(_view(i)) for i in ok_views}  # everything acknowledged, nothing else
    assert all(stored[share_id(_view(i))] == canonical(_view(i)) for i in ok_views)
    store = ShareStore(backend_url)
    assert store.stored_bytes() == store.recount_bytes() == len(stored) * size
    store.close()
    if budget_views:
        assert len(stored) == budget_views  # full means full: every refusal came with no room left
        assert {o for _, o, _ in results} == {"ok", "full"}
    else:
        assert len(stored) == 90 and all(o == "ok" for _, o, _ in results)


# ---- a restart in the middle of a burst -----------------------------------------------------------
def _post(url: str, body: dict, timeout: float = 10.0) -> tuple[int | str, dict | None]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError) as e:  # refused, reset, timed out: not acknowledged
        return type(e).__name__, None


class Burst:
    """Threads making distinct links as fast as the server answers, bounded in time and count."""

    def __init__(self, base: str, threads: int = 4, seconds: float = 60.0, max_requests: int = 3000):
        self.base, self.results, self.lock = base, [], threading.Lock()
        self.stop_at, self.max_requests, self.n = time.monotonic() + seconds, max_requests, 0
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stopped.is_set() and time.monotonic() < self.stop_at:
            with self.lock:
                if self.n >= self.max_requests:
                    return
                i, self.n = self.n, self.n + 1
            view = {**VIEW, "text": f"burst link {i}", "unit": i % 16}
            status, body = _post(self.base + "/api/v1/share", view)
            with self.lock:
                self.results.append((time.monotonic(), i, status, body))
            if status != 200:
                time.sleep(0.05)

    def acked(self) -> list[dict]:
        with self.lock:
            return [body for _, _, status, body in self.results if status == 200]

    def wait_for_acks(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked()) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked())} links acknowledged: {self.results[-3:]}"
            time.sleep(0.05)

    def __enter__(self) -> Burst:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(timeout=15)


@pytest.fixture(scope="module")
def burst_models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("burst-models")
    write_tiny_model(root / "tiny-lstm", "lstm", seed=7)
    return root


def _burst_server(models: Path, tmp_path: Path, database_url: str) -> Replica:
    """The server a burst runs against: the tiny models, this store, no share rate limit."""
    return Replica("burst", models, tmp_path / "data", tmp_path, RNNSCOPE_DATABASE_URL=database_url,
                   RNNSCOPE_DEFAULT_MODEL="tiny-lstm", RNNSCOPE_TORCH_THREADS="1", RNNSCOPE_SHARE_RATE_LIMIT="0")


def _check_every_acknowledged_link(acked: list[dict], url: str, base: str) -> None:
    assert acked
    stored = stored_views(url)
    for body in acked:
        assert body["id"] == share_id(body["view"]) and stored.get(body["id"]) == canonical(body["view"]), body
    for body in acked[:: max(1, len(acked) // 25)]:  # and they open through the server
        status, got = _get_json(f"{base}/api/v1/share/{body['id']}")
        assert status == 200 and got["view"] == body["view"]


def _get_json(url: str) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


@pytest.mark.slow
def test_a_postgres_restart_mid_burst_keeps_every_acknowledged_link(burst_models, tmp_path):
    """PostgreSQL stops at once (as if it crashed) and comes back while links are being made: what the
    server acknowledged is all there, the rest got a 503, and the server reconnects by itself."""
    need_postgres()
    with PostgresCluster() as pg:
        url = pg.url(pg.create_database("shares"))
        server = _burst_server(burst_models, tmp_path, url)
        try:
            server.start()
            with Burst(server.base) as burst:
                burst.wait_for_acks(30, timeout=30)
                before = len(burst.acked())
                pg.stop("immediate")
                time.sleep(1.5)
                pg.start()
                restarted = time.monotonic()
                burst.wait_for_acks(before + 30, timeout=30)
            statuses = {s for _, _, s, _ in burst.results}
            print(f"\npostgres restart mid-burst: {len(burst.results)} requests, {len(burst.acked())} acknowledged, "
                  f"{sum(s == 503 for _, _, s, _ in burst.results)} answered 503 while it was down")
            assert statuses <= {200, 503}, statuses  # down is a 503 (ShareUnavailable), never a 500
            assert 503 in statuses  # the outage fell inside the burst
            assert any(t > restarted and s == 200 for t, _, s, _ in burst.results)
            _check_every_acknowledged_link(burst.acked(), url, server.base)
        finally:
            server.kill()


@pytest.mark.slow
def test_a_server_killed_mid_burst_keeps_every_acknowledged_link(burst_models, tmp_path, backend_url):
    """`rnnscope serve` is SIGKILLed while links are being made, and started again on the same store."""
    server = _burst_server(burst_models, tmp_path, backend_url)
    try:
        server.start()
        with Burst(server.base) as burst:
            burst.wait_for_acks(30, timeout=30)
            before = len(burst.acked())
            server.kill()
            server.start()
            burst.wait_for_acks(before + 30, timeout=30)
        refused = [s for _, _, s, _ in burst.results if s != 200]
        assert refused and all(isinstance(s, str) for s in refused), refused  # connections failed; no HTTP error
        _check_every_acknowledged_link(burst.acked(), backend_url, server.base)
    finally:
        server.kill()
