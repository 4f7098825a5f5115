"""Shared by the service-level tests of turns: a request as a page makes it, and waiting."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from chatlib.chat import TurnRequest
from chatlib.conversations import ConversationFrame

OWNER = "0" * 32
MODEL = "openai/gpt-4o"


def turn_request(
    text: str, conversation_id: str | None = None, *, owner: str = OWNER, **kw: Any
) -> TurnRequest:
    """A turn as the page asks for it: the default model, no system prompt, 0.3."""
    fields: dict[str, Any] = {"model": MODEL, "system_prompt": "", "temperature": 0.3, **kw}
    return TurnRequest(owner_key=owner, conversation_id=conversation_id, user_text=text, **fields)


async def eventually(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Wait (up to ~10 s) for what an answer finishes in its own task."""
    for _ in range(200):
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("never happened")


async def last_frame(frames: AsyncIterator[ConversationFrame]) -> ConversationFrame:
    """Run a turn to its end; its final frame."""
    return [frame async for frame in frames][-1]
