"""Private attachment links: signed for one owner, one file, one browser, one hour."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatlib.attachment_links import (
    LINK_LIFETIME_SECONDS,
    SEAT_COOKIE,
    link_expiry,
    link_path,
    new_seat,
    seat_from_cookie_header,
    sign,
    verify,
)
from chatlib.attachment_route import AttachmentRoute
from chatlib.attachments import AttachmentRef
from chatlib.errors import StorageError

SECRET = "s" * 64
OWNER = "a" * 32
OTHER_OWNER = "b" * 32
NOW = 1_800_000_000.0
PNG = b"\x89PNG\r\n\x1a\n" + b"picture bytes"
TEXT = b"<script>alert(1)</script> notes"


def ref_of(data: bytes, name: str, mime: str, kind: Any) -> AttachmentRef:
    return AttachmentRef(hashlib.sha256(data).hexdigest(), name, mime, len(data), kind)


PHOTO = ref_of(PNG, "holiday ü.png", "image/png", "image")
NOTES = ref_of(TEXT, "notes.txt", "text/plain", "text")


def test_a_link_verifies_in_the_browser_it_was_signed_for_until_it_expires() -> None:
    seat = new_seat()
    token = sign(SECRET, OWNER, PHOTO, seat, link_expiry(NOW))
    link = verify(SECRET, token, seat, NOW + LINK_LIFETIME_SECONDS - 1)
    assert link is not None
    assert (link.owner_key, link.sha256, link.mime, link.name) == (
        OWNER,
        PHOTO.sha256,
        "image/png",
        "holiday ü.png",
    )
    assert verify(SECRET, token, seat, link.expires_at) is None  # expired


def test_another_browser_a_missing_cookie_or_another_secret_gets_nothing() -> None:
    seat = new_seat()
    token = sign(SECRET, OWNER, PHOTO, seat, link_expiry(NOW))
    assert seat not in token  # the seat is never in the link itself
    assert verify(SECRET, token, new_seat(), NOW) is None
    assert verify(SECRET, token, None, NOW) is None
    assert verify("t" * 64, token, seat, NOW) is None


def test_a_tampered_token_is_refused() -> None:
    seat = new_seat()
    token = sign(SECRET, OWNER, PHOTO, seat, link_expiry(NOW))
    forged = sign(SECRET, OTHER_OWNER, PHOTO, seat, link_expiry(NOW)).split(".")[0]
    assert verify(SECRET, forged + "." + token.split(".")[1], seat, NOW) is None


@given(st.text(max_size=300))
def test_any_string_is_refused_without_an_exception(token: str) -> None:
    assert verify(SECRET, token, new_seat(), NOW) is None


def test_links_stay_the_same_while_an_answer_streams() -> None:
    seat = new_seat()
    first = link_path(SECRET, OWNER, PHOTO, seat, NOW + 5)
    assert link_path(SECRET, OWNER, PHOTO, seat, NOW + 60) == first
    assert link_expiry(NOW) - NOW >= LINK_LIFETIME_SECONDS


def test_the_seat_is_read_from_a_cookie_header() -> None:
    seat = new_seat()
    assert seat_from_cookie_header(f"a=1; {SEAT_COOKIE}={seat}; b=2") == seat
    assert seat_from_cookie_header(f"{SEAT_COOKIE}=short") is None
    assert seat_from_cookie_header(None) is None


# ---- the route -----------------------------------------------------------------------------


class FakeAttachmentStore:
    """Stand-in for the attachment store: bytes by (owner, sha256); another owner's raise."""

    def __init__(self) -> None:
        self.files = {(OWNER, PHOTO.sha256): PNG, (OWNER, NOTES.sha256): TEXT}

    async def get(self, owner_key: str, sha256: str) -> bytes:
        try:
            return self.files[(owner_key, sha256)]
        except KeyError:
            raise StorageError("No such attachment.") from None


async def page(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app behind the route: an HTML page."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"<html></html>"})


@pytest.fixture
def client() -> httpx.AsyncClient:
    route = AttachmentRoute(page, secret=SECRET, load=FakeAttachmentStore().get, clock=lambda: NOW)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=route), base_url="http://app")


async def seated(client: httpx.AsyncClient) -> str:
    """Load the page like a browser does; the seat the route gave it."""
    answer = await client.get("/", headers={"accept": "text/html"})
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    seat = seat_from_cookie_header(cookie.split(";")[0])
    assert seat is not None
    return seat


async def test_the_owner_s_browser_gets_the_picture_inline(client: httpx.AsyncClient) -> None:
    seat = await seated(client)
    answer = await client.get(link_path(SECRET, OWNER, PHOTO, seat, NOW))
    assert answer.status_code == 200
    assert answer.content == PNG
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["content-disposition"].startswith('inline; filename="holiday _.png"')
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == f"private, max-age={int(link_expiry(NOW) - NOW)}"
    again = await client.get("/", headers={"accept": "text/html"})
    assert "set-cookie" not in again.headers  # the seat stays


async def test_a_text_file_downloads_and_cannot_run_scripts(client: httpx.AsyncClient) -> None:
    seat = await seated(client)
    answer = await client.get(link_path(SECRET, OWNER, NOTES, seat, NOW))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.headers["content-disposition"].startswith("attachment;")
    assert answer.headers["content-security-policy"] == "default-src 'none'"


async def test_anything_wrong_is_a_bare_404(client: httpx.AsyncClient) -> None:
    seat = await seated(client)
    path = link_path(SECRET, OWNER, PHOTO, seat, NOW)
    client.cookies.clear()
    other_browser = await client.get(path, headers={"cookie": f"{SEAT_COOKIE}={new_seat()}"})
    no_cookie = await client.get(path)
    not_theirs = await client.get(
        link_path(SECRET, OTHER_OWNER, PHOTO, seat, NOW),
        headers={"cookie": f"{SEAT_COOKIE}={seat}"},
    )
    garbage = await client.get("/attachment/nonsense", headers={"cookie": f"{SEAT_COOKIE}={seat}"})
    for answer in (other_browser, no_cookie, not_theirs, garbage):
        assert answer.status_code == 404
        assert answer.content == b"Not found"


async def test_expired_links_are_refused(client: httpx.AsyncClient) -> None:
    seat = await seated(client)
    stale = link_path(SECRET, OWNER, PHOTO, seat, NOW - 2 * LINK_LIFETIME_SECONDS)
    assert (await client.get(stale)).status_code == 404


async def test_on_a_space_the_seat_cookie_also_reaches_the_frame_on_huggingface_co() -> None:
    # A Space is shown in a frame of huggingface.co: a Strict cookie would never be sent there.
    route = AttachmentRoute(
        page, secret=SECRET, load=FakeAttachmentStore().get, clock=lambda: NOW, embedded=True
    )
    transport = httpx.ASGITransport(app=route)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as embedded:
        answer = await embedded.get("/", headers={"accept": "text/html"})
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=None" in cookie
    assert "Secure" in cookie and "Partitioned" in cookie  # kept for that frame only
