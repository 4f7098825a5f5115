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
          "options": {"web_search": false, "reasoning_effort": "off", "max_tokens": null},
          "messages": [
            {"role": "user" | "assistant" | "system", "content": "...",
             "reasoning": "...", "created_at": <unix s>,
             "meta": {"model": "...", "status": "complete", "prompt_tokens": 12,
                      "completion_tokens": 30, "cost_usd": 0.0012, ...,
                      "sources": [{"url": "https://...", "title": "..."}]},
             "id": "<message id>"}
          ],
          "branches": [
            {"id": "<message id>", "parent_id": "<message id>" | null, "role": ..., ...}
          ]
        }
      ],
      "attachments": {
        "<sha256>": {"name": "photo.jpg", "mime": "image/jpeg", "data_base64": "..."}
      }
    }

`options` (optional: missing means the defaults) is what the chat asks answers for: web
search, reasoning effort (off/low/medium/high), an answer length in tokens (null: the
model's own). An answer's `sources` are the pages it cited, as cited: any URL text is
kept, and shown as a link only when it is http(s).

`messages` is the branch on screen, flat, as before versions existed, so older versions of
the app import it (they ignore `branches` and ids). `branches` (optional) holds the other
versions of messages: a message object plus its parent's id (null: a version of the first
message). Import checks the tree: unique ids, known parents, no cycles, and counts every
version against the message limit.

