"""Local stand-in for the OpenRouter API (real HTTP and SSE on loopback) for tests.

Prompt keywords, `[[key=value]]` anywhere in the last user message (also settable for every
request, or one model's, with `FakeOpenRouter.set_defaults`):

- `tokens=N`, `rate=T` (tokens/s), `delay=S`: the answer's length and pace.
- `reasoning=N`: N reasoning chunks before the text. Without it, a request with
  `reasoning: {"effort": ...}` to a model whose catalog entry takes `reasoning` thinks for
  REASONING_BY_EFFORT[effort] chunks.
- `error=CODE` (`retry_after=S` for 429), `midstream_error=N` (`midstream_code=CODE`), `stall=N`,
  `drop=N`, `garbage=N`, `badbytes=N`, `badshape=N`, `truncate=N`: failures, before the
  answer or after N text chunks.
- `images=N`, `badimage=N`: pictures drawn (data URLs in `delta.images`) before the text.
- `options=1`: the answer starts by saying what the request asked for, e.g.
  `[received: tools=openrouter:web_search max_results=5 reasoning=high max_tokens=100
  plugins=file-parser]` (`none` when nothing), so a browser test can see it reached upstream.
- `citations=delta|message|both|none` (default `both`): where a web search's sources
  (`url_citation` annotations) come: on a late delta, on a final `message`, or both (same
  URLs twice: the client must dedupe).
- `hostile=1`: the sources also hold a `javascript:alert(1)` URL (with a title) and a
  `data:` URL.

A request with the `openrouter:web_search` server tool gets min(max_results, 3) sources
(https://example.com/source-N, "Source N") after its text, and its usage `cost` grows by
SEARCH_COST_PER_RESULT per result asked for (`server_tool_use.web_search_requests` = 1).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import functools
import io
import math
import re
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from http import HTTPStatus
from types import FrameType
from typing import Any

import orjson
from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes._server import BackgroundServer, Fake

__all__ = [
    "CATALOG",
    "CATALOG_MODES",
    "DIRECTIVE_KEYS",
    "HOSTILE_SOURCES",
    "REASONING_BY_EFFORT",
    "SEARCH_COST_PER_RESULT",
    "WEB_SEARCH_TOOL",
    "PROVIDER_NAME",
    "FakeOpenRouter",
    "RecordedRequest",
    "SeenFile",
    "check_content",
    "describe_options",
    "expected_cost",
    "expected_reply",
    "main",
    "prompt_tokens",
    "reply_chunks",
    "search_annotations",
    "strip_directives",
    "web_search_results",
]

API_PREFIX = "/api/v1"
PROVIDER_NAME = "FakeProvider"
CATALOG_MODES = ("ok", "error500", "invalid_json", "slow", "huge")
DIRECTIVE_RE = re.compile(r"\[\[(\w+)=([^\]]*)\]\]")
DIRECTIVE_KEYS = frozenset(
    {
        "tokens",
        "rate",
        "delay",
        "reasoning",
        "error",
        "midstream_error",
        "midstream_code",
        "stall",
        "drop",
        "garbage",
        "badbytes",
        "badshape",
        "truncate",
        "retry_after",
        "images",
        "badimage",
        "options",
        "citations",
        "hostile",
    }
)
CITATION_PLACES = ("delta", "message", "both", "none")
WEB_SEARCH_TOOL = "openrouter:web_search"
SEARCH_COST_PER_RESULT = 0.004  # USD, added to the usage cost per result asked for
SEARCH_SOURCES = 3  # at most this many sources per searched answer
DEFAULT_MAX_RESULTS = 5
REASONING_BY_EFFORT = {"low": 2, "medium": 4, "high": 8}
HOSTILE_SOURCES = (
    {"url": "javascript:alert(1)", "title": "Click <b>me</b>"},
    {"url": "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", "title": ""},
)
IMAGE_MAX_SIDE = 1568  # the app's default IMAGE_MAX_SIDE; FakeOpenRouter.image_max_side
DRAWN_IMAGE_SIDE = 64  # the pictures `[[images=N]]` streams
IMAGE_COMPLETION_TOKENS = 1290  # what one drawn picture adds to completion_tokens
BAD_IMAGE_URL = "data:image/png;base64,not*base64!"

PROCESSING_COMMENT = b": OPENROUTER PROCESSING\n\n"
DONE_LINE = b"data: [DONE]\n\n"
GARBAGE_LINE = b"data: {not json\n\n"
BAD_BYTES_LINE = b"data: \xff\xfe\n\n"
BAD_SHAPE_LINE = b'data: {"id": "gen-bad", "choices": 1}\n\n'

_KEEPALIVE_INTERVAL = 0.5
_MIN_SLEEP = 0.0005
_LONG_SLEEP = 0.25
_FLUSH_BYTES = 16 * 1024
_STALL_SECONDS = 600.0
_SLOW_CATALOG_SECONDS = 30.0
_ABORT_GRACE_SECONDS = 5.0
_HUGE_CATALOG_BYTES = 20 * 1024 * 1024
_FALLBACK_COMPLETION_PRICE = 0.0001
_JSON = "application/json"

_COMMON_PARAMS = [
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "response_format",
    "structured_outputs",
    "tools",
    "tool_choice",
]
_REASONING_PARAMS = [*_COMMON_PARAMS, "reasoning", "include_reasoning"]
_OPEN_PARAMS = [*_COMMON_PARAMS, "top_k", "min_p", "repetition_penalty", "logit_bias"]


def _model(
    model_id: str,
    name: str,
    *,
    created: int,
    description: str,
    context: int,
    max_completion: int | None,
    tokenizer: str,
    prompt: str,
    completion: str,
    image: str = "0",
    cache_read: str = "0",
    inputs: Sequence[str] = ("text",),
    outputs: Sequence[str] = ("text",),
    moderated: bool = False,
    params: Sequence[str] = _COMMON_PARAMS,
    hf_id: str | None = None,
) -> dict[str, Any]:
    """Build one catalog entry in OpenRouter's /models format."""
    return {
        "id": model_id,
        "canonical_slug": model_id.split(":")[0],
        "hugging_face_id": hf_id,
        "name": name,
        "created": created,
        "description": description,
        "context_length": context,
        "architecture": {
            "modality": "+".join(inputs) + "->" + "+".join(outputs),
            "input_modalities": list(inputs),
            "output_modalities": list(outputs),
            "tokenizer": tokenizer,
            "instruct_type": None,
        },
        "pricing": {
            "prompt": prompt,
            "completion": completion,
            "request": "0",
            "image": image,
            "internal_reasoning": "0",
            "input_cache_read": cache_read,
        },
        "top_provider": {
            "context_length": context,
            "max_completion_tokens": max_completion,
            "is_moderated": moderated,
        },
        "per_request_limits": None,
        "supported_parameters": list(params),
    }


