"""Alembic's entry point: run the migrations on the connection `chatlib.store.migrate` holds.

There is no alembic.ini: the configuration is built in code, and the caller passes an open
connection (inside the startup lock) as `config.attributes["connection"]`.
"""

from __future__ import annotations

from alembic import context

from chatlib.store.schema import metadata


def run_migrations_online() -> None:
    """Migrate on the caller's connection; SQLite ALTERs go through batch mode."""
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run the app instead")
run_migrations_online()
