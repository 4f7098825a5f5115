"""Open the store at startup: connect, migrate, import a JSON data folder once."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import structlog
from sqlalchemy.exc import OperationalError

from chatlib.store.engine import create_engine_for, describe_url
from chatlib.store.json_import import import_json_directory
from chatlib.store.migrate import migrate
from chatlib.store.sql import SqlConversationStore

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
STARTUP_WAIT_SECONDS = 600.0  # how long a process waits for another's migration and import


async def open_store(
    url: str,
    *,
    data_dir: Path | None,
    clock: Callable[[], float] = time.time,
    wait_seconds: float = STARTUP_WAIT_SECONDS,
) -> SqlConversationStore:
    """A ready store on `url`: schema migrated, `data_dir`'s JSON files imported (once).

    `data_dir` None skips the import. Several processes may call this at once: one migrates
    and imports while the others wait. Close the store with `aclose()`.
    """
    engine = create_engine_for(url)
    try:
        before = await _waiting_for_others(lambda: migrate(engine), wait_seconds)
        store = SqlConversationStore(engine, clock=clock)
        if data_dir is not None:
            await _waiting_for_others(
                lambda: import_json_directory(store, Path(data_dir)), wait_seconds
            )
    except BaseException:
        await engine.dispose()
        raise
    log.info(
        "store.opened",
        url=describe_url(url),
        engine=engine.dialect.name,
        migrated_from=before,
    )
    return store


async def prepare_database(url: str, *, data_dir: Path | None) -> None:
    """Migrate and import (see `open_store`), then close every connection.

    For a synchronous startup: run this with `asyncio.run(...)` before the server starts,
    then build `SqlConversationStore(create_engine_for(url))`, which connects lazily on the
    server's event loop (asyncpg connections cannot move from one loop to another).
    """
    store = await open_store(url, data_dir=data_dir)
    await store.aclose()


async def _waiting_for_others(operation: Callable[[], Awaitable[_T]], wait_seconds: float) -> _T:
    """Run `operation`, again while SQLite says another process holds the write lock.

    SQLite waits busy_timeout (5 s) per attempt; a long import elsewhere takes longer.
    PostgreSQL's advisory lock simply waits.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return await operation()
        except OperationalError as exc:
            code = getattr(exc.orig, "sqlite_errorcode", None)
            if code != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            log.info("store.waiting_for_another_process")
            await asyncio.sleep(0.5)
