"""Turns on stored chats: the page going away mid-answer, the chat deleted or renamed meanwhile."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from chatlib.chat import ChatService
from chatlib.client import ClientPool
from chatlib.conversations import ConversationFrame, ConversationService, TurnRequest
from chatlib.frames import FrameBudget
from chatlib.messages import History
from chatlib.storage import AsyncConversationStore, ConversationStore
from chatlib.usage import UsageLog, UsageRecord, read_usage
from tests.conftest import settings_for
from tests.fakes.openrouter import FakeOpenRouter, expected_reply

OWNER = "0" * 32
SLOW = "tell me a long story [[tokens=400]] [[rate=40]]"


@pytest.fixture
async def services(
    fake: FakeOpenRouter, tmp_path: Path
) -> AsyncIterator[tuple[ChatService, ConversationService, UsageLog]]:
    settings = settings_for(fake, tmp_path)
    pool = ClientPool(settings)
    usage = UsageLog(tmp_path / "usage")
    chat = ChatService(
        settings, pool, FrameBudget(updates_per_second=300, min_interval_s=0.01), usage=usage
    )
    store = AsyncConversationStore(ConversationStore(tmp_path / "data"))
    conversations = ConversationService(
        store, chat, exports_dir=tmp_path / "exports", max_import_bytes=1_000_000
    )
    try:
        yield chat, conversations, usage
    finally:
        await pool.aclose()
        usage.close()


async def _eventually(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Wait (up to ~10 s) for work the turn finishes in the background."""
    for _ in range(200):
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("never happened")


def _turn(text: str = SLOW, conversation_id: str | None = None, **kw: object) -> TurnRequest:
    return TurnRequest(
        owner_key=OWNER,
        conversation_id=conversation_id,
        user_text=text,
        model="openai/gpt-4o",
        system_prompt="",
        temperature=0.3,
        **kw,  # type: ignore[arg-type]
    )


async def _last(frames: AsyncIterator[ConversationFrame]) -> ConversationFrame:
    return [frame async for frame in frames][-1]


async def _messages_once_answered(
    conversations: ConversationService, conversation_id: str
) -> History:
    """The stored messages once the answer a left turn finishes in the background is saved."""

    async def answered() -> bool:
        stored = await conversations.open(OWNER, conversation_id)
        return stored.messages[-1].role == "assistant"

    await _eventually(answered)
    return (await conversations.open(OWNER, conversation_id)).messages


def _rows(usage: UsageLog) -> list[UsageRecord]:
    return list(read_usage(usage.path.parent)) if usage.path.exists() else []


async def test_closing_the_page_mid_answer_saves_what_arrived_as_stopped(
    fake: FakeOpenRouter, services: tuple[ChatService, ConversationService, UsageLog]
) -> None:
    _, conversations, usage = services
    frames = conversations.turn(_turn())
    shown = ""
    async for frame in frames:
        conversation = frame.conversation
        shown = conversation.messages[-1].content
        if len(shown) > 40:
            break
    await frames.aclose()  # what Gradio does when the page is closed or reloaded

    saved = await _messages_once_answered(conversations, conversation.id)
    assert [m.role for m in saved] == ["user", "assistant"]
    answer = saved[-1]
    assert answer.meta is not None and answer.meta.status == "stopped"
    assert answer.content.startswith(shown)  # nothing that was on screen is lost
    assert len(answer.content) < len(expected_reply("tell me a long story", 400))
    assert answer.meta.ttft_ms is not None
    await _eventually(lambda: fake.active_streams == 0)  # the upstream request was closed
    await _eventually(lambda: [r.status for r in _rows(usage)] == ["stopped"])


async def test_an_api_caller_leaving_mid_answer_still_gets_a_usage_row(
    fake: FakeOpenRouter, services: tuple[ChatService, ConversationService, UsageLog]
) -> None:
    chat, _, usage = services
    request = TurnRequest(
        owner_key="api",
        conversation_id=None,
        user_text=SLOW,
        model="openai/gpt-4o",
        system_prompt="",
        temperature=0.3,
    )
    frames = chat.run_turn(request, ())
    async for frame in frames:
        if frame.answer.content:
            break
    await frames.aclose()
    await _eventually(lambda: fake.active_streams == 0)
    await _eventually(lambda: len(_rows(usage)) == 1)
    (row,) = _rows(usage)
    assert row.status == "stopped" and row.ttft_ms is not None and row.latency_ms is not None


async def test_a_chat_deleted_or_renamed_mid_answer_is_not_brought_back(
    services: tuple[ChatService, ConversationService, UsageLog],
) -> None:
    _, conversations, _ = services
    turn = _turn("short [[tokens=30]] [[rate=100]]")
    frames = [conversations.turn(turn), conversations.turn(turn)]
    # Each question is saved before its answer streams.
    doomed, renamed = [(await anext(stream)).conversation for stream in frames]
    assert await conversations.delete(OWNER, doomed.id)  # e.g. from another tab
    await conversations.rename(OWNER, renamed.id, "My own title")
    finals = [await _last(stream) for stream in frames]

    listed = await conversations.list(OWNER)
    assert [s.title for s in listed.conversations] == ["My own title"]
    assert finals[0].save_error is not None
    assert "deleted" in finals[0].save_error.user_message  # the visitor is told
    assert finals[1].save_error is None
    kept = await conversations.open(OWNER, renamed.id)
    assert kept.title == "My own title" and kept.messages[-1].meta is not None
    assert kept.messages[-1].meta.status == "complete"


async def test_an_answer_that_ends_late_never_overwrites_a_newer_turn(
    services: tuple[ChatService, ConversationService, UsageLog],
) -> None:
    # Tab 1 asks a slow model; tab 2 opens the same chat, asks and gets its answer first.
    _, conversations, _ = services

    slow = conversations.turn(_turn("first [[delay=1]] [[tokens=3]]"))
    conversation = (await anext(slow)).conversation
    fast = await _last(conversations.turn(_turn("second [[tokens=3]]", conversation.id)))
    assert fast.save_error is None
    late = await _last(slow)

    stored = (await conversations.open(OWNER, conversation.id)).messages
    assert [m.content for m in stored] == [
        "first [[delay=1]] [[tokens=3]]",
        "second [[tokens=3]]",
        expected_reply("second", 3),
    ]
    assert late.save_error is not None and "not saved" in late.save_error.user_message


async def test_a_cancelled_turn_keeps_what_arrived_and_its_usage_row(
    fake: FakeOpenRouter, services: tuple[ChatService, ConversationService, UsageLog]
) -> None:
    # Gradio cancels the task (its /cancel route, or a shutdown) instead of closing the
    # generator: the chat as last shown is saved, marked stopped, and the usage row written.
    _, conversations, usage = services
    shown: list[str] = []
    ids: list[str] = []

    async def watch() -> None:
        async for frame in conversations.turn(_turn()):
            ids.append(frame.conversation.id)
            shown.append(frame.conversation.messages[-1].content)

    task = asyncio.get_running_loop().create_task(watch())
    await _eventually(lambda: len(shown[-1] if shown else "") > 40)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    answer = (await _messages_once_answered(conversations, ids[0]))[-1]
    assert answer.meta is not None and answer.meta.status == "stopped"
    assert answer.content == shown[-1]
    await _eventually(lambda: [r.status for r in _rows(usage)] == ["stopped"])
    await _eventually(lambda: fake.active_streams == 0)
