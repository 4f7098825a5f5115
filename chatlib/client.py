"""OpenRouter streaming through the openai SDK, as typed events."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, cast

import httpx2
import openai
import orjson
import structlog
from openai import AsyncAPIResponse, AsyncOpenAI, AsyncStream, RequestOptions
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from chatlib import errors
from chatlib.config import Settings
from chatlib.logging import redact_secret_shapes
from chatlib.sources import MAX_SOURCES, Source, sources_from_annotations

log = structlog.get_logger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's visible reasoning ("thinking")."""

    text: str


@dataclass(frozen=True)
class ImageDelta:
    """A picture the model drew, as OpenRouter sent it: a data URL, not yet checked.

    The turn decodes and checks it (chatlib.attachments.image_from_data_url); the client
    only takes the URL out of `delta.images[]` (or a final `message.images[]`).
    """

    url: str


@dataclass(frozen=True)
class FirstToken:
    """The first text, reasoning or picture arrived; sent once, right before it."""

    ttft_ms: float


@dataclass(frozen=True)
class Usage:
    """Token counts and cost from the final chunk."""

    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cost_usd: float | None


@dataclass(frozen=True)
class Finished:
    """The stream ended normally."""

    finish_reason: str | None
    generation_id: str | None
    ttft_ms: float | None
    latency_ms: float


@dataclass(frozen=True)
class StreamFailed:
    """The stream failed; text already received stays valid."""

    error: errors.UpstreamError
    generation_id: str | None
    ttft_ms: float | None
    latency_ms: float


@dataclass(frozen=True)
class SourcesFound:
    """Web sources the answer cites (`url_citation` annotations), new ones since the last."""

    sources: tuple[Source, ...]


StreamEvent = (
    TextDelta
    | ReasoningDelta
    | ImageDelta
    | SourcesFound
    | FirstToken
    | Usage
    | Finished
    | StreamFailed
)


def _error_body(exc: openai.APIError) -> Mapping[str, Any]:
    body = exc.body
    if isinstance(body, Mapping):
        inner = body.get("error")
        return inner if isinstance(inner, Mapping) else body
    return {}


def _retry_after(exc: openai.APIStatusError) -> float | None:
    raw = exc.response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _upstream_message(body: Mapping[str, Any], fallback: str) -> str:
    """The upstream's own words, shortened, with anything shaped like a credential removed
    (they are shown to the visitor and saved with the answer)."""
    message = body.get("message")
    text = message if isinstance(message, str) and message.strip() else fallback
    return redact_secret_shapes(text.strip()[:500])


_ErrorRow = tuple[type[errors.UpstreamError], str, str]
# HTTP status before streaming -> (error class, message template, code). Templates may use
# {status}, {detail} (the upstream's words), {model}, {why} (moderation reasons) and {hint}
# (when to retry).
_STATUS_ERRORS: dict[int, _ErrorRow] = {
    400: (
        errors.BadRequest,
        "OpenRouter rejected the request (400): {detail}. Check the model id '{model}'.",
        "bad_request",
    ),
    401: (
        errors.AuthenticationFailed,
        "OpenRouter rejected the API key (401). If you pasted your own key, check it under "
        "“Your OpenRouter key”; otherwise the operator must fix OPENROUTER_API_KEY.",
        "invalid_key",
    ),
    402: (
        errors.InsufficientCredits,
        f"The OpenRouter account is {errors.OUT_OF_CREDITS}. Add credits at "
        f"{errors.ADD_CREDITS_URL} (or choose a free model), then retry.",
        "insufficient_credits",
    ),
    403: (
        errors.ModerationFlagged,
        "The provider's moderation flagged this message (403){why}. Rephrase it or choose "
        "another model.",
        "moderation",
    ),
    408: (
        errors.UpstreamTimeout,
        "The model took too long to answer (408). Try again or pick another model.",
        "timeout",
    ),
    429: (
        errors.UpstreamRateLimited,
        "OpenRouter is rate-limiting this model (429): {detail}.{hint} "
        "Free (:free) models have tight limits; a paid model avoids them.",
        "upstream_rate_limited",
    ),
}
_SERVER_ERROR: _ErrorRow = (
    errors.ProviderUnavailable,
    "The model's provider is unavailable ({status}): {detail}. Try again shortly or pick "
    "another model.",
    "provider_unavailable",
)
_OTHER_ERROR: _ErrorRow = (
    errors.UpstreamError,
    "OpenRouter returned an error ({status}): {detail}.",
    "upstream_error",
)


