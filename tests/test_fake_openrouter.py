"""Tests for the local OpenRouter stand-in, driven through the real openai SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
from PIL import Image

from tests.fakes.openrouter import (
    BAD_IMAGE_URL,
    CATALOG,
    DRAWN_IMAGE_SIDE,
    IMAGE_COMPLETION_TOKENS,
    FakeOpenRouter,
    drawn_png,
    expected_cost,
    expected_reply,
    prompt_tokens,
    reply_chunks,
    strip_directives,
)

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-or-v1-fake0000000000000000cafe"
MODEL = "openai/gpt-4o"
DEFAULT_TOKENS = 12


@pytest.fixture(scope="module")
def router_module() -> Iterator[FakeOpenRouter]:
    """One fast fake for this module."""
    with FakeOpenRouter(tokens_per_second=2000.0, default_tokens=DEFAULT_TOKENS) as fake:
        yield fake


@pytest.fixture
def router(router_module: FakeOpenRouter) -> FakeOpenRouter:
    """The module fake with records, defaults and catalog mode reset."""
    router_module.reset()
    return router_module


def _png_url(width: int = 8, height: int = 6) -> str:
    """A real PNG of that size as a data URL."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


PDF_URL = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()


def make_client(router: FakeOpenRouter, **kwargs: Any) -> AsyncOpenAI:
    """An AsyncOpenAI client pointed at the fake, without retries."""
    return AsyncOpenAI(base_url=router.base_url, api_key=KEY, max_retries=0, **kwargs)


def user(text: str) -> list[ChatCompletionMessageParam]:
    """A one-message conversation."""
    return [{"role": "user", "content": text}]


def content_of(chunks: list[ChatCompletionChunk]) -> str:
    """Concatenate the content deltas of streamed chunks."""
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def collect(
    router: FakeOpenRouter, text: str, *, model: str = MODEL, **kwargs: Any
) -> tuple[str, list[ChatCompletionChunk]]:
    """Stream one completion to the end and return its text and chunks."""
    async with make_client(router) as client:
        stream = await client.chat.completions.create(
            model=model, messages=kwargs.pop("messages", user(text)), stream=True, **kwargs
        )
        chunks = [chunk async for chunk in stream]
    return content_of(chunks), chunks


async def collect_until_error(router: FakeOpenRouter, text: str) -> tuple[str, Exception]:
    """Stream one completion until it fails; return the partial text and the error."""
    parts: list[str] = []
    async with make_client(router) as client:
        stream = await client.chat.completions.create(model=MODEL, messages=user(text), stream=True)
        try:
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
        except Exception as exc:  # noqa: BLE001 - the error is the result
            return "".join(parts), exc
        finally:
            await stream.close()
    pytest.fail("stream ended without an error")


def raw_stream(router: FakeOpenRouter, text: str, **body: Any) -> tuple[httpx2.Response, bytes]:
    """POST a streaming request with httpx2 and return the response and its raw body."""
    payload = {"model": MODEL, "messages": user(text), "stream": True, **body}
    headers = {"Authorization": f"Bearer {KEY}"}
    with (
        httpx2.Client(timeout=10.0) as client,
        client.stream(
            "POST", f"{router.base_url}/chat/completions", json=payload, headers=headers
        ) as response,
    ):
        return response, response.read()


def sse_events(raw: bytes) -> list[str]:
    """Split a raw SSE body into its events."""
    return [event for event in raw.decode().split("\n\n") if event]


def get(router: FakeOpenRouter, path: str, **kwargs: Any) -> httpx2.Response:
    """GET a path under the fake's base URL."""
    with httpx2.Client(timeout=kwargs.pop("timeout", 10.0)) as client:
        return client.get(f"{router.base_url}{path}", **kwargs)


# --------------------------------------------------------------------- pure helpers


def test_expected_reply_pads_truncates_and_strips_directives() -> None:
    assert expected_reply("hello [[tokens=3]]  world", 5) == "Echo: hello world w1 w2"
    assert expected_reply("a b c d", 2) == "Echo: a"
    assert expected_reply("[[delay=1]]", 3) == "Echo: w1 w2"
    assert expected_reply("anything", 0) == ""
    assert reply_chunks("hi there", 4) == ["Echo:", " hi", " there", " w1"]
    assert strip_directives("x [[a=1]] y [[b=]]") == "x  y "


def test_prompt_tokens_and_cost() -> None:
    messages = [{"role": "system", "content": "abcd"}, {"role": "user", "content": "efghijkl"}]
    assert prompt_tokens(messages) == 12 // 4 + 1
    assert expected_cost(MODEL, 100, 10) == pytest.approx(100 * 0.0000025 + 10 * 0.00001)
    assert expected_cost("deepseek/deepseek-r1:free", 100, 10) == 0.0
    assert expected_cost("nobody/unknown", 100, 10) == pytest.approx(0.001)


