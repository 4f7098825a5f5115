"""Usage in the database: every replica's turns add up, and the CSV files are still written.

Every test runs on SQLite and on PostgreSQL (a throwaway cluster from tests/pg_server.py).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from chatlib.chat import ChatService, TurnRequest
from chatlib.client import ClientPool
from chatlib.frames import FrameBudget
from chatlib.store import create_engine_for, database_url, migrate
from chatlib.usage import (
    HEADER_LINE,
    SqlUsageLog,
    UsageLog,
    UsageRecord,
    format_usage_row,
    import_usage_csv,
    read_usage,
    summarize,
    summarize_directory,
    summarize_usage_sql,
    usage_csv_from_table,
    utc_timestamp,
)
from tests.conftest import TEST_API_KEY, free_port, settings_for
from tests.fakes.openrouter import FakeOpenRouter
from tests.pg_server import fresh_database, postgres_server, postgres_url  # noqa: F401

AT = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _owner(visitor: str) -> str:
    return hmac.new(b"server-secret", visitor.encode(), hashlib.sha256).hexdigest()[:32]


ALICE, BOB = _owner("alice"), _owner("bob")


def _record(n: int, **overrides: Any) -> UsageRecord:
    fields: dict[str, Any] = {
        "timestamp": utc_timestamp(AT + n * 3600),
        "request_id": uuid.uuid4().hex[:16],
        "owner": ALICE,
        "conversation_id": uuid.uuid4().hex,
        "model": ("openai/gpt-4o", "anthropic/claude-sonnet-4")[n % 2],
        "status": "complete",
        "prompt_tokens": 100 + n,
        "completion_tokens": 10 * n,
        "reasoning_tokens": None if n % 3 else n,
        "cost_usd": 0.000123 * (n + 1),
        "ttft_ms": 200.0 + 37.3 * n,
        "latency_ms": 900.0 + 123.45 * n,
        "tokens_per_second": 40.123,
        **overrides,
    }
    return UsageRecord(**fields)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each engine, migrated by the `engines` fixture."""
    if request.param == "sqlite":
        return database_url(tmp_path)
    return fresh_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def engines(url: str) -> AsyncIterator[Callable[[], AsyncEngine]]:
    """Engines on the test's migrated database; each one stands for another process."""
    made: list[AsyncEngine] = []

    def another() -> AsyncEngine:
        made.append(create_engine_for(url))
        return made[-1]

    await migrate(another())
    yield another
    for engine in made:
        await engine.dispose()


async def test_the_dashboard_counts_the_turns_of_every_replica(
    engines: Callable[[], AsyncEngine], tmp_path: Path
) -> None:
    usage_dir = tmp_path / "usage"
    replica_a = SqlUsageLog(engines(), UsageLog(usage_dir, process_id="replica-a"))
    replica_b = SqlUsageLog(engines(), UsageLog(usage_dir, process_id="replica-b"))
    on_a = [_record(n) for n in range(5)]
    on_b = [_record(n, owner=BOB) for n in range(5, 8)]
    refused = UsageRecord.rate_limited(
        request_id="r1", owner=BOB, conversation_id=None, model="openai/gpt-4o", at=AT, count=6
    )
    for record in on_a:
        await replica_a.record(record)
    for record in [*on_b, refused]:
        await replica_b.record(record)
    replica_a.close()
    replica_b.close()

    summary = await summarize_usage_sql(engines())

    assert summary.totals.requests == 5 + 3 + 6
    assert summary.status_counts == {"complete": 8, "rate_limited": 6}
    # The same numbers as the CSV files every replica still writes, and as the records.
    assert summary == summarize_directory(usage_dir)
    assert summary == summarize(read_usage(usage_dir))
    assert len(list(usage_dir.glob("usage-*.csv"))) == 2


async def test_a_visitor_sees_only_their_own_usage(
    engines: Callable[[], AsyncEngine], tmp_path: Path
) -> None:
    engine = engines()
    usage = SqlUsageLog(engine, UsageLog(tmp_path))
    for n in range(3):
        await usage.record(_record(n, owner=ALICE))
    await usage.record(_record(9, owner=BOB, cost_usd=5.0))
    usage.close()

    alice = await summarize_usage_sql(engine, owner=ALICE)
    bob = await summarize_usage_sql(engine, owner=BOB)
    nobody = await summarize_usage_sql(engine, owner=_owner("carol"))

    assert alice.totals.requests == 3 and alice.totals.cost_usd == pytest.approx(0.000738)
    assert bob.totals.requests == 1 and bob.totals.cost_usd == 5.0
    assert nobody.totals.requests == 0 and nobody.by_day == {}
    assert alice.totals.requests + bob.totals.requests == (
        (await summarize_usage_sql(engine)).totals.requests
    )


