"""Fixtures for the deployment tests: a throwaway PostgreSQL cluster (deploy/stack.py) and per-test databases.

The cluster is started once per session on a free loopback port, as `nobody` when the tests run as root
(PostgreSQL refuses root), and deleted at the end. Where its programs are missing the PostgreSQL tests
skip with the reason; .ci/run installs Debian's postgresql so that CI runs them.
"""

from __future__ import annotations

import pytest

from app.share.store import sqlite_url
from deploy.stack import PostgresCluster, nginx_bin, postgres_bin

PG_MISSING = "PostgreSQL's server programs (initdb, postgres) are missing: apt-get install postgresql (.ci/run does)"
NGINX_MISSING = "nginx is missing: apt-get install nginx (.ci/run does)"


def need_postgres() -> None:
    if postgres_bin() is None:
        pytest.skip(PG_MISSING)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the psycopg driver is missing: pip install -e . (pyproject.toml lists psycopg[binary])")


def need_nginx() -> None:
    if nginx_bin() is None:
        pytest.skip(NGINX_MISSING)


@pytest.fixture(scope="session")
def pg_cluster():
    """One cluster for the session; tests that stop or restart PostgreSQL start their own."""
    need_postgres()
    with PostgresCluster() as pg:
        yield pg


@pytest.fixture
def pg_url(pg_cluster):
    """A fresh empty database for this test (dropped after it, its connections with it)."""
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    pg_cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request, tmp_path):
    """The share store's URL on each backend: SQLite in a temp folder, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        (tmp_path / "sqlite").mkdir()  # as the app's data folder would be: tests write raw rows first
        return sqlite_url(tmp_path / "sqlite")
    return request.getfixturevalue("pg_url")
