"""Journeys through the page shell: theme, keyboard shortcuts, the composer's length limit,
and the first run without an operator key (desktop and phone)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import TEST_API_KEY, AppServer
from tests.fakes.openrouter import FakeOpenRouter
from tests.ui import (
    INPUT,
    bot_messages,
    device_page,
    in_viewport,
    last_answer,
    open_app,
    send,
    wait_until_idle,
)

pytestmark = pytest.mark.timeout(180)
REFUSAL = "Too long: 9,120 of 8,000 characters. Shorten it or send it in parts."


@pytest.fixture(scope="module")
def keyed_app(
    shared_app_factory: Callable[..., AppServer], fake_openrouter: FakeOpenRouter
) -> AppServer:
    """The app with an operator key and the default 8,000-character limit."""
    return shared_app_factory(
        "shell", OPENROUTER_API_KEY=TEST_API_KEY, OPENROUTER_BASE_URL=fake_openrouter.base_url
    )


@pytest.fixture(scope="module")
def first_run_app(
    shared_app_factory: Callable[..., AppServer], fake_openrouter: FakeOpenRouter
) -> AppServer:
    """The app as first started: no operator key."""
    return shared_app_factory(
        "first-run", OPENROUTER_API_KEY="", OPENROUTER_BASE_URL=fake_openrouter.base_url
    )


def _is_dark(page: Page) -> bool:
    return bool(page.evaluate("document.body.classList.contains('dark')"))


def test_the_theme_choice_is_remembered_over_the_system_one(
    browser: Browser, keyed_app: AppServer
) -> None:
    with device_page(browser, "desktop", color_scheme="light") as page:
        open_app(page, keyed_app.url)
        toggle = page.get_by_role("button", name="Dark theme")
        expect(toggle).to_have_attribute("aria-pressed", "false")  # the system's light theme
        assert not _is_dark(page)
        toggle.click()
        expect(toggle).to_have_attribute("aria-pressed", "true")
        assert _is_dark(page)
        page.reload()
        open_app(page, keyed_app.url)
        expect(page.get_by_role("button", name="Dark theme")).to_have_attribute(
            "aria-pressed", "true"
        )
        assert _is_dark(page)
    # Without a stored choice the system preference applies.
    with device_page(browser, "desktop", color_scheme="dark") as page:
        open_app(page, keyed_app.url)
        expect(page.get_by_role("button", name="Dark theme")).to_have_attribute(
            "aria-pressed", "true"
        )
        assert _is_dark(page)


def test_escape_stops_an_answer_and_ctrl_shift_o_starts_a_new_chat(
    page: Page, keyed_app: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, keyed_app.url)
    send(page, "Tell me a long story [[tokens=400]] [[rate=20]]")
    expect(last_answer(page)).to_contain_text("w3")
    page.keyboard.press("Escape")
    wait_until_idle(page)
    expect(last_answer(page)).to_contain_text("stopped")
    assert "w390" not in last_answer(page).inner_text()

    page.locator("#model-picker input").click()  # focus elsewhere: the shortcut is page-wide
    page.keyboard.press("Control+Shift+O")
    expect(bot_messages(page)).to_have_count(0)
    expect(page.locator(INPUT)).to_be_focused()
    send(page, "A fresh start")
    wait_until_idle(page)
    expect(bot_messages(page)).to_have_count(1)  # the stopped chat's turns are not here


def test_a_too_long_message_is_refused_in_place_and_kept(
    page: Page, keyed_app: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, keyed_app.url)
    box = page.locator(INPUT)
    count = page.locator("#message-counter .count")
    box.fill("a" * 1000)
    expect(count).to_be_hidden()  # nothing to say far from the limit
    box.fill("a" * 7000)
    expect(count).to_have_text("7,000 / 8,000")
    expect(page.locator("#message-counter")).not_to_have_class("over")

    box.fill("é" * 9120)  # counted as the server counts: characters, not bytes
    expect(count).to_have_text("9,120 / 8,000")
    expect(page.locator("#message-counter")).to_have_class("over")
    box.press("Enter")
    refusal = page.locator("#message-counter .refusal")
    expect(refusal).to_have_text(REFUSAL)
    expect(refusal).to_have_attribute("aria-live", "polite")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(refusal).to_have_text(REFUSAL)
    assert box.input_value() == "é" * 9120
    assert fake.chat_requests() == []

    # 20,000 pasted characters: the composer stays whole and on screen.
    box.fill("x" * 20_000)
    expect(refusal).to_have_text("Too long: 20,000 of 8,000 characters.")
    composer = page.locator("#composer").bounding_box()
    send_button = page.get_by_role("button", name="Send", exact=True).bounding_box()
    assert composer is not None and send_button is not None
    assert composer["height"] < 0.4 * 900  # the box scrolls inside; the page keeps its shape
    assert send_button["height"] < 80
    box.fill("Short again")
    expect(refusal).to_be_empty()
    box.press("Enter")
    wait_until_idle(page)
    expect(last_answer(page)).to_contain_text("Echo: Short again")


def test_first_run_starts_in_the_key_box(device_page: Page, first_run_app: AppServer) -> None:
    page = device_page
    page.goto(first_run_app.url, wait_until="load")
    expect(page.locator("#session-ready [data-ready]")).to_be_attached()
    key_box = page.get_by_role("textbox", name="API key")
    expect(key_box).to_be_focused()
    expect(page.locator("#key-notice")).to_contain_text("No OpenRouter API key")
    page.wait_for_timeout(300)  # any scroll the focus caused has happened
    assert in_viewport(page, key_box)
    assert in_viewport(page, page.locator("#key-notice strong").first)
