"""The whole page: panels assembled in their places, page-load events, launch arguments."""

from __future__ import annotations

import html
from dataclasses import replace
from typing import Any

import gradio as gr
import structlog
from starlette.middleware import Middleware

from chatlib.attachment_route import AttachmentRoute
from chatlib.config import Settings
from chatlib.request_guard import RequestGuard
from chatlib.services import Services
from chatlib.transfer import EXPORT_MAX_AGE_SECONDS
from chatlib.upload_guard import UploadGuard
from chatlib.upload_owners import UploadOwners
from chatlib.visitors import BrowserIdentity
from ui import api
from ui.assets import CLOSE_SIDEBAR_ON_PHONES_JS, CSS, SETTLE_ADDRESS_JS, head_html
from ui.chat import ChatPanel
from ui.compare import ComparePanel
from ui.context import QUICK, STREAMING, PageContext, session_of
from ui.errors import shown_as_toast
from ui.own_key import KeyNotice, OwnKeyPanel
from ui.sidebar import SidebarPanel
from ui.transfer import TransferPanel
from ui.usage import UsagePanel

Updates = dict[Any, Any]
log = structlog.get_logger(__name__)


def header(settings: Settings) -> str:
    """The title and one line about what the app does."""
    return (
        f"<div id='app-header' data-max-input-chars='{settings.max_input_chars}'>"
        f"<h1>{html.escape(settings.app_title)}</h1>"
        "<p>Chat with any model on OpenRouter. Answers stream live; cost is shown per "
        "message.</p></div>"
    )


class Page:
    """Every panel of the app, laid out and wired."""

    def __init__(self, settings: Settings, services: Services) -> None:
        with gr.Blocks(
            title=settings.app_title,
            fill_height=True,
            delete_cache=(600, int(EXPORT_MAX_AGE_SECONDS)),
        ) as self.demo:
            self.ctx = PageContext(
                settings=settings,
                services=services,
                browser_state=gr.BrowserState(
                    None,
                    storage_key=services.browser_storage_key,
                    secret=services.browser_secret,
                ),
                conversation_id=gr.State(None),
                operator_ok=gr.State(False),
            )
            # Filled once the visitor's identity is known (tests and scripts wait for it).
            self.session_ready = gr.HTML("", elem_id="session-ready", container=False)
            self._layout()
            self._wire()

    def _layout(self) -> None:
        ctx = self.ctx
        with gr.Sidebar(label="Conversations", open=True, width=300, elem_id="sidebar"):
            self.sidebar = SidebarPanel(ctx)
            self.transfer = TransferPanel(ctx, ctx.services.downloads_dir)
        gr.HTML(header(ctx.settings))
        self.key_notice = KeyNotice(ctx)
        with gr.Tabs():
            with gr.Tab("Chat", id="chat-tab"), gr.Row(equal_height=False):
                with gr.Column(scale=3, min_width=320):
                    self.chat = ChatPanel(ctx)
                    self.compare = ComparePanel(ctx)
                with gr.Column(scale=1, min_width=280):
                    self.chat.render_settings()
                    self.own_key = OwnKeyPanel(ctx, self.key_notice)
            with gr.Tab("Usage", id="usage-tab") as self.usage_tab:
                self.usage = UsagePanel(ctx)

    def _wire(self) -> None:
        self.chat.wire(self.demo, self.sidebar)
        self.compare.wire(self.chat, self.sidebar)
        self.sidebar.wire(self.chat.chatbot)
        self.transfer.wire(self.sidebar)
        self.own_key.wire(self.demo)
        self.usage.wire(self.usage_tab)
        self.demo.load(
            self.on_load,
            inputs=[self.ctx.browser_state],
            outputs=[
                self.ctx.browser_state,
                self.ctx.operator_ok,
                *self.sidebar.list_outputs,
                self.sidebar.migrate_row,
                self.own_key.status,
                self.key_notice.markdown,
                self.session_ready,
            ],
            concurrency_limit=None,
            **QUICK,
        ).then(
            # Opened at a chat's address (a reload, a bookmark): show that chat, and follow
            # its answer if one is still being written; then fix the address bar.
            shown_as_toast(self.chat.open_from_address),
            inputs=[self.ctx.browser_state],
            outputs=self.chat.open_outputs,
            **STREAMING,
        ).then(None, inputs=self.chat.address, js=SETTLE_ADDRESS_JS)
        api.wire(self.ctx)

    async def on_load(
        self,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        """A page opens: who is this, their chats, their key status, the operator link."""
        ctx = self.ctx
        identity, rejected = BrowserIdentity.parse(browser_value)
        if rejected is not None:
            log.info("identity.state_rejected", reason=rejected)  # a fresh identity instead
        if not ctx.settings.user_keys_allowed:
            identity = replace(identity, api_key=None)  # not even kept in the browser
        visitor = ctx.visitor(identity.to_value(), profile, request)
        ctx.services.conversations.view(session_of(request), None)
        token = request.query_params.get("operator") if request is not None else None
        return {
            ctx.browser_state: identity.to_value(),
            ctx.operator_ok: ctx.services.operator.check(token, visitor.rate_key),
            **await self.sidebar.refreshed(visitor.owner_key, None),
            self.sidebar.migrate_row: await self.sidebar.migration_offer(
                visitor.logged_in, visitor.anon_owner_key, identity.migration_declined
            ),
            **self.own_key.shown(identity.api_key, remembered=True),
            self.session_ready: "<span data-ready='1'></span>",
        }


def build(settings: Settings, services: Services) -> gr.Blocks:
    """The app's Blocks for these settings and services."""
    demo: gr.Blocks = Page(settings, services).demo
    return demo


def launch_kwargs(settings: Settings, services: Services) -> dict[str, Any]:
    """Arguments for `demo.launch()` derived from settings."""
    upload_guard = Middleware(
        UploadGuard,
        limiter=services.limiter,
        trusted_proxies=services.trusted_proxies,
        max_file_bytes=settings.max_upload_bytes,
    )
    request_guard = Middleware(RequestGuard, api_inputs=api.API_INPUTS)
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "max_threads": settings.max_concurrent_streams,
        "theme": gr.themes.Soft(primary_hue="indigo", neutral_hue="slate"),
        "css": CSS,
        "js": CLOSE_SIDEBAR_ON_PHONES_JS,
        "head": head_html(),
        "ssr_mode": False,
        "footer_links": ["api"],
        "share": settings.share,
        "show_error": False,
        # Uploads are only ever imports: anything much bigger is refused before it is stored,
        # and each client may upload only so often (UPLOADS_PER_MIN).
        "max_file_size": settings.max_upload_bytes,
        # Downloads (exports, the usage CSV) are written here; Gradio serves only files under
        # the working folder, its own cache or these (DATA_DIR may be elsewhere, e.g. /data).
        "allowed_paths": [str(services.downloads_dir)],
        # The first is outermost: a request that crashes the upload route is answered too.
        "app_kwargs": {
            "middleware": [
                request_guard,
                upload_guard,
                # Gradio's copy of an upload goes back to the browser that uploaded it only.
                Middleware(UploadOwners, trusted_proxies=services.trusted_proxies),
                # Private links to stored attachments, and the seat cookie they are signed for.
                Middleware(
                    AttachmentRoute,
                    secret=services.server_secret,
                    load=services.attachments.get,
                    embedded=settings.on_space,  # shown in a frame on huggingface.co
                ),
            ]
        },
    }