CATALOG: tuple[dict[str, Any], ...] = (
    _model(
        "openai/gpt-4o",
        "OpenAI: GPT-4o",
        created=1715367049,
        description="GPT-4o is OpenAI's flagship multimodal model with text and image inputs.",
        context=128000,
        max_completion=16384,
        tokenizer="GPT",
        prompt="0.0000025",
        completion="0.00001",
        image="0.003613",
        cache_read="0.00000125",
        inputs=("text", "image", "file"),
        moderated=True,
    ),
    _model(
        "openai/gpt-4o-mini",
        "OpenAI: GPT-4o-mini",
        created=1721260800,
        description="GPT-4o mini is OpenAI's affordable small model for fast, lightweight tasks.",
        context=128000,
        max_completion=16384,
        tokenizer="GPT",
        prompt="0.00000015",
        completion="0.0000006",
        image="0.000217",
        cache_read="0.000000075",
        inputs=("text", "image", "file"),
        moderated=True,
    ),
    _model(
        "openai/gpt-4.1",
        "OpenAI: GPT-4.1",
        created=1744651385,
        description="GPT-4.1 is a flagship model for advanced instruction following and coding.",
        context=1047576,
        max_completion=32768,
        tokenizer="GPT",
        prompt="0.000002",
        completion="0.000008",
        cache_read="0.0000005",
        inputs=("image", "text", "file"),
        moderated=True,
    ),
    _model(
        "anthropic/claude-sonnet-4.5",
        "Anthropic: Claude Sonnet 4.5",
        created=1759161676,
        description="Claude Sonnet 4.5 is Anthropic's strongest Sonnet model for agents and code.",
        context=1000000,
        max_completion=64000,
        tokenizer="Claude",
        prompt="0.000003",
        completion="0.000015",
        image="0.0048",
        cache_read="0.0000003",
        inputs=("text", "image", "file"),
        moderated=True,
        params=_REASONING_PARAMS,
    ),
    _model(
        "anthropic/claude-3.5-haiku",
        "Anthropic: Claude 3.5 Haiku",
        created=1730678400,
        description="Claude 3.5 Haiku offers fast responses for interactive chat and sub-agents.",
        context=200000,
        max_completion=8192,
        tokenizer="Claude",
        prompt="0.0000008",
        completion="0.000004",
        cache_read="0.00000008",
        inputs=("text", "image"),
        moderated=True,
    ),
    _model(
        "google/gemini-2.5-flash",
        "Google: Gemini 2.5 Flash",
        created=1750172488,
        description="Gemini 2.5 Flash is Google's workhorse model with built-in thinking.",
        context=1048576,
        max_completion=65535,
        tokenizer="Gemini",
        prompt="0.0000003",
        completion="0.0000025",
        image="0.001238",
        cache_read="0.000000075",
        inputs=("file", "image", "text", "audio", "video"),
        params=_REASONING_PARAMS,
    ),
    _model(
        "google/gemini-2.5-pro",
        "Google: Gemini 2.5 Pro",
        created=1750169544,
        description="Gemini 2.5 Pro is Google's state-of-the-art model for reasoning and coding.",
        context=1048576,
        max_completion=65536,
        tokenizer="Gemini",
        prompt="0.00000125",
        completion="0.00001",
        image="0.00516",
        cache_read="0.00000031",
        inputs=("file", "image", "text", "audio"),
        params=_REASONING_PARAMS,
    ),
    _model(
        "meta-llama/llama-3.3-70b-instruct",
        "Meta: Llama 3.3 70B Instruct",
        created=1733506137,
        description="Llama 3.3 70B is a multilingual instruction-tuned model for dialogue.",
        context=131072,
        max_completion=16384,
        tokenizer="Llama3",
        prompt="0.00000013",
        completion="0.0000004",
        params=_OPEN_PARAMS,
        hf_id="meta-llama/Llama-3.3-70B-Instruct",
    ),
    _model(
        "meta-llama/llama-3.3-8b-instruct:free",
        "Meta: Llama 3.3 8B Instruct (free)",
        created=1746565716,
        description="A lightweight, ultra-fast variant of Llama 3.3 70B for quick responses.",
        context=128000,
        max_completion=4028,
        tokenizer="Llama3",
        prompt="0",
        completion="0",
        params=_OPEN_PARAMS,
    ),
    _model(
        "deepseek/deepseek-r1",
        "DeepSeek: R1",
        created=1737381095,
        description="DeepSeek R1 is an open reasoning model with performance on par with o1.",
        context=163840,
        max_completion=163840,
        tokenizer="DeepSeek",
        prompt="0.0000004",
        completion="0.000002",
        params=[*_REASONING_PARAMS, "top_k", "min_p", "repetition_penalty"],
        hf_id="deepseek-ai/DeepSeek-R1",
    ),
    _model(
        "deepseek/deepseek-r1:free",
        "DeepSeek: R1 (free)",
        created=1737381095,
        description="DeepSeek R1 (free variant); rate limited and may log prompts.",
        context=163840,
        max_completion=None,
        tokenizer="DeepSeek",
        prompt="0",
        completion="0",
        params=_REASONING_PARAMS,
        hf_id="deepseek-ai/DeepSeek-R1",
    ),
    _model(
        "deepseek/deepseek-chat-v3.1",
        "DeepSeek: DeepSeek V3.1",
        created=1755779628,
        description="DeepSeek V3.1 is a hybrid model with thinking and non-thinking modes.",
        context=163840,
        max_completion=None,
        tokenizer="DeepSeek",
        prompt="0.0000002",
        completion="0.0000008",
        params=_REASONING_PARAMS,
        hf_id="deepseek-ai/DeepSeek-V3.1",
    ),
    _model(
        "mistralai/mistral-small-3.2-24b-instruct",
        "Mistral: Mistral Small 3.2 24B",
        created=1750443016,
        description="Mistral Small 3.2 improves instruction following and function calling.",
        context=131072,
        max_completion=None,
        tokenizer="Mistral",
        prompt="0.00000005",
        completion="0.0000001",
        inputs=("image", "text"),
        params=_OPEN_PARAMS,
        hf_id="mistralai/Mistral-Small-3.2-24B-Instruct-2506",
    ),
    _model(
        "qwen/qwen3-235b-a22b",
        "Qwen: Qwen3 235B A22B",
        created=1745875757,
        description="Qwen3-235B-A22B is a mixture-of-experts model with a thinking mode.",
        context=40960,
        max_completion=40960,
        tokenizer="Qwen3",
        prompt="0.00000013",
        completion="0.0000006",
        params=[*_REASONING_PARAMS, "top_k", "min_p"],
        hf_id="Qwen/Qwen3-235B-A22B",
    ),
    _model(
        "x-ai/grok-4",
        "xAI: Grok 4",
        created=1752087689,
        description="Grok 4 is xAI's reasoning model with parallel tool calling.",
        context=256000,
        max_completion=None,
        tokenizer="Grok",
        prompt="0.000003",
        completion="0.000015",
        cache_read="0.00000075",
        inputs=("image", "text"),
        params=_REASONING_PARAMS,
    ),
    _model(
        "google/gemma-3-27b-it:free",
        "Google: Gemma 3 27B (free)",
        created=1741756359,
        description="Gemma 3 is Google's open multimodal model; a free, rate-limited variant.",
        context=96000,
        max_completion=8192,
        tokenizer="Gemini",
        prompt="0",
        completion="0",
        inputs=("text", "image"),
        params=_OPEN_PARAMS,
        hf_id="google/gemma-3-27b-it",
    ),
    _model(
        "google/gemini-2.5-flash-image",
        "Google: Gemini 2.5 Flash Image (Nano Banana) — image generation, editing and "
        "multi-turn visual conversation",
        created=1759870431,
        description="Gemini 2.5 Flash Image draws and edits images from text and pictures.",
        context=32768,
        max_completion=8192,
        tokenizer="Gemini",
        prompt="0.0000003",
        completion="0.0000025",
        image="0.001238",
        inputs=("image", "text"),
        outputs=("image", "text"),
    ),
    _model(
        "openai/o4-mini-high",
        "OpenAI: o4 Mini High",
        created=1744820942,
        description="o4-mini-high is o4-mini with reasoning effort set to high.",
        context=200000,
        max_completion=100000,
        tokenizer="GPT",
        prompt="0.0000011",
        completion="0.0000044",
        inputs=("image", "text", "file"),
        moderated=True,
        params=[p for p in _REASONING_PARAMS if p != "temperature"],
    ),
    _model(
        "evil/model",
        "<img src=x onerror=alert(1)>Evil <b>Model</b>",
        created=1700000000,
        description="<script>alert('xss')</script> A model whose metadata contains <i>HTML</i>.",
        context=8192,
        max_completion=1024,
        tokenizer="Other",
        prompt="0.000001",
        completion="0.000002",
    ),
)

