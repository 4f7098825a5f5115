"""Search by the engine: which of an owner's conversations contain a text.

The contract is the file store's: a case-insensitive substring of the title or of any
message's content. SQLite answers from an FTS5 index with the trigram tokenizer (a phrase
of trigrams is a substring); PostgreSQL from `ILIKE` with pg_trgm GIN indexes. Needles
shorter than a trigram are compared row by row within the owner's conversations.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Integer, column, exists, func, literal, or_, select, table

from chatlib.store.schema import conversations, messages

TRIGRAM = 3
# The FTS5 table over messages.content (created by the first migration, SQLite only).
messages_fts = table("messages_fts", column("rowid", Integer), column("messages_fts"))


def matches(dialect: str, needle: str) -> ColumnElement[bool]:
    """A condition on `conversations` rows: the title or a message contains `needle`.

    The caller adds the owner to the same WHERE clause.
    """
    if dialect == "sqlite":
        return _sqlite_matches(needle)
    return _postgresql_matches(needle)


def _sqlite_matches(needle: str) -> ColumnElement[bool]:
    folded = needle.casefold()
    # chat_contains: registered on every SQLite connection (engine.py); Python's casefold.
    in_title = func.chat_contains(conversations.c.title, literal(folded)) == 1
    if len(needle) < TRIGRAM:
        return or_(
            in_title,
            exists().where(
                messages.c.conversation_id == conversations.c.id,
                func.chat_contains(messages.c.content, literal(folded)) == 1,
            ),
        )
    phrase = '"' + needle.replace('"', '""') + '"'
    hits = select(messages_fts.c.rowid).where(messages_fts.c.messages_fts.op("MATCH")(phrase))
    in_messages = select(messages.c.conversation_id).where(messages.c.id.in_(hits))
    return or_(in_title, conversations.c.id.in_(in_messages))


def _postgresql_matches(needle: str) -> ColumnElement[bool]:
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    in_messages = select(messages.c.conversation_id).where(
        messages.c.content.ilike(pattern, escape="\\")
    )
    return or_(
        conversations.c.title.ilike(pattern, escape="\\"), conversations.c.id.in_(in_messages)
    )
