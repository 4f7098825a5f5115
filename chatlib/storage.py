"""Conversation store: one JSON file per conversation, per owner, plus a small index.

Layout under the data directory::

    conversations/<owner_key>/<conversation_id>.json   the conversation (source of truth)
    conversations/<owner_key>/index.jsonl              append-only summaries, for listing
    conversations/<owner_key>/.lock                    flock()ed by every write of this owner

Every file is written atomically (temporary file in the same directory, fsync, `os.replace`,
fsync of the directory), so a crash leaves either the old or the new file, never half of one.

The index is a cache. Each line records one save, rename, deletion or unreadable file, with a
stamp (inode, size, mtime) of the conversation file it describes; the last line per id wins.
Listing folds the index and compares it with a scan of the directory (names and stamps only):
files the index does not describe correctly (a crash between file and index write, a restore
from the dataset repo, a hand-copied file) are read and re-indexed, entries without a file are
dropped. Saving appends one line, so it costs the size of one conversation, however many the
owner has. The index is rewritten compactly once it has grown past twice the live entries.

Each conversation carries a revision, bumped by every write. A save that says what it
expects to find (the end of a turn) is checked under the owner's lock, so an answer that
ends after a delete, a rename or a newer turn elsewhere is handled the same after a restart
and with several processes on one data directory: writes of one owner are serialized by a
thread lock within a process and by `flock` on the owner's lock file between processes.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import fcntl
import math
import os
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog

from chatlib.branches import Branches, BranchNode, prune, same_tree, with_ids
from chatlib.errors import (
    ConversationChanged,
    ConversationCorrupt,
    ConversationDeleted,
    ConversationNotFound,
    StorageError,
    StorageUnavailable,
)
from chatlib.files import (
    TEMP_SUFFIX as _TEMP_SUFFIX,
)
from chatlib.files import (
    Stamp,
    atomic_write,
    fsync_directory,
    json_bytes,
    stamp_of,
    write_all,
)
from chatlib.messages import (
    ChatMessage,
    ImportLimits,
    describe,
    identifier_field,
    message_id_field,
    number_field,
    parse_message,
    reject,
    required,
    show,
    text_field,
    timestamp_field,
)
from chatlib.options import MAX_ANSWER_TOKENS, REASONING_EFFORTS, AnswerOptions

# The layout and schema of stored conversations (exports share the conversation schema).
SCHEMA_VERSION = 1
CONVERSATIONS_DIR = "conversations"
INDEX_NAME = "index.jsonl"
LOCK_NAME = ".lock"
NEW_CHAT_TITLE = "New chat"
MAX_TITLE_CHARS = 200
AUTO_TITLE_CHARS = 60

_ID_RE = re.compile(r"[0-9a-f]{32}")
_CONVERSATION_FILE_RE = re.compile(r"([0-9a-f]{32})\.json")
# Bidirectional overrides and the BOM can make a title display as something else.
_INVISIBLE_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
)
_TRAILING_PUNCTUATION = " ,.;:!?-–—"


class _Log(Protocol):
    def warning(self, event: str, **fields: Any) -> Any: ...

    def info(self, event: str, **fields: Any) -> Any: ...


def is_valid_conversation_id(value: object) -> bool:
    """True for ids of the form `uuid4().hex` (32 lowercase hex characters)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def is_valid_owner_key(value: object) -> bool:
    """True for keys of the form `identity.owner_key` produces (32 lowercase hex characters)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def _require_owner_key(owner_key: str) -> None:
    if not is_valid_owner_key(owner_key):
        raise ValueError("owner_key must be 32 lowercase hex characters (see identity.owner_key)")


def _remove_controls(text: str) -> str:
    return "".join(
        c
        for c in text
        if c not in _INVISIBLE_CONTROLS and unicodedata.category(c) not in ("Cc", "Cs")
    )


def _one_line(text: str) -> str:
    return " ".join(_remove_controls(" ".join(text.split())).split())


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    cut = cut.rstrip(_TRAILING_PUNCTUATION) or text[: limit - 1]
    return cut + "…"


def clean_title(title: str, *, max_chars: int = MAX_TITLE_CHARS) -> str:
    """One line without control characters, at most `max_chars`; never empty."""
    # Cut first (with room for what cleaning drops): a huge title costs no more than a long one.
    return _shorten(_one_line(title[: max_chars * 8]), max_chars) or NEW_CHAT_TITLE


def auto_title(first_user_message: str) -> str:
    """A title from the first line of a message: ≤ 60 characters, cut at a word, never empty."""
    for line in first_user_message.splitlines():
        text = _one_line(line)
        if text:
            return _shorten(text, AUTO_TITLE_CHARS)
    return NEW_CHAT_TITLE


def conversation_title(title: str, messages: Sequence[ChatMessage]) -> str:
    """The title a conversation is stored under (the one rule, for saves and imports).

    `title` cleaned; while that is still "New chat", the first line of the first question.
    """
    cleaned = clean_title(title)
    if cleaned != NEW_CHAT_TITLE:
        return cleaned
    return auto_title(next((m.content for m in messages if m.role == "user"), ""))


@dataclass(frozen=True)
class ConversationSummary:
    """What the conversation list shows, without the messages."""

    id: str
    title: str
    created_at: float
    updated_at: float
    message_count: int
    total_cost_usd: float
    imported_at: float | None = None  # Unix seconds; set when it came from an import file


@dataclass(frozen=True)
class Conversation:
    """A conversation with its settings and messages."""

    id: str
    title: str
    created_at: float  # Unix time (UTC seconds)
    updated_at: float
    model: str
    system_prompt: str
    temperature: float
    messages: tuple[ChatMessage, ...] = ()
    revision: int = 0  # bumped by every save; stored in the file, never exported
    imported_at: float | None = None  # Unix seconds: created by an import (None: chatted here)
    # The inactive versions of messages, least recently active first (see chatlib.branches).
    branches: Branches = ()
    # Web search, reasoning effort and answer length, as the last turn asked (chatlib.options).
    options: AnswerOptions = field(default_factory=AnswerOptions)

    @property
    def total_cost_usd(self) -> float:
        """Sum of the known costs of every answer, other versions included (all were paid)."""
        every = (*self.messages, *(n.message for n in self.branches))
        return math.fsum(
            m.meta.cost_usd
            for m in every
            if m.meta is not None and isinstance(m.meta.cost_usd, int | float)
        )

    def summary(self) -> ConversationSummary:
        """The list entry for this conversation."""
        return ConversationSummary(
            id=self.id,
            title=self.title,
            created_at=self.created_at,
            updated_at=self.updated_at,
            message_count=len(self.messages),
            total_cost_usd=self.total_cost_usd,
            imported_at=self.imported_at,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the body of a stored file and of an exported conversation."""
        data: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "model": self.model,
            "system_prompt": self.system_prompt,
            "temperature": self.temperature,
            "messages": [m.to_dict() for m in self.messages],
        }
        if self.imported_at is not None:
            data["imported_at"] = self.imported_at
        # Always written, defaults too: a file says what its chat asks for (older versions
        # of the app ignore the key; a file without it reads as the defaults).
        data["options"] = self.options.to_dict()
        if self.branches:
            # Beside `messages` (still the active path, flat): older versions of the app read
            # that and ignore this key, so they import the branch that was shown.
            data["branches"] = [n.to_dict() for n in self.branches]
        return data

    @classmethod
    def from_dict(cls, data: object) -> Conversation:
        """Inverse of `to_dict` (plus the stored revision); SchemaError says what is wrong.

        This trusts sizes (it reads our own files); imports use `parse_conversation`'s
        strict mode through `chatlib.transfer`.
        """
        return parse_conversation(data)