_PRICING: dict[str, dict[str, str]] = {m["id"]: m["pricing"] for m in CATALOG}
_PARAMETERS: dict[str, list[str]] = {m["id"]: m["supported_parameters"] for m in CATALOG}


@dataclass(frozen=True)
class RecordedRequest:
    """One request received by the fake."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    client: tuple[str, int] | None = None  # the caller's address: same port = same connection


@dataclass(frozen=True)
class _Plan:
    """Resolved per-request behaviour."""

    tokens: int
    rate: float
    delay: float
    reasoning: int
    error: int | None = None
    midstream_error: int | None = None
    midstream_code: int = 502
    stall: int | None = None
    drop: int | None = None
    garbage: int | None = None
    badbytes: int | None = None
    badshape: int | None = None
    truncate: int | None = None
    retry_after: str = "7"
    images: int = 0  # pictures streamed (`delta.images`) before the text
    badimage: int = 0  # malformed image data URLs streamed before the text
    options: int = 0  # 1: the answer starts by saying what the request asked for
    citations: str = "both"  # where a web search's sources come (CITATION_PLACES)
    hostile: int = 0  # 1: the sources include javascript: and data: URLs

    def fault(self, content_chunks: int) -> tuple[str, int] | None:
        """Return the earliest stream fault as (kind, content position), or None."""
        best: tuple[str, int] | None = None
        for kind in _FAULTS:
            position = getattr(self, kind)
            if position is None:
                continue
            position = min(position, content_chunks)
            if best is None or position < best[1]:
                best = (kind, position)
        return best


_FAULTS = ("midstream_error", "garbage", "badbytes", "badshape", "stall", "drop", "truncate")


class _DroppedConnectionError(Exception):
    """Raised to make the server close a connection when its transport cannot be found."""


def strip_directives(text: str) -> str:
    """Remove every [[key=value]] directive from text."""
    return DIRECTIVE_RE.sub("", text)


def reply_chunks(user_text: str, tokens: int) -> list[str]:
    """Return the content chunks the fake streams for a prompt."""
    words = ("Echo: " + strip_directives(user_text).strip()).split()
    chunks: list[str] = []
    for i in range(max(tokens, 0)):
        word = words[i] if i < len(words) else f"w{i - len(words) + 1}"
        chunks.append(word if i == 0 else " " + word)
    return chunks


def expected_reply(user_text: str, tokens: int) -> str:
    """Return the exact full text the fake streams for a prompt."""
    return "".join(reply_chunks(user_text, tokens))


def _content_text(content: Any) -> str:
    """Return the text of a message content (string or list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return "\n".join(texts)
    return ""


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Return the prompt token count the fake reports for these messages."""
    chars = sum(len(_content_text(m.get("content"))) for m in messages if isinstance(m, Mapping))
    return chars // 4 + 1


def expected_cost(model: str, prompt: int, completion: int) -> float:
    """Return the usage cost in USD the fake reports for a model and token counts."""
    pricing = _PRICING.get(model) or _PRICING.get(model.split(":")[0])
    if pricing is None:
        return _FALLBACK_COMPLETION_PRICE * completion
    return (
        prompt * float(pricing["prompt"])
        + completion * float(pricing["completion"])
        + float(pricing["request"])
    )


@dataclass(frozen=True)
class SeenFile:
    """A file part the fake received and checked: an image or a PDF."""

    kind: str  # "image" or "pdf"
    mime: str
    name: str  # a PDF's filename; "" for an image (image_url parts carry no name)
    size: int  # decoded bytes
    width: int | None = None
    height: int | None = None

    @property
    def label(self) -> str:
        """How the echo names it: 'image/png 800x600', 'report.pdf'."""
        return f"{self.mime} {self.width}x{self.height}" if self.kind == "image" else self.name


class _BadContent(ValueError):
    """A message content OpenRouter would refuse (400)."""


_DATA_URL_RE = re.compile(r"data:([a-z]+/[A-Za-z0-9.+-]+);base64,(.*)", re.DOTALL)
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)


def _sniffed_mime(data: bytes) -> str | None:
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for magic, mime in _MAGIC if data.startswith(magic)), None)


def _decode_data_url(url: Any, where: str) -> tuple[str, bytes]:
    """(declared MIME, bytes) of a base64 data URL whose MIME matches its bytes."""
    match = _DATA_URL_RE.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        raise _BadContent(f"{where}: expected a base64 data URL")
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _BadContent(f"{where}: the base64 does not decode") from exc
    declared, actual = match.group(1), _sniffed_mime(data)
    if actual != declared:
        raise _BadContent(f"{where}: declared {declared} but the bytes are {actual or 'unknown'}")
    return declared, data


def _check_part(part: Any, where: str, max_side: int) -> SeenFile | None:
    """Check one content part the way a strict provider would; the file it carries."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise _BadContent(f"{where}: a text part needs a string 'text'")
        return None
    if kind == "image_url":
        mime, data = _decode_data_url((part.get("image_url") or {}).get("url"), where)
        if not mime.startswith("image/"):
            raise _BadContent(f"{where}: image_url carries {mime}")
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        if max(width, height) > max_side:
            raise _BadContent(f"{where}: image is {width}x{height}, long side over {max_side}")
        return SeenFile("image", mime, "", len(data), width, height)
    if kind == "file":
        file = part.get("file") or {}
        name = file.get("filename")
        mime, data = _decode_data_url(file.get("file_data"), where)
        if mime != "application/pdf" or not isinstance(name, str) or not name:
            raise _BadContent(f"{where}: a file part needs a filename and a PDF")
        return SeenFile("pdf", mime, name, len(data))
    raise _BadContent(f"{where}: unknown content part type {kind!r}")


def check_content(messages: Sequence[Any], max_side: int = IMAGE_MAX_SIDE) -> list[list[SeenFile]]:
    """The files each message carries, checked; _BadContent (a ValueError) names the fault."""
    seen: list[list[SeenFile]] = []
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        files: list[SeenFile] = []
        if isinstance(content, list):
            if message.get("role") != "user":
                raise _BadContent(f"messages[{index}]: only user messages may carry parts")
            for n, part in enumerate(content):
                found = _check_part(part, f"messages[{index}].content[{n}]", max_side)
                if found is not None:
                    files.append(found)
        elif not isinstance(content, str):
            raise _BadContent(f"messages[{index}]: content must be a string or a list")
        seen.append(files)
    return seen


@functools.cache
def drawn_png(index: int = 0) -> bytes:
    """The PNG `[[images=N]]` streams as picture `index` (64x64, one colour each)."""
    colour = ((40 * index) % 256, 120, 200)
    buffer = io.BytesIO()
    Image.new("RGB", (DRAWN_IMAGE_SIDE, DRAWN_IMAGE_SIDE), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _drawn_urls(plan: _Plan) -> list[str]:
    """The image data URLs a plan streams: the good ones, then the malformed ones."""
    good = [
        f"data:image/png;base64,{base64.b64encode(drawn_png(i)).decode()}"
        for i in range(plan.images)
    ]
    return good + [BAD_IMAGE_URL] * plan.badimage


def _last_user_text(messages: Sequence[Any]) -> str:
    """Return the raw text of the last user message, or an empty string."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _parse_directive(key: str, value: str) -> Any:
    """Convert one directive value, raising ValueError when it is invalid."""
    value = value.strip()
    if key in ("rate", "delay"):
        number = float(value)
        if math.isnan(number) or number < 0:
            raise ValueError(f"{key} must be a non-negative number")
        return number
    if key == "retry_after":
        if not value:
            raise ValueError("retry_after must not be empty")
        return value
    if key == "citations":
        if value not in CITATION_PLACES:
            raise ValueError(f"citations must be one of {', '.join(CITATION_PLACES)}")
        return value
    number = int(value)
    if number < 0:
        raise ValueError(f"{key} must be non-negative")
    if key in ("error", "midstream_code") and not 400 <= number <= 599:
        raise ValueError(f"{key} must be an HTTP status between 400 and 599")
    return number


def _build_plan(directives: Mapping[str, str], *, tokens: int, rate: float) -> _Plan:
    """Build a plan from merged directive strings and the server defaults."""
    values: dict[str, Any] = {"tokens": tokens, "rate": rate, "delay": 0.0, "reasoning": 0}
    known = {f.name for f in fields(_Plan)}
    for key, raw in directives.items():
        if key not in known:
            continue
        try:
            values[key] = _parse_directive(key, raw)
        except ValueError as exc:
            raise ValueError(f"Invalid directive [[{key}={raw}]]: {exc}") from exc
    return _Plan(**values)


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Return a JSON response serialized with orjson."""
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type=_JSON)


def _error(code: int, message: str, metadata: Mapping[str, Any] | None = None) -> Response:
    """Return an OpenRouter-style error response."""
    error: dict[str, Any] = {"code": code, "message": message}
    if metadata is not None:
        error["metadata"] = dict(metadata)
    return _json({"error": error}, status=code)


def _midstream_error(code: int) -> dict[str, Any]:
    """The `error` of a mid-stream error chunk with this code."""
    if code == 402:
        return {
            "code": 402,
            "message": "Insufficient credits. Add more using https://openrouter.ai/settings/credits",
        }
    return {"code": code, "message": "Provider disconnected unexpectedly"}


def _bearer(request: Request) -> str:
    """Return the bearer token of a request, or an empty string."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _auth_error(key: str) -> Response | None:
    """Return a 401 response for a missing or invalid key, else None."""
    if not key:
        return _error(401, "No auth credentials found")
    if "invalid" in key:
        return _error(401, "User not found.")
    return None


def _mask_key(key: str) -> str:
    """Return a key label the way OpenRouter shows it."""
    return f"{key[:12]}...{key[-3:]}" if len(key) > 15 else key


def _new_generation_id() -> str:
    """Return a fresh OpenRouter-style generation id."""
    return f"gen-{int(time.time())}-{secrets.token_hex(10)}"


@functools.cache
def _catalog_bytes() -> bytes:
    """Return the serialized normal catalog."""
    return orjson.dumps({"data": list(CATALOG)})


@functools.cache
def _huge_catalog_bytes() -> bytes:
    """Return a valid catalog JSON body of at least 20 MiB."""
    padding = "Synthetic padding model for oversized catalog tests. " * 40

    def bulk(i: int) -> dict[str, Any]:
        return _model(
            f"bulk/model-{i:05d}",
            f"Bulk: Model {i}",
            created=1700000000 + i,
            description=padding,
            context=32768,
            max_completion=4096,
            tokenizer="Other",
            prompt="0.000001",
            completion="0.000002",
        )

    per_entry = len(orjson.dumps(bulk(0))) + 1
    count = _HUGE_CATALOG_BYTES // per_entry + 1
    return orjson.dumps({"data": [*CATALOG, *(bulk(i) for i in range(count))]})


def describe_options(body: Mapping[str, Any]) -> str:
    """What a request asked for beyond its messages, as `[[options=1]]` says it."""
    said: list[str] = []
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict):
            said.append(f"tools={tool.get('type')}")
            parameters = tool.get("parameters")
            if isinstance(parameters, dict) and "max_results" in parameters:
                said.append(f"max_results={parameters['max_results']}")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict):
        said.append(f"reasoning={reasoning.get('effort')}")
    if "max_tokens" in body:
        said.append(f"max_tokens={body['max_tokens']}")
    plugins = body.get("plugins")
    for plugin in plugins if isinstance(plugins, list) else ():
        if isinstance(plugin, dict):
            said.append(f"plugins={plugin.get('id')}")
    return " ".join(said) or "none"


def web_search_results(body: Mapping[str, Any]) -> int:
    """max_results of the request's `openrouter:web_search` server tool; 0 without one."""
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict) and tool.get("type") == WEB_SEARCH_TOOL:
            parameters = tool.get("parameters")
            wanted = parameters.get("max_results") if isinstance(parameters, dict) else None
            return wanted if isinstance(wanted, int) and wanted > 0 else DEFAULT_MAX_RESULTS
    return 0


