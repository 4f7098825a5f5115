"""How fast the usage page can be built: read + summarise 100 000 CSV rows, and one append.

Prints the median of a few runs, rows per second, and the ratio to an in-run baseline
(a bare csv.reader pass over the same files, which is the floor for any CSV reader).
The same rows in the database's usage table (SQLite; PostgreSQL too with --postgres, which
starts a throwaway cluster as tests/pg_server.py does): the dashboard's SQL summary, the
operator's one-file CSV download, and one SqlUsageLog.record (CSV row + insert).

    .venv/bin/python bench/usage_aggregation.py [--rows 100000] [--runs 5] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatlib.store import create_engine_for, database_url, migrate  # noqa: E402
from chatlib.usage import (  # noqa: E402 - after the path tweak
    HEADER_LINE,
    SqlUsageLog,
    UsageLog,
    UsageRecord,
    UsageSummary,
    format_usage_row,
    import_usage_csv,
    read_usage,
    summarize,
    summarize_directory,
    summarize_usage_sql,
    usage_csv_from_table,
    utc_timestamp,
)

MODELS = (
    "openai/gpt-4o",
    "openai/gpt-4o-mini",
    "anthropic/claude-sonnet-4",
    "google/gemini-2.5-flash",
    "meta-llama/llama-3.3-70b-instruct",
    "deepseek/deepseek-r1",
)
STATUSES = ("complete",) * 90 + ("stopped",) * 4 + ("interrupted",) * 2 + ("failed",) * 2
STATUSES += ("rate_limited",) * 2
FILES = 4  # as if four replicas or restarts wrote them


def _record(rng: random.Random, at: float) -> UsageRecord:
    status = rng.choice(STATUSES)
    if status == "rate_limited":
        return UsageRecord.rate_limited(
            request_id=f"{rng.getrandbits(64):016x}",
            owner=f"{rng.getrandbits(128):032x}",
            conversation_id=f"{rng.getrandbits(64):016x}",
            model=rng.choice(MODELS),
            at=at,
            count=rng.randint(1, 20),  # a throttled row stands for the refusals not written
        )
    completion = rng.randint(1, 2000)
    ttft = rng.lognormvariate(6.5, 0.6)
    latency = ttft + completion * rng.uniform(5, 30)
    return UsageRecord(
        timestamp=utc_timestamp(at),
        request_id=f"{rng.getrandbits(64):016x}",
        owner=f"{rng.getrandbits(128):032x}",
        conversation_id=f"{rng.getrandbits(64):016x}",
        model=rng.choice(MODELS),
        status=status,  # type: ignore[arg-type]
        error_code="provider_unavailable" if status == "failed" else "",
        prompt_tokens=rng.randint(10, 8000),
        completion_tokens=completion,
        reasoning_tokens=rng.choice((None, 0, rng.randint(1, 500))),
        cost_usd=rng.uniform(0.00001, 0.05),
        ttft_ms=round(ttft, 1),
        latency_ms=round(latency, 1),
        tokens_per_second=round(completion / max((latency - ttft) / 1000, 0.001), 2),
    )


def generate(directory: Path, rows: int, seed: int = 7) -> int:
    """Write `rows` realistic rows over 90 days into FILES usage files; returns the requests
    they stand for."""
    rng = random.Random(seed)
    start = time.time() - 90 * 86400
    per_file = -(-rows // FILES)
    written = requests = 0
    for index in range(FILES):
        lines = [HEADER_LINE]
        for _ in range(min(per_file, rows - written)):
            at = start + rng.uniform(0, 90 * 86400)
            record = _record(rng, at)
            lines.append(format_usage_row(record))
            written += 1
            requests += record.count
        (directory / f"usage-bench{index}.csv").write_text("".join(lines), encoding="utf-8")
    return requests


def _median_seconds(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _baseline(directory: Path) -> int:
    count = 0
    for path in sorted(directory.glob("usage-*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            for _row in csv.reader(handle):
                count += 1
    return count


async def _append_times(directory: Path, appends: int) -> tuple[float, float]:
    usage_log = UsageLog(directory, process_id="append-bench")
    record = _record(random.Random(1), time.time())
    await usage_log.record(record)  # first row opens the file and writes the header
    async_times, sync_times = [], []
    for _ in range(appends):
        started = time.perf_counter()
        await usage_log.record(record)
        async_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        usage_log.record_sync(record)
        sync_times.append(time.perf_counter() - started)
    usage_log.close()
    return statistics.median(async_times), statistics.median(sync_times)


async def _median_async(action: Callable[[], Awaitable[object]], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _table_times(
    url: str, directory: Path, expected: UsageSummary, runs: int
) -> tuple[float, float, float]:
    """(SQL summary, CSV download, one SqlUsageLog.record) on `url`, seeded from the files."""
    engine = create_engine_for(url)
    try:
        await migrate(engine)
        await import_usage_csv(engine, directory)
        summary = await summarize_usage_sql(engine)
        assert summary == expected, "the table and the files disagree"
        summarize_s = await _median_async(lambda: summarize_usage_sql(engine), runs)
        download = directory / "download" / "usage-all.csv"
        csv_s = await _median_async(lambda: usage_csv_from_table(engine, download), runs)
        usage_log = SqlUsageLog(engine, UsageLog(directory / "sql", process_id="bench"))
        record = _record(random.Random(2), time.time())
        await usage_log.record(record)
        record_s = await _median_async(lambda: usage_log.record(record), 200)
        usage_log.close()
    finally:
        await engine.dispose()
    return summarize_s, csv_s, record_s


def _print_table(name: str, times: tuple[float, float, float], baseline: float, rows: int) -> None:
    summarize_s, csv_s, record_s = times
    print(
        f"{name} summarize_usage_sql:    {summarize_s * 1000:7.1f} ms  "
        f"({summarize_s / baseline:.2f}x baseline, {rows / summarize_s:,.0f} rows/s)"
    )
    print(
        f"{name} usage_csv_from_table:   {csv_s * 1000:7.1f} ms  "
        f"({csv_s / baseline:.2f}x baseline, {rows / csv_s:,.0f} rows/s)"
    )
    print(f"{name} SqlUsageLog.record():  {record_s * 1e6:7.1f} us (CSV row + insert)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", action="store_true", help="also time PostgreSQL")
    args = parser.parse_args()
    tables: dict[str, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        requests = generate(directory, args.rows)
        size_mb = sum(p.stat().st_size for p in directory.glob("*.csv")) / 1e6
        summary = summarize_directory(directory)
        assert summary.totals.requests == requests, (summary.totals.requests, requests)
        assert summary == summarize(read_usage(directory))
        baseline = _median_seconds(lambda: _baseline(directory), args.runs)
        fused = _median_seconds(lambda: summarize_directory(directory), args.runs)
        via_records = _median_seconds(lambda: summarize(read_usage(directory)), args.runs)
        append_async, append_sync = asyncio.run(_append_times(directory, 200))
        summary = summarize_directory(directory)  # now with the appended rows
        sqlite_url = database_url(directory / "db")
        tables["sqlite    "] = asyncio.run(_table_times(sqlite_url, directory, summary, args.runs))
        if args.postgres:
            from tests.pg_server import fresh_database, running_postgres

            with running_postgres() as server:
                url = fresh_database(server.url)
                tables["postgresql"] = asyncio.run(_table_times(url, directory, summary, args.runs))
    print(f"rows: {args.rows:,} in {FILES} files, {size_mb:.1f} MB; median of {args.runs} runs")
    print(f"baseline, csv.reader pass only:   {baseline * 1000:7.1f} ms")
    print(
        f"summarize_directory (read+summ.): {fused * 1000:7.1f} ms  "
        f"({fused / baseline:.2f}x baseline, {args.rows / fused:,.0f} rows/s)"
    )
    print(
        f"summarize(read_usage(...)):       {via_records * 1000:7.1f} ms  "
        f"({via_records / baseline:.2f}x baseline, {args.rows / via_records:,.0f} rows/s)"
    )
    print(f"one record() append:              {append_async * 1e6:7.1f} us (asyncio.to_thread)")
    print(f"one record_sync() append:         {append_sync * 1e6:7.1f} us")
    for name, times in tables.items():
        _print_table(name, times, baseline, args.rows)


if __name__ == "__main__":
    main()
