"""Comparing models side by side: one question, up to three answers streaming at once.

The conversation service runs the comparison (`ConversationService.compare`); this module
holds what it shares with the page: the model check, the frames, the control that stops one
column or all, and the merge that lets every column stream at its own pace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from chatlib.errors import ChatError, InputError, StorageError
from chatlib.frames import TurnControl
from chatlib.messages import ChatMessage, check_model_id
from chatlib.storage import Conversation

__all__ = [
    "MAX_COMPARE_MODELS",
    "Column",
    "CompareControl",
    "CompareFrame",
    "check_models",
    "merged",
]

MAX_COMPARE_MODELS: Final = 3
MIN_COMPARE_MODELS: Final = 2
TOO_FEW = "Pick at least two models to compare."
TOO_MANY = f"Compare at most {MAX_COMPARE_MODELS} models at once."

_T = TypeVar("_T")


def check_models(models: Sequence[str]) -> tuple[str, ...]:
    """The models to compare, cleaned; InputError for fewer than two, too many, or a repeat."""
    chosen = tuple(check_model_id(m) for m in models if isinstance(m, str) and m.strip())
    if len(chosen) < MIN_COMPARE_MODELS:
        raise InputError(TOO_FEW)
    if len(chosen) > MAX_COMPARE_MODELS:
        raise InputError(TOO_MANY)
    # Case aside: ids differing only in case name one model to a reader (and a billing).
    folded = [m.casefold() for m in chosen]
    repeated = next((m for i, m in enumerate(chosen) if folded[i] in folded[:i]), None)
    if repeated is not None:
        raise InputError(f"{repeated} is picked twice. Pick different models to compare.")
    return chosen


@dataclass
class CompareControl(TurnControl):
    """Stops one column (`columns[i].stop()`) or all (`stop()`), and remembers a choice.

    A `TurnControl` itself, so `run_to_end` stops every column when the page leaves.
    """

    columns: tuple[TurnControl, ...] = ()
    # The column the visitor chose ("Continue with this answer") before all had ended.
    chosen: int | None = None

    @classmethod
    def for_columns(cls, count: int) -> CompareControl:
        """A control with one column control for each of `count` models."""
        return cls(columns=tuple(TurnControl() for _ in range(count)))

    def stop(self) -> None:
        """Stop every column; each keeps what has arrived."""
        super().stop()
        for column in self.columns:
            column.stop()

    def keep(self, index: int) -> None:
        """Choose column `index`'s answer: the others are stopped, and it is made active."""
        if not 0 <= index < len(self.columns):
            raise InputError("There is no such answer to keep.")
        self.chosen = index
        self.stop()


@dataclass(frozen=True)
class Column:
    """One model's answer as it stands: `done` once it ended (complete, stopped or failed)."""

    model: str
    answer: ChatMessage
    done: bool = False
    error: ChatError | None = None


@dataclass(frozen=True)
class CompareFrame:
    """The comparison as it should look now; `done` marks the final (saved) frame.

    `conversation` ends with the question while the answers stream; in the final frame it is
    as saved, the answers being versions of the one answer at `answer_index` (the first
    model's active, or the column chosen meanwhile). `files` holds the bytes of the
    question's files and the pictures drawn so far, by SHA-256.
    """

    conversation: Conversation
    columns: tuple[Column, ...]
    answer_index: int
    done: bool = False
    save_error: StorageError | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class _Ended:
    error: BaseException | None = None


async def _pump(
    index: int, stream: AsyncIterator[_T], queue: asyncio.Queue[tuple[int, _T | _Ended]]
) -> None:
    error: BaseException | None = None
    try:
        async for item in stream:
            queue.put_nowait((index, item))
    except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
        error = exc
    finally:
        queue.put_nowait((index, _Ended(error)))


async def merged(streams: Sequence[AsyncIterator[_T]]) -> AsyncIterator[tuple[int, _T]]:
    """(stream index, item) from every stream as each item arrives, until all have ended.

    Each stream is read by a task of its own, so a slow one never holds back the others.
    An error in one stream is raised here once every stream has ended; if the consumer
    leaves early, the streams' tasks are cancelled.
    """
    queue: asyncio.Queue[tuple[int, _T | _Ended]] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(_pump(i, s, queue)) for i, s in enumerate(streams)]
    running, failure = len(tasks), None
    try:
        while running:
            index, item = await queue.get()
            if isinstance(item, _Ended):
                running -= 1
                failure = failure or item.error
                continue
            yield index, item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if failure is not None:
        raise failure