def search_annotations(results: int, *, hostile: bool = False) -> tuple[dict[str, Any], ...]:
    """The `url_citation` annotations of a search asking for `results` results."""
    if not results:
        return ()
    pages = [
        {"url": f"https://example.com/source-{n}", "title": f"Source {n}"}
        for n in range(1, min(results, SEARCH_SOURCES) + 1)
    ]
    if hostile:
        pages.extend(HOSTILE_SOURCES)
    return tuple(
        {
            "type": "url_citation",
            "url_citation": {
                **page,
                "content": f"What the page {page['url'][:40]} says.",
                "start_index": 0,
                "end_index": 5,
            },
        }
        for page in pages
    )


def _reasoning_chunks(body: Mapping[str, Any], model: str) -> int:
    """How long a reasoning model thinks for the request's `reasoning.effort` (0: it does not)."""
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    params = _PARAMETERS.get(model) or _PARAMETERS.get(model.split(":")[0]) or ()
    if "reasoning" not in params or not isinstance(effort, str):
        return 0
    return REASONING_BY_EFFORT.get(effort, 0)


def _citation_chunks(fmt: _StreamFormat, gen: _Generation) -> bytes:
    """The chunks carrying a search's sources, after the text (`[[citations=...]]`)."""
    if not gen.annotations:
        return b""
    place = gen.plan.citations
    out = b""
    if place in ("delta", "both"):
        out += fmt.delta({"role": "assistant", "content": "", "annotations": list(gen.annotations)})
    if place in ("message", "both"):
        message = {
            "role": "assistant",
            "content": "".join(gen.chunks),
            "annotations": list(gen.annotations),
        }
        choice = {"index": 0, "delta": {}, "message": message, "finish_reason": None}
        out += fmt.event({"choices": [choice]})
    return out


