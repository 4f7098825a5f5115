"""Export and import of conversations: a stable JSON format, Markdown, strict import checks.

Export format (schema_version 1)::

    {
      "format": "openrouter-chat",
      "schema_version": 1,
      "exported_at": "2025-01-31T12:00:00Z",
      "conversations": [
        {
          "id": "<32 hex>", "title": "...", "created_at": <unix s>, "updated_at": <unix s>,
          "model": "openai/gpt-4o", "system_prompt": "...", "temperature": 0.3,
          "messages": [
            {"role": "user" | "assistant" | "system", "content": "...",
             "reasoning": "...", "created_at": <unix s>,
             "meta": {"model": "...", "status": "complete", "prompt_tokens": 12,
                      "completion_tokens": 30, "cost_usd": 0.0012, ...}}
          ]
        }
      ]
    }

Import also takes a single conversation object or a list of them. Ids in the file are ignored:
every imported conversation gets a new id, so an import never overwrites anything and nothing
from the file ever becomes part of a path.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import orjson

from chatlib.errors import ImportRejected, StorageError
from chatlib.files import atomic_write, json_bytes
from chatlib.messages import (
    MAX_IDENTIFIER_CHARS,
    AnswerMeta,
    AnswerStatus,
    ChatMessage,
    Role,
    format_cost,
    has_space_or_control,
)
from chatlib.storage import (
    NEW_CHAT_TITLE,
    Conversation,
    ConversationStore,
    auto_title,
    clean_title,
)

EXPORT_FORMAT = "openrouter-chat"
EXPORT_SCHEMA_VERSION = 1
MAX_ERROR_CHARS = 2000
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_ROLES: tuple[Role, ...] = ("user", "assistant", "system")
_STATUSES: tuple[AnswerStatus, ...] = ("streaming", "complete", "stopped", "interrupted")
_LATEST_TIME = 32_503_680_000.0  # year 3000: later timestamps are mistakes, not dates
_TIME_RULE = "Unix seconds between 1970 and 3000"
_MAX_TOKENS = 10**12
_MAX_COST_USD = 1_000_000.0
_MAX_MS = 1e9


# -- export ----------------------------------------------------------------------------------


def _utc(now: datetime) -> datetime:
    """`now` in UTC; a naive datetime is taken to be UTC already."""
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def export_filename(now: datetime) -> str:
    """The download's file name, e.g. `chat_20250131T120000Z.json`."""
    return f"chat_{_utc(now):%Y%m%dT%H%M%SZ}.json"


