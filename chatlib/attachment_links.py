"""Private, expiring links to a visitor's stored attachments.

A link is `/attachment/<token>`. The token carries what the route needs to find and serve the
file (owner key, SHA-256, expiry, MIME type, name), base64url-encoded, then an HMAC-SHA256 of
it under the server secret. The HMAC also covers the browser's *seat*: a random value kept in
an HttpOnly, SameSite=Strict cookie (see `chatlib.attachment_route`). The seat is never in the
link, so a link copied to another browser, or fetched by a plain HTTP client, does not verify
even before it expires. Pure functions: the clock and the secret are passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

import orjson

from chatlib.attachments import IMAGE_MIMES, PDF_MIME, TEXT_MIME, AttachmentRef

LINK_PREFIX: Final = "/attachment/"
SEAT_COOKIE: Final = "orc_seat"
LINK_LIFETIME_SECONDS: Final = 3600
# Expiries are rounded up to this step so a chat redrawn many times a second (a streaming
# answer) keeps the same image URLs and the browser does not fetch them again.
EXPIRY_STEP_SECONDS: Final = 600
MAX_TOKEN_CHARS: Final = 2048
_LABEL: Final = b"openrouter-chat/attachment-link/v1"
_SEAT_RE: Final = re.compile(r"[A-Za-z0-9_-]{22,64}")
_OWNER_RE: Final = re.compile(r"[0-9a-f]{1,64}")
_SHA_RE: Final = re.compile(r"[0-9a-f]{64}")
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,2000}\.[A-Za-z0-9_-]{43}")
SERVED_MIMES: Final = frozenset((*IMAGE_MIMES, PDF_MIME, TEXT_MIME))


@dataclass(frozen=True)
class SignedLink:
    """What a verified token says: whose file, which one, until when, and how to serve it."""

    owner_key: str
    sha256: str
    expires_at: int  # Unix seconds
    mime: str
    name: str


def new_seat() -> str:
    """A fresh random seat for a browser (128 bits)."""
    return secrets.token_urlsafe(16)


def is_valid_seat(value: object) -> bool:
    """True for a value shaped like one `new_seat` makes."""
    return isinstance(value, str) and _SEAT_RE.fullmatch(value) is not None


def seat_from_cookie_header(header: str | None) -> str | None:
    """The seat in a Cookie header, or None (absent or malformed)."""
    if not header:
        return None
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == SEAT_COOKIE and is_valid_seat(value):
            return value
    return None


def link_expiry(now: float) -> int:
    """When a link signed at `now` expires: at least an hour away, on a 10-minute step."""
    earliest = int(now) + LINK_LIFETIME_SECONDS
    return -(-earliest // EXPIRY_STEP_SECONDS) * EXPIRY_STEP_SECONDS


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: str, seat: str) -> bytes:
    key = hmac.new(secret.encode("utf-8"), _LABEL, hashlib.sha256).digest()
    return hmac.new(key, f"{payload}.{seat}".encode("ascii"), hashlib.sha256).digest()


def sign(secret: str, owner_key: str, ref: AttachmentRef, seat: str, expires_at: int) -> str:
    """A token for `ref` of `owner_key`, good until `expires_at` in the browser holding `seat`."""
    fields = [owner_key, ref.sha256, expires_at, ref.mime, ref.name]
    payload = _b64(orjson.dumps(fields))
    return f"{payload}.{_b64(_mac(secret, payload, seat))}"


def link_path(secret: str, owner_key: str, ref: AttachmentRef, seat: str, now: float) -> str:
    """The URL path of a link to `ref` (absolute path, same origin as the page)."""
    return LINK_PREFIX + sign(secret, owner_key, ref, seat, link_expiry(now))


def verify(secret: str, token: str, seat: str | None, now: float) -> SignedLink | None:
    """What `token` grants to the browser holding `seat` at `now`; None if anything is off.

    Never says why: a bad signature, another browser, an expired or malformed token all look
    the same to the caller (and so to whoever asked).
    """
    if seat is None or not is_valid_seat(seat) or len(token) > MAX_TOKEN_CHARS:
        return None
    if _TOKEN_RE.fullmatch(token) is None:
        return None
    payload, mac_text = token.split(".")
    try:
        given = _unb64(mac_text)
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(given, _mac(secret, payload, seat)):
        return None
    link = _parsed(payload)
    if link is None or link.expires_at <= now:
        return None
    return link


def _parsed(payload: str) -> SignedLink | None:
    try:
        fields = orjson.loads(_unb64(payload))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(fields, list) or len(fields) != 5:
        return None
    owner_key, sha256, expires_at, mime, name = fields
    if not (isinstance(owner_key, str) and _OWNER_RE.fullmatch(owner_key)):
        return None
    if not (isinstance(sha256, str) and _SHA_RE.fullmatch(sha256)):
        return None
    if isinstance(expires_at, bool) or not isinstance(expires_at, int):
        return None
    if mime not in SERVED_MIMES or not isinstance(name, str):
        return None
    return SignedLink(owner_key, sha256, expires_at, mime, name)
