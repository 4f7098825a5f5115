"""Break 8: every handler looks a conversation up by the caller, never by what the page holds."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
import pytest

from tests.fakes.openrouter import FakeOpenRouter
from tests.security.conftest import PageFactory, request, send, visitor_state
from ui.errors import shown_as_toast
from ui.page import Page

SECRET = "My secret plan [[tokens=2]]"


def menu(action: str, chat_id: str, **more: str) -> str:
    """A ⋯ menu action as the page sends it."""
    return json.dumps({"action": action, "id": chat_id, **more})


async def owners_view(page: Page, owner: dict[str, Any], chat_id: str) -> tuple[Any, str]:
    conversation = await page.ctx.services.conversations.open(
        page.ctx.visitor(owner, None, request()).owner_key, chat_id
    )
    return conversation.messages, conversation.title


async def test_another_visitors_chat_id_is_refused_by_every_handler(
    make_page: PageFactory, fake: FakeOpenRouter
) -> None:
    page = await make_page()
    owner, intruder = visitor_state(), visitor_state()
    chat_id = await send(page, owner, SECRET)
    before = await owners_view(page, owner, chat_id)
    upstream_before = len(fake.chat_requests())
    evil = request("intruder-page", peer="198.51.100.66")
    edited = gr.EditData(None, {"index": 0, "value": "pwned", "previous_value": SECRET})
    settings = ("openai/gpt-4o", "", 0.3)

    calls: dict[str, tuple[Any, tuple[Any, ...]]] = {
        "export": (page.transfer.export, ("current", chat_id)),
        "export markdown": (page.transfer.export, ("markdown", chat_id)),
        "undo": (page.chat.undo, (chat_id,)),
        "rename": (page.sidebar.rename, ("pwned", chat_id)),
        "delete": (page.sidebar.delete, (chat_id, None)),
        "menu rename": (page.sidebar.act, (menu("rename", chat_id, title="pwned"), None, "")),
        "menu delete": (page.sidebar.act, (menu("delete", chat_id), None, "")),
        "menu export": (page.sidebar.act, (menu("export-json", chat_id), None, "")),
        "switch version": (page.chat.switch_version, ("0:1", chat_id)),
    }
    for name, (handler, args) in calls.items():
        with pytest.warns(UserWarning):
            result = await shown_as_toast(handler)(*args, intruder, evil, None)
        assert result == gr.skip(), name

    streams = {
        "retry": shown_as_toast(page.chat.ask)(
            "retry", None, chat_id, *settings, intruder, evil, None
        ),
        "edit": shown_as_toast(page.chat.edit)(chat_id, *settings, intruder, edited, evil, None),
        "open": shown_as_toast(page.chat.open_conversation)(chat_id, intruder, evil, None),
        "send into it": shown_as_toast(page.chat.ask)(
            "send", "and this", chat_id, *settings, intruder, evil, None
        ),
    }
    for name, frames in streams.items():
        with pytest.warns(UserWarning):
            assert [u async for u in frames] == [gr.skip()], name

    assert await owners_view(page, owner, chat_id) == before
    assert len(fake.chat_requests()) == upstream_before  # nothing was asked on their bill
    listed = await page.sidebar.search("", None, intruder, evil, None)
    assert listed[page.sidebar.conversation_list]["choices"] == []
