"""What every panel shares: settings, services, the visitor's stored state, who is asking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from chatlib.config import Settings
from chatlib.services import Services
from chatlib.visitors import BrowserIdentity, Visitor, identify
from ui.errors import refuse

# Private events: not part of the public API page, no progress overlay.
QUICK: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}
# Answers stream for as long as they take: no queue concurrency limit.
STREAMING: dict[str, Any] = {**QUICK, "concurrency_limit": None}


def client_address(request: gr.Request | None) -> tuple[str | None, list[str]]:
    """The socket peer and every X-Forwarded-For header line, as the request carries them."""
    if request is None:
        return None, []
    peer = request.client.host if request.client else None
    return peer, request.headers.getlist("x-forwarded-for")


@dataclass
class PageContext:
    """Settings, services and the page-wide state components (filled in by `ui.page`)."""

    settings: Settings
    services: Services
    browser_state: gr.BrowserState
    # The id of the conversation this page shows (None: a new, empty chat). Only an id: every
    # handler loads the conversation again by the caller's identity.
    conversation_id: gr.State
    # Whether this page session presented the operator token (kept on the server).
    operator_ok: gr.State

    def visitor(
        self, browser_value: Any, profile: gr.OAuthProfile | None, request: gr.Request | None
    ) -> Visitor:
        """Who is asking: their stored identity, HF login (if any) and client address."""
        identity = BrowserIdentity.from_value(browser_value)
        if identity is None:
            refuse("The page is still loading. Try again in a moment.")
        peer, forwarded = client_address(request)
        return identify(
            self.services.server_secret,
            identity,
            profile,
            peer=peer,
            forwarded_for=forwarded,
            trusted_proxies=self.services.trusted_proxies,
            # Enforced here, whatever the browser's stored state says (ALLOW_USER_KEYS).
            user_keys_allowed=self.settings.user_keys_allowed,
            session_api_key=self.services.session_keys.get(session_of(request)),
        )

    async def count_request(self, visitor: Visitor, doing: str) -> None:
        """Imports and exports write files: they share the visitor's chat allowance."""
        await self.services.limiter.check(
            visitor.rate_key, logged_in=visitor.logged_in, doing=doing
        )


def session_of(request: gr.Request | None) -> str | None:
    """The Gradio session of a request (one per open page)."""
    return request.session_hash if request is not None else None
