"""The conversation list: new chat, search, switch, rename, delete, and the login move offer."""

from __future__ import annotations

import html
import time
from typing import Any

import gradio as gr

from chatlib.conversations import summary_label
from chatlib.visitors import BrowserIdentity
from ui.context import QUICK, PageContext, session_of
from ui.errors import refuse, shown_as_toast

Updates = dict[Any, Any]
LISTED_CHATS = 200  # the sidebar's length: reading and drawing it stays cheap at any count


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
        self.notice = gr.Markdown(visible=False, elem_id="storage-notice")
        with gr.Group(visible=False, elem_id="migrate-row") as self.migrate_row:
            gr.Markdown(
                "You have conversations from before you logged in. Move them into your "
                "account? (Nothing is merged without asking.)"
            )
            self.move_btn = gr.Button("Move them to my account", size="sm")
            self.keep_btn = gr.Button("Keep them separate", size="sm")
        with gr.Accordion("Manage this chat", open=False, elem_id="manage"):
            self.rename_box = gr.Textbox(
                label="Rename", placeholder="New name", max_lines=1, elem_id="rename-box"
            )
            self.rename_btn = gr.Button("Rename", size="sm")
            self.delete_btn = gr.Button("Delete this chat", size="sm", variant="stop")
            with gr.Group(visible=False, elem_id="confirm-delete") as self.confirm_row:
                self.confirm_text = gr.Markdown()
                self.confirm_btn = gr.Button("Yes, delete it", size="sm", variant="stop")
                self.cancel_btn = gr.Button("Cancel", size="sm")

    @property
    def list_outputs(self) -> list[Any]:
        """What `refreshed` updates."""
        return [self.conversation_list, self.notice]

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
        choices = [(summary_label(s, now), s.id) for s in shown]
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

    async def rename(
        self,
        title: str,
        conversation_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        if conversation_id is None:
            refuse("Send a message first, then rename the chat.")
        visitor = self.ctx.visitor(browser_value, profile, request)
        renamed = await self.ctx.services.conversations.rename(
            visitor.owner_key, conversation_id, title
        )
        gr.Info(f"Renamed to “{renamed.title}”.")
        return {self.rename_box: "", **await self.refreshed(visitor.owner_key, conversation_id)}

    async def ask_delete(
        self,
        conversation_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        if conversation_id is None:
            refuse("There is no saved chat to delete here.")
        visitor = self.ctx.visitor(browser_value, profile, request)
        conversation = await self.ctx.services.conversations.open(
            visitor.owner_key, conversation_id
        )
        return {
            self.confirm_row: gr.update(visible=True),
            self.confirm_text: f"Delete **{html.escape(conversation.title)}**? "
            "This cannot be undone.",
        }

    async def confirm_delete(
        self,
        conversation_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        hidden = {self.confirm_row: gr.update(visible=False)}
        if conversation_id is None:
            return hidden
        visitor = self.ctx.visitor(browser_value, profile, request)
        conversations = self.ctx.services.conversations
        title = (await conversations.open(visitor.owner_key, conversation_id)).title
        await conversations.delete(visitor.owner_key, conversation_id)
        conversations.view(session_of(request), None)
        gr.Info(f"Deleted “{title}”.")
        return {
            **hidden,
            self.chat_area: [],
            self.ctx.conversation_id: None,
            **await self.refreshed(visitor.owner_key, None),
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
        gr.on(
            [self.rename_btn.click, self.rename_box.submit],
            shown_as_toast(self.rename),
            inputs=[self.rename_box, ctx.conversation_id, *identity],
            outputs=[self.rename_box, *self.list_outputs],
            **QUICK,
        )
        self.delete_btn.click(
            shown_as_toast(self.ask_delete),
            inputs=[ctx.conversation_id, *identity],
            outputs=[self.confirm_row, self.confirm_text],
            **QUICK,
        )
        self.cancel_btn.click(lambda: gr.update(visible=False), outputs=[self.confirm_row], **QUICK)
        self.confirm_btn.click(
            shown_as_toast(self.confirm_delete),
            inputs=[ctx.conversation_id, *identity],
            outputs=[self.confirm_row, chat_area, ctx.conversation_id, *self.list_outputs],
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
