"""Shared by the service-level tests of turns: a request as a page makes it, waiting, and
the conversation service over a test's store."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chatlib.chat import ChatService, TurnRequest
from chatlib.client import ClientPool
from chatlib.conversations import ConversationService
from chatlib.frames import FrameBudget
from chatlib.store import ConversationStoreProtocol, SqlAttachmentStore, database_url
from tests.conftest import settings_for
from tests.fakes.openrouter import FakeOpenRouter
from tests.pg_server import fresh_database

OWNER = "0" * 32
MODEL = "openai/gpt-4o"
_Frame = TypeVar("_Frame")


def turn_request(
    text: str, conversation_id: str | None = None, *, owner: str = OWNER, **kw: Any
) -> TurnRequest:
    """A turn as the page asks for it: the default model, no system prompt, 0.3."""
    fields: dict[str, Any] = {"model": MODEL, "system_prompt": "", "temperature": 0.3, **kw}
    return TurnRequest(owner_key=owner, conversation_id=conversation_id, user_text=text, **fields)


async def eventually(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Wait (up to ~10 s) for what an answer finishes in its own task."""
    for _ in range(200):
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("never happened")


async def last_frame(frames: AsyncIterator[_Frame]) -> _Frame:
    """Run a turn (or a comparison) to its end; its final frame."""
    return [frame async for frame in frames][-1]


def each_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """For a fixture parametrised ["sqlite", "postgresql"]: an empty database of that engine
    (PostgreSQL: a new database per test on the `postgres_url` cluster)."""
    if request.param == "sqlite":
        return database_url(tmp_path)
    return fresh_database(request.getfixturevalue("postgres_url"))


@contextlib.asynccontextmanager
async def service_over(
    store: ConversationStoreProtocol,
    fake: FakeOpenRouter,
    tmp_path: Path,
    *,
    max_import_bytes: int = 1_000_000,
    attachments: SqlAttachmentStore | None = None,
) -> AsyncIterator[ConversationService]:
    """The conversation service over a test's store, answering from the fake upstream."""
    settings = settings_for(fake, tmp_path)
    pool = ClientPool(settings)
    chat = ChatService(settings, pool, FrameBudget(updates_per_second=300, min_interval_s=0.01))
    try:
        yield ConversationService(
            store,
            chat,
            exports_dir=tmp_path / "exports",
            max_import_bytes=max_import_bytes,
            attachments=attachments,
        )
    finally:
        await pool.aclose()
