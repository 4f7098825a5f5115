"""Break 7: loopback alone no longer opens everyone's usage; the startup link's token does."""

from __future__ import annotations

from tests.security.conftest import OPERATOR_TOKEN, PageFactory, request, send, visitor_state
from ui.page import Page

LOOPBACK = "127.0.0.1"


async def sees_everyones_usage(page: Page, peer: str, query: str = "", **headers: str) -> bool:
    """Open the page (with `query`) from `peer`, then the Usage tab: is the operator view shown?"""
    me = visitor_state()
    req = request(peer=peer, query=query, headers=headers or None)
    loaded = await page.on_load(me, req, None)
    operator_ok = loaded[page.ctx.operator_ok]
    shown = await page.usage.show(me, operator_ok, req, None)
    return bool(shown[page.usage.admin_group]["visible"])


async def test_a_loopback_client_without_the_token_sees_only_its_own_usage(
    make_page: PageFactory,
) -> None:
    page = await make_page(OPERATOR_TOKEN=OPERATOR_TOKEN)
    await send(page, visitor_state(), "Someone's spending [[tokens=2]]")
    # A reverse proxy on the same host that adds no X-Forwarded-For looks exactly like this.
    assert not await sees_everyones_usage(page, LOOPBACK)
    assert not await sees_everyones_usage(page, "::1")


async def test_a_wrong_token_opens_nothing_and_guessing_shuts_the_client_out(
    make_page: PageFactory,
) -> None:
    page = await make_page(OPERATOR_TOKEN=OPERATOR_TOKEN)
    guesser = "198.51.100.40"
    for guess in ("admin", OPERATOR_TOKEN[:-1], OPERATOR_TOKEN + "x", "x" * 5000, " "):
        assert not await sees_everyones_usage(page, guesser, f"operator={guess}")
    # Five wrong guesses: even the right token is refused from that client for a while...
    assert not await sees_everyones_usage(page, guesser, f"operator={OPERATOR_TOKEN}")
    # ...while the operator, elsewhere, still gets in.
    assert await sees_everyones_usage(page, "192.0.2.10", f"operator={OPERATOR_TOKEN}")


async def test_the_startup_links_token_opens_the_operator_view(make_page: PageFactory) -> None:
    page = await make_page(OPERATOR_TOKEN=OPERATOR_TOKEN)
    assert await sees_everyones_usage(page, LOOPBACK, f"operator={OPERATOR_TOKEN}")


async def test_a_forged_forwarded_header_grants_nothing(make_page: PageFactory) -> None:
    page = await make_page(OPERATOR_TOKEN=OPERATOR_TOKEN)
    assert not await sees_everyones_usage(page, "203.0.113.8", **{"X-Forwarded-For": "127.0.0.1"})
