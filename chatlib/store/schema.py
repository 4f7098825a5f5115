"""The tables, as SQLAlchemy Core metadata (the migrations under `migrations/` create them).

Dates are Unix seconds (UTC) as doubles, like `Conversation`; message metadata and a
message's attachment references are JSON text; the attached files' bytes are in `attachments`.
`conversations` carries the summary columns the list shows, so listing never reads messages
(nor `branches`, the inactive versions of messages, read only when a conversation is opened).
`messages` holds the active branch, in order: what search and the list's counts see.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_key", String(32), nullable=False),
    Column("title", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("model", Text, nullable=False),
    Column("system_prompt", Text, nullable=False),
    Column("temperature", Double, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("message_count", Integer, nullable=False),
    Column("total_cost_usd", Double, nullable=False),
    Column("imported_at", Double, nullable=True),  # Unix seconds; NULL: chatted here
    # The inactive versions of messages (JSON text, NULL: none), read only with the messages.
    Column("branches", Text, nullable=True),
    # Web search, reasoning effort, answer length (JSON text of AnswerOptions; NULL: defaults).
    Column("options", Text, nullable=True),
    # The list's order, per owner: an index scan, never a sort of every conversation.
    Index("ix_conversations_owner_updated", "owner_key", "updated_at", "created_at", "id"),
)

# A surrogate integer key because full-text indexes (SQLite FTS5's external content) need a
# stable integer row id; (conversation_id, position) is the natural key, kept unique.
messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column(
        "conversation_id",
        String(32),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("position", Integer, nullable=False),
    # The message's id within its conversation (ChatMessage.id), stable across saves; NULL
    # only for rows an older version of the app wrote (read as the position's default id).
    Column("node_id", String(64), nullable=True),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("reasoning", Text, nullable=False),
    Column("meta", Text, nullable=True),
    Column("created_at", Double, nullable=True),
    # The message's files as JSON text (a list of AttachmentRef dicts; NULL: none).
    Column("attachments", Text, nullable=True),
    UniqueConstraint("conversation_id", "position", name="uq_messages_conversation_position"),
)

# Files attached to (or drawn in) messages, once per owner and content: a message refers to
# one by its SHA-256. `created_at` is refreshed when the same bytes are stored again, so a
# file just uploaded is never swept as unused before the message that uses it is saved.
attachments = Table(
    "attachments",
    metadata,
    Column("owner_key", String(32), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Column("mime", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", Double, nullable=False),
)

# One row per chat turn, mirroring chatlib.usage.UsageRecord (the CSV's columns, in order).
usage = Table(
    "usage",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("timestamp", String(40), nullable=False),
    Column("request_id", Text, nullable=False),
    Column("owner", String(64), nullable=False),
    Column("conversation_id", String(64), nullable=False),
    Column("model", Text, nullable=False),
    Column("status", String(32), nullable=False),
    Column("error_code", Text, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=True),
    Column("completion_tokens", BigInteger, nullable=True),
    Column("reasoning_tokens", BigInteger, nullable=True),
    Column("cost_usd", Double, nullable=True),
    Column("ttft_ms", Double, nullable=True),
    Column("latency_ms", Double, nullable=True),
    Column("tokens_per_second", Double, nullable=True),
    Column("count", Integer, nullable=False),
    Index("ix_usage_timestamp", "timestamp"),
    Index("ix_usage_owner_timestamp", "owner", "timestamp"),
)

# Facts about the database itself, e.g. that the JSON data folder was imported.
store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