def check_schema_version(obj: dict[str, Any], where: str) -> None:
    """Refuse a `schema_version` other than ours; a missing one is taken to be ours."""
    if "schema_version" not in obj:
        return
    version = obj["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int | float):
        reject(f"{where}, field 'schema_version' is {describe(version)}, expected 1")
    if version > SCHEMA_VERSION:
        reject(
            f"{where} has schema_version {version:g}, newer than this app reads "
            f"({SCHEMA_VERSION}); update the app to import it"
        )
    if version != SCHEMA_VERSION:
        reject(f"{where}, field 'schema_version' is {version:g}, expected 1")


def parse_conversation(
    item: object,
    *,
    where: str = "conversation",
    limits: ImportLimits | None = None,
    now: float = 0.0,
) -> Conversation:
    """The one reader of a conversation object: stored files, and imports in strict mode.

    Without `limits` (our own files) every field must be there and well typed. With
    `limits` (a file from outside) sizes and ranges are checked as well, optional fields
    get defaults (dates: `now`), the title is cleaned and the conversation gets a new id.
    Either way an answer read back is no longer streaming. Raises SchemaError naming the
    element, the field and the rule.
    """
    if not isinstance(item, dict):
        reject(f"{where} is {describe(item)}, expected an object")
    strict = limits is not None
    if strict:
        check_schema_version(item, where)
    raw_messages = required(item, "messages", where)
    if not isinstance(raw_messages, list):
        reject(f"{where}, field 'messages' is {describe(raw_messages)}, expected a list")
    if limits is not None and len(raw_messages) > limits.max_messages:
        reject(f"{where} has {len(raw_messages):,} messages; the limit is {limits.max_messages:,}")
    model = identifier_field(required(item, "model", where), where, "model", strict=strict)
    temperature = number_field(
        required(item, "temperature", where), where, "temperature", *((0, 2) if strict else ())
    )
    system_prompt = item.get("system_prompt") if strict else required(item, "system_prompt", where)
    max_chars = None if limits is None else limits.max_message_chars
    if system_prompt is not None or not strict:
        system_prompt = text_field(system_prompt, where, "system_prompt", max_chars)
    created_at, updated_at = _dates(item, where, strict, now)
    messages = tuple(
        _not_streaming(
            parse_message(raw, where=f"{where}, message {n}", limits=limits, model=model)
        )
        for n, raw in enumerate(raw_messages, 1)
    )
    branches = _parse_branches(item, where, limits, model, len(messages))
    messages = with_ids(messages, branches)
    if branches:
        check_tree(messages, branches, where, strict=strict)
    title = item.get("title") if strict else required(item, "title", where)
    if title is not None or not strict:
        title = text_field(title, where, "title")
    conversation = Conversation(
        id=uuid.uuid4().hex if strict else text_field(required(item, "id", where), where, "id"),
        title=conversation_title(title or "", messages) if strict else str(title),
        created_at=created_at,
        updated_at=updated_at,
        model=model,
        system_prompt=system_prompt or "",
        temperature=temperature,
        messages=messages,
        revision=0 if strict else _revision(item.get("revision", 0), where),
        # An import's own mark is set by whoever imports (now); a file's claim is not taken.
        imported_at=None if strict else _optional_time(item, "imported_at", where),
        branches=branches,
        options=parse_options(item.get("options"), where),
    )
    return prune(conversation)


def parse_options(raw: object, where: str) -> AnswerOptions:
    """A conversation's `options` (null or missing: the defaults); every field is checked.

    The same rules hold for stored rows and imports: the values are few and small, and a
    wrong one would reach the upstream request.
    """
    if raw is None:
        return AnswerOptions()
    at = f"{where}, options"
    if not isinstance(raw, dict):
        reject(f"{where}, field 'options' is {describe(raw)}, expected an object")
    defaults = AnswerOptions()
    web_search = raw.get("web_search", defaults.web_search)
    if not isinstance(web_search, bool):
        reject(f"{at}, field 'web_search' is {show(web_search)}, expected true or false")
    effort = raw.get("reasoning_effort", defaults.reasoning_effort)
    if not isinstance(effort, str) or effort not in REASONING_EFFORTS:
        reject(
            f"{at}, field 'reasoning_effort' is {show(effort)}, "
            f"expected one of {'/'.join(REASONING_EFFORTS)}"
        )
    max_tokens = raw.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_ANSWER_TOKENS
    ):
        number = isinstance(max_tokens, int | float) and not isinstance(max_tokens, bool)
        # A number of thousands of digits is not written out (nor can Python, past 4,300).
        short = number and (not isinstance(max_tokens, int) or abs(max_tokens) < 10**15)
        shown = repr(max_tokens) if short else ("a huge number" if number else show(max_tokens))
        reject(
            f"{at}, field 'max_tokens' is {shown}, expected null or a whole "
            f"number from 1 to {MAX_ANSWER_TOKENS:,}"
        )
    return AnswerOptions(web_search=web_search, reasoning_effort=effort, max_tokens=max_tokens)


