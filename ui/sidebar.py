"""The conversation list: new chat, search, switch, each chat's ⋯ menu, the login move offer.

The ⋯ menu (ui/static/sidebar.js) sends one action at a time through a hidden textbox and
button, as JSON `{action, id, title?}`. That text is untrusted: it is parsed strictly here,
and every action looks the chat up again by the caller's identity.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import gradio as gr
import pydantic
import structlog

from chatlib.conversations import summary_label
from chatlib.storage import MAX_TITLE_CHARS, ConversationSummary, is_valid_conversation_id
from chatlib.visitors import BrowserIdentity
from ui.context import QUICK, PageContext, session_of
from ui.errors import refuse, shown_as_toast

if TYPE_CHECKING:
    from ui.transfer import TransferPanel

Updates = dict[Any, Any]
log = structlog.get_logger(__name__)
LISTED_CHATS = 200  # the sidebar's length: reading and drawing it stays cheap at any count
MAX_ACTION_CHARS = 4 * MAX_TITLE_CHARS + 200  # a rename's title (escaped) and the rest
IMPORTED_MARK = "⤓ imported"
# The menu's element ids (ui/static/sidebar.js uses them).
ACTION_BOX_ID = "chat-action"
ACTION_BUTTON_ID = "chat-action-send"
TITLES_ID = "conversation-titles"


class ChatAction(pydantic.BaseModel):
    """One ⋯ menu action, as the page sends it: nothing more, nothing less."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)

    action: Literal["rename", "delete", "export-json", "export-markdown"]
    id: str
    title: str | None = pydantic.Field(default=None, max_length=4 * MAX_TITLE_CHARS)

    @pydantic.field_validator("id")
    @classmethod
    def _an_id(cls, value: str) -> str:
        if not is_valid_conversation_id(value):
            raise ValueError("must be a conversation id (32 lowercase hex characters)")
        return value

    @pydantic.model_validator(mode="after")
    def _title_with_rename_only(self) -> ChatAction:
        if (self.action == "rename") != (self.title is not None):
            raise ValueError("a title comes with 'rename', and only with it")
        return self


def parse_action(payload: str) -> ChatAction:
    """The menu's action; refused (a toast naming the field and the rule) unless well formed."""
    if len(payload) > MAX_ACTION_CHARS:
        _refuse_action(f"it is {len(payload)} characters; the limit is {MAX_ACTION_CHARS}")
    try:
        return ChatAction.model_validate_json(payload)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the request"
        _refuse_action(f"{where}: {first['msg']}")


def _refuse_action(reason: str) -> NoReturn:
    log.info("sidebar.action_refused", reason=reason[:200])
    refuse(f"That chat action was refused ({reason[:200]}). Reload the page and try again.")


def sidebar_label(summary: ConversationSummary, now: float) -> str:
    """The list's line for a chat: `summary_label`, marked when the chat was imported."""
    label = summary_label(summary, now)
    return f"{label} · {IMPORTED_MARK}" if summary.imported_at is not None else label


