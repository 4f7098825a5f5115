"""Visitors' own OpenRouter keys: validation against `GET /key`, and masking for display."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from chatlib import errors
from chatlib.logging import OPENROUTER_KEY_SHAPE

MAX_KEY_LENGTH = 200


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