def _moderation_reasons(body: Mapping[str, Any]) -> str:
    """ ": reason, reason" from a 403's metadata, or "" without any."""
    metadata = body.get("metadata")
    reasons = metadata.get("reasons") if isinstance(metadata, Mapping) else None
    why = ", ".join(str(r) for r in reasons) if isinstance(reasons, list) and reasons else ""
    why = redact_secret_shapes(why[:500])
    return f": {why}" if why else ""


def _status_error(exc: openai.APIStatusError, *, model: str) -> errors.UpstreamError:
    """An HTTP error status (before any token) through the table above."""
    status = exc.status_code
    body = _error_body(exc)
    default = _SERVER_ERROR if status >= 500 else _OTHER_ERROR
    cls, template, code = _STATUS_ERRORS.get(status, default)
    retry = _retry_after(exc) if status == 429 else None
    message = template.format(
        status=status,
        detail=_upstream_message(body, exc.message),
        model=model,
        why=_moderation_reasons(body) if status == 403 else "",
        hint=f" Retry in {retry:.0f} s." if retry is not None else " Wait a moment and retry.",
    )
    return cls(message, status=status, code=code, retry_after=retry)


def map_api_error(exc: openai.APIError, *, model: str, started: bool) -> errors.UpstreamError:
    """Turn an SDK exception into our error hierarchy with an actionable message."""
    if isinstance(exc, openai.APITimeoutError):
        return errors.UpstreamTimeout(
            "OpenRouter did not answer in time. Try again, or pick a faster model.",
            status=408,
            code="timeout",
        )
    if isinstance(exc, openai.APIConnectionError):
        cls: type[errors.UpstreamError] = (
            errors.StreamInterrupted if started else errors.ProviderUnavailable
        )
        return cls(
            "The connection to OpenRouter was lost"
            + (" mid-answer; the text so far is kept." if started else ". Try again."),
            code="connection_error",
        )
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc, model=model)
    # An error chunk inside a 200 stream: the provider failed after starting.
    body = _error_body(exc)
    detail = _upstream_message(body, "the provider reported an error")
    code = body.get("code")
    if code == 402:
        return _credit_ran_out()
    return errors.StreamInterrupted(
        f"The answer was interrupted: {detail}. The text so far is kept; retry to try again.",
        status=code if isinstance(code, int) else None,
        code="midstream_error",
    )


def _credit_ran_out() -> errors.InsufficientCredits:
    """A 402 error chunk after the answer started: the text so far is kept."""
    return errors.InsufficientCredits(
        f"The OpenRouter account ran {errors.OUT_OF_CREDITS} mid-answer; the text so far is "
        f"kept. Add credits at {errors.ADD_CREDITS_URL} (or choose a free model), then retry.",
        status=402,
        code="insufficient_credits",
    )


def attribution_headers(settings: Settings) -> dict[str, str]:
    """Headers that attribute this app's requests to it on OpenRouter (its rankings and logs).

    The title goes under both names OpenRouter reads (`X-Title` is the older one); the
    Referer only when the app has a public URL (PUBLIC_URL, or the Space's own).
    """
    headers = {"X-OpenRouter-Title": settings.app_title, "X-Title": settings.app_title}
    if settings.public_url:
        headers["HTTP-Referer"] = settings.public_url
    return headers


class _OpenRouterClient(AsyncOpenAI):
    """The SDK client, minus silent retries of 429.

    The SDK would wait out OpenRouter's Retry-After (up to a minute) before the visitor sees
    anything; a rate limit is better shown at once, with its retry hint.
    """

    def _should_retry(self, response: httpx2.Response) -> bool:
        if response.status_code == 429:
            return False
        return super()._should_retry(response)