def export_json(conversations: Sequence[Conversation], *, now: datetime | None = None) -> bytes:
    """One or many conversations in the export format (see the module docstring).

    Only what is in the conversations goes in: no owner key, no API key, no settings.
    """
    exported_at = _utc(now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = {
        "format": EXPORT_FORMAT,
        "schema_version": EXPORT_SCHEMA_VERSION,
        "exported_at": exported_at,
        "conversations": [c.to_dict() for c in conversations],
    }
    return json_bytes(document, orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


# Exports hold private text: each is removed this long after it was made.
EXPORT_MAX_AGE_SECONDS = 3600.0


def write_export(exports_dir: Path, data: bytes, now: datetime, *, name: str | None = None) -> Path:
    """Write an export atomically under `exports_dir` and return its path for download.

    Each export gets its own random subdirectory, so two visitors exporting in the same
    second never share (or overwrite) a file, while the file keeps its readable name
    (`name`, else `export_filename(now)`). Exports older than EXPORT_MAX_AGE_SECONDS are
    removed first. Raises OSError when the disk refuses (the caller can still serve `data`
    from memory).
    """
    exports_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    prune_exports(exports_dir, max_age_seconds=EXPORT_MAX_AGE_SECONDS, now=time.time())
    directory = exports_dir / secrets.token_hex(8)
    directory.mkdir(mode=0o700)
    path = directory / (name or export_filename(now))
    try:
        atomic_write(path, data)
    except OSError:
        with contextlib.suppress(OSError):
            directory.rmdir()
        raise
    return path


def prune_exports(exports_dir: Path, *, max_age_seconds: float, now: float) -> int:
    """Remove exports older than `max_age_seconds` (they hold private text); returns a count."""
    removed = 0
    if not exports_dir.is_dir():
        return 0
    for entry in exports_dir.iterdir():
        try:
            if entry.is_symlink() or not entry.is_dir():
                continue
            if now - entry.stat().st_mtime < max_age_seconds:
                continue
            shutil.rmtree(entry)
        except OSError:
            continue
        removed += 1
    return removed


def export_markdown(conversation: Conversation) -> str:
    """The conversation as a readable Markdown document."""
    lines = [f"# {conversation.title}", ""]
    lines.append(f"- Model: `{conversation.model}`")
    lines.append(f"- Temperature: {conversation.temperature:g}")
    created = datetime.fromtimestamp(conversation.created_at, UTC)
    lines.append(f"- Started: {created:%Y-%m-%d %H:%M} UTC")
    if conversation.system_prompt.strip():
        lines.append("- System prompt:")
        lines.append("")
        lines.extend(f"  > {line}" for line in conversation.system_prompt.splitlines())
    for message in conversation.messages:
        lines.extend(["", "---", "", _markdown_heading(message), ""])
        if message.reasoning:
            lines.append("> *Thinking*")
            lines.append(">")
            lines.extend(f"> {line}" for line in message.reasoning.splitlines())
            lines.append("")
        lines.append(message.content)
        if message.meta is not None and message.meta.error:
            lines.extend(["", f"> ⚠️ {message.meta.error}"])
    return "\n".join(lines) + "\n"


def _markdown_heading(message: ChatMessage) -> str:
    if message.role == "user":
        return "**You**"
    if message.role == "system":
        return "**System**"
    meta = message.meta
    if meta is None:
        return "**Assistant**"
    parts = [meta.model]
    if meta.completion_tokens is not None:
        parts.append(f"{meta.completion_tokens} tokens")
    if meta.cost_usd is not None:
        parts.append(format_cost(meta.cost_usd))
    if meta.status in ("stopped", "interrupted"):
        parts.append(meta.status)
    return f"**Assistant** ({' · '.join(parts)})"


# -- import ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Limits:
    max_messages: int
    max_message_chars: int


def _reject(reason: str) -> NoReturn:
    raise ImportRejected(reason)


def _describe(value: object) -> str:
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


def _show(value: object) -> str:
    """A short, safe rendering of a value from the file for a rejection message."""
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:39] + "…"
        return repr(text)
    return _describe(value)


def _size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    if n >= 1000:
        return f"{n / 1000:.1f} kB"
    return f"{n:,} bytes"


def _size_problem(size: int, limit: int) -> str:
    shown, shown_limit = _size(size), _size(limit)
    if shown == shown_limit:
        shown, shown_limit = f"{size:,} bytes", f"{limit:,} bytes"
    return f"file is {shown}; the limit is {shown_limit}"


def parse_import(
    data: bytes,
    *,
    max_bytes: int,
    max_conversations: int = 1000,
    max_messages: int = 10_000,
    max_message_chars: int = 1_000_000,
    clock: Callable[[], float] = time.time,
) -> list[Conversation]:
    """Check an uploaded file and return its conversations with new ids.

    Raises ImportRejected naming the element and the rule at the first problem; nothing is
    partially accepted. HTML in messages is kept as text (escaping is the display's job).
    """
    if len(data) > max_bytes:
        _reject(_size_problem(len(data), max_bytes))
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]  # Allowed by RFC 8259 §8.1; Windows editors add it.
    if data.startswith(_UTF16_BOMS):
        _reject("file is UTF-16 encoded; it must be UTF-8 (re-save it as UTF-8)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        _reject(f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start:,})")
    if not text.strip():
        _reject("file is empty")
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        _reject(f"file is not JSON: {message if len(message) <= 120 else message[:119] + '…'}")
    items = _conversation_items(document)
    if len(items) > max_conversations:
        _reject(f"file has {len(items):,} conversations; the limit is {max_conversations:,}")
    limits = _Limits(max_messages=max_messages, max_message_chars=max_message_chars)
    now = clock()
    return [_conversation(number, item, limits, now) for number, item in enumerate(items, 1)]


