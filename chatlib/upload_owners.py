"""Gradio's copy of an uploaded file, served back only to the browser that uploaded it.

Gradio keeps every upload in its cache (`DATA_DIR/gradio/<hash>/<name>`, the hash keyed by
a secret seed) and serves it through `/gradio_api/file=<path>` to anyone who asks for that
path. The path is unguessable, but once known (a shared screenshot of the network panel, a
log, a proxy) it would open the file to anybody. This ASGI middleware (no Gradio import)
remembers which browser uploaded each path — its seat cookie (`chatlib.attachment_links`),
or, for a client without one, its IP resolved like the rate limit's — and answers a request
for an uploaded path from anyone else with a bare 404. Paths it did not see uploaded (the
app's own outputs, Gradio's assets) pass through unchanged.

The record is per process, like Gradio's own list of files it may serve: after a restart
Gradio serves none of the old uploads anyway.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final
from urllib.parse import unquote

import orjson
import structlog

from chatlib.attachment_links import seat_from_cookie_header
from chatlib.attachment_route import not_found
from chatlib.ratelimit import IPNetwork, client_ip
from chatlib.upload_guard import UPLOAD_PATH_SUFFIX, ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

FILE_ROUTE_MARK: Final = "/gradio_api/file="
MAX_RECORDED_UPLOADS: Final = 100_000  # about 20 MB of memory at most; oldest forgotten first
RECORD_SECONDS: Final = 3 * 3600  # Gradio's copies are swept after an hour (chatlib.retention)
MAX_UPLOAD_RESPONSE_BYTES: Final = 1_000_000  # the route answers with a short JSON list
Clock = Callable[[], float]


def _normal(path: str) -> str:
    """One spelling per file: absolute, `..` and `//` folded (no file-system access)."""
    return os.path.normpath(os.path.abspath(path))


class UploadOwners:
    """ASGI middleware: an uploaded file's path is served to its uploader only."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: Sequence[IPNetwork],
        clock: Clock = time.monotonic,
    ) -> None:
        self.app = app
        self.trusted_proxies = tuple(trusted_proxies)
        self.clock = clock
        self._holders: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def holder(self, scope: Scope) -> str:
        """Who is asking: the browser's seat, else the client's address."""
        headers = list(scope.get("headers") or [])
        cookie = next((bytes(v).decode("latin-1") for n, v in headers if n == b"cookie"), None)
        seat = seat_from_cookie_header(cookie)
        if seat is not None:
            return f"seat:{seat}"
        client = scope.get("client")
        forwarded = [bytes(v).decode("latin-1") for n, v in headers if n == b"x-forwarded-for"]
        return (
            f"ip:{client_ip(str(client[0]) if client else None, forwarded, self.trusted_proxies)}"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        method = scope.get("method")
        if method == "POST" and path.rstrip("/").endswith(UPLOAD_PATH_SUFFIX):
            await self._recording(scope, receive, send)
            return
        mark = path.find(FILE_ROUTE_MARK)
        if method in ("GET", "HEAD") and mark >= 0:
            asked = _normal(unquote(path[mark + len(FILE_ROUTE_MARK) :]))
            if not self._may_read(asked, self.holder(scope)):
                log.info("upload.not_served", reason="not_the_uploader")
                await not_found(send)
                return
        await self.app(scope, receive, send)

    def _may_read(self, path: str, holder: str) -> bool:
        entry = self._holders.get(path)
        if entry is None:
            return True  # not an upload this process saw: Gradio decides
        owner, at = entry
        if self.clock() - at > RECORD_SECONDS:
            return True  # long swept from the cache: Gradio answers 404 itself
        return owner == holder

    def _record(self, paths: object, holder: str) -> None:
        if not isinstance(paths, list):
            return
        now = self.clock()
        for path in paths:
            if isinstance(path, str) and path:
                key = _normal(path)
                self._holders[key] = (holder, now)
                self._holders.move_to_end(key)
        while len(self._holders) > MAX_RECORDED_UPLOADS:
            self._holders.popitem(last=False)

    async def _recording(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the upload on and note the paths its answer names, before the browser sees them."""
        holder = self.holder(scope)
        status = 0
        body = bytearray()
        held: list[Message] = []

        async def noting_send(message: Message) -> None:
            nonlocal status
            kind = message.get("type")
            if kind == "http.response.start":
                status = int(message.get("status", 0))
                held.append(message)
                return
            if kind != "http.response.body" or not held:
                await send(message)
                return
            body.extend(message.get("body", b""))
            held.append(message)
            if message.get("more_body") and len(body) <= MAX_UPLOAD_RESPONSE_BYTES:
                return
            if status == 200:
                try:
                    self._record(orjson.loads(bytes(body)), holder)
                except orjson.JSONDecodeError:
                    log.warning("upload.paths_unreadable")
            for waiting in held:
                await send(waiting)
            held.clear()

        await self.app(scope, receive, noting_send)
        for waiting in held:  # an answer that ended without a final body part
            await send(waiting)