# ------------------------------------------------------------------------ streaming


@pytest.mark.asyncio
async def test_stream_text_chunks_and_usage(router: FakeOpenRouter) -> None:
    text = "Hello there, fake router! [[tokens=15]]"
    reply, chunks = await collect(router, text)
    assert reply == expected_reply(text, 15)
    first, finish, last = chunks[0], chunks[-2], chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert (first.model_extra or {}).get("provider") == "FakeProvider"
    assert first.object == "chat.completion.chunk"
    assert len({c.id for c in chunks}) == 1 and first.id.startswith("gen-")
    assert finish.choices[0].finish_reason == "stop"
    assert last.choices == []
    assert last.usage is not None
    prompt = len(text) // 4 + 1
    assert last.usage.prompt_tokens == prompt
    assert last.usage.completion_tokens == 15
    assert last.usage.total_tokens == prompt + 15
    usage_extra = last.usage.model_extra or {}
    assert usage_extra["cost"] == pytest.approx(expected_cost(MODEL, prompt, 15))
    assert usage_extra["is_byok"] is False
    content_chunks = [c for c in chunks[1:-2] if c.choices[0].delta.content]
    assert len(content_chunks) == 15


@pytest.mark.asyncio
async def test_default_tokens_content_parts_and_last_user_message(router: FakeOpenRouter) -> None:
    reply, _ = await collect(router, "plain prompt")
    assert reply == expected_reply("plain prompt", DEFAULT_TOKENS)

    parts = [
        {"type": "text", "text": "part one [[tokens=4]]"},
        {"type": "image_url", "image_url": {"url": _png_url()}},
        {"type": "text", "text": "part two"},
    ]
    reply, _ = await collect(router, "", messages=[{"role": "user", "content": parts}])
    assert reply == "Echo: part one part"

    history = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first [[tokens=2]]"},
        {"role": "assistant", "content": "Echo: first"},
        {"role": "user", "content": "second question"},
    ]
    reply, chunks = await collect(router, "", messages=history)
    assert reply == expected_reply("second question", DEFAULT_TOKENS)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == prompt_tokens(history)


@pytest.mark.asyncio
async def test_set_defaults_and_message_overrides(router: FakeOpenRouter) -> None:
    router.set_defaults(tokens="3")
    reply, _ = await collect(router, "one two three four five")
    assert reply == "Echo: one two"
    reply, _ = await collect(router, "one two [[tokens=5]]")
    assert reply == "Echo: one two w1 w2"
    router.reset()
    reply, _ = await collect(router, "x")
    assert reply == expected_reply("x", DEFAULT_TOKENS)
    with pytest.raises(ValueError, match="unknown directive"):
        router.set_defaults(bogus="1")
    with pytest.raises(ValueError, match="Invalid directive"):
        router.set_defaults(tokens="many")


@pytest.mark.asyncio
async def test_invalid_directive_is_a_400(router: FakeOpenRouter) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await collect(router, "hi [[tokens=lots]]")
    assert "Invalid directive" in str(info.value)


@pytest.mark.asyncio
async def test_reasoning_deltas_precede_content(router: FakeOpenRouter) -> None:
    text = "think first [[reasoning=3]] [[tokens=4]]"
    reply, chunks = await collect(router, text, model="deepseek/deepseek-r1")
    reasoning = [getattr(c.choices[0].delta, "reasoning", None) for c in chunks if c.choices]
    assert [r for r in reasoning if r] == ["think0 ", "think1 ", "think2 "]
    reasoning_chunks = [c for c in chunks if c.choices and (c.choices[0].delta.model_extra or {})]
    assert all(not c.choices[0].delta.content for c in reasoning_chunks)
    first_content = next(
        i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content
    )
    last_reasoning = max(i for i, r in enumerate(reasoning) if r)
    assert last_reasoning < first_content
    assert reply == expected_reply(text, 4)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 7
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 3


@pytest.mark.asyncio
async def test_max_tokens_gives_finish_reason_length(router: FakeOpenRouter) -> None:
    text = "a long answer please [[tokens=10]]"
    reply, chunks = await collect(router, text, max_tokens=4)
    assert reply == expected_reply(text, 4)
    assert chunks[-2].choices[0].finish_reason == "length"