def _parse_branches(
    item: dict[str, Any], where: str, limits: ImportLimits | None, model: str, active: int
) -> Branches:
    """The inactive versions: message objects with their `id` and `parent_id`."""
    raw_nodes = item.get("branches")
    if raw_nodes is None:
        return ()
    if not isinstance(raw_nodes, list):
        reject(f"{where}, field 'branches' is {describe(raw_nodes)}, expected a list")
    if limits is not None and active + len(raw_nodes) > limits.max_messages:
        reject(
            f"{where} has {active + len(raw_nodes):,} messages with their other versions; "
            f"the limit is {limits.max_messages:,}"
        )
    nodes: list[BranchNode] = []
    for n, raw in enumerate(raw_nodes, 1):
        at = f"{where}, other version {n}"
        message = parse_message(raw, where=at, limits=limits, model=model)
        message_id_field(required(raw, "id", at), at)
        parent_id = required(raw, "parent_id", at)
        if parent_id is not None:
            parent_id = message_id_field(parent_id, at, "parent_id")
        nodes.append(BranchNode(parent_id, _not_streaming(message)))
    return tuple(nodes)


def check_tree(
    messages: Sequence[ChatMessage], branches: Branches, where: str, *, strict: bool
) -> None:
    """Ids are unique; strictly, every parent exists and no parent links form a cycle.

    Our own stored rows are not held to the last two: what is not reachable is dropped.
    """
    seen: set[str] = set()
    for n, message in enumerate((*messages, *(b.message for b in branches)), 1):
        if message.id in seen:
            place = f"message {n}" if n <= len(messages) else f"other version {n - len(messages)}"
            reject(f"{where}, {place} has the id {show(message.id)}, which another message has")
        seen.add(message.id)
    if not strict:
        return
    parents = {b.id: b.parent_id for b in branches}
    for n, node in enumerate(branches, 1):
        at = f"{where}, other version {n}"
        if node.parent_id is not None and node.parent_id not in seen:
            reject(f"{at} has parent_id {show(node.parent_id)}, which no message has")
        link, steps = node.parent_id, 0
        while link in parents:  # up through inactive nodes until an active one or the top
            link, steps = parents[link], steps + 1
            if steps > len(parents):
                reject(f"{at} is in a cycle of parent_id links")


def _optional_time(item: dict[str, Any], name: str, where: str) -> float | None:
    value = item.get(name)
    return None if value is None else number_field(value, where, name)


def _dates(item: dict[str, Any], where: str, strict: bool, now: float) -> tuple[float, float]:
    if not strict:
        return (
            number_field(required(item, "created_at", where), where, "created_at"),
            number_field(required(item, "updated_at", where), where, "updated_at"),
        )
    raw_created, raw_updated = item.get("created_at"), item.get("updated_at")
    created_at = (
        now
        if raw_created is None
        else timestamp_field(raw_created, where, "created_at", strict=True)
    )
    updated_at = (
        created_at
        if raw_updated is None
        else timestamp_field(raw_updated, where, "updated_at", strict=True)
    )
    return created_at, max(created_at, updated_at)


