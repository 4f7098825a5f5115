"""OpenRouter Chat: the Gradio UI. Wiring only; all behaviour lives in chatlib."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import importlib.util
import inspect
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import gradio as gr
import pandas as pd
from gradio import state_holder

from chatlib.chat import TurnRequest
from chatlib.config import TEMPERATURE_SLIDER_MAX, Settings
from chatlib.conversations import ConversationFrame, TurnInput, summary_label
from chatlib.errors import (
    ChatError,
    ConfigError,
    ConversationCorrupt,
    ConversationNotFound,
    ImportRejected,
    StorageError,
)
from chatlib.hub_sync import HubSync, SyncStatus, install_signal_flush
from chatlib.keys import check_key, clean_key, mask_key
from chatlib.logging import configure_logging
from chatlib.messages import (
    check_temperature,
    history_from_dicts,
    strip_last_turn,
    user_message_index,
)
from chatlib.ratelimit import client_ip
from chatlib.services import Services, create_services
from chatlib.storage import Conversation
from chatlib.transfer import (
    EXPORT_MAX_AGE_SECONDS,
    export_filename,
    export_json,
    export_markdown,
    parse_import,
    write_export,
)
from chatlib.usage import UsageSummary, summarize, summarize_usage
from chatlib.visitors import BrowserIdentity, Visitor, identify, is_operator
from ui.display import to_display

CATALOG_WAIT_ON_LOAD_S = 2.0
API_MAX_HISTORY_MESSAGES = 1_000  # prior messages the chat API takes in one call
TUNED_FOR_GRADIO = "6.31.0"  # the Gradio release the tuning below was checked against
QUEUE_POLL_S = 0.005
QUEUE_ANALYTICS_EVERY = 100
SYNC_FLUSH_TIMEOUT_S = 20.0

CSS = """
#app-header h1 { margin: 0; font-size: 1.6rem; }
#app-header p { margin: 0.2rem 0 0; opacity: 0.75; }
#composer textarea { font-size: 1rem; }
#key-notice { border-left: 4px solid var(--color-accent); padding-left: 0.75rem; }
#conversation-list label { width: 100%; }
#session-ready { display: none; }
#conversation-list .wrap { flex-direction: column; gap: 4px; }
#chat .bubble-wrap { padding-top: 2.75rem; }
/* Gradio's trash icon only starts a new chat (the chat stays saved): "+ New chat" does that. */
#chat .icon-button-wrapper button[aria-label="Clear"] { display: none; }
#chat table { display: block; max-width: 100%; overflow-x: auto; word-break: normal; }
#chat th, #chat td { overflow-wrap: normal; word-break: normal; }
#export-file .stem { white-space: normal; word-break: break-all; }
#model-picker input { padding-right: 2.5rem; text-overflow: ellipsis; }
/* On a phone the message box must be on screen without scrolling. */
@media (max-width: 640px) {
  #app-header p { display: none; }
  #chat { height: 56vh !important; }
}
"""

OPERATOR_KEY_HELP = """- **Operator:** put `OPENROUTER_API_KEY=sk-or-...` in a `.env` file next to
  `app.py` (or add it as a Space secret: *Settings → Variables and secrets*) and restart."""
NO_KEY_NOTICE_BYOK = f"""**No OpenRouter API key is configured yet, so messages cannot be sent.**

- **Visitor:** paste your own key under *Your OpenRouter key* in the settings (beside the
  chat; below it on a phone). It stays in your browser and is only used for your messages.
{OPERATOR_KEY_HELP}

