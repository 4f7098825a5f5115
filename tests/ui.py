"""Small Playwright helpers shared by the browser tests: how a person uses the page."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, expect

INPUT = "#message-input textarea"
# CI machines are small and shared: give the page time before declaring a failure.
expect.set_options(timeout=15_000)


def open_app(page: Page, url: str) -> None:
    """Load the app and wait until it can take a message.

    A tab left open on an app that went away shows "Connection Lost" and reloads itself once
    the app is back; that reload can cut across this navigation, so it is tried again.
    """
    for attempt in range(3):
        try:
            page.goto(url, wait_until="load")
            break
        except PlaywrightError as error:
            if "interrupted by another navigation" not in str(error) or attempt == 2:
                raise
    expect(page.locator(INPUT)).to_be_visible()
    expect(page.locator("#session-ready [data-ready]")).to_be_attached()


def send(page: Page, text: str) -> None:
    """Type a message and press Send."""
    page.locator(INPUT).fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def bot_messages(page: Page) -> Locator:
    """Every assistant bubble (thinking blocks included)."""
    return page.locator('#chat [data-testid="bot"]')


def user_messages(page: Page) -> Locator:
    """Every user bubble."""
    return page.locator('#chat [data-testid="user"]')


def last_answer(page: Page) -> Locator:
    """The latest assistant bubble."""
    return bot_messages(page).last


def wait_until_idle(page: Page, timeout: float = 30_000) -> None:
    """Wait until no answer is streaming (Send is back)."""
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_visible(timeout=timeout)
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_hidden(timeout=timeout)


def toast(page: Page, text: str) -> Locator:
    """A notification toast containing `text`."""
    return page.locator(".toast-body").filter(has_text=text)


def set_model(page: Page, model_id: str) -> None:
    """Type a model id into the picker (custom ids are allowed) and confirm."""
    picker = page.locator("#model-picker input")
    picker.click()
    picker.fill(model_id)
    picker.press("Enter")
    page.locator("#system-prompt textarea").click()  # blur commits the value


def set_temperature(page: Page, value: float) -> None:
    """Type a temperature into the slider's number box."""
    box = page.locator('#temperature input[type="number"]')
    box.fill(str(value))
    box.press("Enter")


def page_text(page: Page) -> Any:
    """The whole page's HTML (for leak checks)."""
    return page.content()