A message's files are references, `"attachments": [{"sha256", "name", "mime", "size",
"kind", "width", "height"}]`; the bytes of every file referred to (by any version) are in the
top-level `attachments` map, once each. Older versions of the app ignore both. Import checks
each file by the rules uploads follow (its type as sniffed from the bytes is the one stated,
its size is within MAX_ATTACHMENT_BYTES, its SHA-256 is its key) and that every reference
has its file and agrees with it; any problem refuses the whole file.

A Markdown export of a chat with files is a zip: `chat.md` and the files under `files/`.

Import also takes a single conversation object or a list of them. Ids in the file are ignored:
every imported conversation gets a new id, so an import never overwrites anything and nothing
from the file ever becomes part of a path.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import re
import secrets
import shutil
import time
import unicodedata
import zipfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import orjson
import structlog

from chatlib.attachments import Attachment, AttachmentLimits, AttachmentRef, sniff
from chatlib.branches import versions_of
from chatlib.errors import AttachmentNotFound, ImportRejected
from chatlib.files import atomic_write, json_bytes
from chatlib.messages import (
    ChatMessage,
    ImportLimits,
    SchemaError,
    describe,
    format_cost,
    reject,
    show,
)
from chatlib.options import AnswerOptions
from chatlib.sources import Source
from chatlib.storage import (
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
MARKDOWN_IN_ZIP = "chat.md"
FILES_IN_ZIP = "files"

log = structlog.get_logger(__name__)


# -- export ----------------------------------------------------------------------------------


def _utc(now: datetime) -> datetime:
    """`now` in UTC; a naive datetime is taken to be UTC already."""
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def export_filename(now: datetime) -> str:
    """The download's file name, e.g. `chat_20250131T120000Z.json`."""
    return f"chat_{_utc(now):%Y%m%dT%H%M%SZ}.json"


def export_json(
    conversations: Sequence[Conversation],
    *,
    now: datetime | None = None,
    files: Mapping[str, Attachment] | None = None,
) -> bytes:
    """One or many conversations in the export format (see the module docstring).

    Only what is in the conversations goes in: no owner key, no API key, no settings.
    `files` (by SHA-256) are the bytes of the files the messages refer to; each one referred
    to goes in once, under `attachments`.
    """
    exported_at = _utc(now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    document: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "schema_version": EXPORT_SCHEMA_VERSION,
        "exported_at": exported_at,
        "conversations": [c.to_dict() for c in conversations],
    }
    referred = {ref.sha256 for ref in refs_of(conversations)}
    carried = {sha: files[sha] for sha in sorted(referred) if files and sha in files}
    if carried:
        document["attachments"] = {
            sha: {
                "name": file.ref.name,
                "mime": file.ref.mime,
                "data_base64": base64.b64encode(file.data).decode("ascii"),
            }
            for sha, file in carried.items()
        }
    return json_bytes(document, orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def refs_of(conversations: Sequence[Conversation]) -> Iterator[AttachmentRef]:
    """Every file reference of the conversations' messages, other versions included."""
    for conversation in conversations:
        for message in (*conversation.messages, *(n.message for n in conversation.branches)):
            yield from message.attachments


async def gather_files(
    conversations: Sequence[Conversation], load: Callable[[str], Awaitable[bytes]]
) -> tuple[list[Conversation], dict[str, Attachment]]:
    """The bytes of every file the conversations refer to, read once each with `load`.

    A file that cannot be found any more is left out of the export, and so are the
    references to it: the export stays importable. Returns the conversations as exported.
    """
    files: dict[str, Attachment] = {}
    missing: set[str] = set()
    for ref in refs_of(conversations):
        if ref.sha256 in files or ref.sha256 in missing:
            continue
        try:
            files[ref.sha256] = Attachment(ref=ref, data=await load(ref.sha256))
        except AttachmentNotFound:
            missing.add(ref.sha256)
    if not missing:
        return list(conversations), files
    log.warning("export.attachments_missing", count=len(missing))
    return [_without(c, missing) for c in conversations], files


def _without(conversation: Conversation, missing: set[str]) -> Conversation:
    def kept(message: ChatMessage) -> ChatMessage:
        refs = tuple(a for a in message.attachments if a.sha256 not in missing)
        return message if refs == message.attachments else replace(message, attachments=refs)

    return replace(
        conversation,
        messages=tuple(kept(m) for m in conversation.messages),
        branches=tuple(replace(n, message=kept(n.message)) for n in conversation.branches),
    )


@dataclass(frozen=True)
class ExportFile:
    """A download: its file name and its bytes."""

    name: str
    data: bytes


def build_export(
    conversations: Sequence[Conversation],
    fmt: ExportFormat,
    now: datetime,
    files: Mapping[str, Attachment] | None = None,
) -> ExportFile:
    """The download for `conversations`: JSON (any number) or Markdown (the first one).

    Markdown of a chat whose messages on screen have files is a zip of `chat.md` and the
    files beside it, under `files/`.
    """
    if fmt == "markdown":
        stem = export_filename(now).removesuffix(".json")
        conversation = conversations[0]
        shown = {ref.sha256: ref for m in conversation.messages for ref in m.attachments}
        if not files or not shown.keys() & files.keys():
            return ExportFile(stem + ".md", export_markdown(conversation).encode("utf-8"))
        return ExportFile(stem + ".zip", markdown_zip(conversation, files, now))
    return ExportFile(export_filename(now), export_json(conversations, now=now, files=files))


def zip_paths(conversation: Conversation, files: Mapping[str, Attachment]) -> dict[str, str]:
    """Where each file of the messages on screen goes in the zip: `files/<name>`, unique."""
    paths: dict[str, str] = {}
    taken: set[str] = set()
    for message in conversation.messages:
        for ref in message.attachments:
            if ref.sha256 in paths or ref.sha256 not in files:
                continue
            path = f"{FILES_IN_ZIP}/{ref.name}"
            if path in taken:  # two files of one name: the second gets its hash's start
                stem, dot, suffix = ref.name.rpartition(".")
                base = f"{stem}-{ref.sha256[:8]}.{suffix}" if dot and stem else ref.name
                path = f"{FILES_IN_ZIP}/{base}" if dot and stem else f"{path}-{ref.sha256[:8]}"
            paths[ref.sha256] = path
            taken.add(path)
    return paths


def markdown_zip(
    conversation: Conversation, files: Mapping[str, Attachment], now: datetime
) -> bytes:
    """A zip of `chat.md` (linking each file) and the files of the messages on screen."""
    paths = zip_paths(conversation, files)
    stamp = _utc(now).timetuple()[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        text = export_markdown(conversation, paths).encode("utf-8")
        archive.writestr(zipfile.ZipInfo(MARKDOWN_IN_ZIP, stamp), text, zipfile.ZIP_DEFLATED)
        for sha, path in paths.items():
            # Pictures and PDFs are compressed already: stored as they are.
            method = zipfile.ZIP_DEFLATED if files[sha].ref.kind == "text" else zipfile.ZIP_STORED
            archive.writestr(zipfile.ZipInfo(path, stamp), files[sha].data, method)
    return buffer.getvalue()


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


def export_markdown(conversation: Conversation, paths: Mapping[str, str] | None = None) -> str:
    """The conversation as a readable Markdown document.

    A message's files are listed under it by name; with `paths` (sha256 -> path in a zip)
    each is a link to the file beside the document, pictures shown inline.
    """
    lines = [f"# {conversation.title}", ""]
    lines.append(f"- Model: `{conversation.model}`")
    lines.append(f"- Temperature: {conversation.temperature:g}")
    created = datetime.fromtimestamp(conversation.created_at, UTC)
    lines.append(f"- Started: {created:%Y-%m-%d %H:%M} UTC")
    lines.extend(_markdown_options(conversation.options))
    if conversation.system_prompt.strip():
        lines.append("- System prompt:")
        lines.append("")
        lines.extend(f"  > {line}" for line in conversation.system_prompt.splitlines())
    # The branch on screen; a message with other versions says which one this is.
    for message, (k, n) in zip(conversation.messages, versions_of(conversation), strict=True):
        heading = _markdown_heading(message)
        if n > 1:
            heading += f" — version {k} of {n}"
        lines.extend(["", "---", "", heading, ""])
        if message.reasoning:
            lines.append("> *Thinking*")
            lines.append(">")
            lines.extend(f"> {line}" for line in message.reasoning.splitlines())
            lines.append("")
        lines.append(message.content)
        lines.extend(_markdown_files(message, paths or {}))
        if message.meta is not None and message.meta.sources:
            lines.extend(_markdown_sources(message.meta.sources))
        if message.meta is not None and message.meta.error:
            lines.extend(["", f"> ⚠️ {message.meta.error}"])
    return "\n".join(lines) + "\n"


def _markdown_files(message: ChatMessage, paths: Mapping[str, str]) -> list[str]:
    if not message.attachments:
        return []
    lines = [""]
    for ref in message.attachments:
        label = _escape_link_text(ref.name)
        path = paths.get(ref.sha256)
        if path is None:
            lines.append(f"- 📎 {label}")
        elif ref.kind == "image":
            lines.append(f"![{label}]({quote(path)})")
        else:
            lines.append(f"- 📎 [{label}]({quote(path)})")
    return lines


def _escape_link_text(text: str) -> str:
    return "".join("\\" + c if c in "\\[]()*_`<>&" else c for c in text)