def import_conversations(
    store: ConversationStore,
    owner_key: str,
    data: bytes,
    *,
    max_bytes: int,
    max_conversations: int = 1000,
    max_messages: int = 10_000,
    max_message_chars: int = 1_000_000,
    clock: Callable[[], float] = time.time,
) -> list[Conversation]:
    """Check `data` and store every conversation in it for `owner_key`: all or nothing.

    Imported conversations keep their own dates (their place in the list follows them).
    Raises ImportRejected for a bad file and StorageError when the disk refuses; in both
    cases the owner's conversations are as they were.
    """
    parsed = parse_import(
        data,
        max_bytes=max_bytes,
        max_conversations=max_conversations,
        max_messages=max_messages,
        max_message_chars=max_message_chars,
        clock=clock,
    )
    saved: list[Conversation] = []
    try:
        for conversation in parsed:
            saved.append(store.save(owner_key, conversation, touch=False))
    except StorageError:
        for conversation in saved:
            with contextlib.suppress(StorageError):
                store.delete(owner_key, conversation.id)
        raise
    return saved


def _conversation_items(document: object) -> list[Any]:
    if isinstance(document, list):
        items = document
    elif isinstance(document, dict):
        if "conversations" in document or "format" in document:
            if "format" in document and document["format"] != EXPORT_FORMAT:
                _reject(
                    f"field 'format' is {_show(document['format'])}, expected '{EXPORT_FORMAT}'"
                )
            _check_schema_version(document, "file")
            if "conversations" not in document:
                _reject("file has no 'conversations' list")
            items = document["conversations"]
            if not isinstance(items, list):
                _reject(f"field 'conversations' is {_describe(items)}, expected a list")
        elif "messages" in document:
            items = [document]
        else:
            _reject(
                "the top-level object has neither 'conversations' nor 'messages'; "
                "this is not an OpenRouter Chat export"
            )
    else:
        _reject(
            f"the top level is {_describe(document)}; expected an OpenRouter Chat export "
            "(an object, or a list of conversations)"
        )
    if not items:
        _reject("file contains no conversations")
    return items


