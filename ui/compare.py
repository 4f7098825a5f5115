"""Compare models: one message, two or three answers streaming side by side, one kept.

The columns stream together; each has its own Stop and, once its answer ended, "Continue
with this answer", which keeps that answer in the chat (the others stay as its versions,
‹ 2/3 ›) and shows the chat. The service does the work (ConversationService.compare); this
panel draws it.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from chatlib.attachments import AttachmentRef, data_url
from chatlib.catalog import ModelFilter, model_choices
from chatlib.compare import (
    MAX_COMPARE_MODELS,
    Column,
    CompareControl,
    CompareFrame,
    check_models,
)
from chatlib.live import BUSY
from chatlib.messages import format_answer_footer
from chatlib.visitors import Visitor
from ui.chat import (
    EMPTY_COMPOSER,
    LATEX_DELIMITERS,
    ChatPanel,
    answer_options,
    composed,
    read_attachments,
    turn_request,
)
from ui.context import QUICK, STREAMING, PageContext, session_of
from ui.display import TYPING, attachments_markdown, sources_html
from ui.errors import refuse, shown_as_toast, unchanged
from ui.sidebar import SidebarPanel

Updates = dict[Any, Any]
KEEP_WAIT_S = 30.0  # "Continue" while others stream: how long the stopped ones may take to save
THINKING = "_Thinking…_"


@dataclass
class _Running:
    """A comparison this page is running: its control, and its final frame once saved."""

    control: CompareControl
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    final: CompareFrame | None = None


class _Slot:
    """One column: the model, the answer, its footer, Stop and "Continue with this answer"."""

    def __init__(self, index: int) -> None:
        self.index = index
        with gr.Column(
            visible=False, min_width=0, elem_classes=["compare-column"], elem_id=f"compare-{index}"
        ) as self.column:
            self.model = gr.Markdown(
                elem_classes=["compare-model"], elem_id=f"compare-model-{index}"
            )
            self.answer = gr.Markdown(
                elem_classes=["compare-answer"],
                elem_id=f"compare-answer-{index}",
                latex_delimiters=LATEX_DELIMITERS,
            )
            self.footer = gr.Markdown(
                elem_classes=["compare-footer"], elem_id=f"compare-footer-{index}"
            )
            with gr.Row(equal_height=True):
                self.stop = gr.Button(
                    "Stop",
                    variant="stop",
                    size="sm",
                    visible=False,
                    elem_id=f"compare-stop-{index}",
                )
                self.keep = gr.Button(
                    "Continue with this answer",
                    size="sm",
                    interactive=False,
                    elem_id=f"compare-keep-{index}",
                )

    @property
    def components(self) -> list[Any]:
        return [self.column, self.model, self.answer, self.footer, self.stop, self.keep]

    def hidden(self) -> Updates:
        return {self.column: gr.update(visible=False)}

    def shown(self, column: Column, files: dict[str, bytes]) -> Updates:
        """The column as this answer stands: text as it arrives, the footer once it ended."""
        answer, meta = column.answer, column.answer.meta
        body = answer.content or (THINKING if answer.reasoning else "")
        if not body and not column.done:
            body = TYPING
        body += attachments_markdown(answer.attachments, _inline(files))
        if meta is not None and meta.sources:
            body += "\n\n" + sources_html(meta.sources)
        footer = ""
        if column.done and meta is not None:
            footer = html.escape(format_answer_footer(meta))
            if meta.error:
                footer = f"⚠️ {html.escape(meta.error)}\n\n{footer}"
        return {
            self.column: gr.update(visible=True),
            self.model: f"**{html.escape(column.model)}**",
            self.answer: body,
            self.footer: footer,
            self.stop: gr.update(visible=not column.done),
            self.keep: gr.update(interactive=column.done),
        }


def _asked(text: str, files: int) -> str:
    """The question over the columns (the chat shows it once the answers are saved)."""
    quoted = "\n".join(f"> {line}" for line in text.strip().splitlines()) or "> …"
    attached = f" ({files} file{'s' if files != 1 else ''} attached)" if files else ""
    return f"**You asked{attached}:**\n\n{quoted}"


def _inline(files: dict[str, bytes]) -> Any:
    """Pictures the models drew, shown from their bytes (the columns are not links to keep)."""

    def link(ref: AttachmentRef) -> str:
        data = files.get(ref.sha256)
        return data_url(ref, data) if data is not None and ref.kind == "image" else "#"

    return link


class ComparePanel:
    """ "Compare models": the models picked, a message box, and a column per model."""

    def __init__(self, ctx: PageContext) -> None:
        self.ctx = ctx
        # Comparisons running, by page session: Stop and Continue reach them here.
        self._running: dict[str, _Running] = {}
        with gr.Accordion("Compare models", open=False, elem_id="compare-panel") as self.panel:
            self.models = gr.Dropdown(
                choices=self._choices(),
                value=[],
                multiselect=True,
                max_choices=MAX_COMPARE_MODELS,
                label="Models to compare",
                info=f"Pick two or three ({MAX_COMPARE_MODELS} at most); each answer is billed.",
                filterable=True,
                elem_id="compare-models",
            )
            with gr.Row(elem_id="compare-composer", equal_height=True):
                self.textbox = gr.MultimodalTextbox(
                    show_label=False,
                    placeholder="One message, asked of every model picked…",
                    lines=1,
                    max_lines=8,
                    scale=8,
                    sources=["upload"],
                    file_count="multiple",
                    submit_btn=False,
                    elem_id="compare-input",
                )
                self.send_btn = gr.Button(
                    "Compare", variant="primary", scale=1, min_width=100, elem_id="compare-btn"
                )
            self.question = gr.Markdown(elem_id="compare-question")
            with gr.Row(elem_id="compare-columns", equal_height=False):
                self.slots = [_Slot(i) for i in range(MAX_COMPARE_MODELS)]
        # The last comparison's chat and answer position, for "Continue" once it is saved.
        self.last = gr.State(None)

    def _choices(self) -> list[tuple[str, str]]:
        """The model picker's choices (unfiltered), the default model first."""
        catalog = self.ctx.services.catalog
        return model_choices(catalog.models, ModelFilter(), [self.ctx.settings.default_model])

    def listed(self) -> Updates:
        """The models as the catalog lists them now (the panel was opened)."""
        return {self.models: gr.update(choices=self._choices())}

    def _columns(self, frame: CompareFrame) -> Updates:
        updates: Updates = {}
        files = dict(frame.files)
        for slot in self.slots:
            if slot.index < len(frame.columns):
                updates.update(slot.shown(frame.columns[slot.index], files))
            else:
                updates.update(slot.hidden())
        return updates

    def _all_hidden(self) -> Updates:
        return {k: v for slot in self.slots for k, v in slot.hidden().items()}

    # ---- handlers ------------------------------------------------------------------------

    async def compare(
        self,
        message: dict[str, Any] | str | None,
        models: list[str] | None,
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
        """Ask every picked model the message; the columns stream until all answers ended.

        The chat's settings beside it (system prompt, temperature, web search, reasoning,
        answer length) apply to every model.
        """
        visitor = self.ctx.visitor(browser_value, profile, request)
        options = answer_options(web_search, reasoning_effort, max_tokens or None)
        if conversation_id and self.ctx.services.live.find(visitor.owner_key, conversation_id):
            refuse(BUSY)
        text, paths = composed(message)
        attachments = await read_attachments(paths, self.ctx.settings.attachment_limits)
        # The model is not used: the picked models are asked.
        turn_settings = (self.ctx.settings.default_model, system_prompt, temperature)
        turn = turn_request(
            self.ctx,
            visitor,
            request,
            conversation_id,
            turn_settings,
            user_text=text,
            attachments=attachments,
            options=options,
        )
        chosen = check_models(models or [])
        running = _Running(CompareControl.for_columns(len(chosen)))
        frames = self.ctx.services.conversations.compare(turn, chosen, running.control)
        session = session_of(request) or ""
        self._running[session] = running
        try:
            async with contextlib.aclosing(frames) as compared:
                first: Updates = {
                    self.textbox: dict(EMPTY_COMPOSER),
                    self.question: _asked(text, len(attachments)),
                }
                async for frame in compared:
                    if not frame.done:
                        yield {**first, **self._columns(frame)}
                        first = {}
                        continue
                    running.final = frame
                    yield {**first, **await self._ended(frame, visitor, running.control)}
        finally:
            running.finished.set()
            if self._running.get(session) is running:
                del self._running[session]

    async def _ended(
        self, frame: CompareFrame, visitor: Visitor, control: CompareControl
    ) -> Updates:
        """The saved comparison: the chat shows it next; a column chosen meanwhile closes all."""
        if frame.save_error is not None:
            gr.Warning(frame.save_error.user_message)
        chat_id = frame.conversation.id
        columns = self._all_hidden() if control.chosen is not None else self._columns(frame)
        return {
            **columns,
            self.last: {"conversation_id": chat_id, "answer_index": frame.answer_index},
            self.ctx.conversation_id: chat_id,
            **await self.sidebar.refreshed(visitor.owner_key, chat_id),
        }

    def stop(self, index: int, request: gr.Request) -> None:
        """Stop one column's answer; the others go on."""
        running = self._running.get(session_of(request) or "")
        if running is not None and index < len(running.control.columns):
            running.control.columns[index].stop()

    async def keep(
        self,
        index: int,
        last: dict[str, Any] | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        """Keep column `index`'s answer in the chat; the others stay as its versions."""
        visitor = self.ctx.visitor(browser_value, profile, request)
        running = self._running.get(session_of(request) or "")
        if running is not None and not running.finished.is_set():
            running.control.keep(index)  # the others stop; the save makes this one active
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.finished.wait(), KEEP_WAIT_S)
            if running.final is None:
                refuse("The comparison is still being saved. Try again in a moment.")
            return self._kept(running.final.conversation.id)
        if not isinstance(last, dict) or not isinstance(last.get("conversation_id"), str):
            return unchanged()
        at = last.get("answer_index")
        if not isinstance(at, int):
            return unchanged()
        kept = await self.ctx.services.conversations.keep_answer(
            visitor.owner_key, last["conversation_id"], at, index + 1
        )
        return self._kept(kept.id)

    def _kept(self, conversation_id: str) -> Updates:
        """The columns close; the chat (opened next) shows the kept answer."""
        return {
            **self._all_hidden(),
            self.question: "",
            self.last: None,
            self.ctx.conversation_id: conversation_id,
        }

    # ---- wiring --------------------------------------------------------------------------

    def wire(self, chat: ChatPanel, sidebar: SidebarPanel) -> None:
        """Connect the panel; `chat` opens the conversation once a comparison is saved or kept."""
        self.sidebar = sidebar
        ctx = self.ctx
        slots = [c for slot in self.slots for c in slot.components]
        opened = {"outputs": chat.open_outputs, **STREAMING}
        open_chat = shown_as_toast(chat.open_conversation)
        show_chat = {"fn": open_chat, "inputs": [ctx.conversation_id, ctx.browser_state]}
        self.panel.expand(self.listed, outputs=[self.models], **QUICK)
        gr.on(
            [self.textbox.submit, self.send_btn.click],
            shown_as_toast(self.compare),
            inputs=[
                self.textbox,
                self.models,
                ctx.conversation_id,
                chat.system_prompt,
                chat.temperature,
                ctx.browser_state,
                *chat.options,
            ],
            outputs=[
                *slots,
                self.textbox,
                self.question,
                self.last,
                ctx.conversation_id,
                *sidebar.list_outputs,
            ],
            **STREAMING,
        ).then(**show_chat, **opened)
        for slot in self.slots:
            slot.stop.click(
                self.stop,
                inputs=[gr.State(slot.index)],
                queue=False,
                api_visibility="private",
            )
            slot.keep.click(
                shown_as_toast(self.keep),
                inputs=[gr.State(slot.index), self.last, ctx.browser_state],
                outputs=[*slots, self.question, self.last, ctx.conversation_id],
                **STREAMING,
            ).then(**show_chat, **opened)
