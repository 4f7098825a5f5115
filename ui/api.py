"""The public `chat` API endpoint: stateless streaming, nothing stored."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import gradio as gr

from chatlib.conversations import TurnRequest
from chatlib.errors import ChatError
from chatlib.messages import history_from_dicts
from chatlib.ratelimit import client_ip
from ui.context import PageContext, client_address
from ui.errors import refuse

API_MAX_HISTORY_MESSAGES = 1_000  # prior messages the chat API takes in one call


def chat_endpoint(ctx: PageContext) -> Callable[..., AsyncIterator[str]]:
    """The `chat` API function, with the defaults it documents."""
    settings = ctx.settings
    services = ctx.services

    async def chat_api(
        message: str,
        model: str = settings.default_model,
        system_prompt: str = "",
        temperature: float = settings.slider_temperature,
        history: list[dict[str, str]] | None = None,
        request: gr.Request | None = None,
    ) -> AsyncIterator[str]:
        """Stream an answer to `message`; `history` is an optional list of prior messages."""
        try:
            prior = history_from_dicts(
                history,
                max_messages=API_MAX_HISTORY_MESSAGES,
                max_chars=settings.max_upstream_chars,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            refuse(f"Invalid history: {exc}")
        peer, forwarded = client_address(request)
        turn = TurnRequest(
            owner_key="api",
            conversation_id=None,
            user_text=message,
            model=(model or settings.default_model).strip(),
            system_prompt=system_prompt or "",
            temperature=temperature,  # checked with the other inputs by the chat service
            rate_key=client_ip(peer, forwarded, services.trusted_proxies),
        )
        # Closed here when the caller goes away mid-answer: the answer is stopped, usage kept.
        async with contextlib.aclosing(services.chat.run_turn(turn, prior)) as frames:
            try:
                await anext(frames)
            except ChatError as exc:
                refuse(exc.user_message)
            async for frame in frames:
                yield frame.answer.content
                if frame.done and frame.error is not None:
                    refuse(frame.error.user_message)

    return chat_api


def wire(ctx: PageContext) -> None:
    """Register the endpoint on the Blocks being built."""
    gr.api(chat_endpoint(ctx), api_name="chat", concurrency_limit=None)  # type: ignore[attr-defined]
