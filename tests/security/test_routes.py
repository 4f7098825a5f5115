"""CSRF: the app adds no state-changing HTTP route of its own; everything goes through
Gradio's queue, whose events need the page's session and the caller's own identity."""

from __future__ import annotations

from typing import Any

import gradio as gr
from fastapi.routing import APIRoute
from starlette.routing import Route

from chatlib.attachment_route import AttachmentRoute
from chatlib.request_guard import RequestGuard
from chatlib.upload_guard import UploadGuard
from chatlib.upload_owners import UploadOwners
from tests.conftest import AppServer
from tests.security.conftest import PageFactory, http_from
from ui.page import launch_kwargs

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def routes_that_change_state(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every POST/PUT/PATCH/DELETE route, routers included ones too."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included router
        if included is not None:
            found |= routes_that_change_state(
                included.routes, prefix + route.include_context.prefix
            )
        elif isinstance(route, APIRoute | Route):
            for method in (route.methods or set()) & STATE_CHANGING:
                found.add((method, prefix + route.path))
    return found


async def test_the_app_has_exactly_gradios_state_changing_routes(make_page: PageFactory) -> None:
    page = await make_page()
    settings, services = page.ctx.settings, page.ctx.services
    app_kwargs = launch_kwargs(settings, services)["app_kwargs"]
    ours = gr.routes.App.create_app(page.demo, app_kwargs=app_kwargs)
    with gr.Blocks() as bare:
        gr.Textbox()
    gradios = gr.routes.App.create_app(bare)

    changing = routes_that_change_state(ours.routes)
    assert changing == routes_that_change_state(gradios.routes)
    assert ("POST", "/gradio_api/queue/join") in changing
    assert ("POST", "/gradio_api/upload") in changing
    # The app's only additions to the HTTP layer are four middlewares: the request guard
    # (malformed requests get a 4xx), the upload guard (rate and size), the upload owners
    # (Gradio's copy of an upload only to its uploader; it only refuses) and the attachment
    # route (GET only: private, expiring links to a visitor's own files; see
    # tests/test_attachment_links.py).
    assert [m.cls for m in app_kwargs["middleware"]] == [
        RequestGuard,
        UploadGuard,
        UploadOwners,
        AttachmentRoute,
    ]


async def test_only_the_chat_endpoint_is_public_and_it_stores_nothing(
    make_page: PageFactory,
) -> None:
    page = await make_page()
    public = [fn.api_name for fn in page.demo.fns.values() if fn.api_visibility == "public"]
    assert public == ["chat"]


def test_gradios_own_editing_routes_are_off_in_the_real_app(security_app: AppServer) -> None:
    with http_from(security_app.url) as http:
        for route in ("vibe-edit", "vibe-code", "undo-vibe-edit", "vibe-starter-queries"):
            answer = http.post(f"gradio_api/{route}", json={"prompt": "rm -rf /", "hash": "x"})
            assert answer.status_code in (403, 404, 422), (route, answer.status_code)
