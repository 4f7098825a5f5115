# ruff: noqa
# Frozen copy of chatlib/transfer.py at commit 68aecd3 (before message versions): the parser of
# the app as released, to prove its imports still read new exports. Imports point here.
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
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from chatlib.errors import ImportRejected
from chatlib.files import atomic_write, json_bytes
from tests.legacy.messages import (
    ChatMessage,
    ImportLimits,
    SchemaError,
    describe,
    format_cost,
    reject,
    show,
)
from tests.legacy.storage import (
    SCHEMA_VERSION,
    Conversation,
    check_schema_version,
    parse_conversation,
)

EXPORT_FORMAT = "openrouter-chat"
EXPORT_SCHEMA_VERSION = SCHEMA_VERSION  # an export holds conversations in the stored schema
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
ExportFormat = Literal["json", "markdown"]


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


@dataclass(frozen=True)
class ExportFile:
    """A download: its file name and its bytes."""

    name: str
    data: bytes


def build_export(
    conversations: Sequence[Conversation], fmt: ExportFormat, now: datetime
) -> ExportFile:
    """The download for `conversations`: JSON (any number) or Markdown (the first one)."""
    if fmt == "markdown":
        name = export_filename(now).removesuffix(".json") + ".md"
        return ExportFile(name, export_markdown(conversations[0]).encode("utf-8"))
    return ExportFile(export_filename(now), export_json(conversations, now=now))


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
    """Check an uploaded file and return its conversations with new ids (the one validator).

    Raises ImportRejected naming the element and the rule at the first problem; nothing is
    partially accepted. HTML in messages is kept as text (escaping is the display's job).
    """
    try:
        items = _conversation_items(_document(data, max_bytes))
        if len(items) > max_conversations:
            reject(f"file has {len(items):,} conversations; the limit is {max_conversations:,}")
        limits = ImportLimits(max_messages=max_messages, max_message_chars=max_message_chars)
        now = clock()
        return [
            parse_conversation(item, where=f"conversation {number}", limits=limits, now=now)
            for number, item in enumerate(items, 1)
        ]
    except SchemaError as exc:
        raise ImportRejected(exc.reason) from None


def _document(data: bytes, max_bytes: int) -> object:
    """The file's JSON value; refused when it is too big, not UTF-8, empty or not JSON."""
    if len(data) > max_bytes:
        reject(_size_problem(len(data), max_bytes))
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]  # Allowed by RFC 8259 §8.1; Windows editors add it.
    if data.startswith(_UTF16_BOMS):
        reject("file is UTF-16 encoded; it must be UTF-8 (re-save it as UTF-8)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        reject(f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start:,})")
    if not text.strip():
        reject("file is empty")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        reject(f"file is not JSON: {message if len(message) <= 120 else message[:119] + '…'}")


def _conversation_items(document: object) -> list[Any]:
    if isinstance(document, list):
        items = document
    elif isinstance(document, dict):
        if "conversations" in document or "format" in document:
            if "format" in document and document["format"] != EXPORT_FORMAT:
                reject(f"field 'format' is {show(document['format'])}, expected '{EXPORT_FORMAT}'")
            check_schema_version(document, "file")
            if "conversations" not in document:
                reject("file has no 'conversations' list")
            items = document["conversations"]
            if not isinstance(items, list):
                reject(f"field 'conversations' is {describe(items)}, expected a list")
        elif "messages" in document:
            items = [document]
        else:
            reject(
                "the top-level object has neither 'conversations' nor 'messages'; "
                "this is not an OpenRouter Chat export"
            )
    else:
        reject(
            f"the top level is {describe(document)}; expected an OpenRouter Chat export "
            "(an object, or a list of conversations)"
        )
    if not items:
        reject("file contains no conversations")
    return items
