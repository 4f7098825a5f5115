"""Bring-your-own-key: validation against OpenRouter, masking, and keys kept for a session."""

from __future__ import annotations

import threading

import pytest

from chatlib import errors
from chatlib.client import attribution_headers
from chatlib.config import Settings
from chatlib.keys import SessionKeys, check_key, clean_key, mask_key
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


KEY_A = "sk-or-v1-visitor-aaaaaaaaaaaa"
KEY_B = "sk-or-v1-visitor-bbbbbbbbbbbb"


def test_a_session_only_key_serves_that_page_and_is_gone_when_it_closes() -> None:
    keys = SessionKeys()
    keys.set("session-1", KEY_A)
    assert keys.get("session-1") == KEY_A
    assert keys.get("session-2") is None  # another page (or another visitor) has none
    keys.set("session-1", KEY_B)  # pasting a new key replaces the old one
    assert keys.get("session-1") == KEY_B
    assert keys.forget("session-1")
    assert keys.get("session-1") is None
    assert not keys.forget("session-1")
    assert keys.get(None) is None and not keys.forget(None)


def test_the_server_holds_a_bounded_number_of_session_keys() -> None:
    keys = SessionKeys(max_entries=3)
    for n in range(3):
        keys.set(f"s{n}", KEY_A)
    keys.get("s0")  # s0 was used just now: s1 is the least recently used
    keys.set("s3", KEY_B)
    assert len(keys) == 3
    assert keys.get("s1") is None
    assert keys.get("s0") == KEY_A and keys.get("s3") == KEY_B


def test_session_keys_hold_only_keys_and_never_show_them() -> None:
    keys = SessionKeys()
    with pytest.raises(ValueError, match="not an OpenRouter key"):
        keys.set("s", "chat.started")
    with pytest.raises(ValueError, match="session id"):
        keys.set("", KEY_A)
    keys.set("s", KEY_A)
    assert KEY_A not in repr(keys) and repr(keys) == "SessionKeys(1 held)"
    with pytest.raises(ValueError):
        SessionKeys(max_entries=0)


def test_many_pages_setting_keys_at_once_stay_within_the_bound() -> None:
    keys = SessionKeys(max_entries=100)

    def visitor(n: int) -> None:
        for i in range(200):
            keys.set(f"t{n}-{i}", KEY_A)
            keys.get(f"t{n}-{i // 2}")

    threads = [threading.Thread(target=visitor, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 100
