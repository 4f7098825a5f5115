"""Gradio's copy of an upload is served back to the browser that uploaded it, and no one else."""

from __future__ import annotations

from typing import Any

import orjson

from chatlib.upload_guard import Message, Receive, Scope, Send
from chatlib.upload_owners import RECORD_SECONDS, UploadOwners

SEAT_A = "seat-a-0123456789abcdefghij"
SEAT_B = "seat-b-0123456789abcdefghij"


class FakeGradio:
    """Answers an upload with the paths it 'stored' (in two body parts) and serves any file."""

    def __init__(self, paths: list[str], status: int = 200) -> None:
        self.paths = paths
        self.status = status
        self.served: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            body = orjson.dumps(self.paths)
            await send({"type": "http.response.start", "status": self.status, "headers": []})
            await send({"type": "http.response.body", "body": body[:3], "more_body": True})
            await send({"type": "http.response.body", "body": body[3:]})
            return
        self.served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"file"})


def scope(method: str, path: str, seat: str | None = None, ip: str = "198.51.100.7") -> Scope:
    headers = [(b"cookie", f"orc_seat={seat}".encode())] if seat else []
    return {"type": "http", "method": method, "path": path, "headers": headers, "client": (ip, 1)}


async def call(app: UploadOwners, request: Scope) -> tuple[int, bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(request, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def owners(gradio: Any, now: list[float] | None = None) -> UploadOwners:
    clock = now or [0.0]
    return UploadOwners(gradio, trusted_proxies=(), clock=lambda: clock[0])


async def test_only_the_uploading_browser_gets_its_file_back() -> None:
    gradio = FakeGradio(["/data/gradio/abc/photo.png"])
    app = owners(gradio)
    status, body = await call(app, scope("POST", "/gradio_api/upload", SEAT_A))
    assert (status, orjson.loads(body)) == (200, ["/data/gradio/abc/photo.png"])
    asked = "/gradio_api/file=/data/gradio/abc/photo.png"
    assert (await call(app, scope("GET", asked, SEAT_A)))[0] == 200
    assert (await call(app, scope("GET", asked, SEAT_B)))[0] == 404
    assert (await call(app, scope("GET", asked)))[0] == 404  # no seat: another address
    sneaky = "/gradio_api/file=/data/gradio/x/../abc//photo.png"
    assert (await call(app, scope("HEAD", sneaky, SEAT_B)))[0] == 404
    assert gradio.served == [asked]


async def test_a_client_without_a_seat_is_known_by_its_address() -> None:
    app = owners(FakeGradio(["/data/gradio/abc/notes.txt"]))
    await call(app, scope("POST", "/gradio_api/upload", ip="203.0.113.5"))
    asked = "/gradio_api/file=/data/gradio/abc/notes.txt"
    assert (await call(app, scope("GET", asked, ip="203.0.113.5")))[0] == 200
    assert (await call(app, scope("GET", asked, ip="203.0.113.6")))[0] == 404


async def test_files_it_did_not_see_uploaded_and_failed_uploads_pass_through() -> None:
    app = owners(FakeGradio(["/data/gradio/abc/x.png"], status=500))
    await call(app, scope("POST", "/gradio_api/upload", SEAT_A))
    assert (await call(app, scope("GET", "/gradio_api/file=/data/gradio/abc/x.png", SEAT_B)))[
        0
    ] == 200
    assert (await call(app, scope("GET", "/gradio_api/file=/data/downloads/e.json", SEAT_B)))[
        0
    ] == 200


async def test_a_record_older_than_the_cache_leaves_the_answer_to_gradio() -> None:
    now = [0.0]
    app = owners(FakeGradio(["/data/gradio/abc/old.png"]), now)
    await call(app, scope("POST", "/gradio_api/upload", SEAT_A))
    now[0] = RECORD_SECONDS + 1
    assert (await call(app, scope("GET", "/gradio_api/file=/data/gradio/abc/old.png", SEAT_B)))[
        0
    ] == 200
