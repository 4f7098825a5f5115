"""`app.py` with experimental patches applied from outside, to measure suggested fixes.

Bench-only: nothing here is used by the app. Run through the bench, e.g.

    .venv/bin/python bench/stream_overhead.py --quick --app-script bench/whatif_app.py \
        --app-env WHATIF=raw_sse,lazy_session

WHATIF is a comma-separated list of:

* raw_sse: replace `chatlib.chat.stream_chat` with a prototype that lets the openai SDK send
  the request (auth, retries, status errors stay the SDK's) but parses the SSE body itself:
  one network read -> orjson per `data:` line -> at most one TextDelta/ReasoningDelta per read,
  instead of one pydantic `ChatCompletionChunk` and one event per token.
* lazy_session: make Gradio build a session's per-block config on demand. Every API call is a
  new session, and `SessionState.__init__` renders the config of every block of the page
  (inspect.signature, JSON schemas) although a streaming API call needs none of it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from copy import copy
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import app  # noqa: E402
from chatlib import chat, errors  # noqa: E402
from chatlib.client import (  # noqa: E402
    Clock,
    Finished,
    ReasoningDelta,
    StreamEvent,
    StreamFailed,
    TextDelta,
    Usage,
    map_api_error,
)


async def stream_chat_raw(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: list[dict[str, str]],
    temperature: float,
    idle_timeout: float,
    clock: Clock = time.monotonic,
    extra_body: Mapping[str, Any] | None = None,
) -> AsyncIterator[StreamEvent]:
    """Same events as `chatlib.client.stream_chat`, batched per network read."""
    started_at = clock()
    first_token_at: float | None = None
    generation_id: str | None = None
    finish_reason: str | None = None

    def failed(error: errors.UpstreamError) -> StreamFailed:
        return StreamFailed(
            error=error,
            generation_id=generation_id,
            ttft_ms=None if first_token_at is None else (first_token_at - started_at) * 1000,
            latency_ms=(clock() - started_at) * 1000,
        )

    request = client.chat.completions.with_streaming_response.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        temperature=temperature,
        stream=True,
        extra_body=dict(extra_body or {}),
    )
    try:
        async with asyncio.timeout(idle_timeout):
            response = await request.__aenter__()
    except openai.APIError as exc:
        yield failed(map_api_error(exc, model=model, started=False))
        return
    except TimeoutError:
        yield failed(errors.UpstreamTimeout("OpenRouter sent nothing in time.", status=408))
        return

    reads = response.iter_bytes().__aiter__()
    buffer = b""
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    data = await anext(reads)
            except StopAsyncIteration:
                break
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            text: list[str] = []
            reasoning: list[str] = []
            usage: dict[str, Any] | None = None
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    continue
                chunk = orjson.loads(payload)
                generation_id = generation_id or chunk.get("id")
                if chunk.get("error"):
                    message = str((chunk["error"] or {}).get("message") or "provider error")
                    raise _MidStreamError(message)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if isinstance(delta.get("reasoning"), str) and delta["reasoning"]:
                        reasoning.append(delta["reasoning"])
                    if delta.get("content"):
                        text.append(delta["content"])
                    finish_reason = choice.get("finish_reason") or finish_reason
            if (text or reasoning) and first_token_at is None:
                first_token_at = clock()
            if reasoning:
                yield ReasoningDelta("".join(reasoning))
            if text:
                yield TextDelta("".join(text))
            if usage:
                details = usage.get("completion_tokens_details") or {}
                cost = usage.get("cost")
                yield Usage(
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0),
                    reasoning_tokens=int(details.get("reasoning_tokens") or 0),
                    cost_usd=float(cost) if isinstance(cost, int | float) else None,
                )
        yield Finished(
            finish_reason=finish_reason,
            generation_id=generation_id,
            ttft_ms=None if first_token_at is None else (first_token_at - started_at) * 1000,
            latency_ms=(clock() - started_at) * 1000,
        )
    except TimeoutError:
        yield failed(errors.StreamStalled("The answer stalled.", code="stalled"))
    except _MidStreamError as exc:
        yield failed(errors.StreamInterrupted(f"The answer was interrupted: {exc}."))
    except (httpx.HTTPError, openai.APIError):
        yield failed(errors.StreamInterrupted("The connection was lost mid-answer."))
    except ValueError:
        yield failed(errors.StreamInterrupted("OpenRouter sent a malformed stream."))
    finally:
        await request.__aexit__(None, None, None)


class _MidStreamError(Exception):
    pass


def patch_raw_sse() -> None:
    chat.stream_chat = stream_chat_raw  # type: ignore[assignment]


def patch_lazy_session() -> None:
    from gradio import state_holder

    cls = state_holder.SessionState

    def __init__(self: Any, blocks: Any) -> None:  # noqa: N807
        self.blocks_config = copy(blocks.default_config)
        self._lazy_block_ids = [k for k in self.blocks_config.blocks if k in blocks.blocks]
        self.config_values = {}
        self.state_data = {}
        self._state_ttl = {}
        self.is_closed = False
        self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600

    def components(self: Any) -> Iterator[dict[str, Any]]:
        # Deep links need every block's config: build the ones not built yet, in block order.
        for key in self._lazy_block_ids:
            if key not in self.config_values:
                block = self.blocks_config.blocks[key]
                self.config_values[key] = self.blocks_config.config_for_block(key, [], block)
        for config in self.config_values.values():
            if config:
                yield config

    cls.__init__ = __init__  # type: ignore[method-assign]
    cls.components = property(components)  # type: ignore[attr-defined]


PATCHES = {"raw_sse": patch_raw_sse, "lazy_session": patch_lazy_session}


def main() -> None:
    for name in filter(None, (n.strip() for n in os.environ.get("WHATIF", "").split(","))):
        PATCHES[name]()
        sys.stderr.write(f"whatif: applied {name}\n")
    app.main()


if __name__ == "__main__":
    main()