def test_raw_sse_format_and_headers(router: FakeOpenRouter) -> None:
    response, raw = raw_stream(router, "raw check [[tokens=3]]")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    gen_id = response.headers["x-generation-id"]
    assert gen_id.startswith("gen-")
    events = sse_events(raw)
    assert events[0] == ": OPENROUTER PROCESSING"
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[1:-1]]
    assert all(e.startswith("data: {") for e in events[1:-1])
    assert {p["id"] for p in payloads} == {gen_id}
    first = payloads[0]
    assert first["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "finish_reason": None,
        "native_finish_reason": None,
        "logprobs": None,
    }
    assert payloads[-2]["choices"][0]["delta"] == {}
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-1]["choices"] == []
    assert set(payloads[-1]["usage"]) >= {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
        "is_byok",
        "prompt_tokens_details",
        "completion_tokens_details",
    }


def test_delay_sends_keepalive_comments(router: FakeOpenRouter) -> None:
    started = time.monotonic()
    _, raw = raw_stream(router, "wait [[delay=0.7]] [[tokens=2]]")
    assert time.monotonic() - started >= 0.6
    events = sse_events(raw)
    first_data = next(i for i, e in enumerate(events) if e.startswith("data:"))
    assert first_data >= 2
    assert set(events[:first_data]) == {": OPENROUTER PROCESSING"}


def test_pacing_follows_the_rate(router: FakeOpenRouter) -> None:
    started = time.monotonic()
    _, raw = raw_stream(router, "slow [[rate=40]] [[tokens=9]]")
    assert time.monotonic() - started >= 0.18  # paced, not dumped at once
    started = time.monotonic()
    _, raw = raw_stream(router, "fast [[rate=20000]] [[tokens=4000]]")
    assert time.monotonic() - started >= 0.18  # paced, not dumped at once
    assert raw.endswith(b"data: [DONE]\n\n")


# --------------------------------------------------------------------------- errors

