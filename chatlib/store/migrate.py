"""Schema migrations (Alembic), run at startup by one process at a time.

No alembic.ini: the configuration is built here. To add a revision, copy the newest module
under `migrations/versions/` (or run `alembic revision` with `alembic_config()`).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from chatlib.store.engine import startup_lock

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, in code; `connection` is the one env.py migrates."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found under " + str(MIGRATIONS_DIR))
    return head


def _upgrade(connection: Connection) -> str | None:
    """Upgrade to head on `connection` (already in the locked transaction); the old revision."""
    before = MigrationContext.configure(connection).get_current_revision()
    if before != head_revision():
        command.upgrade(alembic_config(connection), "head")
    return before


async def migrate(engine: AsyncEngine) -> str | None:
    """Bring the schema to the newest revision; returns the revision found before (None: new).

    Runs inside `startup_lock`, so of several processes starting at once one migrates and
    the others wait, then find nothing left to do.
    """
    async with startup_lock(engine) as connection:
        return await connection.run_sync(_upgrade)
