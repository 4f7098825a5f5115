"""`GET /attachment/<token>`: a visitor's stored file, to that visitor's browser only.

ASGI middleware (no Gradio import) in front of the app. It does two things:

- On page loads (a GET that asks for HTML) without a seat cookie it adds one: a random value,
  HttpOnly and SameSite=Strict, that the chat handler reads from the request's Cookie header
  to sign the page's attachment links (`chatlib.attachment_links`).
- It answers `/attachment/<token>`: the signature, the expiry and the seat of the browser
  asking must all check out, and the owner in the token must hold the file; then the bytes
  go out with their stored type, never sniffed, never cached by shared caches, and with a
  `default-src 'none'` policy for anything that is not a picture. Anything wrong is a bare
  404 that never says why.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import quote

import structlog

from chatlib.attachment_links import (
    LINK_PREFIX,
    SEAT_COOKIE,
    SignedLink,
    new_seat,
    seat_from_cookie_header,
    verify,
)
from chatlib.attachments import IMAGE_MIMES, TEXT_MIME
from chatlib.errors import ChatError
from chatlib.upload_guard import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

LoadAttachment = Callable[[str, str], Awaitable[bytes]]  # (owner_key, sha256) -> bytes
Clock = Callable[[], float]
SEAT_MAX_AGE_SECONDS: Final = 400 * 24 * 3600  # browsers cap cookies at 400 days anyway
NOT_FOUND: Final = b"Not found"


class AttachmentRoute:
    """ASGI middleware: sets the seat cookie on page loads and serves attachment links."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        secret: str,
        load: LoadAttachment,
        clock: Clock = time.time,
        embedded: bool = False,
    ) -> None:
        """`embedded`: the page is shown inside another site's frame (a Space on huggingface.co).

        A Strict or Lax cookie is never sent from inside a frame of another site, so there the
        seat is a partitioned cookie (`SameSite=None; Secure; Partitioned`): kept for this
        frame on that site only, still HttpOnly, still unreadable by any other site.
        """
        self.embedded = embedded
        self.app = app
        self.secret = secret
        self.load = load
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        headers = _headers(scope)
        if path.startswith(LINK_PREFIX):
            await self._serve(scope, path[len(LINK_PREFIX) :], headers.get("cookie"), send)
            return
        if not _wants_seat(scope, headers):
            await self.app(scope, receive, send)
            return
        cookie = _seat_cookie(
            new_seat(), secure=scope.get("scheme") == "https", embedded=self.embedded
        )

        async def with_seat(message: Message) -> None:
            if message.get("type") == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), cookie]}
            await send(message)

        await self.app(scope, receive, with_seat)

    async def _serve(self, scope: Scope, token: str, cookie: str | None, send: Send) -> None:
        if scope.get("method") not in ("GET", "HEAD"):
            await not_found(send)
            return
        now = self.clock()
        link = verify(self.secret, token, seat_from_cookie_header(cookie), now)
        if link is None:
            await not_found(send)
            return
        try:
            data = await self.load(link.owner_key, link.sha256)
        except (ChatError, LookupError, OSError) as exc:
            log.info("attachment.not_served", error=type(exc).__name__)
            await not_found(send)
            return
        body = b"" if scope.get("method") == "HEAD" else data
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _file_headers(link, len(data), max(0, int(link.expires_at - now))),
            }
        )
        await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the last of a repeated one wins)."""
    return {
        bytes(name).decode("latin-1").lower(): bytes(value).decode("latin-1")
        for name, value in scope.get("headers") or []
    }


def _wants_seat(scope: Scope, headers: dict[str, str]) -> bool:
    """A page load (a GET asking for HTML) from a browser with no valid seat yet."""
    if scope.get("method") != "GET" or "text/html" not in headers.get("accept", ""):
        return False
    return seat_from_cookie_header(headers.get("cookie")) is None


def _seat_cookie(seat: str, *, secure: bool, embedded: bool = False) -> tuple[bytes, bytes]:
    value = f"{SEAT_COOKIE}={seat}; Path=/; Max-Age={SEAT_MAX_AGE_SECONDS}; HttpOnly"
    if embedded:
        value += "; SameSite=None; Secure; Partitioned"
    else:
        value += "; SameSite=Strict" + ("; Secure" if secure else "")
    return (b"set-cookie", value.encode("ascii"))


def _file_headers(link: SignedLink, size: int, max_age: int) -> list[tuple[bytes, bytes]]:
    is_image = link.mime in IMAGE_MIMES
    content_type = f"{TEXT_MIME}; charset=utf-8" if link.mime == TEXT_MIME else link.mime
    disposition = "attachment" if link.mime == TEXT_MIME else "inline"
    headers = [
        (b"content-type", content_type.encode("ascii")),
        (b"content-length", str(size).encode("ascii")),
        (b"content-disposition", _disposition(disposition, link.name).encode("ascii")),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", f"private, max-age={max_age}".encode("ascii")),
        (b"referrer-policy", b"no-referrer"),
        (b"vary", b"Cookie"),
    ]
    if not is_image:
        headers.append((b"content-security-policy", b"default-src 'none'"))
    return headers


def _disposition(kind: str, name: str) -> str:
    """`inline` or `attachment` with the name: an ASCII fallback and the exact UTF-8 one."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    return f"{kind}; filename=\"{fallback or 'file'}\"; filename*=UTF-8''{quote(name, safe='')}"


async def not_found(send: Send) -> None:
    """A bare 404 that never says why."""
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(NOT_FOUND)).encode("ascii")),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": NOT_FOUND})
