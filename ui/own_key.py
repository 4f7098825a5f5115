"""A visitor's own OpenRouter key: paste, check, use, forget (kept in their browser only)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gradio as gr

from chatlib.client import attribution_headers
from chatlib.config import Settings
from chatlib.keys import check_key, clean_key, mask_key
from chatlib.visitors import BrowserIdentity
from ui.assets import NO_KEY_NOTICE_BYOK
from ui.context import QUICK, PageContext
from ui.errors import shown_as_toast

Updates = dict[Any, Any]


def key_status(settings: Settings, identity: BrowserIdentity | None) -> str:
    """Whose key this visitor's messages use."""
    if identity is not None and identity.api_key:
        return f"Using your key {mask_key(identity.api_key)} for your messages."
    if settings.openrouter_api_key:
        return "Using the operator's key. Paste your own to use it instead."
    return "No key yet: paste yours to start chatting."


class KeyNotice:
    """The "no key configured" explanation at the top; shown until a key is available."""

    def __init__(self, ctx: PageContext) -> None:
        self.ctx = ctx
        self.markdown = gr.Markdown(
            NO_KEY_NOTICE_BYOK, elem_id="key-notice", visible=not ctx.settings.openrouter_api_key
        )

    def update(self, identity: BrowserIdentity | None) -> Any:
        has_key = self.ctx.settings.openrouter_api_key or (
            identity is not None and identity.api_key
        )
        return gr.update(visible=not has_key)


class OwnKeyPanel:
    """The "Your OpenRouter key" box in the settings column."""

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
                with gr.Row():
                    self.use_btn = gr.Button("Use my key", size="sm")
                    self.forget_btn = gr.Button("Forget my key", size="sm")

    def shown(self, identity: BrowserIdentity) -> Updates:
        """Status line and notice for a visitor's stored identity (page load)."""
        return {
            self.status: key_status(self.ctx.settings, identity),
            self.notice.markdown: self.notice.update(identity),
        }

    async def use_key(self, raw_key: str, browser_value: Any) -> Updates:
        settings = self.ctx.settings
        identity = BrowserIdentity.ensure(browser_value)
        key = clean_key(raw_key)
        status = await check_key(
            settings.openrouter_base_url,
            key,
            timeout=settings.connect_timeout_seconds,
            headers=attribution_headers(settings),
        )
        identity = replace(identity, api_key=key)
        return {
            self.ctx.browser_state: identity.to_value(),
            self.key_box: "",
            self.status: f"{status.describe()} Using {mask_key(key)} for your messages.",
            self.notice.markdown: self.notice.update(identity),
        }

    def forget_key(self, browser_value: Any) -> Updates:
        identity = replace(BrowserIdentity.ensure(browser_value), api_key=None)
        return {self.ctx.browser_state: identity.to_value(), **self.shown(identity)}

    def wire(self) -> None:
        state = self.ctx.browser_state
        self.use_btn.click(
            shown_as_toast(self.use_key),
            inputs=[self.key_box, state],
            outputs=[state, self.key_box, self.status, self.notice.markdown],
            **QUICK,
        )
        self.forget_btn.click(
            self.forget_key,
            inputs=[state],
            outputs=[state, self.status, self.notice.markdown],
            **QUICK,
        )