class _StreamFormat:
    """Pre-serialized pieces of one generation's SSE chunks."""

    def __init__(self, gen_id: str, model: str, created: int) -> None:
        """Serialize the fields shared by every chunk of a generation."""
        self.gen_id = gen_id
        self.model = model
        self.created = created
        head = {
            "id": gen_id,
            "provider": PROVIDER_NAME,
            "model": model,
            "object": "chat.completion.chunk",
            "created": created,
        }
        self._head = b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,"delta":'
        self._tail = b',"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}\n\n'

    def delta(self, delta: Mapping[str, Any]) -> bytes:
        """Return an SSE chunk with the given delta and no finish reason."""
        return self._head + orjson.dumps(delta) + self._tail

    def content(self, token: str) -> bytes:
        """Return an SSE chunk carrying one content token."""
        return (
            self._head + b'{"role":"assistant","content":' + orjson.dumps(token) + b"}" + self._tail
        )

    def reasoning(self, index: int) -> bytes:
        """Return an SSE chunk carrying one reasoning token."""
        text = f"think{index} "
        detail = {"type": "reasoning.text", "text": text, "format": "unknown", "index": 0}
        delta = {"role": "assistant", "content": None, "reasoning": text}
        return self.delta({**delta, "reasoning_details": [detail]})

    def finish(self, reason: str) -> bytes:
        """Return the chunk with an empty delta that carries the finish reason."""
        value = orjson.dumps(reason)
        return (
            self._head
            + b'{},"finish_reason":'
            + value
            + b',"native_finish_reason":'
            + value
            + b',"logprobs":null}]}\n\n'
        )

    def event(self, payload: Mapping[str, Any]) -> bytes:
        """Return an SSE line for an arbitrary chunk sharing this generation's fields."""
        data = {
            "id": self.gen_id,
            "provider": PROVIDER_NAME,
            "model": self.model,
            "object": "chat.completion.chunk",
            "created": self.created,
            **payload,
        }
        return b"data: " + orjson.dumps(data) + b"\n\n"