class ClientPool:
    """One AsyncOpenAI client per API key, all sharing one pooled HTTP client.

    (The SDK's aiohttp transport, `openai[aiohttp]`, reads ~25 % cheaper here but raises on a
    dropped connection before handing over text it already buffered, so it is not used.)
    """

    def __init__(self, settings: Settings, *, max_clients: int = 256) -> None:
        self._settings = settings
        self._clients: dict[str, AsyncOpenAI] = {}
        self._max_clients = max_clients
        self._http: httpx2.AsyncClient | None = None

    def get(self, api_key: str) -> AsyncOpenAI:
        """The client for `api_key` (created on first use)."""
        slot = hashlib.sha256(api_key.encode()).hexdigest()
        client = self._clients.get(slot)
        if client is None:
            if len(self._clients) >= self._max_clients:
                # Visitor keys come and go; forget the oldest (the connections are shared).
                self._clients.pop(next(iter(self._clients)))
            client = self._new_client(api_key)
            self._clients[slot] = client
        return client

    def _new_client(self, api_key: str) -> AsyncOpenAI:
        s = self._settings
        return _OpenRouterClient(
            base_url=s.openrouter_base_url,
            api_key=api_key,
            timeout=openai.Timeout(
                s.request_timeout_seconds,
                connect=s.connect_timeout_seconds,
                pool=s.connect_timeout_seconds,
            ),
            max_retries=s.openrouter_max_retries,
            default_headers=attribution_headers(s),
            http_client=self._http_client(),
        )

    def _http_client(self) -> httpx2.AsyncClient:
        if self._http is None:
            # Fewer idle connections than the SDK's 100: each request start and end probes
            # every idle one (a poll syscall each) in httpcore's pool.
            self._http = openai.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=32)
            )
        return self._http

    async def aclose(self) -> None:
        """Close the pooled connections; clients asked for later get new ones."""
        self._clients = {}
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()


def _usage_event(usage: Mapping[str, Any]) -> Usage:
    details = usage.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, Mapping) else None
    cost = usage.get("cost")
    tools = usage.get("server_tool_use")
    searches = tools.get("web_search_requests") if isinstance(tools, Mapping) else None
    if searches:  # billed inside `cost`; said in the log only
        log.info("chat.web_search_requests", requests=_int(searches))
    return Usage(
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        reasoning_tokens=_int(reasoning),
        cost_usd=float(cost)
        if isinstance(cost, int | float) and not isinstance(cost, bool)
        else None,
    )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


class _Truncated(Exception):
    """The body ended without `[DONE]` or a finish reason."""


class _MidStreamError(Exception):
    """An error chunk inside a 200 stream (the provider failed after starting)."""

    def __init__(self, error: Mapping[str, Any]) -> None:
        self.detail = _upstream_message(error, "provider error")
        code = error.get("code")
        self.status = code if isinstance(code, int) and not isinstance(code, bool) else None
        super().__init__(self.detail)


@dataclass
class _ChunkBatch:
    """What one network read carried, merged: one event per kind instead of one per token."""

    text: list[str]
    reasoning: list[str]
    images: list[str] = field(default_factory=list)  # data URLs, in order
    sources: list[Source] = field(default_factory=list)  # cited pages, in order (repeats too)
    usage: Mapping[str, Any] | None = None
    finish_reason: str | None = None
    generation_id: str | None = None
    error: _MidStreamError | None = None
    # A line that could not be taken (ValueError: not a valid chunk): nothing after it counts.
    broken: Exception | None = None
    done: bool = False  # `data: [DONE]`: nothing follows


def _parse_lines(lines: list[bytes]) -> _ChunkBatch:
    """Parse complete SSE lines; comments (`: OPENROUTER PROCESSING`) and blanks are skipped.

    Parsing stops at `[DONE]`, at an error chunk, or at a line that cannot be taken (not JSON,
    not UTF-8, the wrong shape, or any failure: `broken`); what came before it is kept.
    """
    batch = _ChunkBatch([], [])
    for line in lines:
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            batch.done = True
            break
        if not payload:
            continue
        try:
            _add_chunk(batch, orjson.loads(payload))
        except Exception as exc:  # noqa: BLE001 - raised once the text before it is out
            batch.broken = exc
            break
        if batch.error is not None:
            break
    return batch


