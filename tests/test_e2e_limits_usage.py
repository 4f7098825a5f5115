"""Rate limiting by real client IP, and what visitors see of their usage, on the real app."""

from __future__ import annotations

import csv
from collections.abc import Callable

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from playwright.sync_api import Page, expect

from tests.conftest import TEST_API_KEY, AppServer
from tests.fakes.openrouter import FakeOpenRouter
from tests.redis_server import redis_url  # noqa: F401 - fixture
from tests.ui import INPUT, last_answer, open_app, send, toast, wait_until_idle
from ui.usage import NO_USAGE_YET

pytestmark = pytest.mark.e2e

OPERATOR_TOKEN = "operator-token-for-tests-000000000000"


def _ask(client: Client, text: str = "hi [[tokens=2]]") -> str:
    return str(client.predict(text, api_name="/chat"))


def _limited_app(
    app_factory: Callable[..., AppServer], fake: FakeOpenRouter, name: str, **env: str
) -> AppServer:
    return app_factory(
        name,
        OPENROUTER_API_KEY=TEST_API_KEY,
        OPENROUTER_BASE_URL=fake.base_url,
        RATE_LIMIT_REQUESTS_PER_MIN="3",
        **env,
    )


def test_limit_per_ip_and_a_spoofed_header_does_not_dodge_it(
    app_factory: Callable[..., AppServer], fake: FakeOpenRouter
) -> None:
    app = _limited_app(app_factory, fake, "limit-direct")
    for _ in range(3):
        _ask(Client(app.url, verbose=False))
    # The peer (127.0.0.1) is not a trusted proxy, so a forged header changes nothing.
    spoofing = Client(app.url, verbose=False, headers={"X-Forwarded-For": "198.51.100.77"})
    with pytest.raises(AppError, match=r"too fast: the limit is 3 per minute\. Try again in \d+ s"):
        _ask(spoofing)
    assert len(fake.chat_requests()) == 3  # the refused request never went upstream