@dataclass(frozen=True)
class _Generation:
    """Everything needed to answer one chat completion."""

    plan: _Plan
    model: str
    chunks: list[str]
    finish_reason: str
    prompt_tokens: int
    gen_id: str
    created: int
    search_results: int = 0  # max_results of a web search; 0: no search
    annotations: tuple[dict[str, Any], ...] = ()  # url_citation annotations of the search

    def usage(self) -> dict[str, Any]:
        """Return the usage object for a completed generation."""
        completion = (
            len(self.chunks)
            + self.plan.reasoning
            + (self.plan.images + self.plan.badimage) * IMAGE_COMPLETION_TOKENS
        )
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "cost": expected_cost(self.model, self.prompt_tokens, completion)
            + self.search_results * SEARCH_COST_PER_RESULT,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.plan.reasoning},
            **({"server_tool_use": {"web_search_requests": 1}} if self.search_results else {}),
        }


class FakeOpenRouter(Fake):
    """An OpenRouter look-alike served over real HTTP on 127.0.0.1."""

    def __init__(
        self,
        *,
        tokens_per_second: float = 200.0,
        default_tokens: int = 20,
        port: int = 0,
        record: bool = True,
        image_max_side: int = IMAGE_MAX_SIDE,
    ) -> None:
        """Configure the fake; call start() (or use it as a context manager) to serve."""
        self.image_max_side = image_max_side  # larger images are refused (400), like the app's
        self.tokens_per_second = tokens_per_second
        self.default_tokens = default_tokens
        self.port = port
        self.record = record
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.catalog_requests: list[RecordedRequest] = []
        self._catalog_mode = "ok"
        self._defaults: dict[str, str] = {}
        self._model_defaults: dict[str, dict[str, str]] = {}
        self._cond = threading.Condition()
        self._active_streams = 0
        self._closing_event: asyncio.Event | None = None
        self._closing = False
        self.app = Starlette(
            routes=[
                Route(f"{API_PREFIX}/models", self._models, methods=["GET"]),
                Route(f"{API_PREFIX}/key", self._key, methods=["GET"]),
                Route(f"{API_PREFIX}/chat/completions", self._chat, methods=["POST"]),
            ],
            exception_handlers={HTTPException: self._http_exception},
        )
        self._server = BackgroundServer(
            self.app,
            name="fake-openrouter",
            port=port,
            timeout_keep_alive=30,
            limit_concurrency=None,
            backlog=2048,
        )

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> str:
        """Serve in a background thread and return the base URL once connections are accepted."""
        if self._server.running:
            raise RuntimeError("FakeOpenRouter is already running")
        self._closing = False
        self._closing_event = asyncio.Event()
        port = self._server.start()
        self.base_url = f"http://127.0.0.1:{port}{API_PREFIX}"
        return self.base_url

    def stop(self) -> None:
        """Stop serving, ending open streams promptly."""
        self._server.stop(on_loop=self._begin_shutdown)

    def _begin_shutdown(self) -> None:
        """Wake every waiting stream (runs on the server loop)."""
        self._closing = True
        if self._closing_event is not None:
            self._closing_event.set()

    # ------------------------------------------------------------ test helpers

    @property
    def catalog_mode(self) -> str:
        """How GET /models answers: one of CATALOG_MODES."""
        return self._catalog_mode

    @catalog_mode.setter
    def catalog_mode(self, mode: str) -> None:
        if mode not in CATALOG_MODES:
            raise ValueError(f"catalog_mode must be one of {CATALOG_MODES}, not {mode!r}")
        self._catalog_mode = mode

    @property
    def active_streams(self) -> int:
        """Number of SSE responses currently being generated."""
        return self._active_streams

    def reset(self) -> None:
        """Clear recorded requests, directive defaults and the catalog mode."""
        with self._cond:
            self.requests.clear()
            self.catalog_requests.clear()
            self._defaults = {}
            self._model_defaults = {}
        self._catalog_mode = "ok"
        self.image_max_side = IMAGE_MAX_SIDE

    def set_defaults(self, *, for_model: str | None = None, **directives: str | float) -> None:
        """Set directives used when a request does not carry its own (`for_model`: its only)."""
        parsed: dict[str, str] = {}
        for key, value in directives.items():
            if key not in DIRECTIVE_KEYS:
                known = ", ".join(sorted(DIRECTIVE_KEYS))
                raise ValueError(f"unknown directive {key!r}; expected one of {known}")
            parsed[key] = str(value)
        _build_plan(parsed, tokens=self.default_tokens, rate=self.tokens_per_second)
        with self._cond:
            if for_model is not None:
                known = self._model_defaults.get(for_model, {})
                self._model_defaults[for_model] = {**known, **parsed}
                return
            self._defaults = {**self._defaults, **parsed}

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Wait until at least n requests were recorded and return a snapshot of them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= n, timeout=timeout):
                raise TimeoutError(f"expected {n} requests, got {len(self.requests)}")
            return list(self.requests)

    def chat_requests(self) -> list[RecordedRequest]:
        """Return a snapshot of the recorded /chat/completions requests."""
        with self._cond:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def received_files(self, request: RecordedRequest | None = None) -> list[SeenFile]:
        """The images and PDFs a chat request carried (default: the last one), in order."""
        if request is None:
            requests = self.chat_requests()
            if not requests:
                return []
            request = requests[-1]
        messages = request.body.get("messages") or []
        return [file for files in check_content(messages, self.image_max_side) for file in files]

    def received_options(self, request: RecordedRequest | None = None) -> dict[str, Any]:
        """`tools`, `plugins`, `reasoning`, `max_tokens` of a chat request (default: the last);
        the ones it did not carry are left out."""
        if request is None:
            requests = self.chat_requests()
            if not requests:
                return {}
            request = requests[-1]
        keys = ("tools", "plugins", "reasoning", "max_tokens")
        return {key: request.body[key] for key in keys if key in request.body}

    def received_images(self, request: RecordedRequest | None = None) -> list[tuple[str, int, int]]:
        """(MIME, width, height) of each image a chat request carried (default: the last)."""
        return [
            (f.mime, f.width or 0, f.height or 0)
            for f in self.received_files(request)
            if f.kind == "image"
        ]

    def _record(self, target: list[RecordedRequest], request: Request, body: Any) -> None:
        """Append a request to a record list and wake waiters."""
        if not self.record:
            return
        recorded = RecordedRequest(
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body if isinstance(body, dict) else {},
            client=(request.client.host, request.client.port) if request.client else None,
        )
        with self._cond:
            target.append(recorded)
            self._cond.notify_all()

    # ----------------------------------------------------------------- waiting

    async def _wait_closing(self, timeout: float) -> bool:
        """Sleep up to timeout seconds; return True early if the server is stopping."""
        event = self._closing_event
        if event is None:
            await asyncio.sleep(timeout)
            return self._closing
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return self._closing
        return True

    async def _sleep(self, seconds: float) -> bool:
        """Sleep cheaply; return True if the server is stopping."""
        if seconds > _LONG_SLEEP:
            return await self._wait_closing(seconds)
        await asyncio.sleep(seconds)
        return self._closing

    # ---------------------------------------------------------------- handlers

    async def _http_exception(self, _request: Request, exc: Exception) -> Response:
        """Answer routing errors with OpenRouter-style JSON."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return _error(status, HTTPStatus(status).phrase)

    async def _models(self, request: Request) -> Response:
        """GET /models: the model catalog, shaped by catalog_mode."""
        self._record(self.catalog_requests, request, {})
        mode = self._catalog_mode
        if mode == "error500":
            return _error(500, "Internal Server Error")
        if mode == "invalid_json":
            return Response(b'{"data": [{"id": "openai/gpt-4o", "name": ', media_type=_JSON)
        if mode == "slow" and await self._wait_closing(_SLOW_CATALOG_SECONDS):
            return _error(503, "Server is shutting down")
        if mode == "huge":
            return Response(_huge_catalog_bytes(), media_type=_JSON)
        return Response(_catalog_bytes(), media_type=_JSON)

    async def _key(self, request: Request) -> Response:
        """GET /key: information about the calling API key."""
        self._record(self.requests, request, {})
        key = _bearer(request)
        denied = _auth_error(key)
        if denied is not None:
            return denied
        free = "free" in key
        data = {
            "label": _mask_key(key),
            "limit": None if free else 10.0,
            "limit_remaining": None if free else 7.5,
            "limit_reset": None,
            "usage": 2.5,
            "usage_daily": 0.5,
            "usage_weekly": 1.5,
            "usage_monthly": 2.5,
            "byok_usage": 0.0,
            "is_free_tier": free,
            "is_provisioning_key": False,
            "rate_limit": {"requests": 20, "interval": "10s"},
        }
        return _json({"data": data})

    async def _chat(self, request: Request) -> Response:
        """POST /chat/completions: a streamed or complete echo reply."""
        raw = await request.body()
        try:
            body: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self._record(self.requests, request, body)
        denied = _auth_error(_bearer(request))
        if denied is not None:
            return denied
        if not isinstance(body, dict):
            return _error(400, "Invalid JSON body")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "No models provided")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, 'Input required: specify "prompt" or "messages"')
        try:
            seen = check_content(messages, self.image_max_side)
        except (_BadContent, OSError) as exc:  # OSError: Pillow could not read the image
            return _error(400, f"Invalid content: {exc}")
        user_text = _last_user_text(messages)
        directives = {
            **self._defaults,
            **self._model_defaults.get(model, {}),
            **dict(DIRECTIVE_RE.findall(user_text)),
        }
        last_files = next(
            (
                f
                for m, f in zip(reversed(messages), reversed(seen), strict=True)
                if isinstance(m, dict) and m.get("role") == "user"
            ),
            [],
        )
        if last_files:  # the reply says what the model saw, so a page can show it arrived
            user_text = f"{user_text} [saw: {', '.join(f.label for f in last_files)}]"
        try:
            plan = _build_plan(directives, tokens=self.default_tokens, rate=self.tokens_per_second)
        except ValueError as exc:
            return _error(400, str(exc))
        if plan.error is not None:
            return self._error_directive(plan, model, user_text)
        if plan.options:  # first, so a short max_tokens does not cut it off
            user_text = f"[received: {describe_options(body)}] {user_text}"
        if "reasoning" not in directives:
            plan = replace(plan, reasoning=_reasoning_chunks(body, model))
        search_results = web_search_results(body)
        chunks = reply_chunks(user_text, plan.tokens)
        finish_reason = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens <= len(chunks):
            chunks = chunks[:max_tokens]
            finish_reason = "length"
        generation = _Generation(
            plan=plan,
            model=model,
            chunks=chunks,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens(messages),
            gen_id=_new_generation_id(),
            created=int(time.time()),
            search_results=search_results,
            annotations=search_annotations(search_results, hostile=bool(plan.hostile)),
        )
        headers = {"X-Generation-Id": generation.gen_id}
        if body.get("stream") is True:
            return StreamingResponse(
                self._sse(request.scope, generation),
                headers={
                    **headers,
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                },
            )
        return await self._complete(generation, headers)

    def _error_directive(self, plan: _Plan, model: str, user_text: str) -> Response:
        """Return the error response requested by an error directive."""
        code = plan.error or 500
        metadata: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if code == 400:
            message = f"{model} is not a valid model ID"
        elif code == 401:
            message = "No auth credentials found"
        elif code == 402:
            message = "Insufficient credits. Add more using https://openrouter.ai/settings/credits"
        elif code == 403:
            message = "Input was flagged by moderation"
            flagged = strip_directives(user_text).strip()
            metadata = {
                "reasons": ["violence"],
                "flagged_input": flagged if len(flagged) <= 100 else flagged[:100] + "...",
                "provider_name": "OpenAI",
                "model_slug": model,
            }
        elif code == 404:
            message = f"No endpoints found for {model}."
        elif code == 408:
            message = "Request timed out"
        elif code == 429:
            message = "Rate limit exceeded: free-models-per-min"
            headers["Retry-After"] = plan.retry_after
            reset_ms = int((time.time() + 60) * 1000)
            metadata = {
                "headers": {
                    "X-RateLimit-Limit": "20",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(reset_ms),
                },
                "provider_name": None,
            }
        elif code == 502:
            message = "Provider returned error"
            metadata = {"provider_name": PROVIDER_NAME, "raw": "upstream error"}
        elif code == 503:
            message = "No available providers"
        elif code == 500:
            message = "Internal Server Error"
        else:
            try:
                message = HTTPStatus(code).phrase
            except ValueError:
                message = "Upstream error"
        body = {"error": {"code": code, "message": message, "metadata": metadata}}
        return _json(body, status=code, headers=headers)

    async def _complete(self, generation: _Generation, headers: Mapping[str, str]) -> Response:
        """Answer a non-streaming request after the simulated generation time."""
        plan = generation.plan
        produced = len(generation.chunks) + plan.reasoning
        seconds = plan.delay + (produced / plan.rate if plan.rate > 0 else 0.0)
        if seconds > 0 and await self._sleep(seconds):
            return _error(503, "Server is shutting down")
        reasoning = "".join(f"think{i} " for i in range(plan.reasoning)) or None
        message = {
            "role": "assistant",
            "content": "".join(generation.chunks),
            "refusal": None,
            "reasoning": reasoning,
        }
        if urls := _drawn_urls(plan):
            message["images"] = [_image_part(url) for url in urls]
        if generation.annotations:
            message["annotations"] = list(generation.annotations)
        body = {
            "id": generation.gen_id,
            "provider": PROVIDER_NAME,
            "model": generation.model,
            "object": "chat.completion",
            "created": generation.created,
            "choices": [
                {
                    "logprobs": None,
                    "finish_reason": generation.finish_reason,
                    "native_finish_reason": generation.finish_reason,
                    "index": 0,
                    "message": message,
                }
            ],
            "usage": generation.usage(),
        }
        return _json(body, headers=headers)

    # --------------------------------------------------------------- streaming

    async def _sse(self, scope: Mapping[str, Any], gen: _Generation) -> AsyncIterator[bytes]:
        """Yield the SSE byte stream of one generation, paced on an absolute schedule."""
        self._active_streams += 1
        try:
            loop = asyncio.get_running_loop()
            plan = gen.plan
            fmt = _StreamFormat(gen.gen_id, gen.model, gen.created)
            yield PROCESSING_COMMENT
            if plan.delay > 0:
                deadline = loop.time() + plan.delay
                while (remaining := deadline - loop.time()) > 0:
                    if await self._wait_closing(min(_KEEPALIVE_INTERVAL, remaining)):
                        return
                    if deadline - loop.time() > 0:
                        yield PROCESSING_COMMENT
            buf = bytearray(fmt.delta({"role": "assistant", "content": ""}))
            for url in _drawn_urls(plan):  # pictures come before the text, one chunk each
                buf += fmt.delta({"role": "assistant", "content": "", "images": [_image_part(url)]})
            fault = plan.fault(len(gen.chunks))
            total = plan.reasoning + len(gen.chunks)
            limit = total if fault is None else plan.reasoning + fault[1]
            steps = limit if fault is None else limit + 1
            interval = 1.0 / plan.rate if 0 < plan.rate < math.inf else 0.0
            start = loop.time()
            for index in range(steps):
                if interval:
                    wait = start + index * interval - loop.time()
                    if wait > _MIN_SLEEP:
                        if buf:
                            yield bytes(buf)
                            buf.clear()
                        if await self._sleep(wait):
                            return
                if index == limit:
                    break
                if index < plan.reasoning:
                    buf += fmt.reasoning(index)
                else:
                    buf += fmt.content(gen.chunks[index - plan.reasoning])
                if len(buf) >= _FLUSH_BYTES:
                    yield bytes(buf)
                    buf.clear()
            if fault is None:
                buf += _citation_chunks(fmt, gen)
                buf += fmt.finish(gen.finish_reason)
                buf += fmt.event({"choices": [], "usage": gen.usage()})
                yield bytes(buf + DONE_LINE)
                return
            async for part in self._fault(fault[0], buf, fmt, scope, plan):
                yield part
        finally:
            self._active_streams -= 1

    async def _fault(
        self,
        kind: str,
        buf: bytearray,
        fmt: _StreamFormat,
        scope: Mapping[str, Any],
        plan: _Plan,
    ) -> AsyncIterator[bytes]:
        """Yield the bytes of a stream fault and carry it out."""
        if kind == "midstream_error":
            error = _midstream_error(plan.midstream_code)
            choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
            yield bytes(buf + fmt.event({"error": error, "choices": [choice]}) + DONE_LINE)
        elif kind == "garbage":
            yield bytes(buf + GARBAGE_LINE)
        elif kind == "badbytes":
            yield bytes(buf + BAD_BYTES_LINE)
        elif kind == "badshape":
            yield bytes(buf + BAD_SHAPE_LINE)
        elif kind == "truncate":  # the body ends cleanly: no finish reason, no [DONE]
            if buf:
                yield bytes(buf)
        elif kind == "stall":
            if buf:
                yield bytes(buf)
            await self._wait_closing(_STALL_SECONDS)
        elif kind == "drop":
            if buf:
                yield bytes(buf)
            await self._drop_connection(scope)

    async def _drop_connection(self, scope: Mapping[str, Any]) -> None:
        """Abort the TCP connection of a request once its pending output is flushed."""
        transport = self._find_transport(scope.get("client"))
        if transport is None:
            raise _DroppedConnectionError("drop directive")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while (
            transport.get_write_buffer_size() > 0
            and not transport.is_closing()
            and loop.time() < deadline
        ):
            await asyncio.sleep(0.005)
        transport.abort()
        # The disconnect listener of the response cancels this stream shortly.
        await self._wait_closing(_ABORT_GRACE_SECONDS)

    def _find_transport(self, client: Any) -> asyncio.WriteTransport | None:
        """Return the transport of the uvicorn connection serving a client address."""
        if client is None:
            return None
        address = tuple(client)
        for connection in self._server.connections():
            if getattr(connection, "client", None) == address:
                transport = getattr(connection, "transport", None)
                if isinstance(transport, asyncio.WriteTransport):
                    return transport
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fake until SIGTERM/SIGINT, printing READY <base_url> once it accepts requests."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.openrouter", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = free port)")
    parser.add_argument("--tokens-per-second", type=float, default=200.0)
    parser.add_argument("--default-tokens", type=int, default=20)
    parser.add_argument("--catalog-mode", choices=CATALOG_MODES, default="ok")
    parser.add_argument("--no-record", action="store_true", help="do not keep request records")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    fake = FakeOpenRouter(
        tokens_per_second=args.tokens_per_second,
        default_tokens=args.default_tokens,
        port=args.port,
        record=not args.no_record,
    )
    fake.catalog_mode = args.catalog_mode
    with fake:
        print(f"READY {fake.base_url}", flush=True)  # noqa: T201 - the CLI handshake
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
