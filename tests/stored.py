"""What the app saved, read straight from its SQLite database (DATA_DIR/chat.db), read-only.

An independent reader for tests: plain `sqlite3`, none of the app's store code, opened
with `mode=ro` so a check can never create, migrate or write the database it inspects
(and never checkpoints the write-ahead log of an app it just killed).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATABASE_NAME = "chat.db"


@dataclass(frozen=True)
class StoredMessage:
    role: str
    content: str
    meta: dict[str, Any] | None  # the JSON the app stored, decoded


@dataclass(frozen=True)
class StoredConversation:
    owner_key: str
    id: str
    title: str
    revision: int
    message_count: int  # the summary column the sidebar shows
    positions: tuple[int, ...]  # of the message rows, in order
    messages: tuple[StoredMessage, ...]

    @property
    def contents(self) -> list[str]:
        """The messages' texts, in order."""
        return [m.content for m in self.messages]

    def contains(self, needle: str) -> bool:
        """Whether the title or any message holds `needle`."""
        return needle in self.title or any(needle in m.content for m in self.messages)


def database_path(data_dir: Path) -> Path:
    return Path(data_dir) / DATABASE_NAME


@contextlib.contextmanager
def connect(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to DATA_DIR/chat.db (sqlite3.OperationalError if it is missing)."""
    uri = f"{database_path(data_dir).resolve().as_uri()}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=10, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def integrity(data_dir: Path) -> str:
    """SQLite's own verdict on the database file: "ok" when nothing is damaged."""
    with connect(data_dir) as connection:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    return "\n".join(str(row[0]) for row in rows)


def conversations(data_dir: Path, owner_key: str | None = None) -> list[StoredConversation]:
    """Every saved conversation (or one owner's), by owner then id, in one snapshot."""
    with connect(data_dir) as connection:
        connection.execute("BEGIN")  # one snapshot: a conversation and its messages agree
        heads = connection.execute(
            "SELECT owner_key, id, title, revision, message_count FROM conversations "
            "WHERE ?1 IS NULL OR owner_key = ?1 ORDER BY owner_key, id",
            (owner_key,),
        ).fetchall()
        rows = connection.execute(
            "SELECT conversation_id, position, role, content, meta FROM messages "
            "ORDER BY conversation_id, position"
        ).fetchall()
        connection.execute("COMMIT")
    by_conversation: dict[str, list[tuple[int, StoredMessage]]] = {}
    for conversation_id, position, role, content, meta in rows:
        message = StoredMessage(role, content, None if meta is None else json.loads(meta))
        by_conversation.setdefault(conversation_id, []).append((position, message))
    return [
        StoredConversation(
            owner_key=owner,
            id=conversation_id,
            title=title,
            revision=revision,
            message_count=count,
            positions=tuple(p for p, _ in by_conversation.get(conversation_id, [])),
            messages=tuple(m for _, m in by_conversation.get(conversation_id, [])),
        )
        for owner, conversation_id, title, revision, count in heads
    ]


def find_saved(data_dir: Path, needle: str) -> StoredConversation:
    """The one saved conversation whose title or messages contain `needle`."""
    found = [c for c in conversations(data_dir) if c.contains(needle)]
    assert len(found) == 1, [(c.owner_key, c.id, c.title) for c in found]
    return found[0]


def conversation(data_dir: Path, owner_key: str, conversation_id: str) -> StoredConversation:
    """One owner's conversation by id; AssertionError if it is not saved."""
    found = [c for c in conversations(data_dir, owner_key) if c.id == conversation_id]
    assert found, f"conversation {conversation_id} of {owner_key} is not saved"
    return found[0]