class SidebarPanel:
    """Renders the list and its controls; `wire` connects them once the chat panel exists."""

    def __init__(self, ctx: PageContext) -> None:
        self.ctx = ctx
        if ctx.settings.login_enabled:
            gr.LoginButton()
        self.new_btn = gr.Button("+ New chat", variant="primary", elem_id="new-chat")
        self.search_box = gr.Textbox(
            placeholder="Search titles and messages",
            show_label=False,
            elem_id="conversation-search",
            max_lines=1,
        )
        self.conversation_list = gr.Radio(
            choices=[], show_label=False, elem_id="conversation-list", container=False
        )
        # For the ⋯ menus: each listed chat's plain title, by id (JSON).
        self.titles = gr.Textbox("{}", visible="hidden", elem_id=TITLES_ID, max_lines=1)
        # The menu's channel to the server (see ui/static/sidebar.js).
        self.action_box = gr.Textbox(visible="hidden", elem_id=ACTION_BOX_ID, max_lines=1)
        self.action_btn = gr.Button(visible="hidden", elem_id=ACTION_BUTTON_ID)
        self.notice = gr.Markdown(visible=False, elem_id="storage-notice")
        with gr.Group(visible=False, elem_id="migrate-row") as self.migrate_row:
            gr.Markdown(
                "You have conversations from before you logged in. Move them into your "
                "account? (Nothing is merged without asking.)"
            )
            self.move_btn = gr.Button("Move them to my account", size="sm")
            self.keep_btn = gr.Button("Keep them separate", size="sm")

    @property
    def list_outputs(self) -> list[Any]:
        """What `refreshed` updates."""
        return [self.conversation_list, self.notice, self.titles]

    async def refreshed(
        self, owner_key: str, selected: str | None, query: str = "", *, keep_selection: bool = False
    ) -> Updates:
        """The list (and its notice) as stored now, with `selected` highlighted.

        With `keep_selection` only the choices change: the page has moved to another chat.
        """
        listed = await self.ctx.services.conversations.list(
            owner_key, query.strip(), limit=LISTED_CHATS + 1
        )
        now = time.time()
        shown = listed.conversations[:LISTED_CHATS]
        choices = [(sidebar_label(s, now), s.id) for s in shown]
        notice = ""
        if len(listed.conversations) > LISTED_CHATS:
            notice = f"Showing your {LISTED_CHATS} most recent chats: search to find older ones."
        if listed.corrupt:
            notice = (
                f"⚠ {len(listed.corrupt)} conversation(s) could not be read (damaged files) "
                "and are not shown. Your other conversations are fine."
            )
        elif query.strip() and not choices:
            notice = "No chat matches your search."
        if keep_selection:
            chosen = gr.update(choices=choices)
        else:
            ids = {s.id for s in shown}
            chosen = gr.update(choices=choices, value=selected if selected in ids else None)
        return {
            self.conversation_list: chosen,
            self.notice: gr.update(value=notice, visible=bool(notice)),
            self.titles: json.dumps({s.id: s.title for s in shown}, ensure_ascii=False),
        }

    # ---- handlers ------------------------------------------------------------------------

    async def search(
        self,
        query: str,
        conversation_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        visitor = self.ctx.visitor(browser_value, profile, request)
        return await self.refreshed(visitor.owner_key, conversation_id, query)

    async def act(
        self,
        payload: str,
        open_id: str | None,
        query: str,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        """One ⋯ menu action on a listed chat; `open_id` is the chat the page shows."""
        action = parse_action(payload or "")
        if action.action == "rename":
            title = action.title or ""
            return await self.rename(title, action.id, browser_value, request, profile, query)
        if action.action == "delete":
            return await self.delete(action.id, open_id, browser_value, request, profile, query)
        what = "current" if action.action == "export-json" else "markdown"
        return await self.transfer.export(what, action.id, browser_value, request, profile)

    async def rename(
        self,
        title: str,
        conversation_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
        query: str = "",
    ) -> Updates:
        """Rename one of the caller's chats; the page stays on whatever chat it shows."""
        visitor = self.ctx.visitor(browser_value, profile, request)
        renamed = await self.ctx.services.conversations.rename(
            visitor.owner_key, conversation_id, title
        )
        gr.Info(f"Renamed to “{renamed.title}”.")
        return await self.refreshed(visitor.owner_key, None, query, keep_selection=True)

    async def delete(
        self,
        conversation_id: str,
        open_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
        query: str = "",
    ) -> Updates:
        """Delete one of the caller's chats (confirmed in the menu); if open, a new chat shows."""
        visitor = self.ctx.visitor(browser_value, profile, request)
        conversations = self.ctx.services.conversations
        title = (await conversations.open(visitor.owner_key, conversation_id)).title
        await conversations.delete(visitor.owner_key, conversation_id)
        gr.Info(f"Deleted “{title}”.")
        if conversation_id != open_id:
            return await self.refreshed(visitor.owner_key, None, query, keep_selection=True)
        conversations.view(session_of(request), None)
        return {
            self.chat_area: [],
            self.ctx.conversation_id: None,
            **await self.refreshed(visitor.owner_key, None, query),
        }

    async def move_anonymous(
        self, browser_value: Any, request: gr.Request, profile: gr.OAuthProfile | None
    ) -> Updates:
        visitor = self.ctx.visitor(browser_value, profile, request)
        if not visitor.logged_in:
            refuse("Log in first.")
        conversations = self.ctx.services.conversations
        moved = await conversations.move_all(visitor.anon_owner_key, visitor.owner_key)
        gr.Info(f"Moved {moved} conversation(s) into your account.")
        return {
            self.migrate_row: gr.update(visible=False),
            **await self.refreshed(visitor.owner_key, None),
        }

    def keep_separate(self, browser_value: Any) -> Updates:
        identity = BrowserIdentity.ensure(browser_value)
        kept = BrowserIdentity(identity.anon_id, identity.api_key, migration_declined=True)
        return {self.migrate_row: gr.update(visible=False), self.ctx.browser_state: kept.to_value()}

    async def migration_offer(self, logged_in: bool, anon_owner_key: str, declined: bool) -> Any:
        """Show the "move my anonymous chats" offer to a logged-in visitor who has some."""
        if not logged_in or declined:
            return gr.update(visible=False)
        has_any = await self.ctx.services.conversations.has_conversations(anon_owner_key)
        return gr.update(visible=has_any)

    # ---- wiring --------------------------------------------------------------------------

    def wire(self, chat_area: gr.Chatbot) -> None:
        """Connect the controls; `chat_area` is cleared when the open chat is deleted."""
        self.chat_area = chat_area
        ctx = self.ctx
        identity = [ctx.browser_state]
        self.search_box.change(
            shown_as_toast(self.search),
            inputs=[self.search_box, ctx.conversation_id, *identity],
            outputs=self.list_outputs,
            **QUICK,
        )
        self.move_btn.click(
            shown_as_toast(self.move_anonymous),
            inputs=identity,
            outputs=[self.migrate_row, *self.list_outputs],
            **QUICK,
        )
        self.keep_btn.click(
            self.keep_separate,
            inputs=identity,
            outputs=[self.migrate_row, ctx.browser_state],
            **QUICK,
        )

    def wire_menu(self, transfer: TransferPanel) -> None:
        """Connect the ⋯ menus' channel; exports go through `transfer` (downloaded at once)."""
        self.transfer = transfer
        ctx = self.ctx
        acted = self.action_btn.click(
            shown_as_toast(self.act),
            inputs=[self.action_box, ctx.conversation_id, self.search_box, ctx.browser_state],
            outputs=[
                self.chat_area,
                ctx.conversation_id,
                transfer.export_file,
                *self.list_outputs,
            ],
            trigger_mode="multiple",  # a second action sent before the first is done still runs
            **QUICK,
        )
        transfer.download_when_ready(acted)