def _revision(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        reject(f"{where}, field 'revision' is {describe(value)}, expected a whole number ≥ 0")
    return value


def _not_streaming(message: ChatMessage) -> ChatMessage:
    """A stored or imported answer is not streaming any more: whatever wrote it is gone."""
    if message.meta is None or message.meta.status != "streaming":
        return message
    return replace(message, meta=replace(message.meta, status="interrupted"))


def conversation_file_bytes(conversation: Conversation) -> bytes:
    """The conversation's file: `schema_version`, `to_dict()`, `revision` (the sync's too)."""
    document = {
        "schema_version": SCHEMA_VERSION,
        **conversation.to_dict(),
        "revision": conversation.revision,
    }
    return json_bytes(document)


def fresh_conversation(
    model: str, system_prompt: str, temperature: float, *, now: float
) -> Conversation:
    """A new, empty, unsaved conversation titled "New chat" with a random id (no I/O)."""
    return Conversation(
        id=uuid.uuid4().hex,
        title=NEW_CHAT_TITLE,
        created_at=now,
        updated_at=now,
        model=model,
        system_prompt=system_prompt,
        temperature=temperature,
        messages=(),
    )


@dataclass(frozen=True)
class ListResult:
    """An owner's conversations, newest first, and the ids of files that could not be read."""

    conversations: list[ConversationSummary]
    corrupt: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _IndexEntry:
    id: str
    stamp: Stamp
    summary: ConversationSummary | None  # None: the file exists but cannot be read

    def to_line(self) -> bytes:
        record: dict[str, Any] = {"id": self.id, "stamp": list(self.stamp)}
        if self.summary is None:
            record["corrupt"] = True
        else:
            record.update(
                title=self.summary.title,
                created_at=self.summary.created_at,
                updated_at=self.summary.updated_at,
                message_count=self.summary.message_count,
                total_cost_usd=self.summary.total_cost_usd,
            )
            if self.summary.imported_at is not None:
                record["imported_at"] = self.summary.imported_at
        return json_bytes(record, orjson.OPT_APPEND_NEWLINE)


def _tombstone_line(conversation_id: str) -> bytes:
    return json_bytes({"id": conversation_id, "deleted": True}, orjson.OPT_APPEND_NEWLINE)


def _index_records(raw: bytes) -> tuple[builtins.list[Any], int]:
    """The parsed lines of an index file (garbage skipped) and how many lines it has."""
    lines = [line for line in raw.split(b"\n") if line.strip()]
    try:
        # One parse for a healthy index is several times faster than one per line.
        records = orjson.loads(b"[" + b",".join(lines) + b"]")
    except orjson.JSONDecodeError:
        records = []
        for line in lines:
            with contextlib.suppress(orjson.JSONDecodeError):
                records.append(orjson.loads(line))
    return records, len(lines)


def _is_number(value: object) -> bool:
    return type(value) is float or type(value) is int


def _index_entry(conversation_id: str, record: dict[str, Any]) -> _IndexEntry | None:
    """The entry an index record describes, or None if the record is malformed."""
    stamp = record.get("stamp")
    if (
        _ID_RE.fullmatch(conversation_id) is None
        or type(stamp) is not list
        or len(stamp) != 3
        or not all(type(n) is int for n in stamp)
    ):
        return None
    file_stamp = (stamp[0], stamp[1], stamp[2])
    if record.get("corrupt") is True:
        return _IndexEntry(conversation_id, file_stamp, None)
    title = record.get("title")
    message_count = record.get("message_count")
    created_at = record.get("created_at")
    updated_at = record.get("updated_at")
    total_cost_usd = record.get("total_cost_usd")
    imported_at = record.get("imported_at")
    if not (
        type(title) is str
        and type(message_count) is int
        and _is_number(created_at)
        and _is_number(updated_at)
        and _is_number(total_cost_usd)
        and (imported_at is None or _is_number(imported_at))
    ):
        return None
    summary = ConversationSummary(
        id=conversation_id,
        title=title,
        created_at=float(created_at),  # type: ignore[arg-type]
        updated_at=float(updated_at),  # type: ignore[arg-type]
        message_count=message_count,
        total_cost_usd=float(total_cost_usd),  # type: ignore[arg-type]
        imported_at=None if imported_at is None else float(imported_at),
    )
    return _IndexEntry(conversation_id, file_stamp, summary)


def _save_failed(exc: OSError) -> StorageError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        problem = "the disk is full"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        problem = "the server's data folder is read-only (the operator should check DATA_DIR)"
    else:
        problem = f"a storage error occurred ({exc.strerror or type(exc).__name__})"
    return StorageError(
        f"Could not save the conversation: {problem}. Your chat continues but is not stored."
    )


def _decode_conversation(data: bytes, conversation_id: str) -> Conversation:
    document = orjson.loads(data)
    if not isinstance(document, dict):
        raise ValueError("a conversation file must hold an object")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise ValueError("unsupported schema_version")
    # The file name is the id: a file copied under another name is that other conversation.
    return replace(Conversation.from_dict(document), id=conversation_id)


@dataclass
class _OwnerState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Lines in index.jsonl and live entries, when known (after a listing or compaction).
    lines: int | None = None
    live: int | None = None

    def forget(self) -> None:
        self.lines = None
        self.live = None


class ConversationStore:
    """Per-owner conversation files under `root/conversations/` (blocking; see the async one)."""

    def __init__(
        self,
        root: Path,
        *,
        clock: Callable[[], float] = time.time,
        log: _Log | None = None,
    ) -> None:
        self._conversations_dir = Path(root) / CONVERSATIONS_DIR
        self._clock = clock
        self._log: _Log = log if log is not None else structlog.get_logger(__name__)
        self._owners: dict[str, _OwnerState] = {}
        self._owners_lock = threading.Lock()

    # -- public API --------------------------------------------------------------------------

    def new_conversation(self, model: str, system_prompt: str, temperature: float) -> Conversation:
        """A fresh, empty, unsaved conversation titled "New chat"."""
        return fresh_conversation(model, system_prompt, temperature, now=self._clock())

    def save(
        self,
        owner_key: str,
        conversation: Conversation,
        *,
        touch: bool = True,
        expected: Conversation | None = None,
    ) -> Conversation:
        """Store `conversation` for `owner_key` and return it as stored, its revision bumped.

        `updated_at` is set to now (unless `touch=False`, used by imports); the title follows
        `conversation_title`. Raises StorageError when the disk refuses the write; the
        previously stored version is then intact.

        With `expected` (the conversation as this caller last loaded or saved it), what is
        stored now is checked first, under the owner's lock: gone -> ConversationDeleted;
        other messages (a newer turn or an undo elsewhere) -> ConversationChanged, and nothing
        is written; the same messages under another revision (a rename) -> saved with the
        stored title. An unreadable file is replaced.
        """
        _require_owner_key(owner_key)
        if not is_valid_conversation_id(conversation.id):
            raise ValueError("conversation id must be uuid4().hex")
        for name in ("created_at", "updated_at", "temperature"):
            if not math.isfinite(getattr(conversation, name)):
                raise ValueError(f"conversation {name} must be finite")
        saved = replace(
            conversation,
            messages=with_ids(conversation.messages, conversation.branches),
            title=conversation_title(conversation.title, conversation.messages),
            updated_at=self._clock() if touch else conversation.updated_at,
        )
        with self._locked(owner_key, create=True) as state:
            if expected is not None:
                saved = self._merge_with_stored(owner_key, saved, expected)
            saved = replace(saved, revision=saved.revision + 1)
            self._write(owner_key, state, saved)
        return saved

    def _merge_with_stored(
        self, owner_key: str, conversation: Conversation, expected: Conversation
    ) -> Conversation:
        """`conversation` on top of what is stored now; the caller holds the owner's lock."""
        try:
            stored = self._read(owner_key, conversation.id)
        except ConversationNotFound:
            raise ConversationDeleted() from None
        except ConversationCorrupt:
            return conversation  # saving puts a readable conversation back
        if stored.revision == expected.revision:
            return replace(conversation, revision=stored.revision)
        if not same_tree(stored, expected):
            raise ConversationChanged()
        return replace(conversation, title=stored.title, revision=stored.revision)

    def save_all(
        self, owner_key: str, conversations: Sequence[Conversation]
    ) -> builtins.list[Conversation]:
        """Store new conversations with their own dates (an import): all or nothing.

        Raises StorageError when the disk refuses one; those saved before it are removed.
        """
        saved: builtins.list[Conversation] = []
        try:
            for conversation in conversations:
                saved.append(self.save(owner_key, conversation, touch=False))
        except StorageError:
            for conversation in saved:
                with contextlib.suppress(StorageError):
                    self.delete(owner_key, conversation.id)
            raise
        return saved

    def load(self, owner_key: str, conversation_id: str) -> Conversation:
        """The conversation; ConversationNotFound if this owner has none with that id."""
        _require_owner_key(owner_key)
        if not is_valid_conversation_id(conversation_id):
            raise ConversationNotFound()
        return self._read(owner_key, conversation_id)

    def list(self, owner_key: str) -> ListResult:
        """The owner's conversations, most recently updated first; unreadable ids apart."""
        _require_owner_key(owner_key)
        with self._locked(owner_key) as state:
            entries = self._refresh_index(owner_key, state)
        summaries = [e.summary for e in entries.values() if e.summary is not None]
        summaries.sort(key=lambda s: (s.updated_at, s.created_at, s.id), reverse=True)
        corrupt = sorted(e.id for e in entries.values() if e.summary is None)
        return ListResult(conversations=summaries, corrupt=corrupt)

    def delete(self, owner_key: str, conversation_id: str) -> bool:
        """Delete the conversation; False if this owner has none with that id."""
        _require_owner_key(owner_key)
        if not is_valid_conversation_id(conversation_id):
            return False
        directory = self._owner_dir(owner_key)
        with self._locked(owner_key) as state:
            try:
                os.unlink(directory / f"{conversation_id}.json")
            except (FileNotFoundError, NotADirectoryError):
                return False
            except OSError as exc:
                self._log.warning(
                    "storage.delete_failed",
                    owner_key=owner_key,
                    conversation_id=conversation_id,
                    errno=exc.errno,
                )
                raise StorageError(
                    "Could not delete the conversation: the server's storage refused it. "
                    "Try again later."
                ) from exc
            fsync_directory(directory)
            self._append_index(owner_key, state, [_tombstone_line(conversation_id)], live_delta=-1)
        return True

    def rename(self, owner_key: str, conversation_id: str, title: str) -> Conversation:
        """Give the conversation a new title (cleaned); its place in the list is kept."""
        _require_owner_key(owner_key)
        if not is_valid_conversation_id(conversation_id):
            raise ConversationNotFound()
        with self._locked(owner_key) as state:
            stored = self._read(owner_key, conversation_id)
            renamed = replace(stored, title=clean_title(title), revision=stored.revision + 1)
            self._write(owner_key, state, renamed)
        return renamed

    def search(self, owner_key: str, query: str) -> builtins.list[ConversationSummary]:
        """Conversations whose title or any message contains `query` (case-insensitive)."""
        needle = query.strip()[:MAX_TITLE_CHARS].casefold()  # a longer query is cut
        listed = self.list(owner_key).conversations
        if not needle:
            return listed
        found: builtins.list[ConversationSummary] = []
        for summary in listed:
            if needle in summary.title.casefold():
                found.append(summary)
                continue
            try:
                conversation = self._read(owner_key, summary.id)
            except (ConversationNotFound, ConversationCorrupt):
                continue
            if any(needle in m.content.casefold() for m in conversation.messages):
                found.append(summary)
        return found

    def move_all(self, from_owner_key: str, to_owner_key: str) -> int:
        """Give every conversation of one owner to another (an anonymous visitor logging in).

        Nothing is overwritten: a conversation whose id the new owner already has gets a new
        id. Unreadable files move too. Returns how many files moved.
        """
        _require_owner_key(from_owner_key)
        _require_owner_key(to_owner_key)
        if from_owner_key == to_owner_key:
            return 0
        source = self._owner_dir(from_owner_key)
        target = self._owner_dir(to_owner_key)
        # Always in the same order, so two moves in opposite directions cannot deadlock.
        first, second = sorted((from_owner_key, to_owner_key))
        with (
            self._locked(first, create=first == to_owner_key),
            self._locked(second, create=second == to_owner_key),
        ):
            if not source.is_dir():
                return 0
            carried, tombstones, failure = _move_files(source, target, self._fold_index(source)[0])
            fsync_directory(target)
            fsync_directory(source)
            # Counts are unknown now; the next listing of either owner recomputes them.
            self._state(to_owner_key).forget()
            self._state(from_owner_key).forget()
            self._append_index(to_owner_key, self._state(to_owner_key), carried)
            if failure is None:
                self._remove_owner_dir(source)
            else:
                self._append_index(from_owner_key, self._state(from_owner_key), tombstones)
                self._log.warning(
                    "storage.move_failed",
                    from_owner_key=from_owner_key,
                    to_owner_key=to_owner_key,
                    moved=len(tombstones),
                    errno=failure.errno,
                )
                raise StorageError(
                    f"Could not move all conversations ({len(tombstones)} moved); "
                    "the rest stay where they were. Try again later."
                ) from failure
        self._log.info(
            "storage.moved",
            from_owner_key=from_owner_key,
            to_owner_key=to_owner_key,
            moved=len(tombstones),
        )
        return len(tombstones)

    # -- files -------------------------------------------------------------------------------

    def _state(self, owner_key: str) -> _OwnerState:
        with self._owners_lock:
            state = self._owners.get(owner_key)
            if state is None:
                state = self._owners[owner_key] = _OwnerState()
            return state

    def _owner_dir(self, owner_key: str) -> Path:
        return self._conversations_dir / owner_key

    @contextlib.contextmanager
    def _locked(self, owner_key: str, *, create: bool = False) -> Iterator[_OwnerState]:
        """Hold the owner's lock: a thread lock here, `flock` on its lock file for processes.

        With `create`, the owner's directory is made first (StorageError if it cannot be);
        otherwise an owner without a directory has nothing to protect.
        """
        state = self._state(owner_key)
        with state.lock:
            try:
                fd = self._lock_file(self._owner_dir(owner_key), create=create)
            except OSError as exc:
                raise _save_failed(exc) from exc
            try:
                yield state
            finally:
                if fd is not None:
                    os.close(fd)  # releases the flock

    def _lock_file(self, directory: Path, *, create: bool) -> int | None:
        """An open, flock()ed descriptor of the directory's lock file (None: no directory)."""
        path = directory / LOCK_NAME
        while True:
            if create:
                self._ensure_dir(directory)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                if create:
                    raise
                return None  # no directory (nothing stored), or one we cannot write to
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # A move may have removed the file (and its directory) while we waited: a
                # lock on a removed file protects nothing, so start again.
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _ensure_dir(self, directory: Path) -> None:
        if not directory.is_dir():
            self._conversations_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.mkdir(mode=0o700, exist_ok=True)

    def _write(self, owner_key: str, state: _OwnerState, conversation: Conversation) -> None:
        """Write the file, then index it; the caller holds the owner's lock."""
        directory = self._owner_dir(owner_key)
        path = directory / f"{conversation.id}.json"
        try:
            self._ensure_dir(directory)
            is_new = not path.exists()
            stamp = atomic_write(path, conversation_file_bytes(conversation))
        except OSError as exc:
            self._log.warning(
                "storage.save_failed",
                owner_key=owner_key,
                conversation_id=conversation.id,
                errno=exc.errno,
            )
            raise _save_failed(exc) from exc
        line = _IndexEntry(conversation.id, stamp, conversation.summary()).to_line()
        self._append_index(owner_key, state, [line], live_delta=1 if is_new else 0)

    def _read(self, owner_key: str, conversation_id: str) -> Conversation:
        path = self._owner_dir(owner_key) / f"{conversation_id}.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConversationNotFound() from None
        except NotADirectoryError:
            # A folder on the way is a file: the data folder is broken, not the conversation.
            raise StorageUnavailable() from None
        except OSError as exc:
            self._warn_corrupt(owner_key, conversation_id, exc)
            raise ConversationCorrupt() from exc
        try:
            return _decode_conversation(data, conversation_id)
        except (ValueError, TypeError) as exc:
            self._warn_corrupt(owner_key, conversation_id, exc)
            raise ConversationCorrupt() from exc

    def _warn_corrupt(self, owner_key: str, conversation_id: str, exc: Exception) -> None:
        # The exception's text may quote the file; its type is enough to diagnose.
        self._log.warning(
            "storage.corrupt_file",
            owner_key=owner_key,
            conversation_id=conversation_id,
            reason=type(exc).__name__,
        )

    def _index_entry_from_file(
        self, owner_key: str, conversation_id: str, scanned: Stamp
    ) -> _IndexEntry:
        path = self._owner_dir(owner_key) / f"{conversation_id}.json"
        try:
            with path.open("rb") as file:
                stamp = stamp_of(os.fstat(file.fileno()))
                data = file.read()
        except OSError as exc:
            self._warn_corrupt(owner_key, conversation_id, exc)
            return _IndexEntry(conversation_id, scanned, None)
        try:
            conversation = _decode_conversation(data, conversation_id)
        except (ValueError, TypeError) as exc:
            self._warn_corrupt(owner_key, conversation_id, exc)
            return _IndexEntry(conversation_id, stamp, None)
        return _IndexEntry(conversation_id, stamp, conversation.summary())

    # -- index -------------------------------------------------------------------------------

    def _fold_index(self, directory: Path) -> tuple[dict[str, _IndexEntry], int]:
        """The last entry per id, and how many lines the index has (garbage included)."""
        try:
            raw = (directory / INDEX_NAME).read_bytes()
        except FileNotFoundError:
            return {}, 0
        except OSError as exc:
            self._log.warning("storage.index_unreadable", errno=exc.errno)
            return {}, 0
        records, lines = _index_records(raw)
        latest: dict[str, dict[str, Any]] = {}
        for record in records:
            if type(record) is not dict or type(record.get("id")) is not str:
                continue
            if record.get("deleted") is True:
                latest.pop(record["id"], None)
            else:
                latest[record["id"]] = record
        entries: dict[str, _IndexEntry] = {}
        for conversation_id, record in latest.items():
            entry = _index_entry(conversation_id, record)
            if entry is not None:
                entries[conversation_id] = entry
        return entries, lines

    def _refresh_index(self, owner_key: str, state: _OwnerState) -> dict[str, _IndexEntry]:
        """The folded index, corrected against the files on disk; the caller holds the lock."""
        directory = self._owner_dir(owner_key)
        if not directory.is_dir():
            state.lines, state.live = 0, 0
            return {}
        entries, lines = self._fold_index(directory)
        try:
            on_disk = _scan(directory)
        except OSError as exc:
            self._log.warning("storage.list_failed", owner_key=owner_key, errno=exc.errno)
            raise StorageError(
                "Could not read your saved conversations: the server's storage refused it. "
                "Try again later."
            ) from exc
        fixes: builtins.list[bytes] = []
        for conversation_id, stamp in on_disk.items():
            known = entries.get(conversation_id)
            if known is None or known.stamp != stamp:
                fresh = self._index_entry_from_file(owner_key, conversation_id, stamp)
                entries[conversation_id] = fresh
                fixes.append(fresh.to_line())
        for conversation_id in entries.keys() - on_disk.keys():
            del entries[conversation_id]
            fixes.append(_tombstone_line(conversation_id))
        if fixes:
            self._log.info("storage.index_repaired", owner_key=owner_key, entries=len(fixes))
        state.lines, state.live = lines, len(entries)
        if lines + len(fixes) > _compaction_threshold(len(entries)):
            self._compact(owner_key, state, entries)
        elif fixes:
            self._append_index(owner_key, state, fixes)
        return entries

    def _append_index(
        self, owner_key: str, state: _OwnerState, lines: builtins.list[bytes], live_delta: int = 0
    ) -> None:
        """Append lines to the index; the caller holds the owner's lock.

        A failure only logs: the files are the truth and the next listing repairs the index.
        """
        if not lines:
            return
        directory = self._owner_dir(owner_key)
        payload = b"".join(lines)
        try:
            fd = os.open(directory / INDEX_NAME, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size:
                    os.lseek(fd, size - 1, os.SEEK_SET)
                    if os.read(fd, 1) != b"\n":
                        # A crash tore the last line; never glue a good line onto it.
                        payload = b"\n" + payload
                write_all(fd, payload)
            finally:
                os.close(fd)
        except OSError as exc:
            self._log.warning("storage.index_write_failed", owner_key=owner_key, errno=exc.errno)
            state.forget()
            return
        if state.lines is None or state.live is None:
            return
        state.lines += len(lines)
        state.live += live_delta
        if state.lines > _compaction_threshold(state.live):
            self._compact(owner_key, state, self._fold_index(directory)[0])

    def _compact(
        self, owner_key: str, state: _OwnerState, entries: Mapping[str, _IndexEntry]
    ) -> None:
        """Rewrite the index with one line per live entry; the caller holds the lock."""
        directory = self._owner_dir(owner_key)
        try:
            atomic_write(directory / INDEX_NAME, b"".join(e.to_line() for e in entries.values()))
        except OSError as exc:
            self._log.warning("storage.index_write_failed", owner_key=owner_key, errno=exc.errno)
            state.forget()
            return
        state.lines, state.live = len(entries), len(entries)

    def _remove_owner_dir(self, directory: Path) -> None:
        """Remove an owner's directory once it holds no conversation (after a move)."""
        for name in (INDEX_NAME, LOCK_NAME):  # waiters on the lock notice it is gone
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / name)
        # If something else lives there (a file that arrived meanwhile), it stays; the next
        # listing indexes it.
        with contextlib.suppress(OSError):
            directory.rmdir()


def _scan(directory: Path) -> dict[str, Stamp]:
    """Conversation files by id with their stamps; removes temporary files left by a crash.

    The caller holds the owner's lock, so no temporary file of ours is in flight.
    """
    found: dict[str, Stamp] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _CONVERSATION_FILE_RE.fullmatch(entry.name)
            if match is not None:
                try:
                    found[match[1]] = stamp_of(entry.stat(follow_symlinks=False))
                except FileNotFoundError:
                    continue
            elif entry.name.startswith(".") and entry.name.endswith(_TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    return found


def _compaction_threshold(live: int) -> int:
    return 2 * live + 100


def _move_files(
    source: Path, target: Path, known: Mapping[str, _IndexEntry]
) -> tuple[builtins.list[bytes], builtins.list[bytes], OSError | None]:
    """Move every conversation file; the target's index lines, the source's tombstones, and
    the failure that stopped the move early, if any. The caller holds both owners' locks."""
    carried: builtins.list[bytes] = []
    tombstones: builtins.list[bytes] = []
    for conversation_id, stamp in _scan(source).items():
        try:
            new_id = _move_without_overwrite(source, target, conversation_id)
        except OSError as exc:
            return carried, tombstones, exc
        tombstones.append(_tombstone_line(conversation_id))
        entry = known.get(conversation_id)
        if entry is not None and entry.stamp == stamp and entry.summary is not None:
            summary = replace(entry.summary, id=new_id)
            carried.append(_IndexEntry(new_id, stamp, summary).to_line())
        # Otherwise the target's next listing reads the file and indexes it.
    return carried, tombstones, None


def _move_without_overwrite(source: Path, target: Path, conversation_id: str) -> str:
    """Move one conversation file; returns its id in `target` (new if the id is taken)."""
    new_id = conversation_id
    while True:
        destination = target / f"{new_id}.json"
        try:
            # link() fails instead of replacing an existing file, unlike rename().
            os.link(source / f"{conversation_id}.json", destination)
        except FileExistsError:
            new_id = uuid.uuid4().hex
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            # Filesystems without hard links: check, then rename (we hold both owners' locks).
            if destination.exists():
                new_id = uuid.uuid4().hex
                continue
            os.rename(source / f"{conversation_id}.json", destination)
            return new_id
        os.unlink(source / f"{conversation_id}.json")
        return new_id


class AsyncConversationStore:
    """The same store for async handlers: every file operation runs in a worker thread."""

    def __init__(self, store: ConversationStore) -> None:
        self._store = store

    def new_conversation(self, model: str, system_prompt: str, temperature: float) -> Conversation:
        """A fresh unsaved conversation (no I/O, so not a coroutine)."""
        return self._store.new_conversation(model, system_prompt, temperature)

    async def save(
        self,
        owner_key: str,
        conversation: Conversation,
        *,
        touch: bool = True,
        expected: Conversation | None = None,
    ) -> Conversation:
        """See `ConversationStore.save`."""
        return await asyncio.to_thread(
            self._store.save, owner_key, conversation, touch=touch, expected=expected
        )

    async def save_all(
        self, owner_key: str, conversations: Sequence[Conversation]
    ) -> builtins.list[Conversation]:
        """See `ConversationStore.save_all`."""
        return await asyncio.to_thread(self._store.save_all, owner_key, conversations)

    async def load(self, owner_key: str, conversation_id: str) -> Conversation:
        """See `ConversationStore.load`."""
        return await asyncio.to_thread(self._store.load, owner_key, conversation_id)

    async def list(self, owner_key: str, *, limit: int | None = None) -> ListResult:
        """See `ConversationStore.list` (`limit`: only the most recent ones)."""
        listed = await asyncio.to_thread(self._store.list, owner_key)
        if limit is None:
            return listed
        return ListResult(conversations=listed.conversations[:limit], corrupt=listed.corrupt)

    async def delete(self, owner_key: str, conversation_id: str) -> bool:
        """See `ConversationStore.delete`."""
        return await asyncio.to_thread(self._store.delete, owner_key, conversation_id)

    async def rename(self, owner_key: str, conversation_id: str, title: str) -> Conversation:
        """See `ConversationStore.rename`."""
        return await asyncio.to_thread(self._store.rename, owner_key, conversation_id, title)

    async def search(self, owner_key: str, query: str) -> builtins.list[ConversationSummary]:
        """See `ConversationStore.search`."""
        return await asyncio.to_thread(self._store.search, owner_key, query)

    async def move_all(self, from_owner_key: str, to_owner_key: str) -> int:
        """See `ConversationStore.move_all`."""
        return await asyncio.to_thread(self._store.move_all, from_owner_key, to_owner_key)
