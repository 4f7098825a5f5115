"""Versions of messages: editing or retrying keeps the old version, switching brings it back.

The pure tree operations first (with property tests over any sequence of edits, retries,
switches and undos), then the same stories through ConversationService, then exports: a
branched chat exported now is still read by the app as released before versions existed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlib import branches
from chatlib.branches import BranchNode, versions_of
from chatlib.conversations import ConversationFrame, ConversationService, TurnRequest
from chatlib.errors import ConversationChanged, ConversationNotFound, ImportRejected, InputError
from chatlib.messages import AnswerMeta, ChatMessage
from chatlib.storage import (
    AsyncConversationStore,
    Conversation,
    ConversationStore,
    conversation_file_bytes,
    fresh_conversation,
    parse_conversation,
)
from chatlib.transfer import export_json, export_markdown, parse_import
from tests.fakes.openrouter import FakeOpenRouter
from tests.legacy import transfer as released_transfer
from tests.turns import OWNER, service_over, turn_request

STRANGER = "5" * 32
QUICK = "[[tokens=3]] [[rate=500]]"

# -- the tree, without I/O --------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def _message(role: str, text: str, clock: _Clock) -> ChatMessage:
    meta = AnswerMeta("m/x", "complete", cost_usd=0.01) if role == "assistant" else None
    taken = {text}  # ids only need to be unique within the conversation
    return ChatMessage(role, text, meta=meta, created_at=clock(), id=branches.new_id(taken))  # type: ignore[arg-type]


def _ask(conversation: Conversation, text: str, clock: _Clock) -> Conversation:
    turn = (_message("user", text, clock), _message("assistant", f"re: {text}", clock))
    return replace(conversation, messages=(*conversation.messages, *turn))


def _edit(conversation: Conversation, index: int, text: str, clock: _Clock) -> Conversation:
    """What the service does for "edit": the old question and its tail become a version."""
    return _ask(branches.fork(conversation, index), text, clock)


def _retry(conversation: Conversation, clock: _Clock) -> Conversation:
    question = max(i for i, m in enumerate(conversation.messages) if m.role == "user")
    forked = branches.fork(conversation, question + 1)
    answer = _message("assistant", f"again: {forked.messages[-1].content}", clock)
    return replace(forked, messages=(*forked.messages, answer))


def _chat(*questions: str, clock: _Clock | None = None) -> tuple[Conversation, _Clock]:
    clock = clock or _Clock()
    conversation = fresh_conversation("m/x", "", 0.3, now=clock())
    for question in questions:
        conversation = _ask(conversation, question, clock)
    return conversation, clock


def _texts(conversation: Conversation) -> list[str]:
    return [m.content for m in conversation.messages]


def test_editing_a_question_keeps_the_old_one_as_version_1_of_2() -> None:
    chat, clock = _chat("hello", "what is 2+2?")
    edited = _edit(chat, 2, "what is 3+3?", clock)

    assert _texts(edited) == ["hello", "re: hello", "what is 3+3?", "re: what is 3+3?"]
    assert versions_of(edited) == ((1, 1), (1, 1), (2, 2), (1, 1))
    back = branches.switch(edited, 2, -1)
    assert _texts(back) == _texts(chat)
    assert versions_of(back) == ((1, 1), (1, 1), (1, 2), (1, 1))
    assert _texts(branches.switch(back, 2, +1)) == _texts(edited)


def test_switching_back_returns_to_the_deeper_path_last_seen() -> None:
    chat, clock = _chat("a", "b")
    edited = _edit(chat, 0, "A", clock)  # versions of the first question
    deeper = _ask(edited, "C", clock)
    deeper = _ask(deeper, "D", clock)

    old = branches.switch(deeper, 0, -1)
    assert _texts(old) == ["a", "re: a", "b", "re: b"]
    again = branches.switch(old, 0, +1)
    assert _texts(again) == _texts(deeper)  # where the visitor was, not just "A"


def test_retry_keeps_every_answer_and_numbers_them_in_the_order_written() -> None:
    chat, clock = _chat("tell a joke")
    twice = _retry(_retry(chat, clock), clock)
    assert versions_of(twice) == ((1, 1), (3, 3))
    first = branches.switch(branches.switch(twice, 1, -1), 1, -1)
    assert _texts(first) == ["tell a joke", "re: tell a joke"]
    assert versions_of(first) == ((1, 1), (1, 3))
    assert twice.total_cost_usd == pytest.approx(0.03)  # every answer was paid for


def test_a_message_without_other_versions_cannot_be_switched() -> None:
    chat, _ = _chat("only one")
    for index, step in [(0, 1), (1, -1), (2, 1), (-1, 1), (0, 0)]:
        with pytest.raises(InputError, match="no other version"):
            branches.switch(chat, index, step)


def test_undo_removes_the_last_turn_with_the_versions_hanging_only_off_it() -> None:
    chat, clock = _chat("keep me", "drop me")
    chat = _retry(_edit(chat, 2, "drop me too", clock), clock)
    chat = _edit(chat, 0, "keep me, edited", clock)
    chat = _ask(chat, "last", clock)
    undone = branches.drop_from(chat, 2)
    assert _texts(undone) == ["keep me, edited", "re: keep me, edited"]
    # The first question's old version (and everything under it) is still there.
    assert [n.message.content for n in undone.branches if n.parent_id is None] == ["keep me"]
    assert versions_of(undone)[0] == (2, 2)


def _reachable_by_switching(conversation: Conversation) -> set[str]:
    """Every message id a visitor can bring on screen with the ‹ › controls."""
    seen: set[str] = set()
    seen_paths: set[tuple[str, ...]] = set()
    todo = [conversation]
    while todo:
        current = todo.pop()
        ids = tuple(m.id for m in current.messages)
        if ids in seen_paths:
            continue
        seen_paths.add(ids)
        seen.update(ids)
        for index, (k, n) in enumerate(versions_of(current)):
            for step in range(1 - k, n - k + 1):
                if step:
                    todo.append(branches.switch(current, index, step))
    return seen


def _assert_valid(conversation: Conversation) -> None:
    messages = conversation.messages
    ids = [m.id for m in messages] + [n.id for n in conversation.branches]
    assert all(ids) and len(ids) == len(set(ids))
    assert all(m.role == ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(messages))
    assert branches.prune(conversation) is conversation  # nothing unreachable is kept
    if not messages or messages[-1].role == "assistant":  # no version left pending
        assert _reachable_by_switching(conversation) == set(ids)


_operation = st.tuples(
    st.sampled_from(["ask", "edit", "retry", "switch", "undo"]), st.integers(0, 9)
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_operation, max_size=12))
def test_any_sequence_of_edits_retries_switches_and_undos_keeps_a_valid_tree(
    operations: list[tuple[str, int]],
) -> None:
    chat, clock = _chat("start")
    for name, n in operations:
        questions = [i for i, m in enumerate(chat.messages) if m.role == "user"]
        if name == "ask" or not questions:
            chat = _ask(chat, f"q{n}", clock)
        elif name == "edit":
            chat = _edit(chat, questions[n % len(questions)], f"e{n}", clock)
        elif name == "retry":
            chat = _retry(chat, clock)
        elif name == "undo":
            chat = branches.drop_from(chat, questions[-1])
        else:
            index = n % len(chat.messages)
            k, total = versions_of(chat)[index]
            if total > 1:
                chat = branches.switch(chat, index, 1 if k < total else -1)
        _assert_valid(chat)


def test_a_stored_file_brings_the_tree_back_and_drops_what_cannot_be_reached() -> None:
    chat, clock = _chat("a", "b")
    chat = _retry(_edit(chat, 2, "B", clock), clock)
    document = orjson.loads(conversation_file_bytes(chat))
    back = parse_conversation(document)
    assert back.branches == chat.branches and _texts(back) == _texts(chat)
    assert [m.id for m in back.messages] == [m.id for m in chat.messages]

    stray = {"role": "user", "content": "lost", "id": "stray", "parent_id": "nobody"}
    document["branches"].append(stray)
    assert parse_conversation(document).branches == chat.branches


# -- the tree in exports ----------------------------------------------------------------------


NOW = datetime(2026, 5, 28, 12, 0, tzinfo=UTC)


def _branched() -> Conversation:
    chat, clock = _chat("Which planet is largest?", "And the smallest?")
    chat = _edit(chat, 2, "And the hottest?", clock)
    return _retry(chat, clock)


def test_an_export_round_trips_the_tree_and_keeps_the_shown_branch_flat() -> None:
    chat = _branched()
    data = export_json([chat], now=NOW)
    document = orjson.loads(data)["conversations"][0]
    assert [m["content"] for m in document["messages"]] == _texts(chat)
    assert len(document["branches"]) == 3

    [imported] = parse_import(data, max_bytes=1_000_000)
    assert imported.id != chat.id
    assert _texts(imported) == _texts(chat) and imported.branches == chat.branches
    assert versions_of(imported) == versions_of(chat) == ((1, 1), (1, 1), (2, 2), (2, 2))
    assert _texts(branches.switch(imported, 2, -1))[2:] == [
        "And the smallest?",
        "re: And the smallest?",
    ]


def test_the_app_as_released_before_versions_imports_the_branch_that_was_shown() -> None:
    """Older versions read `messages` and ignore `branches` and ids (proved on its parser)."""
    chat = _branched()
    [imported] = released_transfer.parse_import(export_json([chat], now=NOW), max_bytes=1_000_000)
    assert [m.content for m in imported.messages] == _texts(chat)
    assert imported.title == "Which planet is largest?"


def test_markdown_shows_the_branch_on_screen_and_which_version_it_is() -> None:
    text = export_markdown(_branched())
    assert "And the hottest?" in text and "And the smallest?" not in text
    assert "version 2 of 2" in text


def _import_error(chat: Conversation, change: object) -> str:
    document = orjson.loads(export_json([chat], now=NOW))
    change(document["conversations"][0])  # type: ignore[operator]
    with pytest.raises(ImportRejected) as refused:
        parse_import(orjson.dumps(document), max_bytes=1_000_000, max_messages=8)
    return refused.value.user_message


def test_an_import_with_a_broken_tree_is_refused_naming_what_is_wrong() -> None:
    chat = _branched()

    def duplicate(c: dict) -> None:  # type: ignore[type-arg]
        c["branches"][0]["id"] = c["messages"][0]["id"]

    def orphan(c: dict) -> None:  # type: ignore[type-arg]
        c["branches"][0]["parent_id"] = "nowhere"

    def cycle(c: dict) -> None:  # type: ignore[type-arg]
        first, second = c["branches"][0], c["branches"][1]
        first["parent_id"], second["parent_id"] = second["id"], first["id"]

    def bad_id(c: dict) -> None:  # type: ignore[type-arg]
        c["branches"][0]["id"] = "has space"

    def too_many(c: dict) -> None:  # type: ignore[type-arg]
        c["branches"] *= 2

    def not_a_list(c: dict) -> None:  # type: ignore[type-arg]
        c["branches"] = {"a": 1}

    assert "other version 1 has the id" in _import_error(chat, duplicate)
    assert "parent_id 'nowhere', which no message has" in _import_error(chat, orphan)
    assert "cycle of parent_id links" in _import_error(chat, cycle)
    assert "field 'id' is 'has space'" in _import_error(chat, bad_id)
    assert "10 messages with their other versions; the limit is 8" in _import_error(chat, too_many)
    assert "field 'branches' is an object, expected a list" in _import_error(chat, not_a_list)


# -- through the service ----------------------------------------------------------------------


@pytest.fixture
async def service(fake: FakeOpenRouter, tmp_path: Path) -> AsyncIterator[ConversationService]:
    store = AsyncConversationStore(ConversationStore(tmp_path / "data"))
    async with service_over(store, fake, tmp_path) as service:
        yield service


def _turn(text: str, conversation_id: str | None = None, **kw: object) -> TurnRequest:
    return turn_request(text, conversation_id, **kw)


async def _last(frames: AsyncIterator[ConversationFrame]) -> ConversationFrame:
    seen = [frame async for frame in frames]
    ids = {tuple(m.id for m in f.conversation.messages[:-1]) for f in seen}
    assert len(ids) == 1  # every frame of a turn shows the same messages under the same ids
    final = seen[-1]
    assert final.done and final.save_error is None
    return final


async def _asked(service: ConversationService, *questions: str) -> Conversation:
    conversation_id: str | None = None
    for question in questions:
        final = await _last(service.turn(_turn(f"{question}\n{QUICK}", conversation_id)))
        conversation_id = final.conversation.id
    assert conversation_id is not None
    return await service.open(OWNER, conversation_id)


def _questions(conversation: Conversation) -> list[str]:
    return [m.content.removesuffix(f"\n{QUICK}") for m in conversation.messages if m.role == "user"]


async def test_editing_keeps_the_old_question_and_its_answer_as_a_version(
    service: ConversationService,
) -> None:
    chat = await _asked(service, "first", "second")
    edit = _turn(f"second, better\n{QUICK}", chat.id, action="edit", edit_index=1)
    edited = (await _last(service.turn(edit))).conversation

    assert _questions(edited) == ["first", "second, better"]
    assert versions_of(edited)[2:] == ((2, 2), (1, 1))
    old = await service.switch_version(OWNER, chat.id, 2, -1)
    assert _questions(old) == ["first", "second"]
    assert [m.id for m in old.messages] == [m.id for m in chat.messages]  # the very same ones
    reopened = await service.open(OWNER, chat.id)  # the choice is saved
    assert [m.id for m in reopened.messages] == [m.id for m in chat.messages]
    assert versions_of(reopened)[2] == (1, 2)


async def test_retry_keeps_the_old_answer_and_switching_back_returns_to_the_deeper_path(
    service: ConversationService,
) -> None:
    chat = await _asked(service, "tell a story")
    retried = (await _last(service.turn(_turn("", chat.id, action="retry")))).conversation
    assert retried.messages[0].id == chat.messages[0].id  # the same question, asked again
    assert retried.messages[1].id != chat.messages[1].id
    assert versions_of(retried) == ((1, 1), (2, 2))
    deeper = (await _last(service.turn(_turn(f"go on\n{QUICK}", chat.id)))).conversation

    first_answer = await service.switch_version(OWNER, chat.id, 1, -1)
    assert [m.id for m in first_answer.messages] == [m.id for m in chat.messages]
    back = await service.switch_version(OWNER, chat.id, 1, +1)
    assert [m.id for m in back.messages] == [m.id for m in deeper.messages]
    assert _questions(back) == ["tell a story", "go on"]


async def test_switching_refuses_what_it_cannot_do(service: ConversationService) -> None:
    chat = await _asked(service, "hello")
    with pytest.raises(InputError, match="This message has no other version."):
        await service.switch_version(OWNER, chat.id, 1, +1)
    with pytest.raises(InputError, match="no other version"):
        await service.switch_version(OWNER, chat.id, 7, -1)
    with pytest.raises(ConversationNotFound):
        await service.switch_version(STRANGER, chat.id, 1, -1)


async def test_a_switch_after_another_tab_changed_the_chat_is_refused(
    service: ConversationService, tmp_path: Path
) -> None:
    chat = await _asked(service, "hello")
    await _last(service.turn(_turn("", chat.id, action="retry")))
    other_tab = AsyncConversationStore(ConversationStore(tmp_path / "data"))
    seen = await other_tab.load(OWNER, chat.id)
    await service.switch_version(OWNER, chat.id, 1, -1)
    with pytest.raises(ConversationChanged):
        await other_tab.save(OWNER, branches.switch(seen, 1, -1), expected=seen)


async def test_undo_takes_the_last_turn_and_its_other_answers_with_it(
    service: ConversationService,
) -> None:
    chat = await _asked(service, "keep", "drop")
    await _last(service.turn(_turn("", chat.id, action="retry")))
    undone, question = await service.undo(OWNER, chat.id)
    assert question is not None and question.startswith("drop")
    assert _questions(undone) == ["keep"] and undone.branches == ()


async def test_an_imported_branched_chat_keeps_its_versions(service: ConversationService) -> None:
    chat = await _asked(service, "hello")
    await _last(service.turn(_turn("", chat.id, action="retry")))
    export = await service.export(OWNER, chat.id, "json")
    assert await service.import_file(STRANGER, export.data) == 1
    [summary] = (await service.list(STRANGER)).conversations
    imported = await service.open(STRANGER, summary.id)
    assert versions_of(imported) == ((1, 1), (2, 2)) and summary.imported_at is not None
    assert isinstance(imported.branches[0], BranchNode)