def test_behind_a_trusted_proxy_each_client_ip_has_its_own_limit(
    app_factory: Callable[..., AppServer], fake: FakeOpenRouter
) -> None:
    app = _limited_app(app_factory, fake, "limit-proxied", TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8")

    def via(chain: str) -> Client:
        return Client(app.url, verbose=False, headers={"X-Forwarded-For": chain})

    for _ in range(3):
        _ask(via("203.0.113.9, 10.1.2.3"))
    # Same client behind the same proxies, with junk prepended by the client: still limited.
    with pytest.raises(AppError, match="too fast"):
        _ask(via("1.2.3.4, 203.0.113.9, 10.1.2.3"))
    # Another client is independent.
    assert _ask(via("203.0.113.10, 10.1.2.3"))


def test_two_replicas_share_one_limit_through_redis(
    app_factory: Callable[..., AppServer],
    fake: FakeOpenRouter,
    redis_url: str,  # noqa: F811 - fixture
) -> None:
    shared = {"RATE_LIMIT_STORAGE_URI": redis_url, "RATE_LIMIT_REQUESTS_PER_MIN": "2"}
    first = app_factory(
        "replica-a", OPENROUTER_API_KEY=TEST_API_KEY, OPENROUTER_BASE_URL=fake.base_url, **shared
    )
    second = app_factory(
        "replica-b", OPENROUTER_API_KEY=TEST_API_KEY, OPENROUTER_BASE_URL=fake.base_url, **shared
    )
    _ask(Client(first.url, verbose=False))
    _ask(Client(second.url, verbose=False))
    with pytest.raises(AppError, match="too fast"):
        _ask(Client(first.url, verbose=False))
    with pytest.raises(AppError, match="too fast"):
        _ask(Client(second.url, verbose=False))


def test_a_refused_message_stays_in_the_box_with_the_wait_time(
    page: Page, app_factory: Callable[..., AppServer], fake: FakeOpenRouter
) -> None:
    app = app_factory(
        "limit-browser",
        OPENROUTER_API_KEY=TEST_API_KEY,
        OPENROUTER_BASE_URL=fake.base_url,
        RATE_LIMIT_REQUESTS_PER_MIN="1",
    )
    open_app(page, app.url)
    send(page, "first [[tokens=2]]")
    expect(last_answer(page)).to_contain_text("TTFT")
    wait_until_idle(page)
    send(page, "second, too soon")
    expect(toast(page, "too fast")).to_be_visible()
    expect(toast(page, "Try again in")).to_be_visible()
    expect(page.locator(INPUT)).to_have_value("second, too soon")
    assert len(fake.chat_requests()) == 1
    # Exports write files: they share the allowance, so they cannot fill the disk either.
    page.get_by_role("button", name="Actions for first").click()
    page.get_by_role("menuitem", name="Export JSON").click()
    expect(toast(page, "exporting too fast")).to_be_visible()
    assert not list((app.workdir / ".data" / "exports").glob("*/*"))


def test_upstream_rate_limit_is_told_apart_from_ours(page: Page, app_server: AppServer) -> None:
    open_app(page, app_server.url)
    send(page, "free model please [[error=429]] [[retry_after=12]]")
    answer = last_answer(page)  # said once, in the chat
    expect(answer).to_contain_text("OpenRouter is rate-limiting this model")
    expect(answer).to_contain_text("Retry in 12 s")


def test_usage_tab_shows_my_totals_and_the_csv_agrees(
    page: Page, app_factory: Callable[..., AppServer], fake: FakeOpenRouter
) -> None:
    app = app_factory(
        "usage",
        OPENROUTER_API_KEY=TEST_API_KEY,
        OPENROUTER_BASE_URL=fake.base_url,
        OPERATOR_TOKEN=OPERATOR_TOKEN,
    )
    open_app(page, f"{app.url}?operator={OPERATOR_TOKEN}")
    # Before any message: one plain sentence instead of empty axes.
    page.get_by_role("tab", name="Usage").click()
    expect(page.locator("#usage-empty-mine")).to_have_text(NO_USAGE_YET)
    expect(page.locator("#usage-charts-mine")).to_be_hidden()
    page.get_by_role("tab", name="Chat").click()
    for text in ("one [[tokens=10]]", "two [[tokens=20]]"):
        send(page, text)
        expect(last_answer(page)).to_contain_text(f"{text.split()[0]}")
        expect(last_answer(page)).to_contain_text("TTFT")
        wait_until_idle(page)
    send(page, "three [[error=402]]")
    expect(last_answer(page)).to_contain_text("out of credits")
    wait_until_idle(page)

    rows = []
    for path in (app.workdir / ".data" / "usage").glob("usage-*.csv"):
        with path.open(newline="") as handle:
            rows.extend(csv.DictReader(handle))
    assert sorted(r["status"] for r in rows) == ["complete", "complete", "failed"]
    assert {r["error_code"] for r in rows} == {"", "insufficient_credits"}
    cost = sum(float(r["cost_usd"] or 0) for r in rows)
    completion = sum(int(r["completion_tokens"] or 0) for r in rows)
    assert completion == 30
    text = "\n".join(",".join(r.values()) for r in rows)
    assert "one [[tokens" not in text and TEST_API_KEY not in text

    page.get_by_role("tab", name="Usage").click()
    mine = page.locator("#usage-totals-mine")
    expect(mine).to_contain_text("3 requests")
    expect(mine).to_contain_text(f"${cost:.4f}")
    expect(mine).to_contain_text("30 completion tokens")
    expect(page.locator("#usage-empty-mine")).to_be_hidden()
    charts = page.locator("#usage-charts-mine")
    for words in ("Cost per day", "Cost (USD)", "Tokens", "Time to first token (ms / s)"):
        expect(charts).to_contain_text(words)
    expect(charts).not_to_contain_text("cost_usd")
    # Opened with the operator link, the operator view (whole app + CSV download) is shown too.
    expect(page.locator("#usage-totals-all")).to_contain_text("3 requests")
