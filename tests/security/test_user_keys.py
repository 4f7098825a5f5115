"""Breaks 1 and 2: visitors' keys when the operator turned them off, and the key-check oracle."""

from __future__ import annotations

import gradio as gr
import pytest

from chatlib.identity import new_anonymous_id
from tests.conftest import TEST_API_KEY, AppServer
from tests.fakes.openrouter import FakeOpenRouter
from tests.security.conftest import (
    ATTACKER_KEY,
    PageFactory,
    app_config,
    authorization_of_last_chat,
    fn_index,
    fn_index_by_label,
    http_from,
    queue_call,
    request,
    send,
    toasts,
    visitor_state,
)
from ui.errors import shown_as_toast

OPERATORS_KEY_ONLY = "operator's key only"


def key_requests(fake: FakeOpenRouter) -> list[object]:
    return [r for r in fake.requests if r.path.endswith("/key")]


# ---- break 1: ALLOW_USER_KEYS=false is enforced on the server ------------------------------


async def test_a_key_planted_in_the_stored_state_is_never_used(
    make_page: PageFactory, fake: FakeOpenRouter
) -> None:
    page = await make_page(ALLOW_USER_KEYS="false")
    crafted = visitor_state(api_key=ATTACKER_KEY)
    # Even a key the server still held for the page session (set before the operator turned
    # visitors' keys off) is not used.
    page.ctx.services.session_keys.set("attacker-page", ATTACKER_KEY)

    await send(page, crafted, "Bill this to my key [[tokens=2]]", session="attacker-page")

    assert authorization_of_last_chat(fake) == f"Bearer {TEST_API_KEY}"
    assert ATTACKER_KEY not in str(fake.chat_requests()[-1].headers)


async def test_a_planted_key_is_dropped_from_the_browser_when_the_page_loads(
    make_page: PageFactory,
) -> None:
    page = await make_page(ALLOW_USER_KEYS="false")
    crafted = visitor_state(api_key=ATTACKER_KEY)
    loaded = await page.on_load(crafted, request(), None)
    stored = loaded[page.ctx.browser_state]
    assert stored["anon_id"] == crafted["anon_id"]  # the visitor keeps their chats
    assert stored["api_key"] is None
    assert "operator's key" in loaded[page.own_key.status]


async def test_calling_the_hidden_key_event_in_process_is_refused_without_a_key_check(
    make_page: PageFactory, fake: FakeOpenRouter
) -> None:
    page = await make_page(ALLOW_USER_KEYS="false")
    use_key = shown_as_toast(page.own_key.use_key)
    with pytest.warns(UserWarning, match=OPERATORS_KEY_ONLY):
        result = await use_key(ATTACKER_KEY, True, visitor_state(), request(), None)
    assert result == gr.skip()
    assert key_requests(fake) == []


def test_a_crafted_stored_state_sent_to_the_real_app_is_billed_to_the_operator(
    security_app: AppServer, fake: FakeOpenRouter
) -> None:
    config = app_config(security_app)
    send_fn = fn_index(config, "message-input", "submit")
    crafted = {"anon_id": new_anonymous_id(), "api_key": ATTACKER_KEY}
    # Inputs: action (server state), message, chat id (server state), model, system prompt,
    # temperature, browser state, web search, reasoning effort, max answer length: exactly
    # what the page's JavaScript posts.
    message = {"text": "Use my key [[tokens=2]]", "files": []}
    data = [None, message, None, "openai/gpt-4o", "", 0.3, crafted, False, "off", 0]
    with http_from(security_app.url) as http:
        messages = queue_call(http, send_fn, data)
    assert messages[-1]["msg"] == "process_completed" and messages[-1]["success"]
    assert authorization_of_last_chat(fake) == f"Bearer {TEST_API_KEY}"


def test_the_private_key_event_of_the_real_app_refuses_a_direct_call(
    security_app: AppServer, fake: FakeOpenRouter
) -> None:
    config = app_config(security_app)
    use_key = fn_index_by_label(config, "Use my key", "click")
    with http_from(security_app.url) as http:
        messages = queue_call(http, use_key, [ATTACKER_KEY, True, visitor_state()])
    assert any(OPERATORS_KEY_ONLY in t for t in toasts(messages))
    assert key_requests(fake) == []  # no /key request: the app is no oracle here


# ---- break 2: key checks are limited ---------------------------------------------------------


async def test_the_fourth_key_check_in_a_minute_is_refused_and_never_reaches_openrouter(
    make_page: PageFactory, fake: FakeOpenRouter
) -> None:
    page = await make_page(
        ALLOW_USER_KEYS="true", KEY_CHECKS_PER_MIN="3", RATE_LIMIT_REQUESTS_PER_MIN="0"
    )
    use_key = shown_as_toast(page.own_key.use_key)
    stolen = [f"sk-or-v1-stolen{n:04d}0000000000000000" for n in range(4)]
    # The attacker clears their storage before each try: a new identity, the same address.
    for n, key in enumerate(stolen[:3]):
        checked = await use_key(key, False, visitor_state(), request(f"try-{n}"), None)
        assert "Key accepted" in checked[page.own_key.status]
    with pytest.warns(UserWarning, match=r"checking OpenRouter keys.*limit is 3 per minute"):
        refused = await use_key(stolen[3], False, visitor_state(), request("try-3"), None)
    assert refused == gr.skip()
    assert len(key_requests(fake)) == 3


async def test_key_checks_use_up_the_visitors_chat_allowance_too(
    make_page: PageFactory, fake: FakeOpenRouter
) -> None:
    page = await make_page(
        ALLOW_USER_KEYS="true", KEY_CHECKS_PER_MIN="3", RATE_LIMIT_REQUESTS_PER_MIN="4"
    )
    use_key = shown_as_toast(page.own_key.use_key)
    for n in range(3):
        await use_key(
            f"sk-or-v1-probe{n:04d}00000000000000", False, visitor_state(), request(), None
        )
    await send(page, visitor_state(), "One message left [[tokens=2]]")
    ask = shown_as_toast(page.chat.ask)
    with pytest.warns(UserWarning, match="too fast"):
        frames = [
            u
            async for u in ask(
                "send",
                "And one more",
                None,
                "openai/gpt-4o",
                "",
                0.3,
                visitor_state(),
                request(),
                None,
            )
        ]
    assert frames == [gr.skip()]
    assert len(fake.chat_requests()) == 1
