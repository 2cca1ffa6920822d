import json
import sqlite3
import threading

import pytest

from app.share.store import SCHEMA_VERSION, ShareNotFound, ShareStore, ShareStoreError, share_id, sqlite_url

VIEW = {"model": "austen-lstm", "text": 'He said "hi".', "layer": 1, "state": "c", "units": [7], "mode": "neuron"}


@pytest.fixture
def store(tmp_path):
    s = ShareStore(sqlite_url(tmp_path))
    yield s
    s.close()


def test_same_view_same_id_and_round_trip(store):
    a = store.create(VIEW)
    b = store.create(dict(reversed(list(VIEW.items()))))
    assert a == b == share_id(VIEW) and len(a) == 12
    assert store.get(a) == VIEW
    other = store.create({**VIEW, "units": [8]})
    assert other != a and store.count() == 2


def test_wal_mode_and_schema_version(tmp_path, store):
    store.create(VIEW)
    con = sqlite3.connect(tmp_path / "shares.sqlite3")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version FROM rnnscope_schema").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_old_schema_is_migrated_and_old_links_still_open(tmp_path):
    path = tmp_path / "shares.sqlite3"
    con = sqlite3.connect(path)  # a version-1 database: no `opened` column
    con.execute("CREATE TABLE rnnscope_schema (version INTEGER NOT NULL)")
    con.execute("INSERT INTO rnnscope_schema VALUES (1)")
    con.execute("CREATE TABLE shares (id VARCHAR(12) PRIMARY KEY, view TEXT NOT NULL, created VARCHAR(32) NOT NULL)")
    con.execute("INSERT INTO shares VALUES (?, ?, ?)", (share_id(VIEW), json.dumps(VIEW), "2026-01-01T00:00:00+00:00"))
    con.commit()
    con.close()
    store = ShareStore(sqlite_url(tmp_path))
    assert store.get(share_id(VIEW)) == VIEW
    store.close()


def test_concurrent_creation(tmp_path, store):
    ids, errors = [], []

    def make(i):
        try:
            ids.append(store.create(VIEW if i % 2 else {**VIEW, "units": [i]}))
        except Exception as e:  # noqa: BLE001 - the test reports any failure
            errors.append(e)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1 + 8  # one shared id for the same view, 8 distinct others
    assert store.count() == 9


def test_bad_ids_and_sizes(store):
    with pytest.raises(ShareNotFound, match="not a share id"):
        store.get("../../etc/passwd")
    with pytest.raises(ShareNotFound, match="no shared view"):
        store.get("a" * 12)
    with pytest.raises(ShareStoreError, match="at most"):
        ShareStore(store.url, max_text_chars=5).create(VIEW)
    with pytest.raises(ShareStoreError, match="non-empty text"):
        store.create({**VIEW, "text": ""})


def test_read_only_database_keeps_old_links_via_uri(tmp_path, store):
    sid = store.create(VIEW)
    store.close()
    ro = ShareStore(f"sqlite:///file:{tmp_path / 'shares.sqlite3'}?mode=ro&uri=true")
    assert ro.get(sid) == VIEW
    with pytest.raises(ShareStoreError, match="read-only"):
        ro.create({**VIEW, "units": [99]})
    ro.close()
    again = ShareStore(sqlite_url(tmp_path))
    assert again.get(sid) == VIEW and again.count() == 1
    again.close()


def test_locked_database_gives_a_clear_error(tmp_path, store):
    sid = store.create(VIEW)
    blocker = sqlite3.connect(tmp_path / "shares.sqlite3", timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    quick = ShareStore.__new__(ShareStore)
    quick.url, quick.max_text_chars = store.url, 100
    from sqlalchemy import create_engine
    quick.engine = create_engine(store.url, connect_args={"timeout": 0.2})
    with pytest.raises(ShareStoreError, match="locked"):
        quick.create({**VIEW, "units": [42]})
    blocker.rollback()
    blocker.close()
    assert store.get(sid) == VIEW


def test_a_file_uri_creates_no_stray_folder(tmp_path, monkeypatch, store):
    store.create(VIEW)
    monkeypatch.chdir(tmp_path)
    ro = ShareStore(f"sqlite:///file:{tmp_path / 'shares.sqlite3'}?mode=ro&uri=true")
    assert ro.count() == 1
    ro.close()
    assert not (tmp_path / "file:").exists()


def test_lock_timeout_comes_from_the_url_or_the_argument(tmp_path):
    a = ShareStore(f"sqlite:///{tmp_path / 'a.db'}?timeout=0.25")
    b = ShareStore(f"sqlite:///{tmp_path / 'b.db'}", lock_timeout=1.5)
    assert (a.lock_timeout, b.lock_timeout) == (0.25, 1.5)
    with a.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 250
    a.close()
    b.close()
    with pytest.raises(ShareStoreError, match="timeout='soon' in the database URL is not a number of seconds"):
        ShareStore(f"sqlite:///{tmp_path / 'c.db'}?timeout=soon")


def test_unusable_locations_and_urls_say_why(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ShareStoreError, match="cannot create the share folder .*not-a-folder.*RNNSCOPE_DATA_DIR"):
        ShareStore(sqlite_url(blocker / "sub"))
    with pytest.raises(ShareStoreError, match="is not a database URL"):
        ShareStore("not a url at all")
    with pytest.raises(ShareStoreError, match="cannot use the share database nosuchdb://user:\\*\\*\\*@host/db"):
        ShareStore("nosuchdb://user:secret@host/db")  # the password is never echoed
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ShareStoreError, match="the share database failed \\(file is not a database\\)"):
        ShareStore(f"sqlite:///{garbage}")


def test_count(store):
    for unit in range(5):
        store.create({**VIEW, "units": [unit]})
    assert store.count() == 5
