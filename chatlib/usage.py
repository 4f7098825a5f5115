"""Usage analytics: one CSV row per chat turn (tokens, cost, latency), never message text.

Each process appends to its own `usage-<process_id>.csv`, so replicas and restarts never
write to the same file and the files can be synced to a dataset repo as they are.
Reading is tolerant: rows that do not parse (a torn last line after a crash, a hand edit)
are skipped, so one bad row never hides the rest.

With a database (`SqlUsageLog`), each row also goes to its `usage` table, so every replica's
turns add up on the dashboard (`summarize_usage_sql`); the CSV file is still written, is the
durable copy a dataset repo keeps, and seeds an empty table (`import_usage_csv`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import math
import operator
import os
import re
import tempfile
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate, islice
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol, cast, get_args

import orjson
import structlog
from sqlalchemy import Row as SqlRow
from sqlalchemy import insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from chatlib.messages import AnswerMeta
from chatlib.store.engine import startup_lock, write_transaction
from chatlib.store.schema import store_meta
from chatlib.store.schema import usage as usage_table

log = structlog.get_logger(__name__)

UsageStatus = Literal["complete", "stopped", "interrupted", "failed", "rate_limited"]
USAGE_STATUSES: Final[tuple[UsageStatus, ...]] = get_args(UsageStatus)
USAGE_COLUMNS: Final[tuple[str, ...]] = (
    "timestamp",
    "request_id",
    "owner",
    "conversation_id",
    "model",
    "status",
    "error_code",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cost_usd",
    "ttft_ms",
    "latency_ms",
    "tokens_per_second",
    "count",
)
# "count" came later: a file without that column reads as one request per row.
_REQUIRED_COLUMNS: Final = USAGE_COLUMNS[:-1]
USAGE_FILE_GLOB: Final = "usage-*.csv"
# Lower edges (ms) of the timing histogram's buckets; each ends at the next edge and the
# last is open-ended.
LATENCY_BUCKET_EDGES_MS: Final[tuple[float, ...]] = (
    0.0,
    250.0,
    500.0,
    1000.0,
    2000.0,
    5000.0,
    10_000.0,
    20_000.0,
    30_000.0,
    60_000.0,
)

Row = dict[str, str | int | float | None]

_PROCESS_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# C0 and C1 controls, DEL, and Unicode line/paragraph separators: none belongs in a cell.
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FORMULA_STARTS = ("=", "+", "-", "@")
_MAX_TEXT_CELL = 256
_STATUS_SET = frozenset(USAGE_STATUSES)


@dataclass(frozen=True)
class UsageRecord:
    """One chat turn's metadata; the fields are the CSV columns, in order.

    None (or "") means unknown and is written as an empty cell. There is deliberately no
    field for message text, API keys or IP addresses. `count` is how many requests the row
    stands for: 1, except for a throttled refusal row, which also stands for the refusals
    that were not written (every summary counts requests by it).
    """

    timestamp: str
    request_id: str
    owner: str
    conversation_id: str
    model: str
    status: UsageStatus
    error_code: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    tokens_per_second: float | None = None
    count: int = 1

    @property
    def date(self) -> str:
        """The UTC day, YYYY-MM-DD."""
        return self.timestamp[:10]

    @classmethod
    def from_answer(
        cls,
        meta: AnswerMeta,
        *,
        request_id: str,
        owner: str,
        conversation_id: str | None,
        at: float,
        status: UsageStatus | None = None,
        error_code: str = "",
    ) -> UsageRecord:
        """Build a record from an answer's metadata (never its text).

        `owner` is the owner's HMAC key. Without an explicit `status`, an interrupted answer
        that produced no token counts as "failed" and a still-streaming one as
        "interrupted". `error_code` is a code such as "insufficient_credits", not a message.
        """
        if status is None:
            if meta.status == "interrupted" and meta.ttft_ms is None:
                status = "failed"
            elif meta.status == "streaming":
                status = "interrupted"
            else:
                status = meta.status
        return cls(
            timestamp=utc_timestamp(at),
            request_id=request_id,
            owner=owner,
            conversation_id=conversation_id or "",
            model=meta.model,
            status=status,
            error_code=error_code,
            tokens_per_second=meta.tokens_per_second,
            **meta.measures(),
        )

    @classmethod
    def rate_limited(
        cls,
        *,
        request_id: str,
        owner: str,
        conversation_id: str | None,
        model: str,
        at: float,
        count: int = 1,
    ) -> UsageRecord:
        """Turns this app's rate limit refused before anything was sent upstream.

        `count` is how many refusals the row stands for (the ones not written since the
        last row, plus this one).
        """
        return cls(
            timestamp=utc_timestamp(at),
            request_id=request_id,
            owner=owner,
            conversation_id=conversation_id or "",
            model=model,
            status="rate_limited",
            error_code="rate_limited",
            count=count,
        )


def utc_timestamp(at: float) -> str:
    """Epoch seconds as UTC ISO 8601 with milliseconds: 2026-01-31T12:00:00.123+00:00."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def safe_cell(value: str) -> str:
    """A text value made safe for a CSV cell: no control characters, no formula.

    Spreadsheets run a cell that starts with = + - or @ as a formula; a leading
    apostrophe makes it plain text.
    """
    cleaned = _CONTROL_CHARS.sub("", value)[:_MAX_TEXT_CELL]
    if cleaned.lstrip().startswith(_FORMULA_STARTS):
        return "'" + cleaned
    return cleaned


