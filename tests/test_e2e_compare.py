"""Browser journey: three models answer one message side by side, one is stopped alone, one
is kept, and the chat remembers it with the others one switch away."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import AppServer
from tests.fakes.openrouter import FakeOpenRouter, expected_reply
from tests.ui import last_answer, open_app

pytestmark = pytest.mark.e2e
FAST, QUICK, SLOW = "openai/gpt-4o", "anthropic/claude-3.5-haiku", "google/gemini-2.5-flash"


def pick_models(page: Page, *models: str) -> None:
    """Open "Compare models" and pick each model by its id."""
    page.get_by_text("Compare models", exact=True).click()
    picker = page.locator("#compare-models input")
    for model in models:
        picker.click()
        picker.fill(f"({model})")  # labels end with the id in brackets: one match each
        picker.press("Enter")
    page.locator("#compare-input textarea").click()  # closes the list


def test_three_models_stream_together_one_is_stopped_alone_and_one_is_kept(
    device_page: Page, device: str, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    page = device_page
    fake.set_defaults(for_model=SLOW, stall=0)  # the third model says nothing until stopped
    open_app(page, app_server.url)
    page.locator("#web-search input[type=checkbox]").check()  # every column searches the web
    pick_models(page, FAST, QUICK, SLOW)
    page.locator("#compare-input textarea").fill("Which is best?")
    page.locator("#compare-btn").click()

    fast = page.locator("#compare-0")
    quick = page.locator("#compare-1")
    slow = page.locator("#compare-2")
    reply = expected_reply("Which is best?", 20)
    expect(page.locator("#compare-question")).to_contain_text("Which is best?")
    # The two quick models finish while the slow one is still typing.
    expect(page.locator("#compare-answer-0")).to_contain_text(reply)
    expect(page.locator("#compare-answer-1")).to_contain_text(reply)
    expect(slow.locator(".typing-indicator")).to_be_visible()
    expect(page.locator("#compare-footer-0")).to_contain_text(FAST)
    expect(page.locator("#compare-footer-0")).to_contain_text("TTFT")
    expect(page.locator("#compare-footer-1")).to_contain_text("tok/s")
    expect(page.locator("#compare-answer-1 .answer-sources li")).to_have_count(3)
    expect(fast.get_by_role("button", name="Continue with this answer")).to_be_enabled()
    expect(slow.get_by_role("button", name="Continue with this answer")).to_be_disabled()

    # Side by side on a desktop, stacked on a phone.
    first_box, second_box = fast.bounding_box(), quick.bounding_box()
    assert first_box is not None and second_box is not None
    if device == "phone":
        assert second_box["y"] >= first_box["y"] + first_box["height"] - 1
    else:
        assert abs(second_box["y"] - first_box["y"]) < 2 and second_box["x"] > first_box["x"]

    page.locator("#compare-stop-2").click()  # Stop under the slow model only
    expect(page.locator("#compare-footer-2")).to_contain_text("stopped")
    expect(page.locator("#compare-footer-0")).not_to_contain_text("stopped")
    # Saved: the chat shows the question with the first model's answer, one of three.
    expect(last_answer(page)).to_contain_text("answer ‹ 1/3 ›")

    quick.get_by_role("button", name="Continue with this answer").click()
    expect(fast).to_be_hidden()
    expect(page.locator("#compare-question")).not_to_contain_text("Which is best?")
    expect(last_answer(page)).to_contain_text("answer ‹ 2/3 ›")
    expect(last_answer(page)).to_contain_text(QUICK)
    # The chat goes on with the kept answer's model.
    expect(page.locator("#model-picker input")).to_have_value(re.compile(re.escape(QUICK)))

    page.reload(wait_until="load")  # the choice was saved
    expect(last_answer(page)).to_contain_text("answer ‹ 2/3 ›")
    expect(last_answer(page)).to_contain_text(QUICK)
    last_answer(page).get_by_role("link", name="›").click()  # the stopped one is there too
    expect(last_answer(page)).to_contain_text("answer ‹ 3/3 ›")
    expect(last_answer(page)).to_contain_text(SLOW)
    expect(last_answer(page)).to_contain_text("stopped")
