"""The page's handlers, called in-process: what a visitor sees after each action."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from starlette.requests import Request

from chatlib.identity import new_anonymous_id
from chatlib.services import create_services
from chatlib.visitors import BrowserIdentity
from tests.conftest import settings_for
from tests.fakes.openrouter import FakeOpenRouter
from ui.errors import shown_as_toast
from ui.page import Page
from ui.sidebar import LISTED_CHATS


@pytest.fixture
async def page(fake: FakeOpenRouter, tmp_path: Path) -> AsyncIterator[Page]:
    # Built inside the test's event loop: outside one, Gradio makes loops of its own.
    settings = settings_for(fake, tmp_path, DATA_DIR=str(tmp_path / "data"))
    services = create_services(settings)
    yield Page(settings, services)
    await services.aclose()


def visitor() -> dict[str, Any]:
    """A browser's stored state: a fresh anonymous visitor."""
    return BrowserIdentity(anon_id=new_anonymous_id()).to_value()


def request(session: str = "page-1", peer: str = "127.0.0.1") -> gr.Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [],
        "client": (peer, 50000),
        "query_string": b"",
    }
    return gr.Request(request=Request(scope), session_hash=session)


async def send(
    page: Page, browser: dict[str, Any], text: str, chat_id: str | None = None
) -> dict[Any, Any]:
    """Send `text` and return every update merged, as the page ends up showing them."""
    shown: dict[Any, Any] = {}
    async for updates in page.chat.ask(
        "send", text, chat_id, "openai/gpt-4o", "", 0.3, browser, request(), None
    ):
        shown.update(updates)
    return shown


async def opened(page: Page, chat_id: str, who: dict[str, Any]) -> dict[Any, Any]:
    """What the page shows after opening a chat (the handler streams while an answer runs)."""
    shown: dict[Any, Any] = {}
    async for updates in page.chat.open_conversation(chat_id, who, request(), None):
        shown.update(updates)
    return shown


async def test_a_message_streams_an_answer_that_is_saved_and_listed(page: Page) -> None:
    me = visitor()
    shown = await send(page, me, "Hello there")
    messages = shown[page.chat.chatbot]
    assert messages[0]["content"] == "Hello there"
    assert messages[-1]["role"] == "assistant" and messages[-1]["content"]
    assert shown[page.chat.send_btn]["visible"] is True
    choices = shown[page.sidebar.conversation_list]["choices"]
    assert [label.split(" · ")[0] for label, _ in choices] == ["Hello there"]
    chat_id = shown[page.ctx.conversation_id]
    reopened = await opened(page, chat_id, me)
    assert reopened[page.chat.chatbot] == messages


async def test_rename_shows_the_new_title_and_a_blank_name_is_refused(page: Page) -> None:
    me = visitor()
    chat_id = (await send(page, me, "First question"))[page.ctx.conversation_id]
    renamed = await page.sidebar.rename("Trip plans", chat_id, me, request(), None)
    labels = [label for label, _ in renamed[page.sidebar.conversation_list]["choices"]]
    assert labels[0].startswith("Trip plans")
    with pytest.warns(UserWarning, match="Type the new name first"):
        unchanged = await shown_as_toast(page.sidebar.rename)("  ", chat_id, me, request(), None)
    assert unchanged == gr.skip()


async def test_another_visitors_chat_id_opens_nothing_and_changes_nothing(page: Page) -> None:
    owner, intruder = visitor(), visitor()
    chat_id = (await send(page, owner, "My secret plan"))[page.ctx.conversation_id]
    for handler, args in (
        (page.chat.switch_version, ("0:1", chat_id)),
        (page.sidebar.rename, ("pwned", chat_id)),
        (page.sidebar.delete, (chat_id, None)),
        (page.sidebar.act, (json.dumps({"action": "delete", "id": chat_id}), None, "")),
        (page.chat.undo, (chat_id,)),
        (page.transfer.export, ("current", chat_id)),
    ):
        with pytest.warns(UserWarning):
            result = await shown_as_toast(handler)(*args, intruder, request("evil"), None)
        assert result == gr.skip(), handler.__name__
    with pytest.warns(UserWarning):
        assert [
            u
            async for u in shown_as_toast(page.chat.open_conversation)(
                chat_id, intruder, request("evil"), None
            )
        ] == [gr.skip()]
    mine = await opened(page, chat_id, owner)
    assert mine[page.chat.chatbot][0]["content"] == "My secret plan"


