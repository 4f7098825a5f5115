"""Stored chats through their one door: turns (left, cancelled, overtaken), retry, edit, undo,
rename, export and import, and privacy between visitors."""

from __future__ import annotations

import asyncio
import errno
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from chatlib.branches import versions_of
from chatlib.chat import ChatService
from chatlib.client import ClientPool
from chatlib.conversations import ConversationService, TurnRequest
from chatlib.errors import ConversationNotFound, ImportRejected, InputError, StorageError
from chatlib.frames import FrameBudget
from chatlib.messages import History
from chatlib.options import AnswerOptions
from chatlib.storage import AsyncConversationStore, Conversation, ConversationStore
from chatlib.usage import UsageLog, UsageRecord, read_usage
from tests.conftest import settings_for
from tests.fakes.openrouter import FakeOpenRouter, expected_reply
from tests.turns import MODEL, OWNER, eventually, last_frame, turn_request

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


_eventually = eventually


def _turn(text: str = SLOW, conversation_id: str | None = None, **kw: object) -> TurnRequest:
    return turn_request(text, conversation_id, **kw)


_last = last_frame


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
    # generator: everything that arrived is saved (at least what was last shown; a token that
    # arrived after the last frame is kept too), marked stopped, and the usage row written.
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
    assert answer.content.startswith(shown[-1])
    await _eventually(lambda: [r.status for r in _rows(usage)] == ["stopped"])
    await _eventually(lambda: fake.active_streams == 0)


# -- the service's other doors ------------------------------------------------------------------

QUICK = "[[tokens=3]] [[rate=500]]"  # on a line of its own: titles leave it out
STRANGER = "5" * 32


async def _chat(conversations: ConversationService, *questions: str) -> str:
    """A stored conversation where each question was asked and answered; returns its id."""
    conversation_id: str | None = None
    for question in questions:
        final = await _last(conversations.turn(_turn(f"{question}\n{QUICK}", conversation_id)))
        assert final.done and final.save_error is None
        conversation_id = final.conversation.id
    assert conversation_id is not None
    return conversation_id


def _texts(conversation: Conversation) -> list[str]:
    return [m.content.removesuffix(f"\n{QUICK}") for m in conversation.messages if m.role == "user"]


async def test_retry_asks_the_last_question_again_in_place_of_its_answer(
    services: tuple[ChatService, ConversationService, UsageLog],
) -> None:
    _, conversations, _ = services
    conversation_id = await _chat(conversations, "first", "second")

    final = await _last(conversations.turn(_turn("", conversation_id, action="retry")))

    stored = await conversations.open(OWNER, conversation_id)
    assert stored == final.conversation
    assert _texts(stored) == ["first", "second"]
    assert [m.role for m in stored.messages] == ["user", "assistant"] * 2


