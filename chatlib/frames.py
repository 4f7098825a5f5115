"""Coalescing stream events into screen frames under a global update budget.

Each screen update costs the Gradio server roughly a millisecond of CPU, so one update per
token saturates a core at about fifty streams. Instead, events are batched into frames: at
most one frame per `interval()` per stream, where the interval stretches with the number of
active streams so the whole app stays within `updates_per_second`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
)
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from chatlib.client import (
    Clock,
    Finished,
    ImageDelta,
    ReasoningDelta,
    StreamEvent,
    StreamFailed,
    TextDelta,
)

Sleep = Callable[[float], Awaitable[None]]
log = structlog.get_logger(__name__)


class FrameBudget:
    """Shares a budget of screen updates per second between all active streams."""

    def __init__(self, *, updates_per_second: float, min_interval_s: float) -> None:
        self._updates_per_second = updates_per_second
        self._min_interval = min_interval_s
        self.active_streams = 0

    def interval(self) -> float:
        """Seconds to leave between two frames of one stream right now."""
        return max(self._min_interval, self.active_streams / self._updates_per_second)

    @contextlib.contextmanager
    def streaming(self) -> Iterator[None]:
        """Count one active stream for the duration of the block."""
        self.active_streams += 1
        try:
            yield
        finally:
            self.active_streams -= 1


class ReadPacer:
    """Spaces a stream's upstream reads one frame interval apart, but never more than `max_gap_s`.

    Tokens that arrive in between wait in the socket buffer and are taken in one burst, with
    no visible delay because the screen is only updated once per interval anyway. The gap is
    capped because the end of the answer is only seen by reading: at 50 streams frames are
    0.5 s apart, and reading that seldom would make every answer end late.
    """

    def __init__(
        self,
        budget: FrameBudget,
        *,
        max_gap_s: float = 0.1,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._budget = budget
        self._max_gap = max_gap_s
        self._clock = clock
        self._sleep = sleep
        self._last: float | None = None

    async def __call__(self) -> None:
        """Wait until the next read is due."""
        now = self._clock()
        if self._last is not None:
            wait = self._last + min(self._budget.interval(), self._max_gap) - now
            if wait > 0:
                await self._sleep(wait)
                now = self._clock()
        self._last = now


@dataclass
class TurnControl:
    """Lets another handler (the Stop button) end a running turn gracefully."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stop_requested: bool = False

    def stop(self) -> None:
        """Ask the turn to stop; it keeps what has arrived."""
        self.stop_requested = True
        self.wake.set()


_T = TypeVar("_T")
# Turns ending in the background (a reference keeps each task alive until it is done).
_DETACHED: set[asyncio.Task[object]] = set()


def run_detached(
    work: Coroutine[Any, Any, object], *, context: contextvars.Context | None = None
) -> None:
    """Run `work` in a task of its own: what a turn must finish once nobody is waiting."""
    task = asyncio.get_running_loop().create_task(work, context=context)
    _DETACHED.add(task)
    task.add_done_callback(_detached_done)


def _detached_done(task: asyncio.Task[object]) -> None:
    _DETACHED.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("chat.detached_work_failed", error=type(error).__name__)


class _Ended:
    """What a step returns once the frames are exhausted."""


_ENDED = _Ended()


async def _step(frames: AsyncIterator[_T]) -> _T | _Ended:
    return await anext(frames, _ENDED)


async def run_to_end(frames: AsyncIterator[_T], control: TurnControl) -> AsyncGenerator[_T]:
    """Pass `frames` through; if the consumer leaves mid-turn, end the turn as a Stop would.

    The consumer leaves when Gradio closes the handler's generator (the page was closed or
    reloaded) or cancels its task (its /cancel route, a shutdown). Each frame is made in a
    task of its own, all sharing one context, so neither reaches into the turn: the turn is
    stopped and runs to its end in the background, where what was shown is saved and the
    usage recorded, as for a pressed Stop. This is the one place a turn handles that.
    """
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    step: asyncio.Task[_T | _Ended] | None = None
    try:
        while True:
            step = loop.create_task(_step(frames), context=context)
            frame = await asyncio.shield(step)
            step = None
            if isinstance(frame, _Ended):
                return
            yield frame
    except (GeneratorExit, asyncio.CancelledError):
        control.stop()
        run_detached(_run_out(step, frames), context=context)
        raise


async def _run_out(step: asyncio.Task[Any] | None, frames: AsyncIterator[object]) -> None:
    if step is not None:
        await step  # the frame being made when the consumer left
    async for _ in frames:
        pass


def _is_content(event: StreamEvent) -> bool:
    return isinstance(event, TextDelta | ReasoningDelta | ImageDelta)


def _is_terminal(event: StreamEvent) -> bool:
    return isinstance(event, Finished | StreamFailed)


async def _sleep_unless_woken(wake: asyncio.Event, seconds: float, sleep: Sleep) -> None:
    """Sleep up to `seconds`, less if `wake` is set meanwhile; `wake` is left cleared."""
    sleeper = asyncio.ensure_future(sleep(seconds))
    waiter = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (sleeper, waiter):
            future.cancel()
        await asyncio.gather(sleeper, waiter, return_exceptions=True)
    wake.clear()


async def coalesce(
    events: AsyncIterator[StreamEvent],
    budget: FrameBudget,
    control: TurnControl,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> AsyncIterator[list[StreamEvent]]:
    """Yield batches of events, one per frame.

    The first token and the end of the stream (or an error) are flushed at once, even while a
    frame is being held back; in between, batches are at least `budget.interval()` apart. If
    `control.stop()` is called, the upstream iterator is closed, the remaining batch is
    yielded, and iteration ends.
    """
    pending: list[StreamEvent] = []
    finished = False

    async def pump() -> None:
        nonlocal finished
        try:
            async for event in events:
                pending.append(event)
                control.wake.set()
        finally:
            finished = True
            control.wake.set()

    task = asyncio.get_running_loop().create_task(pump())
    last_frame = clock()
    content_shown = False
    try:
        while True:
            await control.wake.wait()
            control.wake.clear()
            # Wait for the frame to be due, but not past the end of the stream or a Stop.
            while not control.stop_requested:
                urgent = finished or not content_shown or any(_is_terminal(e) for e in pending)
                wait = 0.0 if urgent else last_frame + budget.interval() - clock()
                if wait <= 0:
                    break
                await _sleep_unless_woken(control.wake, wait, sleep)
            if control.stop_requested:
                break
            if pending:
                batch = pending[:]
                del pending[:]
                content_shown = content_shown or any(_is_content(e) for e in batch)
                last_frame = clock()
                yield batch
            if finished and not pending:
                break
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if pending:
        yield pending[:]