def _markdown_options(options: AnswerOptions) -> list[str]:
    """Header lines for the options that are not the defaults."""
    defaults, lines = AnswerOptions(), []
    if options.web_search != defaults.web_search:
        lines.append(f"- Web search: {'on' if options.web_search else 'off'}")
    if options.reasoning_effort != defaults.reasoning_effort:
        lines.append(f"- Reasoning effort: {options.reasoning_effort}")
    if options.max_tokens is not None:
        lines.append(f"- Answer length: at most {options.max_tokens:,} tokens")
    return lines


def _markdown_sources(sources: Sequence[Source]) -> list[str]:
    """The cited pages, numbered: links for http(s) URLs, any other URL as code, never a link."""
    lines = ["", "Sources:", ""]
    for n, source in enumerate(sources, 1):
        title = _escape_link_text(" ".join(source.title.split()))
        link = source.link
        if link is None:
            shown = _code_span(source.url)
            lines.append(f"{n}. {title} — {shown}" if title else f"{n}. {shown}")
            continue
        label = title or _escape_link_text(source.domain)
        lines.append(
            f"{n}. [{label}]({_link_destination(link)}) — {_escape_link_text(source.domain)}"
        )
    return lines


# Kept out of a link's destination: each would end it early or change how it is read.
_DESTINATION_ESCAPES = {c: f"%{ord(c):02X}" for c in "()<>\\`\"' "}


def _link_destination(url: str) -> str:
    return "".join(_DESTINATION_ESCAPES.get(c, c) for c in url)


def _code_span(text: str) -> str:
    """`text` as inline code on one line, whatever backticks or line breaks it holds."""
    flat = "".join("\ufffd" if unicodedata.category(c) in ("Cc", "Cs") else c for c in text)
    fence = "`" * (max((len(run) for run in re.findall("`+", flat)), default=0) + 1)
    # The spaces keep a backtick at either end apart from the fence (CommonMark strips one).
    return f"{fence} {flat} {fence}"


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


