"""Comparing models side by side, through the conversation service: answers stream together
(a slow model holds nobody back), one can be stopped alone, every answer is saved as a version
and billed, the rate limit counts each, and the visitor's choice is kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatlib import branches
from chatlib.chat import ChatService
from chatlib.client import ClientPool
from chatlib.compare import MAX_COMPARE_MODELS, CompareControl, CompareFrame, check_models
from chatlib.conversations import ConversationService
from chatlib.errors import InputError, RateLimited
from chatlib.frames import FrameBudget
from chatlib.options import AnswerOptions
from chatlib.ratelimit import RateLimiter
from chatlib.storage import AsyncConversationStore, ConversationStore
from chatlib.usage import UsageLog, UsageRecord, read_usage
from tests.conftest import settings_for
from tests.fakes.openrouter import FakeOpenRouter, expected_reply
from tests.turns import OWNER, eventually, last_frame, turn_request

FAST, QUICK, SLOW = "openai/gpt-4o", "anthropic/claude-3.5-haiku", "google/gemini-2.5-flash"
THREE = (FAST, QUICK, SLOW)


@pytest.fixture
async def limiter() -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter("memory://", 4)
    yield limiter
    await limiter.aclose()


@pytest.fixture
async def services(
    fake: FakeOpenRouter, tmp_path: Path, limiter: RateLimiter
) -> AsyncIterator[tuple[ConversationService, UsageLog]]:
    settings = settings_for(fake, tmp_path)
    pool = ClientPool(settings)
    usage = UsageLog(tmp_path / "usage")
    budget = FrameBudget(updates_per_second=300, min_interval_s=0.01)
    chat = ChatService(settings, pool, budget, usage=usage, limiter=limiter)
    store = AsyncConversationStore(ConversationStore(tmp_path / "data"))
    conversations = ConversationService(
        store, chat, exports_dir=tmp_path / "exports", max_import_bytes=1_000_000
    )
    try:
        yield conversations, usage
    finally:
        await pool.aclose()
        usage.close()


def _rows(usage: UsageLog) -> list[UsageRecord]:
    return list(read_usage(usage.path.parent)) if usage.path.exists() else []


def test_two_or_three_different_models_can_be_compared() -> None:
    assert check_models([FAST, " ", QUICK]) == (FAST, QUICK)
    with pytest.raises(InputError, match="at least two"):
        check_models([FAST])
    with pytest.raises(InputError, match=f"at most {MAX_COMPARE_MODELS}"):
        check_models([FAST, QUICK, SLOW, "x-ai/grok-4"])
    with pytest.raises(InputError, match="picked twice"):
        check_models([FAST, QUICK, FAST])


async def test_three_answers_are_saved_as_versions_of_one_answer_the_first_active(
    fake: FakeOpenRouter, services: tuple[ConversationService, UsageLog]
) -> None:
    conversations, usage = services
    final = await last_frame(conversations.compare(turn_request("hello there"), THREE))

    assert final.done and final.save_error is None
    assert [c.model for c in final.columns] == list(THREE)
    assert all(c.answer.content == expected_reply("hello there", 20) for c in final.columns)
    stored = await conversations.open(OWNER, final.conversation.id)
    assert [m.role for m in stored.messages] == ["user", "assistant"]
    assert stored.messages[1].meta is not None and stored.messages[1].meta.model == FAST
    assert branches.versions_of(stored)[1] == (1, 3)
    assert stored.title == "hello there"
    # Every answer is billed and has its own usage row.
    await eventually(lambda: sorted(r.model for r in _rows(usage)) == sorted(THREE))
    assert {r.conversation_id for r in _rows(usage)} == {stored.id}


async def test_a_slow_model_does_not_hold_back_the_others(
    fake: FakeOpenRouter, services: tuple[ConversationService, UsageLog]
) -> None:
    conversations, _ = services
    fake.set_defaults(for_model=SLOW, stall=0)  # never says a word until stopped
    control = CompareControl.for_columns(3)
    seen: list[CompareFrame] = []
    async for frame in conversations.compare(turn_request("race"), THREE, control):
        seen.append(frame)
        fast, quick, slow = frame.columns
        if fast.done and quick.done and not slow.done:
            assert slow.answer.content == ""  # the others finished while it said nothing
            control.columns[2].stop()  # Stop under the slow column only

    final = seen[-1]
    assert final.done
    statuses = [c.answer.meta.status for c in final.columns if c.answer.meta is not None]
    assert statuses == ["complete", "complete", "stopped"]
    assert final.columns[0].answer.content == expected_reply("race", 20)
    await eventually(lambda: fake.active_streams == 0)


async def test_stopping_one_column_leaves_the_others_streaming(
    fake: FakeOpenRouter, services: tuple[ConversationService, UsageLog]
) -> None:
    conversations, usage = services
    control = CompareControl.for_columns(2)
    question = "a long story [[tokens=300]] [[rate=100]]"
    async for frame in conversations.compare(turn_request(question), (FAST, QUICK), control):
        if frame.columns[0].answer.content and not control.columns[0].stop_requested:
            control.columns[0].stop()
    first, second = frame.columns
    assert first.answer.meta is not None and first.answer.meta.status == "stopped"
    assert second.answer.meta is not None and second.answer.meta.status == "complete"
    assert second.answer.content == expected_reply("a long story", 300)
    stored = await conversations.open(OWNER, frame.conversation.id)
    assert stored.messages[-1].meta is not None and stored.messages[-1].meta.status == "stopped"
    await eventually(lambda: sorted(r.status for r in _rows(usage)) == ["complete", "stopped"])


async def test_leaving_mid_comparison_stops_every_answer_and_saves_what_arrived(
    fake: FakeOpenRouter, services: tuple[ConversationService, UsageLog]
) -> None:
    conversations, usage = services
    frames = conversations.compare(turn_request("go [[tokens=400]] [[rate=40]]"), THREE)
    async for frame in frames:
        if all(c.answer.content for c in frame.columns):
            break
    await frames.aclose()  # the page was closed

    async def saved_with_versions() -> bool:
        stored = await conversations.open(OWNER, frame.conversation.id)
        return len(stored.messages) == 2 and len(stored.branches) == 2

    await eventually(saved_with_versions)
    stored = await conversations.open(OWNER, frame.conversation.id)
    every = (stored.messages[-1], *(n.message for n in stored.branches))
    assert all(m.meta is not None and m.meta.status == "stopped" and m.content for m in every)
    await eventually(lambda: [r.status for r in _rows(usage)] == ["stopped"] * 3)
    await eventually(lambda: fake.active_streams == 0)


async def test_the_kept_answer_stays_active_after_a_reload(
    fake: FakeOpenRouter, services: tuple[ConversationService, UsageLog]
) -> None:
    conversations, _ = services
    final = await last_frame(conversations.compare(turn_request("pick one"), THREE))
    chat_id, at = final.conversation.id, final.answer_index

    kept = await conversations.keep_answer(OWNER, chat_id, at, 3)

    reopened = await conversations.open(OWNER, chat_id)  # what a reload reads
    assert reopened.messages[at].meta is not None and reopened.messages[at].meta.model == SLOW
    assert branches.versions_of(reopened)[at] == (3, 3)
    assert kept.messages == reopened.messages
    assert reopened.model == SLOW  # the chat goes on with the kept answer's model
    # The others stay, one switch away.
    back = await conversations.switch_version(OWNER, chat_id, at, -1)
    assert back.messages[at].meta is not None and back.messages[at].meta.model == QUICK
    with pytest.raises(InputError):
        await conversations.keep_answer(OWNER, chat_id, at, 4)


async def test_choosing_an_answer_while_others_stream_stops_them_and_keeps_it(
    fake: FakeOpenRouter, services: tuple[ConversationService, UsageLog]
) -> None:
    conversations, _ = services
    fake.set_defaults(for_model=SLOW, stall=0)
    control = CompareControl.for_columns(3)
    async for frame in conversations.compare(turn_request("quick one"), THREE, control):
        if frame.columns[1].done and control.chosen is None:
            control.keep(1)  # "Continue with this answer" under the second column
    stored = await conversations.open(OWNER, frame.conversation.id)
    assert stored.messages[-1].meta is not None and stored.messages[-1].meta.model == QUICK
    assert branches.versions_of(stored)[-1] == (2, 3)
    await eventually(lambda: fake.active_streams == 0)


async def test_a_comparison_goes_on_from_the_chat_history_with_its_options(
    fake: FakeOpenRouter, services: tuple[ConversationService, UsageLog]
) -> None:
    conversations, _ = services
    first = await last_frame(conversations.turn(turn_request("remember the number 7")))
    chat_id = first.conversation.id
    options = AnswerOptions(max_tokens=5)
    request = turn_request("what number?", chat_id, options=options)
    fake.reset()

    final = await last_frame(conversations.compare(request, (FAST, QUICK)))

    assert final.conversation.id == chat_id and final.answer_index == 3
    assert [m.role for m in final.conversation.messages] == ["user", "assistant"] * 2
    for sent in fake.chat_requests():
        assert [m["role"] for m in sent.body["messages"]] == ["user", "assistant", "user"]
        assert sent.body.get("max_tokens") == 5  # the options apply to every model
    assert final.conversation.options == options


async def test_refusals_come_before_anything_is_saved(
    fake: FakeOpenRouter,
    services: tuple[ConversationService, UsageLog],
    limiter: RateLimiter,
) -> None:
    conversations, usage = services
    with pytest.raises(InputError, match="at least two"):
        await last_frame(conversations.compare(turn_request("hi"), [FAST]))
    with pytest.raises(InputError, match="Type a message"):
        await last_frame(conversations.compare(turn_request("  "), (FAST, QUICK)))
    # The limit is 4 a minute: three answers count three, and the next comparison is refused.
    limited = turn_request("count me", rate_key="203.0.113.9")
    await last_frame(conversations.compare(limited, THREE))
    with pytest.raises(RateLimited):
        await last_frame(conversations.compare(limited, (FAST, QUICK)))
    assert len(fake.chat_requests()) == 3
    assert len((await conversations.list(OWNER)).conversations) == 1
