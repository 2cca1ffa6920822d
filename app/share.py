"""Share links: content-addressed views stored in a real database (SQLite by default).

A view (model, text, layer, state, units, probe, colouring mode) is canonicalised to JSON and
hashed; the id is the first 12 characters of its base32 sha256, so the same view always gets
the same link, ids reveal nothing about order, and two processes creating the same link at
once agree. The schema is versioned: each migration runs once, in order, and later versions
keep reading old rows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, event, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

ID_LENGTH = 12
ID_PATTERN = re.compile(r"^[a-z2-7]{12}$")

metadata = MetaData()
shares = Table(
    "shares",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("view", Text, nullable=False),  # canonical JSON
    Column("created", String(32), nullable=False),
    Column("opened", Integer, nullable=False, server_default="0"),
)
schema_info = Table("rnnscope_schema", metadata, Column("version", Integer, nullable=False))


class ShareStoreError(Exception):
    """The store cannot do what was asked; the message says why and what to do."""


class ShareNotFound(ShareStoreError):
    pass


def _m1_create(conn: Connection) -> None:
    shares.create(conn, checkfirst=True)


def _m2_opened_counter(conn: Connection) -> None:
    cols = {c["name"] for c in conn.dialect.get_columns(conn, "shares")}
    if "opened" not in cols:
        conn.execute(text("ALTER TABLE shares ADD COLUMN opened INTEGER NOT NULL DEFAULT 0"))


# Each entry upgrades the schema by one version; never edit a shipped one, append a new one.
MIGRATIONS: list[Callable[[Connection], None]] = [_m1_create, _m2_opened_counter]
SCHEMA_VERSION = len(MIGRATIONS)


def canonical(view: dict) -> str:
    return json.dumps(view, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def share_id(view: dict) -> str:
    digest = hashlib.sha256(canonical(view).encode("utf-8")).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:ID_LENGTH]


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'shares.sqlite3'}"


class ShareStore:
    def __init__(self, url: str, max_text_chars: int = 20_000):
        self.url = url
        self.max_text_chars = max_text_chars
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, pool_pre_ping=True,
                                            connect_args={"timeout": 5} if url.startswith("sqlite") else {})
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._migrate()

    def _migrate(self) -> None:
        try:
            with self.engine.begin() as conn:
                schema_info.create(conn, checkfirst=True)
                row = conn.execute(select(schema_info.c.version)).first()
                current = row[0] if row else 0
                if current > SCHEMA_VERSION:
                    raise ShareStoreError(
                        f"the share database has schema version {current}, newer than this rnnscope "
                        f"({SCHEMA_VERSION}); upgrade rnnscope")
                for version in range(current, SCHEMA_VERSION):
                    MIGRATIONS[version](conn)
                if row is None:
                    conn.execute(schema_info.insert().values(version=SCHEMA_VERSION))
                elif current != SCHEMA_VERSION:
                    conn.execute(schema_info.update().values(version=SCHEMA_VERSION))
        except OperationalError as e:
            raise ShareStoreError(_explain(e, self.url)) from None

    def create(self, view: dict) -> str:
        """Store a view and return its id; the same view always returns the same id."""
        body = view.get("text", "")
        if not isinstance(body, str) or not body:
            raise ShareStoreError("a shared view needs a non-empty text")
        if len(body) > self.max_text_chars:
            raise ShareStoreError(f"the text is {len(body):,} characters; share links hold at most {self.max_text_chars:,}")
        sid = share_id(view)
        payload = canonical(view)
        try:
            with self.engine.begin() as conn:
                existing = conn.execute(select(shares.c.view).where(shares.c.id == sid)).first()
                if existing is None:
                    conn.execute(shares.insert().values(id=sid, view=payload, created=_now()))
                    return sid
        except IntegrityError:
            pass  # another request stored the same view a moment ago
        except OperationalError as e:
            raise ShareStoreError(_explain(e, self.url)) from None
        stored = self.get(sid, count_open=False)
        if canonical(stored) != payload:  # a 60-bit collision: astronomically unlikely, never silent
            raise ShareStoreError("share id collision; change the view slightly and share again")
        return sid

    def get(self, sid: str, count_open: bool = True) -> dict:
        if not ID_PATTERN.match(sid or ""):
            raise ShareNotFound(f"{sid!r} is not a share id (12 characters, a-z and 2-7)")
        try:
            with self.engine.begin() as conn:
                row = conn.execute(select(shares.c.view).where(shares.c.id == sid)).first()
                if row is not None and count_open:
                    try:
                        conn.execute(shares.update().where(shares.c.id == sid).values(opened=shares.c.opened + 1))
                    except OperationalError:
                        pass  # a read-only database still serves links
        except OperationalError as e:
            raise ShareStoreError(_explain(e, self.url)) from None
        if row is None:
            raise ShareNotFound(f"no shared view {sid!r}: the link is wrong or was made on another server")
        return json.loads(row[0])

    def count(self) -> int:
        with self.engine.connect() as conn:
            return len(conn.execute(select(shares.c.id)).all())

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
    except Exception:  # a read-only file cannot switch modes; reads still work
        pass
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _explain(e: SQLAlchemyError, url: str) -> str:
    msg = str(getattr(e, "orig", e)).lower()
    where = url.removeprefix("sqlite:///") if url.startswith("sqlite") else "the share database"
    if "readonly" in msg or "read-only" in msg:
        return f"{where} is read-only: existing links still open, but new ones cannot be saved (check file permissions)"
    if "locked" in msg or "busy" in msg:
        return f"{where} is locked by another process; try again in a moment"
    if "unable to open" in msg:
        return f"cannot open {where}: check that RNNSCOPE_DATA_DIR exists and is writable"
    return f"the share database failed ({msg.splitlines()[0] if msg else type(e).__name__})"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
