"""stream_chat against the fake OpenRouter: typed events, usage, and every failure mode."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai import AsyncOpenAI

from chatlib import client as client_module
from chatlib import errors
from chatlib.catalog import http_catalog_fetcher
from chatlib.chat import ChatService, TurnRequest
from chatlib.client import (
    ClientPool,
    Finished,
    FirstToken,
    ImageDelta,
    ReasoningDelta,
    SourcesFound,
    StreamEvent,
    StreamFailed,
    TextDelta,
    Usage,
    attribution_headers,
    map_api_error,
    stream_chat,
)
from chatlib.config import Settings
from chatlib.frames import FrameBudget
from chatlib.messages import AnswerMeta, format_answer_footer
from chatlib.sources import Source
from tests.conftest import settings_for
from tests.fakes.openrouter import FakeOpenRouter, expected_reply


async def _pace_every_tenth_of_a_second() -> None:
    await asyncio.sleep(0.1)


async def _stream(
    client: AsyncOpenAI,
    text: str,
    *,
    idle: float = 5.0,
    pace: Callable[[], Awaitable[None]] | None = None,
) -> list[StreamEvent]:
    return [
        event
        async for event in stream_chat(
            client,
            model="openai/gpt-4o",
            messages=[{"role": "user", "content": text}],
            temperature=0.3,
            idle_timeout=idle,
            pace=pace,
        )
    ]


async def _collect(
    fake: FakeOpenRouter,
    text: str,
    *,
    idle: float = 5.0,
    key: str = "sk-or-v1-unit",
    pace: Callable[[], Awaitable[None]] | None = None,
) -> list[StreamEvent]:
    client = AsyncOpenAI(base_url=fake.base_url, api_key=key, max_retries=0)
    try:
        return await _stream(client, text, idle=idle, pace=pace)
    finally:
        await client.close()


def _text(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_stream_yields_text_usage_and_finish(fake: FakeOpenRouter) -> None:
    events = await _collect(fake, "hello world [[tokens=12]] [[delay=0.6]]")
    assert _text(events) == expected_reply("hello world [[tokens=12]]", 12)
    usage = [e for e in events if isinstance(e, Usage)]
    assert len(usage) == 1 and usage[0].completion_tokens == 12
    assert usage[0].cost_usd is not None and usage[0].cost_usd > 0
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "stop"
    assert finished.generation_id and finished.generation_id.startswith("gen-")
    assert finished.ttft_ms is not None and finished.ttft_ms >= 500  # keep-alives were skipped


async def test_the_first_token_is_announced_once_with_its_wait(fake: FakeOpenRouter) -> None:
    events = await _collect(fake, "think first [[reasoning=2]] [[tokens=4]] [[delay=0.3]]")
    firsts = [i for i, e in enumerate(events) if isinstance(e, FirstToken)]
    assert len(firsts) == 1
    first = events[firsts[0]]
    assert isinstance(first, FirstToken) and first.ttft_ms >= 300
    assert isinstance(events[firsts[0] + 1], ReasoningDelta | TextDelta)
    assert not any(isinstance(e, TextDelta | ReasoningDelta) for e in events[: firsts[0]])
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.ttft_ms == first.ttft_ms


async def test_a_refusal_before_any_token_announces_no_first_token(fake: FakeOpenRouter) -> None:
    events = await _collect(fake, "hi [[error=402]]")
    assert not any(isinstance(e, FirstToken) for e in events)


def _space_settings(fake: FakeOpenRouter, **extra: str) -> Settings:
    space = {"SPACE_ID": "alice/chat", "SPACE_HOST": "alice-chat.hf.space"}
    return Settings.from_env(
        {**space, "OPENROUTER_BASE_URL": fake.base_url, **extra}, env_file=None
    )


async def test_on_a_space_openrouter_sees_which_app_is_asking(fake: FakeOpenRouter) -> None:
    settings = _space_settings(fake, APP_TITLE="Alice's Chat")
    pool = ClientPool(settings)
    try:
        events = await _stream(pool.get("sk-or-v1-unit"), "hello [[tokens=3]]")
    finally:
        await pool.aclose()
    assert isinstance(events[-1], Finished)
    sent = fake.chat_requests()[-1].headers
    assert sent["http-referer"] == "https://alice-chat.hf.space"
    assert sent["x-title"] == sent["x-openrouter-title"] == "Alice's Chat"


async def test_the_catalog_fetch_names_the_app_too(fake: FakeOpenRouter) -> None:
    settings = _space_settings(fake, PUBLIC_URL="https://chat.example.org")
    fetch = http_catalog_fetcher(fake.base_url, 5, headers=attribution_headers(settings))
    assert await fetch()
    sent = fake.catalog_requests[-1].headers
    assert sent["http-referer"] == "https://chat.example.org"
    assert sent["x-title"] == "OpenRouter Chat"


async def test_without_a_public_url_no_referer_is_sent(fake: FakeOpenRouter) -> None:
    pool = ClientPool(Settings(openrouter_base_url=fake.base_url))
    try:
        await _stream(pool.get("sk-or-v1-unit"), "hello [[tokens=2]]")
    finally:
        await pool.aclose()
    sent = fake.chat_requests()[-1].headers
    assert "http-referer" not in sent and sent["x-title"] == "OpenRouter Chat"


async def test_reasoning_arrives_as_its_own_events(fake: FakeOpenRouter) -> None:
    events = await _collect(fake, "think first [[reasoning=3]] [[tokens=4]]")
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning == "think0 think1 think2 "
    assert _text(events) == expected_reply("think first", 4)


@pytest.mark.parametrize(
    ("status", "error_type", "words"),
    [
        (400, errors.BadRequest, "model id"),
        (401, errors.AuthenticationFailed, "API key"),
        (402, errors.InsufficientCredits, "out of credits"),
        (403, errors.ModerationFlagged, "violence"),
        (408, errors.UpstreamTimeout, "too long"),
        (429, errors.UpstreamRateLimited, "Retry in 7 s"),
        (502, errors.ProviderUnavailable, "unavailable"),
        (503, errors.ProviderUnavailable, "unavailable"),
    ],
)
async def test_http_errors_map_to_actionable_messages(
    fake: FakeOpenRouter, status: int, error_type: type[errors.UpstreamError], words: str
) -> None:
    events = await _collect(fake, f"hi [[error={status}]]")
    assert len(events) == 1
    failure = events[0]
    assert isinstance(failure, StreamFailed)
    assert type(failure.error) is error_type
    assert failure.error.status == status
    assert words in failure.error.user_message


async def test_upstream_rate_limit_carries_retry_after(fake: FakeOpenRouter) -> None:
    events = await _collect(fake, "hi [[error=429]] [[retry_after=42]]")
    failure = events[0]
    assert isinstance(failure, StreamFailed)
    assert failure.error.retry_after == 42


async def test_invalid_key_is_reported_without_echoing_it(fake: FakeOpenRouter) -> None:
    events = await _collect(fake, "hi", key="sk-or-v1-invalid-0000000000")
    failure = events[0]
    assert isinstance(failure, StreamFailed)
    assert isinstance(failure.error, errors.AuthenticationFailed)
    assert "sk-or" not in failure.error.user_message


async def test_the_next_answer_reuses_the_connection(fake: FakeOpenRouter) -> None:
    # No new TCP/TLS handshake per answer: the body is read to its end after [DONE].
    client = AsyncOpenAI(base_url=fake.base_url, api_key="sk-or-v1-unit", max_retries=0)
    try:
        for text in ("first [[tokens=5]]", "second [[tokens=5]]"):
            events = await _stream(client, text, pace=_pace_every_tenth_of_a_second)
            assert isinstance(events[-1], Finished)
    finally:
        await client.close()
    first, second = fake.requests[-2:]
    assert first.client is not None and first.client == second.client


async def test_paced_reads_take_tokens_in_bursts_and_lose_none(fake: FakeOpenRouter) -> None:
    unpaced = await _collect(fake, "burst [[tokens=60]] [[rate=200]]")
    paced = await _collect(
        fake, "burst [[tokens=60]] [[rate=200]]", pace=_pace_every_tenth_of_a_second
    )
    assert _text(paced) == _text(unpaced) == expected_reply("burst", 60)
    assert isinstance(paced[-1], Finished)


@pytest.mark.parametrize(
    ("paced", "rate"), [(False, 100), (True, 100), (False, 100_000), (True, 100_000)]
)
@pytest.mark.parametrize(
    "fault", ["midstream_error", "drop", "garbage", "badbytes", "badshape", "truncate"]
)
async def test_broken_streams_keep_the_partial_text(
    fake: FakeOpenRouter, fault: str, paced: bool, rate: int
) -> None:
    # At 100 000 tok/s the text and the broken line arrive in one network read.
    pace = _pace_every_tenth_of_a_second if paced else None
    prompt = f"partial please [[tokens=20]] [[{fault}=5]] [[rate={rate}]]"
    events = await _collect(fake, prompt, pace=pace)
    assert _text(events) == expected_reply("partial please", 5)
    failure = events[-1]
    assert isinstance(failure, StreamFailed)
    assert isinstance(failure.error, errors.StreamInterrupted)
    assert "kept" in failure.error.user_message


async def test_an_unexpected_failure_keeps_the_partial_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = client_module._add_chunk
    calls = 0

    def fail_on_the_third_chunk(batch: Any, chunk: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("a bug")
        original(batch, chunk)

    monkeypatch.setattr(client_module, "_add_chunk", fail_on_the_third_chunk)
    # All three chunks come in one read: the text before the failing one is still kept.
    read = _chunk("kept ") + _chunk("also kept ") + _chunk("lost") + b"data: [DONE]\n\n"
    events = await _stream(_scripted([read]), "hi")
    assert _text(events) == "kept also kept "
    failure = events[-1]
    assert isinstance(failure, StreamFailed)
    assert failure.error.code == "unexpected_error"
    assert "kept" in failure.error.user_message


@pytest.mark.parametrize("paced", [False, True])
async def test_stall_is_cut_after_the_idle_timeout(fake: FakeOpenRouter, paced: bool) -> None:
    pace = _pace_every_tenth_of_a_second if paced else None
    events = await _collect(fake, "stall [[tokens=20]] [[stall=3]]", idle=0.5, pace=pace)
    assert _text(events) == expected_reply("stall", 3)
    failure = events[-1]
    assert isinstance(failure, StreamFailed)
    assert isinstance(failure.error, errors.StreamStalled)


async def test_unreachable_upstream_is_a_clear_error() -> None:
    client = AsyncOpenAI(base_url="http://127.0.0.1:9/api/v1", api_key="k", max_retries=0)
    events = [
        e
        async for e in stream_chat(
            client,
            model="m",
            messages=[{"role": "user", "content": "x"}],
            temperature=0,
            idle_timeout=5,
        )
    ]
    await client.close()
    assert isinstance(events[0], StreamFailed)
    assert isinstance(events[0].error, errors.ProviderUnavailable)


def test_credentials_in_upstream_error_text_are_never_shown() -> None:
    leaked = "sk-or-v1-0123456789abcdef0123456789abcdef"
    text = f"upstream said: Bearer {leaked} is bad; hf_abcdefghijklmnop too"
    response = httpx2.Response(502, request=httpx2.Request("POST", "http://upstream/x"))
    http_error = openai.APIStatusError("bad", response=response, body={"error": {"message": text}})
    mid_stream = client_module._MidStreamError({"message": text})
    for shown in (
        map_api_error(http_error, model="m", started=False).user_message,
        mid_stream.detail,
    ):
        assert "upstream said" in shown
        assert leaked not in shown and "sk-or-" not in shown and "hf_abc" not in shown


def _scripted(reads: list[bytes]) -> AsyncOpenAI:
    """A client whose upstream answers 200 with exactly these body reads."""

    async def body() -> AsyncIterator[bytes]:
        for read in reads:
            yield read

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(answer))
    return AsyncOpenAI(
        base_url="http://upstream/api/v1", api_key="k", max_retries=0, http_client=http
    )


def _chunk(text: str, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    return b"data: " + orjson.dumps({"id": "gen-1", "choices": [choice]}) + b"\n\n"


async def test_a_huge_token_over_many_reads_arrives_whole() -> None:
    token = "x" * 2_000_000
    body = _chunk("a ") + _chunk(token) + _chunk("", "stop") + b"data: [DONE]\n\n"
    reads = [body[i : i + 16_384] for i in range(0, len(body), 16_384)]
    events = await _stream(_scripted(reads), "hi")
    assert _text(events) == "a " + token
    assert isinstance(events[-1], Finished)


async def test_a_last_line_without_a_line_end_still_counts() -> None:
    events = await _stream(_scripted([_chunk("done", "stop"), b"data: [DONE]"]), "hi")
    assert _text(events) == "done" and isinstance(events[-1], Finished)
    events = await _stream(_scripted([_chunk("cut "), _chunk("short").rstrip(b"\n")]), "hi")
    assert _text(events) == "cut short"  # kept, and reported as cut short
    assert isinstance(events[-1], StreamFailed)


# -- pictures a model draws ----------------------------------------------------------------


async def test_drawn_pictures_arrive_as_image_events_before_the_text(fake: FakeOpenRouter) -> None:
    events = await _collect(fake, "draw [[images=2]] [[tokens=3]]")
    kinds = [type(e).__name__ for e in events]
    assert kinds[:4] == ["FirstToken", "ImageDelta", "ImageDelta", "TextDelta"]
    images = [e for e in events if isinstance(e, ImageDelta)]
    assert all(e.url.startswith("data:image/png;base64,") for e in images)
    assert images[0].url != images[1].url
    assert _text(events) == expected_reply("draw", 3)
    assert isinstance(events[-1], Finished)


def _images_chunk(images: object, *, key: str = "delta") -> bytes:
    choice = {"index": 0, key: {"images": images}, "finish_reason": None}
    return b"data: " + orjson.dumps({"id": "gen-1", "choices": [choice]}) + b"\n\n"


async def test_odd_picture_entries_are_skipped_and_the_text_still_arrives() -> None:
    good = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    body = (
        _images_chunk("not a list")
        + _images_chunk([{"type": "image_url"}, 7, good])
        + _images_chunk([good], key="message")  # a final, non-delta message
        + _chunk("text", "stop")
        + b"data: [DONE]\n\n"
    )
    events = await _stream(_scripted([body]), "hi")
    assert [e for e in events if isinstance(e, ImageDelta)] == [
        ImageDelta("data:image/png;base64,AAAA")
    ] * 2
    assert _text(events) == "text"
    assert isinstance(events[-1], Finished)


# -- 402: out of credit, before the answer or in the middle of it --------------------------


async def test_credit_running_out_mid_answer_keeps_the_text_and_says_how_to_add_more(
    fake: FakeOpenRouter,
) -> None:
    prompt = "spend it all [[tokens=20]] [[midstream_error=6]] [[midstream_code=402]]"
    events = await _collect(fake, prompt)
    assert _text(events) == expected_reply("spend it all", 6)
    failure = events[-1]
    assert isinstance(failure, StreamFailed)
    assert isinstance(failure.error, errors.InsufficientCredits)
    assert (failure.error.status, failure.error.code) == (402, "insufficient_credits")
    assert "kept" in failure.error.user_message
    assert errors.ADD_CREDITS_URL in failure.error.user_message
    assert errors.is_out_of_credits(failure.error.user_message)


async def _last_answer_footer(fake: FakeOpenRouter, tmp_path: Path, text: str) -> str:
    settings = settings_for(fake, tmp_path)
    pool = ClientPool(settings)
    try:
        service = ChatService(
            settings, pool, FrameBudget(updates_per_second=300, min_interval_s=0.01)
        )
        request = TurnRequest(
            owner_key="o",
            conversation_id=None,
            user_text=text,
            model="openai/gpt-4o",
            system_prompt="",
            temperature=0.3,
        )
        frames = [frame async for frame in service.run_turn(request, ())]
    finally:
        await pool.aclose()
    meta = frames[-1].answer.meta
    assert meta is not None and meta.error is not None
    return format_answer_footer(meta)


@pytest.mark.parametrize(
    "directives",
    ["[[error=402]]", "[[tokens=20]] [[midstream_error=4]] [[midstream_code=402]]"],
)
async def test_an_answer_cut_by_a_402_is_marked_failed_out_of_credit(
    fake: FakeOpenRouter, tmp_path: Path, directives: str
) -> None:
    footer = await _last_answer_footer(fake, tmp_path, f"hello {directives}")
    assert footer.endswith("failed: out of credit")
    assert "interrupted" not in footer


async def test_other_mid_answer_failures_still_say_interrupted(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    footer = await _last_answer_footer(fake, tmp_path, "hi [[tokens=20]] [[midstream_error=4]]")
    assert footer.endswith("interrupted")


def test_an_older_saved_402_answer_reads_as_out_of_credit_too() -> None:
    # Saved before this change (or imported): status "interrupted" and the 402 text.
    old_error = (
        "The OpenRouter account is out of credits (402). Add credits at "
        "https://openrouter.ai/settings/credits or choose a free model."
    )
    meta = AnswerMeta(model="m", status="interrupted", error=old_error)
    assert format_answer_footer(meta).endswith("failed: out of credit")


# -- sources (web search) and big request bodies ---------------------------------------------

SEARCH_TOOL = [{"type": "openrouter:web_search", "parameters": {"max_results": 5}}]


async def _stream_with(
    fake: FakeOpenRouter, text: str, messages: list[dict[str, Any]] | None = None, **extra: Any
) -> list[StreamEvent]:
    client = AsyncOpenAI(base_url=fake.base_url, api_key="sk-or-v1-unit", max_retries=0)
    try:
        return [
            event
            async for event in stream_chat(
                client,
                model="openai/gpt-4o",
                messages=messages or [{"role": "user", "content": text}],
                temperature=0.3,
                idle_timeout=5.0,
                extra_body=extra,
            )
        ]
    finally:
        await client.close()


def _sources(events: list[StreamEvent]) -> list[Source]:
    return [s for e in events if isinstance(e, SourcesFound) for s in e.sources]


@pytest.mark.parametrize("place", ["delta", "message", "both"])
async def test_a_searched_answer_names_its_sources_once_after_its_text(
    fake: FakeOpenRouter, place: str
) -> None:
    text = f"what is new? [[tokens=6]] [[citations={place}]]"
    events = await _stream_with(fake, text, tools=SEARCH_TOOL)
    assert _text(events) == expected_reply(text, 6)  # the text is whole
    urls = [s.url for s in _sources(events)]
    assert urls == [f"https://example.com/source-{n}" for n in (1, 2, 3)]  # once each
    assert _sources(events)[0].title == "Source 1"
    kinds = [type(e) for e in events]
    assert kinds.index(FirstToken) < kinds.index(TextDelta) < kinds.index(SourcesFound)
    usage = next(e for e in events if isinstance(e, Usage))
    assert usage.cost_usd is not None and usage.cost_usd > 5 * 0.004  # the search is billed


async def test_hostile_sources_are_kept_as_text_never_as_links(fake: FakeOpenRouter) -> None:
    events = await _stream_with(fake, "news [[tokens=3]] [[hostile=1]]", tools=SEARCH_TOOL)
    hostile = [s for s in _sources(events) if s.link is None]
    assert {s.url.split(":")[0] for s in hostile} == {"javascript", "data"}
    assert isinstance(events[-1], Finished)


def test_sources_alone_are_not_a_first_token() -> None:
    events = client_module._Events(lambda: 0.0)
    batch = client_module._parse_lines(
        [_annotated_chunk({"annotations": [_citation("https://a.example")]})]
    )
    assert [type(e) for e in events.from_batch(batch)] == [SourcesFound]
    assert not events.has_content


def _citation(url: object, title: object = "A page") -> dict[str, Any]:
    return {"type": "url_citation", "url_citation": {"url": url, "title": title}}


def _annotated_chunk(delta: dict[str, Any], message: dict[str, Any] | None = None) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": delta}
    if message is not None:
        choice["message"] = message
    return b"data: " + orjson.dumps({"id": "gen-1", "choices": [choice]})


@pytest.mark.parametrize(
    "annotations",
    [
        "not a list",
        {"type": "url_citation"},
        [1, None, "x", []],
        [{"type": "url_citation", "url_citation": "nope"}],
        [{"type": "url_citation", "url_citation": {"url": 42, "title": ["t"]}}],
        [{"type": "file_annotation", "file": {"name": "a.pdf"}}],
        [_citation("   ")],
    ],
)
def test_odd_annotations_never_cost_the_answer_its_text(annotations: object) -> None:
    events = client_module._Events(lambda: 0.0)
    lines = [
        _annotated_chunk({"content": "Hello", "annotations": annotations}),
        _annotated_chunk({}, message={"annotations": annotations}),
        _annotated_chunk({"content": " world"}),
    ]
    out = list(events.from_batch(client_module._parse_lines(lines)))
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "Hello world"
    assert not any(isinstance(e, SourcesFound) for e in out)


def test_a_source_repeated_in_a_later_read_is_not_sent_again_unless_it_gained_a_title() -> None:
    events = client_module._Events(lambda: 0.0)

    def found(*citations: dict[str, Any]) -> list[Source]:
        batch = client_module._parse_lines([_annotated_chunk({"annotations": list(citations)})])
        return [
            s for e in events.from_batch(batch) if isinstance(e, SourcesFound) for s in e.sources
        ]

    assert found(_citation("https://a.example", ""), _citation("https://a.example", "")) == [
        Source("https://a.example")
    ]
    assert found(_citation("https://a.example", "")) == []
    assert found(_citation("https://a.example", "A")) == [Source("https://a.example", "A")]
    assert found(_citation("https://a.example", "B")) == []


def _big_messages() -> list[dict[str, Any]]:
    pdf = b"%PDF-1.4\n%" + os.urandom(3_000_000) + b"\n%%EOF\n"
    data = "data:application/pdf;base64," + base64.b64encode(pdf).decode()
    part = {"type": "file", "file": {"filename": "big.pdf", "file_data": data}}
    text = {"type": "text", "text": 'Summarise "this" — é\n' * 5000}
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [text, part]}]


async def test_a_big_body_is_sent_in_pieces_as_the_same_json_and_still_streams(
    fake: FakeOpenRouter,
) -> None:
    messages = _big_messages()
    body = {"model": "openai/gpt-4o", "stream": True, "messages": messages, "temperature": 0.3}
    encoded = await client_module.encode_request_body({**body, "plugins": [{"id": "file-parser"}]})
    assert isinstance(encoded, client_module.RequestBody) and len(encoded.pieces) > 3
    assert bytes(encoded) == orjson.dumps({**body, "plugins": [{"id": "file-parser"}]})
    events = await _stream_with(fake, "", messages, plugins=[{"id": "file-parser"}])
    assert isinstance(events[-1], Finished) and _text(events).startswith("Echo:")
    sent = fake.chat_requests()[-1]
    assert sent.body == {**body, "plugins": [{"id": "file-parser"}]}
    assert sent.headers["content-length"] == str(len(encoded))  # not chunked
    assert "transfer-encoding" not in sent.headers


async def test_the_request_carries_the_same_headers_and_json_as_the_sdk_would_send(
    fake: FakeOpenRouter,
) -> None:
    headers = {"X-OpenRouter-Title": "T"}
    client = AsyncOpenAI(
        base_url=fake.base_url, api_key="sk-or-v1-unit", max_retries=0, default_headers=headers
    )
    messages: list[Any] = [{"role": "user", "content": "same? [[tokens=2]]"}]
    try:  # what the client did before it encoded bodies itself
        async with client.chat.completions.with_streaming_response.create(
            model="openai/gpt-4o", messages=messages, temperature=0.3, stream=True
        ) as response:
            await response.read()
        events = stream_chat(
            client, model="openai/gpt-4o", messages=messages, temperature=0.3, idle_timeout=5.0
        )
        assert isinstance([e async for e in events][-1], Finished)
    finally:
        await client.close()
    by_sdk, ours = fake.chat_requests()[-2:]
    assert ours.body == by_sdk.body
    assert ours.headers.keys() == by_sdk.headers.keys()
    same = set(ours.headers) - {"content-length", "x-stainless-read-timeout"}
    assert {k: ours.headers[k] for k in same} == {k: by_sdk.headers[k] for k in same}


async def test_a_body_that_cannot_be_encoded_fails_the_answer_with_a_message(
    fake: FakeOpenRouter,
) -> None:
    events = await _stream_with(fake, "broken \ud800 text")
    assert len(events) == 1 and isinstance(events[0], StreamFailed)
    assert "cannot be encoded" in events[0].error.user_message
    assert fake.chat_requests() == []
