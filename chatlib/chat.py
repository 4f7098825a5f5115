"""One chat turn, end to end: checks, upstream stream, frames, metadata and log events."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import structlog

from chatlib import errors
from chatlib.attachments import (
    Attachment,
    AttachmentRef,
    AttachmentRejected,
    check_sizes,
    file_parser_plugins,
    image_from_data_url,
)
from chatlib.catalog import ModelCatalog, ModelInfo
from chatlib.client import (
    ClientPool,
    Clock,
    Finished,
    FirstToken,
    ImageDelta,
    ReasoningDelta,
    SourcesFound,
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
    UpstreamWindow,
    check_model_id,
    check_system_prompt,
    check_temperature,
    check_user_input,
    clean_text,
    upstream_messages,
    upstream_window,
)
from chatlib.options import MAX_ANSWER_TOKENS, REASONING_EFFORTS, AnswerOptions
from chatlib.ratelimit import RateLimiter
from chatlib.sources import merged
from chatlib.usage import UsageRecord, UsageSink

log = structlog.get_logger(__name__)

REFUSALS_RECORDED_EVERY_S = 10.0
MAX_ANSWER_IMAGES = 8  # pictures kept from one answer; a runaway stream cannot fill memory
VISION_SUGGESTIONS = 3


class FileSource(Protocol):
    """Where the bytes of files attached in earlier turns are read (the attachment store)."""

    async def get(self, owner_key: str, sha256: str) -> bytes: ...


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
    # For "edit": the nth user message (0 = first question). For "retry": the question whose
    # answer is asked again (None: the last one); the old answer stays as another version.
    edit_index: int | None = None
    # Web search, reasoning effort, answer length. None: the conversation's saved options
    # (a new conversation: the defaults). A turn's options are saved with its conversation.
    options: AnswerOptions | None = None
    # Files for the question ("send"/"edit" only), prepared off the loop (attachments.prepare).
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class TurnFrame:
    """The conversation as it should look now. `done` marks the final frame.

    `files` holds the bytes of this turn's files by SHA-256: the question's attachments and
    the pictures the model has drawn so far (the answer's `attachments` refer to them), so a
    page can show them before, and without, reading the store. `dropped_attachments` counts
    older files left out of the request (over the size budget, or pictures for a model that
    cannot see); `notes` says that, and any picture from the model that was left out, in
    sentences for the page to show under the answer.
    """

    history: History
    done: bool = False
    error: errors.ChatError | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)
    dropped_attachments: int = 0
    notes: tuple[str, ...] = ()

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
    images: list[Attachment] = field(default_factory=list)  # drawn by the model, checked
    dropped_attachments: int = 0
    notes: list[str] = field(default_factory=list)

    def apply(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, SourcesFound):
            self.meta = replace(self.meta, sources=merged(self.meta.sources, event.sources))
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
            attachments=tuple(image.ref for image in self.images),
        )
        files = {a.ref.sha256: a.data for a in (*self.request.attachments, *self.images)}
        return TurnFrame(
            (*self.history, answer),
            done=done,
            error=self.failure if done else None,
            files=files,
            dropped_attachments=self.dropped_attachments,
            notes=tuple(self.notes),
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
        usage: UsageSink | None = None,
        catalog: ModelCatalog | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._settings = settings
        self._catalog = catalog  # what each model can do (read images, draw); None: unknown
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
        self,
        request: TurnRequest,
        history: History,
        control: TurnControl,
        *,
        files: FileSource | None = None,
        asked_files: tuple[AttachmentRef, ...] = (),
    ) -> AsyncGenerator[TurnFrame]:
        """The turn's frames, for a caller that handles a consumer leaving (see `run_turn`).

        The request is checked here, the one place: the input, its files, what the model
        can do, the key and the rate limit. The first frame shows the question and an empty
        answer; the last one is `done`. `files` reads the bytes of files attached earlier in
        `history` (without it they are not sent, and counted as dropped); `asked_files` are
        the stored files of a question asked again ("retry").
        """
        turn = await self._start(request, history, asked_files)
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
            async for frame in self._stream(turn, control, files):
                yield frame
        await self._record_usage(turn)
        yield turn.frame(done=True)

    async def _start(
        self, request: TurnRequest, history: History, asked_files: tuple[AttachmentRef, ...]
    ) -> _Turn:
        """Check the request; raise ChatError (nothing sent upstream) when it is refused."""
        request = self._checked(request, asked_files)
        key = self._resolve_key(request.api_key)
        request_id = uuid.uuid4().hex[:16]
        await self._check_rate_limit(request, request_id)
        now = self._wall_clock()
        refs = (*(a.ref for a in request.attachments), *asked_files)
        question = ChatMessage(
            role="user", content=request.user_text, created_at=now, attachments=refs
        )
        return _Turn(
            request=request,
            api_key=key,
            request_id=request_id,
            history=(*history, question),
            meta=AnswerMeta(model=request.model),
            created_at=now,
            text=[],
            reasoning=[],
        )

    def _checked(self, request: TurnRequest, asked_files: tuple[AttachmentRef, ...]) -> TurnRequest:
        """The request cleaned, or InputError: text, files, model, prompt, temperature."""
        files = request.attachments
        if files and request.action == "retry":
            raise errors.InputError(
                "Retry asks the same question again, with its files. To send other files, "
                "edit the question or send a new message."
            )
        check_sizes([(a.ref.name, len(a.data)) for a in files], self._settings.attachment_limits)
        refs = (*(a.ref for a in files), *asked_files)
        text = request.user_text
        if refs and not clean_text(text).strip():
            text = ""  # a file alone is a question
        else:
            text = check_user_input(text, self._settings.max_input_chars)
        model = check_model_id(request.model)
        self._check_capabilities(model, refs)
        return replace(
            request,
            user_text=text,
            model=model,
            options=_checked_options(request.options),
            system_prompt=check_system_prompt(
                request.system_prompt, self._settings.max_input_chars
            ),
            temperature=check_temperature(request.temperature),
        )

    def _model_info(self, model: str) -> ModelInfo | None:
        """The catalog's entry for `model`; None for a custom id (OpenRouter will judge)."""
        if self._catalog is None:
            return None
        return next((m for m in self._catalog.models if m.id == model), None)

    def _check_capabilities(self, model: str, refs: tuple[AttachmentRef, ...]) -> None:
        """InputError for a picture to a model the catalog says cannot see (PDFs go anywhere)."""
        info = self._model_info(model)
        if info is None or info.vision or not any(ref.kind == "image" for ref in refs):
            return
        assert self._catalog is not None  # noqa: S101 - _model_info found the model in it
        seeing = [m.id for m in self._catalog.models if m.vision and m.id != model]
        if not seeing:
            raise errors.InputError(f"{model} can't see images. Pick a model that can.")
        names = ", ".join(seeing[:VISION_SUGGESTIONS])
        more = ", …" if len(seeing) > VISION_SUGGESTIONS else ""
        raise errors.InputError(f"{model} can't see images. Try a model that can: {names}{more}")

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

    async def _stream(
        self, turn: _Turn, control: TurnControl, files: FileSource | None
    ) -> AsyncIterator[TurnFrame]:
        """Frames while the answer streams; the turn's meta is final afterwards."""
        request = turn.request
        upstream, extra_body = await self._request_body(turn, files)
        options = request.options or AnswerOptions()
        log.info(
            "chat.started",
            messages=len(upstream),
            temperature=request.temperature,
            web_search=options.web_search,
            reasoning_effort=options.reasoning_effort,
            max_tokens=extra_body.get("max_tokens"),
            attachments=len(request.attachments),
            dropped_attachments=turn.dropped_attachments,
        )
        started = self._clock()
        if not control.stop_requested:  # the page may have left before the stream began
            events = stream_chat(
                self._clients.get(turn.api_key),
                model=request.model,
                messages=upstream,
                temperature=request.temperature,
                idle_timeout=self._settings.stream_idle_timeout_seconds,
                clock=self._clock,
                extra_body=extra_body,
                pace=ReadPacer(self._budget, clock=self._clock),
            )
            async for batch in coalesce(events, self._budget, control, clock=self._clock):
                for event in batch:
                    # After a Stop the answer keeps what was on screen: later text is dropped.
                    if control.stop_requested and _is_content(event):
                        continue
                    if isinstance(event, ImageDelta):
                        await self._take_image(turn, event)
                    else:
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

    async def _request_body(
        self, turn: _Turn, files: FileSource | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The upstream messages (files as content parts) and the extra request fields.

        Older files that cannot go are counted in the turn and said in its notes.
        """
        request, settings = turn.request, self._settings
        info = self._model_info(request.model)
        history, unseen = turn.history, 0
        if info is not None and not info.vision:
            history, unseen = _without_images(history)
        window = upstream_window(
            history,
            request.system_prompt,
            settings.max_history_messages,
            settings.max_upstream_chars,
        )
        loaded, missing = await _load_files(turn, window, files)
        turn.dropped_attachments = window.dropped_attachments + unseen + missing
        turn.notes.extend(_dropped_notes(window.dropped_attachments, unseen, missing, info))
        sent = [ref for ref in window.attachments if ref.sha256 in loaded]
        extra_body: dict[str, Any] = {}
        plugins = file_parser_plugins(settings.pdf_engine, sent)
        if plugins:
            extra_body["plugins"] = plugins
        if info is not None and info.image_output:
            extra_body["modalities"] = ["image", "text"]
        extra_body.update(_option_fields(request.options or AnswerOptions(), info, settings))
        if not loaded:
            return upstream_messages(window, request.system_prompt, loaded), extra_body
        # Base64 of megabytes of files would hold every other stream up: off the loop.
        built = await asyncio.to_thread(upstream_messages, window, request.system_prompt, loaded)
        return built, extra_body

    async def _take_image(self, turn: _Turn, event: ImageDelta) -> None:
        """Check a picture the model drew and keep it; a bad one is left out, with a note."""
        number = len(turn.images) + 1
        if number > MAX_ANSWER_IMAGES:
            log.warning("chat.image_dropped", reason="too_many", kept=MAX_ANSWER_IMAGES)
            note = f"The model drew more than {MAX_ANSWER_IMAGES} pictures; the rest were left out."
            if note not in turn.notes:
                turn.notes.append(note)
            return
        limits = self._settings.attachment_limits
        try:  # decoding and re-encoding a picture takes milliseconds: off the loop
            image = await asyncio.to_thread(
                image_from_data_url, event.url, limits, f"image-{number}"
            )
        except AttachmentRejected as exc:
            log.warning("chat.image_dropped", reason=type(exc).__name__, url_chars=len(event.url))
            turn.notes.append(f"A picture from the model was left out: {exc.user_message}")
            return
        except Exception as exc:  # noqa: BLE001 - a broken picture never breaks the answer
            log.warning("chat.image_dropped", reason=type(exc).__name__, url_chars=len(event.url))
            turn.notes.append("A picture from the model could not be read and was left out.")
            return
        turn.images.append(image)

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


def _checked_options(options: AnswerOptions | None) -> AnswerOptions:
    """The turn's options (None: the defaults), or InputError naming the field and the rule."""
    if options is None:
        return AnswerOptions()
    if not isinstance(options.web_search, bool):
        raise errors.InputError("web_search must be true or false.")
    if options.reasoning_effort not in REASONING_EFFORTS:
        efforts = ", ".join(REASONING_EFFORTS)
        raise errors.InputError(f"reasoning_effort must be one of {efforts}.")
    tokens = options.max_tokens
    if tokens is not None and (
        not isinstance(tokens, int)
        or isinstance(tokens, bool)
        or not 1 <= tokens <= MAX_ANSWER_TOKENS
    ):
        raise errors.InputError(
            f"max_tokens must be a whole number from 1 to {MAX_ANSWER_TOKENS:,} (or empty)."
        )
    return options


def _option_fields(
    options: AnswerOptions, info: ModelInfo | None, settings: Settings
) -> dict[str, Any]:
    """The request fields of web search, reasoning effort and answer length.

    Reasoning goes to a model the catalog says takes it, or to one it does not list (a
    custom id: OpenRouter judges); max_tokens to every model, within the catalog's cap.
    """
    fields: dict[str, Any] = {}
    if options.web_search:
        parameters = {"max_results": settings.web_search_max_results}
        fields["tools"] = [{"type": "openrouter:web_search", "parameters": parameters}]
    if options.reasoning_effort != "off":
        if info is None or info.reasoning:
            fields["reasoning"] = {"effort": options.reasoning_effort}
        else:
            log.info("chat.reasoning_skipped", reason="model_takes_no_reasoning")
    if options.max_tokens is not None:
        cap = info.max_completion_tokens if info is not None else None
        fields["max_tokens"] = min(options.max_tokens, cap) if cap else options.max_tokens
    return fields


def _is_content(event: StreamEvent) -> bool:
    return isinstance(event, TextDelta | ReasoningDelta | ImageDelta)


def _without_images(history: History) -> tuple[History, int]:
    """`history` with no pictures attached (for a model that cannot see), and how many."""
    dropped = 0
    kept: list[ChatMessage] = []
    for message in history:
        files = tuple(ref for ref in message.attachments if ref.kind != "image")
        if message.role == "user" and len(files) != len(message.attachments):
            dropped += len(message.attachments) - len(files)
            message = replace(message, attachments=files)
        kept.append(message)
    return tuple(kept), dropped


async def _load_files(
    turn: _Turn, window: UpstreamWindow, files: FileSource | None
) -> tuple[dict[str, bytes], int]:
    """The bytes of the files `window` sends, by SHA-256, and how many could not be read."""
    loaded = {a.ref.sha256: a.data for a in turn.request.attachments}
    missing: set[str] = set()
    for ref in window.attachments:
        if ref.sha256 in loaded or ref.sha256 in missing:
            continue
        try:
            if files is None:
                raise errors.AttachmentNotFound()
            loaded[ref.sha256] = await files.get(turn.request.owner_key, ref.sha256)
        except errors.StorageError as exc:
            log.warning("chat.attachment_unavailable", error=type(exc).__name__)
            missing.add(ref.sha256)
    unread = sum(1 for ref in window.attachments if ref.sha256 in missing)
    return loaded, unread


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _dropped_notes(
    over_budget: int, unseen: int, missing: int, info: ModelInfo | None
) -> list[str]:
    """What the page says under the answer about older files that were not sent."""
    notes: list[str] = []
    if over_budget:
        files = _plural(over_budget, "older attachment was", "older attachments were")
        notes.append(f"{files} not sent: over the size budget.")
    if unseen and info is not None:
        pictures = _plural(unseen, "older picture was", "older pictures were")
        notes.append(f"{pictures} not sent: {info.id} can't see images.")
    if missing:
        files = _plural(missing, "older attachment was", "older attachments were")
        notes.append(f"{files} not sent: the file could not be read.")
    return notes


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
