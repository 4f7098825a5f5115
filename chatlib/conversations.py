"""Chat turns that persist: save the question first, the answer after, in the right place.

The UI keeps the conversation being shown; this module makes sure a turn always writes into
the conversation it started in, whatever the visitor clicks meanwhile, and that a storage
failure never costs the visitor their answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

import structlog

from chatlib.chat import ChatService, TurnRequest
from chatlib.client import Clock
from chatlib.errors import ChatError, ConversationDeleted, StorageError
from chatlib.frames import TurnControl, finish_if_abandoned, run_detached
from chatlib.messages import History, format_cost
from chatlib.storage import (
    AsyncConversationStore,
    Conversation,
    ConversationSummary,
    auto_title,
)

log = structlog.get_logger(__name__)

NEW_CHAT_TITLE = "New chat"
_V = TypeVar("_V")


@dataclass(frozen=True)
class ConversationFrame:
    """The conversation as it should look now, plus what went wrong, if anything."""

    conversation: Conversation
    done: bool = False
    error: ChatError | None = None
    save_error: StorageError | None = None


@dataclass(frozen=True)
class TurnInput:
    """What the visitor asked for, and who they are."""

    user_text: str
    model: str
    system_prompt: str
    temperature: float
    api_key: str | None = None
    session_key: str | None = None
    rate_key: str | None = None
    logged_in: bool = False


class ConversationService:
    """Runs turns against a stored conversation and tracks what each session is viewing."""

    def __init__(
        self,
        store: AsyncConversationStore,
        chat: ChatService,
        *,
        clock: Clock = time.time,
        max_sessions: int = 20_000,
    ) -> None:
        self.store = store
        self._chat = chat
        self._clock = clock
        self._viewing: OrderedDict[str, str | None] = OrderedDict()
        self._max_sessions = max_sessions
        # Conversations deleted or renamed while an answer may still be streaming into them:
        # the turn's final save must not resurrect or un-rename them.
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self._titles: OrderedDict[str, str] = OrderedDict()

    async def delete(self, owner_key: str, conversation_id: str) -> bool:
        """Delete a conversation; a turn still streaming into it will not re-create it."""
        _remember(self._deleted, conversation_id, None, self._max_sessions)
        return await self.store.delete(owner_key, conversation_id)

    async def rename(self, owner_key: str, conversation_id: str, title: str) -> Conversation:
        """Rename a conversation; a turn still streaming into it keeps the new title."""
        renamed = await self.store.rename(owner_key, conversation_id, title)
        _remember(self._titles, conversation_id, renamed.title, self._max_sessions)
        return renamed

    def new_conversation(self, model: str, system_prompt: str, temperature: float) -> Conversation:
        """An unsaved, empty conversation with these settings."""
        return self.store.new_conversation(model, system_prompt, temperature)

    def view(self, session_key: str | None, conversation_id: str | None) -> None:
        """Record which conversation `session_key` is looking at now."""
        if session_key is None:
            return
        _remember(self._viewing, session_key, conversation_id, self._max_sessions)

    def viewed(self, session_key: str | None) -> str | None:
        """The conversation `session_key` is looking at (None: a new, empty chat)."""
        return None if session_key is None else self._viewing.get(session_key)

    def is_viewing(self, session_key: str | None, conversation_id: str) -> bool:
        """False once the session has switched to another conversation."""
        if session_key is None or session_key not in self._viewing:
            return True
        return self._viewing[session_key] == conversation_id

    def run_turn(
        self, owner_key: str, conversation: Conversation, turn: TurnInput
    ) -> AsyncGenerator[ConversationFrame]:
        """Answer `turn.user_text` at the end of `conversation`, saving as it goes.

        Raises ChatError before the first frame when the turn is refused (nothing is saved
        then). The question is saved before the upstream call; the answer when it ends,
        whether complete, stopped or failed, or the page went away mid-answer (closing the
        iterator stops the turn, which is then saved in the background).
        """
        control = TurnControl()
        return finish_if_abandoned(self._turn(owner_key, conversation, turn, control), control)

    async def _turn(
        self, owner_key: str, conversation: Conversation, turn: TurnInput, control: TurnControl
    ) -> AsyncIterator[ConversationFrame]:
        frames = self._chat.run_turn(
            TurnRequest(
                history=conversation.messages,
                user_text=turn.user_text,
                model=turn.model,
                system_prompt=turn.system_prompt,
                temperature=turn.temperature,
                api_key=turn.api_key,
                session_key=turn.session_key,
                conversation_id=conversation.id,
                owner_key=owner_key,
                rate_key=turn.rate_key,
                logged_in=turn.logged_in,
                control=control,
            )
        )
        first = await anext(frames)
        has_question = any(m.role == "user" for m in conversation.messages)
        base = replace(
            conversation,
            title=conversation.title
            if has_question and conversation.title != NEW_CHAT_TITLE
            else auto_title(turn.user_text),
            model=turn.model,
            system_prompt=turn.system_prompt,
            temperature=turn.temperature,
        )
        question_only = replace(base, messages=first.history[:-1])
        saved, save_error = await self._save(owner_key, question_only)
        # What the answer's save expects to find stored (None: the question was not saved).
        expected = saved.messages if save_error is None else None
        base = replace(base, updated_at=saved.updated_at)
        self.view(turn.session_key, conversation.id)  # a turn starts where the visitor is
        current = replace(base, messages=first.history)
        yield ConversationFrame(current, save_error=save_error)
        try:
            async for frame in frames:
                current = replace(base, messages=frame.history)
                if not frame.done:
                    yield ConversationFrame(current)
                    continue
                saved, final_error = await self._save(owner_key, current, expected=expected)
                yield ConversationFrame(
                    saved, done=True, error=frame.error, save_error=final_error or save_error
                )
        except asyncio.CancelledError:
            # Gradio's /cancel or a shutdown: keep what was on screen, marked stopped.
            run_detached(self._save(owner_key, _stopped(current), expected=expected))
            raise

    async def _save(
        self,
        owner_key: str,
        conversation: Conversation,
        *,
        expected: History | None = None,
    ) -> tuple[Conversation, StorageError | None]:
        """Save; with `expected`, only if the stored messages are still those (no newer turn)."""
        if conversation.id in self._deleted:
            return conversation, ConversationDeleted()
        title = self._titles.get(conversation.id)
        if title is not None:
            conversation = replace(conversation, title=title)
        try:
            return await self.store.save(owner_key, conversation, expected_messages=expected), None
        except StorageError as exc:
            log.warning("conversation.save_failed", error=type(exc).__name__)
            return conversation, exc


def _stopped(conversation: Conversation) -> Conversation:
    """The conversation with its streaming answer marked stopped."""
    *earlier, last = conversation.messages
    if last.meta is None or last.meta.status != "streaming":
        return conversation
    last = replace(last, meta=replace(last.meta, status="stopped"))
    return replace(conversation, messages=(*earlier, last))


def _remember(cache: OrderedDict[str, _V], key: str, value: _V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


def relative_time(then: float, now: float) -> str:
    """'just now', '5 min ago', '3 h ago', 'yesterday', '4 days ago', or a date."""
    seconds = max(0.0, now - then)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    if days == 1:
        return "yesterday"
    if days < 7:
        return f"{days} days ago"
    return datetime.fromtimestamp(then, UTC).strftime("%Y-%m-%d")


def summary_label(summary: ConversationSummary, now: float) -> str:
    """One line for the sidebar: title, when, and what it cost."""
    parts = [summary.title, relative_time(summary.updated_at, now)]
    if summary.total_cost_usd > 0:
        parts.append(format_cost(summary.total_cost_usd))
    return " · ".join(parts)
