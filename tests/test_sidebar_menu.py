"""The ⋯ menu's server side: what the hidden channel accepts, and what each action does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatlib.services import create_services
from tests.conftest import settings_for
from tests.fakes.openrouter import FakeOpenRouter
from tests.test_ui_handlers import request, send, visitor
from ui.errors import shown_as_toast
from ui.page import Page
from ui.sidebar import IMPORTED_MARK, MAX_ACTION_CHARS, ChatAction, parse_action

CHAT_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def page(fake: FakeOpenRouter, tmp_path: Path) -> AsyncIterator[Page]:
    settings = settings_for(fake, tmp_path, DATA_DIR=str(tmp_path / "data"))
    services = create_services(settings)
    yield Page(settings, services)
    await services.aclose()


def action(name: str, chat_id: str, **more: Any) -> str:
    return json.dumps({"action": name, "id": chat_id, **more})


def labels(updates: dict[Any, Any], page: Page) -> list[str]:
    return [label for label, _ in updates[page.sidebar.conversation_list]["choices"]]


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ("", "the request: Invalid JSON"),
        ("[1, 2]", "the request"),
        (action("drop", CHAT_ID), "action: Input should be 'rename'"),
        (action("delete", "../../etc/passwd"), "id: Value error, must be a conversation id"),
        (action("delete", CHAT_ID.upper()), "id: Value error"),
        (json.dumps({"action": "delete", "id": 5}), "id: Input should be a valid string"),
        (action("rename", CHAT_ID), "a title comes with 'rename'"),
        (action("delete", CHAT_ID, title="x"), "a title comes with 'rename'"),
        (action("delete", CHAT_ID, owner="someone"), "owner: Extra inputs are not permitted"),
        (action("rename", CHAT_ID, title="x" * MAX_ACTION_CHARS), "the limit is"),
    ],
)
def test_a_malformed_action_is_refused_naming_the_field_and_the_rule(
    payload: str, named: str
) -> None:
    with pytest.raises(gr.Error, match="That chat action was refused") as refused:
        parse_action(payload)
    assert named in refused.value.message


def test_each_menu_action_is_understood() -> None:
    assert parse_action(action("rename", CHAT_ID, title="Trip")) == ChatAction(
        action="rename", id=CHAT_ID, title="Trip"
    )
    for name in ("delete", "export-json", "export-markdown"):
        assert parse_action(action(name, CHAT_ID)).action == name


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_text_is_an_action_or_a_refusal(payload: str) -> None:
    try:
        parsed = parse_action(payload)
    except gr.Error:
        return
    assert parsed.action in {"rename", "delete", "export-json", "export-markdown"}


async def test_renaming_another_chat_from_its_menu_leaves_the_open_one_selected(
    page: Page,
) -> None:
    me = visitor()
    other = (await send(page, me, "Paris trip"))[page.ctx.conversation_id]
    open_id = (await send(page, me, "Python decorators"))[page.ctx.conversation_id]
    shown = await page.sidebar.act(
        action("rename", other, title="Holiday"), open_id, "", me, request(), None
    )
    assert any(label.startswith("Holiday") for label in labels(shown, page))
    assert "value" not in shown[page.sidebar.conversation_list]  # the selection is not touched
    assert page.chat.chatbot not in shown
    assert json.loads(shown[page.sidebar.titles])[other] == "Holiday"


async def test_deleting_the_open_chat_clears_the_chat_area_and_another_does_not(
    page: Page,
) -> None:
    me = visitor()
    first = (await send(page, me, "First"))[page.ctx.conversation_id]
    second = (await send(page, me, "Second"))[page.ctx.conversation_id]
    kept_open = await page.sidebar.act(action("delete", first), second, "", me, request(), None)
    assert page.chat.chatbot not in kept_open
    assert [label.split(" · ")[0] for label in labels(kept_open, page)] == ["Second"]
    cleared = await page.sidebar.act(action("delete", second), second, "", me, request(), None)
    assert cleared[page.chat.chatbot] == []
    assert cleared[page.ctx.conversation_id] is None
    assert labels(cleared, page) == []


async def test_export_from_the_menu_hands_a_file_to_the_page(page: Page) -> None:
    me = visitor()
    chat_id = (await send(page, me, "Export me"))[page.ctx.conversation_id]
    payload = action("export-markdown", chat_id)
    shown = await page.sidebar.act(payload, None, "", me, request(), None)
    path = Path(shown[page.transfer.export_file]["value"])
    assert path.suffix == ".md"
    assert "Export me" in path.read_text(encoding="utf-8")


async def test_an_imported_chat_is_marked_in_the_list(page: Page, tmp_path: Path) -> None:
    me = visitor()
    await send(page, me, "Made here")
    document = {
        "format": "openrouter-chat",
        "schema_version": 1,
        "conversations": [
            {
                "title": "Brought in",
                "model": "m",
                "system_prompt": "",
                "temperature": 0.3,
                "created_at": 1_700_000_000,
                "updated_at": 1_700_000_000,
                "messages": [{"role": "user", "content": "hello"}],
            }
        ],
    }
    upload = tmp_path / "import.json"
    upload.write_text(json.dumps(document), encoding="utf-8")
    shown = await page.transfer.import_file(str(upload), me, request(), None)
    marked = [label for label in labels(shown, page) if label.endswith(IMPORTED_MARK)]
    assert [label.split(" · ")[0] for label in marked] == ["Brought in"]


async def test_a_forged_action_from_another_visitor_changes_nothing(page: Page) -> None:
    owner, intruder = visitor(), visitor()
    chat_id = (await send(page, owner, "Mine"))[page.ctx.conversation_id]
    for payload in (action("rename", chat_id, title="pwned"), action("delete", chat_id)):
        with pytest.warns(UserWarning, match="does not exist"):
            result = await shown_as_toast(page.sidebar.act)(
                payload, chat_id, "", intruder, request("evil"), None
            )
        assert result == gr.skip()
    listed = await page.sidebar.search("", None, owner, request(), None)
    assert [label.split(" · ")[0] for label in labels(listed, page)] == ["Mine"]
