"""Raw ids and keys never reach the logs, whatever a visitor does."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from chatlib.logging import configure_logging
from tests.conftest import TEST_API_KEY
from tests.fakes.openrouter import FakeOpenRouter
from tests.security.conftest import (
    VISITOR_KEY,
    PageFactory,
    authorization_of_last_chat,
    collect,
    request,
    send,
    visitor_state,
)
from ui.errors import shown_as_toast


async def test_a_whole_journey_leaves_no_visitor_id_or_key_in_the_logs(
    make_page: PageFactory, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    page = await make_page(ALLOW_USER_KEYS="true", LOG_LEVEL="DEBUG", LOG_JSON="true")
    settings = page.ctx.settings
    console = io.StringIO()
    configure_logging(settings, stream=console, redactor=page.ctx.services.redactor)
    me = visitor_state()
    session = "journey-page"
    here = {"session": session, "peer": "203.0.113.99"}

    chat_id = await send(page, me, "Plan my trip [[tokens=3]]", **here)
    await page.sidebar.rename("Trip", chat_id, me, request(**here), None)
    exported = await page.transfer.export("all", None, me, request(**here), None)
    export_path = exported[page.transfer.export_file]["value"]
    copy = tmp_path / "reimport.json"
    document = json.loads(Path(export_path).read_text(encoding="utf-8"))
    for conversation in document["conversations"]:
        conversation.pop("id", None)  # imported as new chats
    copy.write_text(json.dumps(document), encoding="utf-8")
    await page.transfer.import_file(str(copy), me, request(**here), None)
    await page.own_key.use_key(VISITOR_KEY, False, me, request(**here), None)
    await collect(
        page.chat.ask(
            "send",
            "With my key [[tokens=2]]",
            chat_id,
            "openai/gpt-4o",
            "",
            0.3,
            me,
            request(**here),
            None,
        )
    )
    assert authorization_of_last_chat(fake) == f"Bearer {VISITOR_KEY}"  # the journey was real
    remembered = await page.own_key.use_key(VISITOR_KEY, True, me, request(**here), None)
    me = remembered[page.ctx.browser_state]
    page.own_key.forget_key(me, request(**here))
    with pytest.warns(UserWarning):  # and a refusal or two along the way
        await shown_as_toast(page.own_key.use_key)(
            "sk-or-v1-invalid000000", False, me, request(**here), None
        )
    await page.on_load({"anon_id": "tampered", "api_key": VISITOR_KEY}, request(**here), None)

    written = console.getvalue() + settings.log_path.read_text(encoding="utf-8")
    assert "chat.finished" in written  # the logs did record the journey
    for secret in (me["anon_id"], TEST_API_KEY, VISITOR_KEY, "sk-or-v1-invalid000000"):
        assert secret not in written
    assert page.ctx.services.server_secret not in written
