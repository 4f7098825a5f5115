"""The request guard: REST calls with missing inputs get the defaults; crashes become a 400."""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from chatlib.request_guard import RequestGuard, _padded


async def echo_or_crash(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A stand-in server: echoes the JSON body it got; /crash raises on the client's input."""
    if scope["path"] == "/crash":
        raise KeyError("9999 and the request's text")
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def client() -> httpx.AsyncClient:
    guard = RequestGuard(echo_or_crash, api_inputs={"chat": 5})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://app")


async def test_a_rest_call_with_only_a_message_gets_the_other_inputs_as_defaults(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post("/gradio_api/call/chat", json={"data": ["hi"]})
    assert orjson.loads(answer.content)["data"] == ["hi", None, None, None, None]


async def test_a_complete_or_unparsable_body_reaches_the_server_unchanged(
    client: httpx.AsyncClient,
) -> None:
    full = {"data": ["hi", "m", "", 0.3, None]}
    assert orjson.loads((await client.post("/gradio_api/call/chat", json=full)).content) == full
    assert (await client.post("/gradio_api/call/chat", content=b"{oops")).content == b"{oops"
    other = {"data": ["x"]}
    answer = await client.post("/gradio_api/call/other", json=other)
    assert orjson.loads(answer.content) == other


async def test_a_request_that_crashes_a_route_is_a_400_and_one_log_line_without_its_text(
    client: httpx.AsyncClient,
) -> None:
    with capture_logs() as logs:
        answer = await client.post("/crash", json={"data": []})
    assert answer.status_code == 400
    assert [entry["event"] for entry in logs] == ["http.bad_request"]
    assert "request's text" not in str(logs)


def test_a_body_with_a_lone_surrogate_escape_is_padded_too() -> None:
    # A browser's JSON.stringify writes lone surrogates as escapes: valid JSON that the
    # app answers with a clear error, which needs every input to be there.
    body = b'{"data": ["lone \\ud800", "m"]}'
    padded = json.loads(_padded(body, 4))
    assert padded["data"] == ["lone \ud800", "m", None, None]
