"""A whole turn through ChatService: frames, metadata, stop, and what the logs contain."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from chatlib.catalog import ModelCatalog, http_catalog_fetcher
from chatlib.chat import ChatService, TurnFrame, TurnRequest
from chatlib.client import ClientPool
from chatlib.errors import InputError, MissingApiKey, RateLimited
from chatlib.frames import FrameBudget
from chatlib.logging import REDACTED, SecretRedactor
from chatlib.options import MAX_ANSWER_TOKENS, AnswerOptions
from chatlib.ratelimit import RateLimiter
from chatlib.usage import UsageLog, read_usage
from tests.conftest import TEST_API_KEY, settings_for
from tests.fakes.openrouter import FakeOpenRouter, expected_reply
from tests.redis_server import redis_url  # noqa: F401 - fixture

SECRET_TEXT = "my-very-private-message-4242"


_POOLS: list[ClientPool] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _POOLS:
        await _POOLS.pop().aclose()


def _service(fake: FakeOpenRouter, tmp_path: Path, **overrides: object) -> ChatService:
    settings = dataclasses.replace(settings_for(fake, tmp_path, LOG_LEVEL="DEBUG"), **overrides)
    budget = FrameBudget(updates_per_second=300, min_interval_s=0.01)
    pool = ClientPool(settings)
    _POOLS.append(pool)
    return ChatService(settings, pool, budget)


def _request(text: str, **kw: object) -> TurnRequest:
    base = {
        "owner_key": "api",
        "conversation_id": None,
        "user_text": text,
        "model": "openai/gpt-4o",
        "system_prompt": "Be nice.",
        "temperature": 0.3,
    }
    return TurnRequest(**{**base, **kw})  # type: ignore[arg-type]


async def test_turn_streams_frames_and_ends_with_metadata(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    service = _service(fake, tmp_path)
    frames = [f async for f in service.run_turn(_request(f"{SECRET_TEXT} [[tokens=30]]"), ())]
    assert frames[0].answer.content == ""  # the user's message shows before upstream answers
    assert frames[0].history[0].content.startswith(SECRET_TEXT)
    final = frames[-1]
    assert final.done and final.error is None
    assert final.answer.content == expected_reply(SECRET_TEXT, 30)
    meta = final.answer.meta
    assert meta is not None and meta.status == "complete"
    assert meta.completion_tokens == 30 and meta.cost_usd and meta.ttft_ms is not None
    sent = fake.chat_requests()[-1]
    assert sent.body["messages"][0] == {"role": "system", "content": "Be nice."}
    assert sent.headers["x-openrouter-title"] == "OpenRouter Chat"


async def test_logs_have_turn_events_but_no_key_or_message_text(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    service = _service(fake, tmp_path)
    [f async for f in service.run_turn(_request(f"{SECRET_TEXT} [[tokens=5]]"), ())]
    [f async for f in service.run_turn(_request(f"{SECRET_TEXT} [[error=402]]"), ())]
    log_text = (tmp_path / "logs" / "app.log").read_text()
    events = [json.loads(line) for line in log_text.splitlines()]
    names = [e["event"] for e in events]
    for name in ("chat.started", "chat.first_token", "chat.finished", "chat.failed"):
        assert name in names
    finished = next(e for e in events if e["event"] == "chat.finished")
    assert finished["cost_usd"] > 0 and finished["latency_ms"] > 0
    assert finished["request_id"] and finished["model"] == "openai/gpt-4o"
    failed = next(e for e in events if e["event"] == "chat.failed")
    assert failed["status"] == 402 and failed["code"] == "insufficient_credits"
    assert TEST_API_KEY not in log_text
    assert SECRET_TEXT not in log_text


async def test_stop_keeps_partial_answer_marked_stopped(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    service = _service(fake, tmp_path)
    frames = []
    async for frame in service.run_turn(
        _request("slow [[tokens=200]] [[rate=40]]", session_key="s1"), ()
    ):
        frames.append(frame)
        if len(frame.answer.content) > 10 and not frame.done:
            assert service.stop("s1")
    final = frames[-1]
    assert final.done
    assert final.answer.meta is not None and final.answer.meta.status == "stopped"
    assert final.answer.meta.ttft_ms is not None  # known before the stop, so kept
    assert 10 < len(final.answer.content) < len(expected_reply("slow", 200))
    for _ in range(50):
        if fake.active_streams == 0:
            break
        await asyncio.sleep(0.05)
    assert fake.active_streams == 0  # the upstream request was really closed


async def test_refusals_happen_before_anything_is_sent(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    service = _service(fake, tmp_path, max_input_chars=10)
    with pytest.raises(InputError, match="limit is 10"):
        await anext(service.run_turn(_request("x" * 11), ()))
    keyless = _service(fake, tmp_path, openrouter_api_key=None)
    with pytest.raises(MissingApiKey):
        await anext(keyless.run_turn(_request("hi"), ()))
    assert fake.chat_requests() == []


def test_redactor_scrubs_keys_anywhere() -> None:
    redactor = SecretRedactor(["custom-secret-value"])
    event = redactor(
        None,
        "info",
        {
            "event": "x",
            "headers": {"authorization": "Bearer sk-or-v1-abcdef123456"},
            "note": "token hf_abcdefghijklmnop and custom-secret-value",
        },
    )
    assert "sk-or" not in json.dumps(event) and "hf_abc" not in json.dumps(event)
    assert "custom-secret-value" not in json.dumps(event)
    assert REDACTED in event["note"]


async def test_upstream_429_is_reported_at_once_not_retried(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    service = _service(fake, tmp_path, openrouter_max_retries=2)
    frames = [
        f async for f in service.run_turn(_request("hi [[error=429]] [[retry_after=30]]"), ())
    ]
    assert frames[-1].error is not None and "Retry in 30 s" in frames[-1].error.user_message
    assert len(fake.chat_requests()) == 1


async def test_a_client_hammering_past_its_limit_gets_one_row_per_10_s_that_counts_them_all(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    settings = settings_for(fake, tmp_path)
    pool = ClientPool(settings)
    _POOLS.append(pool)
    limiter = RateLimiter("memory://", 1)
    usage = UsageLog(tmp_path / "usage")
    now = [1000.0]
    service = ChatService(
        settings,
        pool,
        FrameBudget(updates_per_second=300, min_interval_s=0.01),
        limiter=limiter,
        usage=usage,
        clock=lambda: now[0],
        wall_clock=lambda: now[0],
    )
    try:
        [f async for f in service.run_turn(_request("hi [[tokens=2]]", rate_key="ip"), ())]
        for step in (0.0, 1.0, 1.0, 9.0):  # refused at 0, 1, 2 and 11 s
            now[0] += step
            with pytest.raises(RateLimited):
                await anext(service.run_turn(_request("again", rate_key="ip"), ()))
        rows = [r for r in read_usage(usage.path.parent) if r.status == "rate_limited"]
    finally:
        await limiter.aclose()
        usage.close()

    assert [r.count for r in rows] == [1, 3]  # the second row stands for the two left out too


async def test_two_replicas_record_one_refusal_row_per_window_between_them(
    fake: FakeOpenRouter,
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - fixture
) -> None:
    # Both replicas share the limit and the row throttling through Redis.
    settings = settings_for(fake, tmp_path)
    now = [2000.0]
    replicas, limiters, logs = [], [], []
    for name in ("a", "b"):
        pool = ClientPool(settings)
        _POOLS.append(pool)
        limiters.append(RateLimiter(f"{redis_url}/7", 1))
        logs.append(UsageLog(tmp_path / "usage", process_id=name))
        replicas.append(
            ChatService(
                settings,
                pool,
                FrameBudget(updates_per_second=300, min_interval_s=0.01),
                limiter=limiters[-1],
                usage=logs[-1],
                wall_clock=lambda: now[0],
            )
        )
    key = f"ip-{now[0]}-{id(replicas)}"
    try:
        [f async for f in replicas[0].run_turn(_request("hi [[tokens=2]]", rate_key=key), ())]
        for n, step in enumerate((0.0, 1.0, 1.0, 1.0, 9.0)):  # refused at 0-3 s, then 12 s
            now[0] += step
            with pytest.raises(RateLimited):
                await anext(replicas[n % 2].run_turn(_request("again", rate_key=key), ()))
        rows = [r for r in read_usage(tmp_path / "usage") if r.status == "rate_limited"]
    finally:
        for limiter, log in zip(limiters, logs, strict=True):
            await limiter.aclose()
            log.close()
    assert sorted(r.count for r in rows) == [1, 4]  # five refusals, two rows, one window each


# -- answer options: web search, reasoning effort, answer length (issue 17) ------------------


async def _catalog_service(fake: FakeOpenRouter, tmp_path: Path, **env: str) -> ChatService:
    settings = settings_for(fake, tmp_path, **env)
    catalog = ModelCatalog(
        http_catalog_fetcher(fake.base_url, 5.0), ttl_seconds=3600, timeout_seconds=5.0
    )
    assert await catalog.refresh()
    pool = ClientPool(settings)
    _POOLS.append(pool)
    budget = FrameBudget(updates_per_second=300, min_interval_s=0.01)
    return ChatService(settings, pool, budget, catalog=catalog)


async def _answer(service: ChatService, text: str, **kw: object) -> TurnFrame:
    frames = [f async for f in service.run_turn(_request(text, **kw), ())]
    return frames[-1]


async def test_a_searched_answer_keeps_its_sources_and_pays_for_the_search(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    service = await _catalog_service(fake, tmp_path, WEB_SEARCH_MAX_RESULTS="7")
    final = await _answer(
        service, "what happened? [[tokens=5]]", options=AnswerOptions(web_search=True)
    )
    assert fake.received_options() == {
        "tools": [{"type": "openrouter:web_search", "parameters": {"max_results": 7}}]
    }
    meta = final.answer.meta
    assert meta is not None and meta.status == "complete"
    assert [s.url for s in meta.sources] == [f"https://example.com/source-{n}" for n in (1, 2, 3)]
    assert meta.cost_usd is not None and meta.cost_usd > 7 * 0.004
    assert final.answer.content == expected_reply("what happened? [[tokens=5]]", 5)
    await _answer(service, "and plainly? [[tokens=2]]")
    assert fake.received_options() == {}  # None: the defaults, no search


async def test_reasoning_effort_goes_to_models_that_take_it_and_to_custom_ids_only(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    service = await _catalog_service(fake, tmp_path)
    high = AnswerOptions(reasoning_effort="high")
    final = await _answer(service, "hm [[tokens=2]]", model="deepseek/deepseek-r1", options=high)
    assert fake.received_options() == {"reasoning": {"effort": "high"}}
    assert final.answer.reasoning.startswith("think0")  # the model thought
    await _answer(service, "hm [[tokens=2]]", model="openai/gpt-4o", options=high)
    assert fake.received_options() == {}  # gpt-4o takes no reasoning: not sent
    await _answer(service, "hm [[tokens=2]]", model="someone/custom-model", options=high)
    assert fake.received_options() == {"reasoning": {"effort": "high"}}  # OpenRouter judges
    off = AnswerOptions(reasoning_effort="off")
    await _answer(service, "hm [[tokens=2]]", model="deepseek/deepseek-r1", options=off)
    assert fake.received_options() == {}


async def test_max_answer_length_goes_to_every_model_within_its_cap(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    service = await _catalog_service(fake, tmp_path)
    final = await _answer(service, "long [[tokens=30]]", options=AnswerOptions(max_tokens=4))
    assert fake.received_options() == {"max_tokens": 4}
    assert final.answer.meta is not None and final.answer.meta.completion_tokens == 4
    await _answer(
        service, "x [[tokens=2]]", model="evil/model", options=AnswerOptions(max_tokens=5000)
    )
    assert fake.received_options() == {"max_tokens": 1024}  # the catalog's cap
    await _answer(
        service, "x [[tokens=2]]", model="a/custom", options=AnswerOptions(max_tokens=5000)
    )
    assert fake.received_options() == {"max_tokens": 5000}


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (AnswerOptions(reasoning_effort="extreme"), "reasoning_effort"),  # type: ignore[arg-type]
        (AnswerOptions(max_tokens=0), "max_tokens"),
        (AnswerOptions(max_tokens=MAX_ANSWER_TOKENS + 1), "max_tokens"),
        (AnswerOptions(max_tokens=2.5), "max_tokens"),  # type: ignore[arg-type]
        (AnswerOptions(max_tokens=True), "max_tokens"),
        (AnswerOptions(web_search="yes"), "web_search"),  # type: ignore[arg-type]
    ],
)
async def test_odd_options_are_refused_by_name_before_anything_is_sent(
    fake: FakeOpenRouter, tmp_path: Path, options: AnswerOptions, field: str
) -> None:
    service = _service(fake, tmp_path)
    with pytest.raises(InputError, match=field):
        await _answer(service, "hi", options=options)
    assert fake.chat_requests() == []


async def test_the_turn_log_says_which_options_were_asked(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    service = await _catalog_service(fake, tmp_path)
    options = AnswerOptions(web_search=True, reasoning_effort="low", max_tokens=50)
    with structlog.testing.capture_logs() as logs:
        await _answer(service, "hi [[tokens=2]]", model="openai/gpt-4o", options=options)
    started = next(entry for entry in logs if entry["event"] == "chat.started")
    assert started["web_search"] is True and started["reasoning_effort"] == "low"
    assert started["max_tokens"] == 50
    assert any(entry["event"] == "chat.reasoning_skipped" for entry in logs)
    assert any(
        entry.get("requests") == 1 for entry in logs if entry["event"] == "chat.web_search_requests"
    )
