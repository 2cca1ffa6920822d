"""Share links: content-addressed views stored in a real database (SQLite by default).

A view (model, text, layer, state, units, probe, colouring mode) is canonicalised to JSON and
hashed; the id is the first 12 characters of its base32 sha256, so the same view always gets
the same link, ids reveal nothing about order, and two processes creating the same link at
once agree. The schema is versioned: each migration runs once, in order, and later versions
keep reading old rows.

A stored view is one JSON object of settings, so a setting added later (the Find units probe and
its regex pattern were) is a new optional key, not a schema change: rows written before it stay
readable as they are, and a view that does not set it canonicalises, and so hashes, exactly as
before. Only a change to the table itself, or to how an existing key is read, needs a migration.

The store has a size budget (max_bytes): the bytes of every stored view's canonical JSON, kept as a
running total in the one-row table share_totals, updated in the same transaction as each insert, so
it stays exact with several processes on one database and costs no scan per link. A new view that
would pass the budget is refused (ShareStoreFull); a view already stored still gets its id, as it
stores nothing new; nothing stored is ever dropped to make room.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (BigInteger, Column, Integer, LargeBinary, MetaData, String, Table, Text, cast, create_engine,
                        event, func, select, text)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, OperationalError,
                            SQLAlchemyError)

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
# One row: the UTF-8 bytes of every stored view, kept up to date by each insert (the size budget's count).
totals = Table("share_totals", metadata, Column("bytes", BigInteger, nullable=False))


class ShareStoreError(Exception):
    """The store cannot do what was asked; the message says why and what to do."""


class ShareNotFound(ShareStoreError):
    pass


class ShareStoreFull(ShareStoreError):
    """A new view would take the store past its size budget; the links already made are untouched."""

    def __init__(self, message: str, used: int, budget: int):
        super().__init__(message)
        self.used = used
        self.budget = budget


def _m1_create(conn: Connection) -> None:
    shares.create(conn, checkfirst=True)


def _m2_opened_counter(conn: Connection) -> None:
    cols = {c["name"] for c in conn.dialect.get_columns(conn, "shares")}
    if "opened" not in cols:
        conn.execute(text("ALTER TABLE shares ADD COLUMN opened INTEGER NOT NULL DEFAULT 0"))


def _m3_size_totals(conn: Connection) -> None:
    """The running total of stored bytes, counted once here from the rows already stored."""
    totals.create(conn, checkfirst=True)
    conn.execute(totals.delete())
    conn.execute(totals.insert().values(bytes=_sum_bytes(conn)))


def _sum_bytes(conn: Connection) -> int:
    """The UTF-8 bytes of every stored view, by a scan (at migration, and for check_totals)."""
    if conn.dialect.name == "sqlite":
        size = func.length(cast(shares.c.view, LargeBinary))  # length() of TEXT counts characters
    else:
        size = func.octet_length(shares.c.view)
    return int(conn.execute(select(func.coalesce(func.sum(size), 0))).scalar_one())


# Each entry upgrades the schema by one version; never edit a shipped one, append a new one.
MIGRATIONS: list[Callable[[Connection], None]] = [_m1_create, _m2_opened_counter, _m3_size_totals]
SCHEMA_VERSION = len(MIGRATIONS)
# PostgreSQL advisory lock held while migrating (two CREATE TABLEs at once fail on pg_type's unique index).
MIGRATION_LOCK = 0x726E6E73636F7065 & 0x7FFFFFFFFFFFFFFF  # "rnnscope"


def canonical(view: dict) -> str:
    return json.dumps(view, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def share_id(view: dict) -> str:
    digest = hashlib.sha256(canonical(view).encode("utf-8")).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:ID_LENGTH]


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'shares.sqlite3'}"


class ShareStore:
    max_bytes = 0  # the size budget; 0 = none

    def __init__(self, url: str, max_text_chars: int = 20_000, lock_timeout: float | None = None,
                 max_bytes: int = 0):
        """Open (creating if needed) and migrate the store. Raises ShareStoreError with a fix-it message.

        lock_timeout: seconds a write waits for another writer's lock before failing with "locked";
        a SQLite URL may also set it (`?timeout=0.5`). Default 5 s. On PostgreSQL it is the session's
        lock_timeout (without it a write behind a held lock waited for ever).
        max_bytes: the size budget of the stored views (UTF-8 bytes of their canonical JSON); 0 = none.
        """
        self.url = url
        self.max_text_chars = max_text_chars
        self.max_bytes = max(0, int(max_bytes))
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ShareStoreError(f"{_redact(url)} is not a database URL (e.g. sqlite:////srv/rnnscope/shares.sqlite3)") from None
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if parsed.drivername == "postgresql":  # the driver this package installs (psycopg 3), not SQLAlchemy 2.0's psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        query_timeout = parsed.query.get("timeout") if self.is_sqlite else None
        try:
            self.lock_timeout = float(lock_timeout if lock_timeout is not None else query_timeout or 5.0)
        except (TypeError, ValueError):
            raise ShareStoreError(f"timeout={query_timeout!r} in the database URL is not a number of seconds") from None
        if self.is_sqlite:
            folder = _sqlite_folder(parsed.database)
            if folder is not None:
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise ShareStoreError(f"cannot create the share folder {folder} ({e.strerror or e}): "
                                          "set RNNSCOPE_DATA_DIR to a writable folder") from None
        connect_args: dict = {"timeout": self.lock_timeout} if self.is_sqlite else {}
        if parsed.get_backend_name() == "postgresql" and "options" not in parsed.query:
            connect_args["options"] = f"-c lock_timeout={max(1, int(self.lock_timeout * 1000))}"
        try:
            self.engine: Engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
        except (ArgumentError, NoSuchModuleError, ImportError) as e:
            raise ShareStoreError(f"cannot use the share database {_redact(url)}: {e}") from None
        if self.is_sqlite:
            busy_ms = int(self.lock_timeout * 1000)
            event.listen(self.engine, "connect", lambda conn, rec: _sqlite_pragmas(conn, busy_ms))
        self._migrate()

    def _migrate(self, tries: int = 3) -> None:
        try:
            self._migrate_once()
        except ShareStoreError as e:
            # Another process created a table between our check and our CREATE (SQLite runs DDL outside the
            # migration's transaction): it has migrated, so looking again finds the tables there.
            if tries > 1 and "already exists" in str(e):
                time.sleep(0.05)
                return self._migrate(tries - 1)
            raise

    def _migrate_once(self) -> None:
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":  # replicas starting at once: one migrates, the others wait
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
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
        except SQLAlchemyError as e:  # locked, read-only, unreachable server, refused login, not a database
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
        size = len(payload.encode("utf-8"))
        try:
            with self.engine.begin() as conn:
                existing = conn.execute(select(shares.c.id).where(shares.c.id == sid)).first()
                if existing is None:  # a view already stored is never refused: it stores nothing new
                    grow = totals.update().values(bytes=totals.c.bytes + size)
                    if self.max_bytes:
                        grow = grow.where(totals.c.bytes + size <= self.max_bytes)
                    if conn.execute(grow).rowcount == 0 and not self._restore_totals(conn, grow):
                        raise self._full(conn, size)
                    conn.execute(shares.insert().values(id=sid, view=payload, created=_now()))
                    return sid  # the insert and the new total commit together, or neither does
        except IntegrityError:
            pass  # another request stored the same view a moment ago
        except SQLAlchemyError as e:
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
                    self._count_open(conn, sid)
        except SQLAlchemyError as e:
            raise ShareStoreError(_explain(e, self.url)) from None
        if row is None:
            raise ShareNotFound(f"no shared view {sid!r}: the link is wrong or was made on another server")
        return json.loads(row[0])

    def _count_open(self, conn: Connection, sid: str) -> None:
        """Count an open, best effort: a read-only database (file, role, standby) still serves links."""
        bump = shares.update().where(shares.c.id == sid).values(opened=shares.c.opened + 1)
        if self.is_sqlite:
            try:
                conn.execute(bump)
            except OperationalError:
                pass
            return
        try:  # elsewhere a failed statement aborts the whole transaction: fail inside a savepoint instead
            with conn.begin_nested():
                conn.execute(bump)
        except DBAPIError as e:
            if e.connection_invalidated:
                raise

    @staticmethod
    def _restore_totals(conn: Connection, grow) -> bool:
        """When the totals row was deleted by hand, recount it and try the update again; else False."""
        if conn.execute(select(totals.c.bytes)).first() is not None:
            return False
        conn.execute(totals.insert().values(bytes=_sum_bytes(conn)))
        return conn.execute(grow).rowcount > 0

    def _full(self, conn: Connection, size: int) -> ShareStoreFull:
        used = int(conn.execute(select(totals.c.bytes)).scalar_one_or_none() or 0)
        return ShareStoreFull(
            f"the share store is full ({_size(used)} of its {_size(self.max_bytes)} budget used; this view needs "
            f"{_size(size)}): links already made still open, and sharing one of them again still works, but new "
            f"links cannot be saved until the operator raises RNNSCOPE_SHARE_STORE_BYTES", used, self.max_bytes)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(shares)).scalar_one())

    def stored_bytes(self) -> int:
        """The running total the size budget counts: UTF-8 bytes of every stored view (one row read, no scan)."""
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(select(totals.c.bytes)).scalar_one_or_none() or 0)
        except SQLAlchemyError as e:
            raise ShareStoreError(_explain(e, self.url)) from None

    def recount_bytes(self) -> int:
        """Recount the stored bytes by a scan and store the total (e.g. after rows were deleted by hand)."""
        try:
            with self.engine.begin() as conn:
                used = _sum_bytes(conn)
                conn.execute(totals.update().values(bytes=used))
                return used
        except SQLAlchemyError as e:
            raise ShareStoreError(_explain(e, self.url)) from None

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_folder(database: str | None) -> Path | None:
    """The folder a SQLite file lives in, to create it; None for in-memory and `file:` URI databases."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve().parent


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url[:80])


def _sqlite_pragmas(dbapi_conn, busy_ms: int) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
    except Exception:  # a read-only file cannot switch modes; reads still work
        pass
    cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _explain(e: SQLAlchemyError, url: str) -> str:
    msg = str(getattr(e, "orig", e)).lower()
    where = _where(url)
    if "readonly" in msg or "read-only" in msg:
        check = "check file permissions" if where != _where_server(url) else "check the role's rights and the server"
        return f"{where} is read-only: existing links still open, but new ones cannot be saved ({check})"
    if "locked" in msg or "busy" in msg or "lock timeout" in msg:
        return f"{where} is locked by another process; try again in a moment"
    if "unable to open" in msg:
        return f"cannot open {where}: check that RNNSCOPE_DATA_DIR exists and is writable"
    return f"the share database failed ({msg.splitlines()[0] if msg else type(e).__name__})"


def _where(url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "the share database"
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return parsed.database.removeprefix("file:")
    return _where_server(url)


def _where_server(url: str) -> str:
    return f"the share database {_redact(url)}"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
