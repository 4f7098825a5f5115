"""Clocks for tests: time that moves only as a test says."""

from __future__ import annotations


class FakeClock:
    """A clock that advances one second per reading, so every save is later than the last."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1
        return self.now
