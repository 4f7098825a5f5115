"""Break 4: the stored state is described honestly, and a bad one starts a fresh identity."""

from __future__ import annotations

import re
from typing import Any

import pytest
from structlog.testing import capture_logs

from chatlib.identity import is_valid_anonymous_id
from tests.conftest import REPO
from tests.security.conftest import PageFactory, request, send, visitor_state


def readme() -> str:
    return " ".join((REPO / "README.md").read_text(encoding="utf-8").split())


def test_the_readme_calls_the_stored_state_a_bearer_credential_not_encryption() -> None:
    text = readme()
    assert not re.search(r"\bencrypt", text, re.IGNORECASE), "the README still says encrypted"
    assert "bearer" in text.lower()
    assert "local storage" in text
    assert re.search(r"(anyone|whoever)[^.]{0,60}browser profile", text, re.IGNORECASE)
    assert "## Security model" in (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ("not even json", "not_an_object"),
        ([1, 2, 3], "not_an_object"),
        ({"api_key": None}, "anon_id_missing"),
        ({"anon_id": "../../etc/passwd"}, "anon_id_wrong_shape"),
        ({"anon_id": "x" * 10_000}, "anon_id_wrong_shape"),
        ({"anon_id": 12345}, "anon_id_wrong_shape"),
        ({"anon_id": "A" * 22 + "\n"}, "anon_id_wrong_shape"),  # a valid shape, then a newline
    ],
    ids=lambda v: repr(v)[:20],
)
async def test_a_tampered_stored_state_gets_a_fresh_identity_and_a_log_line(
    make_page: PageFactory, stored: Any, reason: str
) -> None:
    page = await make_page()
    with capture_logs() as logs:
        loaded = await page.on_load(stored, request(), None)
    fresh = loaded[page.ctx.browser_state]
    assert is_valid_anonymous_id(fresh["anon_id"])
    if isinstance(stored, dict):
        assert fresh["anon_id"] != stored.get("anon_id")
    rejected = [e for e in logs if e["event"] == "identity.state_rejected"]
    assert [e["reason"] for e in rejected] == [reason]
    assert str(stored)[:40] not in str(rejected)  # the value itself is not logged
    assert loaded[page.session_ready]  # the page finished loading: no error page


async def test_a_fresh_identity_sees_none_of_anyone_elses_chats(make_page: PageFactory) -> None:
    page = await make_page()
    await send(page, visitor_state(), "Someone else's chat [[tokens=2]]")
    loaded = await page.on_load({"anon_id": "forged"}, request(), None)
    assert loaded[page.sidebar.conversation_list]["choices"] == []
