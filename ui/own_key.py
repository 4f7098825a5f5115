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
from ui.assets import OPERATOR_KEY_HELP
from ui.context import QUICK, PageContext, session_of
from ui.errors import refuse, shown_as_toast

Updates = dict[Any, Any]
log = structlog.get_logger(__name__)
REMEMBER_INFO = (
    "Keeps the key in this browser's local storage, where anyone using this browser profile "
    "can read it. Unticked, it is forgotten when you close or reload the page."
)


# Shown above the key box on a first run: the box is right below, and focused.
NO_KEY_NOTICE = f"""**No OpenRouter API key is configured yet, so messages cannot be sent.**

- **Visitor:** paste your own OpenRouter key in the box just below (get one at
  [openrouter.ai/keys](https://openrouter.ai/keys)). It is used for your messages only.
{OPERATOR_KEY_HELP}"""


class KeyFields:
    """The status line and the "Your OpenRouter key" box, rendered where they are made."""

    def __init__(self, *, first_run: bool) -> None:
        self.status = gr.Markdown(elem_id="byok-status")
        with gr.Accordion("Your OpenRouter key", open=first_run, elem_id="byok"):
            self.key_box = gr.Textbox(
                label="API key",
                type="password",
                placeholder="sk-or-...",
                max_lines=1,
                # On a first run the key is the one thing to do: the cursor starts here.
                autofocus=first_run,
                elem_id="byok-key",
            )
            self.remember = gr.Checkbox(
                label="Remember on this device", info=REMEMBER_INFO, elem_id="byok-remember"
            )
            with gr.Row():
                self.use_btn = gr.Button("Use my key", size="sm", elem_id="byok-use")
                self.forget_btn = gr.Button("Forget my key", size="sm", elem_id="byok-forget")


class KeyNotice:
    """The "no key configured" explanation at the top; shown until a key is available.

    With no operator key the visitor's key box is rendered here too, right under the notice
    (first on the page, on a phone as on a desktop), instead of in the settings column.
    """

    def __init__(self, ctx: PageContext) -> None:
        self.ctx = ctx
        self.fields: KeyFields | None = None
        first_run = not ctx.settings.openrouter_api_key
        with gr.Column(elem_id="key-first-run", visible=first_run):
            self.markdown = gr.Markdown(NO_KEY_NOTICE, elem_id="key-notice", visible=first_run)
            if first_run:
                self.fields = KeyFields(first_run=True)

    def update(self, has_own_key: bool) -> Any:
        return gr.update(visible=not (self.ctx.settings.openrouter_api_key or has_own_key))


class OwnKeyPanel:
    """A visitor's own key: at the top on a first run, else in the settings column.

    Absent when visitors' keys are not allowed.
    """

    def __init__(self, ctx: PageContext, notice: KeyNotice) -> None:
        self.ctx = ctx
        self.notice = notice
        fields = notice.fields
        if fields is None:
            with gr.Column(visible=ctx.settings.user_keys_allowed):
                fields = KeyFields(first_run=False)
        self.status = fields.status
        self.key_box = fields.key_box
        self.remember = fields.remember
        self.use_btn = fields.use_btn
        self.forget_btn = fields.forget_btn

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
