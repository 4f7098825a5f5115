"""The chat: messages, the composer, Stop, retry/edit/undo, and the model settings beside it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

import gradio as gr

from chatlib.config import TEMPERATURE_SLIDER_MAX
from chatlib.conversations import ConversationFrame, TurnRequest
from chatlib.errors import StorageError
from chatlib.visitors import Visitor
from ui.assets import CLOSE_SIDEBAR_IF_NARROW_JS
from ui.context import QUICK, STREAMING, PageContext, session_of
from ui.display import to_display
from ui.errors import refuse, shown_as_toast, unchanged, warn
from ui.sidebar import SidebarPanel

Updates = dict[Any, Any]
CATALOG_WAIT_ON_LOAD_S = 2.0
LATEX_DELIMITERS: list[dict[str, str | bool]] = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
]


def catalog_status(ctx: PageContext) -> str:
    """One line under the model picker: live list or built-in fallback."""
    catalog = ctx.services.catalog
    if catalog.is_live:
        return f"✓ {len(catalog.models)} models from OpenRouter. You can also type any model id."
    return (
        "⚠ The live model list is offline; showing a built-in list. "
        "You can still type any model id."
    )


class ChatPanel:
    """The conversation area and the composer (left), model settings (right)."""

    def __init__(self, ctx: PageContext) -> None:
        self.ctx = ctx
        self.chatbot = gr.Chatbot(
            elem_id="chat",
            show_label=False,
            height="64vh",
            editable="user",
            buttons=["copy", "copy_all"],
            feedback_options=None,
            placeholder="**Ask anything.** Pick a model in the settings.",
            latex_delimiters=LATEX_DELIMITERS,
            group_consecutive_messages=False,
        )
        with gr.Row(elem_id="composer", equal_height=True):
            self.textbox = gr.Textbox(
                show_label=False,
                placeholder="Message… (Enter to send, Shift+Enter for a new line)",
                lines=1,
                max_lines=12,
                scale=8,
                autofocus=bool(ctx.settings.openrouter_api_key),
                elem_id="message-input",
            )
            self.send_btn = gr.Button(
                "Send", variant="primary", scale=1, min_width=80, elem_id="send-btn"
            )
            self.stop_btn = gr.Button(
                "Stop", variant="stop", scale=1, min_width=80, visible=False, elem_id="stop-btn"
            )

    def render_settings(self) -> None:
        """The model picker, system prompt and temperature (the right-hand column)."""
        settings = self.ctx.settings
        self.model = gr.Dropdown(
            choices=self.ctx.services.catalog.choices([settings.default_model]),
            value=settings.default_model,
            label="Model",
            info="Type to search; any OpenRouter model id works.",
            allow_custom_value=True,
            filterable=True,
            elem_id="model-picker",
        )
        self.catalog_status = gr.Markdown(catalog_status(self.ctx), elem_id="catalog-status")
        self.system_prompt = gr.Textbox(
            label="System prompt",
            placeholder="e.g. You are a concise assistant.",
            lines=3,
            max_lines=12,
            elem_id="system-prompt",
        )
        self.temperature = gr.Slider(
            minimum=0.0,
            maximum=TEMPERATURE_SLIDER_MAX,
            step=0.05,
            value=settings.slider_temperature,
            label="Temperature",
            info="Lower is more focused, higher more creative.",
            elem_id="temperature",
        )

    # ---- a turn, drawn -------------------------------------------------------------------

    def _request(
        self,
        visitor: Visitor,
        request: gr.Request | None,
        conversation_id: str | None,
        turn_settings: tuple[str, str, float],
        **what: Any,
    ) -> TurnRequest:
        model, system_prompt, temperature = turn_settings
        return TurnRequest(
            owner_key=visitor.owner_key,
            conversation_id=conversation_id,
            user_text=what.pop("user_text", ""),
            model=(model or self.ctx.settings.default_model).strip(),
            system_prompt=system_prompt or "",
            temperature=temperature,
            api_key=visitor.api_key,
            session_key=session_of(request),
            rate_key=visitor.rate_key,
            logged_in=visitor.logged_in,
            **what,
        )

    async def _run(self, turn: TurnRequest, *, clear_input: bool) -> AsyncGenerator[Updates]:
        """Stream one turn onto the page; closing this stops the turn (it is still saved)."""
        conversations = self.ctx.services.conversations
        frames = conversations.turn(turn)
        try:
            first = await anext(frames)
            if first.save_error is not None:
                warn(first.save_error)
            shown_id = first.conversation.id
            updates: Updates = {
                self.chatbot: to_display(first.conversation.messages),
                self.ctx.conversation_id: shown_id,
                **self._streaming_buttons(),
            }
            if clear_input:
                updates[self.textbox] = ""
            if turn.conversation_id is None:  # a new chat appears in the list at once
                updates.update(await self.sidebar.refreshed(turn.owner_key, shown_id))
            yield updates
            async for drawn in self._draw_rest(frames, turn, shown_id):
                yield drawn
        finally:
            await frames.aclose()

    async def _draw_rest(
        self, frames: AsyncIterator[ConversationFrame], turn: TurnRequest, shown_id: str
    ) -> AsyncIterator[Updates]:
        conversations = self.ctx.services.conversations
        was_watching = True
        async for frame in frames:
            watching = conversations.is_viewing(turn.session_key, shown_id)
            switched_away, was_watching = was_watching and not watching, watching
            updates: Updates = {}
            if watching:
                updates[self.chatbot] = to_display(frame.conversation.messages)
            elif switched_away:
                # A frame of this answer sent just before the switch may reach the page after
                # it: draw the conversation now open once more, from this event, so it wins.
                updates.update(await self._viewed(turn))
            if not frame.done:
                if updates:
                    # Said again in every frame: a browser that merges frames arriving
                    # together keeps the last one's, and Stop must stay on screen.
                    yield {**updates, **self._streaming_buttons()}
                continue
            if frame.error is not None and watching:
                warn(frame.error)
            if frame.save_error is not None:
                warn(frame.save_error)
            updates[self.send_btn] = gr.update(visible=True)
            updates[self.stop_btn] = gr.update(visible=False)
            if watching:
                updates[self.ctx.conversation_id] = frame.conversation.id
            selected = shown_id if watching else None
            updates.update(
                await self.sidebar.refreshed(turn.owner_key, selected, keep_selection=not watching)
            )
            yield updates

    def _streaming_buttons(self) -> Updates:
        """Stop shown, Send hidden: an answer is streaming."""
        return {self.send_btn: gr.update(visible=False), self.stop_btn: gr.update(visible=True)}

    async def _viewed(self, turn: TurnRequest) -> Updates:
        """The chat area showing what the page has open now."""
        conversations = self.ctx.services.conversations
        viewed = conversations.viewed(turn.session_key)
        if viewed is None:
            return {self.chatbot: []}
        try:
            conversation = await conversations.open(turn.owner_key, viewed)
        except StorageError:  # deleted meanwhile, or unreadable: leave the area as it is
            return {}
        return {self.chatbot: to_display(conversation.messages)}

    # ---- handlers ------------------------------------------------------------------------

    async def ask(
        self,
        action: Literal["send", "retry"],
        message: str | None,
        conversation_id: str | None,
        model: str,
        system_prompt: str,
        temperature: float,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> AsyncIterator[Updates]:
        """Send the composer's message, or ask the last question again ("retry")."""
        visitor = self.ctx.visitor(browser_value, profile, request)
        settings = (model, system_prompt, temperature)
        turn = self._request(
            visitor, request, conversation_id, settings, user_text=message or "", action=action
        )
        async with contextlib.aclosing(self._run(turn, clear_input=action == "send")) as frames:
            async for updates in frames:
                yield updates

    async def edit(
        self,
        conversation_id: str | None,
        model: str,
        system_prompt: str,
        temperature: float,
        browser_value: Any,
        edit_data: gr.EditData,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> AsyncIterator[Updates]:
        visitor = self.ctx.visitor(browser_value, profile, request)
        if conversation_id is None:
            refuse("Only your own messages can be edited.")
        conversation = await self.ctx.services.conversations.open(
            visitor.owner_key, conversation_id
        )
        shown = to_display(conversation.messages)
        position = edit_data.index if isinstance(edit_data.index, int) else edit_data.index[0]
        nth_user = sum(1 for m in shown[: position + 1] if m["role"] == "user") - 1
        text = edit_data.value if isinstance(edit_data.value, str) else str(edit_data.value)
        turn = self._request(
            visitor,
            request,
            conversation_id,
            (model, system_prompt, temperature),
            user_text=text,
            action="edit",
            edit_index=nth_user,
        )
        async with contextlib.aclosing(self._run(turn, clear_input=False)) as frames:
            async for updates in frames:
                yield updates

    async def undo(
        self,
        conversation_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        if conversation_id is None:
            return unchanged()
        visitor = self.ctx.visitor(browser_value, profile, request)
        updated, last_text = await self.ctx.services.conversations.undo(
            visitor.owner_key, conversation_id
        )
        updates: Updates = {self.chatbot: to_display(updated.messages)}
        if last_text is not None:
            updates[self.textbox] = last_text
        return updates

    def stop(self, request: gr.Request) -> None:
        self.ctx.services.conversations.stop(request.session_hash or "")

    def new_chat(self, request: gr.Request) -> Updates:
        self.ctx.services.conversations.view(session_of(request), None)
        return {
            self.chatbot: [],
            self.ctx.conversation_id: None,
            self.sidebar.conversation_list: gr.update(value=None),
        }

    async def open_conversation(
        self,
        conversation_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        if not conversation_id:
            return unchanged()
        visitor = self.ctx.visitor(browser_value, profile, request)
        conversations = self.ctx.services.conversations
        conversation = await conversations.open(visitor.owner_key, conversation_id)
        conversations.view(session_of(request), conversation.id)
        return {
            self.chatbot: to_display(conversation.messages),
            self.ctx.conversation_id: conversation.id,
            self.model: conversation.model,
            self.system_prompt: conversation.system_prompt,
            self.temperature: min(conversation.temperature, TEMPERATURE_SLIDER_MAX),
        }

    async def load_catalog(self) -> Updates:
        catalog = self.ctx.services.catalog
        catalog.refresh_in_background()
        task = catalog.pending_refresh
        if task is not None:
            await asyncio.wait({task}, timeout=CATALOG_WAIT_ON_LOAD_S)
        return {
            self.model: gr.update(choices=catalog.choices([self.ctx.settings.default_model])),
            self.catalog_status: catalog_status(self.ctx),
        }

    # ---- wiring --------------------------------------------------------------------------

    def wire(self, demo: gr.Blocks, sidebar: SidebarPanel) -> None:
        """Connect the chat's events; `sidebar` is updated when a chat appears or changes."""
        self.sidebar = sidebar
        ctx = self.ctx
        turn_settings = [self.model, self.system_prompt, self.temperature]
        turn_outputs = [
            self.chatbot,
            ctx.conversation_id,
            self.textbox,
            self.send_btn,
            self.stop_btn,
            *sidebar.list_outputs,
        ]
        state_in = [ctx.conversation_id, *turn_settings, ctx.browser_state]
        ask = shown_as_toast(self.ask)
        gr.on(
            [self.textbox.submit, self.send_btn.click],
            ask,
            inputs=[gr.State("send"), self.textbox, *state_in],
            outputs=turn_outputs,
            **STREAMING,
        )
        self.chatbot.retry(
            ask,
            inputs=[gr.State("retry"), gr.State(None), *state_in],
            outputs=turn_outputs,
            **STREAMING,
        )
        self.chatbot.edit(
            shown_as_toast(self.edit), inputs=state_in, outputs=turn_outputs, **STREAMING
        )
        self.chatbot.undo(
            shown_as_toast(self.undo),
            inputs=[ctx.conversation_id, ctx.browser_state],
            outputs=[self.chatbot, self.textbox],
            **QUICK,
        )
        self.stop_btn.click(self.stop, queue=False, api_visibility="private")
        demo.unload(self.stop)  # a closed page stops its answer even before the next token
        gr.on(
            [sidebar.new_btn.click, self.chatbot.clear],
            self.new_chat,
            outputs=[self.chatbot, ctx.conversation_id, sidebar.conversation_list],
            js=CLOSE_SIDEBAR_IF_NARROW_JS,
            **QUICK,
        )
        sidebar.conversation_list.input(
            shown_as_toast(self.open_conversation),
            inputs=[sidebar.conversation_list, ctx.browser_state],
            outputs=[self.chatbot, ctx.conversation_id, *turn_settings],
            js=CLOSE_SIDEBAR_IF_NARROW_JS,
            **QUICK,
        )
        demo.load(self.load_catalog, outputs=[self.model, self.catalog_status], **STREAMING)
