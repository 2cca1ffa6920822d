"""The share store's test suite (tests/app/share) run again, unchanged, against a real PostgreSQL.

Every test of the store, its limits, its API, its pages, probe links and public URLs is collected here a
second time (as test_<module>__<name>) with the store pointed at a fresh PostgreSQL database: the
`store` and `client` fixtures, RNNSCOPE_DATABASE_URL for the apps a test makes itself, and test_limits'
sqlite_url() for the stores it opens. tests/app/share keeps running them on SQLite; nothing is copied,
so a test added there runs on both.

Tests that open the SQLite file itself (sqlite3, a sqlite:/// URL, shares.sqlite3) are left out here
by reading their source; their PostgreSQL twins are in test_store_backends.py.
"""

from __future__ import annotations

import inspect

import pytest

from app.share.store import ShareStore
from tests.app.share import test_api, test_limits, test_pages, test_probe_links, test_public_url, test_store
from tests.app.share.conftest import make_client
from tests.app.share.test_public_url import public  # noqa: F401 - a fixture its tests need

from .conftest import need_postgres

SUITES = (test_store, test_limits, test_api, test_pages, test_probe_links, test_public_url)
SQLITE_MARKS = ("sqlite3", "sqlite:///", "shares.sqlite3")
# About SQLite's data folder, not the store's behaviour: its PostgreSQL twin (a server that is down at
# start) is test_store_backends.py's test_an_unreachable_server_turns_sharing_off_and_says_why.
NOT_HERE = {"test_a_store_that_cannot_open_turns_sharing_off_but_traces_still_serve"}


def _sqlite_only(fn) -> bool:
    source = inspect.getsource(fn)
    return any(mark in source for mark in SQLITE_MARKS)


COLLECTED: list[str] = []
LEFT_OUT: list[str] = []
for _module in SUITES:
    _short = _module.__name__.rsplit(".", 1)[1].removeprefix("test_")
    for _name, _fn in list(vars(_module).items()):
        if not (_name.startswith("test_") and inspect.isfunction(_fn) and _fn.__module__ == _module.__name__):
            continue
        if _name in NOT_HERE or _sqlite_only(_fn):
            LEFT_OUT.append(f"{_short}.{_name}")
            continue
        globals()[f"test_{_short}__{_name.removeprefix('test_')}"] = _fn
        COLLECTED.append(f"{_short}.{_name}")


@pytest.fixture(autouse=True)
def on_postgres(pg_cluster, pg_url, monkeypatch):
    """Every store this test opens is the fresh PostgreSQL database (one per folder it names)."""
    monkeypatch.setenv("RNNSCOPE_DATABASE_URL", pg_url)
    by_folder: dict[str, str] = {}

    def postgres_url(folder) -> str:
        key = str(folder)
        if key not in by_folder:
            by_folder[key] = pg_url if not by_folder else pg_cluster.url(pg_cluster.create_database())
        return by_folder[key]

    monkeypatch.setattr(test_limits, "sqlite_url", postgres_url)
    yield pg_url


@pytest.fixture
def store(pg_url):
    s = ShareStore(pg_url)
    yield s
    s.close()


@pytest.fixture
def client(tiny_models_dir, tmp_path, pg_url):
    with make_client(tiny_models_dir, tmp_path / "data", database_url=pg_url) as c:
        assert c.app.state.shares.store is not None and not c.app.state.shares.store.is_sqlite
        yield c


def test_most_of_the_suite_runs_here():
    """A guard: were the filter to leave out most tests (say, a renamed import), this run would prove little."""
    need_postgres()
    assert len(COLLECTED) >= 45 and len(LEFT_OUT) <= 20, (len(COLLECTED), LEFT_OUT)
    assert {"store.test_concurrent_creation", "limits.test_concurrent_links_never_take_the_store_past_its_budget",
            "api.test_create_returns_id_and_link_and_the_same_view_gets_the_same_id"} <= set(COLLECTED)
