"""Upload guard: a per-client rate and a size cap in front of Gradio's upload route.

Gradio stores every file POSTed to `/gradio_api/upload` before any event sees it, with no
limit of its own on how often. This ASGI middleware (no Gradio import: it wraps any ASGI
app) refuses an upload that declares a body larger than the cap with 413, stops one that
sends more than it may (chunked, or lying about its length) with 413 as well, and refuses
more than `uploads_per_minute` uploads per client IP with 429 and Retry-After. The client
IP is resolved like the chat limit's (socket peer, X-Forwarded-For from trusted proxies
only), so a spoofed header does not dodge it. Every other request passes through as is.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

import orjson
import structlog

from chatlib.ratelimit import IPNetwork, RateLimiter, client_ip

log = structlog.get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Gradio 6's route (gradio/routes.py: APIRouter(prefix="/gradio_api"), @router.post("/upload")),
# matched at the end of the path so a root path or a mount in front still counts.
UPLOAD_PATH_SUFFIX: Final = "/gradio_api/upload"
# Room for the multipart envelope (boundaries, part headers, the file name) around the file.
MULTIPART_OVERHEAD_BYTES: Final = 64 * 1024


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.3g} MB"


class UploadGuard:
    """ASGI middleware limiting POSTs to Gradio's upload route by rate and size.

    `max_file_bytes` is the largest file allowed (Gradio's `max_file_size`); the body may
    be `MULTIPART_OVERHEAD_BYTES` larger. `limiter.hit_upload` counts the uploads (its
    UPLOADS_PER_MIN, in the same storage as the chat limit); `trusted_proxies` are the
    proxies whose X-Forwarded-For is believed.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        trusted_proxies: Sequence[IPNetwork],
        max_file_bytes: int,
        path_suffix: str = UPLOAD_PATH_SUFFIX,
    ) -> None:
        if max_file_bytes < 1:
            raise ValueError("max_file_bytes must be positive")
        self.app = app
        self.limiter = limiter
        self.trusted_proxies = tuple(trusted_proxies)
        self.max_file_bytes = max_file_bytes
        self.max_body_bytes = max_file_bytes + MULTIPART_OVERHEAD_BYTES
        self.path_suffix = path_suffix.rstrip("/")

    def _guards(self, scope: Scope) -> bool:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            return False
        path = str(scope.get("path", "")).rstrip("/")
        return path.endswith(self.path_suffix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._guards(scope):
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        declared = _content_length(headers)
        if declared is not None and declared > self.max_body_bytes:
            log.info("upload.refused", reason="too_large", declared_bytes=declared)
            await self._too_large(send)
            return
        client = scope.get("client")
        peer = str(client[0]) if client else None
        forwarded = [
            value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"
        ]
        decision = await self.limiter.hit_upload(client_ip(peer, forwarded, self.trusted_proxies))
        if not decision.allowed:
            wait = max(1, math.ceil(decision.retry_after_seconds))
            log.info("upload.refused", reason="rate_limited", retry_after_s=wait)
            await respond_json(
                send,
                429,
                f"Too many uploads from your address: the limit is {decision.limit} per "
                f"minute. Try again in {wait} s.",
                extra_headers=[(b"retry-after", str(wait).encode("ascii"))],
            )
            return
        await self._capped(scope, receive, send)

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the upload on, but stop it with 413 once its body outgrows the cap."""
        received = 0
        too_large = False
        started = False

        async def capped_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    log.info("upload.refused", reason="too_large", received_bytes=received)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:
                return  # the app's answer to a body cut short; ours is the 413 below
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        await respond_json(
            send,
            413,
            f"This file is too large: the limit is {_megabytes(self.max_file_bytes)}.",
            extra_headers=[(b"connection", b"close")],
        )


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else None
    return None


async def respond_json(
    send: Send,
    status: int,
    message: str,
    *,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