ERROR_CASES = [
    (400, openai.BadRequestError, "openai/gpt-4o is not a valid model ID"),
    (401, openai.AuthenticationError, "No auth credentials found"),
    (402, openai.APIStatusError, "Insufficient credits"),
    (403, openai.PermissionDeniedError, "Input was flagged by moderation"),
    (408, openai.APIStatusError, "Request timed out"),
    (429, openai.RateLimitError, "Rate limit exceeded: free-models-per-min"),
    (500, openai.InternalServerError, "Internal Server Error"),
    (502, openai.InternalServerError, "Provider returned error"),
    (503, openai.InternalServerError, "No available providers"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("code", "exc_type", "message"), ERROR_CASES)
async def test_error_directive(
    router: FakeOpenRouter, code: int, exc_type: type[openai.APIStatusError], message: str
) -> None:
    with pytest.raises(exc_type) as info:
        await collect(router, f"bad things [[error={code}]]")
    error = info.value
    assert error.status_code == code
    assert isinstance(error.body, dict)
    assert error.body["code"] == code
    assert message in error.body["message"]
    assert isinstance(error.body["metadata"], dict)
    if code == 403:
        assert error.body["metadata"]["reasons"] == ["violence"]
        assert error.body["metadata"]["flagged_input"] == "bad things"
        assert error.body["metadata"]["model_slug"] == MODEL
    if code == 502:
        assert error.body["metadata"] == {"provider_name": "FakeProvider", "raw": "upstream error"}


@pytest.mark.asyncio
async def test_rate_limit_retry_after(router: FakeOpenRouter) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        await collect(router, "[[error=429]]")
    assert info.value.response.headers["retry-after"] == "7"
    router.set_defaults(error="429", retry_after="2")
    with pytest.raises(openai.RateLimitError) as info:
        await collect(router, "no directive here")
    assert info.value.response.headers["retry-after"] == "2"


@pytest.mark.asyncio
async def test_authentication(router: FakeOpenRouter) -> None:
    async with AsyncOpenAI(
        base_url=router.base_url, api_key="sk-or-invalid-key", max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(model=MODEL, messages=user("hi"), stream=True)
    assert info.value.status_code == 401
    with httpx2.Client(timeout=10.0) as raw:
        response = raw.post(f"{router.base_url}/chat/completions", json={"model": MODEL})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "No auth credentials found"
    assert len(router.wait_for_requests(2)) == 2


@pytest.mark.asyncio
async def test_midstream_error_after_partial_text(router: FakeOpenRouter) -> None:
    text = "stream then fail [[midstream_error=5]]"
    partial, error = await collect_until_error(router, text)
    assert partial == expected_reply(text, 5)
    assert isinstance(error, openai.APIError)
    assert not isinstance(error, openai.APIStatusError)
    assert "Provider disconnected unexpectedly" in str(error)
    assert isinstance(error.body, dict) and error.body["code"] == 502


@pytest.mark.asyncio
async def test_midstream_error_can_say_the_credit_ran_out(router: FakeOpenRouter) -> None:
    text = "stream then run dry [[midstream_error=3]] [[midstream_code=402]]"
    partial, error = await collect_until_error(router, text)
    assert partial == expected_reply(text, 3)
    assert isinstance(error, openai.APIError)
    assert isinstance(error.body, dict) and error.body["code"] == 402
    assert "Insufficient credits" in str(error)


@pytest.mark.asyncio
async def test_drop_aborts_connection_after_partial_text(router: FakeOpenRouter) -> None:
    text = "stream then drop [[drop=4]] [[reasoning=2]]"
    partial, error = await collect_until_error(router, text)
    assert partial == expected_reply(text, 4)
    assert isinstance(error, openai.APIConnectionError)
    _, raw = await asyncio.to_thread(_raw_drop, router)
    assert b"[DONE]" not in raw


def _raw_drop(router: FakeOpenRouter) -> tuple[type[Exception], bytes]:
    """Read a dropped stream with httpx2 and return the error type and bytes seen."""
    received = bytearray()
    payload = {"model": MODEL, "messages": user("[[drop=2]]"), "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx2.Client(timeout=10.0) as client:
        try:
            with client.stream(
                "POST", f"{router.base_url}/chat/completions", json=payload, headers=headers
            ) as response:
                for part in response.iter_raw():
                    received += part
        except httpx2.TransportError as exc:
            return type(exc), bytes(received)
    pytest.fail("dropped stream ended cleanly")


@pytest.mark.asyncio
async def test_garbage_and_bad_bytes_break_parsing(router: FakeOpenRouter) -> None:
    text = "then garbage [[garbage=3]]"
    partial, error = await collect_until_error(router, text)
    assert partial == expected_reply(text, 3)
    assert isinstance(error, ValueError)
    text = "then bad bytes [[badbytes=2]]"
    partial, error = await collect_until_error(router, text)
    assert partial == expected_reply(text, 2)
    assert isinstance(error, UnicodeDecodeError)


def test_badshape_and_truncate_end_the_body_cleanly(router: FakeOpenRouter) -> None:
    _, raw = raw_stream(router, "odd shape [[badshape=2]]")
    events = sse_events(raw)
    assert events[-1] == 'data: {"id": "gen-bad", "choices": 1}'
    _, raw = raw_stream(router, "cut [[truncate=2]]")
    payloads = [json.loads(e.removeprefix("data: ")) for e in sse_events(raw)[1:]]
    assert "".join(p["choices"][0]["delta"]["content"] for p in payloads) == expected_reply(
        "cut", 2
    )
    assert all(p["choices"][0].get("finish_reason") is None for p in payloads)


@pytest.mark.asyncio
async def test_stall_is_detected_and_released_on_disconnect(router: FakeOpenRouter) -> None:
    text = "stall here [[stall=3]]"
    async with make_client(router) as client:
        stream = await client.chat.completions.create(model=MODEL, messages=user(text), stream=True)
        parts: list[str] = []
        iterator = stream.__aiter__()
        for _ in range(4):
            chunk = await asyncio.wait_for(anext(iterator), 5.0)
            parts.append(chunk.choices[0].delta.content or "")
        assert "".join(parts) == expected_reply(text, 3)
        assert router.active_streams >= 1
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(iterator), 0.5)
        await stream.close()
    deadline = time.monotonic() + 5.0
    while router.active_streams and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert router.active_streams == 0


@pytest.mark.asyncio
async def test_stop_ends_open_streams_promptly() -> None:
    fake = FakeOpenRouter()
    fake.start()
    try:
        async with AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0) as client:
            stream = await client.chat.completions.create(
                model=MODEL, messages=user("[[stall=1]]"), stream=True
            )
            iterator = stream.__aiter__()
            await asyncio.wait_for(anext(iterator), 5.0)
            await asyncio.wait_for(asyncio.to_thread(fake.stop), 60)  # stop is not blocked
            with pytest.raises((StopAsyncIteration, openai.APIError)):
                while True:
                    await asyncio.wait_for(anext(iterator), 5.0)
            await stream.close()
    finally:
        fake.stop()


async def http10_stream(base_url: str, text: str) -> bytes:
    """Stream one completion over a bare HTTP/1.0 socket (cheap enough for 500 at once)."""
    url = httpx2.URL(base_url)
    payload = json.dumps({"model": MODEL, "messages": user(text), "stream": True}).encode()
    head = (
        f"POST {url.path}/chat/completions HTTP/1.0\r\nHost: {url.host}\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(head.encode() + payload)
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status, _, body = raw.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), status
    return body


def sse_content(body: bytes) -> str:
    """Concatenate the content deltas of a raw SSE body."""
    text = []
    for event in sse_events(body):
        if event.startswith("data: {"):
            for choice in json.loads(event.removeprefix("data: "))["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


@pytest.mark.asyncio
async def test_200_concurrent_streams(router: FakeOpenRouter) -> None:
    count = 200
    texts = [f"stream number {i} [[tokens=20]] [[rate=100]]" for i in range(count)]
    bodies = await asyncio.gather(*(http10_stream(router.base_url, t) for t in texts))
    for text, body in zip(texts, bodies, strict=True):
        assert body.endswith(b"data: [DONE]\n\n")
        assert sse_content(body) == expected_reply(text, 20)
    assert len(router.chat_requests()) == count
    assert router.active_streams == 0


@pytest.mark.asyncio
async def test_concurrent_streams_through_sdk(router: FakeOpenRouter) -> None:
    async with make_client(router) as client:

        async def one(i: int) -> bool:
            text = f"sdk stream {i} [[tokens=20]] [[rate=100]]"
            stream = await client.chat.completions.create(
                model=MODEL, messages=user(text), stream=True
            )
            chunks = [chunk async for chunk in stream]
            return content_of(chunks) == expected_reply(text, 20)

        results = await asyncio.gather(*(one(i) for i in range(100)))
    assert all(results)


# ----------------------------------------------------------------------- non-stream


def test_non_streaming_completion(router: FakeOpenRouter) -> None:
    text = "not streamed [[tokens=6]] [[reasoning=1]]"
    with OpenAI(base_url=router.base_url, api_key=KEY, max_retries=0) as client:
        completion = client.chat.completions.create(
            model="anthropic/claude-sonnet-4.5", messages=user(text)
        )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == expected_reply(text, 6)
    assert completion.choices[0].finish_reason == "stop"
    assert getattr(completion.choices[0].message, "reasoning", None) == "think0 "
    assert completion.usage is not None and completion.usage.completion_tokens == 7
    cost = (completion.usage.model_extra or {})["cost"]
    expected = expected_cost("anthropic/claude-sonnet-4.5", len(text) // 4 + 1, 7)
    assert cost == pytest.approx(expected)


# -------------------------------------------------------------------------- records


@pytest.mark.asyncio
async def test_requests_are_recorded(router: FakeOpenRouter) -> None:
    headers = {"HTTP-Referer": "https://chat.example.test", "X-Title": "Fake Test"}
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "record me"},
    ]
    async with make_client(router, default_headers=headers) as client:
        stream = await client.chat.completions.create(
            model="google/gemini-2.5-flash",
            messages=messages,
            temperature=0.3,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for _ in stream:
            pass
    [recorded] = router.wait_for_requests(1)
    assert recorded.path == "/api/v1/chat/completions"
    assert recorded.headers["http-referer"] == "https://chat.example.test"
    assert recorded.headers["x-title"] == "Fake Test"
    assert recorded.headers["authorization"] == f"Bearer {KEY}"
    assert recorded.body["model"] == "google/gemini-2.5-flash"
    assert recorded.body["temperature"] == 0.3
    assert recorded.body["messages"] == messages
    assert recorded.body["stream"] is True
    assert router.chat_requests() == [recorded]
    router.reset()
    assert router.requests == []
    with pytest.raises(TimeoutError):
        router.wait_for_requests(1, timeout=0.1)


# -------------------------------------------------------------------------- catalog


def test_catalog_contents(router: FakeOpenRouter) -> None:
    response = get(router, "/models")
    assert response.status_code == 200
    models = {m["id"]: m for m in response.json()["data"]}
    assert 14 <= len(models) <= 20
    for model_id in (
        "openai/gpt-4o",
        "openai/gpt-4o-mini",
        "anthropic/claude-sonnet-4.5",
        "google/gemini-2.5-flash",
        "meta-llama/llama-3.3-70b-instruct",
        "deepseek/deepseek-r1",
        "mistralai/mistral-small-3.2-24b-instruct",
        "qwen/qwen3-235b-a22b",
        "meta-llama/llama-3.3-8b-instruct:free",
        "deepseek/deepseek-r1:free",
        "evil/model",
    ):
        assert model_id in models
    price_keys = {"prompt", "completion", "request", "image", "internal_reasoning"}
    for model in models.values():
        assert {"id", "name", "created", "description", "context_length"} <= set(model)
        assert {"input_modalities", "output_modalities", "tokenizer"} <= set(model["architecture"])
        assert price_keys | {"input_cache_read"} <= set(model["pricing"])
        assert all(isinstance(v, str) for v in model["pricing"].values())
        assert {"context_length", "max_completion_tokens", "is_moderated"} <= set(
            model["top_provider"]
        )
        assert isinstance(model["supported_parameters"], list)
    gpt4o = models["openai/gpt-4o"]
    assert gpt4o["name"] == "OpenAI: GPT-4o"
    assert gpt4o["context_length"] == 128000
    assert gpt4o["pricing"]["prompt"] == "0.0000025"
    assert gpt4o["pricing"]["completion"] == "0.00001"
    for free in ("meta-llama/llama-3.3-8b-instruct:free", "deepseek/deepseek-r1:free"):
        assert set(models[free]["pricing"].values()) == {"0"}
    assert "reasoning" in models["deepseek/deepseek-r1"]["supported_parameters"]

    # Varied capabilities, for the picker's filters (and attachments, reasoning effort).
    def has(model: dict[str, Any], where: str, what: str) -> bool:
        return what in model["architecture"][where]

    vision = [m for m in models.values() if has(m, "input_modalities", "image")]
    text_only = [m for m in models.values() if not has(m, "input_modalities", "image")]
    assert len(vision) >= 3 and len(text_only) >= 3
    assert [m["id"] for m in models.values() if has(m, "output_modalities", "image")] == [
        "google/gemini-2.5-flash-image"
    ]
    reasoning = [m for m in models.values() if "reasoning" in m["supported_parameters"]]
    assert 3 <= len(reasoning) < len(models)
    free = [m for m in models.values() if m["id"].endswith(":free")]
    assert any(has(m, "input_modalities", "image") for m in free)
    assert len({m["context_length"] for m in models.values()}) >= 6
    assert len({m["pricing"]["prompt"] for m in models.values()}) >= 6
    assert models["evil/model"]["name"] == "<img src=x onerror=alert(1)>Evil <b>Model</b>"
    assert len(CATALOG) == len(models)
    assert router.catalog_requests and router.requests == []


@pytest.mark.asyncio
async def test_catalog_through_sdk(router: FakeOpenRouter) -> None:
    async with make_client(router) as client:
        ids = [model.id async for model in client.models.list()]
    assert "openai/gpt-4o" in ids


def test_catalog_modes(router: FakeOpenRouter) -> None:
    router.catalog_mode = "error500"
    response = get(router, "/models")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == 500

    router.catalog_mode = "invalid_json"
    response = get(router, "/models")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)

    router.catalog_mode = "huge"
    response = get(router, "/models")
    assert len(response.content) >= 20_000_000
    assert "openai/gpt-4o" in {m["id"] for m in response.json()["data"]}

    router.catalog_mode = "slow"
    with pytest.raises(httpx2.TimeoutException):
        get(router, "/models", timeout=0.3)

    with pytest.raises(ValueError, match="catalog_mode"):
        router.catalog_mode = "bogus"
    router.reset()
    assert router.catalog_mode == "ok"
    assert get(router, "/models").status_code == 200


# ---------------------------------------------------------------------------- /key


def test_key_endpoint(router: FakeOpenRouter) -> None:
    def key_info(key: str | None) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return get(router, "/key", headers=headers)

    response = key_info("sk-or-v1-abcdef1234567890xyz")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["label"] == "sk-or-v1-abc...xyz"
    assert (data["limit"], data["limit_remaining"], data["usage"]) == (10.0, 7.5, 2.5)
    assert data["is_free_tier"] is False
    assert data["rate_limit"] == {"requests": 20, "interval": "10s"}

    data = key_info("sk-or-v1-free-tier-key").json()["data"]
    assert data["is_free_tier"] is True
    assert data["limit"] is None and data["limit_remaining"] is None

    response = key_info("sk-or-v1-invalid")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 401
    assert key_info(None).status_code == 401
    recorded = router.wait_for_requests(4)
    assert [r.path for r in recorded] == ["/api/v1/key"] * 4
    assert recorded[0].body == {}


def test_unknown_path_is_json_404(router: FakeOpenRouter) -> None:
    response = get(router, "/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == 404


# ------------------------------------------------------------------------ attachments


def _with_parts(*parts: dict[str, Any]) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": [{"type": "text", "text": "look [[tokens=30]]"}, *parts]}]


@pytest.mark.asyncio
async def test_the_model_says_what_it_saw_and_the_fake_tells_the_test(
    router: FakeOpenRouter,
) -> None:
    image = {"type": "image_url", "image_url": {"url": _png_url(80, 60)}}
    pdf = {"type": "file", "file": {"filename": "report.pdf", "file_data": PDF_URL}}
    reply, _ = await collect(router, "", messages=_with_parts(image, pdf))
    assert reply == "Echo: look [saw: image/png 80x60, report.pdf]" + reply.split("]", 1)[1]
    assert router.received_images() == [("image/png", 80, 60)]
    assert [(f.kind, f.name) for f in router.received_files()] == [
        ("image", ""),
        ("pdf", "report.pdf"),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("part", "fault"),
    [
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}, "bytes are"),
        ({"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}, "data URL"),
        (
            {
                "type": "image_url",
                "image_url": {"url": "data:image/jpeg;base64," + _png_url().split(",", 1)[1]},
            },
            "declared image/jpeg",
        ),
        ({"type": "image_url", "image_url": {"url": _png_url(1600, 10)}}, "long side"),
        ({"type": "file", "file": {"filename": "a.pdf", "file_data": _png_url()}}, "PDF"),
        ({"type": "input_audio", "input_audio": {}}, "unknown content part"),
    ],
)
async def test_content_parts_a_provider_would_refuse_are_400(
    router: FakeOpenRouter, part: dict[str, Any], fault: str
) -> None:
    async with make_client(router) as client:
        with pytest.raises(openai.BadRequestError, match=fault):
            await client.chat.completions.create(
                model=MODEL, messages=_with_parts(part), stream=True
            )


@pytest.mark.asyncio
async def test_images_directive_streams_pictures_before_the_text_and_bills_them(
    router: FakeOpenRouter,
) -> None:
    model = "google/gemini-2.5-flash-image"
    status, body = raw_stream(
        router,
        "draw a cat [[images=2]] [[badimage=1]] [[tokens=3]]",
        model=model,
        modalities=["image", "text"],
    )
    assert status.status_code == 200
    chunks = [
        json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {")
    ]
    urls = [
        image["image_url"]["url"]
        for chunk in chunks
        for choice in chunk["choices"]
        for image in choice["delta"].get("images", [])
    ]
    assert len(urls) == 3 and urls[-1] == BAD_IMAGE_URL
    first = base64.b64decode(urls[0].split(",", 1)[1])
    assert first == drawn_png(0)
    with Image.open(io.BytesIO(first)) as picture:
        assert picture.size == (DRAWN_IMAGE_SIDE, DRAWN_IMAGE_SIDE)
    first_text = next(
        i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["delta"].get("content")
    )
    last_image = max(
        i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["delta"].get("images")
    )
    assert last_image < first_text
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 3 + 3 * IMAGE_COMPLETION_TOKENS
    assert usage["cost"] == pytest.approx(
        expected_cost(model, usage["prompt_tokens"], usage["completion_tokens"])
    )


@pytest.mark.asyncio
async def test_images_directive_without_streaming_puts_them_on_the_message(
    router: FakeOpenRouter,
) -> None:
    async with make_client(router) as client:
        response = await client.chat.completions.create(
            model="google/gemini-2.5-flash-image", messages=user("draw [[images=1]]")
        )
    images = response.choices[0].message.model_extra["images"]  # type: ignore[index]
    assert images[0]["image_url"]["url"].startswith("data:image/png;base64,")


# ------------------------------------------------------------------------------ CLI


def test_cli_prints_ready_and_stops_on_sigterm() -> None:
    command = [
        sys.executable,
        "-m",
        "tests.fakes.openrouter",
        "--port",
        "0",
        "--tokens-per-second",
        "1000",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE)  # noqa: S603
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30.0)
        assert ready, "the CLI did not print READY in time"
        line = process.stdout.readline().decode().strip()
        assert line.startswith("READY http://127.0.0.1:")
        base_url = line.removeprefix("READY ")
        assert base_url.endswith("/api/v1")
        with OpenAI(base_url=base_url, api_key=KEY, max_retries=0) as client:
            chunks = list(
                client.chat.completions.create(
                    model=MODEL, messages=user("cli [[tokens=3]]"), stream=True
                )
            )
        assert content_of(chunks) == expected_reply("cli", 3)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()


# -- web search, reasoning effort, options echo (issue 17) ------------------------------------

SEARCH = [{"type": "openrouter:web_search", "parameters": {"max_results": 4}}]


def _annotations_in(raw: bytes) -> tuple[list[Any], list[Any]]:
    """(annotations on deltas, annotations on final messages) of a raw SSE body."""
    on_deltas: list[Any] = []
    on_messages: list[Any] = []
    for event in sse_events(raw):
        payload = event.removeprefix("data: ")
        if not payload.startswith("{"):
            continue
        for choice in json.loads(payload).get("choices", []):
            on_deltas.extend((choice.get("delta") or {}).get("annotations") or [])
            on_messages.extend((choice.get("message") or {}).get("annotations") or [])
    return on_deltas, on_messages


def _usage_in(raw: bytes) -> dict[str, Any]:
    events = [json.loads(e.removeprefix("data: ")) for e in sse_events(raw) if "usage" in e]
    return events[-1]["usage"]


def test_a_searched_answer_cites_its_sources_after_the_text_and_bills_the_search(
    router: FakeOpenRouter,
) -> None:
    _, raw = raw_stream(router, "news [[tokens=3]]", tools=SEARCH)
    on_deltas, on_messages = _annotations_in(raw)
    urls = [a["url_citation"]["url"] for a in on_deltas]
    assert urls == [f"https://example.com/source-{n}" for n in (1, 2, 3)]
    assert on_messages == on_deltas  # both places by default: a client must dedupe
    assert on_deltas[0]["type"] == "url_citation" and on_deltas[0]["url_citation"]["title"]
    usage = _usage_in(raw)
    words = prompt_tokens(user("news [[tokens=3]]"))
    assert usage["cost"] == pytest.approx(expected_cost(MODEL, words, 3) + 4 * 0.004)
    assert usage["server_tool_use"] == {"web_search_requests": 1}
    _, plain = raw_stream(router, "news [[tokens=3]]")
    assert _annotations_in(plain) == ([], []) and "server_tool_use" not in _usage_in(plain)


@pytest.mark.parametrize(("place", "deltas", "messages"), [("delta", 3, 0), ("message", 0, 3)])
def test_sources_can_come_on_a_late_delta_or_on_a_final_message_alone(
    router: FakeOpenRouter, place: str, deltas: int, messages: int
) -> None:
    _, raw = raw_stream(router, f"news [[tokens=3]] [[citations={place}]]", tools=SEARCH)
    on_deltas, on_messages = _annotations_in(raw)
    assert (len(on_deltas), len(on_messages)) == (deltas, messages)


def test_a_hostile_search_cites_script_and_data_urls(router: FakeOpenRouter) -> None:
    _, raw = raw_stream(router, "news [[tokens=3]] [[hostile=1]]", tools=SEARCH)
    urls = [a["url_citation"]["url"] for a in _annotations_in(raw)[0]]
    assert "javascript:alert(1)" in urls
    assert any(url.startswith("data:") for url in urls)


async def test_the_answer_can_say_what_the_request_asked_for(router: FakeOpenRouter) -> None:
    text, _ = await collect(
        router,
        "what did you get? [[options=1]] [[tokens=40]]",
        model="deepseek/deepseek-r1",
        max_tokens=30,
        extra_body={"tools": SEARCH, "reasoning": {"effort": "high"}},
    )
    assert text.startswith(
        "Echo: [received: tools=openrouter:web_search max_results=4 reasoning=high max_tokens=30]"
    )
    assert router.received_options() == {
        "tools": SEARCH,
        "reasoning": {"effort": "high"},
        "max_tokens": 30,
    }
    text, _ = await collect(router, "and now? [[options=1]] [[tokens=6]]")
    assert text.startswith("Echo: [received: none]") and router.received_options() == {}


async def test_a_reasoning_model_thinks_for_the_effort_asked_and_others_do_not(
    router: FakeOpenRouter,
) -> None:
    def thoughts(chunks: list[ChatCompletionChunk]) -> int:
        return sum(
            1 for c in chunks if c.choices and getattr(c.choices[0].delta, "reasoning", None)
        )

    high = {"reasoning": {"effort": "high"}}
    _, chunks = await collect(
        router, "hm [[tokens=2]]", model="deepseek/deepseek-r1", extra_body=high
    )
    assert thoughts(chunks) == 8
    _, chunks = await collect(
        router,
        "hm [[tokens=2]]",
        model="deepseek/deepseek-r1",
        extra_body={"reasoning": {"effort": "low"}},
    )
    assert thoughts(chunks) == 2
    _, chunks = await collect(router, "hm [[tokens=2]]", model=MODEL, extra_body=high)
    assert thoughts(chunks) == 0  # gpt-4o takes no reasoning
    _, chunks = await collect(router, "hm [[tokens=2]]", model="deepseek/deepseek-r1")
    assert thoughts(chunks) == 0  # not asked


def test_the_catalog_has_reasoning_models_and_answer_length_caps() -> None:
    caps = [m["top_provider"]["max_completion_tokens"] for m in CATALOG]
    assert any(isinstance(cap, int) for cap in caps) and None in caps
    assert any("reasoning" in m["supported_parameters"] for m in CATALOG)
