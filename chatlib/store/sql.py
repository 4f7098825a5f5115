"""Conversations in SQL (SQLite or PostgreSQL): the same door as the file store, one code path.

Every statement that reads, changes or deletes a conversation or its messages names the
owner in its WHERE clause, so one visitor's id never reaches another visitor's rows.

Each conversation carries a revision, bumped by every write. A save that says what it
expects to find (the end of a turn) is checked in the UPDATE itself
(`WHERE id = :id AND owner_key = :owner AND revision = :expected`): no row means the
conversation was deleted, got other messages (ConversationChanged), or was only renamed (then
it is saved under the stored title). That holds across processes without file locks.
Messages are written as a diff against the stored rows: a turn inserts its new messages and
leaves the earlier ones alone, so a save costs one conversation whatever the owner has.
"""

from __future__ import annotations

import builtins
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import orjson
import structlog
from sqlalchemy import ColumnElement, Row, delete, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatlib.branches import BranchNode, default_id, with_ids
from chatlib.errors import (
    ConversationChanged,
    ConversationCorrupt,
    ConversationDeleted,
    ConversationNotFound,
)
from chatlib.files import json_bytes
from chatlib.messages import ChatMessage, clean_text
from chatlib.options import AnswerOptions
from chatlib.storage import (
    MAX_TITLE_CHARS,
    Conversation,
    ConversationSummary,
    ListResult,
    clean_title,
    conversation_title,
    fresh_conversation,
    is_valid_conversation_id,
    is_valid_owner_key,
    parse_conversation,
)
from chatlib.store import search
from chatlib.store.engine import read_transaction, write_transaction
from chatlib.store.failures import DATABASE_ERRORS, Doing, error_code, storage_error
from chatlib.store.schema import attachments, conversations, messages

# One stored message: node id, role, content, reasoning, meta (JSON text), created_at,
# attachments (JSON text of the references).
MessageRow = tuple[str | None, str, str, str, str | None, float | None, str | None]

_SUMMARY_COLUMNS = (
    conversations.c.id,
    conversations.c.title,
    conversations.c.created_at,
    conversations.c.updated_at,
    conversations.c.message_count,
    conversations.c.total_cost_usd,
    conversations.c.imported_at,
)
_MESSAGE_COLUMNS = (
    messages.c.node_id,
    messages.c.role,
    messages.c.content,
    messages.c.reasoning,
    messages.c.meta,
    messages.c.created_at,
    messages.c.attachments,
)


class _Log(Protocol):
    def warning(self, event: str, **fields: Any) -> Any: ...

    def info(self, event: str, **fields: Any) -> Any: ...


def _require_owner_key(owner_key: str) -> None:
    if not is_valid_owner_key(owner_key):
        raise ValueError("owner_key must be 32 lowercase hex characters (see identity.owner_key)")


def _owned(owner_key: str, conversation_id: str) -> tuple[ColumnElement[bool], ...]:
    """WHERE clause of one conversation of one owner."""
    return (conversations.c.id == conversation_id, conversations.c.owner_key == owner_key)