async def test_retry_at_an_earlier_answer_asks_that_question_again_and_keeps_what_followed(
    fake: FakeOpenRouter, services: tuple[ChatService, ConversationService, UsageLog]
) -> None:
    _, conversations, _ = services
    conversation_id = await _chat(conversations, "first", "second", "third")
    before = await conversations.open(OWNER, conversation_id)

    retry = _turn("", conversation_id, action="retry", edit_index=0)
    final = await _last(conversations.turn(retry))

    stored = await conversations.open(OWNER, conversation_id)
    assert stored == final.conversation
    assert _texts(stored) == ["first"] and [m.role for m in stored.messages] == [
        "user",
        "assistant",
    ]
    assert stored.messages[0].id == before.messages[0].id  # the same question, asked again
    sent = fake.chat_requests()[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [("user", f"first\n{QUICK}")]
    # The old answer, and the questions after it, are the other version of that answer.
    assert versions_of(stored) == ((1, 1), (2, 2))
    back = await conversations.switch_version(OWNER, conversation_id, 1, -1)
    assert back.messages == before.messages


async def test_retry_with_another_model_keeps_both_answers_each_naming_its_model(
    fake: FakeOpenRouter, services: tuple[ChatService, ConversationService, UsageLog]
) -> None:
    _, conversations, _ = services
    conversation_id = await _chat(conversations, "first", "second")
    other = "anthropic/claude-sonnet-4"

    retry = _turn("", conversation_id, action="retry", edit_index=1, model=other)
    await _last(conversations.turn(retry))

    stored = await conversations.open(OWNER, conversation_id)
    assert fake.chat_requests()[-1].body["model"] == other
    assert _texts(stored) == ["first", "second"] and versions_of(stored)[3] == (2, 2)
    answers = [stored.messages[3], *(n.message for n in stored.branches)]
    assert [a.meta.model for a in answers if a.meta] == [other, MODEL]
    assert stored.messages[1].meta is not None and stored.messages[1].meta.model == MODEL
    shown = await conversations.switch_version(OWNER, conversation_id, 3, -1)
    assert shown.messages[3].meta is not None and shown.messages[3].meta.model == MODEL


@pytest.mark.parametrize("nth", [2, 7, -1])
async def test_retry_at_a_question_that_is_not_there_is_refused_before_anything_is_sent(
    fake: FakeOpenRouter, services: tuple[ChatService, ConversationService, UsageLog], nth: int
) -> None:
    _, conversations, _ = services
    conversation_id = await _chat(conversations, "first", "second")
    before = await conversations.open(OWNER, conversation_id)
    sent = len(fake.chat_requests())

    with pytest.raises(InputError, match="no message to retry"):
        await anext(conversations.turn(_turn("", conversation_id, action="retry", edit_index=nth)))

    assert len(fake.chat_requests()) == sent
    assert await conversations.open(OWNER, conversation_id) == before


async def test_a_chats_options_are_saved_and_a_turn_without_its_own_uses_them(
    fake: FakeOpenRouter, services: tuple[ChatService, ConversationService, UsageLog]
) -> None:
    _, conversations, _ = services
    plain = await _chat(conversations, "no options asked")
    assert (await conversations.open(OWNER, plain)).options == AnswerOptions()
    searched = AnswerOptions(web_search=True, reasoning_effort="low", max_tokens=120)

    first = await _last(conversations.turn(_turn(f"news?\n{QUICK}", options=searched)))
    chat_id = first.conversation.id
    assert first.conversation.options == searched
    await _last(conversations.turn(_turn(f"more\n{QUICK}", chat_id)))  # no options: the chat's
    assert _asked_with(fake) == (True, 120)
    retried = await _last(conversations.turn(_turn("", chat_id, action="retry", edit_index=0)))
    assert retried.conversation.options == searched and _asked_with(fake) == (True, 120)
    assert (await conversations.open(OWNER, chat_id)).options == searched

    shorter = replace(searched, web_search=False, max_tokens=None)
    await _last(conversations.turn(_turn(f"again\n{QUICK}", chat_id, options=shorter)))
    assert (await conversations.open(OWNER, chat_id)).options == shorter
    assert _asked_with(fake) == (False, None)


def _asked_with(fake: FakeOpenRouter) -> tuple[bool, int | None]:
    """Whether the last request upstream searched the web, and its answer length."""
    sent = fake.received_options()
    searched = any("web_search" in str(tool.get("type")) for tool in sent.get("tools", []))
    return searched, sent.get("max_tokens")


async def test_editing_a_question_replaces_it_and_everything_after_it(
    services: tuple[ChatService, ConversationService, UsageLog],
) -> None:
    _, conversations, _ = services
    conversation_id = await _chat(conversations, "first", "second", "third")

    edit = _turn(f"second, better\n{QUICK}", conversation_id, action="edit", edit_index=1)
    await _last(conversations.turn(edit))

    stored = await conversations.open(OWNER, conversation_id)
    assert _texts(stored) == ["first", "second, better"]
    assert len(stored.messages) == 4


async def test_retry_and_edit_without_a_question_are_refused_before_anything_is_sent(
    fake: FakeOpenRouter, services: tuple[ChatService, ConversationService, UsageLog]
) -> None:
    _, conversations, _ = services
    conversation_id = await _chat(conversations, "only")
    sent = len(fake.chat_requests())

    with pytest.raises(InputError, match="no message to retry"):
        await anext(conversations.turn(_turn("", None, action="retry")))
    with pytest.raises(InputError, match="Only your own messages"):
        await anext(conversations.turn(_turn("x", conversation_id, action="edit", edit_index=5)))
    assert len(fake.chat_requests()) == sent


async def test_undo_removes_the_last_question_and_answer_and_gives_the_question_back(
    services: tuple[ChatService, ConversationService, UsageLog],
) -> None:
    _, conversations, _ = services
    conversation_id = await _chat(conversations, "first", "second")

    updated, question = await conversations.undo(OWNER, conversation_id)

    assert question == f"second\n{QUICK}"
    assert _texts(updated) == ["first"] and len(updated.messages) == 2
    assert await conversations.open(OWNER, conversation_id) == updated


async def test_another_visitors_chat_cannot_be_reached_through_any_door(
    services: tuple[ChatService, ConversationService, UsageLog],
) -> None:
    _, conversations, _ = services
    secret_id = await _chat(conversations, "my medical question")

    with pytest.raises(ConversationNotFound):
        await conversations.open(STRANGER, secret_id)
    with pytest.raises(ConversationNotFound):
        await conversations.rename(STRANGER, secret_id, "mine now")
    with pytest.raises(ConversationNotFound):
        await conversations.undo(STRANGER, secret_id)
    with pytest.raises(ConversationNotFound):
        await conversations.export(STRANGER, secret_id, "json")
    stranger_turn = replace(_turn(f"hi {QUICK}", secret_id), owner_key=STRANGER)
    with pytest.raises(ConversationNotFound):
        await anext(conversations.turn(stranger_turn))
    assert await conversations.delete(STRANGER, secret_id) is False
    assert (await conversations.list(STRANGER, "medical")).conversations == []
    assert not await conversations.has_conversations(STRANGER)
    assert _texts(await conversations.open(OWNER, secret_id)) == ["my medical question"]


async def test_renaming_needs_a_saved_chat_and_a_name(
    services: tuple[ChatService, ConversationService, UsageLog],
) -> None:
    _, conversations, _ = services
    conversation_id = await _chat(conversations, "hello")

    with pytest.raises(InputError, match="Send a message first"):
        await conversations.rename(OWNER, None, "New name")
    with pytest.raises(InputError, match="Type the new name first"):
        await conversations.rename(OWNER, conversation_id, "   ")
    assert (await conversations.rename(OWNER, conversation_id, "Greetings")).title == "Greetings"
    assert [s.title for s in (await conversations.list(OWNER)).conversations] == ["Greetings"]


async def test_export_one_chat_or_all_of_them_and_bring_them_back(
    services: tuple[ChatService, ConversationService, UsageLog], tmp_path: Path
) -> None:
    _, conversations, _ = services
    with pytest.raises(InputError, match="no saved conversations yet"):
        await conversations.export(OWNER, None, "json")
    first = await _chat(conversations, "Where is the treasure?")
    await _chat(conversations, "Who buried it?")

    one = await conversations.export(OWNER, first, "json")
    markdown = await conversations.export(OWNER, first, "markdown")
    everything = await conversations.export(OWNER, None, "json")

    assert [c["title"] for c in orjson.loads(one.data)["conversations"]] == [
        "Where is the treasure?"
    ]
    assert markdown.name.endswith(".md") and b"# Where is the treasure?" in markdown.data
    assert len(orjson.loads(everything.data)["conversations"]) == 2
    assert len(list((tmp_path / "exports").rglob("*.json"))) == 2  # the kept copies
    assert await conversations.import_file(STRANGER, everything.data) == 2
    imported = (await conversations.list(STRANGER)).conversations
    assert sorted(s.title for s in imported) == ["Where is the treasure?", "Who buried it?"]
    # The sidebar marks imported chats; chats made here carry no mark.
    assert all(s.imported_at is not None for s in imported)
    assert all(s.imported_at is None for s in (await conversations.list(OWNER)).conversations)
    reopened = await conversations.open(STRANGER, imported[0].id)
    assert reopened.imported_at == imported[0].imported_at


async def test_an_import_that_fills_the_disk_half_way_leaves_nothing_behind(
    services: tuple[ChatService, ConversationService, UsageLog],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, conversations, _ = services
    existing = await _chat(conversations, "precious")
    document = orjson.loads((await conversations.export(OWNER, None, "json")).data)
    document["conversations"] *= 3
    real_mkstemp = tempfile.mkstemp
    calls = 0

    def fills_up(*args: Any, **kwargs: Any) -> tuple[int, str]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", fills_up)
    with pytest.raises(StorageError, match="disk is full"):
        await conversations.import_file(OWNER, orjson.dumps(document))
    monkeypatch.undo()

    assert [s.id for s in (await conversations.list(OWNER)).conversations] == [existing]
    with pytest.raises(ImportRejected, match="file is empty"):
        await conversations.import_file(OWNER, b"   ")


async def test_moving_an_anonymous_visitors_chats_at_login(
    services: tuple[ChatService, ConversationService, UsageLog],
) -> None:
    _, conversations, _ = services
    await _chat(conversations, "asked before logging in")

    assert await conversations.has_conversations(OWNER)
    assert await conversations.move_all(OWNER, STRANGER) == 1
    assert not await conversations.has_conversations(OWNER)
    listed = await conversations.list(STRANGER)
    assert [s.title for s in listed.conversations] == ["asked before logging in"]