async def test_retry_from_another_visitor_is_refused(page: Page) -> None:
    owner, intruder = visitor(), visitor()
    chat_id = (await send(page, owner, "Only mine"))[page.ctx.conversation_id]
    retry = shown_as_toast(page.chat.ask)
    with pytest.warns(UserWarning):
        frames = [
            u
            async for u in retry(
                "retry", None, chat_id, "openai/gpt-4o", "", 0.3, intruder, request(), None
            )
        ]
    assert frames == [gr.skip()]


async def test_undo_puts_the_question_back_in_the_box(page: Page) -> None:
    me = visitor()
    chat_id = (await send(page, me, "Take this back"))[page.ctx.conversation_id]
    undone = await page.chat.undo(chat_id, me, request(), None)
    assert undone[page.chat.chatbot] == []
    assert undone[page.chat.textbox] == "Take this back"


async def test_export_gives_a_file_with_the_chat_and_no_secrets(page: Page) -> None:
    me = visitor()
    chat_id = (await send(page, me, "Export me"))[page.ctx.conversation_id]
    exported = await page.transfer.export("current", chat_id, me, request(), None)
    path = Path(exported[page.transfer.export_file]["value"])
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["conversations"][0]["messages"][0]["content"] == "Export me"
    assert "sk-or-" not in path.read_text(encoding="utf-8")


async def test_a_broken_import_is_refused_with_its_reason_and_nothing_is_added(
    page: Page, tmp_path: Path
) -> None:
    me = visitor()
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "openrouter-chat", "conversations": [{"title": 5}]}')
    with pytest.warns(UserWarning, match="conversation 1"):
        result = await shown_as_toast(page.transfer.import_file)(str(bad), me, request(), None)
    assert result == gr.skip()
    listed = await page.sidebar.search("", None, me, request(), None)
    assert listed[page.sidebar.conversation_list]["choices"] == []


async def test_usage_tab_shows_only_the_visitors_own_totals(page: Page) -> None:
    me = visitor()
    await send(page, me, "Count me")
    shown = await page.usage.show(me, False, request(peer="203.0.113.9"), None)
    assert "1 request" in shown[page.usage.mine.totals]["value"]
    assert shown[page.usage.admin_group]["visible"] is False


async def test_a_long_history_lists_the_latest_chats_and_search_finds_the_rest(
    page: Page,
) -> None:
    me = visitor()
    owner = page.ctx.visitor(me, None, request()).owner_key
    chats = [
        {
            "title": f"Chat number {n}",
            "model": "m",
            "system_prompt": "",
            "temperature": 0.3,
            "created_at": 1_700_000_000 + n,
            "updated_at": 1_700_000_000 + n,
            "messages": [{"role": "user", "content": f"q{n}"}],
        }
        for n in range(LISTED_CHATS + 1)
    ]
    document = {"format": "openrouter-chat", "schema_version": 1, "conversations": chats}
    await page.ctx.services.conversations.import_file(owner, json.dumps(document).encode())
    listed = await page.sidebar.search("", None, me, request(), None)
    assert len(listed[page.sidebar.conversation_list]["choices"]) == LISTED_CHATS
    assert "search to find older ones" in listed[page.sidebar.notice]["value"]
    oldest = await page.sidebar.search("Chat number 0", None, me, request(), None)
    labels = [label for label, _ in oldest[page.sidebar.conversation_list]["choices"]]
    assert labels and labels[0].startswith("Chat number 0")


async def test_the_database_of_everyones_chats_is_readable_by_the_app_alone(
    page: Page, tmp_path: Path
) -> None:
    await send(page, visitor(), "Private words")
    files = [p for p in (tmp_path / "data").glob("chat.db*") if p.is_file()]
    assert {p.name for p in files} >= {"chat.db", "chat.db-wal"}
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o600"}