class SqlConversationStore:
    """Every owner's conversations in one database (see `open_store` to get one)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        log: _Log | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._log: _Log = log if log is not None else structlog.get_logger(__name__)

    @property
    def engine(self) -> AsyncEngine:
        """The engine this store uses (shared with the usage table's writer)."""
        return self._engine

    async def aclose(self) -> None:
        """Close the database connections."""
        await self._engine.dispose()

    # -- public API --------------------------------------------------------------------------

    def new_conversation(self, model: str, system_prompt: str, temperature: float) -> Conversation:
        """A fresh, empty, unsaved conversation titled "New chat" (no I/O)."""
        return fresh_conversation(model, system_prompt, temperature, now=self._clock())

    async def save(
        self,
        owner_key: str,
        conversation: Conversation,
        *,
        touch: bool = True,
        expected: Conversation | None = None,
    ) -> Conversation:
        """Store `conversation` for `owner_key` and return it as stored, its revision bumped.

        `updated_at` is set to now (unless `touch=False`, used by imports); the title follows
        `conversation_title`. With `expected` (the conversation as this caller last loaded or
        saved it): gone -> ConversationDeleted; other messages -> ConversationChanged and
        nothing is written; the same messages under another revision (a rename) -> saved
        with the stored title. An id another owner has is ConversationNotFound. Raises
        StorageError when the database refuses the write; the stored version is then intact.
        """
        _require_owner_key(owner_key)
        prepared = self._prepared(conversation, touch=touch)
        try:
            async with write_transaction(self._engine) as connection:
                return await self._write(connection, owner_key, prepared, expected)
        except DATABASE_ERRORS as exc:
            raise self._failed(exc, "save", owner_key, conversation.id) from exc

    async def save_all(
        self, owner_key: str, conversations: Sequence[Conversation]
    ) -> builtins.list[Conversation]:
        """Store conversations with their own dates (an import) in one transaction: all or none."""
        _require_owner_key(owner_key)
        prepared = [self._prepared(c, touch=False) for c in conversations]
        try:
            async with write_transaction(self._engine) as connection:
                return [await self._write(connection, owner_key, c, None) for c in prepared]
        except DATABASE_ERRORS as exc:
            raise self._failed(exc, "save", owner_key, None) from exc

    async def load(self, owner_key: str, conversation_id: str) -> Conversation:
        """The conversation; ConversationNotFound if this owner has none with that id."""
        _require_owner_key(owner_key)
        if not is_valid_conversation_id(conversation_id):
            raise ConversationNotFound()
        try:
            async with read_transaction(self._engine) as connection:
                row = (
                    await connection.execute(
                        select(conversations).where(*_owned(owner_key, conversation_id))
                    )
                ).one_or_none()
                if row is None:
                    raise ConversationNotFound()
                rows = await message_rows(connection, owner_key, conversation_id)
        except DATABASE_ERRORS as exc:
            raise self._failed(exc, "read", owner_key, conversation_id) from exc
        return self._decode(owner_key, row, rows)

    async def list(self, owner_key: str, *, limit: int | None = None) -> ListResult:
        """The owner's conversations, most recently updated first (`limit`: the first ones).

        Only the summary columns are read. `corrupt` is always empty: rows cannot be torn.
        """
        _require_owner_key(owner_key)
        statement = (
            select(*_SUMMARY_COLUMNS)
            .where(conversations.c.owner_key == owner_key)
            .order_by(
                conversations.c.updated_at.desc(),
                conversations.c.created_at.desc(),
                conversations.c.id.desc(),
            )
            .limit(limit)
        )
        return ListResult(conversations=await self._summaries(owner_key, statement))

    async def delete(self, owner_key: str, conversation_id: str) -> bool:
        """Delete the conversation and its messages; False if this owner has none with that id."""
        _require_owner_key(owner_key)
        if not is_valid_conversation_id(conversation_id):
            return False
        try:
            async with write_transaction(self._engine) as connection:
                result = await connection.execute(
                    delete(conversations).where(*_owned(owner_key, conversation_id))
                )
        except DATABASE_ERRORS as exc:
            raise self._failed(exc, "delete", owner_key, conversation_id) from exc
        return result.rowcount > 0

    async def rename(self, owner_key: str, conversation_id: str, title: str) -> Conversation:
        """Give the conversation a new title (cleaned); its place in the list is kept."""
        _require_owner_key(owner_key)
        if not is_valid_conversation_id(conversation_id):
            raise ConversationNotFound()
        try:
            async with write_transaction(self._engine) as connection:
                row = (
                    await connection.execute(
                        update(conversations)
                        .where(*_owned(owner_key, conversation_id))
                        .values(title=clean_title(title), revision=conversations.c.revision + 1)
                        .returning(*conversations.c)
                    )
                ).one_or_none()
                if row is None:
                    raise ConversationNotFound()
                rows = await message_rows(connection, owner_key, conversation_id)
        except DATABASE_ERRORS as exc:
            raise self._failed(exc, "save", owner_key, conversation_id) from exc
        return self._decode(owner_key, row, rows)

    async def search(self, owner_key: str, query: str) -> builtins.list[ConversationSummary]:
        """Conversations whose title or any message contains `query` (case-insensitive)."""
        _require_owner_key(owner_key)
        needle = query.strip()[:MAX_TITLE_CHARS]  # a longer query is cut
        if not needle:
            return (await self.list(owner_key)).conversations
        statement = (
            select(*_SUMMARY_COLUMNS)
            .where(
                conversations.c.owner_key == owner_key,
                search.matches(self._engine.dialect.name, needle),
            )
            .order_by(
                conversations.c.updated_at.desc(),
                conversations.c.created_at.desc(),
                conversations.c.id.desc(),
            )
        )
        return await self._summaries(owner_key, statement)

    async def move_all(self, from_owner_key: str, to_owner_key: str) -> int:
        """Give every conversation of one owner to another (an anonymous visitor logging in).

        Ids are unique across owners, so nothing can be overwritten. The attached files go
        along (one copy each: files the new owner has already are kept once). One
        transaction: all move or none do. Returns how many conversations moved.
        """
        _require_owner_key(from_owner_key)
        _require_owner_key(to_owner_key)
        if from_owner_key == to_owner_key:
            return 0
        try:
            async with write_transaction(self._engine) as connection:
                result = await connection.execute(
                    update(conversations)
                    .where(conversations.c.owner_key == from_owner_key)
                    .values(owner_key=to_owner_key)
                )
                await _move_attachments(connection, from_owner_key, to_owner_key)
        except DATABASE_ERRORS as exc:
            raise self._failed(exc, "move", from_owner_key, None) from exc
        moved = result.rowcount
        self._log.info(
            "store.moved", from_owner_key=from_owner_key, to_owner_key=to_owner_key, moved=moved
        )
        return moved

    # -- writing -----------------------------------------------------------------------------

    def _prepared(self, conversation: Conversation, *, touch: bool) -> Conversation:
        """The conversation as it will be stored: checked, text cleaned, titled, dated."""
        if not is_valid_conversation_id(conversation.id):
            raise ValueError("conversation id must be uuid4().hex")
        for name in ("created_at", "updated_at", "temperature"):
            if not math.isfinite(getattr(conversation, name)):
                raise ValueError(f"conversation {name} must be finite")
        cleaned = storable(conversation)
        return replace(
            cleaned,
            title=conversation_title(cleaned.title, cleaned.messages),
            updated_at=self._clock() if touch else cleaned.updated_at,
        )

    async def _write(
        self,
        connection: AsyncConnection,
        owner_key: str,
        conversation: Conversation,
        expected: Conversation | None,
    ) -> Conversation:
        """Update (checked against `expected`) or insert; returns it with its new revision."""
        if expected is not None:
            revision = await _update(connection, owner_key, conversation, expected.revision)
            if revision is None:
                conversation, revision = await _save_after_conflict(
                    connection, owner_key, conversation, expected
                )
        else:
            updated = await _update(connection, owner_key, conversation, None)
            if updated is None:
                inserted = replace(conversation, revision=conversation.revision + 1)
                if await insert_conversation(connection, owner_key, inserted):
                    return inserted
                # Taken meanwhile (the same chat saved by another process), or another owner's.
                updated = await _update(connection, owner_key, conversation, None)
                if updated is None:
                    raise ConversationNotFound()
            revision = updated
        stored = await message_rows(connection, owner_key, conversation.id)
        await _write_messages(connection, owner_key, conversation.id, stored, conversation)
        return replace(conversation, revision=revision)

    # -- reading -----------------------------------------------------------------------------

    async def _summaries(
        self, owner_key: str, statement: Any
    ) -> builtins.list[ConversationSummary]:
        try:
            async with self._engine.connect() as connection:
                rows = (await connection.execute(statement)).all()
        except DATABASE_ERRORS as exc:
            raise self._failed(exc, "read", owner_key, None) from exc
        return [
            ConversationSummary(
                id=row.id,
                title=row.title,
                created_at=row.created_at,
                updated_at=row.updated_at,
                message_count=row.message_count,
                total_cost_usd=row.total_cost_usd,
                imported_at=row.imported_at,
            )
            for row in rows
        ]

    def _decode(
        self, owner_key: str, row: Row[Any], rows: builtins.list[MessageRow]
    ) -> Conversation:
        """A conversation read back through the one reader (`parse_conversation`)."""
        try:
            return decode_conversation(row, rows)
        except (ValueError, TypeError) as exc:
            self._log.warning(
                "store.corrupt_row",
                owner_key=owner_key,
                conversation_id=row.id,
                reason=type(exc).__name__,
            )
            raise ConversationCorrupt() from exc

    def _failed(
        self, exc: Exception, doing: Doing, owner_key: str, conversation_id: str | None
    ) -> Exception:
        # The driver's message may quote parameters (message text): log its type only.
        self._log.warning(
            f"store.{doing}_failed",
            owner_key=owner_key,
            conversation_id=conversation_id,
            reason=type(getattr(exc, "orig", None) or exc).__name__,
            code=error_code(exc),
        )
        return storage_error(exc, doing)


# -- statements shared with the JSON import ---------------------------------------------------


def storable(conversation: Conversation) -> Conversation:
    """The conversation with text every database takes: no NULs, no lone surrogates.

    Lone surrogates become "?" as the file store's writer made them; NULs, which PostgreSQL
    refuses in text, are dropped (the input checks drop them from questions already).
    """
    return replace(
        conversation,
        title=clean_text(conversation.title),
        model=clean_text(conversation.model),
        system_prompt=clean_text(conversation.system_prompt),
        messages=with_ids(
            tuple(_clean_message(m) for m in conversation.messages), conversation.branches
        ),
        branches=tuple(
            BranchNode(n.parent_id, _clean_message(n.message)) for n in conversation.branches
        ),
    )


def _clean_message(message: ChatMessage) -> ChatMessage:
    content, reasoning = clean_text(message.content), clean_text(message.reasoning)
    if content == message.content and reasoning == message.reasoning:
        return message
    return replace(message, content=content, reasoning=reasoning)


def encode_messages(messages: Sequence[ChatMessage]) -> builtins.list[MessageRow]:
    """The rows of a conversation's messages (an answer still streaming reads as interrupted)."""
    rows: builtins.list[MessageRow] = []
    for message in messages:
        meta: str | None = None
        if message.meta is not None:
            meta = json_bytes(_stored_meta(message)).decode()
        files: str | None = None
        if message.attachments:
            files = json_bytes([a.to_dict() for a in message.attachments]).decode()
        rows.append(
            (
                message.id or None,
                message.role,
                message.content,
                message.reasoning,
                meta,
                message.created_at,
                files,
            )
        )
    return rows


def _stored_meta(message: ChatMessage) -> dict[str, Any]:
    fields = {} if message.meta is None else message.meta.to_dict()
    if fields.get("status") == "streaming":
        # Whatever wrote it is gone by the time anyone reads it (as for files).
        fields["status"] = "interrupted"
    return fields


def encode_branches(conversation: Conversation) -> str | None:
    """The `branches` column: the inactive versions as JSON text (None: there are none)."""
    if not conversation.branches:
        return None
    nodes = []
    for node in conversation.branches:
        data = node.to_dict()
        if node.message.meta is not None:
            data["meta"] = _stored_meta(node.message)
        nodes.append(data)
    return json_bytes(nodes).decode()


def decode_conversation(row: Row[Any], rows: Sequence[MessageRow]) -> Conversation:
    """A conversation from its row and message rows; SchemaError (ValueError) if damaged."""
    document = {
        "id": row.id,
        "title": row.title,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "model": row.model,
        "system_prompt": row.system_prompt,
        "temperature": row.temperature,
        "revision": row.revision,
        "imported_at": row.imported_at,
        "messages": [
            {
                "id": node_id,
                "role": role,
                "content": content,
                "reasoning": reasoning,
                "meta": None if meta is None else orjson.loads(meta),
                "created_at": created_at,
                "attachments": None if files is None else orjson.loads(files),
            }
            for node_id, role, content, reasoning, meta, created_at, files in rows
        ],
        "branches": None if row.branches is None else orjson.loads(row.branches),
        "options": None if row.options is None else orjson.loads(row.options),
    }
    return parse_conversation(document)


def _conversation_values(conversation: Conversation) -> dict[str, Any]:
    return {
        "title": conversation.title,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "temperature": conversation.temperature,
        "message_count": len(conversation.messages),
        "total_cost_usd": conversation.total_cost_usd,
        "imported_at": conversation.imported_at,
        "branches": encode_branches(conversation),
        "options": encode_options(conversation.options),
    }


def encode_options(options: AnswerOptions) -> str | None:
    """The `options` column: JSON text (None for the defaults, as rows from before 0004)."""
    return None if options == AnswerOptions() else json_bytes(options.to_dict()).decode()


async def message_rows(
    connection: AsyncConnection, owner_key: str, conversation_id: str
) -> builtins.list[MessageRow]:
    """The stored message rows of the owner's conversation, in order."""
    result = await connection.execute(
        select(*_MESSAGE_COLUMNS)
        .select_from(messages.join(conversations))
        .where(*_owned(owner_key, conversation_id))
        .order_by(messages.c.position)
    )
    return [
        # A row an older app wrote has no id yet: it reads as the position's default one.
        (
            r.node_id or default_id(n),
            r.role,
            r.content,
            r.reasoning,
            r.meta,
            r.created_at,
            r.attachments,
        )
        for n, r in enumerate(result)
    ]


async def _update(
    connection: AsyncConnection, owner_key: str, conversation: Conversation, revision: int | None
) -> int | None:
    """Update the owner's conversation row (at `revision`, if given); its new revision or None."""
    where = _owned(owner_key, conversation.id)
    if revision is not None:
        where = (*where, conversations.c.revision == revision)
    result = await connection.execute(
        update(conversations)
        .where(*where)
        .values(**_conversation_values(conversation), revision=conversations.c.revision + 1)
        .returning(conversations.c.revision)
    )
    value = result.scalar_one_or_none()
    return None if value is None else int(value)


async def _save_after_conflict(
    connection: AsyncConnection, owner_key: str, conversation: Conversation, expected: Conversation
) -> tuple[Conversation, int]:
    """The revision was not the expected one: deleted, changed, or only renamed meanwhile?"""
    current = (
        await connection.execute(
            select(conversations.c.revision, conversations.c.title, conversations.c.branches)
            .where(*_owned(owner_key, conversation.id))
            .with_for_update()
        )
    ).one_or_none()
    if current is None:
        raise ConversationDeleted()
    stored = await message_rows(connection, owner_key, conversation.id)
    if stored != encode_messages(expected.messages) or current.branches != encode_branches(
        expected
    ):
        raise ConversationChanged()
    renamed = replace(conversation, title=current.title)
    revision = await _update(connection, owner_key, renamed, current.revision)
    if revision is None:  # changed again between two statements (the row is locked: never)
        raise ConversationChanged()
    return renamed, revision


async def _write_messages(
    connection: AsyncConnection,
    owner_key: str,
    conversation_id: str,
    stored: Sequence[MessageRow],
    conversation: Conversation,
) -> None:
    """Make the stored rows those of `conversation`: keep the common start, rewrite the rest."""
    wanted = encode_messages(conversation.messages)
    keep = 0
    while keep < min(len(stored), len(wanted)) and stored[keep] == wanted[keep]:
        keep += 1
    if keep < len(stored):
        owned = select(conversations.c.id).where(*_owned(owner_key, conversation_id))
        await connection.execute(
            delete(messages).where(
                messages.c.conversation_id.in_(owned), messages.c.position >= keep
            )
        )
    await _insert_messages(connection, conversation_id, wanted, start=keep)


async def _insert_messages(
    connection: AsyncConnection, conversation_id: str, rows: Sequence[MessageRow], *, start: int
) -> None:
    if start >= len(rows):
        return
    await connection.execute(
        insert(messages),
        [
            {
                "conversation_id": conversation_id,
                "position": position,
                "node_id": node_id,
                "role": role,
                "content": content,
                "reasoning": reasoning,
                "meta": meta,
                "created_at": created_at,
                "attachments": files,
            }
            for position, (node_id, role, content, reasoning, meta, created_at, files) in enumerate(
                rows[start:], start
            )
        ],
    )


async def insert_conversation(
    connection: AsyncConnection, owner_key: str, conversation: Conversation
) -> bool:
    """Insert a new conversation as it is (revision included); False if the id is taken."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    result = await connection.execute(
        dialect.insert(conversations)
        .values(
            id=conversation.id,
            owner_key=owner_key,
            revision=conversation.revision,
            **_conversation_values(conversation),
        )
        .on_conflict_do_nothing(index_elements=[conversations.c.id])
    )
    if result.rowcount == 0:
        return False
    await _insert_messages(
        connection, conversation.id, encode_messages(conversation.messages), start=0
    )
    return True


async def _move_attachments(
    connection: AsyncConnection, from_owner_key: str, to_owner: str
) -> None:
    """Give one owner's attached files to another; a file both have is kept once."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    columns = [c.name for c in attachments.c if c.name != "owner_key"]
    copied = select(
        *[attachments.c[name] for name in columns],
        literal(to_owner).label("owner_key"),
    ).where(attachments.c.owner_key == from_owner_key)
    await connection.execute(
        dialect.insert(attachments)
        .from_select([*columns, "owner_key"], copied)
        .on_conflict_do_nothing(index_elements=[attachments.c.owner_key, attachments.c.sha256])
    )
    await connection.execute(delete(attachments).where(attachments.c.owner_key == from_owner_key))
