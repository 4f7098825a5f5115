"""The chat: messages, the composer, Stop, retry/edit/undo, and the model settings beside it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

import gradio as gr

from chatlib import attachments as attachment_rules
from chatlib.attachment_links import link_path, seat_from_cookie_header
from chatlib.attachments import Attachment, AttachmentLimits, AttachmentRef, data_url
from chatlib.catalog import ModelFilter, model_choices
from chatlib.config import TEMPERATURE_SLIDER_MAX
from chatlib.conversations import ConversationFrame, ConversationService, TurnRequest
from chatlib.errors import StorageError
from chatlib.live import LiveAnswer
from chatlib.options import MAX_ANSWER_TOKENS, REASONING_EFFORTS, AnswerOptions
from chatlib.visitors import Visitor
from ui.assets import CLOSE_SIDEBAR_IF_NARROW_JS, SHOW_ADDRESS_JS
from ui.context import QUICK, STREAMING, PageContext, session_of
from ui.display import Link, conversation_display, to_display, without_attachments
from ui.errors import refuse, shown_as_toast, unchanged, warn
from ui.models import ModelPicker
from ui.sidebar import SidebarPanel

Updates = dict[Any, Any]
LATEX_DELIMITERS: list[dict[str, str | bool]] = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
]


VIEW_CHECK_S = 0.25  # how soon a page that opened another chat stops drawing this one
# What the composer offers to attach (the server decides by content anyway).
ATTACHMENT_FILE_TYPES = ["image", ".pdf", ".txt", ".md", ".csv", ".json"]
EMPTY_COMPOSER: dict[str, Any] = {"text": "", "files": []}
EFFORT_CHOICES = [(effort.capitalize(), effort) for effort in REASONING_EFFORTS]
BAD_MAX_TOKENS = (
    f"Invalid max_tokens (max answer length): expected a whole number of tokens from 1 to "
    f"{MAX_ANSWER_TOKENS:,}, or nothing for the model's default."
)


def answer_options(
    web_search: object, reasoning_effort: object, max_tokens: object
) -> AnswerOptions | None:
    """The options a page or an API caller asked for (None: all unsaid, the chat's own).

    Values come from the browser or any JSON: a wrong one is refused, naming it. The chat
    service checks again and sends the effort only to models that take reasoning. (The
    page's number box cannot be empty: its handlers pass 0 as None, the model's default.)
    """
    if web_search is None and reasoning_effort is None and max_tokens is None:
        return None
    if web_search is not None and not isinstance(web_search, bool):
        refuse("Invalid web_search: expected true or false.")
    wanted = reasoning_effort or "off"
    effort = next((e for e in REASONING_EFFORTS if e == wanted), None)
    if effort is None:
        refuse(f"Invalid reasoning_effort: expected one of {', '.join(REASONING_EFFORTS)}.")
    tokens: int | None = None
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int | float):
            refuse(BAD_MAX_TOKENS)
        if not math.isfinite(max_tokens) or max_tokens != int(max_tokens):
            refuse(BAD_MAX_TOKENS)
        tokens = int(max_tokens)
        if not 1 <= tokens <= MAX_ANSWER_TOKENS:
            refuse(BAD_MAX_TOKENS)
    return AnswerOptions(web_search=bool(web_search), reasoning_effort=effort, max_tokens=tokens)


def _read_and_prepare(path: str, limits: AttachmentLimits) -> Attachment:
    """One uploaded file, read and checked by its bytes (blocking: run in a thread)."""
    return attachment_rules.prepare(os.path.basename(path), Path(path).read_bytes(), limits)


async def read_attachments(
    paths: Sequence[str], limits: AttachmentLimits
) -> tuple[Attachment, ...]:
    """Uploaded files as attachments: sizes checked first, then each read and prepared.

    Raises AttachmentRejected (an InputError) naming the file and the limit. Reading,
    decoding and downscaling run in threads: a 20 MB photo must not stall other streams.
    """
    if not paths:
        return ()
    sizes = await asyncio.to_thread(
        lambda: [(os.path.basename(p), os.path.getsize(p)) for p in paths]
    )
    attachment_rules.check_sizes(sizes, limits)
    prepared = [asyncio.to_thread(_read_and_prepare, path, limits) for path in paths]
    return tuple(await asyncio.gather(*prepared))


async def _while_viewing(
    frames: AsyncIterator[ConversationFrame],
    conversations: ConversationService,
    session_key: str | None,
    shown_id: str,
) -> AsyncIterator[ConversationFrame | None]:
    """`frames` while the page shows `shown_id`; then None, once, if it opened another chat.

    Checked between frames too, so a page that moved on is released at once even while the
    answer waits for a slow token.
    """
    pending: asyncio.Task[ConversationFrame | None] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(frames, None))
            await asyncio.wait({pending}, timeout=VIEW_CHECK_S)
            if not conversations.is_viewing(session_key, shown_id):
                yield None
                return
            if not pending.done():
                continue
            frame, pending = pending.result(), None
            if frame is None:
                return
            yield frame
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending


def composed(message: dict[str, Any] | str | None) -> tuple[str, list[str]]:
    """(text, uploaded file paths) of the composer's value."""
    if isinstance(message, dict):
        files = [str(f) for f in message.get("files") or [] if isinstance(f, str)]
        return str(message.get("text") or ""), files
    return message or "", []


def _fresh(link: Link | None, frame: ConversationFrame) -> Link | None:
    """Links for a frame: pictures the model is drawing are inline until the answer is saved.

    They reach the store with the answer's save, so until then a private link would find
    nothing; the frame carries their bytes.
    """
    if frame.done or not frame.files or link is None:
        return link
    stored_link = link

    def inline_or_stored(ref: AttachmentRef) -> str:
        data = frame.files.get(ref.sha256)
        if data is not None and ref.kind == "image":
            return data_url(ref, data)
        return stored_link(ref)

    return inline_or_stored


def turn_request(
    ctx: PageContext,
    visitor: Visitor,
    request: gr.Request | None,
    conversation_id: str | None,
    turn_settings: tuple[str, str, float],
    **what: Any,
) -> TurnRequest:
    """The one request of a turn from the page: the visitor's identity, key and rate key."""
    model, system_prompt, temperature = turn_settings
    return TurnRequest(
        owner_key=visitor.owner_key,
        conversation_id=conversation_id,
        user_text=what.pop("user_text", ""),
        model=(model or ctx.settings.default_model).strip(),
        system_prompt=system_prompt or "",
        temperature=temperature,
        api_key=visitor.api_key,
        session_key=session_of(request),
        rate_key=visitor.rate_key,
        logged_in=visitor.logged_in,
        **what,
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
            autoscroll=False,  # static/chat.js follows new text only while at the bottom
        )
        self._render_other_model()
        with gr.Row(elem_id="composer", equal_height=True):
            self.textbox = gr.MultimodalTextbox(
                show_label=False,
                placeholder="Message… (Enter to send, Shift+Enter for a new line)",
                lines=1,
                max_lines=12,
                scale=8,
                autofocus=bool(ctx.settings.openrouter_api_key),
                elem_id="message-input",
                # Upload button and drag-drop; a picture pasted into the box is attached too.
                sources=["upload"],
                file_count="multiple",
                file_types=ATTACHMENT_FILE_TYPES,
                submit_btn=False,  # the Send button beside it sends
                # Long pasted text stays text (the counter judges it), not a pasted_text.txt.
                max_plain_text_length=10 * ctx.settings.max_input_chars + 1000,
            )
            self.send_btn = gr.Button(
                "Send", variant="primary", scale=1, min_width=80, elem_id="send-btn"
            )
            self.stop_btn = gr.Button(
                "Stop", variant="stop", scale=1, min_width=80, visible=False, elem_id="stop-btn"
            )
        # "Search the web" sits by the composer: it is chosen per message, like ChatGPT's.
        with gr.Row(elem_id="composer-options"):
            self.web_search = gr.Checkbox(
                value=AnswerOptions().web_search,
                label="Search the web",
                info="The answer lists the pages it used; searches add to its cost.",
                container=False,
                elem_id="web-search",
            )
        # The open chat's address (?c=<id>) for the page's script, and its way to ask for a
        # chat (back/forward). Only ids: every handler checks the owner again.
        self.address = gr.Textbox(visible="hidden", elem_id="chat-address")
        self.open_request = gr.Textbox(visible="hidden", elem_id="open-request")
        self.open_go = gr.Button(visible="hidden", elem_id="open-request-go")
        # "‹ 2/3 ›" under a message: the script sends "<message index>:<step>" here.
        self.version_request = gr.Textbox(visible="hidden", elem_id="version-request")
        self.version_go = gr.Button(visible="hidden", elem_id="version-request-go")
        # "↻ Other model" under an answer: the script sends the question's number here.
        self.other_request = gr.Textbox(visible="hidden", elem_id="other-model-request")
        self.other_go = gr.Button(visible="hidden", elem_id="other-model-go")

    def _render_other_model(self) -> None:
        """The chooser "↻ Other model" opens: a model list, Retry and Cancel (hidden till then)."""
        default = self.ctx.settings.default_model
        with gr.Row(visible=False, elem_id="other-model-row", equal_height=True) as row:
            self.other_row = row
            self.other_model = gr.Dropdown(
                choices=model_choices(self.ctx.services.catalog.models, ModelFilter(), [default]),
                value=default,
                label="Ask again with",
                allow_custom_value=True,
                filterable=True,
                scale=6,
                elem_id="other-model-picker",
            )
            self.other_retry = gr.Button(
                "Retry", variant="primary", scale=1, min_width=80, elem_id="other-model-retry"
            )
            self.other_cancel = gr.Button(
                "Cancel", scale=1, min_width=80, elem_id="other-model-cancel"
            )
        # Which question the chooser is for (its number among the questions, from 0).
        self.other_nth = gr.State(None)

    def render_settings(self) -> None:
        """The model picker, answer options, system prompt and temperature (the right column)."""
        settings = self.ctx.settings
        self.model_picker = ModelPicker(self.ctx)
        self.model = self.model_picker.dropdown
        # Right under the model: the effort comes and goes with it (the system prompt and
        # temperature are set less often).
        self._render_answer_options()
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

    def _render_answer_options(self) -> None:
        """Reasoning effort (for models that reason) and the answer's length.

        Web search, the third answer option, is by the composer (see `__init__`).
        """
        defaults = AnswerOptions()
        with gr.Group(elem_id="answer-options"):
            self.reasoning_effort = gr.Radio(
                EFFORT_CHOICES,
                value=defaults.reasoning_effort,
                label="Reasoning effort",
                info="How long the model thinks before answering.",
                visible=self.model_picker.takes_reasoning(self.ctx.settings.default_model),
                elem_id="reasoning-effort",
            )
            self.max_tokens = gr.Number(
                value=defaults.max_tokens or 0,  # Gradio's box shows 0 for "no number" anyway
                label="Max answer length (tokens)",
                info="0 means the model's default; a number cuts the answer off there.",
                precision=0,
                elem_id="max-tokens",
            )
        self.options = [self.web_search, self.reasoning_effort, self.max_tokens]

    # ---- a turn, drawn -------------------------------------------------------------------

    def _page_options(
        self, model: str, web_search: object, reasoning_effort: object, max_tokens: object
    ) -> AnswerOptions | None:
        """The options the page's controls show for a turn with `model`.

        The box says 0 for "the model's default"; an effort the page hides (the model does
        not think, or is not in the catalog) is not asked for: what is sent is what is shown.
        """
        if not self.model_picker.takes_reasoning(model or self.ctx.settings.default_model):
            reasoning_effort = None if reasoning_effort is None else "off"
        return answer_options(web_search, reasoning_effort, max_tokens or None)

    def _links(self, owner_key: str, request: gr.Request | None) -> Link | None:
        """Private links to `owner_key`'s files for the browser behind `request`.

        Signed for that browser's seat cookie (set by chatlib.attachment_route on page
        loads), so they open nowhere else; without one, files are shown by name only.
        """
        cookie = request.headers.get("cookie") if request is not None else None
        seat = seat_from_cookie_header(cookie)
        if seat is None:
            return None
        secret = self.ctx.services.server_secret
        return lambda ref: link_path(secret, owner_key, ref, seat, time.time())

    async def _run(
        self,
        turn: TurnRequest,
        link: Link | None,
        *,
        clear_input: bool,
        also: Updates | None = None,
    ) -> AsyncGenerator[Updates]:
        """Start the turn as a live answer and follow it on this page (`also` with its first).

        The answer runs on the server whatever the page does: closing or reloading the tab
        only stops following it (a reloaded page attaches again); Stop stops it.
        """
        live = await self.ctx.services.live.start(turn)
        self.ctx.services.conversations.view(turn.session_key, live.conversation_id)
        extra: Updates = {self.textbox: dict(EMPTY_COMPOSER)} if clear_input else {}
        extra.update(also or {})
        if turn.conversation_id is None:  # a new chat appears in the list at once
            extra.update(await self.sidebar.refreshed(turn.owner_key, live.conversation_id))
        async with contextlib.aclosing(
            self._follow(live, turn.owner_key, turn.session_key, extra, link)
        ) as frames:
            async for updates in frames:
                yield updates

    async def _follow(
        self,
        live: LiveAnswer,
        owner_key: str,
        session_key: str | None,
        first: Updates,
        link: Link | None,
    ) -> AsyncGenerator[Updates]:
        """Draw a live answer's frames while this page shows its chat; `first` goes along once.

        Leaving (another chat opened, a new chat, the page closed) ends this, not the answer.
        """
        conversations = self.ctx.services.conversations
        shown_id = live.conversation_id
        async with contextlib.aclosing(live.follow()) as frames:
            async for frame in _while_viewing(frames, conversations, session_key, shown_id):
                if frame is None:  # switched away: redraw what is open now, so it wins
                    yield await self._viewed(owner_key, session_key, link)
                    return
                shown = conversation_display(frame.conversation, _fresh(link, frame))
                updates: Updates = {**first, self.chatbot: shown}
                first = {}
                if frame.done and frame.notes:  # e.g. older attachments left out
                    gr.Info(" ".join(frame.notes))
                if frame.save_error is not None and not frame.done:
                    warn(frame.save_error)
                if not frame.done:
                    # Said in every frame: a browser that merges frames arriving together
                    # keeps the last one's, and Stop must stay on screen.
                    yield {**updates, **self._shown_id(shown_id), **self._buttons(True)}
                    continue
                if frame.save_error is not None:
                    warn(frame.save_error)
                yield {
                    **updates,
                    **self._buttons(False),
                    **await self.sidebar.refreshed(owner_key, shown_id),
                }

    def _shown_id(self, conversation_id: str | None) -> Updates:
        """The chat this page shows: for the handlers (state) and the address bar (script)."""
        return {self.ctx.conversation_id: conversation_id, self.address: conversation_id or ""}

    def _buttons(self, streaming: bool) -> Updates:
        """Stop shown and Send hidden while an answer streams in the chat on screen."""
        return {
            self.send_btn: gr.update(visible=not streaming),
            self.stop_btn: gr.update(visible=streaming),
        }

    async def _viewed(self, owner_key: str, session_key: str | None, link: Link | None) -> Updates:
        """The chat area (and Stop) as the chat this page has open now is."""
        conversations = self.ctx.services.conversations
        viewed = conversations.viewed(session_key)
        if viewed is None:
            return {self.chatbot: [], **self._buttons(False)}
        live = self.ctx.services.live.find(owner_key, viewed)
        if live is not None:
            return {
                self.chatbot: conversation_display(live.latest.conversation, link),
                **self._buttons(True),
            }
        try:
            conversation = await conversations.open(owner_key, viewed)
        except StorageError:  # deleted meanwhile, or unreadable: leave the area as it is
            return unchanged()
        return {self.chatbot: conversation_display(conversation, link), **self._buttons(False)}

    # ---- handlers ------------------------------------------------------------------------

    async def ask(
        self,
        action: Literal["send", "retry"],
        message: dict[str, Any] | str | None,
        conversation_id: str | None,
        model: str,
        system_prompt: str,
        temperature: float,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
        web_search: bool | None = None,
        reasoning_effort: str | None = None,
        max_tokens: float | None = None,
    ) -> AsyncIterator[Updates]:
        """Send the composer's message and files, or ask the last question again ("retry").

        A refusal (a file too large or of the wrong kind, a picture for a model that cannot
        see) is a toast naming the limit; the text and the files stay in the box. The
        answer options come last (after Gradio's request and profile); unsaid, the chat's.
        """
        visitor = self.ctx.visitor(browser_value, profile, request)
        settings = (model, system_prompt, temperature)
        options = self._page_options(model, web_search, reasoning_effort, max_tokens)
        text, paths = composed(message)
        attachments = await read_attachments(paths, self.ctx.settings.attachment_limits)
        turn = turn_request(
            self.ctx,
            visitor,
            request,
            conversation_id,
            settings,
            user_text=text,
            action=action,
            attachments=attachments,
            options=options,
        )
        link = self._links(visitor.owner_key, request)
        running = self._run(turn, link, clear_input=action == "send")
        async with contextlib.aclosing(running) as frames:
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
        web_search: bool | None = None,
        reasoning_effort: str | None = None,
        max_tokens: float | None = None,
    ) -> AsyncIterator[Updates]:
        """Ask an edited question in place of the one shown (the old one stays a version)."""
        visitor = self.ctx.visitor(browser_value, profile, request)
        options = self._page_options(model, web_search, reasoning_effort, max_tokens)
        if conversation_id is None:
            refuse("Only your own messages can be edited.")
        conversation = await self.ctx.services.conversations.open(
            visitor.owner_key, conversation_id
        )
        shown = to_display(conversation.messages)
        position = edit_data.index if isinstance(edit_data.index, int) else edit_data.index[0]
        nth_user = sum(1 for m in shown[: position + 1] if m["role"] == "user") - 1
        text = edit_data.value if isinstance(edit_data.value, str) else str(edit_data.value)
        text = without_attachments(text)
        turn = turn_request(
            self.ctx,
            visitor,
            request,
            conversation_id,
            (model, system_prompt, temperature),
            user_text=text,
            action="edit",
            edit_index=nth_user,
            options=options,
        )
        link = self._links(visitor.owner_key, request)
        async with contextlib.aclosing(self._run(turn, link, clear_input=False)) as frames:
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
        link = self._links(visitor.owner_key, request)
        updates: Updates = {self.chatbot: conversation_display(updated, link)}
        if last_text is not None:
            updates[self.textbox] = last_text
        return updates

    async def stop(
        self,
        conversation_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> None:
        """Stop the answer being written in the chat on screen (from any page of its owner)."""
        if not conversation_id:
            return
        visitor = self.ctx.visitor(browser_value, profile, request)
        self.ctx.services.live.stop(visitor.owner_key, conversation_id)

    def new_chat(self, request: gr.Request) -> Updates:
        self.ctx.services.conversations.view(session_of(request), None)
        return {
            self.chatbot: [],
            **self._shown_id(None),
            self.sidebar.conversation_list: gr.update(value=None),
            **self._buttons(False),
            **self._options_shown(AnswerOptions()),  # a new chat starts from the defaults
            self.other_row: gr.update(visible=False),
        }

    def _options_shown(self, options: AnswerOptions, model: str | None = None) -> Updates:
        """The answer options' controls set as `options` say (a chat's saved ones).

        With `model`, the effort is shown or hidden for it too (a chat's model may be the
        one already picked, and then the picker says no change).
        """
        effort: Any = options.reasoning_effort
        if model is not None:
            effort = gr.update(value=effort, visible=self.model_picker.takes_reasoning(model))
        return {
            self.web_search: options.web_search,
            self.reasoning_effort: effort,
            self.max_tokens: options.max_tokens or 0,
        }

    def effort_shown(self, model: str | None) -> Updates:
        """The reasoning effort is offered for models the catalog says can think."""
        return {self.reasoning_effort: gr.update(visible=self.model_picker.takes_reasoning(model))}

    async def open_conversation(
        self,
        conversation_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> AsyncGenerator[Updates]:
        """Show one of the visitor's chats; an answer still being written there goes on live."""
        if not conversation_id:
            yield unchanged()
            return
        visitor = self.ctx.visitor(browser_value, profile, request)
        conversations = self.ctx.services.conversations
        live = self.ctx.services.live.find(visitor.owner_key, conversation_id)
        conversation = (
            live.latest.conversation
            if live is not None
            else await conversations.open(visitor.owner_key, conversation_id)
        )
        conversations.view(session_of(request), conversation.id)
        link = self._links(visitor.owner_key, request)
        shown: Updates = {
            self.chatbot: conversation_display(conversation, link),
            **self._shown_id(conversation.id),
            self.model: conversation.model,
            self.system_prompt: conversation.system_prompt,
            self.temperature: min(conversation.temperature, TEMPERATURE_SLIDER_MAX),
            **self._options_shown(conversation.options, conversation.model),
            self.sidebar.conversation_list: gr.update(value=conversation.id),
            self.other_row: gr.update(visible=False),
        }
        if live is None:
            yield {**shown, **self._buttons(False)}
            return
        follow = self._follow(live, visitor.owner_key, session_of(request), shown, link)
        async with contextlib.aclosing(follow) as frames:
            async for updates in frames:
                yield updates

    def _quiet_visitor(
        self,
        conversation_id: str,
        then: str,
        browser_value: Any,
        profile: gr.OAuthProfile | None,
        request: gr.Request,
    ) -> Visitor:
        """The caller, refused while an answer is still being written in their chat."""
        visitor = self.ctx.visitor(browser_value, profile, request)
        if self.ctx.services.live.find(visitor.owner_key, conversation_id) is not None:
            refuse(f"Wait for the answer to finish, then {then}.")
        return visitor

    async def switch_version(
        self,
        request_text: str,
        conversation_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        """Show another version of a question or an answer (and what follows it)."""
        found = re.fullmatch(r"(\d{1,6}):(-1|1)", (request_text or "").strip())
        if found is None or not conversation_id:
            refuse("This message has no other version.")
        visitor = self._quiet_visitor(
            conversation_id, "switch versions", browser_value, profile, request
        )
        switched = await self.ctx.services.conversations.switch_version(
            visitor.owner_key, conversation_id, int(found[1]), int(found[2])
        )
        link = self._links(visitor.owner_key, request)
        return {self.chatbot: conversation_display(switched, link)}

    async def offer_other_model(
        self,
        request_text: str,
        conversation_id: str | None,
        model: str,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        """ "↻ Other model" under an answer: show the chooser for that question."""
        found = re.fullmatch(r"\d{1,6}", (request_text or "").strip())
        if found is None or not conversation_id:
            refuse("This answer cannot be asked again.")
        self._quiet_visitor(
            conversation_id, "ask again with another model", browser_value, profile, request
        )
        nth = int(found[0])
        chosen = (model or self.ctx.settings.default_model).strip()
        catalog = self.ctx.services.catalog
        return {
            self.other_nth: nth,
            self.other_model: gr.update(
                choices=model_choices(catalog.models, ModelFilter(), [chosen]),
                value=chosen,
                label=f"Ask question {nth + 1} again with",
            ),
            self.other_row: gr.update(visible=True),
        }

    async def retry_other_model(
        self,
        nth: int | None,
        other_model: str,
        conversation_id: str | None,
        system_prompt: str,
        temperature: float,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
        web_search: bool | None = None,
        reasoning_effort: str | None = None,
        max_tokens: float | None = None,
    ) -> AsyncIterator[Updates]:
        """Ask the chosen question again with `other_model`; the old answer stays a version.

        The chat goes on with that model (the picker shows it), as a chat does after any turn.
        """
        if nth is None or not conversation_id:
            refuse("This answer cannot be asked again.")
        if not isinstance(other_model, str) or not other_model.strip():
            refuse("Choose a model first.")
        visitor = self.ctx.visitor(browser_value, profile, request)
        chosen = other_model.strip()
        options = self._page_options(chosen, web_search, reasoning_effort, max_tokens)
        turn = turn_request(
            self.ctx,
            visitor,
            request,
            conversation_id,
            (chosen, system_prompt, temperature),
            action="retry",
            edit_index=nth,
            options=options,
        )
        link = self._links(visitor.owner_key, request)
        also = {self.other_row: gr.update(visible=False), self.model: chosen}
        running = self._run(turn, link, clear_input=False, also=also)
        async with contextlib.aclosing(running) as frames:
            async for updates in frames:
                yield updates

    async def open_from_address(
        self, browser_value: Any, request: gr.Request, profile: gr.OAuthProfile | None
    ) -> AsyncIterator[Updates]:
        """A page opened at a chat's address (?c=<id>, a reload or a bookmark) shows that chat."""
        wanted = request.query_params.get("c") if request is not None else None
        if not wanted:
            yield unchanged()
            return
        opened = self.open_conversation(wanted, browser_value, request, profile)
        async with contextlib.aclosing(opened) as frames:
            async for updates in frames:
                yield updates

    # ---- wiring --------------------------------------------------------------------------

    def wire(self, demo: gr.Blocks, sidebar: SidebarPanel) -> None:
        """Connect the chat's events; `sidebar` is updated when a chat appears or changes."""
        self.sidebar = sidebar
        ctx = self.ctx
        turn_settings = [self.model, self.system_prompt, self.temperature]
        turn_outputs = [
            self.chatbot,
            ctx.conversation_id,
            self.address,
            self.textbox,
            self.send_btn,
            self.stop_btn,
            *sidebar.list_outputs,
        ]
        state_in = [ctx.conversation_id, *turn_settings, ctx.browser_state, *self.options]
        self._wire_turns(state_in, turn_outputs)
        self._wire_other_model(turn_outputs)
        self.open_outputs = [*turn_outputs, *turn_settings, *self.options, self.other_row]
        self._wire_navigation(sidebar)
        self.model_picker.wire(demo)
        self.model.change(
            self.effort_shown, inputs=self.model, outputs=self.reasoning_effort, **QUICK
        )

    def _wire_other_model(self, turn_outputs: list[Any]) -> None:
        """ "↻ Other model" under an answer: the chooser, then its Retry (or Cancel)."""
        ctx = self.ctx
        self.other_go.click(
            shown_as_toast(self.offer_other_model),
            inputs=[self.other_request, ctx.conversation_id, self.model, ctx.browser_state],
            outputs=[self.other_nth, self.other_model, self.other_row],
            trigger_mode="multiple",
            **QUICK,
        )
        self.other_retry.click(
            shown_as_toast(self.retry_other_model),
            inputs=[
                self.other_nth,
                self.other_model,
                ctx.conversation_id,
                self.system_prompt,
                self.temperature,
                ctx.browser_state,
                *self.options,
            ],
            outputs=[*turn_outputs, self.other_row, self.model],
            **STREAMING,
        )
        self.other_cancel.click(lambda: gr.update(visible=False), outputs=self.other_row, **QUICK)

    def _wire_turns(self, state_in: list[Any], turn_outputs: list[Any]) -> None:
        """Send, retry, edit, undo and Stop."""
        ctx = self.ctx
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
        identity = [ctx.conversation_id, ctx.browser_state]
        self.stop_btn.click(
            shown_as_toast(self.stop), inputs=identity, queue=False, api_visibility="private"
        )

    def _wire_navigation(self, sidebar: SidebarPanel) -> None:
        """New chat, opening a chat (list, back/forward), versions, and the address bar."""
        ctx = self.ctx
        gr.on(
            [sidebar.new_btn.click, self.chatbot.clear],
            self.new_chat,
            outputs=[
                self.chatbot,
                ctx.conversation_id,
                self.address,
                sidebar.conversation_list,
                self.send_btn,
                self.stop_btn,
                *self.options,
                self.other_row,
            ],
            js=CLOSE_SIDEBAR_IF_NARROW_JS,
            **QUICK,
        )
        opening: dict[str, Any] = {
            "outputs": self.open_outputs,
            "trigger_mode": "multiple",  # a page following one chat may open another
            **STREAMING,
        }
        open_chat = shown_as_toast(self.open_conversation)
        sidebar.conversation_list.input(
            open_chat,
            inputs=[sidebar.conversation_list, ctx.browser_state],
            js=CLOSE_SIDEBAR_IF_NARROW_JS,
            **opening,
        )
        # Back/forward: the page's script asks for the chat of the address it went to.
        self.open_go.click(open_chat, inputs=[self.open_request, ctx.browser_state], **opening)
        self.version_go.click(
            shown_as_toast(self.switch_version),
            inputs=[self.version_request, ctx.conversation_id, ctx.browser_state],
            outputs=[self.chatbot],
            trigger_mode="multiple",
            **QUICK,
        )
        ctx.conversation_id.change(
            lambda shown: shown or "", inputs=ctx.conversation_id, outputs=self.address, **QUICK
        )
        self.address.change(None, inputs=self.address, js=SHOW_ADDRESS_JS)
