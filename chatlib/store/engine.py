"""Which database, and how to connect: URLs, engines, SQLite's pragmas and write locks.

Everything that differs between SQLite and PostgreSQL about connecting lives here (search,
the other engine-specific part, lives in `search.py`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

SQLITE_FILE_NAME = "chat.db"
SQLITE_BUSY_TIMEOUT_MS = 5000  # a SQLite URL's `?timeout=<seconds>` (the driver's own) overrides
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
# An execution option of a connection: its transaction is a write (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "chat_store_write"
# pg_advisory_xact_lock key of "migrate and import at startup" (any fixed 64-bit number).
STARTUP_LOCK_KEY = 0x63686174_73746F72  # "chatstor"
CONTAINS_FUNCTION = "chat_contains"


class HasDataDir(Protocol):
    """Anything with a data directory, e.g. `chatlib.config.Settings`."""

    @property
    def data_dir(self) -> Path: ...


def database_url(settings_or_data_dir: HasDataDir | Path, database_url: str | None = None) -> str:
    """The database to use: `database_url` when set, else SQLite at DATA_DIR/chat.db.

    The result is a plain URL (sqlite:///… or postgresql://…); `create_engine_for` picks
    the async driver.
    """
    if database_url is not None and database_url.strip():
        return database_url.strip()
    data_dir = (
        settings_or_data_dir
        if isinstance(settings_or_data_dir, Path)
        else settings_or_data_dir.data_dir
    )
    return f"sqlite:///{(Path(data_dir) / SQLITE_FILE_NAME).resolve()}"


def async_url(url: str) -> URL:
    """`url` with the async driver: sqlite+aiosqlite, postgresql+asyncpg.

    Raises ValueError (without echoing the URL, which may hold a password) for anything else.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "DATABASE_URL is not a URL like postgresql://user:pass@host:5432/db"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(
        f"DATABASE_URL uses {backend!r}; this app speaks postgresql:// (or sqlite:/// by default)"
    )


def describe_url(url: str) -> str:
    """The URL for a log line: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a URL)"


def create_engine_for(url: str) -> AsyncEngine:
    """An async engine for `url` (see `async_url`); SQLite connections get WAL and friends."""
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        if target.database and target.database != ":memory:":
            Path(target.database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_async_engine(target)
        _install_sqlite_events(engine, _busy_timeout_ms(target))
        return engine
    return create_async_engine(target, pool_pre_ping=True, pool_size=10, max_overflow=20)


def is_sqlite(engine: AsyncEngine | AsyncConnection) -> bool:
    """Whether the database is SQLite (else PostgreSQL)."""
    return engine.dialect.name == "sqlite"


def _contains(haystack: str | None, needle: str | None) -> bool:
    """SQL function chat_contains(text, needle): case-insensitive substring, as Python folds."""
    if haystack is None or needle is None:
        return False
    return needle in haystack.casefold()


def _busy_timeout_ms(target: URL) -> int:
    """How long a connection waits for another writer: the URL's `timeout` (s), else 5 s."""
    raw = target.query.get("timeout")
    try:
        seconds = float(raw if isinstance(raw, str) else "nan")
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        return SQLITE_BUSY_TIMEOUT_MS
    return round(seconds * 1000)


def _install_sqlite_events(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    """Pragmas and `chat_contains` on every connection; our own BEGIN (IMMEDIATE for writes).

    The sqlite3 driver's own transaction handling (BEGIN only before DML, DEFERRED) is turned
    off: a deferred transaction that reads then writes fails at once with "database is
    locked" when another process wrote meanwhile, while BEGIN IMMEDIATE waits busy_timeout.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in (*SQLITE_PRAGMAS, f"PRAGMA busy_timeout={busy_timeout_ms}"):
                cursor.execute(pragma)
        finally:
            cursor.close()
        dbapi_connection.create_function(CONTAINS_FUNCTION, 2, _contains, deterministic=True)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextlib.asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a write transaction, committed at the end (rolled back on an error).

    SQLite takes the database's write lock at BEGIN (waiting up to busy_timeout for another
    writer), so what the transaction reads stays true until it commits.
    """
    async with engine.connect() as connection:
        await connection.execution_options(**{WRITE_OPTION: True})
        async with connection.begin():
            yield connection


@contextlib.asynccontextmanager
async def read_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose statements all see one snapshot (a conversation and its messages).

    SQLite's BEGIN gives that in WAL mode; PostgreSQL needs REPEATABLE READ for it.
    """
    async with engine.connect() as connection:
        if not is_sqlite(connection):
            await connection.execution_options(isolation_level="REPEATABLE READ")
        async with connection.begin():
            yield connection


@contextlib.asynccontextmanager
async def startup_lock(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction that one process at a time holds: migrations and the JSON import.

    PostgreSQL: a transaction-scoped advisory lock; SQLite: the write lock of BEGIN IMMEDIATE.
    Either is released by the commit or rollback at the end of the block.
    """
    async with write_transaction(engine) as connection:
        if not is_sqlite(connection):
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": STARTUP_LOCK_KEY}
            )
        yield connection
