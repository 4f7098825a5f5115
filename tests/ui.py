"""Small Playwright helpers shared by the browser tests: how a person uses the page."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect
from playwright.sync_api import Error as PlaywrightError

INPUT = "#message-input textarea"
# CI machines are small and shared: give the page time before declaring a failure.
expect.set_options(timeout=15_000)

# Browser sizes a journey can run at (see `device_page`, and the `device` fixture).
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
# Playwright's "Pixel 7" descriptor (`playwright.devices["Pixel 7"]`), copied: a context is
# made from the `browser` fixture alone, which has no access to the Playwright object.
PHONE: dict[str, Any] = {
    "user_agent": (
        "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/159.0.8154.6 Mobile Safari/537.36"
    ),
    "viewport": {"width": 412, "height": 839},
    "screen": {"width": 412, "height": 915},
    "device_scale_factor": 2.625,
    "is_mobile": True,
    "has_touch": True,
}
DEVICES: dict[str, dict[str, Any]] = {"desktop": DESKTOP, "phone": PHONE}


def new_device_context(browser: Browser, device: str, **options: Any) -> BrowserContext:
    """A fresh browser context emulating `device` ("desktop" 1280×800, or "phone": a Pixel 7).

    `options` go to `browser.new_context` too (e.g. `color_scheme="dark"`, `storage_state`).
    """
    context = browser.new_context(**DEVICES[device], **options)
    context.set_default_timeout(20_000)
    return context


@contextmanager
def device_page(browser: Browser, device: str, **options: Any) -> Iterator[Page]:
    """A page in a fresh context emulating `device`; the context is closed afterwards.

    For a journey at both sizes, take the `device` fixture (parametrized "desktop", "phone")
    or the `device_page` fixture (tests/conftest.py); for a second page inside one test:

        with device_page(browser, "phone", color_scheme="dark") as phone:
            open_app(phone, app_server.url)
    """
    context = new_device_context(browser, device, **options)
    try:
        yield context.new_page()
    finally:
        context.close()


def in_viewport(page: Page, locator: Locator) -> bool:
    """Whether all of `locator` is inside the visible part of the page, without scrolling."""
    box = locator.bounding_box()
    size = page.viewport_size
    if box is None or size is None:
        return False
    return (
        box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= size["width"]
        and box["y"] + box["height"] <= size["height"]
    )


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


def chat_once(page: Page, text: str, timeout: float = 30_000) -> None:
    """Send `text` and wait for the whole answer (its footer shows the timing)."""
    before = user_messages(page).count()
    send(page, text)
    expect(user_messages(page)).to_have_count(before + 1)
    expect(last_answer(page)).to_contain_text("TTFT", timeout=timeout)
    wait_until_idle(page, timeout=max(timeout, 30_000))


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
