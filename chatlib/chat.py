"""One chat turn, end to end: checks, upstream stream, frames, metadata and log events."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace

import structlog

from chatlib import errors
from chatlib.client import (
    ClientPool,
    Clock,
    Finished,
    ReasoningDelta,
    StreamEvent,
    StreamFailed,
    TextDelta,
    Usage,
    stream_chat,
)
from chatlib.config import Settings
from chatlib.frames import (
    FrameBudget,
    ReadPacer,
    TurnControl,
    coalesce,
    finish_if_abandoned,
    run_detached,
)
from chatlib.messages import (
    AnswerMeta,
    ChatMessage,
    History,
    build_upstream_messages,
    check_model_id,
    check_system_prompt,
    check_temperature,
    check_user_input,
)
from chatlib.ratelimit import RateLimiter
from chatlib.usage import UsageLog, UsageRecord

log = structlog.get_logger(__name__)

REFUSALS_RECORDED_EVERY_S = 10.0
_MAX_REFUSING_CLIENTS = 20_000


@dataclass(frozen=True)
class TurnRequest:
    """Everything one turn needs; built by the UI or the API handler."""

    history: History
    user_text: str
    model: str
    system_prompt: str
    temperature: float
    api_key: str | None = None
    session_key: str | None = None
    conversation_id: str | None = None
    owner_key: str = ""
    rate_key: str | None = None  # client IP, or HF user id when logged in; None: no limit
    logged_in: bool = False
    # Stops the turn (the Stop button, or the page going away).
    control: TurnControl = field(default_factory=TurnControl, compare=False)


@dataclass(frozen=True)
class TurnFrame:
    """The conversation as it should look now. `done` marks the final frame."""

    history: History
    done: bool = False
    error: errors.ChatError | None = None

    @property
    def answer(self) -> ChatMessage:
        """The assistant message being written."""
        return self.history[-1]


@dataclass
class _Answer:
    model: str
    text: list[str]
    reasoning: list[str]
    meta: AnswerMeta
    created_at: float

    def apply(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, Usage):
            self.meta = replace(
                self.meta,
                prompt_tokens=event.prompt_tokens,
                completion_tokens=event.completion_tokens,
                reasoning_tokens=event.reasoning_tokens,
                cost_usd=event.cost_usd,
            )
        elif isinstance(event, Finished):
            self.meta = replace(
                self.meta,
                status="complete",
                ttft_ms=event.ttft_ms,
                latency_ms=event.latency_ms,
                generation_id=event.generation_id,
            )
        elif isinstance(event, StreamFailed):
            self.meta = replace(
                self.meta,
                status="interrupted",
                error=event.error.user_message,
                ttft_ms=event.ttft_ms,
                latency_ms=event.latency_ms,
                generation_id=event.generation_id,
            )

    def message(self) -> ChatMessage:
        return ChatMessage(
            role="assistant",
            content="".join(self.text),
            reasoning="".join(self.reasoning),
            meta=self.meta,
            created_at=self.created_at,
        )


class ChatService:
    """Runs chat turns against OpenRouter and lets the Stop button end them."""

    def __init__(
        self,
        settings: Settings,
        clients: ClientPool,
        budget: FrameBudget,
        *,
        limiter: RateLimiter | None = None,
        usage: UsageLog | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._settings = settings
        self._limiter = limiter
        self._usage = usage
        self._wall_clock = wall_clock
        self._clients = clients
        self._budget = budget
        self._clock = clock
        self._running: dict[str, TurnControl] = {}
        # Per client: when its last refusal was recorded, and how many since were not.
        self._refusals: OrderedDict[str, tuple[float, int]] = OrderedDict()

    @property
    def active_streams(self) -> int:
        """Answers streaming right now."""
        return self._budget.active_streams

    def resolve_key(self, visitor_key: str | None) -> str:
        """The key to use: the visitor's own, else the operator's; else MissingApiKey."""
        key = (visitor_key or "").strip() or self._settings.openrouter_api_key
        if not key:
            raise errors.MissingApiKey()
        return key

    def stop(self, session_key: str) -> bool:
        """Stop the turn running for `session_key`; True if there was one."""
        control = self._running.get(session_key)
        if control is None:
            return False
        control.stop()
        return True

    def run_turn(self, request: TurnRequest) -> AsyncGenerator[TurnFrame]:
        """Stream one answer as frames. Raises ChatError before the first frame if refused.

        Closing the iterator mid-answer (the page went away) stops the turn; it still ends,
        with its usage recorded, in the background.
        """
        return finish_if_abandoned(self._turn(request), request.control)

    async def _turn(self, request: TurnRequest) -> AsyncIterator[TurnFrame]:
        text = check_user_input(request.user_text, self._settings.max_input_chars)
        request = replace(
            request,
            model=check_model_id(request.model),
            system_prompt=check_system_prompt(
                request.system_prompt, self._settings.max_input_chars
            ),
            temperature=check_temperature(request.temperature),
        )
        key = self.resolve_key(request.api_key)
        request_id = uuid.uuid4().hex[:16]
        await self._check_rate_limit(request, request_id)
        now = self._wall_clock()
        history: History = (
            *request.history,
            ChatMessage(role="user", content=text, created_at=now),
        )
        upstream = build_upstream_messages(
            history,
            request.system_prompt,
            self._settings.max_history_messages,
            self._settings.max_upstream_chars,
        )
        answer = _Answer(request.model, [], [], AnswerMeta(model=request.model), now)
        yield TurnFrame(history=(*history, answer.message()))

        control = request.control
        if request.session_key is not None:
            previous = self._running.get(request.session_key)
            if previous is not None:
                previous.stop()
            self._running[request.session_key] = control
        started = self._clock()
        first_token_ms: float | None = None
        failure: errors.ChatError | None = None

        def mark_stopped() -> None:
            answer.meta = replace(
                answer.meta,
                status="stopped",
                ttft_ms=first_token_ms,
                latency_ms=_ms(self._clock() - started),
            )

        with (
            structlog.contextvars.bound_contextvars(
                request_id=request_id,
                model=request.model,
                conversation_id=request.conversation_id,
            ),
            self._budget.streaming(),
        ):
            log.info("chat.started", messages=len(upstream), temperature=request.temperature)
            try:
                events = stream_chat(
                    self._clients.get(key),
                    model=request.model,
                    messages=upstream,
                    temperature=request.temperature,
                    idle_timeout=self._settings.stream_idle_timeout_seconds,
                    clock=self._clock,
                    pace=ReadPacer(self._budget, clock=self._clock),
                )
                async for batch in coalesce(events, self._budget, control, clock=self._clock):
                    for event in batch:
                        answer.apply(event)
                        if isinstance(event, StreamFailed):
                            failure = event.error
                    if first_token_ms is None and (answer.text or answer.reasoning):
                        first_token_ms = _ms(self._clock() - started)
                        log.info("chat.first_token", ttft_ms=first_token_ms)
                    if answer.meta.status == "streaming":
                        yield TurnFrame(history=(*history, answer.message()))
                if control.stop_requested and answer.meta.status == "streaming":
                    mark_stopped()
            except asyncio.CancelledError:
                # Gradio's /cancel or a shutdown: what was streamed still counts (and costs).
                mark_stopped()
                log.info("chat.finished", outcome="cancelled", latency_ms=answer.meta.latency_ms)
                run_detached(self._record_usage(answer.meta, request, request_id, None))
                raise
            finally:
                if (
                    request.session_key is not None
                    and self._running.get(request.session_key) is control
                ):
                    del self._running[request.session_key]
            meta = answer.meta
            if meta.status == "streaming":  # upstream ended without a final event
                meta = replace(meta, status="complete", latency_ms=_ms(self._clock() - started))
                answer.meta = meta
            if failure is not None:
                log.warning(
                    "chat.failed",
                    status=getattr(failure, "status", None),
                    code=getattr(failure, "code", None),
                    kept_chars=len("".join(answer.text)),
                    latency_ms=meta.latency_ms,
                )
            else:
                log.info(
                    "chat.finished",
                    outcome=meta.status,
                    prompt_tokens=meta.prompt_tokens,
                    completion_tokens=meta.completion_tokens,
                    reasoning_tokens=meta.reasoning_tokens,
                    cost_usd=meta.cost_usd,
                    ttft_ms=meta.ttft_ms,
                    latency_ms=meta.latency_ms,
                )
        await self._record_usage(answer.meta, request, request_id, failure)
        yield TurnFrame(history=(*history, answer.message()), done=True, error=failure)

    async def _record_usage(
        self,
        meta: AnswerMeta,
        request: TurnRequest,
        request_id: str,
        failure: errors.ChatError | None,
    ) -> None:
        if self._usage is not None:
            await self._usage.record(
                UsageRecord.from_answer(
                    meta,
                    request_id=request_id,
                    owner=request.owner_key,
                    conversation_id=request.conversation_id,
                    at=self._wall_clock(),
                    error_code=failure.code if isinstance(failure, errors.UpstreamError) else "",
                )
            )

    async def _check_rate_limit(self, request: TurnRequest, request_id: str) -> None:
        """Raise RateLimited (after recording it) when this visitor is over the limit."""
        if self._limiter is None or request.rate_key is None:
            return
        decision = await self._limiter.hit(request.rate_key, logged_in=request.logged_in)
        if decision.allowed:
            return
        # A client hammering past its limit must not fill the disk with rows and log lines:
        # one of each per client per REFUSALS_RECORDED_EVERY_S, with the count left out.
        key = request.rate_key
        now = self._clock()
        recorded_at, unrecorded = self._refusals.get(key, (-math.inf, 0))
        if now - recorded_at < REFUSALS_RECORDED_EVERY_S:
            self._refusals[key] = (recorded_at, unrecorded + 1)
            decision.raise_if_refused()
        self._refusals[key] = (now, 0)
        self._refusals.move_to_end(key)
        while len(self._refusals) > _MAX_REFUSING_CLIENTS:
            self._refusals.popitem(last=False)
        log.info(
            "chat.rate_limited",
            request_id=request_id,
            limit=decision.limit,
            retry_after_s=round(decision.retry_after_seconds, 1),
            unrecorded_since_last=unrecorded,
        )
        if self._usage is not None:
            await self._usage.record(
                UsageRecord.rate_limited(
                    request_id=request_id,
                    owner=request.owner_key,
                    conversation_id=request.conversation_id,
                    model=request.model,
                    at=self._wall_clock(),
                )
            )
        decision.raise_if_refused()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
