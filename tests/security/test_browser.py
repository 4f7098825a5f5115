"""In a real browser: a `javascript:` link in an answer is inert, and the operator view
opens only with the startup link's token (never for loopback alone)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import AppServer
from tests.security.conftest import OPERATOR_TOKEN
from tests.ui import bot_messages, last_answer, open_app, send, wait_until_idle

pytestmark = pytest.mark.e2e

HOSTILE = {
    "click me": "[click me](javascript:window.__pwned='link')",
    "anchor": "<a href=\"javascript:window.__pwned='anchor'\">anchor</a>",
    "data": "[data](data:text/html,<script>window.__pwned='data'</script>)",
}


def test_a_javascript_link_in_an_answer_does_nothing(page: Page, security_app: AppServer) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    open_app(page, security_app.url)
    # The fake model answers "Echo: <the question>": each answer carries the question's link.
    asked = [*HOSTILE.values(), "<img src=x onerror=\"window.__pwned='img'\">"]
    asked.append("[a real link](https://example.com/)")
    for n, question in enumerate(asked, start=1):
        send(page, f"{question} [[tokens=8]]")
        expect(bot_messages(page)).to_have_count(n)
        expect(last_answer(page)).to_contain_text("Echo:")
        wait_until_idle(page)
    expect(last_answer(page).get_by_role("link", name="a real link")).to_have_attribute(
        "href", "https://example.com/"
    )  # links do render: the hostile ones below are inert, not missing

    hrefs = page.locator("#chat a").evaluate_all("links => links.map(a => a.href)")
    assert not [h for h in hrefs if h.strip().lower().startswith(("javascript:", "data:"))]
    assert page.locator("#chat [onerror], #chat script").count() == 0
    for text in HOSTILE:
        page.locator('#chat [data-testid="bot"]').get_by_text(text, exact=True).first.click()
    page.wait_for_timeout(300)  # let a handler (if any had survived) run
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    assert page.url.startswith(security_app.url)  # no navigation either
    assert len(page.context.pages) == 1  # and no new tab


def open_usage_tab(page: Page, url: str) -> None:
    open_app(page, url)
    page.get_by_role("tab", name="Usage").click()
    expect(page.locator("#usage-empty-mine")).to_contain_text("No usage yet")  # shown, loaded


def test_loopback_without_the_token_sees_no_operator_view(
    page: Page, security_app: AppServer
) -> None:
    open_usage_tab(page, security_app.url)
    expect(page.locator("#admin-usage")).to_be_hidden()
    expect(page.get_by_text("Whole app")).to_have_count(0)


def test_a_wrong_token_shows_no_operator_view(page: Page, security_app: AppServer) -> None:
    open_usage_tab(page, f"{security_app.url}?operator=guess-{'x' * 30}")
    expect(page.locator("#admin-usage")).to_be_hidden()
    expect(page.get_by_text("Whole app")).to_have_count(0)


def test_the_startup_links_token_shows_the_operator_view(
    page: Page, security_app: AppServer
) -> None:
    open_usage_tab(page, f"{security_app.url}?operator={OPERATOR_TOKEN}")
    expect(page.locator("#admin-usage").first).to_be_visible()
    expect(page.locator("#usage-totals-all")).to_contain_text("Whole app")
