"""Browser journeys: web search and its sources, reasoning effort, answer length, other models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.conftest import AppServer
from tests.fakes.openrouter import FakeOpenRouter, expected_reply
from tests.ui import (
    bot_messages,
    chat_once,
    last_answer,
    open_app,
    set_model,
    user_messages,
    wait_until_idle,
)

pytestmark = pytest.mark.e2e

WEB_SEARCH = "#web-search input[type=checkbox]"
EFFORT = "#reasoning-effort"
MAX_TOKENS = "#max-tokens input"


def sources_of(answer: Locator) -> Locator:
    """The numbered sources listed under an answer."""
    return answer.locator(".answer-sources li")


def open_listed(page: Page, title: str) -> None:
    """Open the chat whose title starts with `title` from the sidebar."""
    page.locator("#conversation-list label").filter(has_text=title).first.click()
    expect(user_messages(page).first).to_contain_text(title)


def web_search_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The web search server tool in an upstream request (None when not asked for)."""
    tools = body.get("tools") or []
    return next((t for t in tools if t.get("type") == "openrouter:web_search"), None)


def chat_menu(page: Page, title: str) -> Locator:
    """Open the ⋯ menu of the listed chat titled `title` (its start will do); the menu."""
    page.get_by_role("button", name=f"Actions for {title}").first.click()
    menu = page.get_by_role("menu")
    expect(menu).to_be_visible()
    return menu


def exported(page: Page, title: str, item: str) -> str:
    """The text of the file the chat's menu item ("Export JSON", ...) downloads."""
    with page.expect_download() as download:
        chat_menu(page, title).get_by_role("menuitem", name=item).click()
    return Path(download.value.path()).read_text(encoding="utf-8")


def test_web_search_lists_the_sources_under_the_answer_and_keeps_them(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app_server.url)
    page.locator(WEB_SEARCH).check()
    chat_once(page, "Latest news on llamas [[tokens=5]]")
    assert web_search_tool(fake.chat_requests()[-1].body) == {
        "type": "openrouter:web_search",
        "parameters": {"max_results": 5},
    }
    sources = sources_of(last_answer(page))
    expect(sources).to_have_count(3)  # the fake cites three pages (twice: listed once)
    first = sources.first.get_by_role("link", name="Source 1")
    expect(first).to_have_attribute("href", "https://example.com/source-1")
    expect(first).to_have_attribute("target", "_blank")
    expect(first).to_have_attribute("rel", "noopener noreferrer")
    expect(sources.first).to_contain_text("example.com")
    expect(last_answer(page)).to_contain_text(expected_reply("Latest news on llamas", 5))

    page.reload(wait_until="load")
    expect(sources_of(last_answer(page))).to_have_count(3)
    expect(sources_of(last_answer(page)).nth(2)).to_contain_text("Source 3")

    document = json.loads(exported(page, "Latest news on llamas", "Export JSON"))
    chat = document["conversations"][0]
    assert chat["options"]["web_search"] is True
    assert chat["messages"][-1]["meta"]["sources"] == [
        {"url": f"https://example.com/source-{n}", "title": f"Source {n}"} for n in (1, 2, 3)
    ]
    markdown = exported(page, "Latest news on llamas", "Export Markdown")
    assert "Sources:" in markdown
    assert "[Source 2](https://example.com/source-2)" in markdown


