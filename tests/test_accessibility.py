"""The page passes axe-core (no serious or critical violations) and names every control,
at desktop and phone size, in both themes, with and without an operator key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tests.conftest import TEST_API_KEY, AppServer
from tests.fakes.openrouter import FakeOpenRouter
from tests.ui import open_app, send, wait_until_idle

pytestmark = pytest.mark.timeout(240)
BLOCKING = {"serious", "critical"}
# Gradio's names for controls shown without a label: they tell nobody anything.
PLACEHOLDER_NAMES = ('textbox "Textbox"', 'group "Radio"')


@pytest.fixture(scope="module")
def axe() -> Axe:
    """axe-core as bundled by axe-playwright-python (injected into the page: no network)."""
    return Axe()


@pytest.fixture(scope="module")
def keyed_app(
    shared_app_factory: Callable[..., AppServer], fake_openrouter: FakeOpenRouter
) -> AppServer:
    return shared_app_factory(
        "a11y", OPENROUTER_API_KEY=TEST_API_KEY, OPENROUTER_BASE_URL=fake_openrouter.base_url
    )


@pytest.fixture(scope="module")
def first_run_app(
    shared_app_factory: Callable[..., AppServer], fake_openrouter: FakeOpenRouter
) -> AppServer:
    return shared_app_factory(
        "a11y-first-run", OPENROUTER_API_KEY="", OPENROUTER_BASE_URL=fake_openrouter.base_url
    )


def _blocking(axe: Axe, page: Page) -> list[str]:
    """One line per serious or critical axe violation: rule, impact, the elements."""
    found: list[dict[str, Any]] = axe.run(page).response["violations"]
    return [
        f"{v['id']} ({v['impact']}): {v['help']}: "
        + "; ".join(f"{n['target']} {n['failureSummary']!r}" for n in v["nodes"][:5])
        for v in found
        if v["impact"] in BLOCKING
    ]


def test_the_page_passes_axe_in_both_themes(
    device_page: Page, keyed_app: AppServer, first_run_app: AppServer, axe: Axe
) -> None:
    page = device_page
    open_app(page, keyed_app.url)
    send(page, "Hello **there**, show me a table")
    wait_until_idle(page)
    expect(page.get_by_role("button", name="Retry")).to_be_attached()  # message buttons drawn
    expect(page.get_by_role("radio", checked=True)).to_be_attached()  # the list settled
    # Colours are judged as they end up, not halfway through a fade.
    page.add_style_tag(content="*, *::before, *::after { transition: none !important; }")
    problems = [f"light: {line}" for line in _blocking(axe, page)]
    page.get_by_role("button", name="Dark theme").click()
    expect(page.get_by_role("button", name="Dark theme")).to_have_attribute("aria-pressed", "true")
    problems += [f"dark: {line}" for line in _blocking(axe, page)]
    page.get_by_role("button", name="Dark theme").click()  # the next test starts light

    page.goto(first_run_app.url, wait_until="load")
    expect(page.locator("#session-ready [data-ready]")).to_be_attached()
    problems += [f"first run: {line}" for line in _blocking(axe, page)]
    assert not problems, "\n".join(problems)


def test_every_control_has_a_meaningful_name(page: Page, keyed_app: AppServer) -> None:
    open_app(page, keyed_app.url)
    send(page, "Name everything")
    wait_until_idle(page)
    expect(page.get_by_role("textbox", name="Message", exact=True)).to_be_visible()
    expect(page.get_by_role("group", name="Conversations")).to_be_attached()
    for name in ("Copy message", "Retry", "Undo", "Toggle Sidebar", "Dark theme"):
        expect(page.get_by_role("button", name=name).first).to_be_attached()
    tree = page.locator("body").aria_snapshot()
    assert not [name for name in PLACEHOLDER_NAMES if name in tree], tree
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('button, [role="button"], input, textarea')]
            .filter(e => e.getClientRects().length && e.type !== 'hidden')
            .filter(e => !(e.getAttribute('aria-label') || e.getAttribute('aria-labelledby')
                || (e.labels && e.labels.length) || e.textContent.trim() || e.title))
            .map(e => e.outerHTML.slice(0, 120))"""
    )
    assert unnamed == []
