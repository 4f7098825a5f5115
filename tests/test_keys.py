"""Bring-your-own-key: validation against OpenRouter and masking."""

from __future__ import annotations

import pytest

from chatlib import errors
from chatlib.client import attribution_headers
from chatlib.config import Settings
from chatlib.keys import check_key, clean_key, mask_key
from tests.fakes.openrouter import FakeOpenRouter


async def test_a_good_key_shows_remaining_credit(fake: FakeOpenRouter) -> None:
    status = await check_key(fake.base_url, "sk-or-v1-visitor-123456789", timeout=5)
    assert status.describe() == "Key accepted: $7.50 of $10.00 credit left."
    assert fake.requests[-1].headers["authorization"] == "Bearer sk-or-v1-visitor-123456789"


async def test_checking_a_key_on_a_space_names_the_app(fake: FakeOpenRouter) -> None:
    space = {"SPACE_ID": "alice/chat", "SPACE_HOST": "alice-chat.hf.space"}
    headers = attribution_headers(Settings.from_env(space, env_file=None))
    await check_key(fake.base_url, "sk-or-v1-visitor-123456789", timeout=5, headers=headers)
    sent = fake.requests[-1].headers
    assert sent["http-referer"] == "https://alice-chat.hf.space"
    assert sent["x-title"] == "OpenRouter Chat"
    assert sent["authorization"] == "Bearer sk-or-v1-visitor-123456789"


async def test_a_free_tier_key_says_so(fake: FakeOpenRouter) -> None:
    status = await check_key(fake.base_url, "sk-or-v1-free-123456789", timeout=5)
    assert status.is_free_tier
    assert "free tier" in status.describe()


async def test_a_rejected_key_is_explained_without_echoing_it(fake: FakeOpenRouter) -> None:
    with pytest.raises(errors.AuthenticationFailed) as caught:
        await check_key(fake.base_url, "sk-or-v1-invalid-123456789", timeout=5)
    assert "sk-or-v1-invalid" not in str(caught.value)


async def test_unreachable_openrouter_is_a_clear_error() -> None:
    with pytest.raises(errors.ProviderUnavailable):
        await check_key("http://127.0.0.1:9/api/v1", "sk-or-v1-x-123456789", timeout=2)


def test_masking_keeps_only_a_recognisable_hint() -> None:
    assert mask_key("sk-or-v1-abcdefghijklmnop") == "sk-or-…mnop"
    assert mask_key("short") == "••••••••"


def test_pasted_junk_is_refused_before_any_request() -> None:
    with pytest.raises(errors.InputError):
        clean_key("   ")
    with pytest.raises(errors.InputError):
        clean_key("sk-or v1 with spaces")
    assert clean_key("  sk-or-v1-abc \n") == "sk-or-v1-abc"
    # Anything else is refused: a visitor cannot make the app treat a word as a secret.
    for junk in ("chat.started", "openai/gpt-4o", "x" * 40, "sk-or-v1-abc<script>"):
        with pytest.raises(errors.InputError, match="start with sk-or-"):
            clean_key(junk)
