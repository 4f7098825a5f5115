"""Answers that outlive the page: followed by several tabs, left and found again, stopped from
any of them, capped when nobody watches, private to their owner, saved at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatlib.chat import ChatService
from chatlib.client import ClientPool
from chatlib.conversations import ConversationFrame, ConversationService, TurnRequest
from chatlib.errors import ConversationNotFound, InputError, RateLimited
from chatlib.frames import FrameBudget
from chatlib.live import BUSY, LiveAnswer, LiveAnswers
from chatlib.ratelimit import RateLimiter
from chatlib.storage import AsyncConversationStore, ConversationStore
from chatlib.usage import UsageLog, UsageRecord, read_usage
from tests.conftest import settings_for
from tests.fakes.openrouter import FakeOpenRouter, expected_reply
from tests.turns import OWNER, eventually, turn_request

STRANGER = "5" * 32
SHORT = "a short answer [[tokens=40]] [[rate=200]]"
LONG = "a long answer [[tokens=600]] [[rate=100]]"  # 6 s: every test stops it well before


class Setup:
    """The real chat and conversation services against the fake OpenRouter."""

    def __init__(self, conversations: ConversationService, usage: UsageLog) -> None:
        self.conversations = conversations
        self.usage = usage
        self.registries: list[LiveAnswers] = []

    def live(self, *, cap: int = 3, grace: float = 5.0) -> LiveAnswers:
        registry = LiveAnswers(
            self.conversations, max_unattended_per_owner=cap, follow_grace_seconds=grace
        )
        self.registries.append(registry)
        return registry

    def rows(self) -> list[UsageRecord]:
        path = self.usage.path
        return list(read_usage(path.parent)) if path.exists() else []


@pytest.fixture
async def setup(fake: FakeOpenRouter, tmp_path: Path) -> AsyncIterator[Setup]:
    settings = settings_for(fake, tmp_path)
    pool = ClientPool(settings)
    usage = UsageLog(tmp_path / "usage")
    limiter = RateLimiter("memory://", 2)
    chat = ChatService(
        settings,
        pool,
        FrameBudget(updates_per_second=300, min_interval_s=0.01),
        limiter=limiter,
        usage=usage,
    )
    store = AsyncConversationStore(ConversationStore(tmp_path / "data"))
    conversations = ConversationService(
        store, chat, exports_dir=tmp_path / "exports", max_import_bytes=1_000_000
    )
    made = Setup(conversations, usage)
    try:
        yield made
    finally:
        for registry in made.registries:
            await registry.aclose()
        await _eventually(lambda: fake.active_streams == 0)
        await limiter.aclose()
        await pool.aclose()
        usage.close()


_eventually = eventually


def _turn(
    text: str = SHORT, conversation_id: str | None = None, *, owner: str = OWNER, **kw: object
) -> TurnRequest:
    # what a page passes; the live answer is tied to no page
    return turn_request(text, conversation_id, owner=owner, session_key="page-1", **kw)


def _answer_of(frame: ConversationFrame) -> str:
    return frame.conversation.messages[-1].content


def _status(frame: ConversationFrame) -> str | None:
    meta = frame.conversation.messages[-1].meta
    return meta.status if meta is not None else None


async def _all(answer: LiveAnswer) -> list[ConversationFrame]:
    return [frame async for frame in answer.follow()]


async def _watch_then_leave(answer: LiveAnswer) -> str:
    """Follow until some text is shown, then close the page; returns what was shown."""
    frames = answer.follow()
    async for frame in frames:
        if _answer_of(frame):
            break
    await frames.aclose()  # what Gradio does when the page is closed or reloaded
    return _answer_of(frame)


async def _saved(setup: Setup, conversation_id: str, status: str) -> str:
    """The saved answer's text once it is saved with `status`."""

    async def saved() -> bool:
        stored = await setup.conversations.open(OWNER, conversation_id)
        meta = stored.messages[-1].meta
        return meta is not None and meta.status == status

    await _eventually(saved)
    return (await setup.conversations.open(OWNER, conversation_id)).messages[-1].content


