"""Visitors' own OpenRouter keys: validation against `GET /key`, masking for display, and
the keys kept for one page session only."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from chatlib import errors
from chatlib.logging import OPENROUTER_KEY_SHAPE

MAX_KEY_LENGTH = 200
# Open pages whose own key the server holds at once; past this the least recently used
# page forgets its key (the visitor pastes it again).
MAX_SESSION_KEYS = 20_000


@dataclass(frozen=True)
class KeyStatus:
    """What OpenRouter says about a key: its credit and tier."""

    limit_usd: float | None
    remaining_usd: float | None
    usage_usd: float | None
    is_free_tier: bool

    def describe(self) -> str:
        """One line for the settings panel."""
        if self.is_free_tier:
            return "Key accepted: free tier (free models only, with daily limits)."
        if self.limit_usd is None:
            used = f" (${self.usage_usd:.2f} used so far)" if self.usage_usd is not None else ""
            return f"Key accepted: no credit limit{used}."
        remaining = self.remaining_usd if self.remaining_usd is not None else 0.0
        return f"Key accepted: ${remaining:.2f} of ${self.limit_usd:.2f} credit left."


def mask_key(key: str) -> str:
    """Show enough of a key to recognise it, never enough to use it."""
    key = key.strip()
    if len(key) <= 12:
        return "•" * 8
    return f"{key[:6]}…{key[-4:]}"


def looks_like_key(value: object) -> bool:
    """Whether `value` has the shape of an OpenRouter key (and is not too long)."""
    if not isinstance(value, str) or len(value) > MAX_KEY_LENGTH:
        return False
    # The same shape the log redactor scrubs wherever it appears.
    return OPENROUTER_KEY_SHAPE.fullmatch(value) is not None


def clean_key(raw: str) -> str:
    """Trim a pasted key and refuse what cannot be one (before any network call)."""
    key = raw.strip()
    if not key:
        raise errors.InputError("Paste an OpenRouter key first (it starts with sk-or-).")
    if not looks_like_key(key):
        raise errors.InputError(
            "That does not look like an OpenRouter key (they start with sk-or- and have no spaces)."
        )
    return key


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


async def check_key(
    base_url: str, key: str, *, timeout: float, headers: Mapping[str, str] | None = None
) -> KeyStatus:
    """Ask OpenRouter about `key`; raise AuthenticationFailed or UpstreamError on failure.

    `headers` are sent too (the app's attribution: `client.attribution_headers`).
    """
    sent = {**(headers or {}), "Authorization": f"Bearer {key}"}
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.get(f"{base_url}/key", headers=sent)
    except httpx.HTTPError:
        raise errors.ProviderUnavailable(
            "Could not reach OpenRouter to check the key. Try again in a moment.",
            code="connection_error",
        ) from None
    if response.status_code in (401, 403):
        raise errors.AuthenticationFailed(
            "OpenRouter rejected this key (401). Check that you copied it whole.",
            status=response.status_code,
            code="invalid_key",
        )
    if response.status_code != 200:
        raise errors.UpstreamError(
            f"OpenRouter could not check the key ({response.status_code}). Try again later.",
            status=response.status_code,
        )
    try:
        data = orjson.loads(response.content).get("data") or {}
    except (orjson.JSONDecodeError, AttributeError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    return KeyStatus(
        limit_usd=_number(data.get("limit")),
        remaining_usd=_number(data.get("limit_remaining")),
        usage_usd=_number(data.get("usage")),
        is_free_tier=data.get("is_free_tier") is True,
    )


class SessionKeys:
    """Visitors' own keys held for one page session, in this process's memory only.

    A key the visitor did not ask to remember on this device lives here, under the Gradio
    session id, instead of in the browser's storage: it is gone when the page is closed
    (`forget`), when the process restarts, or when `max_entries` newer sessions pushed it
    out. Safe to call from several threads.
    """

    def __init__(self, max_entries: int = MAX_SESSION_KEYS) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._keys: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def set(self, session_id: str, key: str) -> None:
        """Hold `key` for `session_id` (replacing any earlier one); refuse what is no key."""
        if not session_id:
            raise ValueError("a session id is required")
        if not looks_like_key(key):
            raise ValueError("not an OpenRouter key")
        with self._lock:
            self._keys[session_id] = key
            self._keys.move_to_end(session_id)
            while len(self._keys) > self._max_entries:
                self._keys.popitem(last=False)

    def get(self, session_id: str | None) -> str | None:
        """The key held for `session_id`, or None."""
        if not session_id:
            return None
        with self._lock:
            key = self._keys.get(session_id)
            if key is not None:
                self._keys.move_to_end(session_id)
            return key

    def forget(self, session_id: str | None) -> bool:
        """Drop the key of `session_id` (the page closed, or the visitor removed it)."""
        if not session_id:
            return False
        with self._lock:
            return self._keys.pop(session_id, None) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def __repr__(self) -> str:
        return f"SessionKeys({len(self)} held)"  # never the keys
