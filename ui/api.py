"""The public `chat` API endpoint: stateless streaming, nothing stored."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from chatlib.conversations import TurnRequest
from chatlib.errors import ChatError
from chatlib.messages import ChatMessage, history_from_dicts
from chatlib.ratelimit import client_ip
from chatlib.sources import Source
from ui.chat import answer_options, read_attachments
from ui.context import PageContext, client_address
from ui.errors import refuse

API_MAX_HISTORY_MESSAGES = 1_000  # prior messages the chat API takes in one call


def checked_inputs(
    message: object,
    model: object,
    system_prompt: object,
    temperature: object,
    history: object,
    default_temperature: float,
) -> tuple[str, str, float]:
    """(model, system prompt, temperature) once every parameter has the right type.

    API callers can send any JSON: a wrong type gets a one-line refusal naming the parameter
    (sizes and ranges are checked with the rest of the turn by the chat service).
    """
    if not isinstance(message, str):
        refuse(f"Invalid message: expected text, got {_kind(message)}.")
    if model is not None and not isinstance(model, str):
        refuse(f"Invalid model: expected an OpenRouter model id (text), got {_kind(model)}.")
    if system_prompt is not None and not isinstance(system_prompt, str):
        refuse(f"Invalid system_prompt: expected text, got {_kind(system_prompt)}.")
    if temperature is None:
        temperature = default_temperature
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        refuse(f"Invalid temperature: expected a number from 0 to 2, got {_kind(temperature)}.")
    if history is not None and not isinstance(history, list):
        refuse(f"Invalid history: expected a list of messages, got {_kind(history)}.")
    return model or "", system_prompt or "", float(temperature)


def uploaded_paths(files: object) -> list[str]:
    """Paths of the files a caller uploaded (`gradio_client.handle_file`), checked.

    Each must be a file Gradio's upload route stored: a path anywhere else (the server's own
    files) is refused, whatever the caller claims.
    """
    if files is None:
        return []
    if not isinstance(files, list):
        refuse(f"Invalid files: expected a list of files (handle_file), got {_kind(files)}.")
    upload_root = os.path.realpath(get_upload_folder())
    paths = []
    for number, item in enumerate(files, start=1):
        path = item.get("path") if isinstance(item, dict) else None
        meta = item.get("meta") if isinstance(item, dict) else None
        is_file = isinstance(meta, dict) and meta.get("_type") == "gradio.FileData"
        if not is_file or not isinstance(path, str):
            refuse(f"Invalid files: item {number} is not an uploaded file (use handle_file).")
        real = os.path.realpath(path)
        if os.path.commonpath([real, upload_root]) != upload_root or not os.path.isfile(real):
            refuse(f"Invalid files: item {number} is not an uploaded file (use handle_file).")
        paths.append(real)
    return paths


def with_sources(answer: ChatMessage) -> str:
    """The answer's text, then the web pages it cites (if any) as a numbered list.

    The list is plain text under a "Sources:" line, so callers that only read text keep
    working: `1. Title — https://…`. Addresses are as the search gave them (not checked).
    """
    sources = answer.meta.sources if answer.meta is not None else ()
    if not sources:
        return answer.content
    lines = [f"{n}. {_source_line(s)}" for n, s in enumerate(sources, start=1)]
    return f"{answer.content}\n\nSources:\n" + "\n".join(lines)


def _source_line(source: Source) -> str:
    title = " ".join(source.title.split())
    url = " ".join(source.url.split())
    return f"{title} — {url}" if title else url


def _kind(value: object) -> str:
    """What a JSON value is, in words (never the value itself: it may be huge or secret)."""
    names = {type(None): "null", bool: "true/false", int: "a number", float: "a number"}
    names |= {str: "text", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


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
        files: list[dict[str, Any]] | None = None,
        web_search: bool = False,
        reasoning_effort: str = "off",
        max_tokens: int | None = None,
        request: gr.Request | None = None,
    ) -> AsyncIterator[str]:
        """Stream an answer to `message`; `history` is an optional list of prior messages.

        `files` are attachments (images, PDFs, text files) sent with `message`, each given
        with `gradio_client.handle_file(path)`; they are checked like the page's.
        `web_search` lets the model search the web (the pages it used follow the answer
        under "Sources:"); `reasoning_effort` (off, low, medium, high) is for models that
        can think; `max_tokens` caps the answer's length (None: the model's default).
        """
        model, system_prompt, temperature = checked_inputs(
            message, model, system_prompt, temperature, history, settings.slider_temperature
        )
        # A REST caller's missing values arrive as nulls (RequestGuard): the defaults.
        options = answer_options(
            False if web_search is None else web_search, reasoning_effort, max_tokens
        )
        try:
            attachments = await read_attachments(uploaded_paths(files), settings.attachment_limits)
        except ChatError as exc:
            refuse(exc.user_message)
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
            model=model.strip() or settings.default_model,
            system_prompt=system_prompt,
            temperature=temperature,  # its range is checked with the rest by the chat service
            rate_key=client_ip(peer, forwarded, services.trusted_proxies),
            attachments=attachments,
            options=options,
        )
        # Closed here when the caller goes away mid-answer: the answer is stopped, usage kept.
        async with contextlib.aclosing(services.chat.run_turn(turn, prior)) as frames:
            try:
                await anext(frames)
            except ChatError as exc:
                refuse(exc.user_message)
            async for frame in frames:
                # Sources follow the finished answer: each partial stays a prefix of the last.
                yield with_sources(frame.answer) if frame.done else frame.answer.content
                if frame.done and frame.error is not None:
                    refuse(frame.error.user_message)

    return chat_api


# How many values each public endpoint takes (REST callers may send fewer: see RequestGuard).
API_INPUTS = {"chat": 9}


def wire(ctx: PageContext) -> None:
    """Register the endpoint on the Blocks being built."""
    gr.api(chat_endpoint(ctx), api_name="chat", concurrency_limit=None)  # type: ignore[attr-defined]