async def test_the_operator_downloads_the_whole_table_as_one_safe_csv(
    engines: Callable[[], AsyncEngine], tmp_path: Path
) -> None:
    records = [
        _record(0),
        _record(1, owner=BOB, model='=HYPERLINK("http://evil")', error_code="x,y"),
        _record(2, status="failed", prompt_tokens=None, cost_usd=None, ttft_ms=None),
        UsageRecord.rate_limited(
            request_id="r", owner=BOB, conversation_id=None, model="m/x", at=AT, count=3
        ),
    ]
    for n, record in enumerate(records):  # two replicas, interleaved
        replica = SqlUsageLog(engines(), UsageLog(tmp_path / "usage", process_id=f"p{n % 2}"))
        await replica.record(record)
        replica.close()

    path = await usage_csv_from_table(engines(), tmp_path / "downloads" / "usage-all.csv")

    written = path.read_text(encoding="utf-8")
    assert written == HEADER_LINE + "".join(format_usage_row(r) for r in records)
    with path.open(newline="", encoding="utf-8") as handle:
        models = [row["model"] for row in csv.DictReader(handle)]
    assert models[1] == '\'=HYPERLINK("http://evil")'  # a spreadsheet shows it as text
    assert summarize(read_usage(path.parent)) == summarize(read_usage(tmp_path / "usage"))
    assert [p.name for p in path.parent.iterdir()] == ["usage-all.csv"]  # no temp file left


async def test_an_empty_table_downloads_as_a_header(
    engines: Callable[[], AsyncEngine], tmp_path: Path
) -> None:
    path = await usage_csv_from_table(engines(), tmp_path / "usage.csv")
    assert path.read_text(encoding="utf-8") == HEADER_LINE


async def test_a_database_that_refuses_the_row_loses_neither_the_csv_row_nor_the_turn(
    url: str, tmp_path: Path
) -> None:
    unmigrated = create_engine_for(url)  # no usage table: every insert fails
    usage = SqlUsageLog(unmigrated, UsageLog(tmp_path, process_id="p"))
    try:
        with capture_logs() as logs:
            await usage.record(_record(0, request_id="kept-in-csv"))
    finally:
        usage.close()
        await unmigrated.dispose()
    assert [r.request_id for r in read_usage(tmp_path)] == ["kept-in-csv"]
    failed = [e for e in logs if e["event"] == "usage.db_write_failed"]
    assert len(failed) == 1 and failed[0]["request_id"] == "kept-in-csv"


async def test_an_unreachable_database_server_loses_no_csv_row(tmp_path: Path) -> None:
    down = create_engine_for(f"postgresql://chat:chat@127.0.0.1:{free_port()}/chat")
    usage = SqlUsageLog(down, UsageLog(tmp_path, process_id="p"))
    try:
        with capture_logs() as logs:
            await usage.record(_record(0, request_id="still-counted"))
    finally:
        usage.close()
        await down.dispose()
    assert [r.request_id for r in read_usage(tmp_path)] == ["still-counted"]
    assert [e["event"] for e in logs] == ["usage.db_write_failed"]


async def test_the_csv_files_seed_an_empty_table_once(
    engines: Callable[[], AsyncEngine], tmp_path: Path
) -> None:
    # As on a Space after a restart: the files came back from the dataset repo, the
    # database is new.
    usage_dir = tmp_path / "usage"
    for process in ("old-a", "old-b"):
        old = UsageLog(usage_dir, process_id=process)
        for n in range(4):
            old.record_sync(_record(n, owner=ALICE if process == "old-a" else BOB))
        old.close()
    engine = engines()

    first = await import_usage_csv(engine, usage_dir)
    usage = SqlUsageLog(engine, UsageLog(usage_dir, process_id="new"))
    await usage.record(_record(7))
    usage.close()
    second = await import_usage_csv(engines(), usage_dir)

    assert (first, second) == (8, None)
    summary = await summarize_usage_sql(engine)
    assert summary.totals.requests == 9
    assert summary == summarize_directory(usage_dir)
    assert (await summarize_usage_sql(engine, owner=BOB)).totals.requests == 4


async def test_a_turn_through_the_chat_service_lands_in_the_table_and_the_csv(
    engines: Callable[[], AsyncEngine], fake: FakeOpenRouter, tmp_path: Path
) -> None:
    settings = settings_for(fake, tmp_path)
    pool = ClientPool(settings)
    usage = SqlUsageLog(engines(), UsageLog(tmp_path / "usage"))
    budget = FrameBudget(updates_per_second=300, min_interval_s=0.01)
    service = ChatService(settings, pool, budget, usage=usage)
    request = TurnRequest(
        owner_key=ALICE,
        conversation_id=uuid.uuid4().hex,
        user_text="Hello [[tokens=8]]",
        model="openai/gpt-4o",
        system_prompt="",
        temperature=0.3,
        api_key=TEST_API_KEY,
    )
    try:
        frames = [frame async for frame in service.run_turn(request, ())]
    finally:
        await pool.aclose()
        usage.close()
    assert frames[-1].error is None
    engine = engines()
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT owner, completion_tokens FROM usage"))).all()
    assert [tuple(r) for r in rows] == [(ALICE, 8)]
    assert await summarize_usage_sql(engine) == summarize_directory(tmp_path / "usage")