def _int_cell(value: int | None) -> str:
    return "" if value is None else str(int(value))


def _float_cell(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return repr(round(float(value), digits))


def format_usage_row(record: UsageRecord) -> str:
    """The record as one CSV line, newline included, every cell sanitised."""
    cells = (
        safe_cell(record.timestamp),
        safe_cell(record.request_id),
        safe_cell(record.owner),
        safe_cell(record.conversation_id),
        safe_cell(record.model),
        safe_cell(record.status),
        safe_cell(record.error_code),
        _int_cell(record.prompt_tokens),
        _int_cell(record.completion_tokens),
        _int_cell(record.reasoning_tokens),
        _float_cell(record.cost_usd, 10),
        _float_cell(record.ttft_ms, 1),
        _float_cell(record.latency_ms, 1),
        _float_cell(record.tokens_per_second, 2),
        _int_cell(record.count),
    )
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


HEADER_LINE: Final = ",".join(USAGE_COLUMNS) + "\n"


class UsageLog:
    """Appends usage rows to this process's own CSV file, safely from any thread.

    Each row is formatted completely and written with one `write()` on an O_APPEND file
    under a lock, so concurrent writers never interleave or tear rows. Nothing is read or
    created until the first row; write failures (disk full) are logged as
    `usage.write_failed` and never raised.
    """

    def __init__(self, directory: Path, *, process_id: str | None = None) -> None:
        process_id = uuid.uuid4().hex if process_id is None else process_id
        if not _PROCESS_ID.fullmatch(process_id):
            raise ValueError("process_id must be 1-64 letters, digits, '-' or '_'")
        self.directory = directory
        self.process_id = process_id
        self.path = directory / f"usage-{process_id}.csv"
        self._lock = threading.Lock()
        self._fd: int | None = None
        # True when the file may end in a partial line (a failed write, a crash before a
        # restart with the same process id): the next row then starts on a new line.
        self._needs_newline = False

    def _open(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                self._write(fd, HEADER_LINE.encode())
            self._needs_newline = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        except OSError:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write: {written} of {len(data)} bytes")

    def record_sync(self, record: UsageRecord) -> None:
        """Append one row (blocking; use `record` from async code)."""
        data = format_usage_row(record).encode()
        with self._lock:
            size: int | None = None
            try:
                if self._fd is None:
                    self._fd = self._open()
                if self._needs_newline:
                    data = b"\n" + data
                size = os.fstat(self._fd).st_size
                self._write(self._fd, data)
                self._needs_newline = False
            except OSError as exc:
                # A full disk can take part of a row: cut it off again, so the file never
                # holds a fragment that reads as a row with a truncated number.
                self._needs_newline = not self._truncate(size)
                log.warning(
                    "usage.write_failed",
                    error=type(exc).__name__,
                    errno=exc.errno,
                    path=str(self.path),
                )

    def _truncate(self, size: int | None) -> bool:
        """Shrink the file back to `size`; True when it is known to end on a whole row."""
        if self._fd is None or size is None:
            return False
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            return False
        return True

    async def record(self, record: UsageRecord) -> None:
        """Append one row from a worker thread, leaving the event loop free."""
        await asyncio.to_thread(self.record_sync, record)

    def close(self) -> None:
        """Close the file; a later row opens it again."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)


# A validated row: the record's values in column order (what read_usage wraps in a record).
_Values = tuple[
    str,
    str,
    str,
    str,
    str,
    str,
    str,
    int | None,
    int | None,
    int | None,
    float | None,
    float | None,
    float | None,
    float | None,
    int,
]


def _column_order(header: list[str]) -> list[int] | None:
    """Where each column sits in a file with this header (-1: no count column), or None
    when a required column is missing."""
    try:
        order = [header.index(column) for column in _REQUIRED_COLUMNS]
    except ValueError:
        return None
    order.append(header.index("count") if "count" in header else -1)
    return order


def _rows_in(text: str, owner: str | None) -> Iterator[_Values]:
    """The valid rows of one file's text; anything that does not parse is skipped."""
    lines = text.removeprefix("\ufeff").splitlines()  # a spreadsheet may add a BOM
    if lines and not text.endswith("\n"):  # a torn last line: the writer died mid-row
        lines.pop()
    if not lines:
        return
    header = next(csv.reader(lines[:1]))
    order = _column_order(header)
    if order is None:
        log.warning("usage.unreadable_file", reason="header")
        return
    rows = islice(lines, 1, None)
    if order == list(range(len(header))):
        yield from _parse_rows(rows, len(header), None, owner)
    elif header == list(_REQUIRED_COLUMNS):  # written before the count column: add it
        yield from _parse_rows(rows, len(header), None, owner, pad=True)
    else:
        yield from _parse_rows(rows, len(header), order, owner)


def _parse_rows(
    lines: Iterable[str],
    width: int,
    order: list[int] | None,
    owner: str | None,
    *,
    pad: bool = False,
) -> Iterator[_Values]:
    """Rows of `width` cells that are valid records.

    Cells are taken in `order` (-1: an empty cell) if given; `pad` adds an empty last cell.

    One loop without calls per row: this is most of the usage tab's time at 100 000 rows.
    """
    statuses, isfinite = _STATUS_SET, math.isfinite
    for line in lines:
        # Our rows are one line each (cells hold no line breaks) and only a cell with a
        # comma or quote is quoted, so a plain split is exact for every unquoted line and
        # three times faster than the csv module.
        row = line.split(",") if '"' not in line else next(csv.reader((line,)), [])
        if len(row) != width:
            continue
        if order is not None:
            row = [row[i] if i >= 0 else "" for i in order]
        elif pad:
            row.append("")
        # fmt: off
        (ts, request_id, row_owner, conversation_id, model, status, error_code,
         prompt, completion, reasoning, cost, ttft, latency, speed, count) = row
        # fmt: on
        if owner is not None and row_owner != owner:
            continue
        if status not in statuses or len(ts) < 10 or ts[4] != "-" or ts[7] != "-":
            continue
        try:
            prompt_tokens = int(prompt) if prompt else None
            completion_tokens = int(completion) if completion else None
            reasoning_tokens = int(reasoning) if reasoning else None
            cost_usd = float(cost) if cost else None
            ttft_ms = float(ttft) if ttft else None
            latency_ms = float(latency) if latency else None
            tokens_per_second = float(speed) if speed else None
            requests = int(count) if count else 1
        except ValueError:
            continue
        # NaN or infinity would poison every sum; one check covers all four (inf - inf is NaN).
        if requests < 1 or not isfinite(
            (cost_usd or 0.0) + (ttft_ms or 0.0) + (latency_ms or 0.0) + (tokens_per_second or 0.0)
        ):
            continue
        # fmt: off
        yield (ts, request_id, row_owner, conversation_id, model, status, error_code,
               prompt_tokens, completion_tokens, reasoning_tokens, cost_usd, ttft_ms, latency_ms,
               tokens_per_second, requests)
        # fmt: on


def _rows_of_directory(directory: Path, owner: str | None) -> Iterator[_Values]:
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(USAGE_FILE_GLOB)):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.warning("usage.read_failed", error=type(exc).__name__, path=str(path))
            continue
        yield from _rows_in(text, owner)


def read_usage(directory: Path, *, owner: str | None = None) -> Iterator[UsageRecord]:
    """Every readable row of every `usage-*.csv` in `directory` (blocking I/O).

    With `owner`, only that owner's rows. Malformed rows, a torn last line and files
    without the expected header are skipped.
    """
    new, fields = object.__new__, USAGE_COLUMNS
    for values in _rows_of_directory(directory, owner):
        # Filling the instance dict directly costs half of the frozen dataclass __init__,
        # which matters at 100 000 rows; every value was validated by _rows_in.
        record = new(UsageRecord)
        record.__dict__.update(zip(fields, values, strict=True))
        yield record


@dataclass(frozen=True)
class UsageTotals:
    """Requests, cost and tokens of a group of turns."""

    requests: int = 0
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def as_row(self) -> Row:
        """The totals as a flat dict."""
        return {
            "requests": self.requests,
            "cost_usd": self.cost_usd,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "tokens": self.tokens,
        }


@dataclass(frozen=True)
class HistogramBucket:
    """Turns whose value fell in [lower_ms, upper_ms); upper None means no upper bound."""

    lower_ms: float
    upper_ms: float | None
    count: int

    @property
    def label(self) -> str:
        """A short label such as "250-500 ms", "500 ms-1 s" or "60 s+"."""
        lower, upper = self.lower_ms, self.upper_ms
        if upper is None:
            return f"{lower / 1000:g} s+" if lower >= 1000 else f"{lower:g} ms+"
        if upper < 1000:
            return f"{lower:g}-{upper:g} ms"
        if lower >= 1000:
            return f"{lower / 1000:g}-{upper / 1000:g} s"
        return f"{lower:g} ms-{upper / 1000:g} s"


@dataclass(frozen=True)
class Distribution:
    """Percentiles and a histogram of one timing, over the turns that have it."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    histogram: tuple[HistogramBucket, ...]


def _percentile(ordered: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _distribution(
    values: list[float],
    edges: tuple[float, ...],
    weighted: list[tuple[float, int]] | None = None,
) -> Distribution:
    """Percentiles and histogram of `values`, plus `weighted` (value, how many requests)."""
    if weighted:
        return _weighted_distribution([(v, 1) for v in values] + weighted, edges)
    values.sort()
    # Values below the first edge count in the first bucket, like values on it.
    starts = [0, *(bisect_left(values, edge) for edge in edges[1:]), len(values)]
    buckets = tuple(
        HistogramBucket(
            edges[i], edges[i + 1] if i + 1 < len(edges) else None, starts[i + 1] - starts[i]
        )
        for i in range(len(edges))
    )
    return Distribution(
        count=len(values),
        p50=_percentile(values, 0.50),
        p90=_percentile(values, 0.90),
        p99=_percentile(values, 0.99),
        histogram=buckets,
    )


def _weighted_distribution(
    pairs: list[tuple[float, int]], edges: tuple[float, ...]
) -> Distribution:
    """`_distribution` where each value counts as that many requests (as if repeated)."""
    pairs.sort()
    counts = [0] * len(edges)
    for value, weight in pairs:
        counts[max(0, bisect_right(edges, value) - 1)] += weight
    ends = list(accumulate(weight for _, weight in pairs))  # rank after each pair
    total = ends[-1] if ends else 0

    def at_rank(rank: int) -> float:
        return pairs[bisect_right(ends, rank)][0]

    def percentile(fraction: float) -> float | None:
        if not total:
            return None
        position = (total - 1) * fraction
        low = int(position)
        high = min(low + 1, total - 1)
        return at_rank(low) + (at_rank(high) - at_rank(low)) * (position - low)

    buckets = tuple(
        HistogramBucket(edges[i], edges[i + 1] if i + 1 < len(edges) else None, counts[i])
        for i in range(len(edges))
    )
    return Distribution(
        count=total,
        p50=percentile(0.50),
        p90=percentile(0.90),
        p99=percentile(0.99),
        histogram=buckets,
    )


@dataclass(frozen=True)
class UsageSummary:
    """Totals, per-day and per-model breakdowns, timing distributions, status counts."""

    totals: UsageTotals
    by_day: Mapping[str, UsageTotals]
    by_model: Mapping[str, UsageTotals]
    latency_ms: Distribution
    ttft_ms: Distribution
    status_counts: Mapping[str, int] = field(default_factory=dict)

    def as_rows_by_day(self) -> list[Row]:
        """One row per UTC day, oldest first: date plus the totals columns."""
        return [{"date": day, **self.by_day[day].as_row()} for day in sorted(self.by_day)]

    def as_rows_by_model(self) -> list[Row]:
        """One row per model, most expensive first: model plus the totals columns."""
        order = sorted(self.by_model.items(), key=lambda kv: (-kv[1].cost_usd, -kv[1].requests))
        return [{"model": model, **totals.as_row()} for model, totals in order]

    def as_rows_histogram(self) -> list[Row]:
        """Histogram rows for both timings: metric, bucket label, lower_ms, upper_ms, requests."""
        return [
            {
                "metric": name,
                "bucket": bucket.label,
                "lower_ms": bucket.lower_ms,
                "upper_ms": bucket.upper_ms,
                "requests": bucket.count,
            }
            for name, d in (("latency_ms", self.latency_ms), ("ttft_ms", self.ttft_ms))
            for bucket in d.histogram
        ]


class _Accumulator:
    __slots__ = ("requests", "cost", "prompt", "completion", "reasoning")

    def __init__(self) -> None:
        self.requests = 0
        self.cost = 0.0
        self.prompt = 0
        self.completion = 0
        self.reasoning = 0

    def merge(self, other: _Accumulator) -> None:
        self.requests += other.requests
        self.cost += other.cost
        self.prompt += other.prompt
        self.completion += other.completion
        self.reasoning += other.reasoning

    def freeze(self) -> UsageTotals:
        return UsageTotals(
            self.requests, round(self.cost, 10), self.prompt, self.completion, self.reasoning
        )


_record_values = operator.attrgetter(*USAGE_COLUMNS)


def summarize(
    records: Iterable[UsageRecord],
    *,
    bucket_edges_ms: tuple[float, ...] = LATENCY_BUCKET_EDGES_MS,
) -> UsageSummary:
    """Aggregate records in one pass: totals, per day, per model, timings, statuses."""
    return _summarize_rows(map(_record_values, records), bucket_edges_ms)


def summarize_directory(
    directory: Path,
    *,
    owner: str | None = None,
    bucket_edges_ms: tuple[float, ...] = LATENCY_BUCKET_EDGES_MS,
) -> UsageSummary:
    """`summarize(read_usage(directory, owner=owner))` without building the records.

    Blocking I/O; from async code use `summarize_usage`.
    """
    return _summarize_rows(_rows_of_directory(directory, owner), bucket_edges_ms)


async def summarize_usage(directory: Path, *, owner: str | None = None) -> UsageSummary:
    """Read and summarise `directory` in a worker thread (for UI handlers)."""
    return await asyncio.to_thread(summarize_directory, directory, owner=owner)


def _summarize_rows(rows: Iterable[_Values], bucket_edges_ms: tuple[float, ...]) -> UsageSummary:
    summarizer = _Summarizer()
    summarizer.add(rows)
    return summarizer.result(bucket_edges_ms)


class _Summarizer:
    """The one-pass summary, fed all at once (files) or in chunks (pages of the table)."""

    def __init__(self) -> None:
        # One accumulator per (day, model, status) keeps the per-row work to a single update;
        # days, models, statuses and totals are rolled up from the few hundred groups after.
        self.groups: dict[tuple[str, str, str], _Accumulator] = {}
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.weighted_latencies: list[tuple[float, int]] = []
        self.weighted_ttfts: list[tuple[float, int]] = []

    def add(self, rows: Iterable[_Values]) -> None:
        """Count these rows; requests by each row's `count` (a refusal row stands for several)."""
        groups = self.groups
        add_latency, add_ttft = self.latencies.append, self.ttfts.append
        add_weighted_latency = self.weighted_latencies.append
        add_weighted_ttft = self.weighted_ttfts.append
        for (
            ts,
            _,
            _,
            _,
            model,
            status,
            _,
            prompt,
            completion,
            reasoning,
            cost,
            ttft,
            latency,
            _,
            n,
        ) in rows:
            key = (ts[:10], model, status)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Accumulator()
            group.requests += n
            if cost is not None:
                group.cost += cost
            if prompt is not None:
                group.prompt += prompt
            if completion is not None:
                group.completion += completion
            if reasoning is not None:
                group.reasoning += reasoning
            if n == 1:
                if latency is not None:
                    add_latency(latency)
                if ttft is not None:
                    add_ttft(ttft)
            else:
                if latency is not None:
                    add_weighted_latency((latency, n))
                if ttft is not None:
                    add_weighted_ttft((ttft, n))

    def result(self, bucket_edges_ms: tuple[float, ...]) -> UsageSummary:
        """The summary of every row added (sorts the timings: run it off the event loop)."""
        return _roll_up(
            self.groups,
            latency_ms=_distribution(self.latencies, bucket_edges_ms, self.weighted_latencies),
            ttft_ms=_distribution(self.ttfts, bucket_edges_ms, self.weighted_ttfts),
        )


def _roll_up(
    groups: Mapping[tuple[str, str, str], _Accumulator],
    *,
    latency_ms: Distribution,
    ttft_ms: Distribution,
) -> UsageSummary:
    """Totals, days, models and statuses from the (day, model, status) groups."""
    totals = _Accumulator()
    by_day: dict[str, _Accumulator] = {}
    by_model: dict[str, _Accumulator] = {}
    statuses: dict[str, int] = {}
    for (day, model, status), group in groups.items():
        totals.merge(group)
        by_day.setdefault(day, _Accumulator()).merge(group)
        by_model.setdefault(model, _Accumulator()).merge(group)
        statuses[status] = statuses.get(status, 0) + group.requests
    return UsageSummary(
        totals=totals.freeze(),
        by_day={day: acc.freeze() for day, acc in sorted(by_day.items())},
        by_model={model: acc.freeze() for model, acc in by_model.items()},
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        status_counts=statuses,
    )


# -- the usage table ---------------------------------------------------------------------------

# What a database call can raise: SQLAlchemy's errors, and OSError from a driver's connect.
_DATABASE_ERRORS = (SQLAlchemyError, OSError)
# store_meta key remembering that the CSV files seeded the table.
USAGE_IMPORT_MARKER: Final = "usage_csv_import"
_TABLE_COLUMNS = tuple(usage_table.c[name] for name in USAGE_COLUMNS)
# Text columns with a length limit (PostgreSQL refuses longer values): name -> limit.
_COLUMN_LIMITS: Final = {
    column.name: int(length)
    for column in _TABLE_COLUMNS
    if (length := getattr(column.type, "length", None)) is not None
}
_INSERT_BATCH = 1000  # rows per executemany when the CSV files seed the table
_READ_CHUNK_ROWS = 250  # rows per turn of the event loop when the table is read


class UsageSink(Protocol):
    """Where the chat service records turns: `UsageLog` (CSV) or `SqlUsageLog` (CSV + table)."""

    async def record(self, record: UsageRecord) -> None: ...

    def close(self) -> None: ...


def _table_row(values: _Values) -> dict[str, Any]:
    row = dict(zip(USAGE_COLUMNS, values, strict=True))
    for name, limit in _COLUMN_LIMITS.items():
        text = row[name]
        if isinstance(text, str) and len(text) > limit:
            row[name] = text[:limit]
    return row


def table_row(record: UsageRecord) -> dict[str, Any] | None:
    """The record as a `usage` table row, exactly as its CSV row reads back; None if unreadable.

    Going through the CSV line (sanitised cells, rounded numbers) makes the table hold what
    the file holds, so a summary from either is the same, and a record the CSV reader would
    skip is not inserted either.
    """
    line = format_usage_row(record).removesuffix("\n")
    values = next(_parse_rows((line,), len(USAGE_COLUMNS), None, None), None)
    return None if values is None else _table_row(values)


class SqlUsageLog:
    """One row per turn in the database's `usage` table, and the same row in this process's CSV.

    The CSV row is written first and always (see `UsageLog`); a database that refuses the
    insert is logged as `usage.db_write_failed` and never raised, so a turn never fails for
    its usage row. The engine is shared (the conversation store's) and not closed here.
    """

    def __init__(self, engine: AsyncEngine, csv_log: UsageLog) -> None:
        self.engine = engine
        self.csv_log = csv_log

    async def record(self, record: UsageRecord) -> None:
        """Append the row to the CSV file, then insert it into the table."""
        await self.csv_log.record(record)
        row = table_row(record)
        if row is None:
            log.warning("usage.row_skipped", request_id=safe_cell(record.request_id))
            return
        try:
            async with write_transaction(self.engine) as connection:
                await connection.execute(insert(usage_table).values(**row))
        except _DATABASE_ERRORS as exc:
            # The driver's message may quote parameters: the exception's type is enough.
            log.warning(
                "usage.db_write_failed",
                error=type(getattr(exc, "orig", None) or exc).__name__,
                request_id=row["request_id"],
            )

    def close(self) -> None:
        """Close the CSV file (the engine belongs to whoever created it)."""
        self.csv_log.close()


def _usage_select(owner: str | None) -> Any:
    statement = select(*_TABLE_COLUMNS).order_by(usage_table.c.id)
    if owner is not None:
        statement = statement.where(usage_table.c.owner == owner)
    return statement


async def summarize_usage_sql(
    engine: AsyncEngine,
    *,
    owner: str | None = None,
    bucket_edges_ms: tuple[float, ...] = LATENCY_BUCKET_EDGES_MS,
) -> UsageSummary:
    """Summarise the `usage` table (every replica's turns), or one owner's rows of it.

    The same one-pass summariser as the CSV path, so the same rows give the same numbers
    (requests counted by `count`). The owner is in the WHERE clause; the summing runs in a
    worker thread, leaving the event loop free.
    """
    summarizer = _Summarizer()
    async with engine.connect() as connection:
        # Page by page, each counted and dropped: the event loop turns between pages, and
        # no list of 100 000 rows grows for the garbage collector to walk (which stalled
        # the loop for a quarter of a second).
        result = await connection.stream(_usage_select(owner))
        async for partition in result.partitions(_READ_CHUNK_ROWS):
            summarizer.add(cast("list[_Values]", partition))
    return await asyncio.to_thread(summarizer.result, bucket_edges_ms)


def _write_rows(handle: IO[bytes], rows: Iterable[SqlRow[Any]]) -> None:
    handle.write("".join(format_usage_row(UsageRecord(**row._mapping)) for row in rows).encode())


async def usage_csv_from_table(engine: AsyncEngine, path: Path) -> Path:
    """Write the whole `usage` table to `path` as one CSV file (the operator's download).

    Same header, columns and cell format as the per-process files (formulas neutralised),
    rows in insertion order. The table is streamed, never held whole in memory; `path` is
    replaced atomically, so a failed export leaves no half file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            await asyncio.to_thread(handle.write, HEADER_LINE.encode())
            async with engine.connect() as connection:
                result = await connection.stream(_usage_select(None))
                async for partition in result.partitions(_READ_CHUNK_ROWS):
                    await asyncio.to_thread(_write_rows, handle, partition)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


async def import_usage_csv(engine: AsyncEngine, directory: Path) -> int | None:
    """Seed the `usage` table from the CSV files in `directory`, once per database.

    Returns how many rows went in, or None when an earlier start did it (a row in
    `store_meta` remembers). Run it at startup after the store is migrated and before any
    `SqlUsageLog` records: on a Space whose disk was wiped, the CSV files restored from the
    dataset repo hold every turn, and a new SQLite database gets them back. Holds the
    startup lock, so of several processes one imports and the others find the marker.
    """
    async with startup_lock(engine) as connection:
        done = await connection.execute(
            select(store_meta.c.value).where(store_meta.c.key == USAGE_IMPORT_MARKER)
        )
        if done.first() is not None:
            return None
        rows = await asyncio.to_thread(
            lambda: [_table_row(values) for values in _rows_of_directory(directory, None)]
        )
        for start in range(0, len(rows), _INSERT_BATCH):
            await connection.execute(insert(usage_table), rows[start : start + _INSERT_BATCH])
        marker = {"rows": len(rows), "finished_at": time.time()}
        await connection.execute(
            insert(store_meta).values(key=USAGE_IMPORT_MARKER, value=orjson.dumps(marker).decode())
        )
    log.info("usage.csv_imported", rows=len(rows))
    return len(rows)
