"""CPU cost of turning upstream SSE bytes into text deltas, per chunk, three ways.

No network and no Gradio: one recorded fake-OpenRouter stream is replayed through
`httpx.MockTransport`, so only parsing is measured, in this process:

* raw (baseline): httpx `aiter_lines()` + `orjson.loads` + pick `choices[0].delta.content`;
* sdk_raw: the SDK sends the request (`with_streaming_response`), the lines are parsed as in raw;
* sdk: `openai.AsyncOpenAI(...).chat.completions.create(stream=True)`, iterating chunks;
* app: `chatlib.client.stream_chat` (the app's code path: SDK + per-chunk idle timeout + events).

    .venv/bin/python bench/upstream_parse_cost.py [--tokens 200] [--rounds 30]

Prints microseconds per chunk and ratios against raw from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import openai
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatlib.client import TextDelta, stream_chat  # noqa: E402
from tests.fakes.openrouter import FakeOpenRouter, expected_reply  # noqa: E402

KEY = "sk-or-v1-BENCHKEY0000notasecret0000cafe"


def record_stream(tokens: int) -> tuple[bytes, str]:
    """One real SSE body from the fake (unpaced), and the text it carries."""
    message = f"parse cost [[tokens={tokens}]] [[rate=0]] [[delay=0]]"
    with FakeOpenRouter(record=False) as fake:
        response = httpx.post(
            f"{fake.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {KEY}"},
            json={
                "model": "openai/gpt-4o",
                "messages": [{"role": "user", "content": message}],
                "stream": True,
            },
            timeout=30,
            trust_env=False,
        )
        response.raise_for_status()
    return response.content, expected_reply(message, tokens)


def mock_client(body: bytes) -> httpx.AsyncClient:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://fake/api/v1")


async def raw(client: httpx.AsyncClient, _sdk: openai.AsyncOpenAI) -> str:
    parts: list[str] = []
    async with client.stream("POST", "/chat/completions", json={"stream": True}) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    parts.append(content)
    return "".join(parts)


async def sdk(_client: httpx.AsyncClient, client: openai.AsyncOpenAI) -> str:
    parts: list[str] = []
    stream = await client.chat.completions.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
    )
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.delta is not None and choice.delta.content:
                parts.append(choice.delta.content)
    return "".join(parts)


async def sdk_raw(_client: httpx.AsyncClient, client: openai.AsyncOpenAI) -> str:
    # The SDK still sends the request (auth, retries, status errors); the body is parsed here.
    parts: list[str] = []
    async with client.chat.completions.with_streaming_response.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
    ) as response:
        async for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    parts.append(content)
    return "".join(parts)


async def app(_client: httpx.AsyncClient, client: openai.AsyncOpenAI) -> str:
    parts: list[str] = []
    async for event in stream_chat(
        client,
        model="openai/gpt-4o",
        messages=[{"role": "user", "content": "x"}],
        temperature=0.3,
        idle_timeout=60,
    ):
        if isinstance(event, TextDelta):
            parts.append(event.text)
    return "".join(parts)


Way = Callable[[httpx.AsyncClient, openai.AsyncOpenAI], Awaitable[str]]


async def measure(way: Way, body: bytes, expected: str, rounds: int) -> list[float]:
    """CPU seconds per stream, one value per round (after one warm-up round)."""
    http = mock_client(body)
    sdk_client = openai.AsyncOpenAI(
        base_url="http://fake/api/v1", api_key=KEY, max_retries=0, http_client=mock_client(body)
    )
    samples: list[float] = []
    try:
        for i in range(rounds + 1):
            started = time.process_time()
            text = await way(http, sdk_client)
            elapsed = time.process_time() - started
            if text != expected:
                raise RuntimeError(f"{way.__name__}: wrong text ({len(text)} chars)")
            if i:
                samples.append(elapsed)
    finally:
        await http.aclose()
        await sdk_client.close()
    return samples


async def main_async(args: argparse.Namespace) -> None:
    body, expected = record_stream(args.tokens)
    chunks = body.count(b"\ndata: ") + 1
    print(f"one stream: {args.tokens} tokens, {chunks} SSE events, {len(body):,} bytes")
    results: dict[str, float] = {}
    # Interleave the ways so machine noise hits all of them alike.
    ways: dict[str, Way] = {"raw": raw, "sdk_raw": sdk_raw, "sdk": sdk, "app": app}
    per_way: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.blocks):
        for name, way in ways.items():
            per_way[name] += await measure(way, body, expected, args.rounds)
    for name, samples in per_way.items():
        results[name] = statistics.median(samples) / chunks * 1e6
    base = results["raw"]
    for name, us in results.items():
        print(f"  {name:7}: {us:7.1f} us per SSE event  (x{us / base:.1f} raw)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10, help="streams per way per block")
    parser.add_argument("--blocks", type=int, default=3, help="interleaved blocks")
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
