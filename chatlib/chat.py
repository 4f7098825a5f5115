"""One chat turn, end to end: checks, upstream stream, frames, metadata and log events."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Literal

import structlog

from chatlib import errors
from chatlib.client import (
    ClientPool,
    Clock,
    Finished,
    FirstToken,
    ReasoningDelta,
    StreamEvent,
    StreamFailed,
    TextDelta,
    Usage,
    stream_chat,
)
from chatlib.config import Settings
from chatlib.frames import FrameBudget, ReadPacer, TurnControl, coalesce, run_to_end
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
from chatlib.usage import UsageRecord, UsageSink

log = structlog.get_logger(__name__)

REFUSALS_RECORDED_EVERY_S = 10.0


@dataclass(frozen=True)
class TurnRequest:
    """What the visitor asked for, and who they are: the one request object of a turn."""

    owner_key: str
    conversation_id: str | None  # None: start a new conversation (the service creates it)
    user_text: str  # ignored when action == "retry"
    model: str
    system_prompt: str
    temperature: float
    api_key: str | None = None
    session_key: str | None = None  # Gradio session hash: Stop, and what the page is viewing
    rate_key: str | None = None  # client IP, or HF user id when logged in; None: no limit
    logged_in: bool = False
    action: Literal["send", "retry", "edit"] = "send"
    edit_index: int | None = None  # for "edit": the nth user message (0 = first question)


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
class _Turn:
    """One checked turn and its answer as it grows."""

    request: TurnRequest  # checked and cleaned
    api_key: str
    request_id: str
    history: History  # the earlier messages and the question
    meta: AnswerMeta
    created_at: float
    text: list[str]
    reasoning: list[str]
    failure: errors.UpstreamError | None = None

    def apply(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, FirstToken):
            self.meta = replace(self.meta, ttft_ms=event.ttft_ms)
            log.info("chat.first_token", ttft_ms=event.ttft_ms)
        elif isinstance(event, Usage):
            self.meta = replace(
                self.meta,
                prompt_tokens=event.prompt_tokens,
                completion_tokens=event.completion_tokens,
                reasoning_tokens=event.reasoning_tokens,
                cost_usd=event.cost_usd,
            )
        elif isinstance(event, Finished | StreamFailed):
            self.failure = event.error if isinstance(event, StreamFailed) else None
            self.meta = replace(
                self.meta,
                status="complete" if self.failure is None else "interrupted",
                error=None if self.failure is None else self.failure.user_message,
                ttft_ms=event.ttft_ms,
                latency_ms=event.latency_ms,
                generation_id=event.generation_id,
            )

    def frame(self, *, done: bool = False) -> TurnFrame:
        answer = ChatMessage(
            role="assistant",
            content="".join(self.text),
            reasoning="".join(self.reasoning),
            meta=self.meta,
            created_at=self.created_at,
        )
        return TurnFrame((*self.history, answer), done=done, error=self.failure if done else None)


class ChatService:
    """Runs chat turns against OpenRouter and lets the Stop button end them."""

    def __init__(
        self,
        settings: Settings,
        clients: ClientPool,
        budget: FrameBudget,
        *,
        limiter: RateLimiter | None = None,
        usage: UsageSink | None = None,
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

    def _resolve_key(self, visitor_key: str | None) -> str:
        """The visitor's own key (if allowed), else the operator's; else MissingApiKey."""
        if not self._settings.user_keys_allowed:
            visitor_key = None  # ALLOW_USER_KEYS=false: whatever a caller passes is not used
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

    def run_turn(self, request: TurnRequest, history: History) -> AsyncGenerator[TurnFrame]:
        """Answer `request.user_text` after `history`, as frames; nothing is stored.

        Raises ChatError before the first frame if refused. If the consumer leaves
        mid-answer (closes the iterator, or its task is cancelled) the turn is stopped and
        still ends, with its usage recorded, in the background.
        """
        control = TurnControl()
        return run_to_end(self.frames(request, history, control), control)

    async def frames(
        self, request: TurnRequest, history: History, control: TurnControl
    ) -> AsyncIterator[TurnFrame]:
        """The turn's frames, for a caller that handles a consumer leaving (see `run_turn`).

        The request is checked here, the one place: the input, the key and the rate limit.
        The first frame shows the question and an empty answer; the last one is `done`.
        """
        turn = await self._start(request, history)
        yield turn.frame()
        with (
            structlog.contextvars.bound_contextvars(
                request_id=turn.request_id,
                model=turn.request.model,
                conversation_id=request.conversation_id,
            ),
            self._budget.streaming(),
            self._running_as(request.session_key, control),
        ):
            async for frame in self._stream(turn, control):
                yield frame
        await self._record_usage(turn)
        yield turn.frame(done=True)

    async def _start(self, request: TurnRequest, history: History) -> _Turn:
        """Check the request; raise ChatError (nothing sent upstream) when it is refused."""
        text = check_user_input(request.user_text, self._settings.max_input_chars)
        request = replace(
            request,
            user_text=text,
            model=check_model_id(request.model),
            system_prompt=check_system_prompt(
                request.system_prompt, self._settings.max_input_chars
            ),
            temperature=check_temperature(request.temperature),
        )
        key = self._resolve_key(request.api_key)
        request_id = uuid.uuid4().hex[:16]
        await self._check_rate_limit(request, request_id)
        now = self._wall_clock()
        return _Turn(
            request=request,
            api_key=key,
            request_id=request_id,
            history=(*history, ChatMessage(role="user", content=text, created_at=now)),
            meta=AnswerMeta(model=request.model),
            created_at=now,
            text=[],
            reasoning=[],
        )

    @contextlib.contextmanager
    def _running_as(self, session_key: str | None, control: TurnControl) -> Iterator[None]:
        """Let Stop reach this turn; a newer turn of the same page stops an older one."""
        if session_key is None:
            yield
            return
        previous = self._running.get(session_key)
        if previous is not None:
            previous.stop()
        self._running[session_key] = control
        try:
            yield
        finally:
            if self._running.get(session_key) is control:
                del self._running[session_key]

    async def _stream(self, turn: _Turn, control: TurnControl) -> AsyncIterator[TurnFrame]:
        """Frames while the answer streams; the turn's meta is final afterwards."""
        request = turn.request
        upstream = build_upstream_messages(
            turn.history,
            request.system_prompt,
            self._settings.max_history_messages,
            self._settings.max_upstream_chars,
        )
        log.info("chat.started", messages=len(upstream), temperature=request.temperature)
        started = self._clock()
        if not control.stop_requested:  # the page may have left before the stream began
            events = stream_chat(
                self._clients.get(turn.api_key),
                model=request.model,
                messages=upstream,
                temperature=request.temperature,
                idle_timeout=self._settings.stream_idle_timeout_seconds,
                clock=self._clock,
                pace=ReadPacer(self._budget, clock=self._clock),
            )
            async for batch in coalesce(events, self._budget, control, clock=self._clock):
                for event in batch:
                    # After a Stop the answer keeps what was on screen: later text is dropped.
                    if not (control.stop_requested and _is_text(event)):
                        turn.apply(event)
                if turn.meta.status == "streaming":
                    yield turn.frame()
        if turn.meta.status == "streaming":
            # Stopped, or the upstream ended without a final event.
            status: Literal["stopped", "complete"] = (
                "stopped" if control.stop_requested else "complete"
            )
            turn.meta = replace(turn.meta, status=status, latency_ms=_ms(self._clock() - started))
        _log_outcome(turn)

    async def _record_usage(self, turn: _Turn) -> None:
        if self._usage is None:
            return
        failure = turn.failure
        await self._usage.record(
            UsageRecord.from_answer(
                turn.meta,
                request_id=turn.request_id,
                owner=turn.request.owner_key,
                conversation_id=turn.request.conversation_id,
                at=self._wall_clock(),
                error_code=failure.code if failure is not None else "",
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
        # one of each per client per REFUSALS_RECORDED_EVERY_S (across replicas), each row
        # counting the refusals it stands for.
        count = await self._limiter.refusals_to_record(
            request.rate_key, every_seconds=REFUSALS_RECORDED_EVERY_S, now=self._wall_clock()
        )
        if count is None:
            raise decision.refusal()
        log.info(
            "chat.rate_limited",
            request_id=request_id,
            limit=decision.limit,
            retry_after_s=round(decision.retry_after_seconds, 1),
            unrecorded_since_last=count - 1,
        )
        if self._usage is not None:
            await self._usage.record(
                UsageRecord.rate_limited(
                    request_id=request_id,
                    owner=request.owner_key,
                    conversation_id=request.conversation_id,
                    model=request.model,
                    at=self._wall_clock(),
                    count=count,
                )
            )
        decision.raise_if_refused()


def _is_text(event: StreamEvent) -> bool:
    return isinstance(event, TextDelta | ReasoningDelta)


def _log_outcome(turn: _Turn) -> None:
    meta, failure = turn.meta, turn.failure
    if failure is not None:
        log.warning(
            "chat.failed",
            status=failure.status,
            code=failure.code,
            kept_chars=sum(len(t) for t in turn.text),
            latency_ms=meta.latency_ms,
        )
        return
    log.info(
        "chat.finished",
        outcome=meta.status,
        **meta.measures(),
    )


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
