"""The throwaway PostgreSQL the SQL store's tests run against answers like a real deployment."""

from __future__ import annotations

import subprocess

import asyncpg
import pytest

from tests import pg_server
from tests.pg_server import PostgresServer, _find_psql, fresh_database

# The session fixtures, made visible to this module's tests.
postgres_server = pg_server.postgres_server
postgres_url = pg_server.postgres_url


def _psql(url: str, sql: str) -> str:
    result = subprocess.run(
        [_find_psql(), "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def _query(url: str, sql: str) -> str:
    """One value from `sql`, through the driver the store uses (asyncpg, pinned)."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        return str(await connection.fetchval(sql))
    finally:
        await connection.close()


async def test_the_app_user_connects_with_its_password_over_tcp(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://chat:chat@127.0.0.1:")
    assert postgres_url.endswith("/chat")
    assert await _query(postgres_url, "SELECT 1") == "1"
    assert await _query(postgres_url, "SELECT current_user") == "chat"


def test_a_wrong_password_is_refused(postgres_url: str) -> None:
    wrong = postgres_url.replace("chat:chat@", "chat:wrong@")
    result = subprocess.run(
        [_find_psql(), "-X", "-tA", "-d", wrong, "-c", "SELECT 1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "password authentication failed" in result.stderr


async def test_each_module_gets_an_empty_database_it_owns(postgres_url: str) -> None:
    first, second = fresh_database(postgres_url), fresh_database(postgres_url)
    assert first != second != postgres_url
    _psql(first, "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('only here')")
    assert await _query(first, "SELECT count(*) FROM notes") == "1"
    tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
    assert await _query(second, tables) == "0"
    assert await _query(second, "SELECT current_user") == "chat"


def test_the_store_can_enable_trigram_search_without_a_superuser(postgres_url: str) -> None:
    # pg_trgm is a trusted extension: a database owner may create it (substring search).
    url = fresh_database(postgres_url)
    _psql(url, "CREATE EXTENSION IF NOT EXISTS pg_trgm")
    assert _psql(url, "SELECT similarity('replica', 'replicas') > 0.5") == "t"


def test_the_cluster_runs_fast_and_loose_on_loopback(postgres_server: PostgresServer) -> None:
    assert postgres_server.psql("SHOW fsync").strip() == "off"
    assert postgres_server.psql("SHOW listen_addresses").strip() == "127.0.0.1"
    assert postgres_server.process.poll() is None


@pytest.mark.parametrize("url", ["sqlite:///chat.db", "mysql://u:p@h/db"])
def test_fresh_database_refuses_urls_that_are_not_postgresql(url: str) -> None:
    with pytest.raises(ValueError, match="postgresql"):
        fresh_database(url)
