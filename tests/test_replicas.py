"""Two app replicas behind the real reverse proxy, one PostgreSQL, one Redis: as visitors see it.

Every replica keeps its own Gradio queue, so the proxy pins each browser to one (its SRV
cookie); everything a visitor owns lives in the shared database, and the rate limit in Redis.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests import pg_server, proxy_server
from tests.conftest import TEST_API_KEY, AppServer
from tests.fakes.openrouter import FakeOpenRouter
from tests.redis_server import redis_url  # noqa: F401 - fixture
from tests.ui import last_answer, open_app, send, user_messages, wait_until_idle

postgres_server = pg_server.postgres_server
postgres_url = pg_server.postgres_url
proxy_factory = proxy_server.proxy_factory

SECRET = "replica-secret-for-tests-000000000000000"
OPERATOR_TOKEN = "replica-operator-token-0000000000000"
LIMIT_PER_MIN = 30
pytestmark = pytest.mark.e2e


@dataclass
class Cluster:
    """The replicas (app1, app2 in proxy order), the proxy in front, and how to reach them."""

    apps: list[AppServer]
    proxy: proxy_server.ProxyServer

    @property
    def url(self) -> str:
        return self.proxy.url

    def pin(self, context: BrowserContext, server: str) -> None:
        """Send this browser to replica `server` ("app1" or "app2") from now on."""
        context.add_cookies([{"name": proxy_server.COOKIE, "value": server, "url": self.url}])

    def replica_of(self, context: BrowserContext) -> str:
        """The replica this browser is pinned to."""
        cookies = {c["name"]: c["value"] for c in context.cookies(self.url)}
        return cookies[proxy_server.COOKIE]

    def app(self, server: str) -> AppServer:
        return self.apps[int(server.removeprefix("app")) - 1]


@pytest.fixture(scope="module")
def cluster(
    app_factory: Callable[..., AppServer],
    fake_openrouter: FakeOpenRouter,
    postgres_url: str,  # noqa: F811 - fixture
    redis_url: str,  # noqa: F811 - fixture
    proxy_factory: Callable[..., proxy_server.ProxyServer],  # noqa: F811 - fixture
) -> Iterator[Cluster]:
    database = pg_server.fresh_database(postgres_url)
    shared = {
        "OPENROUTER_API_KEY": TEST_API_KEY,
        "OPENROUTER_BASE_URL": fake_openrouter.base_url,
        "DATABASE_URL": database,
        "RATE_LIMIT_STORAGE_URI": redis_url + f"/{secrets.randbelow(15) + 1}",
        "RATE_LIMIT_REQUESTS_PER_MIN": str(LIMIT_PER_MIN),
        "BROWSER_STATE_SECRET": SECRET,
        "OPERATOR_TOKEN": OPERATOR_TOKEN,
        "TRUSTED_PROXIES": proxy_server.PROXY_ADDRESS,
    }
    apps = [app_factory(f"replica{n}", **shared) for n in (1, 2)]
    cluster = Cluster(apps, proxy_factory([app.url for app in apps]))
    yield cluster
    for app in cluster.apps:  # a replica restarted by a test is not the factory's to stop
        app.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    # A fresh profile per visitor: cookies (the SRV pin) and local storage (the identity).
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    yield context
    context.close()


def chat(page: Page, text: str) -> None:
    send(page, text)
    expect(last_answer(page)).to_contain_text("Echo:")
    wait_until_idle(page)


def conversation_items(page: Page) -> object:
    return page.locator("#conversation-list label")


def test_a_visitor_whose_replica_dies_finds_everything_on_the_other(
    cluster: Cluster, context: BrowserContext
) -> None:
    page = context.new_page()
    open_app(page, cluster.url)
    chat(page, "Finished before the crash [[tokens=3]]")
    first = cluster.replica_of(context)
    send(page, "Cut short by the crash [[tokens=400]] [[rate=20]]")
    expect(last_answer(page)).to_contain_text("Echo: Cut short")
    dead = cluster.app(first)
    dead.process.kill()  # the replica dies mid-answer: no chance to save anything more
    dead.process.wait(timeout=15)
    cluster.proxy.wait_for_state(first, "DOWN")
    try:
        open_app(page, cluster.url)
        assert cluster.replica_of(context) != first
        chat_item = conversation_items(page).filter(has_text="Finished before the crash")
        expect(chat_item).to_have_count(1)
        chat_item.click()
        # The question asked as the replica died was saved before its answer started.
        expect(user_messages(page)).to_have_count(2)
        expect(user_messages(page).last).to_contain_text("Cut short by the crash")
        expect(last_answer(page)).to_contain_text("interrupted")
        chat(page, "Going on elsewhere [[tokens=3]]")
        expect(user_messages(page)).to_have_count(3)
    finally:
        cluster.apps[int(first.removeprefix("app")) - 1] = dead.restart()
        cluster.proxy.wait_for_state(first, "UP", timeout=60)


def test_a_delete_on_one_replica_is_seen_on_the_other(
    cluster: Cluster, context: BrowserContext
) -> None:
    cluster.pin(context, "app1")
    page = context.new_page()
    open_app(page, cluster.url)
    chat(page, "Delete me everywhere [[tokens=3]]")
    cluster.pin(context, "app2")
    other = context.new_page()
    open_app(other, cluster.url)  # the same visitor (same browser profile), other replica
    assert cluster.replica_of(context) == "app2"
    conversation_items(other).filter(has_text="Delete me everywhere").click()
    other.get_by_role("button", name="Actions for Delete me everywhere").click()
    other.get_by_role("menuitem", name="Delete").click()
    other.get_by_role("menuitem", name="Yes, delete").click()
    expect(conversation_items(other).filter(has_text="Delete me everywhere")).to_have_count(0)
    cluster.pin(context, "app1")
    open_app(page, cluster.url)
    assert cluster.replica_of(context) == "app1"
    expect(page.locator("#conversation-list")).to_be_attached()
    expect(conversation_items(page).filter(has_text="Delete me everywhere")).to_have_count(0)


def test_two_visitors_stay_private_across_replicas(
    cluster: Cluster, browser: Browser, context: BrowserContext
) -> None:
    word = f"zephyr{secrets.token_hex(3)}"
    cluster.pin(context, "app1")
    alice = context.new_page()
    open_app(alice, cluster.url)
    chat(alice, f"Alice's {word} [[tokens=3]]")
    for server in ("app1", "app2"):
        bob_context = browser.new_context()
        try:
            cluster.pin(bob_context, server)
            bob = bob_context.new_page()
            open_app(bob, cluster.url)
            bob.locator("#conversation-search input").fill(word)
            expect(bob.locator("#storage-notice")).to_contain_text("No chat matches")
            assert word not in bob.content()
        finally:
            bob_context.close()


def test_the_operator_dashboard_counts_every_replicas_usage(
    cluster: Cluster, context: BrowserContext
) -> None:
    totals = []
    for server in ("app1", "app2"):
        cluster.pin(context, server)
        page = context.new_page()
        open_app(page, f"{cluster.url}?operator={OPERATOR_TOKEN}")
        chat(page, f"Counted on {server} [[tokens=3]]")
        page.get_by_role("tab", name="Usage").click()
        line = page.locator("#usage-totals-all")
        expect(line).to_contain_text("requests")
        totals.append(int(re.search(r"(\d+) requests", line.inner_text())[1]))  # type: ignore[index]
        page.close()
    # The second replica's view includes the first one's answer and its own.
    assert totals[1] >= totals[0] + 1
    assert totals[0] >= 1


def test_the_rate_limit_holds_across_both_replicas(cluster: Cluster) -> None:
    """One client address, requests spread over both replicas: the limit counts them all."""
    served: set[str] = set()
    refusals = []
    transport = httpx.HTTPTransport(local_address="127.0.0.9")
    for _ in range(LIMIT_PER_MIN + 2):
        # A new client each time: no pin, so the proxy takes turns between the replicas.
        with httpx.Client(base_url=cluster.url, transport=transport, timeout=30) as http:
            started = http.post("gradio_api/call/chat", json={"data": ["Hi [[tokens=1]]"]})
            served.add(http.cookies.get(proxy_server.COOKIE, ""))
            event_id = started.json()["event_id"]
            refusals.append("too fast" in http.get(f"gradio_api/call/chat/{event_id}").text)
    assert served == {"app1", "app2"}
    assert refusals[:LIMIT_PER_MIN] == [False] * LIMIT_PER_MIN
    assert refusals[LIMIT_PER_MIN:] == [True, True]
