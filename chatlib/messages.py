"""Pure functions on chat history: upstream messages, truncation, input checks, display."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from chatlib.errors import InputError

Role = Literal["user", "assistant", "system"]
AnswerStatus = Literal["streaming", "complete", "stopped", "interrupted"]


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

    @property
    def tokens_per_second(self) -> float | None:
        """Completion tokens per second after the first token (None when unknown)."""
        if not self.completion_tokens or self.latency_ms is None or self.ttft_ms is None:
            return None
        generating_ms = self.latency_ms - self.ttft_ms
        if generating_ms <= 0:
            return None
        return self.completion_tokens / (generating_ms / 1000)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used by the UI state and, later, storage)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerMeta:
        """Inverse of `to_dict`; unknown keys are ignored."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation."""

    role: Role
    content: str
    reasoning: str = ""
    meta: AnswerMeta | None = field(default=None)
    created_at: float | None = None  # Unix time (UTC seconds)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.reasoning:
            data["reasoning"] = self.reasoning
        if self.meta is not None:
            data["meta"] = self.meta.to_dict()
        if self.created_at is not None:
            data["created_at"] = self.created_at
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatMessage:
        """Inverse of `to_dict`."""
        role = data.get("role")
        if role not in ("user", "assistant", "system"):
            raise ValueError(f"role must be user, assistant or system, got {role!r}")
        content = data.get("content", "")
        if not isinstance(content, str):
            raise ValueError("content must be a string")
        meta = data.get("meta")
        created_at = data.get("created_at")
        return cls(
            role=role,
            content=content,
            reasoning=str(data.get("reasoning") or ""),
            meta=AnswerMeta.from_dict(meta) if isinstance(meta, dict) else None,
            created_at=float(created_at) if isinstance(created_at, int | float) else None,
        )


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
    return tuple(ChatMessage.from_dict(item) for item in items)


def history_to_dicts(history: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Serialize a history for the UI state."""
    return [message.to_dict() for message in history]


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


MAX_IDENTIFIER_CHARS = 200  # model and generation ids


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


def build_upstream_messages(
    history: Sequence[ChatMessage],
    system_prompt: str,
    max_history: int,
    max_chars: int | None = None,
) -> list[dict[str, str]]:
    """The OpenAI-format messages sent upstream: system prompt + the last `max_history`.

    With `max_chars`, older messages are also left out once the text would pass that many
    characters (the newest message is always sent): what a turn can cost stays bounded.
    """
    sendable = [
        m for m in history if m.role != "system" and (m.role == "user" or m.content.strip())
    ]
    recent = sendable[-max_history:]
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
    messages: list[dict[str, str]] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": clean_text(system_prompt.strip())})
    messages.extend({"role": m.role, "content": clean_text(m.content)} for m in recent)
    return messages


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
    elif meta.status == "interrupted":
        parts.append("interrupted")
    return " · ".join(parts)