@dataclass(frozen=True)
class ParsedImport:
    """An import file's conversations (new ids) and the files their messages refer to."""

    conversations: list[Conversation]
    files: list[Attachment]


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
    The files are checked too (see `parse_import_file`, which returns them).
    """
    return parse_import_file(
        data,
        max_bytes=max_bytes,
        max_conversations=max_conversations,
        max_messages=max_messages,
        max_message_chars=max_message_chars,
        clock=clock,
    ).conversations


def parse_import_file(
    data: bytes,
    *,
    max_bytes: int,
    max_conversations: int = 1000,
    max_messages: int = 10_000,
    max_message_chars: int = 1_000_000,
    max_file_bytes: int = AttachmentLimits.max_file_bytes,
    clock: Callable[[], float] = time.time,
) -> ParsedImport:
    """`parse_import`, with the files the messages refer to, checked like uploads.

    Each file's type as sniffed from its bytes must be the one stated, its size at most
    `max_file_bytes`, its SHA-256 its key; every reference must have its file and agree
    with it. Raises ImportRejected naming the problem; nothing is partially accepted.
    """
    try:
        document = _document(data, max_bytes)
        items = _conversation_items(document)
        if len(items) > max_conversations:
            reject(f"file has {len(items):,} conversations; the limit is {max_conversations:,}")
        limits = ImportLimits(max_messages=max_messages, max_message_chars=max_message_chars)
        now = clock()
        conversations = [
            parse_conversation(item, where=f"conversation {number}", limits=limits, now=now)
            for number, item in enumerate(items, 1)
        ]
        raw_files = document.get("attachments") if isinstance(document, dict) else None
        files = _checked_files(conversations, raw_files, max_file_bytes)
    except SchemaError as exc:
        raise ImportRejected(exc.reason) from None
    return ParsedImport(conversations, files)


def _checked_files(
    conversations: Sequence[Conversation], raw: object, max_file_bytes: int
) -> list[Attachment]:
    """The files the messages refer to, each checked; refused at the first problem."""
    refs: dict[str, AttachmentRef] = {}
    for number, conversation in enumerate(conversations, 1):
        for ref in refs_of([conversation]):
            first = refs.setdefault(ref.sha256, ref)
            if (first.mime, first.size) != (ref.mime, ref.size):
                reject(
                    f"conversation {number} refers to the file {ref.name!r} ({ref.sha256[:12]}…) "
                    "with another type or size than an earlier reference to it"
                )
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        reject(f"field 'attachments' is {describe(raw)}, expected an object")
    files: list[Attachment] = []
    for sha, ref in refs.items():
        if sha not in raw:
            reject(f"the file {ref.name!r} ({sha[:12]}…) is referred to but not in the file")
        files.append(_checked_file(sha, raw[sha], ref, max_file_bytes))
    return files


def _checked_file(sha: str, raw: object, ref: AttachmentRef, max_file_bytes: int) -> Attachment:
    where = f"attachment {sha[:12]}…"
    if not isinstance(raw, dict):
        reject(f"{where} is {describe(raw)}, expected an object")
    name = raw.get("name", ref.name)
    shown = name if isinstance(name, str) else ref.name
    encoded = raw.get("data_base64")
    if not isinstance(encoded, str):
        reject(
            f"{where} ({shown!r}), field 'data_base64' is {describe(encoded)}, expected a string"
        )
    if len(encoded) > 4 * (max_file_bytes // 3 + 1):  # refused before decoding it
        about = _size_problem(len(encoded) * 3 // 4, max_file_bytes).removeprefix("file is ")
        reject(f"{where} ({shown!r}) is about {about} per file")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        reject(f"{where} ({shown!r}), field 'data_base64' is not valid base64")
    if len(data) > max_file_bytes:
        problem = _size_problem(len(data), max_file_bytes).removeprefix("file is ")
        reject(f"{where} ({shown!r}) is {problem} per file")
    if hashlib.sha256(data).hexdigest() != sha:
        reject(f"{where} ({shown!r}) does not match its SHA-256: the file was changed")
    sniffed = sniff(data)
    stated = raw.get("mime", ref.mime)
    if sniffed is None or sniffed[1] != stated or stated != ref.mime:
        actually = "not a file type this app keeps" if sniffed is None else sniffed[1]
        reject(f"{where} ({shown!r}) says it is {show(stated)} but its bytes are {actually}")
    if ref.size != len(data):
        reject(f"{where} ({shown!r}) is {len(data):,} bytes, but a message says {ref.size:,}")
    return Attachment(ref=ref, data=data)


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
