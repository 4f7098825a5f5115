"""Refresh the README images from the real app against the fake upstream.

Run with `make screenshots`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, REPO, TEST_API_KEY, start_app
from tests.fakes.openrouter import FakeOpenRouter
from tests.ui import DESKTOP, PHONE, last_answer, open_app, send, wait_until_idle

DOCS = REPO / "docs"
SAVED = ("screenshot.png", "usage.png", "phone.png", "first-run.png", "first-run-phone.png")


def _chat(page: Page) -> None:
    page.locator("#system-prompt textarea").fill("You are a helpful assistant.")
    send(page, "Explain server-sent events in two sentences.")
    expect(last_answer(page)).to_contain_text("TTFT", timeout=30_000)
    wait_until_idle(page)


def main() -> None:
    """Start the fake and the app, chat once, and save the screenshots."""
    DOCS.mkdir(exist_ok=True)
    with FakeOpenRouter(tokens_per_second=400) as fake, tempfile.TemporaryDirectory() as tmp:
        app = start_app(
            Path(tmp) / "app",
            {"OPENROUTER_API_KEY": TEST_API_KEY, "OPENROUTER_BASE_URL": fake.base_url},
        )
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                page = browser.new_page(**DESKTOP)
                open_app(page, app.url)
                fake.set_defaults(tokens=25)
                for earlier in ("Plan a weekend in Lisbon", "Explain Python decorators"):
                    send(page, earlier)
                    expect(last_answer(page)).to_contain_text("TTFT", timeout=30_000)
                    wait_until_idle(page)
                    page.locator("#new-chat").click()
                fake.set_defaults(tokens=45, reasoning=6)
                _chat(page)
                page.screenshot(path=str(DOCS / "screenshot.png"))
                page.get_by_role("tab", name="Usage").click()
                expect(page.locator("#usage-totals-mine")).to_contain_text("requests")
                page.wait_for_timeout(1500)  # let the plots draw
                page.screenshot(path=str(DOCS / "usage.png"), full_page=True)
                phone = browser.new_page(**PHONE)
                open_app(phone, app.url)
                send(phone, "Hello from my phone")
                expect(last_answer(phone)).to_contain_text("TTFT", timeout=30_000)
                phone.screenshot(path=str(DOCS / "phone.png"))
                _first_run(browser, Path(tmp), fake.base_url)
                browser.close()
        finally:
            app.stop()
    print(f"saved {', '.join(SAVED)} in {DOCS}")  # noqa: T201


def _first_run(browser: Browser, tmp: Path, base_url: str) -> None:
    """The page of an app started without an operator key, on a desktop and on a phone."""
    app = start_app(tmp / "first-run", {"OPENROUTER_API_KEY": "", "OPENROUTER_BASE_URL": base_url})
    try:
        for name, device in (("first-run.png", DESKTOP), ("first-run-phone.png", PHONE)):
            page = browser.new_page(**device)
            page.goto(app.url, wait_until="load")
            expect(page.locator("#byok-key input")).to_be_focused()
            page.screenshot(path=str(DOCS / name))
            page.close()
    finally:
        app.stop()


if __name__ == "__main__":
    main()
