"""Usage analytics: one CSV row per turn that an operator can open safely, and its summaries."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import hmac
import io
import os
import threading
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from chatlib.chat import REFUSALS_RECORDED_EVERY_S, ChatService, TurnRequest
from chatlib.client import ClientPool
from chatlib.errors import RateLimited, UpstreamError
from chatlib.frames import FrameBudget
from chatlib.messages import AnswerMeta
from chatlib.ratelimit import RateLimiter
from chatlib.usage import (
    USAGE_COLUMNS,
    USAGE_STATUSES,
    UsageLog,
    UsageRecord,
    format_usage_row,
    read_usage,
    safe_cell,
    summarize,
    summarize_directory,
    summarize_usage,
    utc_timestamp,
)
from tests.conftest import TEST_API_KEY, settings_for
from tests.fakes.openrouter import FakeOpenRouter

SECRET_TEXT = "my-very-private-usage-text-7321"
VISITOR_IP = "198.51.100.23"
HEADER = ",".join(USAGE_COLUMNS)
AT = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _owner(visitor: str = "visitor-1") -> str:
    """Owner keys are HMACs of a visitor identity, as the app stores them."""
    return hmac.new(b"server-secret", visitor.encode(), hashlib.sha256).hexdigest()[:32]


def _record(**overrides: object) -> UsageRecord:
    base: dict[str, object] = {
        "timestamp": utc_timestamp(AT),
        "request_id": uuid.uuid4().hex[:16],
        "owner": _owner(),
        "conversation_id": "conv-1",
        "model": "openai/gpt-4o",
        "status": "complete",
        "error_code": "",
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "reasoning_tokens": 0,
        "cost_usd": 0.00042,
        "ttft_ms": 350.5,
        "latency_ms": 1200.0,
        "tokens_per_second": 35.29,
    }
    base.update(overrides)
    return UsageRecord(**base)  # type: ignore[arg-type]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --- the file format -------------------------------------------------------------------


def test_the_record_fields_are_the_csv_columns_in_order() -> None:
    assert [f.name for f in dataclasses.fields(UsageRecord)] == list(USAGE_COLUMNS)
    assert HEADER == (
        "timestamp,request_id,owner,conversation_id,model,status,error_code,prompt_tokens,"
        "completion_tokens,reasoning_tokens,cost_usd,ttft_ms,latency_ms,tokens_per_second,count"
    )
    assert USAGE_STATUSES == ("complete", "stopped", "interrupted", "failed", "rate_limited")
    assert utc_timestamp(AT) == "2026-01-01T00:00:00.000+00:00"


def test_each_status_gets_a_row_that_reads_back_unchanged(tmp_path: Path) -> None:
    usage_log = UsageLog(tmp_path, process_id="p1")
    written = [
        UsageRecord.from_answer(
            AnswerMeta(
                model="openai/gpt-4o",
                status="complete",
                prompt_tokens=10,
                completion_tokens=20,
                reasoning_tokens=5,
                cost_usd=0.0001,
                ttft_ms=100.0,
                latency_ms=1100.0,
            ),
            request_id="r-complete",
            owner=_owner(),
            conversation_id="c1",
            at=AT,
        ),
        UsageRecord.from_answer(
            AnswerMeta(model="m/x", status="stopped", ttft_ms=80.0, latency_ms=900.0),
            request_id="r-stopped",
            owner=_owner(),
            conversation_id="c1",
            at=AT + 1,
        ),
        UsageRecord.from_answer(
            AnswerMeta(model="m/x", status="interrupted", ttft_ms=90.0, latency_ms=5000.0),
            request_id="r-interrupted",
            owner=_owner(),
            conversation_id="c1",
            at=AT + 2,
            error_code="stream_interrupted",
        ),
        UsageRecord.from_answer(
            AnswerMeta(model="m/x", status="interrupted", latency_ms=300.0),
            request_id="r-failed",
            owner=_owner(),
            conversation_id=None,
            at=AT + 3,
            error_code="insufficient_credits",
        ),
        UsageRecord.rate_limited(
            request_id="r-limited",
            owner=_owner(),
            conversation_id="c2",
            model="openai/gpt-4o",
            at=AT + 4,
            count=3,
        ),
    ]
    for record in written:
        usage_log.record_sync(record)
    usage_log.close()

    assert [r.status for r in written] == list(USAGE_STATUSES)
    assert written[0].tokens_per_second == pytest.approx(20.0)
    lines = _lines(tmp_path / "usage-p1.csv")
    assert lines[0] == HEADER and len(lines) == 6
    assert lines[5] == (
        f"2026-01-01T00:00:04.000+00:00,r-limited,{_owner()},c2,openai/gpt-4o,rate_limited,"
        "rate_limited,,,,,,,,3"
    )
    assert list(read_usage(tmp_path)) == written


def test_the_header_is_written_once_and_a_restart_appends(tmp_path: Path) -> None:
    first = UsageLog(tmp_path, process_id="replica-a")
    first.record_sync(_record(request_id="one"))
    first.close()
    again = UsageLog(tmp_path, process_id="replica-a")
    again.record_sync(_record(request_id="two"))
    again.close()
    lines = _lines(tmp_path / "usage-replica-a.csv")
    assert lines.count(HEADER) == 1 and lines[0] == HEADER
    assert [r.request_id for r in read_usage(tmp_path)] == ["one", "two"]


def test_creating_a_log_touches_nothing_on_disk(tmp_path: Path) -> None:
    directory = tmp_path / "usage"
    usage_log = UsageLog(directory)
    assert not directory.exists()
    assert usage_log.path.parent == directory
    assert usage_log.path.name == f"usage-{usage_log.process_id}.csv"
    assert len(usage_log.process_id) == 32  # a fresh uuid4 per process
    with pytest.raises(ValueError, match="process_id"):
        UsageLog(directory, process_id="../escape")


# --- what must never be in the file ------------------------------------------------------


async def test_rows_hold_metadata_only_never_keys_text_or_ips(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    settings = settings_for(fake, tmp_path)
    pool = ClientPool(settings)
    service = ChatService(settings, pool, FrameBudget(updates_per_second=300, min_interval_s=0.01))
    usage_log = UsageLog(tmp_path / "usage")
    owner = _owner(VISITOR_IP)
    shown_messages: list[str] = []
    try:
        for text in (f"{SECRET_TEXT} [[tokens=8]]", f"{SECRET_TEXT} [[error=402]]"):
            request = TurnRequest(
                owner_key=owner,
                conversation_id="conv-9",
                user_text=text,
                model="openai/gpt-4o",
                system_prompt=f"system {SECRET_TEXT}",
                temperature=0.3,
                api_key=TEST_API_KEY,
            )
            frames = [frame async for frame in service.run_turn(request, ())]
            final = frames[-1]
            assert final.answer.meta is not None
            error = final.error
            if error is not None:
                shown_messages.append(error.user_message)
            await usage_log.record(
                UsageRecord.from_answer(
                    final.answer.meta,
                    request_id=uuid.uuid4().hex[:16],
                    owner=owner,
                    conversation_id=request.conversation_id,
                    at=AT,
                    error_code=error.code if isinstance(error, UpstreamError) else "",
                )
            )
    finally:
        await pool.aclose()
        usage_log.close()

    raw = usage_log.path.read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(raw)))
    assert [r["status"] for r in rows] == ["complete", "failed"]
    assert rows[0]["completion_tokens"] == "8" and float(rows[0]["cost_usd"]) > 0
    assert rows[1]["error_code"] == "insufficient_credits"
    assert len(shown_messages) == 1
    for secret in (SECRET_TEXT, TEST_API_KEY, "sk-or-", VISITOR_IP, "system", *shown_messages):
        assert secret not in raw


# --- concurrency and replicas ------------------------------------------------------------


async def test_fifty_concurrent_writers_leave_fifty_intact_rows(tmp_path: Path) -> None:
    usage_log = UsageLog(tmp_path, process_id="busy")
    records = [
        _record(request_id=f"req-{i:03d}", model=f"vendor/model-{i % 7}", completion_tokens=i)
        for i in range(50)
    ]
    await asyncio.gather(*(usage_log.record(r) for r in records))
    usage_log.close()
    with usage_log.path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 50
    assert sorted(rows, key=lambda r: r["request_id"]) == [
        dict(zip(USAGE_COLUMNS, next(csv.reader([format_usage_row(r)])), strict=True))
        for r in records
    ]


def test_many_threads_never_interleave_rows(tmp_path: Path) -> None:
    usage_log = UsageLog(tmp_path, process_id="threads")
    long_model = "vendor/" + "m" * 200

    def write(worker: int) -> None:
        for i in range(40):
            usage_log.record_sync(_record(request_id=f"w{worker}-{i}", model=long_model))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    usage_log.close()
    lines = _lines(usage_log.path)
    assert len(lines) == 1 + 8 * 40
    assert all(line.count(",") == len(USAGE_COLUMNS) - 1 for line in lines)
    assert len(list(read_usage(tmp_path))) == 8 * 40


async def test_two_processes_write_two_files_and_both_are_read(tmp_path: Path) -> None:
    replica_a, replica_b = UsageLog(tmp_path), UsageLog(tmp_path)
    await replica_a.record(_record(request_id="from-a", owner=_owner("alice")))
    await replica_b.record(_record(request_id="from-b", owner=_owner("bob")))
    replica_a.close()
    replica_b.close()
    assert replica_a.path != replica_b.path
    assert len(list(tmp_path.glob("usage-*.csv"))) == 2
    assert {r.request_id for r in read_usage(tmp_path)} == {"from-a", "from-b"}
    assert [r.request_id for r in read_usage(tmp_path, owner=_owner("bob"))] == ["from-b"]
    summary = await summarize_usage(tmp_path, owner=_owner("alice"))
    assert summary.totals.requests == 1


# --- tolerant reading ------------------------------------------------------------------


def test_malformed_rows_and_a_torn_last_line_are_skipped(tmp_path: Path) -> None:
    good = format_usage_row(_record(request_id="good-1"))
    quoted = format_usage_row(_record(request_id="good-2", model="vendor/a,b"))
    assert '"vendor/a,b"' in quoted
    bad_rows = [
        "not,enough,columns\n",
        good.replace("complete", "exploded"),  # unknown status
        good.replace(",120,", ",12x,"),  # not a number
        good.replace(",0.00042,", ",nan,"),
        good.replace(",1200.0,", ",inf,"),
        good.replace("2026-01-01T", "yesterday-T"),
        good.rstrip("\n") + ",extra\n",
        "\n",
    ]
    torn = format_usage_row(_record(request_id="torn"))[:-20]
    (tmp_path / "usage-old.csv").write_text(
        HEADER + "\n" + good + "".join(bad_rows) + quoted + torn, encoding="utf-8"
    )
    (tmp_path / "usage-foreign.csv").write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    (tmp_path / "notes.csv").write_text(HEADER + "\n" + good, encoding="utf-8")
    (tmp_path / "usage-empty.csv").write_text("", encoding="utf-8")
    records = list(read_usage(tmp_path))
    assert [r.request_id for r in records] == ["good-1", "good-2"]
    assert records[1].model == "vendor/a,b"
    assert list(read_usage(tmp_path / "missing")) == []


def test_columns_are_found_by_name(tmp_path: Path) -> None:
    columns = list(reversed(USAGE_COLUMNS))
    row = next(csv.reader([format_usage_row(_record(request_id="shuffled"))]))
    values = dict(zip(USAGE_COLUMNS, row, strict=True))
    (tmp_path / "usage-x.csv").write_text(
        ",".join(columns) + "\n" + ",".join(values[c] for c in columns) + "\n", encoding="utf-8"
    )
    assert [r.request_id for r in read_usage(tmp_path)] == ["shuffled"]


def test_appending_after_a_crash_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "usage-same.csv"
    path.write_text(
        HEADER + "\n" + format_usage_row(_record(request_id="before")) + "2026-01-01T00:0",
        encoding="utf-8",
    )
    usage_log = UsageLog(tmp_path, process_id="same")
    usage_log.record_sync(_record(request_id="after"))
    usage_log.close()
    assert [r.request_id for r in read_usage(tmp_path)] == ["before", "after"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_a_full_disk_is_logged_and_never_raised(tmp_path: Path) -> None:
    (tmp_path / "usage-full.csv").symlink_to("/dev/full")
    usage_log = UsageLog(tmp_path, process_id="full")
    with capture_logs() as logs:
        await usage_log.record(_record())
        usage_log.record_sync(_record())
    usage_log.close()
    failures = [e for e in logs if e["event"] == "usage.write_failed"]
    assert len(failures) == 2
    assert failures[0]["log_level"] == "warning" and failures[0]["error"] == "OSError"


async def test_an_unwritable_directory_is_logged_and_never_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    usage_log = UsageLog(blocker / "usage")
    with capture_logs() as logs:
        await usage_log.record(_record())
    assert [e["event"] for e in logs] == ["usage.write_failed"]


# --- spreadsheet safety ------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        '=HYPERLINK("http://evil.example","x")',
        "+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1:A2)",
        " =1+1",
        "\n=1+1",
        "\t=1+1",
        "\r\n@x",
    ],
)
def test_a_formula_in_a_model_id_is_neutralised(tmp_path: Path, model: str) -> None:
    usage_log = UsageLog(tmp_path, process_id="f")
    usage_log.record_sync(_record(model=model, error_code="=err"))
    usage_log.close()
    lines = _lines(usage_log.path)
    assert len(lines) == 2  # no line break got through
    row = next(csv.DictReader(io.StringIO("\n".join(lines))))
    assert row["model"].startswith("'") and row["error_code"] == "'=err"
    assert not any(ord(c) < 32 for c in row["model"])
    assert safe_cell("openai/gpt-4o") == "openai/gpt-4o"
    assert safe_cell("a\x00b\u2028c\x85d") == "abcd"


# --- summaries ---------------------------------------------------------------------------


def test_summaries_of_a_small_known_dataset() -> None:
    day1, day2 = utc_timestamp(AT), utc_timestamp(AT + 86400 + 5)
    records = [
        _record(
            timestamp=day1,
            model="a/x",
            prompt_tokens=100,
            completion_tokens=10,
            cost_usd=0.01,
            latency_ms=100.0,
            ttft_ms=50.0,
        ),
        _record(
            timestamp=day1,
            model="a/x",
            prompt_tokens=200,
            completion_tokens=20,
            cost_usd=0.02,
            latency_ms=200.0,
            ttft_ms=60.0,
        ),
        _record(
            timestamp=day1,
            model="b/y",
            prompt_tokens=300,
            completion_tokens=30,
            cost_usd=0.5,
            latency_ms=300.0,
            ttft_ms=None,
            status="stopped",
        ),
        _record(
            timestamp=day2,
            model="b/y",
            prompt_tokens=None,
            completion_tokens=None,
            reasoning_tokens=None,
            cost_usd=None,
            latency_ms=None,
            ttft_ms=None,
            status="rate_limited",
        ),
        _record(
            timestamp=day2,
            model="a/x",
            prompt_tokens=400,
            completion_tokens=40,
            cost_usd=0.03,
            latency_ms=61_000.0,
            ttft_ms=70.0,
            status="failed",
        ),
    ]
    summary = summarize(records)
    totals = summary.totals
    assert (totals.requests, totals.prompt_tokens, totals.completion_tokens) == (5, 1000, 100)
    assert totals.cost_usd == pytest.approx(0.56) and totals.tokens == 1100
    assert summary.as_rows_by_day() == [
        {
            "date": "2026-01-01",
            "requests": 3,
            "cost_usd": pytest.approx(0.53),
            "prompt_tokens": 600,
            "completion_tokens": 60,
            "reasoning_tokens": 0,
            "tokens": 660,
        },
        {
            "date": "2026-01-02",
            "requests": 2,
            "cost_usd": pytest.approx(0.03),
            "prompt_tokens": 400,
            "completion_tokens": 40,
            "reasoning_tokens": 0,
            "tokens": 440,
        },
    ]
    by_model = summary.as_rows_by_model()
    assert [row["model"] for row in by_model] == ["b/y", "a/x"]  # most expensive first
    assert by_model[1]["requests"] == 3 and by_model[1]["tokens"] == 770
    assert summary.status_counts == {
        "complete": 2,
        "stopped": 1,
        "rate_limited": 1,
        "failed": 1,
    }
    latency = summary.latency_ms
    assert latency.count == 4
    assert latency.p50 == pytest.approx(250.0)  # linear between 200 and 300
    assert latency.p90 == pytest.approx(300 + 0.7 * 60_700)
    assert summary.ttft_ms.count == 3 and summary.ttft_ms.p50 == pytest.approx(60.0)
    histogram = {(r["metric"], r["bucket"]): r["requests"] for r in summary.as_rows_histogram()}
    assert histogram[("latency_ms", "0-250 ms")] == 2
    assert histogram[("latency_ms", "250-500 ms")] == 1
    assert histogram[("latency_ms", "60 s+")] == 1
    assert histogram[("ttft_ms", "0-250 ms")] == 3
    assert histogram[("latency_ms", "500 ms-1 s")] == 0
    assert (
        sum(r["requests"] for r in summary.as_rows_histogram() if r["metric"] == "latency_ms") == 4
    )
    assert totals.as_row() == {
        "requests": 5,
        "cost_usd": pytest.approx(0.56),
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "reasoning_tokens": 0,
        "tokens": 1100,
    }


def test_an_empty_log_summarises_to_zeros() -> None:
    summary = summarize([])
    assert summary.totals.requests == 0 and summary.by_day == {}
    assert summary.latency_ms.p50 is None and summary.latency_ms.count == 0
    assert all(r["requests"] == 0 for r in summary.as_rows_histogram())
    assert summary.as_rows_by_model() == []


def test_reading_back_gives_the_same_summary_as_the_records(tmp_path: Path) -> None:
    records = [
        _record(
            timestamp=utc_timestamp(AT + i * 3600),
            model=f"m/{i % 3}",
            completion_tokens=i,
            latency_ms=float(100 * i),
            status=USAGE_STATUSES[i % 5],
        )
        for i in range(100)
    ]
    usage_log = UsageLog(tmp_path)
    for record in records:
        usage_log.record_sync(record)
    usage_log.close()
    expected = summarize(records)
    assert summarize(read_usage(tmp_path)) == expected
    assert summarize_directory(tmp_path) == expected
    assert summarize_directory(tmp_path, owner="someone else").totals.requests == 0


def test_a_refusal_row_counts_every_refusal_it_stands_for(tmp_path: Path) -> None:
    usage_log = UsageLog(tmp_path, process_id="p1")
    usage_log.record_sync(_record(request_id="answered"))
    usage_log.record_sync(
        UsageRecord.rate_limited(
            request_id="hammered",
            owner=_owner(),
            conversation_id=None,
            model="openai/gpt-4o",
            at=AT + 5,
            count=7,
        )
    )
    usage_log.close()
    summary = summarize_directory(tmp_path)
    assert summary.status_counts == {"complete": 1, "rate_limited": 7}
    assert summary.totals.requests == 8
    assert summary.as_rows_by_day()[0]["requests"] == 8
    assert summary.as_rows_by_model()[0]["requests"] == 8
    assert summary.latency_ms.count == 1  # refusals have no timings


def test_old_files_without_a_count_column_read_as_one_request_a_row(tmp_path: Path) -> None:
    old_columns = [c for c in USAGE_COLUMNS if c != "count"]
    rows = []
    for request_id in ("old-1", "old-2"):
        cells = next(csv.reader([format_usage_row(_record(request_id=request_id))]))
        rows.append(",".join(cells[: len(old_columns)]))
    (tmp_path / "usage-old.csv").write_text(
        ",".join(old_columns) + "\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )
    assert [(r.request_id, r.count) for r in read_usage(tmp_path)] == [("old-1", 1), ("old-2", 1)]
    assert summarize_directory(tmp_path).totals.requests == 2


@pytest.mark.parametrize("count", ["0", "-3", "many", "2.5"])
def test_a_row_with_an_impossible_count_is_skipped(tmp_path: Path, count: str) -> None:
    good = format_usage_row(_record(request_id="good"))
    bad = good.rstrip("\n").removesuffix(",1") + f",{count}\n"
    (tmp_path / "usage-x.csv").write_text(HEADER + "\n" + good + bad, encoding="utf-8")
    assert [r.request_id for r in read_usage(tmp_path)] == ["good"]


def test_a_row_counts_in_timings_as_if_it_were_repeated() -> None:
    others = [_record(latency_ms=float(ms), ttft_ms=ms / 10) for ms in (100, 700, 3000, 65_000)]
    heavy = {"latency_ms": 1500.0, "ttft_ms": 150.0}
    weighted = summarize([*others, _record(**heavy, count=3)])
    repeated = summarize([*others, *(_record(**heavy) for _ in range(3))])
    assert (weighted.latency_ms, weighted.ttft_ms) == (repeated.latency_ms, repeated.ttft_ms)
    assert weighted.latency_ms.count == weighted.totals.requests == 7
    histogram = {(r["metric"], r["bucket"]): r["requests"] for r in weighted.as_rows_histogram()}
    assert histogram[("latency_ms", "1-2 s")] == 3


async def test_a_client_hammering_past_its_limit_does_not_fill_the_disk(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    settings = settings_for(fake, tmp_path)
    pool = ClientPool(settings)
    usage_log = UsageLog(tmp_path / "usage")
    limiter = RateLimiter("memory://", 1, 0)
    now = [1_000.0]
    service = ChatService(
        settings,
        pool,
        FrameBudget(updates_per_second=300, min_interval_s=0.01),
        limiter=limiter,
        usage=usage_log,
        clock=lambda: now[0],
        wall_clock=lambda: now[0],
    )

    async def ask() -> bool:
        request = TurnRequest(
            owner_key=_owner(VISITOR_IP),
            conversation_id=None,
            user_text="hi [[tokens=2]]",
            model="openai/gpt-4o",
            system_prompt="",
            temperature=0.3,
            rate_key=VISITOR_IP,
        )
        try:
            [frame async for frame in service.run_turn(request, ())]
        except RateLimited:
            return False
        return True

    try:
        assert await ask()
        with capture_logs() as logs:
            refused = [await ask() for _ in range(200)]
            now[0] += REFUSALS_RECORDED_EVERY_S  # a while later: recorded again
            refused.append(await ask())
    finally:
        await pool.aclose()
        await limiter.aclose()
        usage_log.close()
    assert not any(refused)  # every one of them was refused
    statuses = [row.status for row in read_usage(usage_log.path.parent)]
    assert statuses == ["complete", "rate_limited", "rate_limited"]
    events = [e for e in logs if e["event"] == "chat.rate_limited"]
    assert [e["unrecorded_since_last"] for e in events] == [0, 199]
    # ...and the operator's dashboard still counts every one of the 201 refusals.
    assert summarize_directory(usage_log.path.parent).status_counts["rate_limited"] == 201


# -- the Usage tab's charts ------------------------------------------------------------------


async def test_the_charts_speak_in_words_and_units_not_column_names() -> None:
    # Async: Gradio builds its Blocks inside the test's event loop, not loops of its own.
    import gradio as gr

    from ui.usage import CHARTS, NO_USAGE_YET, UsagePlots, chart_frames

    summary = summarize([_record(model="a/x", cost_usd=0.25, latency_ms=700.0, ttft_ms=90.0)])
    frames = chart_frames(summary)
    for name, chart in CHARTS.items():
        assert {chart.x, chart.y} <= set(frames[name].columns)
        assert "_" not in chart.x_title + chart.y_title  # no raw column names
    assert CHARTS["cost_by_day"].y_title == "Cost (USD)"
    assert CHARTS["tokens_by_day"].y_title == "Tokens"
    assert "(ms / s)" in CHARTS["ttft"].x_title
    assert frames["cost_by_model"].iloc[0].to_dict() == {
        "Model": "a/x",
        "Cost (USD)": 0.25,
        "Requests": 1,
    }

    with gr.Blocks():
        plots = UsagePlots("test")
    assert plots.cost_by_day.x_title == "Day (UTC)" and plots.cost_by_day.y_title == "Cost (USD)"
    shown = plots.show(summary, "Your usage")
    assert shown[plots.empty]["visible"] is False and shown[plots.charts]["visible"] is True
    assert "1 request" in shown[plots.totals]["value"]
    nothing = plots.show(summarize([]), "Your usage")
    assert nothing[plots.empty]["visible"] is True and nothing[plots.charts]["visible"] is False
    assert plots.empty.value == NO_USAGE_YET
    assert plots.cost_by_day not in nothing  # no empty axes drawn