def _add_chunk(batch: _ChunkBatch, chunk: Any) -> None:
    """Merge one parsed chunk into `batch`; ValueError if it is not shaped like one."""
    if not isinstance(chunk, dict):
        raise ValueError("stream chunk is not an object")
    batch.generation_id = batch.generation_id or _text_or_none(chunk.get("id"))
    error = chunk.get("error")
    if isinstance(error, Mapping) and error:
        batch.error = _MidStreamError(error)
        return
    usage = chunk.get("usage")
    if isinstance(usage, Mapping):
        batch.usage = usage
    choices = chunk.get("choices") or []  # the usage chunk has an EMPTY choices list
    if not isinstance(choices, list):
        raise ValueError("stream chunk has choices that are not a list")
    for choice in choices:
        if not isinstance(choice, Mapping):
            continue
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            reasoning = delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                batch.reasoning.append(reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                batch.text.append(content)
            batch.images.extend(_image_urls(delta.get("images")))
            batch.sources.extend(_sources(delta.get("annotations")))
        message = choice.get("message")  # a final, non-delta message: pictures and sources
        if isinstance(message, Mapping):
            batch.images.extend(_image_urls(message.get("images")))
            batch.sources.extend(_sources(message.get("annotations")))
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            batch.finish_reason = finish


def _image_urls(images: Any) -> list[str]:
    """The URLs of `[{"type": "image_url", "image_url": {"url": ...}}]`; odd entries skipped.

    A picture shaped wrongly must not cost the answer its text: it is logged and left out.
    """
    if images is None:
        return []
    if not isinstance(images, list):
        log.warning("chat.image_skipped", reason="images is not a list")
        return []
    urls: list[str] = []
    for image in images:
        inner = image.get("image_url") if isinstance(image, Mapping) else None
        url = inner.get("url") if isinstance(inner, Mapping) else None
        if isinstance(url, str) and url:
            urls.append(url)
        else:
            log.warning("chat.image_skipped", reason="image without a URL")
    return urls


def _sources(annotations: Any) -> list[Source]:
    """The `url_citation` sources of an `annotations` list; odd shapes give none.

    Sources are extras: whatever the upstream sent, they must not cost the answer its text.
    """
    if annotations is None:
        return []
    try:
        return sources_from_annotations(annotations)
    except Exception as exc:  # noqa: BLE001 - logged and left out, the text goes on
        log.warning("chat.sources_skipped", reason=type(exc).__name__)
        return []


async def _read(chunks: AsyncIterator[bytes]) -> tuple[bytes, bool]:
    """The next body chunk, and whether getting it had to wait (the task yielded to the loop).

    A chunk that came without waiting was already buffered (one network read often carries
    many SSE events); one that waited means everything buffered has been consumed.
    """
    waited = False

    def mark() -> None:
        nonlocal waited
        waited = True

    # Runs at the loop's next iteration, i.e. only if the read suspends this task.
    handle = asyncio.get_running_loop().call_soon(mark)
    try:
        return await chunks.__anext__(), waited
    finally:
        handle.cancel()


_DRAIN_TIMEOUT_S = 2.0
# What a broken or closed connection raises while the body is read.
_CONNECTION_ERRORS = (httpx2.HTTPError, httpx2.StreamError, openai.APIError)


async def _drain(chunks: AsyncIterator[bytes], *, timeout: float) -> None:
    """Read what follows `[DONE]` (the body's end), so the connection can be reused.

    Closing a response with unread body makes httpx drop the connection, and the next
    answer would pay a new TCP and TLS handshake. Failures here do not matter: the answer is
    complete.
    """
    with contextlib.suppress(TimeoutError, *_CONNECTION_ERRORS):
        async with asyncio.timeout(timeout):
            async for _ in chunks:
                pass


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class _SseLines:
    """Body reads in, complete SSE lines out (without their line ends).

    A line spread over many reads is joined once, when its end arrives (a huge token costs
    one copy, not one per read); `finish` returns a last line the body did not end.
    """

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # the bytes of a line not complete yet

    def feed(self, data: bytes) -> list[bytes]:
        """The lines `data` completes (none while a long line is still arriving)."""
        self._pending.append(data)
        if b"\n" not in data:
            return []
        *lines, rest = b"".join(self._pending).split(b"\n")
        self._pending = [rest] if rest else []
        return lines

    def finish(self) -> list[bytes]:
        """The body's last line if it had no line end, else nothing."""
        return self.feed(b"\n") if self._pending else []


class _Events:
    """Builds the typed events of one answer from parsed batches, and keeps its timings."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._started_at = clock()
        self._first_token_at: float | None = None
        self.generation_id: str | None = None
        self.finish_reason: str | None = None
        self.ended = False  # `[DONE]` came
        self._source_titled: dict[str, bool] = {}  # URL sent in this answer -> with a title

    @property
    def has_content(self) -> bool:
        """True once text, reasoning or a picture has arrived."""
        return self._first_token_at is not None

    def _ms_since_start(self, at: float) -> float:
        return (at - self._started_at) * 1000

    def _ttft_ms(self) -> float | None:
        at = self._first_token_at
        return None if at is None else self._ms_since_start(at)

    def from_batch(self, batch: _ChunkBatch) -> Iterator[StreamEvent]:
        """The events one read carried; then raises the error that ended it, if any."""
        self.generation_id = self.generation_id or batch.generation_id
        self.finish_reason = batch.finish_reason or self.finish_reason
        visible = batch.text or batch.reasoning or batch.images
        if visible and self._first_token_at is None:
            self._first_token_at = self._clock()
            yield FirstToken(self._ms_since_start(self._first_token_at))
        if batch.reasoning:
            yield ReasoningDelta("".join(batch.reasoning))
        for url in batch.images:
            yield ImageDelta(url)
        if batch.text:
            yield TextDelta("".join(batch.text))
        if batch.sources and (new := self._new_sources(batch.sources)):
            yield SourcesFound(new)  # not a first token: a page shows text, not a list
        if batch.usage is not None:
            yield _usage_event(batch.usage)
        if batch.error is not None:
            raise batch.error
        if batch.broken is not None:
            raise batch.broken
        if batch.done:
            self.ended = True

    def _new_sources(self, sources: list[Source]) -> tuple[Source, ...]:
        """The sources of `sources` not sent before (one per URL), within MAX_SOURCES.

        A URL sent without a title comes again once a title for it arrives (merging keeps it).
        """
        new: dict[str, Source] = {}
        for source in sources:
            titled = self._source_titled.get(source.url)
            if titled is None and len(self._source_titled) >= MAX_SOURCES:
                continue  # a runaway stream of citations cannot grow the answer without end
            if titled is None or (not titled and source.title):
                self._source_titled[source.url] = bool(source.title)
                new[source.url] = source
        return tuple(new.values())

    def finished(self) -> Finished:
        """The closing event of a complete answer; _Truncated if it may be cut short."""
        if not self.ended and self.finish_reason is None:
            # The body ended cleanly but the answer did not: neither `[DONE]` nor a finish
            # reason came, so the text may be cut short.
            raise _Truncated
        return Finished(
            finish_reason=self.finish_reason,
            generation_id=self.generation_id,
            ttft_ms=self._ttft_ms(),
            latency_ms=self._ms_since_start(self._clock()),
        )

    def failed(self, error: errors.UpstreamError) -> StreamFailed:
        """The closing event of an answer that failed (its text so far stays valid)."""
        return StreamFailed(
            error=error,
            generation_id=self.generation_id,
            ttft_ms=self._ttft_ms(),
            latency_ms=self._ms_since_start(self._clock()),
        )


async def _body_events(
    reads: AsyncIterator[bytes],
    events: _Events,
    *,
    idle_timeout: float,
    pace: Callable[[], Awaitable[None]] | None,
) -> AsyncGenerator[StreamEvent]:
    """Read the SSE body to its end: its events, then Finished; raises what broke it."""
    lines = _SseLines()
    drained = just_paced = False
    while True:
        if pace is not None and events.has_content and drained and not just_paced:
            await pace()
            just_paced = True
        else:
            just_paced = False
        try:
            async with asyncio.timeout(idle_timeout):
                data, drained = await _read(reads)
        except StopAsyncIteration:
            complete, at_end = lines.finish(), True
        else:
            complete, at_end = lines.feed(data), False
        if complete:
            for event in events.from_batch(_parse_lines(complete)):
                yield event
            if events.ended:
                await _drain(reads, timeout=min(idle_timeout, _DRAIN_TIMEOUT_S))
                break
        if at_end:
            break
    yield events.finished()


def _stream_error(exc: Exception, *, idle_timeout: float) -> errors.UpstreamError:
    """What broke a stream after it started, as the error shown with the text so far."""
    if isinstance(exc, TimeoutError):
        return errors.StreamStalled(
            f"The answer stalled: nothing arrived for {idle_timeout:g} s. The text so far "
            "is kept; retry to try again.",
            code="stalled",
        )
    if isinstance(exc, _MidStreamError) and exc.status == 402:
        return _credit_ran_out()
    if isinstance(exc, _MidStreamError):
        return errors.StreamInterrupted(
            f"The answer was interrupted: {exc.detail}. The text so far is kept; retry to "
            "try again.",
            status=exc.status,
            code="midstream_error",
        )
    if isinstance(exc, (_Truncated, *_CONNECTION_ERRORS)):
        return errors.StreamInterrupted(
            "The connection to OpenRouter was lost mid-answer; the text so far is kept.",
            code="connection_error",
        )
    if isinstance(exc, ValueError):  # invalid SSE or non-UTF-8 bytes from upstream
        return errors.StreamInterrupted(
            f"OpenRouter sent a malformed stream ({type(exc).__name__}). The text so far is "
            "kept; retry to try again.",
            code="malformed_stream",
        )
    log.error("chat.stream_error", error=type(exc).__name__)  # no traceback: it may hold text
    return errors.StreamInterrupted(
        "Something went wrong while reading the answer. The text so far is kept; "
        "retry to try again.",
        code="unexpected_error",
    )


# Message strings at least this long (the data URLs of files) are encoded apart from the
# rest of the body, in slices, in a thread, and the body goes to the socket in pieces. A turn
# with a 20 MB PDF and a 10 MB photo is ~33 MB of JSON: encoding it in one call (the SDK's
# json.dumps ~300 ms, orjson ~50 ms, both holding the GIL) or handing it to the socket in one
# write (a ~100 ms copy into asyncio's buffer) would stall every other answer's frames.
BIG_STRING_CHARS = 64 * 1024
_SLICE_CHARS = 1024 * 1024
_RAW_JSON_SLICE = re.compile(r"[A-Za-z0-9+/=:;,._-]*")  # base64 data URLs: nothing to escape
# Ask the SDK for the raw, unread response (what `with_streaming_response` does), so the SSE
# body is read here; and for bearer auth, as its own `chat.completions.create` does.
_RAW_STREAM_HEADER = {"X-Stainless-Raw-Response": "stream"}


@dataclass(frozen=True)
class RequestBody:
    """A JSON request body in pieces, written one at a time; iterable again for SDK retries."""

    pieces: tuple[bytes, ...]

    def __len__(self) -> int:
        return sum(len(piece) for piece in self.pieces)

    def __bytes__(self) -> bytes:
        return b"".join(self.pieces)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def _json_string_pieces(text: str) -> list[bytes]:
    """`text` as a JSON string literal, in slices of at most _SLICE_CHARS.

    Each slice is one short C call, so the thread doing this hands the GIL back to the event
    loop between slices. A string that needs escaping is encoded whole (not a data URL).
    """
    pieces = [b'"']
    for start in range(0, len(text), _SLICE_CHARS):
        part = text[start : start + _SLICE_CHARS]
        if _RAW_JSON_SLICE.fullmatch(part) is None:
            return [orjson.dumps(text)]
        pieces.append(part.encode("ascii"))
    pieces.append(b'"')
    return pieces


def _assemble(skeleton: Mapping[str, Any], marker: str, big: list[str]) -> tuple[bytes, ...]:
    """The body's pieces: `skeleton` encoded, each `"<marker><n>"` replaced by `big[n]`."""
    encoded = orjson.dumps(skeleton)
    pieces: list[bytes] = []
    at = 0
    for match in re.finditer(b'"' + marker.encode() + rb'(\d+)"', encoded):
        pieces.append(encoded[at : match.start()])
        pieces.extend(_json_string_pieces(big[int(match.group(1))]))
        at = match.end()
    pieces.append(encoded[at:])
    return tuple(piece for piece in pieces if piece)


async def encode_request_body(body: Mapping[str, Any]) -> bytes | RequestBody:
    """`body` as JSON (orjson): bytes, or a RequestBody in pieces when its messages are big.

    The same JSON either way. TypeError (orjson.JSONEncodeError) if it cannot be encoded,
    e.g. a lone surrogate.
    """
    marker = f"big-string-{secrets.token_hex(8)}-"
    big: list[str] = []

    def swap(value: Any) -> Any:
        if isinstance(value, str) and len(value) >= BIG_STRING_CHARS:
            big.append(value)
            return f"{marker}{len(big) - 1}"
        if isinstance(value, Mapping):
            return {key: swap(inner) for key, inner in value.items()}
        if isinstance(value, list):
            return [swap(inner) for inner in value]
        return value

    skeleton = {**body, "messages": swap(body.get("messages"))}
    if not big:
        return orjson.dumps(body)
    return RequestBody(await asyncio.to_thread(_assemble, skeleton, marker, big))


async def _post_chat(client: AsyncOpenAI, content: bytes | RequestBody) -> AsyncAPIResponse[Any]:
    """POST the encoded body to /chat/completions through the SDK; the response is unread.

    Going through the client's own `post` keeps what `chat.completions.create` does: the
    same headers (auth, attribution, JSON content type), timeouts, retries and error
    mapping; only the encoding moved out. A body in pieces states its length, so it is not
    sent chunked.
    """
    headers = dict(_RAW_STREAM_HEADER)
    if isinstance(content, RequestBody):
        headers["Content-Length"] = str(len(content))
    options: RequestOptions = {"headers": headers, "security": {"bearer_auth": True}}
    response = await client.post(
        "/chat/completions",
        cast_to=ChatCompletion,
        content=content,
        options=options,
        stream=True,
        stream_cls=AsyncStream[ChatCompletionChunk],
    )
    return cast("AsyncAPIResponse[Any]", response)


async def stream_chat(
    client: AsyncOpenAI,
    *,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    temperature: float,
    idle_timeout: float,
    clock: Clock = time.monotonic,
    extra_body: Mapping[str, Any] | None = None,
    pace: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[StreamEvent]:
    """Stream one answer as typed events; always ends with Finished or StreamFailed.

    FirstToken comes once, right before the first text, reasoning or picture (ImageDelta);
    SourcesFound carries cited pages not seen before in this answer. The body is encoded
    here (off the loop when big: `encode_request_body`); the SDK sends it (auth, headers,
    timeouts, retries, HTTP error mapping); the SSE body is parsed here with orjson, one
    batch per network read. Building an SDK model per token cost ~200 us each, 40 % of the
    app's CPU while streaming. Once text has arrived, `pace` (if given) is awaited whenever
    everything buffered has been read, so a slow stream is read in bursts (about one per
    frame) instead of one wake-up per token.
    Closing this generator (e.g. the user pressed Stop) closes the upstream connection.
    """
    events = _Events(clock)
    request_body = {
        "model": model,
        "stream": True,
        "messages": list(messages),
        "temperature": temperature,
        **(extra_body or {}),
    }
    try:
        content = await encode_request_body(request_body)
    except TypeError as exc:  # orjson: e.g. a lone surrogate, which no upstream would take
        log.warning("chat.request_unencodable", error=type(exc).__name__)
        yield events.failed(
            errors.BadRequest(
                "The message could not be sent: it holds characters that cannot be encoded. "
                "Remove them and try again.",
                code="bad_request",
            )
        )
        return
    try:
        async with asyncio.timeout(idle_timeout):
            response = await _post_chat(client, content)
    except openai.APIError as exc:
        yield events.failed(map_api_error(exc, model=model, started=False))
        return
    except TimeoutError:
        yield events.failed(
            errors.UpstreamTimeout(
                f"OpenRouter sent nothing for {idle_timeout:g} s. Try again or pick another model.",
                status=408,
                code="timeout",
            )
        )
        return
    events.generation_id = response.headers.get("x-generation-id") or None
    body = _body_events(
        response.iter_bytes().__aiter__(), events, idle_timeout=idle_timeout, pace=pace
    )
    try:
        async with contextlib.aclosing(body):
            async for event in body:
                yield event
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the text so far is kept
        yield events.failed(_stream_error(exc, idle_timeout=idle_timeout))
    finally:
        await response.close()
