"""Uploads: a client may send only so many files a minute, none bigger than the cap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route
from structlog.testing import capture_logs

from chatlib.ratelimit import RateLimiter, parse_trusted_proxies
from chatlib.upload_guard import MULTIPART_OVERHEAD_BYTES, UploadGuard

UPLOADS_PER_MIN = 3
MAX_FILE_BYTES = 100_000
PROXY = "10.0.0.5"


async def upload(request: Request) -> JSONResponse:
    """Stands in for Gradio's route: reads the whole body, answers with what it stored."""
    body = await request.body()
    request.app.state.stored.append(len(body))
    return JSONResponse([f"/tmp/gradio/{len(body)}/file.json"])


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(3):
            yield f"data: {n}\n\n".encode()

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def other_post(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


@pytest.fixture
async def app() -> AsyncIterator[Starlette]:
    limiter = RateLimiter("memory://", 0, uploads_per_minute=UPLOADS_PER_MIN)
    # Installed as Gradio's launch(app_kwargs={"middleware": [...]}) would install it.
    application = Starlette(
        routes=[
            Route("/gradio_api/upload", upload, methods=["POST"]),
            Route("/gradio_api/queue/data", stream),
            Route("/gradio_api/call/chat", other_post, methods=["POST"]),
        ],
        middleware=[
            Middleware(
                UploadGuard,
                limiter=limiter,
                trusted_proxies=parse_trusted_proxies("10.0.0.0/8"),
                max_file_bytes=MAX_FILE_BYTES,
            )
        ],
    )
    application.state.stored = []
    yield application
    await limiter.aclose()


def client_from(app: Starlette, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://chat.test")


FILE = {"files": ("import.json", b'{"conversations": []}', "application/json")}


async def test_a_client_is_refused_after_n_uploads_a_minute_and_told_when_to_retry(
    app: Starlette,
) -> None:
    async with client_from(app, "203.0.113.5") as client:
        answers = [
            await client.post("/gradio_api/upload", files=FILE) for _ in range(UPLOADS_PER_MIN + 1)
        ]
    assert [a.status_code for a in answers] == [200] * UPLOADS_PER_MIN + [429]
    refused = answers[-1]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"].startswith(
        f"Too many uploads from your address: the limit is {UPLOADS_PER_MIN} per minute."
    )
    assert len(app.state.stored) == UPLOADS_PER_MIN  # the refused file was never stored


async def test_another_client_is_unaffected(app: Starlette) -> None:
    async with client_from(app, "203.0.113.5") as first, client_from(app, "198.51.100.7") as other:
        for _ in range(UPLOADS_PER_MIN + 1):
            await first.post("/gradio_api/upload", files=FILE)
        answer = await other.post("/gradio_api/upload", files=FILE)
    assert answer.status_code == 200


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_dodge_the_limit(
    app: Starlette,
) -> None:
    async with client_from(app, "203.0.113.5") as client:
        answers = [
            await client.post(
                "/gradio_api/upload", files=FILE, headers={"X-Forwarded-For": f"192.0.2.{n}"}
            )
            for n in range(UPLOADS_PER_MIN + 1)
        ]
    assert answers[-1].status_code == 429


async def test_visitors_behind_a_trusted_proxy_are_counted_one_by_one(app: Starlette) -> None:
    async with client_from(app, PROXY) as proxy:
        for _ in range(UPLOADS_PER_MIN):
            answer = await proxy.post(
                "/gradio_api/upload", files=FILE, headers={"X-Forwarded-For": "198.51.100.1"}
            )
            assert answer.status_code == 200
        same = await proxy.post(
            "/gradio_api/upload", files=FILE, headers={"X-Forwarded-For": "198.51.100.1"}
        )
        other = await proxy.post(
            "/gradio_api/upload", files=FILE, headers={"X-Forwarded-For": "198.51.100.2"}
        )
    assert (same.status_code, other.status_code) == (429, 200)


async def test_an_oversize_declared_body_is_refused_before_it_is_read(app: Starlette) -> None:
    big = b"x" * (MAX_FILE_BYTES + MULTIPART_OVERHEAD_BYTES + 1)
    with capture_logs() as logs:
        async with client_from(app, "203.0.113.5") as client:
            answer = await client.post(
                "/gradio_api/upload",
                files={"files": ("big.json", big, "application/json")},
            )
    assert answer.status_code == 413
    assert answer.json() == {"error": "This file is too large: the limit is 0.1 MB."}
    assert app.state.stored == []
    assert [e["reason"] for e in logs if e["event"] == "upload.refused"] == ["too_large"]
    assert "203.0.113.5" not in repr(logs)
    # An oversize attempt does not use up the client's uploads.
    async with client_from(app, "203.0.113.5") as client:
        for _ in range(UPLOADS_PER_MIN):
            assert (await client.post("/gradio_api/upload", files=FILE)).status_code == 200


async def test_a_body_that_outgrows_the_cap_without_declaring_it_is_cut_off(
    app: Starlette,
) -> None:
    async def endless() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 10_000  # 1 MB in all, chunked: no Content-Length

    async with client_from(app, "203.0.113.5") as client:
        answer = await client.post("/gradio_api/upload", content=endless())
    assert answer.status_code == 413
    assert "too large" in answer.json()["error"]
    assert app.state.stored == []


async def test_a_file_just_under_the_cap_goes_through(app: Starlette) -> None:
    payload = b"x" * MAX_FILE_BYTES
    async with client_from(app, "203.0.113.5") as client:
        answer = await client.post(
            "/gradio_api/upload", files={"files": ("ok.json", payload, "application/json")}
        )
    assert answer.status_code == 200
    assert app.state.stored[0] > MAX_FILE_BYTES  # the file plus its multipart envelope


async def test_everything_else_passes_through_untouched(app: Starlette) -> None:
    async with client_from(app, "203.0.113.5") as client:
        for _ in range(UPLOADS_PER_MIN * 3):
            answer = await client.post("/gradio_api/call/chat", content=b"y" * 300_000)
            assert answer.status_code == 200 and answer.text == "300000"
        streamed = await client.get("/gradio_api/queue/data")
        assert streamed.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
        # A GET on the upload path is not an upload (the route answers 405 itself).
        assert (await client.get("/gradio_api/upload")).status_code == 405


async def test_a_streaming_response_reaches_the_client_message_by_message() -> None:
    sent_by_app = [
        {"type": "http.response.start", "status": 200, "headers": []},
        {"type": "http.response.body", "body": b"one", "more_body": True},
        {"type": "http.response.body", "body": b"two", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        for message in sent_by_app:
            await send(message)

    limiter = RateLimiter("memory://", 0, uploads_per_minute=1)
    guard = UploadGuard(inner, limiter=limiter, trusted_proxies=(), max_file_bytes=10)
    received: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        received.append(message)

    scope = {"type": "http", "method": "GET", "path": "/gradio_api/queue/data", "headers": []}
    await guard(scope, receive, send)
    await guard({"type": "websocket", "path": "/gradio_api/upload"}, receive, send)
    await limiter.aclose()
    assert received == sent_by_app * 2


def test_a_cap_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError):
        UploadGuard(
            lambda *_: None,  # type: ignore[arg-type,return-value]
            limiter=RateLimiter("memory://", 0),
            trusted_proxies=(),
            max_file_bytes=0,
        )