Get a key at [openrouter.ai/keys](https://openrouter.ai/keys)."""

# On phones the sidebar would cover the whole chat: start with it closed there.
CLOSE_SIDEBAR_ON_PHONES_JS = """
() => {
  const close = (tries) => {
    const sidebar = document.querySelector('#sidebar.open');
    if (sidebar && window.innerWidth < 900) {
      sidebar.querySelector('.toggle-button')?.click();
    } else if (!sidebar && tries > 0) {
      setTimeout(() => close(tries - 1), 100);
    }
  };
  close(20);
}
"""

# On a phone the open sidebar covers the chat: close it once a chat is picked or started.
CLOSE_SIDEBAR_IF_NARROW_JS = """
(...inputs) => {
  if (window.innerWidth < 900) {
    document.querySelector('#sidebar.open')?.querySelector('.toggle-button')?.click();
  }
  return inputs;
}
"""

Outputs = tuple[Any, ...]
TURN_OUTPUTS = 7  # chat, conversation, input box, send, stop, conversation list, notice
_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def refusals_as_warnings(outputs: int) -> Callable[[_Handler], _Handler]:
    """Show a handler's gr.Error as a warning toast and change none of its `outputs`.

    Gradio 6 covers a chatbot with a full "Error" overlay when an event that updates it
    raises, hiding the conversation until the next update. A refusal (message too long, no
    key, rate limited, nothing to retry) must leave the chat on screen.
    """

    def unchanged() -> Outputs:
        return tuple(gr.skip() for _ in range(outputs))  # fresh: Gradio may alter them

    def decorate(handler: _Handler) -> _Handler:
        if inspect.isasyncgenfunction(handler):

            @functools.wraps(handler)
            async def stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                try:
                    # Closed at once with this one when the page goes away (stopping the turn).
                    async with contextlib.aclosing(handler(*args, **kwargs)) as frames:
                        async for frame in frames:
                            yield frame
                except gr.Error as exc:
                    gr.Warning(exc.message)
                    yield unchanged()

            return cast("_Handler", stream)

        @functools.wraps(handler)
        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = handler(*args, **kwargs)
                return await result if inspect.isawaitable(result) else result
            except gr.Error as exc:
                gr.Warning(exc.message)
                return unchanged()

        return cast("_Handler", call)

    return decorate


def _catalog_status(services: Services) -> str:
    catalog = services.catalog
    if catalog.is_live:
        return f"✓ {len(catalog.models)} models from OpenRouter. You can also type any model id."
    return (
        "⚠ The live model list is offline; showing a built-in list. "
        "You can still type any model id."
    )


def _header(settings: Settings) -> str:
    return (
        f"<div id='app-header'><h1>{html.escape(settings.app_title)}</h1>"
        "<p>Chat with any model on OpenRouter. Answers stream live; cost is shown per "
        "message.</p></div>"
    )


def build_demo(settings: Settings, services: Services) -> gr.Blocks:  # noqa: C901
    """Build the Gradio app around the given settings and services."""
    chat = services.chat
    conversations = services.conversations
    store = conversations.store
    login_enabled = settings.login_enabled

    # ---- who is asking -------------------------------------------------------------------

    def visitor_of(
        browser_value: Any, profile: gr.OAuthProfile | None, request: gr.Request | None
    ) -> Visitor:
        identity = BrowserIdentity.from_value(browser_value)
        if identity is None:
            raise gr.Error("The page is still loading. Try again in a moment.")
        peer, forwarded = client_address(request)
        visitor = identify(
            services.server_secret,
            identity,
            profile,
            peer=peer,
            forwarded_for=forwarded,
            trusted_proxies=services.trusted_proxies,
        )
        return visitor

    async def count_request(visitor: Visitor, doing: str) -> None:
        """Imports and exports write files: they share the visitor's chat allowance."""
        try:
            await services.limiter.check(visitor.rate_key, logged_in=visitor.logged_in, doing=doing)
        except ChatError as exc:
            raise gr.Error(exc.user_message, print_exception=False) from None

    def session_of(request: gr.Request | None) -> str | None:
        return request.session_hash if request is not None else None

    async def conversation_choices(owner_key: str, query: str = "") -> tuple[list[Any], str]:
        now = time.time()
        notice = ""
        if query.strip():
            summaries = await store.search(owner_key, query.strip())
            corrupt: list[str] = []
            if not summaries:
                notice = "No chat matches your search."
        else:
            listed = await store.list(owner_key)
            summaries, corrupt = listed.conversations, listed.corrupt
        if corrupt:
            notice = (
                f"⚠ {len(corrupt)} conversation(s) could not be read (damaged files) and are "
                "not shown. Your other conversations are fine."
            )
        return [(summary_label(s, now), s.id) for s in summaries], notice

    async def list_update(owner_key: str, selected: str | None, query: str = "") -> Outputs:
        choices, notice = await conversation_choices(owner_key, query)
        ids = {value for _, value in choices}
        return (
            gr.update(choices=choices, value=selected if selected in ids else None),
            gr.update(value=notice, visible=bool(notice)),
        )

    def settings_of(conversation: Conversation) -> Outputs:
        return (
            conversation.model,
            conversation.system_prompt,
            min(conversation.temperature, TEMPERATURE_SLIDER_MAX),
        )

    def fresh(model: str, system_prompt: str, temperature: float) -> Conversation:
        return conversations.new_conversation(
            (model or settings.default_model).strip(), system_prompt or "", float(temperature)
        )

    # ---- chat turns ----------------------------------------------------------------------

    async def viewed_display(session: str | None, owner_key: str) -> Any:
        """The messages of the conversation `session` has open, for the chat area."""
        conversation_id = conversations.viewed(session)
        if conversation_id is None:
            return []
        try:
            viewed = await store.load(owner_key, conversation_id)
        except (ConversationNotFound, ConversationCorrupt):
            return gr.skip()
        return to_display(viewed.messages)

    async def stream_turn(
        conversation: Conversation,
        user_text: str,
        model: str,
        system_prompt: str,
        temperature: float,
        visitor: Visitor,
        request: gr.Request | None,
        *,
        clear_input: bool,
    ) -> AsyncIterator[Outputs]:
        session = session_of(request)
        try:
            temperature = check_temperature(temperature)
        except ChatError as exc:
            raise gr.Error(exc.user_message, print_exception=False) from None
        turn = TurnInput(
            user_text=user_text,
            model=(model or settings.default_model).strip(),
            system_prompt=system_prompt or "",
            temperature=temperature,
            api_key=visitor.api_key,
            session_key=session,
            rate_key=visitor.rate_key,
            logged_in=visitor.logged_in,
        )
        # Closed here when the page goes away mid-answer: the answer is then stopped and saved.
        async with contextlib.aclosing(
            conversations.run_turn(visitor.owner_key, conversation, turn)
        ) as frames:
            async for outputs in draw_turn(
                frames, conversation, visitor, session, clear_input=clear_input
            ):
                yield outputs

    async def draw_turn(
        frames: AsyncIterator[ConversationFrame],
        conversation: Conversation,
        visitor: Visitor,
        session: str | None,
        *,
        clear_input: bool,
    ) -> AsyncIterator[Outputs]:
        try:
            first = await anext(frames)
        except ChatError as exc:
            raise gr.Error(exc.user_message, print_exception=False) from None
        if first.save_error is not None:
            gr.Warning(first.save_error.user_message)
        # Only a brand-new conversation must appear in the sidebar now; listing costs a
        # directory scan, and it would delay the upstream request of every other turn.
        listed: Any = gr.skip()
        notice: Any = gr.skip()
        if not any(m.role == "user" for m in conversation.messages):
            listed, notice = await list_update(visitor.owner_key, conversation.id)
        yield (
            to_display(first.conversation.messages),
            first.conversation,
            "" if clear_input else gr.skip(),
            gr.update(visible=False),
            gr.update(visible=True),
            listed,
            notice,
        )
        was_watching = True
        async for frame in frames:
            watching = conversations.is_viewing(session, conversation.id)
            switched_away = was_watching and not watching
            was_watching = watching
            shown: Any = gr.skip()
            if watching:
                shown = to_display(frame.conversation.messages)
            elif switched_away:
                # A frame of this answer sent just before the switch may reach the page after
                # it: draw the conversation now open once more, from this event, so it wins.
                shown = await viewed_display(session, visitor.owner_key)
            if not frame.done:
                if watching or switched_away:
                    yield (shown, *([gr.skip()] * 6))
                continue
            if frame.error is not None and watching:
                gr.Warning(frame.error.user_message)
            if frame.save_error is not None:
                gr.Warning(frame.save_error.user_message)
            current = conversation.id if watching else None
            listed, notice = await list_update(visitor.owner_key, current)
            if not watching:
                listed = gr.update(choices=listed["choices"])
            yield (
                shown,
                frame.conversation if watching else gr.skip(),
                gr.skip(),
                gr.update(visible=True),
                gr.update(visible=False),
                listed,
                notice,
            )

    @refusals_as_warnings(TURN_OUTPUTS)
    async def respond(
        message: str,
        conversation: Conversation | None,
        model: str,
        system_prompt: str,
        temperature: float,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> AsyncIterator[Outputs]:
        visitor = visitor_of(browser_value, profile, request)
        conversation = conversation or fresh(model, system_prompt, temperature)
        async for outputs in stream_turn(
            conversation,
            message,
            model,
            system_prompt,
            temperature,
            visitor,
            request,
            clear_input=True,
        ):
            yield outputs

    @refusals_as_warnings(TURN_OUTPUTS)
    async def retry(
        conversation: Conversation | None,
        model: str,
        system_prompt: str,
        temperature: float,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> AsyncIterator[Outputs]:
        visitor = visitor_of(browser_value, profile, request)
        if conversation is None:
            raise gr.Error("There is no message to retry yet.", print_exception=False)
        earlier, last_text = strip_last_turn(conversation.messages)
        if last_text is None:
            raise gr.Error("There is no message to retry yet.", print_exception=False)
        async for outputs in stream_turn(
            replace(conversation, messages=earlier),
            last_text,
            model,
            system_prompt,
            temperature,
            visitor,
            request,
            clear_input=False,
        ):
            yield outputs

    @refusals_as_warnings(TURN_OUTPUTS)
    async def edit(
        conversation: Conversation | None,
        model: str,
        system_prompt: str,
        temperature: float,
        browser_value: Any,
        edit_data: gr.EditData,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> AsyncIterator[Outputs]:
        visitor = visitor_of(browser_value, profile, request)
        if conversation is None:
            raise gr.Error("Only your own messages can be edited.", print_exception=False)
        shown = to_display(conversation.messages)
        position = edit_data.index if isinstance(edit_data.index, int) else edit_data.index[0]
        nth_user = sum(1 for m in shown[: position + 1] if m["role"] == "user") - 1
        index = user_message_index(conversation.messages, nth_user)
        if index is None:
            raise gr.Error("Only your own messages can be edited.", print_exception=False)
        new_text = edit_data.value if isinstance(edit_data.value, str) else str(edit_data.value)
        async for outputs in stream_turn(
            replace(conversation, messages=conversation.messages[:index]),
            new_text,
            model,
            system_prompt,
            temperature,
            visitor,
            request,
            clear_input=False,
        ):
            yield outputs

    @refusals_as_warnings(3)
    async def undo(
        conversation: Conversation | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Outputs:
        if conversation is None:
            return gr.skip(), gr.skip(), gr.skip()
        visitor = visitor_of(browser_value, profile, request)
        earlier, last_text = strip_last_turn(conversation.messages)
        updated = replace(conversation, messages=earlier)
        try:
            updated = await store.save(visitor.owner_key, updated)
        except StorageError as exc:
            gr.Warning(exc.user_message)
        return to_display(earlier), updated, last_text or gr.skip()

    def stop(request: gr.Request) -> None:
        chat.stop(request.session_hash or "")

    # ---- sidebar: conversations ----------------------------------------------------------

    async def new_chat(request: gr.Request) -> Outputs:
        conversations.view(session_of(request), None)
        return [], None, gr.update(value=None)

    @refusals_as_warnings(5)
    async def open_conversation(
        conversation_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Outputs:
        if not conversation_id:
            return (gr.skip(),) * 5
        visitor = visitor_of(browser_value, profile, request)
        try:
            conversation = await store.load(visitor.owner_key, conversation_id)
        except (ConversationNotFound, ConversationCorrupt) as exc:
            raise gr.Error(exc.user_message, print_exception=False) from None
        conversations.view(session_of(request), conversation.id)
        return (to_display(conversation.messages), conversation, *settings_of(conversation))

    async def search(
        query: str,
        conversation: Conversation | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Outputs:
        visitor = visitor_of(browser_value, profile, request)
        selected = conversation.id if conversation is not None else None
        return await list_update(visitor.owner_key, selected, query)

    async def rename(
        title: str,
        conversation: Conversation | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Outputs:
        if conversation is None or not any(m.role == "user" for m in conversation.messages):
            raise gr.Error("Send a message first, then rename the chat.", print_exception=False)
        if not title.strip():
            raise gr.Error("Type the new name first.", print_exception=False)
        visitor = visitor_of(browser_value, profile, request)
        try:
            renamed = await conversations.rename(visitor.owner_key, conversation.id, title)
        except StorageError as exc:
            raise gr.Error(exc.user_message, print_exception=False) from None
        updated = replace(conversation, title=renamed.title, updated_at=renamed.updated_at)
        listed, notice = await list_update(visitor.owner_key, conversation.id)
        gr.Info(f"Renamed to “{renamed.title}”.")
        return updated, "", listed, notice

    def ask_delete(conversation: Conversation | None) -> Outputs:
        if conversation is None or not any(m.role == "user" for m in conversation.messages):
            raise gr.Error("There is no saved chat to delete here.", print_exception=False)
        return gr.update(visible=True), gr.update(
            value=f"Delete **{html.escape(conversation.title)}**? This cannot be undone."
        )

    @refusals_as_warnings(5)
    async def confirm_delete(
        conversation: Conversation | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Outputs:
        hide = gr.update(visible=False)
        if conversation is None:
            return (hide, *([gr.skip()] * 4))
        visitor = visitor_of(browser_value, profile, request)
        try:
            await conversations.delete(visitor.owner_key, conversation.id)
        except StorageError as exc:
            raise gr.Error(exc.user_message, print_exception=False) from None
        conversations.view(session_of(request), None)
        listed, notice = await list_update(visitor.owner_key, None)
        gr.Info(f"Deleted “{conversation.title}”.")
        return hide, [], None, listed, notice

    # ---- export / import -----------------------------------------------------------------

    async def export(
        what: str,
        conversation: Conversation | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Any:
        visitor = visitor_of(browser_value, profile, request)
        await count_request(visitor, "exporting")
        now = datetime.now(UTC)
        if what == "all":
            listed = await store.list(visitor.owner_key)
            chosen = []
            for summary in listed.conversations:
                try:
                    chosen.append(await store.load(visitor.owner_key, summary.id))
                except StorageError:
                    continue
            if not chosen:
                raise gr.Error("You have no saved conversations yet.", print_exception=False)
        else:
            if conversation is None or not conversation.messages:
                raise gr.Error("This chat is empty: nothing to export.", print_exception=False)
            chosen = [conversation]
        if what == "markdown":
            data = export_markdown(chosen[0]).encode("utf-8")
            name = export_filename(now).removesuffix(".json") + ".md"
        else:
            data = export_json(chosen)
            name = export_filename(now)
        with contextlib.suppress(OSError):  # a full disk still gets its download
            await asyncio.to_thread(write_export, services.exports_dir, data, now, name=name)
        # Offer a private copy: Gradio serves it from its cache under an unguessable path
        # (both are removed after an hour, like Gradio's cached copy).
        try:
            download = await asyncio.to_thread(write_export, downloads_dir, data, now, name=name)
        except OSError:
            raise gr.Error(
                "The download could not be prepared: the server's disk refused the file.",
                print_exception=False,
            ) from None
        return gr.update(value=str(download), visible=True)

    async def import_file(
        upload: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Outputs:
        if not upload:
            return gr.skip(), gr.skip()
        visitor = visitor_of(browser_value, profile, request)
        await count_request(visitor, "importing")
        path = Path(upload)
        try:
            size = path.stat().st_size
            if size > settings.max_import_bytes:
                raise ImportRejected(
                    f"file is {size / 1e6:.1f} MB; the limit is "
                    f"{settings.max_import_bytes / 1e6:.1f} MB"
                )
            data = await asyncio.to_thread(path.read_bytes)
            imported = parse_import(data, max_bytes=settings.max_import_bytes)
        except ChatError as exc:
            raise gr.Error(exc.user_message, print_exception=False) from None
        saved = 0
        for conversation in imported:
            try:
                await store.save(visitor.owner_key, conversation)
                saved += 1
            except StorageError as exc:
                gr.Warning(exc.user_message)
                break
        gr.Info(f"Imported {saved} conversation(s).")
        return await list_update(visitor.owner_key, None)

    # ---- bring your own key ---------------------------------------------------------------

    def key_status(identity: BrowserIdentity | None) -> str:
        if identity is not None and identity.api_key:
            return f"Using your key {mask_key(identity.api_key)} for your messages."
        if settings.openrouter_api_key:
            return "Using the operator's key. Paste your own to use it instead."
        return "No key yet: paste yours to start chatting."

    def key_notice(identity: BrowserIdentity | None) -> Any:
        """The no-key explanation shows until a key is available to this visitor."""
        has_key = settings.openrouter_api_key or (identity is not None and identity.api_key)
        return gr.update(visible=not has_key)

    async def use_key(raw_key: str, browser_value: Any) -> Outputs:
        identity = BrowserIdentity.ensure(browser_value)
        try:
            key = clean_key(raw_key)
            status = await check_key(
                settings.openrouter_base_url, key, timeout=settings.connect_timeout_seconds
            )
        except ChatError as exc:
            raise gr.Error(exc.user_message, print_exception=False) from None
        identity = replace(identity, api_key=key)
        return (
            identity.to_value(),
            "",
            f"{status.describe()} Using {mask_key(key)} for your messages.",
            key_notice(identity),
        )

    def forget_key(browser_value: Any) -> Outputs:
        identity = replace(BrowserIdentity.ensure(browser_value), api_key=None)
        return identity.to_value(), key_status(identity), key_notice(identity)

    # ---- login migration -----------------------------------------------------------------

    async def move_anonymous(
        browser_value: Any, request: gr.Request, profile: gr.OAuthProfile | None
    ) -> Outputs:
        visitor = visitor_of(browser_value, profile, request)
        if not visitor.logged_in:
            raise gr.Error("Log in first.", print_exception=False)
        moved = await store.move_all(visitor.anon_owner_key, visitor.owner_key)
        gr.Info(f"Moved {moved} conversation(s) into your account.")
        listed, notice = await list_update(visitor.owner_key, None)
        return gr.update(visible=False), listed, notice

    def keep_separate(browser_value: Any) -> Outputs:
        identity = replace(BrowserIdentity.ensure(browser_value), migration_declined=True)
        return gr.update(visible=False), identity.to_value()

    # ---- page load -----------------------------------------------------------------------

    async def on_load(
        browser_value: Any, request: gr.Request, profile: gr.OAuthProfile | None
    ) -> Outputs:
        identity = BrowserIdentity.ensure(browser_value)
        visitor = visitor_of(identity.to_value(), profile, request)
        conversations.view(session_of(request), None)
        listed, notice = await list_update(visitor.owner_key, None)
        migrate = gr.update(visible=False)
        if visitor.logged_in and not identity.migration_declined:
            anonymous = await store.list(visitor.anon_owner_key)
            if anonymous.conversations:
                migrate = gr.update(visible=True)
        return (
            identity.to_value(),
            listed,
            notice,
            migrate,
            key_status(identity),
            key_notice(identity),
            "<span data-ready='1'></span>",
        )

    async def load_catalog() -> Outputs:
        services.catalog.refresh_in_background()
        task = services.catalog.pending_refresh
        if task is not None:
            await asyncio.wait({task}, timeout=CATALOG_WAIT_ON_LOAD_S)
        return (
            gr.update(choices=services.catalog.choices([settings.default_model])),
            _catalog_status(services),
        )

    # ---- usage ---------------------------------------------------------------------------

    async def show_usage(
        browser_value: Any, request: gr.Request, profile: gr.OAuthProfile | None
    ) -> Outputs:
        visitor = visitor_of(browser_value, profile, request)
        peer, forwarded = client_address(request)
        is_admin = is_operator(
            user_name=visitor.user_name,
            admin_user_names=settings.admin_user_names,
            on_space=settings.on_space,
            share=settings.share,
            peer=peer,
            forwarded_for=forwarded,
        )
        mine = await summarize_usage(services.usage_dir, owner=visitor.owner_key)
        outputs: list[Any] = [*_usage_outputs(mine, "Your usage")]
        if is_admin:
            everyone = await summarize_usage(services.usage_dir)
            csv_files = sorted(services.usage_dir.glob("usage-*.csv"))
            outputs.extend(
                [
                    gr.update(visible=True),
                    _sync_line(services.sync_status),
                    *_usage_outputs(everyone, "Whole app"),
                    gr.update(value=[str(p) for p in csv_files] or None),
                ]
            )
        else:
            outputs.extend([gr.update(visible=False), *([gr.skip()] * 7)])
        return tuple(outputs)

    # ---- chat API ------------------------------------------------------------------------

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
            raise gr.Error(f"Invalid history: {exc}", print_exception=False) from None
        peer, forwarded = client_address(request)
        turn = TurnRequest(
            history=prior,
            user_text=message,
            model=(model or settings.default_model).strip(),
            system_prompt=system_prompt or "",
            temperature=temperature,  # checked with the other inputs by the chat service
            rate_key=client_ip(peer, forwarded, services.trusted_proxies),
            owner_key="api",
        )
        # Closed here when the caller goes away mid-answer: the answer is stopped, usage kept.
        async with contextlib.aclosing(chat.run_turn(turn)) as frames:
            try:
                await anext(frames)
            except ChatError as exc:
                raise gr.Error(exc.user_message, print_exception=False) from None
            async for frame in frames:
                yield frame.answer.content
                if frame.done and frame.error is not None:
                    raise gr.Error(frame.error.user_message, print_exception=False)

    # ---- layout --------------------------------------------------------------------------

    demo: gr.Blocks
    # Downloads are copied from here into Gradio's cache, which drops files after an hour.
    downloads_dir = Path(tempfile.mkdtemp(prefix="openrouter-chat-downloads-"))
    with gr.Blocks(
        title=settings.app_title,
        fill_height=True,
        delete_cache=(600, int(EXPORT_MAX_AGE_SECONDS)),
    ) as demo:
        browser_state = gr.BrowserState(
            None,
            storage_key=services.browser_storage_key,
            secret=services.browser_secret,
        )
        conversation_state = gr.State(None)
        # Filled once the visitor's identity is known (tests and scripts wait for it).
        session_ready = gr.HTML("", elem_id="session-ready", container=False)

        with gr.Sidebar(label="Conversations", open=True, width=300, elem_id="sidebar"):
            if login_enabled:
                gr.LoginButton()
            new_btn = gr.Button("+ New chat", variant="primary", elem_id="new-chat")
            search_box = gr.Textbox(
                placeholder="Search titles and messages",
                show_label=False,
                elem_id="conversation-search",
                max_lines=1,
            )
            conversation_list = gr.Radio(
                choices=[], show_label=False, elem_id="conversation-list", container=False
            )
            storage_notice = gr.Markdown(visible=False, elem_id="storage-notice")
            with gr.Group(visible=False, elem_id="migrate-row") as migrate_row:
                gr.Markdown(
                    "You have conversations from before you logged in. Move them into your "
                    "account? (Nothing is merged without asking.)"
                )
                move_btn = gr.Button("Move them to my account", size="sm")
                keep_btn = gr.Button("Keep them separate", size="sm")
            with gr.Accordion("Manage this chat", open=False, elem_id="manage"):
                rename_box = gr.Textbox(
                    label="Rename", placeholder="New name", max_lines=1, elem_id="rename-box"
                )
                rename_btn = gr.Button("Rename", size="sm")
                delete_btn = gr.Button("Delete this chat", size="sm", variant="stop")
                with gr.Group(visible=False, elem_id="confirm-delete") as confirm_row:
                    confirm_text = gr.Markdown()
                    confirm_btn = gr.Button("Yes, delete it", size="sm", variant="stop")
                    cancel_btn = gr.Button("Cancel", size="sm")
            with gr.Accordion("Export / import", open=False, elem_id="transfer"):
                export_json_btn = gr.Button("Export this chat (JSON)", size="sm")
                export_md_btn = gr.Button("Export this chat (Markdown)", size="sm")
                export_all_btn = gr.Button("Export all my chats (JSON)", size="sm")
                export_file = gr.File(
                    label="Download", visible=False, interactive=False, elem_id="export-file"
                )
                import_btn = gr.UploadButton(
                    "Import JSON…", file_types=[".json"], size="sm", elem_id="import-button"
                )

        gr.HTML(_header(settings))
        key_notice_md = gr.Markdown(
            NO_KEY_NOTICE_BYOK,
            elem_id="key-notice",
            visible=not settings.openrouter_api_key,
        )
        with gr.Tabs():
            with gr.Tab("Chat", id="chat-tab"), gr.Row(equal_height=False):
                with gr.Column(scale=3, min_width=320):
                    chatbot = gr.Chatbot(
                        elem_id="chat",
                        show_label=False,
                        height="64vh",
                        editable="user",
                        buttons=["copy", "copy_all"],
                        feedback_options=None,
                        placeholder="**Ask anything.** Pick a model in the settings.",
                        latex_delimiters=[
                            {"left": "$$", "right": "$$", "display": True},
                            {"left": "\\[", "right": "\\]", "display": True},
                            {"left": "\\(", "right": "\\)", "display": False},
                        ],
                        group_consecutive_messages=False,
                    )
                    with gr.Row(elem_id="composer", equal_height=True):
                        textbox = gr.Textbox(
                            show_label=False,
                            placeholder="Message… (Enter to send, Shift+Enter for a new line)",
                            lines=1,
                            max_lines=12,
                            scale=8,
                            autofocus=True,
                            elem_id="message-input",
                        )
                        send_btn = gr.Button("Send", variant="primary", scale=1, min_width=80)
                        stop_btn = gr.Button(
                            "Stop", variant="stop", scale=1, min_width=80, visible=False
                        )
                with gr.Column(scale=1, min_width=280):
                    model = gr.Dropdown(
                        choices=services.catalog.choices([settings.default_model]),
                        value=settings.default_model,
                        label="Model",
                        info="Type to search; any OpenRouter model id works.",
                        allow_custom_value=True,
                        filterable=True,
                        elem_id="model-picker",
                    )
                    catalog_status = gr.Markdown(
                        _catalog_status(services), elem_id="catalog-status"
                    )
                    system_prompt = gr.Textbox(
                        label="System prompt",
                        placeholder="e.g. You are a concise assistant.",
                        lines=3,
                        max_lines=12,
                        elem_id="system-prompt",
                    )
                    temperature = gr.Slider(
                        minimum=0.0,
                        maximum=TEMPERATURE_SLIDER_MAX,
                        step=0.05,
                        value=settings.slider_temperature,
                        label="Temperature",
                        info="Lower is more focused, higher more creative.",
                        elem_id="temperature",
                    )
                    with gr.Column(visible=settings.user_keys_allowed):
                        key_status_md = gr.Markdown(elem_id="byok-status")
                        with gr.Accordion(
                            "Your OpenRouter key",
                            open=not settings.openrouter_api_key,
                            elem_id="byok",
                        ):
                            key_box = gr.Textbox(
                                label="API key",
                                type="password",
                                placeholder="sk-or-...",
                                max_lines=1,
                                elem_id="byok-key",
                            )
                            with gr.Row():
                                use_key_btn = gr.Button("Use my key", size="sm")
                                forget_key_btn = gr.Button("Forget my key", size="sm")
            with gr.Tab("Usage", id="usage-tab") as usage_tab:
                gr.Markdown("### Your usage")
                mine_outputs = _usage_components("mine")
                with gr.Group(visible=False, elem_id="admin-usage") as admin_group:
                    gr.Markdown("### Whole app (operator view)")
                    sync_md = gr.Markdown(elem_id="sync-status")
                    all_outputs = _usage_components("all")
                    csv_download = gr.File(
                        label="Usage CSV files", file_count="multiple", interactive=False
                    )

        # ---- events ----------------------------------------------------------------------
        turn_outputs = [
            chatbot,
            conversation_state,
            textbox,
            send_btn,
            stop_btn,
            conversation_list,
            storage_notice,
        ]
        turn_settings = [model, system_prompt, temperature]
        streaming: dict[str, Any] = {
            "concurrency_limit": None,
            "show_progress": "hidden",
            "api_visibility": "private",
        }
        quick: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}
        gr.on(
            [textbox.submit, send_btn.click],
            respond,
            inputs=[textbox, conversation_state, *turn_settings, browser_state],
            outputs=turn_outputs,
            **streaming,
        )
        chatbot.retry(
            retry,
            inputs=[conversation_state, *turn_settings, browser_state],
            outputs=turn_outputs,
            **streaming,
        )
        chatbot.edit(
            edit,
            inputs=[conversation_state, *turn_settings, browser_state],
            outputs=turn_outputs,
            **streaming,
        )
        chatbot.undo(
            undo,
            inputs=[conversation_state, browser_state],
            outputs=[chatbot, conversation_state, textbox],
            **quick,
        )
        stop_btn.click(stop, queue=False, api_visibility="private")
        demo.unload(stop)  # a closed page stops its answer even before the next token
        gr.on(
            [new_btn.click, chatbot.clear],
            new_chat,
            outputs=[chatbot, conversation_state, conversation_list],
            js=CLOSE_SIDEBAR_IF_NARROW_JS,
            **quick,
        )
        conversation_list.input(
            open_conversation,
            inputs=[conversation_list, browser_state],
            outputs=[chatbot, conversation_state, *turn_settings],
            js=CLOSE_SIDEBAR_IF_NARROW_JS,
            **quick,
        )
        search_box.change(
            search,
            inputs=[search_box, conversation_state, browser_state],
            outputs=[conversation_list, storage_notice],
            **quick,
        )
        gr.on(
            [rename_btn.click, rename_box.submit],
            rename,
            inputs=[rename_box, conversation_state, browser_state],
            outputs=[conversation_state, rename_box, conversation_list, storage_notice],
            **quick,
        )
        delete_btn.click(
            ask_delete, inputs=[conversation_state], outputs=[confirm_row, confirm_text], **quick
        )
        cancel_btn.click(lambda: gr.update(visible=False), outputs=[confirm_row], **quick)
        confirm_btn.click(
            confirm_delete,
            inputs=[conversation_state, browser_state],
            outputs=[confirm_row, chatbot, conversation_state, conversation_list, storage_notice],
            **quick,
        )
        for button, what in (
            (export_json_btn, "current"),
            (export_md_btn, "markdown"),
            (export_all_btn, "all"),
        ):
            button.click(
                export,
                inputs=[gr.State(what), conversation_state, browser_state],
                outputs=[export_file],
                **quick,
            )
        import_btn.upload(
            import_file,
            inputs=[import_btn, browser_state],
            outputs=[conversation_list, storage_notice],
            **quick,
        )
        use_key_btn.click(
            use_key,
            inputs=[key_box, browser_state],
            outputs=[browser_state, key_box, key_status_md, key_notice_md],
            **quick,
        )
        forget_key_btn.click(
            forget_key,
            inputs=[browser_state],
            outputs=[browser_state, key_status_md, key_notice_md],
            **quick,
        )
        move_btn.click(
            move_anonymous,
            inputs=[browser_state],
            outputs=[migrate_row, conversation_list, storage_notice],
            **quick,
        )
        keep_btn.click(
            keep_separate, inputs=[browser_state], outputs=[migrate_row, browser_state], **quick
        )
        usage_tab.select(
            show_usage,
            inputs=[browser_state],
            outputs=[*mine_outputs, admin_group, sync_md, *all_outputs, csv_download],
            **quick,
        )
        demo.load(
            on_load,
            inputs=[browser_state],
            outputs=[
                browser_state,
                conversation_list,
                storage_notice,
                migrate_row,
                key_status_md,
                key_notice_md,
                session_ready,
            ],
            concurrency_limit=None,
            **quick,
        )
        demo.load(load_catalog, outputs=[model, catalog_status], concurrency_limit=None, **quick)
        gr.api(chat_api, api_name="chat", concurrency_limit=None)  # type: ignore[attr-defined]
    return demo


LATENCY_BUCKETS: list[str] = [
    str(row["bucket"]) for row in summarize([]).as_rows_histogram() if row["metric"] == "latency_ms"
]


def _usage_components(scope: str) -> list[Any]:
    """Totals line plus four plots: cost per day, tokens per day, cost per model, latency."""
    totals = gr.Markdown(elem_id=f"usage-totals-{scope}")
    # Two plots side by side on a desktop; one under the other below ~700 px.
    plot: dict[str, Any] = {"height": 240, "y_lim": [0, None], "min_width": 340}
    with gr.Row():
        cost_by_day = gr.BarPlot(x="date", y="cost_usd", title="Cost per day (USD)", **plot)
        tokens_by_day = gr.BarPlot(x="date", y="tokens", title="Tokens per day", **plot)
    with gr.Row():
        by_model = gr.BarPlot(
            x="model",
            y="cost_usd",
            title="Cost per model (USD)",
            sort="-y",
            x_label_angle=-40,
            **plot,
        )
        latency = gr.BarPlot(
            x="bucket",
            y="requests",
            title="Answer time (latency)",
            sort=LATENCY_BUCKETS,
            x_label_angle=-40,
            **plot,
        )
    return [totals, cost_by_day, tokens_by_day, by_model, latency]


def _usage_outputs(summary: UsageSummary, title: str) -> list[Any]:
    """Values for `_usage_components`."""
    totals = summary.totals
    p50 = summary.latency_ms.p50
    ttft = summary.ttft_ms.p50
    line = (
        f"**{title}:** {totals.requests} request{'' if totals.requests == 1 else 's'} · "
        f"${totals.cost_usd:.4f} · "
        f"{totals.prompt_tokens:,} prompt + {totals.completion_tokens:,} completion tokens"
    )
    if p50 is not None:
        line += f" · median answer {p50 / 1000:.2f} s"
    if ttft is not None:
        line += f" · median TTFT {ttft / 1000:.2f} s"
    histogram = [r for r in summary.as_rows_histogram() if r["metric"] == "latency_ms"]
    return [
        line,
        pd.DataFrame(summary.as_rows_by_day(), columns=["date", "cost_usd", "tokens"]),
        pd.DataFrame(summary.as_rows_by_day(), columns=["date", "cost_usd", "tokens"]),
        pd.DataFrame(summary.as_rows_by_model(), columns=["model", "cost_usd", "requests"]),
        pd.DataFrame(histogram, columns=["bucket", "requests"]),
    ]


def client_address(request: gr.Request | None) -> tuple[str | None, list[str]]:
    """The socket peer and every X-Forwarded-For header line, as the request carries them."""
    if request is None:
        return None, []
    peer = request.client.host if request.client else None
    return peer, request.headers.getlist("x-forwarded-for")


def _sync_line(status: SyncStatus) -> str:
    """One line about the dataset sync for the operator."""
    if not status.enabled:
        return "Dataset sync is off (set HF_DATASET_REPO and HF_TOKEN to keep data on the Hub)."

    def when(at: float | None) -> str:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "never"

    line = f"Dataset sync: last success {when(status.last_success_at)}."
    if status.last_error:
        line += f" ⚠ Last error: {html.escape(status.last_error)}"
    if status.pending:
        line += " Changes waiting to be pushed."
    return line


def _skip_missing_matplotlib() -> None:
    """Make `import matplotlib` fail fast when it is not installed.

    Gradio wraps every event in a helper that tries to import matplotlib; when it is absent,
    each attempt rescans sys.path (5-9 % of CPU while streaming, in a profile).
    """
    if "matplotlib" not in sys.modules and importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]


class _BlocksWithoutPage:
    """What `SessionState.__init__` reads from a Blocks, minus the blocks to render."""

    def __init__(self, blocks: gr.Blocks) -> None:
        self.default_config = blocks.default_config
        self.blocks: dict[int, Any] = {}


class _LazySessionState(state_holder.SessionState):
    """A Gradio session that renders a block's config only when something reads it."""

    def __init__(self, blocks: gr.Blocks) -> None:
        super().__init__(_BlocksWithoutPage(blocks))  # type: ignore[arg-type]
        self._page_ids = [k for k in self.blocks_config.blocks if k in blocks.blocks]

    @property
    def components(self) -> Iterator[dict[str, Any]]:
        # Only deep links read every block's config: build the missing ones now.
        for key in self._page_ids:
            if key not in self.config_values:
                block = self.blocks_config.blocks[key]
                self.config_values[key] = self.blocks_config.config_for_block(key, [], block)
        yield from super().components


def lazy_session_config() -> bool:
    """Stop Gradio rendering the whole page's config for every new session; True if applied.

    Each API call is a new session, and Gradio's `SessionState.__init__` renders the config of
    every block (inspect.signature, JSON schemas): ~15 ms of CPU before the handler runs and
    40 % of the server's CPU at 100 concurrent calls (bench/README.md). Sessions only read a
    block's config when it changes (built on demand there) or for a deep link (built above).
    Applied only to the Gradio release it was checked against (tests/test_gradio_tuning.py).
    """
    if gr.__version__ != TUNED_FOR_GRADIO:
        return False
    state_holder.SessionState = _LazySessionState  # type: ignore[misc]
    return True


def tune_queue(demo: gr.Blocks) -> bool:
    """Make Gradio's queue cheaper to run; True if applied.

    The queue loop polls for new events even when idle: every 1 ms it burns ~0.09 core all the
    time (a tenth of the server's CPU at 50 streams); every 5 ms, a third of that, for at most
    5 ms more before a new answer starts. Its monitoring summary is refreshed every 100
    events instead of after each one.
    """
    queue: Any = getattr(demo, "_queue", None)
    if gr.__version__ != TUNED_FOR_GRADIO or not hasattr(queue, "sleep_when_free"):
        return False
    queue.sleep_when_free = QUEUE_POLL_S
    if "GRADIO_ANALYTICS_CACHE_FREQUENCY" not in os.environ:
        # After every event Gradio rebuilds its monitoring summary with pandas over the last
        # 10 000 events (8 ms each once full); every 100 events is plenty.
        queue.ANAYLTICS_CACHE_FREQUENCY = QUEUE_ANALYTICS_EVERY
    return True


def launch_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments for `demo.launch()` derived from settings."""
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "max_threads": settings.max_concurrent_streams,
        "theme": gr.themes.Soft(primary_hue="indigo", neutral_hue="slate"),
        "css": CSS,
        "js": CLOSE_SIDEBAR_ON_PHONES_JS,
        "ssr_mode": False,
        "footer_links": ["api"],
        "share": settings.share,
        "show_error": False,
        # Uploads are only ever imports: anything much bigger is refused before it is stored.
        "max_file_size": 2 * settings.max_import_bytes,
    }


def main() -> None:
    """Read settings, set up logging and services, and serve."""
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None
    # Uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1 and rewrite the client
    # address; the app resolves the client IP itself against TRUSTED_PROXIES.
    os.environ["FORWARDED_ALLOW_IPS"] = ""
    redactor = configure_logging(settings)
    sync = HubSync.from_settings(settings)
    if sync is not None:
        sync.restore()  # before serving: restored conversations must be there on first load
        sync.start()
        install_signal_flush(sync, SYNC_FLUSH_TIMEOUT_S)
    try:
        services = create_services(settings, redactor, sync=sync)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None
    services.catalog.prefetch_in_thread()
    _skip_missing_matplotlib()
    lazy_session_config()
    demo = build_demo(settings, services)
    # Queue positions are sent once a second rather than to every waiting visitor each time
    # an event starts (Gradio's "auto": O(waiting) work per start, 7 % of the CPU in a burst).
    demo.queue(default_concurrency_limit=None, max_size=None, status_update_rate=1)
    tune_queue(demo)
    demo.launch(**launch_kwargs(settings))


if __name__ == "__main__":
    main()
