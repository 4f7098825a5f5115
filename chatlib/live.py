"""Answers that outlive the page: each turn runs in a server task, and pages follow it.

A page that closes or reloads only stops following; the answer goes on, is saved and billed,
and a reloaded page (or a second tab) follows it again. So that a visitor cannot leave an
unbounded number of answers generating with nobody watching, an owner may have at most
`max_unattended_per_owner` answers that nobody follows; past that the oldest are stopped,
as the Stop button would (what arrived is kept, saved as "stopped", and billed).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace

import structlog

from chatlib.conversations import ConversationFrame, ConversationService, TurnRequest
from chatlib.errors import InputError
from chatlib.frames import TurnControl

__all__ = ["BUSY", "LiveAnswer", "LiveAnswers"]

log = structlog.get_logger(__name__)

BUSY = "An answer is still being written in this chat. Stop it, or wait for it to finish."
# A page starts an answer and follows it in the same handler; an answer nobody follows
# within this long of its start counts as unattended from its start.
FOLLOW_GRACE_SECONDS = 5.0
# A Stop ends an answer within milliseconds (the final save); a turn asked in that chat
# meanwhile waits this long for it rather than being refused.
STOPPING_WAIT_SECONDS = 5.0
SHUTDOWN_WAIT_SECONDS = 10.0


class LiveAnswer:
    """One answer being written: its newest frame, and the pages following it."""

    def __init__(
        self,
        owner_key: str,
        first: ConversationFrame,
        control: TurnControl,
        *,
        started: int,
        on_unattended: Callable[[LiveAnswer], None],
    ) -> None:
        self.owner_key = owner_key
        self.conversation_id = first.conversation.id
        self.latest = first
        self._control = control
        self._version = 0
        self._changed = asyncio.Event()
        self._ended = False
        self._watchers = 0
        self._followed = False
        self._grace_over = False
        self._grace: asyncio.TimerHandle | None = None
        # Orders the unattended answers, oldest first: the start, then each last leave.
        self._unattended_since = started
        self._on_unattended = on_unattended

    @property
    def done(self) -> bool:
        """True once the answer ended: its final (saved) frame is `latest`, or the server quit."""
        return self._ended or self.latest.done

    @property
    def stopping(self) -> bool:
        """True once a Stop (the visitor's or the cap's) was asked for."""
        return self._control.stop_requested

    @property
    def unattended(self) -> bool:
        """Not done, not stopping, and nobody follows it (nor did, past the start's grace)."""
        if self.done or self.stopping or self._watchers:
            return False
        return self._followed or self._grace_over

    async def follow(self) -> AsyncGenerator[ConversationFrame]:
        """The newest frame now, then each newer one, until the done frame.

        A slow follower skips frames it had no time for (each is the whole conversation).
        Closing the iterator, or cancelling its task, only stops following (wrap it in
        `contextlib.aclosing` so a handler that is closed lets go at once). It also ends,
        without a done frame, if the server stops the answer's task (shutdown).
        """
        self._watchers += 1
        self._followed = True
        seen = -1
        try:
            while True:
                changed = self._changed
                if self._version != seen:
                    seen = self._version
                    frame = self.latest
                    yield frame
                    if frame.done:
                        return
                elif self._ended:
                    return
                else:
                    await changed.wait()
        finally:
            self._watchers -= 1
            if self._watchers == 0 and not self.done:
                self._on_unattended(self)

    def stop(self) -> None:
        """End the answer gracefully: it keeps what arrived and is saved as stopped."""
        self._control.stop()

    def _publish(self, frame: ConversationFrame) -> None:
        self.latest = frame
        self._version += 1
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class LiveAnswers:
    """Every live answer of every owner; each owner reaches only their own."""

    def __init__(
        self,
        conversations: ConversationService,
        *,
        max_unattended_per_owner: int,
        follow_grace_seconds: float = FOLLOW_GRACE_SECONDS,
    ) -> None:
        self._conversations = conversations
        self._max_unattended = max_unattended_per_owner
        self._follow_grace = follow_grace_seconds
        self._answers: dict[str, dict[str, LiveAnswer]] = {}
        self._starting: set[tuple[str, str]] = set()
        self._tasks: dict[LiveAnswer, asyncio.Task[None]] = {}
        self._order = itertools.count()

    async def start(self, request: TurnRequest) -> LiveAnswer:
        """Start the turn in a task of its own and return it once its first frame is made.

        Raises what the turn raises when refused (ChatError: InputError, RateLimited,
        MissingApiKey...), and InputError when the conversation already has a live answer;
        nothing is registered then. The answer is tied to no page (no session_key): it is
        stopped through `stop`, or by the unattended cap.
        """
        claim = await self._claim(request.owner_key, request.conversation_id)
        try:
            control = TurnControl()
            frames = self._conversations.turn(replace(request, session_key=None), control)
            first = await anext(frames)
        finally:
            if claim is not None:
                self._starting.discard(claim)
        answer = LiveAnswer(
            request.owner_key,
            first,
            control,
            started=next(self._order),
            on_unattended=self._left,
        )
        self._answers.setdefault(answer.owner_key, {})[answer.conversation_id] = answer
        task = asyncio.get_running_loop().create_task(
            self._run(answer, frames), name=f"live-answer-{answer.conversation_id}"
        )
        self._tasks[answer] = task
        task.add_done_callback(lambda ended: self._task_done(answer, ended))
        answer._grace = asyncio.get_running_loop().call_later(
            self._follow_grace, self._grace_over, answer
        )
        return answer

    def find(self, owner_key: str, conversation_id: str) -> LiveAnswer | None:
        """The owner's live answer in that conversation; None if there is none (or not theirs)."""
        return self._answers.get(owner_key, {}).get(conversation_id)

    def stop(self, owner_key: str, conversation_id: str) -> bool:
        """Stop the owner's live answer in that conversation; True if there was one."""
        answer = self.find(owner_key, conversation_id)
        if answer is None:
            return False
        answer.stop()
        return True

    def running(self, owner_key: str) -> frozenset[str]:
        """The ids of the owner's conversations with a live answer."""
        return frozenset(self._answers.get(owner_key, {}))

    async def aclose(self) -> None:
        """Stop every live answer and wait (a while) for each to be saved."""
        tasks = list(self._tasks.values())
        for answer in list(self._tasks):
            answer.stop()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_SECONDS)

    async def _claim(self, owner_key: str, conversation_id: str | None) -> tuple[str, str] | None:
        """Reserve the conversation for a new turn; InputError while it has a live answer."""
        if conversation_id is None:
            return None  # a new conversation: nothing can be writing in it
        key = (owner_key, conversation_id)
        existing = self.find(owner_key, conversation_id)
        if existing is not None and (existing.stopping or existing.done):
            task = self._tasks.get(existing)
            if task is not None:
                await asyncio.wait([task], timeout=STOPPING_WAIT_SECONDS)
        if key in self._starting or self.find(owner_key, conversation_id) is not None:
            raise InputError(BUSY)
        self._starting.add(key)
        return key

    async def _run(self, answer: LiveAnswer, frames: AsyncGenerator[ConversationFrame]) -> None:
        """Publish each frame; cancelled (shutdown), the turn still ends and is saved."""
        try:
            async for frame in frames:
                if frame.done:  # saved: a page arriving from now on loads the conversation
                    self._forget(answer)
                answer._publish(frame)
        finally:
            self._forget(answer)
            answer._end()
            if answer._grace is not None:
                answer._grace.cancel()

    def _forget(self, answer: LiveAnswer) -> None:
        owned = self._answers.get(answer.owner_key, {})
        if owned.get(answer.conversation_id) is answer:
            del owned[answer.conversation_id]
            if not owned:
                del self._answers[answer.owner_key]

    def _task_done(self, answer: LiveAnswer, task: asyncio.Task[None]) -> None:
        self._tasks.pop(answer, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("live.answer_failed", error=type(error).__name__)

    def _grace_over(self, answer: LiveAnswer) -> None:
        answer._grace_over = True
        if answer.unattended:
            self._left(answer)

    def _left(self, answer: LiveAnswer) -> None:
        """The last follower left (or none came): stop the owner's oldest unattended answers."""
        if answer._followed:
            answer._unattended_since = next(self._order)
        unattended = sorted(
            (a for a in self._answers.get(answer.owner_key, {}).values() if a.unattended),
            key=lambda a: a._unattended_since,
        )
        excess = len(unattended) - self._max_unattended
        for stale in unattended[: max(excess, 0)]:
            log.info("live.unattended_stopped", conversation_id=stale.conversation_id)
            stale.stop()
