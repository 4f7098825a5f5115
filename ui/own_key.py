"""A visitor's own OpenRouter key: paste, check (rate-limited), use, forget.

By default the key is held on the server for this page session only and forgotten when the
page closes; ticking "remember" keeps it in the browser's local storage instead.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gradio as gr
import structlog

from chatlib.client import attribution_headers
from chatlib.keys import check_key, clean_key, mask_key
from chatlib.visitors import BrowserIdentity
from ui.assets import NO_KEY_NOTICE_BYOK
from ui.context import QUICK, PageContext, session_of
from ui.errors import refuse, shown_as_toast

Updates = dict[Any, Any]
log = structlog.get_logger(__name__)
REMEMBER_INFO = (
    "Keeps the key in this browser's local storage, where anyone using this browser profile "
    "can read it. Unticked, it is forgotten when you close or reload the page."
)


class KeyNotice:
    """The "no key configured" explanation at the top; shown until a key is available."""

    def __init__(self, ctx: PageContext) -> None:
        self.ctx = ctx
        self.markdown = gr.Markdown(
            NO_KEY_NOTICE_BYOK, elem_id="key-notice", visible=not ctx.settings.openrouter_api_key
        )

    def update(self, has_own_key: bool) -> Any:
        return gr.update(visible=not (self.ctx.settings.openrouter_api_key or has_own_key))


class OwnKeyPanel:
    """The "Your OpenRouter key" box in the settings column (absent when keys are not allowed)."""

    def __init__(self, ctx: PageContext, notice: KeyNotice) -> None:
        self.ctx = ctx
        self.notice = notice
        settings = ctx.settings
        with gr.Column(visible=settings.user_keys_allowed):
            self.status = gr.Markdown(elem_id="byok-status")
            with gr.Accordion(
                "Your OpenRouter key", open=not settings.openrouter_api_key, elem_id="byok"
            ):
                self.key_box = gr.Textbox(
                    label="API key",
                    type="password",
                    placeholder="sk-or-...",
                    max_lines=1,
                    elem_id="byok-key",
                )
                self.remember = gr.Checkbox(
                    label="Remember on this device", info=REMEMBER_INFO, elem_id="byok-remember"
                )
                with gr.Row():
                    self.use_btn = gr.Button("Use my key", size="sm")
                    self.forget_btn = gr.Button("Forget my key", size="sm")

    def shown(self, own_key: str | None, *, remembered: bool = False) -> Updates:
        """Status line and notice for whichever own key is in use (None: the operator's)."""
        settings = self.ctx.settings
        if own_key and settings.user_keys_allowed:
            where = "remembered on this device" if remembered else "for this page only"
            status = f"Using your key {mask_key(own_key)} for your messages ({where})."
        elif settings.openrouter_api_key:
            status = "Using the operator's key."
            if settings.user_keys_allowed:
                status += " Paste your own to use it instead."
        else:
            status = "No key yet: paste yours to start chatting."
        return {
            self.status: status,
            self.notice.markdown: self.notice.update(bool(own_key)),
        }

    async def use_key(
        self,
        raw_key: str,
        remember: bool,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        ctx = self.ctx
        settings, services = ctx.settings, ctx.services
        if not settings.user_keys_allowed:
            refuse("This app uses the operator's key only: visitors' own keys are turned off.")
        visitor = ctx.visitor(browser_value, profile, request)
        # Each check is a request to OpenRouter from the app's address: count it twice.
        await services.limiter.check(
            visitor.rate_key, logged_in=visitor.logged_in, doing="checking a key"
        )
        await services.limiter.check_key_check(visitor.rate_key)
        key = clean_key(raw_key)
        status = await check_key(
            settings.openrouter_base_url,
            key,
            timeout=settings.connect_timeout_seconds,
            headers=attribution_headers(settings),
        )
        session = session_of(request)
        identity = BrowserIdentity.ensure(browser_value)
        if remember or not session:
            services.session_keys.forget(session)
            identity = replace(identity, api_key=key)
        elif session:
            services.session_keys.set(session, key)
            identity = replace(identity, api_key=None)
        shown = self.shown(key, remembered=bool(remember))
        return {
            **shown,
            ctx.browser_state: identity.to_value(),
            self.key_box: "",
            self.status: f"{status.describe()} {shown[self.status]}",
        }

    def forget_key(self, browser_value: Any, request: gr.Request) -> Updates:
        self.ctx.services.session_keys.forget(session_of(request))
        identity = replace(BrowserIdentity.ensure(browser_value), api_key=None)
        return {self.ctx.browser_state: identity.to_value(), **self.shown(None)}

    def forget_session(self, request: gr.Request) -> None:
        """The page closed: a key kept for it only is dropped."""
        self.ctx.services.session_keys.forget(session_of(request))

    def wire(self, demo: gr.Blocks) -> None:
        state = self.ctx.browser_state
        self.use_btn.click(
            shown_as_toast(self.use_key),
            inputs=[self.key_box, self.remember, state],
            outputs=[state, self.key_box, self.status, self.notice.markdown],
            **QUICK,
        )
        self.forget_btn.click(
            self.forget_key,
            inputs=[state],
            outputs=[state, self.status, self.notice.markdown],
            **QUICK,
        )
        demo.unload(self.forget_session)
