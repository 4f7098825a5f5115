"""Request guard: a client's malformed request gets a short 4xx, never a traceback in the log.

Two holes in the server under the app are closed here (ASGI middleware, no Gradio import):

- Gradio's REST route `POST /gradio_api/call/<api_name>` needs a value for every input, even
  those the function gives defaults; with fewer it answers `{"error": null}` and logs a
  traceback that quotes every input it received (a visitor's text in the log). Bodies for
  the listed endpoints are padded with nulls, which the endpoint reads as "use the default",
  and capped in size.
- A request that makes a route raise (an unknown event number, a multipart part that is not
  a file) would be logged with a traceback and answered 500. It is answered 400 and logged
  as one line with the error's type and where it was raised: never its text, which may quote
  the request.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from typing import Final

import orjson
import structlog

from chatlib.upload_guard import ASGIApp, Message, Receive, Scope, Send, respond_json

log = structlog.get_logger(__name__)

CALL_PREFIX: Final = "/gradio_api/call/"
MAX_CALL_BODY_BYTES: Final = 32 * 1024 * 1024
# Errors a route raises on input it did not expect: the client's mistake.
CLIENT_ERRORS: Final = (KeyError, IndexError, TypeError, ValueError, UnicodeError)


class RequestGuard:
    """ASGI middleware: pads REST calls of `api_inputs` endpoints, turns crashes into 4xx."""

    def __init__(self, app: ASGIApp, *, api_inputs: Mapping[str, int]) -> None:
        self.app = app
        self.api_inputs = dict(api_inputs)  # endpoint name -> how many inputs it takes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        inputs = self._call_inputs(scope)
        try:
            if inputs is None:
                await self.app(scope, receive, watched_send)
            else:
                await self._padded_call(scope, receive, watched_send, inputs)
        except CLIENT_ERRORS as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log.warning(
                "http.bad_request",
                path=scope.get("path", ""),
                error=type(exc).__name__,
                raised_at=f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}",
            )
            if not started:
                await respond_json(send, 400, "The request is malformed.")

    def _call_inputs(self, scope: Scope) -> int | None:
        path = str(scope.get("path", ""))
        if scope.get("method") != "POST" or CALL_PREFIX not in path:
            return None
        name = path.rsplit(CALL_PREFIX, 1)[1].strip("/")
        return self.api_inputs.get(name)

    async def _padded_call(self, scope: Scope, receive: Receive, send: Send, inputs: int) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > MAX_CALL_BODY_BYTES:
                await respond_json(send, 413, "The request is too large.")
                return
            if not message.get("more_body", False):
                break
        padded = _padded(bytes(body), inputs)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # a disconnect, once the body is read
            sent = True
            return {"type": "http.request", "body": padded, "more_body": False}

        headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-length"]
        headers.append((b"content-length", str(len(padded)).encode("ascii")))
        await self.app({**scope, "headers": headers}, replay, send)


def _padded(body: bytes, inputs: int) -> bytes:
    """The JSON body with `data` padded to `inputs` values; anything else unchanged."""
    strict = True
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        # A lone surrogate escape ("\\ud800", as a browser's JSON.stringify writes it) is
        # valid JSON that orjson refuses; the standard parser keeps it for the app to judge.
        strict = False
        try:
            document = json.loads(body)
        except ValueError:
            return body  # Gradio answers 422 with its own reason
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        return body
    data = document["data"]
    if len(data) >= inputs:
        return body
    document["data"] = [*data, *([None] * (inputs - len(data)))]
    return orjson.dumps(document) if strict else json.dumps(document).encode("ascii")