async def test_two_tabs_follow_one_answer_to_its_end(fake: FakeOpenRouter, setup: Setup) -> None:
    live = setup.live()
    answer = await live.start(_turn())
    first, second = await asyncio.gather(_all(answer), _all(answer))

    for frames in (first, second):
        assert frames[-1].done and _status(frames[-1]) == "complete"
        assert _answer_of(frames[-1]) == expected_reply(SHORT, 40)
        assert not any(frame.done for frame in frames[:-1])
    assert first[-1] == second[-1] == answer.latest and answer.done
    assert len(fake.chat_requests()) == 1  # one answer, asked and billed once
    # The entry is gone: a page arriving now loads the saved conversation instead.
    assert live.find(OWNER, answer.conversation_id) is None
    assert live.running(OWNER) == frozenset()
    stored = await setup.conversations.open(OWNER, answer.conversation_id)
    assert stored == first[-1].conversation


async def test_closing_the_page_does_not_stop_the_answer(
    fake: FakeOpenRouter, setup: Setup
) -> None:
    live = setup.live()
    text = "go on without me [[tokens=80]] [[rate=100]]"
    answer = await live.start(_turn(text))
    other_tab = asyncio.get_running_loop().create_task(_all(answer))
    shown = await _watch_then_leave(answer)
    other_tab.cancel()  # Gradio's other way of ending a page's handler
    with pytest.raises(asyncio.CancelledError):
        await other_tab
    assert not answer.done and live.running(OWNER) == {answer.conversation_id}

    saved = await _saved(setup, answer.conversation_id, "complete")
    assert saved == expected_reply(text, 80) and saved.startswith(shown)
    await _eventually(lambda: [r.status for r in setup.rows()] == ["complete"])
    (row,) = setup.rows()
    assert row.conversation_id == answer.conversation_id and row.completion_tokens
    await _eventually(lambda: live.find(OWNER, answer.conversation_id) is None)


async def test_a_reloaded_page_finds_the_answer_and_stops_it(setup: Setup) -> None:
    live = setup.live()
    answer = await live.start(_turn(LONG))
    shown = await _watch_then_leave(answer)

    found = live.find(OWNER, answer.conversation_id)  # the page, reloaded
    assert found is answer
    frames = found.follow()
    seen = [await anext(frames)]
    assert _answer_of(seen[0]).startswith(shown)  # the answer so far, at once
    assert live.stop(OWNER, answer.conversation_id)
    seen += [frame async for frame in frames]

    assert seen[-1].done and _status(seen[-1]) == "stopped"
    assert await _saved(setup, answer.conversation_id, "stopped") == _answer_of(seen[-1])
    await _eventually(lambda: [r.status for r in setup.rows()] == ["stopped"])
    assert live.find(OWNER, answer.conversation_id) is None


async def test_past_the_cap_the_oldest_unattended_answer_is_stopped(setup: Setup) -> None:
    live = setup.live(cap=1)
    oldest = await live.start(_turn(LONG))
    await _watch_then_leave(oldest)
    newer = await live.start(_turn(LONG))
    watched = await live.start(_turn(LONG))
    follower = watched.follow()
    await anext(follower)  # a page still shows this one

    assert not oldest.stopping  # one unattended answer is allowed
    await _watch_then_leave(newer)

    await _saved(setup, oldest.conversation_id, "stopped")
    assert not newer.stopping and not watched.stopping
    assert live.running(OWNER) == {newer.conversation_id, watched.conversation_id}
    await follower.aclose()  # the cap is 1: now `newer`, the older of the two, is stopped
    await _saved(setup, newer.conversation_id, "stopped")
    assert not watched.done and not watched.stopping


async def test_with_no_unattended_answers_allowed_leaving_stops_it(setup: Setup) -> None:
    live = setup.live(cap=0, grace=0.1)
    left = await live.start(_turn(LONG))
    await _watch_then_leave(left)
    await _saved(setup, left.conversation_id, "stopped")

    # Starting an answer and never following it does not dodge the cap.
    never_followed = await live.start(_turn(LONG))
    await _saved(setup, never_followed.conversation_id, "stopped")
    assert live.running(OWNER) == frozenset()


