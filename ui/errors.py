"""The one place where chatlib errors become what Gradio shows: a toast, never an overlay.

Gradio 6 covers a chatbot with a full "Error" overlay when an event that updates it raises,
hiding the conversation until the next update. A refusal (message too long, no key, rate
limited, nothing to retry) must leave the chat on screen: every handler is wrapped so a
`ChatError` becomes a warning toast and changes nothing on the page.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar, cast

import gradio as gr

from chatlib.errors import ChatError

Handler = TypeVar("Handler", bound=Callable[..., Any])


def refuse(message: str) -> NoReturn:
    """Stop a handler with a message for the visitor (shown as a toast by `shown_as_toast`)."""
    raise gr.Error(message, print_exception=False)


def warn(error: ChatError) -> None:
    """Show a non-fatal chatlib error (the handler goes on) as a warning toast."""
    gr.Warning(error.user_message)


def unchanged() -> dict[Any, Any]:
    """An update that changes none of a handler's outputs (a new one each time: Gradio may
    alter it). An empty dict would not do: Gradio reads it as a value for a single output."""
    return gr.skip()  # type: ignore[no-any-return]


def _message(exc: Exception) -> str:
    return exc.user_message if isinstance(exc, ChatError) else str(getattr(exc, "message", exc))


def shown_as_toast(handler: Handler) -> Handler:
    """Wrap a handler: a ChatError or gr.Error it raises becomes a toast, and no output changes.

    Handlers return `{component: update}` dicts; "no change" is `unchanged()`. Streaming
    handlers are closed at once when the page goes away (that stops their turn).
    """
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            try:
                async with contextlib.aclosing(handler(*args, **kwargs)) as frames:
                    async for frame in frames:
                        yield frame
            except (ChatError, gr.Error) as exc:
                gr.Warning(_message(exc))
                yield unchanged()

        return cast("Handler", stream)

    @functools.wraps(handler)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            result = handler(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result
        except (ChatError, gr.Error) as exc:
            gr.Warning(_message(exc))
            return unchanged()

    return cast("Handler", call)
