"""Persistence behind ConversationService: SQL (SQLite by default, PostgreSQL by URL).

    url = database_url(settings, settings.database_url)
    store = await open_store(url, data_dir=settings.data_dir)  # on the serving event loop
    ...
    await store.aclose()

or, from synchronous startup code, `asyncio.run(prepare_database(url, data_dir=...))` and
then `SqlConversationStore(create_engine_for(url))`, which connects when first used.

`ConversationStoreProtocol` is what the service needs; both this package's
`SqlConversationStore` and the file store's `AsyncConversationStore` provide it.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from chatlib.storage import (
    AsyncConversationStore,
    Conversation,
    ConversationSummary,
    ListResult,
)
from chatlib.store.attachments import SqlAttachmentStore
from chatlib.store.engine import create_engine_for, database_url, describe_url
from chatlib.store.json_import import ImportReport, import_json_directory
from chatlib.store.migrate import migrate
from chatlib.store.sql import SqlConversationStore
from chatlib.store.startup import open_store, prepare_database

__all__ = [
    "ConversationStoreProtocol",
    "ImportReport",
    "SqlAttachmentStore",
    "SqlConversationStore",
    "create_engine_for",
    "database_url",
    "describe_url",
    "import_json_directory",
    "migrate",
    "open_store",
    "prepare_database",
]


class ConversationStoreProtocol(Protocol):
    """Stored conversations of every owner: what ConversationService calls.

    Every method takes the owner and reaches only that owner's conversations; another
    owner's id is ConversationNotFound (or False for `delete`). Errors are chatlib.errors
    StorageError subclasses with messages a visitor can act on.
    """

    def new_conversation(
        self, model: str, system_prompt: str, temperature: float
    ) -> Conversation: ...

    async def save(
        self,
        owner_key: str,
        conversation: Conversation,
        *,
        touch: bool = True,
        expected: Conversation | None = None,
    ) -> Conversation: ...

    async def save_all(
        self, owner_key: str, conversations: Sequence[Conversation]
    ) -> builtins.list[Conversation]: ...

    async def load(self, owner_key: str, conversation_id: str) -> Conversation: ...

    async def list(self, owner_key: str, *, limit: int | None = None) -> ListResult: ...

    async def delete(self, owner_key: str, conversation_id: str) -> bool: ...

    async def rename(self, owner_key: str, conversation_id: str, title: str) -> Conversation: ...

    async def search(self, owner_key: str, query: str) -> builtins.list[ConversationSummary]: ...

    async def move_all(self, from_owner_key: str, to_owner_key: str) -> int: ...


if TYPE_CHECKING:

    def _both_stores_fit(
        sql: SqlConversationStore, files: AsyncConversationStore
    ) -> builtins.list[ConversationStoreProtocol]:
        """Never called: mypy checks here that either store can stand behind the service."""
        return [sql, files]