async def test_refused_turns_raise_from_start_and_leave_nothing_behind(
    fake: FakeOpenRouter, setup: Setup
) -> None:
    live = setup.live()
    with pytest.raises(InputError, match="Type a message first"):
        await live.start(_turn("   "))
    with pytest.raises(InputError, match="no message to retry"):
        await live.start(_turn("", action="retry"))
    answered = await live.start(_turn(rate_key="203.0.113.7"))
    await _all(answered)
    with pytest.raises(InputError, match="Type a message first"):
        await live.start(_turn("", answered.conversation_id))
    limited = _turn("one more", answered.conversation_id, rate_key="203.0.113.7")
    await live.start(limited)  # the second of 2 per minute
    await _eventually(lambda: live.find(OWNER, answered.conversation_id) is None)
    with pytest.raises(RateLimited):
        await live.start(limited)

    assert live.running(OWNER) == frozenset()
    assert len(fake.chat_requests()) == 2
    listed = await setup.conversations.list(OWNER)
    assert [s.id for s in listed.conversations] == [answered.conversation_id]


async def test_a_second_turn_in_a_chat_waits_for_its_answer(setup: Setup) -> None:
    live = setup.live()
    answer = await live.start(_turn(LONG))
    with pytest.raises(InputError) as refused:
        await live.start(_turn("and another thing", answer.conversation_id))
    assert str(refused.value) == BUSY
    assert live.find(OWNER, answer.conversation_id) is answer and not answer.stopping

    other_chat = await live.start(_turn(LONG))  # other chats are not held up
    assert live.running(OWNER) == {answer.conversation_id, other_chat.conversation_id}

    # Once stopped, the next question in that chat is taken (after the stopped one is saved).
    assert live.stop(OWNER, answer.conversation_id)
    follow_up = await live.start(_turn(SHORT, answer.conversation_id))
    final = (await _all(follow_up))[-1]
    assert _status(final) == "complete"
    assert [m.role for m in final.conversation.messages] == ["user", "assistant"] * 2
    assert final.conversation.messages[1].meta is not None
    assert final.conversation.messages[1].meta.status == "stopped"


async def test_another_visitor_can_neither_see_nor_stop_an_answer(setup: Setup) -> None:
    live = setup.live()
    answer = await live.start(_turn(LONG))

    assert live.find(STRANGER, answer.conversation_id) is None
    assert live.running(STRANGER) == frozenset()
    assert not live.stop(STRANGER, answer.conversation_id)
    with pytest.raises(ConversationNotFound):
        await live.start(_turn("mine now", answer.conversation_id, owner=STRANGER))
    assert not answer.stopping and live.running(OWNER) == {answer.conversation_id}


async def test_a_server_shutting_down_saves_what_arrived(setup: Setup) -> None:
    live = setup.live()
    answer = await live.start(_turn(LONG))
    shown = await _watch_then_leave(answer)
    follower = asyncio.get_running_loop().create_task(_all(answer))
    name = f"live-answer-{answer.conversation_id}"
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == name]

    task.cancel()  # what the server's shutdown does to every task

    frames = await follower  # a page still following is let go
    assert frames and not frames[-1].done and answer.done
    saved = await _saved(setup, answer.conversation_id, "stopped")
    assert saved.startswith(shown)
    await _eventually(lambda: [r.status for r in setup.rows()] == ["stopped"])
    assert live.find(OWNER, answer.conversation_id) is None


async def test_closing_the_services_stops_and_saves_every_answer(setup: Setup) -> None:
    live = setup.live()
    answers = [await live.start(_turn(LONG)) for _ in range(2)]

    await live.aclose()

    for answer in answers:
        assert answer.done and _status(answer.latest) == "stopped"
        await _saved(setup, answer.conversation_id, "stopped")
    assert sorted(r.status for r in setup.rows()) == ["stopped", "stopped"]
