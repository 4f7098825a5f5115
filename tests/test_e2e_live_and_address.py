"""Browser journeys: chat addresses, answers that outlive the tab, reading while it streams."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Browser, Page, expect

from tests import stored
from tests.conftest import AppServer
from tests.fakes.openrouter import FakeOpenRouter, expected_reply
from tests.ui import bot_messages, last_answer, open_app, send, toast, wait_until_idle

pytestmark = pytest.mark.e2e
STOP = {"name": "Stop", "exact": True}
# `make screenshots` sets this: the journeys then refresh their pictures in docs/journeys/.
JOURNEY_SHOTS = os.environ.get("JOURNEY_SCREENSHOTS") == "1"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "journeys"


def shot(page: Page, name: str, device: str) -> None:
    """Keep a picture of this moment of the journey for the docs (only when asked)."""
    if JOURNEY_SHOTS:
        DOCS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS / f"{name}-{device}.png"))


def chat_id_in_address(page: Page) -> str:
    """The ?c=<id> of the page's address ('' when none)."""
    return parse_qs(urlparse(page.url).query).get("c", [""])[0]


def wait_for_address(page: Page) -> str:
    expect(page).to_have_url(re.compile(r"[?&]c=[0-9a-f]+"))
    return chat_id_in_address(page)


def test_a_chat_has_an_address_that_reload_and_back_forward_follow(
    page: Page, app_server: AppServer
) -> None:
    open_app(page, app_server.url)
    assert chat_id_in_address(page) == ""
    send(page, "First chat [[tokens=3]]")
    wait_until_idle(page)
    first = wait_for_address(page)

    page.locator("#new-chat").click()
    expect(page).not_to_have_url(re.compile(r"[?&]c="))
    send(page, "Second chat [[tokens=3]]")
    wait_until_idle(page)
    second = wait_for_address(page)
    assert second != first

    page.reload(wait_until="load")  # a reload reopens the chat you were in
    expect(last_answer(page)).to_contain_text(expected_reply("Second chat", 3))
    expect(page.locator("#chat-address textarea")).to_have_value(second)  # the page knows
    assert chat_id_in_address(page) == second

    page.go_back()  # the empty new chat, then the first chat
    expect(page).not_to_have_url(re.compile(r"[?&]c="))
    expect(bot_messages(page)).to_have_count(0)
    page.go_back()
    expect(page).to_have_url(re.compile(f"c={first}"))
    expect(last_answer(page)).to_contain_text(expected_reply("First chat", 3))
    expect(page.locator("#chat-address textarea")).to_have_value(first)
    page.go_forward()
    expect(page).not_to_have_url(re.compile(r"[?&]c="))
    expect(bot_messages(page)).to_have_count(0)
    page.go_forward()
    expect(last_answer(page)).to_contain_text(expected_reply("Second chat", 3))


def test_a_chat_address_opens_for_its_owner_only(
    device_page: Page, device: str, browser: Browser, app_server: AppServer
) -> None:
    page = device_page
    open_app(page, app_server.url)
    send(page, "My private chat [[tokens=3]]")
    wait_until_idle(page)
    wait_for_address(page)
    address = page.url

    bookmark = page.context.new_page()  # the owner, in another tab: the chat opens
    open_app(bookmark, address)
    expect(last_answer(bookmark)).to_contain_text(expected_reply("My private chat", 3))

    stranger = browser.new_context().new_page()  # another visitor with the same link
    try:
        open_app(stranger, address)
        expect(toast(stranger, "does not exist")).to_be_visible()
        expect(bot_messages(stranger)).to_have_count(0)
        assert "My private chat" not in stranger.content()
        expect(stranger).not_to_have_url(re.compile(r"[?&]c="))
        shot(stranger, "address-of-another-visitor", "desktop")
    finally:
        stranger.context.close()


def test_a_reload_mid_answer_reattaches_and_ends_with_the_full_answer(
    device_page: Page, device: str, app_server: AppServer
) -> None:
    page = device_page
    open_app(page, app_server.url)
    send(page, "Reload me [[tokens=60]] [[rate=20]]")
    expect(last_answer(page)).to_contain_text("w3")
    chat = wait_for_address(page)
    page.reload(wait_until="load")
    # The answer went on on the server: the page shows it growing, then whole, with Stop.
    expect(page.get_by_role("button", **STOP)).to_be_visible()
    expect(last_answer(page)).to_contain_text("Echo: Reload me")
    shot(page, "reload-mid-answer", device)
    wait_until_idle(page)
    expect(last_answer(page)).to_contain_text(expected_reply("Reload me", 60))
    saved = {c.id: c for c in stored.conversations(app_server.workdir / ".data")}[chat]
    assert saved.messages[-1].content == expected_reply("Reload me", 60)
    assert saved.messages[-1].meta is not None
    assert saved.messages[-1].meta["status"] == "complete"


def test_a_closed_tab_s_answer_is_there_complete_when_the_chat_is_reopened(
    device_page: Page, device: str, app_server: AppServer, fake: FakeOpenRouter
) -> None:
    page = device_page
    open_app(page, app_server.url)
    send(page, "Closed tab [[tokens=40]] [[rate=20]]")
    expect(last_answer(page)).to_contain_text("w2")
    wait_for_address(page)
    address = page.url
    context = page.context
    page.close()  # nobody watches: the answer is still written, saved and billed
    fake.wait_for_requests(1)

    again = context.new_page()
    open_app(again, address)  # the chat's address, e.g. from the history
    wait_until_idle(again)
    expect(last_answer(again)).to_contain_text(expected_reply("Closed tab", 40))
    expect(last_answer(again)).not_to_contain_text("stopped")
    shot(again, "closed-tab-reopened", device)


