"""What the security suite shares: the real app as an attacker reaches it, and the page's
handlers called in-process with whatever a crafted browser would send."""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
from starlette.requests import Request

from chatlib.identity import new_anonymous_id
from chatlib.services import create_services
from chatlib.visitors import BrowserIdentity
from tests.conftest import TEST_API_KEY, AppServer, settings_for, start_app
from tests.fakes.openrouter import FakeOpenRouter
from ui.page import Page

# Recognisable secrets: none of them may ever reach OpenRouter's Authorization header
# (unless the operator allows visitors' keys), the page or the logs.
ATTACKER_KEY = "sk-or-v1-ATTACKER0000stolen0000cafebabe"
VISITOR_KEY = "sk-or-v1-VISITOR00000own00000000badc0ffee"
OPERATOR_TOKEN = "Operator-Token_for-security-tests-0123"
UPLOADS_PER_MIN = 3
MAX_IMPORT_BYTES = 100_000  # uploads are capped at twice this (plus the multipart envelope)

_aliases = itertools.count(2)


def new_client_address() -> str:
    """A loopback address no other test has used: a client with rate limits of its own.

    Every 127.x.y.z reaches the app bound to 127.0.0.1, so each test can be "another
    machine" without the app trusting any proxy header.
    """
    n = next(_aliases)
    return f"127.0.{n // 250 + 10}.{n % 250 + 2}"


def http_from(base_url: str, address: str | None = None, **kwargs: Any) -> httpx.Client:
    """An HTTP client whose connections come from `address` (a loopback alias)."""
    transport = httpx.HTTPTransport(local_address=address or new_client_address())
    return httpx.Client(base_url=base_url, transport=transport, timeout=60, **kwargs)


# ---- the real app ---------------------------------------------------------------------------


def app_env(fake: FakeOpenRouter) -> dict[str, str]:
    """An operator's deployment: their key, visitors' keys off, the startup link's token."""
    return {
        "OPENROUTER_API_KEY": TEST_API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "ALLOW_USER_KEYS": "false",
        "OPERATOR_TOKEN": OPERATOR_TOKEN,
        "UPLOADS_PER_MIN": str(UPLOADS_PER_MIN),
        "MAX_IMPORT_BYTES": str(MAX_IMPORT_BYTES),
        # Below twice the import cap, so uploads are capped by imports (attachments fit too).
        "MAX_ATTACHMENT_BYTES": str(MAX_IMPORT_BYTES),
        "STREAM_IDLE_TIMEOUT_SECONDS": "3",
    }


@pytest.fixture(scope="session")
def security_app(
    tmp_path_factory: pytest.TempPathFactory, fake_openrouter: FakeOpenRouter
) -> Iterator[AppServer]:
    """One real app (a subprocess) for every test of the suite that needs the network."""
    server = start_app(tmp_path_factory.mktemp("security-app"), app_env(fake_openrouter))
    yield server
    server.stop()


class LogTail:
    """What the app writes to its log file and console from now on."""

    def __init__(self, server: AppServer) -> None:
        self.paths = (server.log_path, server.workdir / "stderr.log")
        self.offsets = [p.stat().st_size if p.exists() else 0 for p in self.paths]

    def new(self) -> str:
        parts = []
        for path, offset in zip(self.paths, self.offsets, strict=True):
            if path.exists():
                with path.open("rb") as handle:
                    handle.seek(offset)
                    parts.append(handle.read().decode("utf-8", errors="replace"))
        return "\n".join(parts)

    def settled(self, quiet_seconds: float = 0.3, at_most_seconds: float = 5.0) -> str:
        """`new()` once nothing more has been written for `quiet_seconds`.

        Uvicorn logs a server error after it has answered: wait for it, so it is not
        found in the next test's share of the log instead.
        """
        deadline = time.monotonic() + at_most_seconds
        text = self.new()
        while time.monotonic() < deadline:
            time.sleep(quiet_seconds)
            later = self.new()
            if later == text:
                break
            text = later
        return text


def app_config(server: AppServer) -> dict[str, Any]:
    """The page's /config, as any visitor's browser fetches it."""
    with http_from(server.url) as http:
        return dict(http.get("config").json())


