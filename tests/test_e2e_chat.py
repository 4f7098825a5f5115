"""Browser journeys: the real app, real Chromium, the fake OpenRouter behind it."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import TEST_API_KEY, AppServer
from tests.fakes.openrouter import FakeOpenRouter, expected_reply
from tests.ui import (
    INPUT,
    bot_messages,
    last_answer,
    open_app,
    send,
    set_model,
    set_temperature,
    toast,
    user_messages,
    wait_until_idle,
)

pytestmark = pytest.mark.e2e


def test_answer_streams_in_with_its_cost_and_timing(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app_server.url)
    send(page, "Hello streaming world [[tokens=40]] [[rate=20]]")
    # While streaming: Stop is offered and part of the answer is already visible.
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_visible()
    expect(last_answer(page)).to_contain_text("Echo: Hello streaming world")
    partial = last_answer(page).inner_text()
    assert "w15" not in partial  # the full answer takes 2 s; we saw it grow
    wait_until_idle(page)
    answer = last_answer(page)
    expect(answer).to_contain_text(expected_reply("Hello streaming world", 40))
    expect(answer).to_contain_text("openai/gpt-4o")
    expect(answer).to_contain_text("40 tokens")
    expect(answer).to_contain_text("TTFT")
    expect(answer).to_contain_text("$0.")
    expect(page.locator(INPUT)).to_have_value("")
    # The operator key went upstream, and never into the page.
    assert fake.chat_requests()[-1].headers["authorization"] == f"Bearer {TEST_API_KEY}"
    assert TEST_API_KEY not in page.content()


def test_model_system_prompt_and_temperature_reach_upstream(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app_server.url)
    set_model(page, "mistralai/mistral-small-3.2-24b-instruct")
    page.locator("#system-prompt textarea").fill("You are a pirate.")
    set_temperature(page, 0.75)
    send(page, "Ahoy [[tokens=3]]")
    fake.wait_for_requests(1)
    wait_until_idle(page)
    body = fake.chat_requests()[-1].body
    assert body["model"] == "mistralai/mistral-small-3.2-24b-instruct"
    assert body["temperature"] == 0.75
    assert body["messages"][0] == {"role": "system", "content": "You are a pirate."}
    expect(last_answer(page)).to_contain_text("mistralai/mistral-small-3.2-24b-instruct")


def test_stop_keeps_the_partial_answer(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app_server.url)
    send(page, "Tell me a long story [[tokens=400]] [[rate=20]]")
    expect(last_answer(page)).to_contain_text("w3")
    page.get_by_role("button", name="Stop", exact=True).click()
    wait_until_idle(page)
    answer = last_answer(page)
    expect(answer).to_contain_text("stopped")
    expect(answer).to_contain_text("Echo: Tell me a long story")
    assert "w390" not in answer.inner_text()
    for _ in range(100):
        if fake.active_streams == 0:
            break
        page.wait_for_timeout(50)
    assert fake.active_streams == 0  # Stop really closed the upstream request


def test_retry_replaces_the_last_answer(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app_server.url)
    send(page, "Once [[tokens=4]]")
    expect(last_answer(page)).to_contain_text("TTFT")
    last_answer(page).hover()
    page.get_by_role("button", name="Retry").click()
    fake.wait_for_requests(2)
    wait_until_idle(page)
    expect(last_answer(page)).to_contain_text("Echo: Once")
    assert len(fake.chat_requests()) == 2
    assert fake.chat_requests()[-1].body["messages"][-1]["content"] == "Once [[tokens=4]]"
    expect(user_messages(page)).to_have_count(1)
    expect(bot_messages(page)).to_have_count(1)


def test_undo_puts_the_message_back_in_the_box(page: Page, app_server: AppServer) -> None:
    open_app(page, app_server.url)
    send(page, "First question [[tokens=3]]")
    expect(last_answer(page)).to_contain_text("TTFT")
    wait_until_idle(page)
    last_answer(page).hover()
    page.get_by_role("button", name="Undo").click()
    expect(user_messages(page)).to_have_count(0)
    expect(page.locator(INPUT)).to_have_value("First question [[tokens=3]]")


def test_editing_a_message_reruns_from_there(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app_server.url)
    send(page, "Question one [[tokens=3]]")
    expect(last_answer(page)).to_contain_text("TTFT")
    wait_until_idle(page)
    send(page, "Question two [[tokens=3]]")
    expect(last_answer(page)).to_contain_text("Echo: Question two")
    expect(last_answer(page)).to_contain_text("TTFT")
    wait_until_idle(page)
    user_messages(page).first.hover()
    page.get_by_role("button", name="Edit").first.click()
    editor = page.locator("#chat textarea").first
    editor.fill("Question uno [[tokens=3]]")
    page.locator("#chat").get_by_role("button", name="Submit").click()
    fake.wait_for_requests(3)
    wait_until_idle(page)
    expect(user_messages(page)).to_have_count(1)
    expect(last_answer(page)).to_contain_text("Echo: Question uno")
    sent = fake.chat_requests()[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["Question uno [[tokens=3]]"]


def test_out_of_credits_is_explained(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app_server.url)
    send(page, "Hi [[error=402]]")
    wait_until_idle(page)
    expect(last_answer(page)).to_contain_text("out of credits (402)")  # once, in the chat
    expect(last_answer(page)).to_contain_text("failed: out of credit")
    expect(page.locator(".toast-body")).to_have_count(0)


def test_midstream_failure_keeps_partial_answer_and_says_why(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app_server.url)
    send(page, "Break please [[tokens=20]] [[midstream_error=6]]")
    expect(last_answer(page)).to_contain_text("interrupted")
    wait_until_idle(page)
    answer = last_answer(page)
    expect(answer).to_contain_text(expected_reply("Break please", 6))
    expect(answer).to_contain_text("interrupted")
    expect(answer).to_contain_text("Provider disconnected")
    expect(page.locator(".toast-body")).to_have_count(0)  # said once, in the chat


def test_oversize_message_is_refused_and_kept(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app_server.url)
    send(page, "A first question [[tokens=3]]")
    expect(last_answer(page)).to_contain_text("TTFT")
    wait_until_idle(page)
    asked = len(fake.chat_requests())
    text = "x" * 8001
    send(page, text)
    # Refused in place before anything is sent (the server checks again: test_api).
    expect(page.locator("#message-counter .refusal")).to_contain_text("Too long: 8,001 of 8,000")
    expect(page.locator(INPUT)).to_have_value(text)
    # The conversation stays on screen, not hidden behind an error overlay.
    expect(user_messages(page).first).to_contain_text("A first question")
    expect(page.locator("#chat").get_by_text("Error", exact=True)).to_have_count(0)
    assert len(fake.chat_requests()) == asked


def test_without_a_key_the_page_explains_how_to_add_one(
    page: Page, app_factory: Callable[..., AppServer], fake: FakeOpenRouter
) -> None:
    keyless = app_factory("keyless", OPENROUTER_BASE_URL=fake.base_url)
    open_app(page, keyless.url)
    expect(page.locator("#key-notice")).to_contain_text("OPENROUTER_API_KEY")
    send(page, "Hello?")
    expect(toast(page, "Paste your own")).to_be_visible()
    expect(page.locator(INPUT)).to_have_value("Hello?")
    assert fake.chat_requests() == []
    # A visitor's own key: the explanation goes away and the message can be sent.
    page.locator("#byok-key input").fill("sk-or-v1-VISITOR0000key0000cafe1234")
    page.locator("#byok-remember input").check()  # kept after a reload
    page.get_by_role("button", name="Use my key").click()
    expect(page.locator("#byok-status")).to_contain_text("Key accepted")
    expect(page.locator("#key-notice")).to_be_hidden()
    page.get_by_role("button", name="Send", exact=True).click()
    expect(last_answer(page)).to_contain_text("Echo: Hello?")
    open_app(page, keyless.url)
    expect(page.locator("#byok-status")).to_contain_text("sk-or-…1234")
    expect(page.locator("#key-notice")).to_be_hidden()
    page.get_by_role("button", name="Forget my key").click()
    expect(page.locator("#key-notice")).to_be_visible()


def test_model_list_falls_back_when_the_catalog_is_down(
    page: Page, app_factory: Callable[..., AppServer], fake: FakeOpenRouter
) -> None:
    fake.catalog_mode = "error500"
    offline = app_factory(
        "offline-catalog", OPENROUTER_API_KEY=TEST_API_KEY, OPENROUTER_BASE_URL=fake.base_url
    )
    open_app(page, offline.url)
    expect(page.locator("#catalog-status")).to_contain_text("offline")
    page.locator("#model-picker input").click()
    expect(
        page.get_by_role("option").filter(has_text="anthropic/claude-sonnet-4.5")
    ).to_be_visible()


def test_live_catalog_shows_prices_and_free_models(page: Page, app_server: AppServer) -> None:
    open_app(page, app_server.url)
    expect(page.locator("#catalog-status")).to_contain_text("models from OpenRouter")
    picker = page.locator("#model-picker input")
    picker.click()
    picker.fill("gpt-4o")
    expect(page.get_by_role("option").filter(has_text="$2.50/$10 per M").first).to_be_visible()
    picker.fill(":free")
    expect(page.get_by_role("option").filter(has_text="free").first).to_be_visible()


def test_display_math_in_brackets_is_rendered(page: Page, app_server: AppServer) -> None:
    open_app(page, app_server.url)
    send(page, "Energy:\n\n\\[ E = mc^2 \\]\n\ndone [[tokens=3]]")
    wait_until_idle(page)
    expect(user_messages(page).last.locator(".katex-display")).to_have_count(1)


def test_on_a_phone_the_sidebar_gets_out_of_the_way(
    browser: Browser, app_server: AppServer
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        open_app(page, app_server.url)
        box = page.locator(INPUT).bounding_box()
        assert box is not None and box["y"] + box["height"] <= 844  # no scrolling to type
        sidebar = page.locator("#sidebar")
        expect(sidebar).not_to_have_class(re.compile(r"\bopen\b"))  # closed on arrival
        sidebar.locator(".toggle-button").click()
        expect(sidebar).to_have_class(re.compile(r"\bopen\b"))
        page.locator("#new-chat").click()
        expect(sidebar).not_to_have_class(re.compile(r"\bopen\b"))  # the chat is in view
    finally:
        context.close()