def _check_schema_version(obj: dict[str, Any], where: str) -> None:
    if "schema_version" not in obj:
        return
    version = obj["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int | float):
        _reject(f"{where}, field 'schema_version' is {_describe(version)}, expected 1")
    if version > EXPORT_SCHEMA_VERSION:
        _reject(
            f"{where} has schema_version {version:g}, newer than this app reads "
            f"({EXPORT_SCHEMA_VERSION}); update the app to import it"
        )
    if version != EXPORT_SCHEMA_VERSION:
        _reject(f"{where}, field 'schema_version' is {version:g}, expected 1")


def _required(obj: dict[str, Any], name: str, where: str) -> Any:
    if name not in obj:
        _reject(f"{where} is missing the field '{name}'")
    return obj[name]


def _text(value: object, where: str, name: str, max_chars: int) -> str:
    if not isinstance(value, str):
        _reject(f"{where}, field '{name}' is {_describe(value)}, expected a string")
    if len(value) > max_chars:
        _reject(f"{where}, field '{name}' is {len(value):,} characters; the limit is {max_chars:,}")
    return value


def _identifier(value: object, where: str, name: str) -> str:
    """A model or generation id: short, no whitespace, no control characters."""
    text = _text(value, where, name, MAX_IDENTIFIER_CHARS)
    if not text:
        _reject(f"{where}, field '{name}' is empty")
    if has_space_or_control(text):
        _reject(f"{where}, field '{name}' contains spaces or control characters")
    return text


def _number(
    value: object, where: str, name: str, low: float, high: float, expected: str = ""
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _reject(f"{where}, field '{name}' is {_describe(value)}, expected a number")
    if not math.isfinite(value) or not low <= value <= high:
        expected = expected or f"a number from {low:g} to {high:g}"
        _reject(f"{where}, field '{name}' is {value!r}, expected {expected}")
    return float(value)


def _count(value: object, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS:
        _reject(f"{where}, field '{name}' is {_show(value)}, expected a whole number ≥ 0")
    return value


def _conversation(number: int, item: object, limits: _Limits, now: float) -> Conversation:
    where = f"conversation {number}"
    if not isinstance(item, dict):
        _reject(f"{where} is {_describe(item)}, expected an object")
    _check_schema_version(item, where)
    raw_messages = _required(item, "messages", where)
    if not isinstance(raw_messages, list):
        _reject(f"{where}, field 'messages' is {_describe(raw_messages)}, expected a list")
    if len(raw_messages) > limits.max_messages:
        _reject(f"{where} has {len(raw_messages):,} messages; the limit is {limits.max_messages:,}")
    model = _identifier(_required(item, "model", where), where, "model")
    temperature = _number(_required(item, "temperature", where), where, "temperature", 0, 2)
    system_prompt = item.get("system_prompt")
    system_prompt = (
        ""
        if system_prompt is None
        else _text(system_prompt, where, "system_prompt", limits.max_message_chars)
    )
    created_at = _timestamp(item, where, "created_at", default=now)
    updated_at = max(created_at, _timestamp(item, where, "updated_at", default=created_at))
    messages = tuple(
        _message(f"{where}, message {index}", raw, limits, model)
        for index, raw in enumerate(raw_messages, 1)
    )
    title = item.get("title")
    if title is not None and not isinstance(title, str):
        _reject(f"{where}, field 'title' is {_describe(title)}, expected a string")
    title = clean_title(title or "")
    if title == NEW_CHAT_TITLE:
        title = auto_title(next((m.content for m in messages if m.role == "user"), ""))
    return Conversation(
        id=uuid.uuid4().hex,
        title=title,
        created_at=created_at,
        updated_at=updated_at,
        model=model,
        system_prompt=system_prompt,
        temperature=temperature,
        messages=messages,
    )


def _timestamp(obj: dict[str, Any], where: str, name: str, *, default: float) -> float:
    value = obj.get(name)
    if value is None:
        return default
    return _number(value, where, name, 0, _LATEST_TIME, _TIME_RULE)


def _message(where: str, raw: object, limits: _Limits, conversation_model: str) -> ChatMessage:
    if not isinstance(raw, dict):
        _reject(f"{where} is {_describe(raw)}, expected an object")
    role = _required(raw, "role", where)
    if role not in _ROLES:
        _reject(f"{where} has role {_show(role)}, expected user/assistant/system")
    content = _required(raw, "content", where)
    if not isinstance(content, str):
        _reject(f"{where} has content that is {_describe(content)}, expected a string")
    if len(content) > limits.max_message_chars:
        _reject(
            f"{where} content is {len(content):,} characters; "
            f"the limit is {limits.max_message_chars:,}"
        )
    reasoning = raw.get("reasoning")
    reasoning = (
        "" if reasoning is None else _text(reasoning, where, "reasoning", limits.max_message_chars)
    )
    created_at = raw.get("created_at")
    meta = raw.get("meta")
    if meta is not None and not isinstance(meta, dict):
        _reject(f"{where}, field 'meta' is {_describe(meta)}, expected an object")
    return ChatMessage(
        role=role,
        content=content,
        reasoning=reasoning,
        meta=None if meta is None else _meta(f"{where}, meta", meta, conversation_model),
        created_at=None
        if created_at is None
        else _number(created_at, where, "created_at", 0, _LATEST_TIME, _TIME_RULE),
    )


def _meta(where: str, raw: dict[str, Any], conversation_model: str) -> AnswerMeta:
    model = raw.get("model")
    status = raw.get("status", "complete")
    if status not in _STATUSES:
        _reject(f"{where} has status {_show(status)}, expected complete/stopped/interrupted")
    error = raw.get("error")
    generation_id = raw.get("generation_id")

    def count(name: str) -> int | None:
        value = raw.get(name)
        return None if value is None else _count(value, where, name)

    def amount(name: str, high: float) -> float | None:
        value = raw.get(name)
        return None if value is None else _number(value, where, name, 0, high)

    return AnswerMeta(
        model=conversation_model if model is None else _identifier(model, where, "model"),
        # An answer in a file is not streaming any more.
        status="interrupted" if status == "streaming" else status,
        error=None if error is None else _text(error, where, "error", MAX_ERROR_CHARS),
        prompt_tokens=count("prompt_tokens"),
        completion_tokens=count("completion_tokens"),
        reasoning_tokens=count("reasoning_tokens"),
        cost_usd=amount("cost_usd", _MAX_COST_USD),
        ttft_ms=amount("ttft_ms", _MAX_MS),
        latency_ms=amount("latency_ms", _MAX_MS),
        generation_id=None
        if generation_id is None
        else _identifier(generation_id, where, "generation_id"),
    )