def test_a_hostile_source_is_shown_as_text_and_does_nothing(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    open_app(page, app_server.url)
    page.locator(WEB_SEARCH).check()
    chat_once(page, "Search somewhere odd [[tokens=3]] [[hostile=1]]")
    answer = last_answer(page)
    sources = sources_of(answer)
    expect(sources).to_have_count(5)
    links = answer.locator(".answer-sources a")
    expect(links).to_have_count(3)  # only the https pages are links
    for n in range(3):
        expect(links.nth(n)).to_have_attribute("href", re.compile(r"^https://example\.com/"))
    script = sources.nth(3)
    expect(script).to_contain_text("Click <b>me</b> javascript:alert(1)")  # as written
    expect(script.locator("a, b")).to_have_count(0)
    expect(sources.nth(4)).to_contain_text("data:text/html;base64,")
    expect(sources.nth(4).locator("a")).to_have_count(0)
    url_before = page.url
    script.locator(".source-url").click()
    sources.nth(4).locator(".source-url").click()
    page.wait_for_timeout(300)  # a script that ran would have shown its dialog by now
    assert dialogs == []
    assert page.url == url_before
    expect(page.locator("#chat script, #chat iframe")).to_have_count(0)


def test_the_search_toggle_is_remembered_per_chat(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app_server.url)
    toggle = page.locator(WEB_SEARCH)
    expect(toggle).not_to_be_checked()
    toggle.check()
    chat_once(page, "Searched chat [[tokens=3]]")
    assert web_search_tool(fake.chat_requests()[-1].body) is not None

    page.locator("#new-chat").click()  # a new chat starts from the defaults
    expect(toggle).not_to_be_checked()
    chat_once(page, "Plain chat [[tokens=3]]")
    assert web_search_tool(fake.chat_requests()[-1].body) is None

    open_listed(page, "Searched chat")
    expect(toggle).to_be_checked()
    open_listed(page, "Plain chat")
    expect(toggle).not_to_be_checked()
    plain_address = page.url
    open_listed(page, "Searched chat")
    expect(page).not_to_have_url(plain_address)  # the address follows the open chat
    page.reload(wait_until="load")  # the chat's address reopens it, toggle and all
    expect(user_messages(page).first).to_contain_text("Searched chat")
    expect(toggle).to_be_checked()


def test_reasoning_effort_is_offered_for_models_that_think_and_reaches_upstream(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app_server.url)
    effort = page.locator(EFFORT)
    expect(effort).to_be_hidden()  # openai/gpt-4o, the default, does not reason
    set_model(page, "deepseek/deepseek-r1")
    expect(effort).to_be_visible()
    effort.get_by_label("High").check()
    page.locator(MAX_TOKENS).fill("256")
    chat_once(page, "Think hard [[tokens=12]] [[options=1]]")
    # The fake says what it received, and the model thought before answering.
    expect(last_answer(page)).to_contain_text("reasoning=high max_tokens=256")
    expect(page.locator("#chat").get_by_text("Thinking")).to_be_visible()
    body = fake.chat_requests()[-1].body
    assert body["reasoning"] == {"effort": "high"}
    assert body["max_tokens"] == 256

    page.locator("#new-chat").click()  # a new chat: the defaults, for the same model
    expect(effort).to_be_visible()
    expect(effort.get_by_label("Off")).to_be_checked()
    expect(page.locator(MAX_TOKENS)).to_have_value("0")  # 0: the model's default
    effort.get_by_label("Medium").check()
    set_model(page, "my-own/custom-model")  # not in the catalog: no effort offered
    expect(effort).to_be_hidden()
    set_model(page, "openai/gpt-4o")
    expect(effort).to_be_hidden()
    chat_once(page, "Quick one [[tokens=12]] [[options=1]]")
    expect(last_answer(page)).to_contain_text("[received: none]")
    body = fake.chat_requests()[-1].body
    assert "reasoning" not in body  # the hidden effort is not asked for
    assert "max_tokens" not in body

    open_listed(page, "Think hard")  # the chat's model and options come back with it
    expect(effort).to_be_visible()
    expect(effort.get_by_label("High")).to_be_checked()
    expect(page.locator(MAX_TOKENS)).to_have_value("256")


def test_retry_with_another_model_keeps_both_answers(
    page: Page, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app_server.url)
    chat_once(page, "Which model are you? [[tokens=3]]")
    chat_once(page, "And now? [[tokens=3]]")
    first_answer = bot_messages(page).first
    expect(first_answer).to_contain_text("openai/gpt-4o")
    picker = page.locator("#other-model-picker input")
    # By keyboard: Enter on the link puts the focus in the chooser, Esc cancels it.
    last_answer(page).get_by_role("link", name="↻ Other model").focus()
    page.keyboard.press("Enter")
    expect(picker).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#other-model-row")).to_be_hidden()

    first_answer.get_by_role("link", name="↻ Other model").click()
    expect(picker).to_be_visible()
    picker.fill("mistralai/mistral-small-3.2-24b-instruct")
    picker.press("Enter")
    page.locator("#other-model-retry").click()
    fake.wait_for_requests(3)
    wait_until_idle(page)
    expect(page.locator("#other-model-row")).to_be_hidden()

    # The first question was asked again with the other model; what followed it is a version.
    sent = fake.chat_requests()[-1].body
    assert sent["model"] == "mistralai/mistral-small-3.2-24b-instruct"
    assert [m["content"] for m in sent["messages"] if m["role"] == "user"] == [
        "Which model are you? [[tokens=3]]"
    ]
    expect(user_messages(page)).to_have_count(1)
    answer = last_answer(page)
    expect(answer).to_contain_text("mistralai/mistral-small-3.2-24b-instruct")
    expect(answer).to_contain_text("answer ‹ 2/2 ›")
    expect(page.locator("#model-picker input")).to_have_value(
        re.compile("mistral-small-3.2-24b-instruct")
    )

    answer.get_by_role("link", name="‹").click()  # back to the first model's answer
    first_answer = bot_messages(page).first
    expect(first_answer).to_contain_text("answer ‹ 1/2 ›")
    expect(first_answer).to_contain_text("openai/gpt-4o")
    expect(user_messages(page)).to_have_count(2)  # and the talk that followed it
    expect(last_answer(page)).to_contain_text(expected_reply("And now?", 3))