def fn_index(config: dict[str, Any], elem_id: str, trigger: str) -> int:
    """The id of the event fired by `trigger` on the component with `elem_id`."""
    ids = {c["id"] for c in config["components"] if c["props"].get("elem_id") == elem_id}
    for dependency in config["dependencies"]:
        if any(target[0] in ids and target[1] == trigger for target in dependency["targets"]):
            return int(dependency["id"])
    raise LookupError(f"no {trigger} event on #{elem_id}")


def fn_index_by_label(config: dict[str, Any], label: str, trigger: str) -> int:
    """The id of the event fired by `trigger` on the button whose text is `label`."""
    ids = {c["id"] for c in config["components"] if c["props"].get("value") == label}
    for dependency in config["dependencies"]:
        if any(target[0] in ids and target[1] == trigger for target in dependency["targets"]):
            return int(dependency["id"])
    raise LookupError(f"no {trigger} event on the {label!r} button")


def queue_call(
    http: httpx.Client, fn: int, data: list[Any], session_hash: str | None = None
) -> list[dict[str, Any]]:
    """Call event `fn` through Gradio's queue the way the page's JavaScript does.

    Returns every message of the event's stream up to `process_completed`. Private events
    are reached this way too: the browser calls them by number.
    """
    session_hash = session_hash or secrets.token_hex(6)
    joined = http.post(
        "gradio_api/queue/join",
        json={"data": data, "fn_index": fn, "session_hash": session_hash, "event_data": None},
    )
    joined.raise_for_status()
    messages: list[dict[str, Any]] = []
    with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session_hash}) as s:
        for line in s.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            messages.append(message)
            if message.get("msg") in ("process_completed", "close_stream"):
                break
    return messages


def toasts(messages: list[dict[str, Any]]) -> list[str]:
    """The warning/info toasts a page would show for these queue messages."""
    return [str(m.get("log")) for m in messages if m.get("msg") == "log"]


# ---- the page, in-process -------------------------------------------------------------------


def visitor_state(api_key: str | None = None) -> dict[str, Any]:
    """A browser's stored state: a fresh anonymous visitor (and, if given, a stored key)."""
    return BrowserIdentity(anon_id=new_anonymous_id(), api_key=api_key).to_value()


def request(
    session: str = "page-1",
    peer: str = "203.0.113.7",
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> gr.Request:
    """What Gradio hands a handler for one call from `peer` in page session `session`."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": (peer, 50000),
        "query_string": query.encode(),
    }
    return gr.Request(request=Request(scope), session_hash=session)


PageFactory = Callable[..., Awaitable[Page]]


@pytest.fixture
async def make_page(fake: FakeOpenRouter, tmp_path: Path) -> AsyncIterator[PageFactory]:
    """Build pages with settings of the test's choosing (inside the test's event loop)."""
    built: list[Page] = []

    async def factory(**env: str) -> Page:
        folder = tmp_path / f"app-{len(built)}"
        settings = settings_for(fake, folder, DATA_DIR=str(folder / "data"), **env)
        page = Page(settings, create_services(settings))
        built.append(page)
        return page

    yield factory
    for page in built:
        with suppress(Exception):
            await page.ctx.services.aclose()


async def collect(frames: AsyncIterator[Any]) -> dict[Any, Any]:
    """Every update of a streaming handler merged, as the page ends up showing them."""
    shown: dict[Any, Any] = {}
    async for updates in frames:
        shown.update(updates)
    return shown


async def send(page: Page, browser: dict[str, Any], text: str, **request_args: Any) -> str:
    """Send `text` as the visitor with stored state `browser`; the new chat's id."""
    shown = await collect(
        page.chat.ask(
            "send", text, None, "openai/gpt-4o", "", 0.3, browser, request(**request_args), None
        )
    )
    return str(shown[page.ctx.conversation_id])


def authorization_of_last_chat(fake: FakeOpenRouter) -> str:
    """The Authorization header of the last chat request OpenRouter received."""
    return fake.chat_requests()[-1].headers["authorization"]