def test_stop_belongs_to_the_chat_that_streams(page: Page, app_server: AppServer) -> None:
    open_app(page, app_server.url)
    send(page, "Quiet chat [[tokens=2]]")
    wait_until_idle(page)
    page.locator("#new-chat").click()
    send(page, "Busy chat [[tokens=200]] [[rate=20]]")
    expect(page.get_by_role("button", **STOP)).to_be_visible()

    page.locator("#conversation-list label").filter(has_text="Quiet chat").click()
    expect(last_answer(page)).to_contain_text(expected_reply("Quiet chat", 2))
    expect(page.get_by_role("button", **STOP)).to_be_hidden()  # nothing streams here
    page.wait_for_timeout(600)  # frames of the other chat keep coming: they stay away
    expect(last_answer(page)).to_contain_text(expected_reply("Quiet chat", 2))

    page.locator("#conversation-list label").filter(has_text="Busy chat").click()
    expect(page.get_by_role("button", **STOP)).to_be_visible()  # back: it still streams
    page.get_by_role("button", **STOP).click()
    wait_until_idle(page)
    expect(last_answer(page)).to_contain_text("stopped")


def test_reading_while_it_streams(page: Page, app_server: AppServer) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_app(page, app_server.url)
    # Until the first token, the answer shows that it is coming.
    send(page, "Slow start [[delay=1.5]] [[tokens=3]]")
    expect(last_answer(page).locator(".typing-indicator")).to_be_visible()
    wait_until_idle(page)
    expect(last_answer(page).locator(".typing-indicator")).to_have_count(0)

    # A long answer: scrolling up stays up, and "Scroll down" jumps to the latest text.
    send(page, "Long one [[tokens=400]] [[rate=60]]")
    expect(last_answer(page)).to_contain_text("w150")  # longer than the chat area
    box = page.locator("#chat .bubble-wrap")
    box.evaluate("el => el.scrollTo(0, 0)")
    jump = page.locator("#chat").get_by_role("button", name="Scroll down")
    expect(jump).to_be_visible()
    page.wait_for_timeout(500)
    assert box.evaluate("el => el.scrollTop") < 50  # new text did not pull the reader down
    jump.click()
    expect(jump).to_be_hidden()
    wait_until_idle(page)
    at_bottom = "el => el.scrollHeight - el.scrollTop - el.clientHeight < 100"
    assert box.evaluate(at_bottom)

    # Copy takes the answer, not the footer line with model and cost.
    last_answer(page).hover()
    page.locator("#chat").get_by_role("button", name="Copy message").last.click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == expected_reply("Long one", 400)


def test_thinking_is_open_while_it_streams_then_folded(page: Page, app_server: AppServer) -> None:
    open_app(page, app_server.url)
    send(page, "Think first [[reasoning=40]] [[tokens=5]] [[rate=20]]")
    thinking = page.locator("#chat").get_by_text("think3")
    expect(thinking).to_be_visible()  # open while the model thinks
    wait_until_idle(page)
    expect(last_answer(page)).to_contain_text(expected_reply("Think first", 5))
    expect(page.locator("#chat").get_by_text("think3")).to_be_hidden()  # folded afterwards


def test_an_upstream_error_is_shown_once_in_the_chat(page: Page, app_server: AppServer) -> None:
    open_app(page, app_server.url)
    send(page, "Break it [[tokens=20]] [[midstream_error=3]]")
    wait_until_idle(page)
    expect(last_answer(page)).to_contain_text("⚠️")
    page.wait_for_timeout(300)
    expect(page.locator(".toast-body")).to_have_count(0)  # not a second time as a toast


def test_edit_keeps_the_old_version_and_the_chosen_branch_survives_a_reload(
    device_page: Page, device: str, app_server: AppServer
) -> None:
    page = device_page
    open_app(page, app_server.url)
    send(page, "Original question [[tokens=3]]")
    wait_until_idle(page)
    wait_for_address(page)
    # Edit the question: a new answer, and "‹ 2/2 ›" to go back to the first version.
    page.locator('#chat [data-testid="user"]').first.hover()
    page.locator("#chat").get_by_role("button", name="Edit").first.click()
    editor = page.locator("#chat textarea").first
    editor.fill("Edited question [[tokens=4]]")
    page.locator("#chat").get_by_role("button", name="Submit").first.click()
    wait_until_idle(page)
    expect(last_answer(page)).to_contain_text(expected_reply("Edited question", 4))
    expect(last_answer(page)).to_contain_text("question ‹ 2/2 ›")
    shot(page, "edit-branches", device)

    last_answer(page).get_by_role("link", name="‹").click()  # back to the first version
    expect(last_answer(page)).to_contain_text(expected_reply("Original question", 3))
    expect(last_answer(page)).to_contain_text("question ‹ 1/2 ›")
    page.reload(wait_until="load")  # the chosen branch is kept
    expect(last_answer(page)).to_contain_text(expected_reply("Original question", 3))
    expect(last_answer(page)).to_contain_text("1/2")

    # Retry keeps the earlier answer as a version too.
    page.locator("#chat").get_by_role("button", name="Retry").click()
    wait_until_idle(page)
    expect(last_answer(page)).to_contain_text("answer ‹ 2/2 ›")


def test_only_the_newest_toast_is_shown(page: Page, app_server: AppServer) -> None:
    open_app(page, app_server.url)
    page.evaluate("window.orchat.send('version-request', 'version-request-go', '999:1')")
    expect(toast(page, "no other version")).to_be_visible()
    unknown = "f" * 32
    page.evaluate(f"window.orchat.send('open-request', 'open-request-go', '{unknown}')")
    expect(toast(page, "does not exist")).to_be_visible()
    expect(page.locator(".toast-body:visible")).to_have_count(1)  # not a stack of them
