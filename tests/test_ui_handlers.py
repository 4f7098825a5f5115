"""The page's handlers, called in-process: what a visitor sees after each action."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from chatlib.identity import new_anonymous_id
from chatlib.options import AnswerOptions
from chatlib.services import create_services
from chatlib.sources import Source
from chatlib.visitors import BrowserIdentity
from tests.conftest import settings_for
from tests.fakes.openrouter import FakeOpenRouter
from ui.chat import answer_options
from ui.display import sources_html
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
    page: Page,
    browser: dict[str, Any],
    text: str,
    chat_id: str | None = None,
    options: tuple[bool, str, float] | None = None,
) -> dict[Any, Any]:
    """Send `text` and return every update merged, as the page ends up showing them.

    `options`: the page's web search, reasoning effort and max length controls.
    """
    shown: dict[Any, Any] = {}
    async for updates in page.chat.ask(
        "send", text, chat_id, "openai/gpt-4o", "", 0.3, browser, request(), None, *(options or ())
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


async def test_a_chats_answer_options_come_back_with_it_and_a_new_chat_has_the_defaults(
    page: Page,
) -> None:
    me = visitor()
    searched = await send(page, me, "Look it up", options=(True, "medium", 300))
    chat_id = searched[page.ctx.conversation_id]
    fresh = page.chat.new_chat(request())
    assert fresh[page.chat.web_search] is False
    assert fresh[page.chat.reasoning_effort] == "off"
    assert fresh[page.chat.max_tokens] == 0  # the page's box for "the model's default"
    reopened = await opened(page, chat_id, me)
    assert reopened[page.chat.web_search] is True
    assert reopened[page.chat.max_tokens] == 300
    effort = reopened[page.chat.reasoning_effort]
    # openai/gpt-4o does not reason: the control is hidden and its effort was not asked for.
    assert effort == {"__type__": "update", "value": "off", "visible": False}


async def test_the_effort_control_follows_the_model(page: Page) -> None:
    assert page.chat.effort_shown("deepseek/deepseek-r1")[page.chat.reasoning_effort]["visible"]
    for model in ("openai/gpt-4o", "someone/custom-model", "", None):
        assert not page.chat.effort_shown(model)[page.chat.reasoning_effort]["visible"]


@pytest.mark.parametrize(
    ("web_search", "effort", "max_tokens", "named"),
    [
        ("yes", "off", None, "web_search"),
        (False, "extreme", None, "reasoning_effort"),
        (False, "off", 0, "max_tokens"),
        (False, "off", 12.5, "max_tokens"),
        (False, "off", "100", "max_tokens"),
        (False, "off", 1_000_001, "max_tokens"),
        (False, "off", True, "max_tokens"),
        (False, "off", float("nan"), "max_tokens"),
    ],
)
def test_odd_answer_options_are_refused_by_name(
    web_search: object, effort: object, max_tokens: object, named: str
) -> None:
    with pytest.raises(gr.Error, match=f"Invalid {named}"):
        answer_options(web_search, effort, max_tokens)


def test_answer_options_not_given_are_the_chats_own() -> None:
    assert answer_options(None, None, None) is None
    assert answer_options(True, None, 64.0) == AnswerOptions(web_search=True, max_tokens=64)


async def test_another_model_is_offered_only_for_a_chat_of_ones_own(page: Page) -> None:
    owner, intruder = visitor(), visitor()
    chat_id = (await send(page, owner, "Mine"))[page.ctx.conversation_id]
    offered = await page.chat.offer_other_model(
        "0", chat_id, "openai/gpt-4o", owner, request(), None
    )
    assert offered[page.chat.other_nth] == 0
    assert offered[page.chat.other_row]["visible"] is True
    retry = shown_as_toast(page.chat.retry_other_model)
    with pytest.warns(UserWarning):
        frames = [
            u
            async for u in retry(
                0, "x-ai/grok-4", chat_id, "", 0.3, intruder, request("evil"), None
            )
        ]
    assert frames == [gr.skip()]
    for junk in ("", "-1", "0:1", "x" * 10):
        with pytest.warns(UserWarning):
            refused = await shown_as_toast(page.chat.offer_other_model)(
                junk, chat_id, "openai/gpt-4o", owner, request(), None
            )
        assert refused == gr.skip()


class _Markup(HTMLParser):
    """The elements and attributes of a piece of HTML, and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text += data


@given(st.text(max_size=80), st.text(max_size=80))
def test_any_source_is_listed_as_inert_text_or_a_safe_link(url: str, title: str) -> None:
    source = Source(url=url, title=title)
    shown = sources_html([source])
    assert "\n" not in shown  # one line: the copy button and Markdown see one block
    markup = _Markup()
    markup.feed(shown)
    assert {tag for tag, _ in markup.tags} <= {"div", "span", "ol", "li", "a"}
    links = [attrs for tag, attrs in markup.tags if tag == "a"]
    if source.link is None:
        assert links == []
    else:
        assert len(links) == 1
        assert links[0]["href"] is not None and links[0]["href"].startswith(("http", "HTTP"))
        assert links[0]["target"] == "_blank"
        assert links[0]["rel"] == "noopener noreferrer"
    for tag, attrs in markup.tags:
        assert not any(name.startswith("on") for name in attrs), tag
    # Nothing Markdown or LaTeX would read as markup is left in the text from the web.
    body = shown.split("<ol>", 1)[1]
    text_parts = [part.split(">", 1)[-1] for part in body.split("<")]
    assert not any(c in part for part in text_parts for c in "*_[]()`$\\")


def test_a_hostile_source_title_is_shown_as_written() -> None:
    title = "<img src=x onerror=alert(1)> [click](javascript:alert(2)) $$x$$"
    shown = sources_html([Source("javascript:alert(3)", title)])
    markup = _Markup()
    markup.feed(shown)
    assert [tag for tag, _ in markup.tags] == ["div", "span", "ol", "li", "span"]
    assert title in markup.text and "javascript:alert(3)" in markup.text
