"""Coalescing tokens into frames: nothing lost, few updates, Stop closes upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from chatlib.client import Finished, StreamEvent, TextDelta
from chatlib.frames import FrameBudget, ReadPacer, TurnControl, coalesce


class VirtualTime:
    """A clock that only moves while someone sleeps on it: 1 ms per event-loop turn."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        deadline = self.now + seconds
        while self.now < deadline:
            self.now = min(deadline, self.now + 0.001)
            await asyncio.sleep(0)


async def _fast_upstream(n: int, closed: list[bool]) -> AsyncIterator[StreamEvent]:
    try:
        for i in range(n):
            yield TextDelta(f"t{i} ")
            await asyncio.sleep(0)
        yield Finished("stop", "gen-1", 1.0, 2.0)
    finally:
        closed.append(True)


async def test_fast_stream_is_delivered_whole_in_far_fewer_frames() -> None:
    time = VirtualTime()
    budget = FrameBudget(updates_per_second=300, min_interval_s=0.03)
    closed: list[bool] = []
    frames = [
        batch
        async for batch in coalesce(
            _fast_upstream(2000, closed), budget, TurnControl(), clock=time.clock, sleep=time.sleep
        )
    ]
    events = [e for batch in frames for e in batch]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "".join(f"t{i} " for i in range(2000))
    assert isinstance(events[-1], Finished)
    assert len(frames) < 2000 / 10
    # The first token is shown at once, on its own frame.
    assert frames[0] == [TextDelta("t0 ")]


async def test_stop_closes_the_upstream_and_keeps_what_arrived() -> None:
    closed: list[bool] = []
    control = TurnControl()
    budget = FrameBudget(updates_per_second=300, min_interval_s=0.001)
    received: list[StreamEvent] = []
    async for batch in coalesce(_slow_upstream(closed), budget, control):
        received.extend(batch)
        if len(received) >= 3:
            control.stop()
    assert closed == [True]
    assert 3 <= len(received) < 100
    assert all(isinstance(e, TextDelta) for e in received)


async def _slow_upstream(closed: list[bool]) -> AsyncIterator[StreamEvent]:
    try:
        for i in range(100):
            yield TextDelta(str(i))
            await asyncio.sleep(0.005)
    finally:
        closed.append(True)


def test_frame_interval_stretches_with_concurrent_streams() -> None:
    budget = FrameBudget(updates_per_second=300, min_interval_s=0.03)
    assert budget.interval() == 0.03
    with budget.streaming():
        assert budget.interval() == 0.03
    budget.active_streams = 300
    assert budget.interval() == 1.0
    budget.active_streams = 0
    with budget.streaming(), budget.streaming():
        assert budget.active_streams == 2
    assert budget.active_streams == 0


async def test_reads_follow_the_frame_interval_but_never_lag_far_behind() -> None:
    time = VirtualTime()
    budget = FrameBudget(updates_per_second=100, min_interval_s=0.03)
    pacer = ReadPacer(budget, max_gap_s=0.1, clock=time.clock, sleep=time.sleep)
    await pacer()  # the first read is never held back
    assert time.now == 0.0
    await pacer()
    assert time.now == 0.03  # one stream: a read per 30 ms frame
    budget.active_streams = 50  # frames now 0.5 s apart, reads still every 0.1 s
    await pacer()
    assert round(time.now, 6) == 0.13
    time.now += 0.5  # a read that itself took long is not followed by a wait
    before = time.now
    await pacer()
    assert time.now == before


async def test_the_end_of_an_answer_is_not_held_back_by_the_frame_interval() -> None:
    time = VirtualTime()
    budget = FrameBudget(updates_per_second=300, min_interval_s=10.0)

    async def upstream() -> AsyncIterator[StreamEvent]:
        yield TextDelta("a ")
        await asyncio.sleep(0)
        yield TextDelta("b ")  # held back: the next frame is 10 s away
        for _ in range(5):
            await asyncio.sleep(0)
        yield Finished("stop", "gen-1", 1.0, 2.0)

    frames: list[tuple[float, list[StreamEvent]]] = []
    async for batch in coalesce(
        upstream(), budget, TurnControl(), clock=time.clock, sleep=time.sleep
    ):
        frames.append((time.now, batch))
    assert frames[0][1] == [TextDelta("a ")]
    end, last = frames[-1]
    assert last == [TextDelta("b "), Finished("stop", "gen-1", 1.0, 2.0)]
    assert end < 0.1
