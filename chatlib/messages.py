"""Pure functions on chat history: upstream messages, truncation, input checks, display."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, NoReturn, get_args

from chatlib.attachments import (
    ATTACHMENT_KINDS,
    IMAGE_MIMES,
    MAX_NAME_CHARS,
    PDF_MIME,
    SHA256_HEX_CHARS,
    TEXT_MIME,
    AttachmentKind,
    AttachmentRef,
    content_parts,
)
from chatlib.errors import InputError, is_out_of_credits
from chatlib.sources import MAX_SOURCE_TITLE_CHARS, MAX_SOURCE_URL_CHARS, MAX_SOURCES, Source

Role = Literal["user", "assistant", "system"]
AnswerStatus = Literal["streaming", "complete", "stopped", "interrupted"]
# The one list of each: stored files, imports and the API history are checked against these.
ROLES: Final[tuple[Role, ...]] = get_args(Role)
ANSWER_STATUSES: Final[tuple[AnswerStatus, ...]] = get_args(AnswerStatus)
MAX_IDENTIFIER_CHARS = 200  # model and generation ids
MAX_ERROR_CHARS = 2000  # an answer's error text, in imported files
LATEST_TIME = 32_503_680_000.0  # year 3000: later timestamps are mistakes, not dates
_TIME_RULE = "Unix seconds between 1970 and 3000"
_MAX_TOKENS = 10**12
_MAX_COST_USD = 1_000_000.0
_MAX_MS = 1e9
# Files per message the reader takes, whatever the settings say now: a sanity bound for
# imported and stored messages (uploads are held to MAX_ATTACHMENTS_PER_MESSAGE).
MAX_STORED_ATTACHMENTS = 32
_MAX_IMAGE_SIDE = 100_000


@dataclass(frozen=True)
class AnswerMeta:
    """What we know about one assistant answer: where it came from and what it cost."""

    model: str
    status: AnswerStatus = "streaming"
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    generation_id: str | None = None
    # Web pages the answer cites (web search); shown under it, saved and exported with it.
    sources: tuple[Source, ...] = ()

    @property
    def tokens_per_second(self) -> float | None:
        """Completion tokens per second after the first token (None when unknown)."""
        if not self.completion_tokens or self.latency_ms is None or self.ttft_ms is None:
            return None
        generating_ms = self.latency_ms - self.ttft_ms
        if generating_ms <= 0:
            return None
        return self.completion_tokens / (generating_ms / 1000)

    def measures(self) -> dict[str, Any]:
        """Tokens, cost and timings: the fields a log line and a usage row both carry."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": self.cost_usd,
            "ttft_ms": self.ttft_ms,
            "latency_ms": self.latency_ms,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used by the UI state and, later, storage)."""
        data = {k: v for k, v in self.__dict__.items() if v is not None and k != "sources"}
        if self.sources:
            data["sources"] = [s.to_dict() for s in self.sources]
        return data


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation."""

    role: Role
    content: str
    reasoning: str = ""
    meta: AnswerMeta | None = field(default=None)
    created_at: float | None = None  # Unix time (UTC seconds)
    # Stable within its conversation once saved ("" until then; see chatlib.branches). Not
    # compared: two messages are equal by what they say, whatever node holds them.
    id: str = field(default="", compare=False)
    # Files attached to a question, or drawn by the model in an answer (chatlib.attachments).
    attachments: tuple[AttachmentRef, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.id:
            data["id"] = self.id
        if self.attachments:
            data["attachments"] = [a.to_dict() for a in self.attachments]
        if self.reasoning:
            data["reasoning"] = self.reasoning
        if self.meta is not None:
            data["meta"] = self.meta.to_dict()
        if self.created_at is not None:
            data["created_at"] = self.created_at
        return data

    @classmethod
    def from_dict(cls, data: object) -> ChatMessage:
        """Inverse of `to_dict`; SchemaError (a ValueError) names what is wrong."""
        return parse_message(data)


History = tuple[ChatMessage, ...]


def history_from_dicts(
    items: Sequence[dict[str, Any]] | None,
    *,
    max_messages: int | None = None,
    max_chars: int | None = None,
) -> History:
    """Parse a list of message dicts (UI state or API input) into a history.

    With limits (for untrusted input), the count and the total text are checked before
    anything is parsed; ValueError says which limit was passed.
    """
    items = items or ()
    if max_messages is not None and len(items) > max_messages:
        raise ValueError(f"at most {max_messages:,} messages are accepted, got {len(items):,}")
    if max_chars is not None:
        total = sum(len(item.get("content") or "") for item in items if isinstance(item, dict))
        if total > max_chars:
            raise ValueError(f"at most {max_chars:,} characters in all, got {total:,}")
    return tuple(parse_message(item) for item in items)


def clean_text(text: str) -> str:
    """Text that can be encoded and sent: NULs dropped, lone surrogates replaced."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def check_user_input(text: str, max_chars: int) -> str:
    """Return the message to send, or raise InputError saying why it cannot be sent."""
    cleaned = clean_text(text)
    if not cleaned.strip():
        raise InputError("Type a message first.")
    if len(cleaned) > max_chars:
        raise InputError(
            f"Your message is {len(cleaned):,} characters long; the limit is {max_chars:,}. "
            "Shorten it and send again (your text is still in the box)."
        )
    return cleaned


def check_system_prompt(text: str, max_chars: int) -> str:
    """Return the system prompt to send, or raise InputError when it is too long."""
    cleaned = clean_text(text)
    if len(cleaned) > max_chars:
        raise InputError(
            f"The system prompt is {len(cleaned):,} characters long; the limit is "
            f"{max_chars:,}. Shorten it and send again."
        )
    return cleaned


def has_space_or_control(text: str) -> bool:
    """Whether `text` holds white space or control characters (an id must not)."""
    return any(c.isspace() or unicodedata.category(c).startswith("C") for c in text)


def check_model_id(model: str) -> str:
    """Return a model id that can be sent (and logged), or raise InputError."""
    model = clean_text(model).strip()
    if not model:
        raise InputError("Pick a model first.")
    if len(model) > MAX_IDENTIFIER_CHARS or has_space_or_control(model):
        raise InputError(
            "That is not a model id: ids look like openai/gpt-4o (no spaces, at most "
            f"{MAX_IDENTIFIER_CHARS} characters)."
        )
    return model


def check_temperature(value: object) -> float:
    """Return the temperature as a float, or raise InputError unless it is within 0 to 2."""
    try:
        temperature = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        temperature = math.nan
    if not 0.0 <= temperature <= 2.0:  # also refuses NaN
        raise InputError("The temperature must be a number between 0 and 2.")
    return temperature


@dataclass(frozen=True)
class UpstreamWindow:
    """What a turn sends upstream: the recent messages, each with the files that fit."""

    messages: tuple[ChatMessage, ...]
    dropped_attachments: int = 0  # older files left out to stay within the budget

    @property
    def attachments(self) -> tuple[AttachmentRef, ...]:
        """Every file the window sends, oldest first (the bytes to load)."""
        return tuple(ref for m in self.messages for ref in m.attachments)


def upstream_window(
    history: Sequence[ChatMessage],
    system_prompt: str,
    max_history: int,
    max_chars: int | None = None,
) -> UpstreamWindow:
    """The last `max_history` messages, within `max_chars` of text and files together.

    The newest message (the question) is always sent whole, with its files. Text comes
    before files: older messages are left out only once their text alone passes the budget;
    what the budget has left then goes to older files, newest first, so past it the OLDEST
    files are dropped first (counted in `dropped_attachments`). A file counts what it adds
    to the request (`sent_chars`, its data URL). Only questions send files: a picture the
    model drew stays in the chat but is not sent back.
    """
    sendable = [
        m for m in history if m.role != "system" and (m.role == "user" or m.content.strip())
    ]
    recent = [m if m.role == "user" else replace(m, attachments=()) for m in sendable]
    recent = recent[-max_history:]
    if max_chars is not None and recent:
        budget = max_chars - len(system_prompt) - len(recent[-1].content)
        keep = 1
        for message in reversed(recent[:-1]):
            budget -= len(message.content)
            if budget < 0:
                break
            keep += 1
        recent = recent[-keep:]
    # Never start the window with an orphan assistant answer: most providers reject it.
    while recent and recent[0].role == "assistant":
        recent = recent[1:]
    if max_chars is None or not recent:
        return UpstreamWindow(tuple(recent))
    left = max_chars - len(system_prompt) - sum(len(m.content) for m in recent)
    left -= sum(sent_chars(ref) for ref in recent[-1].attachments)
    return _fit_attachments(recent, left)


def sent_chars(ref: AttachmentRef) -> int:
    """What a file adds to a request, from its reference alone (no bytes needed).

    Exactly `upstream_size` of its part for images and PDFs (a base64 data URL); for a text
    file, its bytes (at least its characters) plus the fence and its name.
    """
    if ref.kind == "text":
        return ref.size + len(ref.name) + 16
    return len(f"data:{ref.mime};base64,") + 4 * ((ref.size + 2) // 3)


def _fit_attachments(recent: list[ChatMessage], left: int) -> UpstreamWindow:
    """Keep the newest older files that fit in `left` characters; drop all before them."""
    fitted: list[ChatMessage] = [recent[-1]]
    dropped = 0
    for message in reversed(recent[:-1]):
        kept: list[AttachmentRef] = []
        for ref in reversed(message.attachments):
            size = sent_chars(ref)
            if dropped or size > left:
                dropped += 1
                continue
            left -= size
            kept.append(ref)
        if len(kept) != len(message.attachments):
            message = replace(message, attachments=tuple(reversed(kept)))
        fitted.append(message)
    return UpstreamWindow(tuple(reversed(fitted)), dropped)


def upstream_messages(
    window: UpstreamWindow, system_prompt: str, files: Mapping[str, bytes]
) -> list[dict[str, Any]]:
    """The OpenAI-format messages of `window`: a question with files as content parts.

    `files` holds the bytes by SHA-256; a file without bytes there is left out (the caller
    loaded them and counts what it could not).
    """
    messages: list[dict[str, Any]] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": clean_text(system_prompt.strip())})
    for m in window.messages:
        present = [(r, files[r.sha256]) for r in m.attachments if r.sha256 in files]
        messages.append({"role": m.role, "content": content_parts(clean_text(m.content), present)})
    return messages


def build_upstream_messages(
    history: Sequence[ChatMessage],
    system_prompt: str,
    max_history: int,
    max_chars: int | None = None,
    files: Mapping[str, bytes] | None = None,
) -> list[dict[str, Any]]:
    """The OpenAI-format messages sent upstream: system prompt + the last `max_history`.

    With `max_chars`, older messages (and first their files) are also left out once the
    text would pass that many characters (the newest message is always sent): what a turn
    can cost stays bounded. See `upstream_window` and `upstream_messages`.
    """
    window = upstream_window(history, system_prompt, max_history, max_chars)
    return upstream_messages(window, system_prompt, files or {})


def strip_last_turn(history: History) -> tuple[History, str | None]:
    """Remove the last user message and everything after it; return it as text too."""
    for index in range(len(history) - 1, -1, -1):
        if history[index].role == "user":
            return history[:index], history[index].content
    return history, None


def user_message_index(history: Sequence[ChatMessage], nth_user: int) -> int | None:
    """Index in `history` of the `nth_user`-th (0-based) user message."""
    seen = -1
    for index, message in enumerate(history):
        if message.role == "user":
            seen += 1
            if seen == nth_user:
                return index
    return None


def format_cost(cost_usd: float) -> str:
    """Dollars with enough precision for sub-cent answers."""
    if cost_usd == 0:
        return "$0"
    if cost_usd < 0.01:
        return f"${cost_usd:.5f}".rstrip("0")
    return f"${cost_usd:.4f}".rstrip("0").rstrip(".")


def format_answer_footer(meta: AnswerMeta) -> str:
    """One line under an answer: model, tokens, cost, time to first token, speed."""
    parts = [meta.model]
    if meta.completion_tokens is not None:
        tokens = f"{meta.completion_tokens} tokens"
        if meta.prompt_tokens is not None:
            tokens = f"{meta.prompt_tokens} → {meta.completion_tokens} tokens"
        parts.append(tokens)
    if meta.cost_usd is not None:
        parts.append(format_cost(meta.cost_usd))
    if meta.ttft_ms is not None:
        parts.append(f"TTFT {meta.ttft_ms / 1000:.2f} s")
    speed = meta.tokens_per_second
    if speed is not None:
        parts.append(f"{speed:.0f} tok/s")
    if meta.status == "stopped":
        parts.append("stopped")
    elif meta.status == "interrupted" and is_out_of_credits(meta.error):
        parts.append("failed: out of credit")  # stored as "interrupted": older imports read it
    elif meta.status == "interrupted":
        parts.append("interrupted")
    return " · ".join(parts)


# -- the one reader of messages: stored files and imports (strict) and the API's history ------


class SchemaError(ValueError):
    """A document breaks the conversation schema; `reason` names the element, field and rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImportLimits:
    """The parser's strict mode, for files from outside: sizes and ranges are checked too."""

    max_messages: int = 10_000
    max_message_chars: int = 1_000_000


def reject(reason: str) -> NoReturn:
    """Refuse a document: `reason` names the element, the field and the rule."""
    raise SchemaError(reason)


def describe(value: object) -> str:
    """The JSON type of `value`, as a phrase."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def show(value: object) -> str:
    """A short, safe rendering of a value from a document for a rejection message."""
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:39] + "…"
        return repr(text)
    return describe(value)


def required(obj: dict[str, Any], name: str, where: str) -> Any:
    """The field `name` of `obj`; refused when it is missing."""
    if name not in obj:
        reject(f"{where} is missing the field '{name}'")
    return obj[name]


def text_field(value: object, where: str, name: str, max_chars: int | None = None) -> str:
    """A string, at most `max_chars` long when given."""
    if not isinstance(value, str):
        reject(f"{where}, field '{name}' is {describe(value)}, expected a string")
    if max_chars is not None and len(value) > max_chars:
        reject(f"{where}, field '{name}' is {len(value):,} characters; the limit is {max_chars:,}")
    return value


def identifier_field(value: object, where: str, name: str, *, strict: bool) -> str:
    """A model or generation id; strictly: short, no whitespace, no control characters."""
    if not strict:
        return text_field(value, where, name)
    text = text_field(value, where, name, MAX_IDENTIFIER_CHARS)
    if not text:
        reject(f"{where}, field '{name}' is empty")
    if has_space_or_control(text):
        reject(f"{where}, field '{name}' contains spaces or control characters")
    return text


def number_field(
    value: object,
    where: str,
    name: str,
    low: float = -math.inf,
    high: float = math.inf,
    expected: str = "",
) -> float:
    """A finite number (not a boolean) from `low` to `high`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        reject(f"{where}, field '{name}' is {describe(value)}, expected a number")
    if not math.isfinite(value) or not low <= value <= high:
        bounded = math.isfinite(low) and math.isfinite(high)
        expected = expected or (f"a number from {low:g} to {high:g}" if bounded else "finite")
        reject(f"{where}, field '{name}' is {value!r}, expected {expected}")
    return float(value)


def timestamp_field(value: object, where: str, name: str, *, strict: bool) -> float:
    """Unix seconds; strictly, between 1970 and 3000."""
    if not strict:
        return number_field(value, where, name)
    return number_field(value, where, name, 0, LATEST_TIME, _TIME_RULE)


def _count_field(value: object, where: str, name: str, *, strict: bool) -> int:
    high = _MAX_TOKENS if strict else math.inf
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        reject(f"{where}, field '{name}' is {show(value)}, expected a whole number ≥ 0")
    return value


def parse_message(
    raw: object,
    *,
    where: str = "message",
    limits: ImportLimits | None = None,
    model: str | None = None,
) -> ChatMessage:
    """One message; with `limits` (strict, for imports) sizes and ranges are checked too.

    `model` is the conversation's: strictly, an answer without its own model gets it.
    Raises SchemaError naming the element, the field and the rule.
    """
    if not isinstance(raw, dict):
        reject(f"{where} is {describe(raw)}, expected an object")
    strict = limits is not None
    role = required(raw, "role", where)
    if role not in ROLES:
        reject(f"{where} has role {show(role)}, expected user/assistant/system")
    content = required(raw, "content", where) if strict else raw.get("content", "")
    if not isinstance(content, str):
        reject(f"{where} has content that is {describe(content)}, expected a string")
    max_chars = None if limits is None else limits.max_message_chars
    if max_chars is not None and len(content) > max_chars:
        reject(f"{where} content is {len(content):,} characters; the limit is {max_chars:,}")
    reasoning = raw.get("reasoning")
    created_at = raw.get("created_at")
    message_id = raw.get("id")
    meta = raw.get("meta")
    if meta is not None and not isinstance(meta, dict):
        reject(f"{where}, field 'meta' is {describe(meta)}, expected an object")
    return ChatMessage(
        role=role,
        content=content,
        reasoning="" if reasoning is None else text_field(reasoning, where, "reasoning", max_chars),
        meta=None if meta is None else _parse_meta(meta, f"{where}, meta", strict, model),
        created_at=None
        if created_at is None
        else timestamp_field(created_at, where, "created_at", strict=strict),
        id="" if message_id is None else message_id_field(message_id, where),
        attachments=parse_attachments(raw.get("attachments"), where),
    )


# -- attachment references (the bytes live in the attachment store; see chatlib.attachments) --

_SHA256_RE = re.compile(f"[0-9a-f]{{{SHA256_HEX_CHARS}}}")
_KIND_OF_MIME: Final[dict[str, AttachmentKind]] = {
    **dict.fromkeys(IMAGE_MIMES, "image"),
    PDF_MIME: "pdf",
    TEXT_MIME: "text",
}


def attachment_kind(mime: str) -> AttachmentKind | None:
    """The kind of a stored file's type (None: a type this app does not keep)."""
    return _KIND_OF_MIME.get(mime)


def parse_attachments(raw: object, where: str) -> tuple[AttachmentRef, ...]:
    """A message's `attachments`: a list of at most MAX_STORED_ATTACHMENTS references."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        reject(f"{where}, field 'attachments' is {describe(raw)}, expected a list")
    if len(raw) > MAX_STORED_ATTACHMENTS:
        reject(f"{where} has {len(raw):,} attachments; the limit is {MAX_STORED_ATTACHMENTS}")
    return tuple(
        parse_attachment_ref(item, f"{where}, attachment {n}") for n, item in enumerate(raw, 1)
    )


def parse_attachment_ref(raw: object, where: str) -> AttachmentRef:
    """One file reference: its hash, a plain name, a kept type with its kind, size, sides."""
    if not isinstance(raw, dict):
        reject(f"{where} is {describe(raw)}, expected an object")
    sha256 = text_field(required(raw, "sha256", where), where, "sha256")
    if _SHA256_RE.fullmatch(sha256) is None:
        reject(f"{where}, field 'sha256' is {show(sha256)}, expected 64 lowercase hex digits")
    mime = text_field(required(raw, "mime", where), where, "mime")
    kind = attachment_kind(mime)
    if kind is None:
        reject(f"{where}, field 'mime' is {show(mime)}, expected one of {', '.join(_KIND_OF_MIME)}")
    stated_kind = required(raw, "kind", where)
    if stated_kind not in ATTACHMENT_KINDS:
        reject(f"{where}, field 'kind' is {show(stated_kind)}, expected image/pdf/text")
    if stated_kind != kind:
        reject(f"{where}, field 'kind' is {show(stated_kind)}, but a {mime} file is {kind!r}")
    width, height = raw.get("width"), raw.get("height")
    return AttachmentRef(
        sha256=sha256,
        name=attachment_name_field(required(raw, "name", where), where),
        mime=mime,
        size=_count_field(required(raw, "size", where), where, "size", strict=True),
        kind=kind,
        width=None if width is None else _side_field(width, where, "width"),
        height=None if height is None else _side_field(height, where, "height"),
    )


def attachment_name_field(value: object, where: str) -> str:
    """A file's shown name: 1 to MAX_NAME_CHARS, no path, no control characters."""
    name = text_field(value, where, "name", MAX_NAME_CHARS)
    if not name.strip() or name in (".", ".."):
        reject(f"{where}, field 'name' is {show(name)}, expected a file name")
    if "/" in name or "\\" in name or any(_hidden(c) for c in name):
        reject(f"{where}, field 'name' is {show(name)}, expected a plain file name (no path)")
    return name


# Bidirectional overrides can make "gpj.exe" show as "exe.jpg".
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _hidden(c: str) -> bool:
    return c in _BIDI_CONTROLS or unicodedata.category(c) in ("Cc", "Cs")


def _side_field(value: object, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_IMAGE_SIDE:
        reject(f"{where}, field '{name}' is {show(value)}, expected a whole number of pixels")
    return value


_MESSAGE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def message_id_field(value: object, where: str, name: str = "id") -> str:
    """A message id: 1 to 64 letters, digits, '-' or '_' (ids end up in the page's state)."""
    text = text_field(value, where, name)
    if _MESSAGE_ID_RE.fullmatch(text) is None:
        reject(f"{where}, field '{name}' is {show(text)}, expected 1 to 64 letters, digits, - or _")
    return text


def _parse_meta(raw: dict[str, Any], where: str, strict: bool, model: str | None) -> AnswerMeta:
    status = raw.get("status", "complete")
    if status not in ANSWER_STATUSES:
        reject(f"{where} has status {show(status)}, expected complete/stopped/interrupted")
    own_model = raw.get("model")
    if own_model is None and model is not None:
        own_model = model
    error = raw.get("error")
    generation_id = raw.get("generation_id")

    def count(name: str) -> int | None:
        value = raw.get(name)
        return None if value is None else _count_field(value, where, name, strict=strict)

    def amount(name: str, high: float) -> float | None:
        value = raw.get(name)
        if value is None:
            return None
        return number_field(value, where, name, *((0, high) if strict else ()))

    return AnswerMeta(
        model=identifier_field(own_model, where, "model", strict=strict),
        status=status,
        error=None
        if error is None
        else text_field(error, where, "error", MAX_ERROR_CHARS if strict else None),
        prompt_tokens=count("prompt_tokens"),
        completion_tokens=count("completion_tokens"),
        reasoning_tokens=count("reasoning_tokens"),
        cost_usd=amount("cost_usd", _MAX_COST_USD),
        ttft_ms=amount("ttft_ms", _MAX_MS),
        latency_ms=amount("latency_ms", _MAX_MS),
        generation_id=None
        if generation_id is None
        else identifier_field(generation_id, where, "generation_id", strict=strict),
        sources=parse_sources(raw.get("sources"), where, strict=strict),
    )


def parse_sources(raw: object, where: str, *, strict: bool) -> tuple[Source, ...]:
    """An answer's `sources`: a list of `{"url", "title"?}`; strictly, within the limits.

    Any URL text is kept (it is what the model cited): whether a page may make it a link
    is `Source.link`'s decision, made when it is shown.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        reject(f"{where}, field 'sources' is {describe(raw)}, expected a list")
    if strict and len(raw) > MAX_SOURCES:
        reject(f"{where} has {len(raw):,} sources; the limit is {MAX_SOURCES}")
    return tuple(
        _parse_source(item, f"{where}, source {n}", strict) for n, item in enumerate(raw, 1)
    )


def _parse_source(raw: object, where: str, strict: bool) -> Source:
    if not isinstance(raw, dict):
        reject(f"{where} is {describe(raw)}, expected an object")
    url = text_field(
        required(raw, "url", where), where, "url", MAX_SOURCE_URL_CHARS if strict else None
    )
    if strict and not url.strip():
        reject(f"{where}, field 'url' is empty")
    title = raw.get("title")
    if title is not None:
        title = text_field(title, where, "title", MAX_SOURCE_TITLE_CHARS if strict else None)
    return Source(url=url, title=title or "")
