"""The model picker in the real app: filters narrow the list, long names are shown whole."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import AppServer
from tests.fakes.openrouter import CATALOG
from tests.ui import open_app

VISION_IDS = {m["id"] for m in CATALOG if "image" in m["architecture"]["input_modalities"]}
LONG_NAMED = "google/gemini-2.5-flash-image"  # the fake's longest name, a vision model


@pytest.mark.e2e
def test_vision_filter_lists_only_vision_models_and_long_names_show_whole(
    page: Page, app_server: AppServer
) -> None:
    open_app(page, app_server.url)
    status = page.locator("#catalog-status")
    expect(status).to_contain_text("models from OpenRouter")
    page.locator("#model-flags").get_by_text("Vision", exact=True).click()
    expect(status).to_contain_text(f"{len(VISION_IDS)} match the filters")

    page.locator("#model-picker input").click()
    options = page.locator("#model-picker [role=option]")
    expect(options).to_have_count(len(VISION_IDS))  # the chosen gpt-4o is a vision model
    shown = options.all_inner_texts()
    assert all(any(f"({model_id})" in text for model_id in VISION_IDS) for text in shown)

    long_option = options.filter(has_text=LONG_NAMED)
    expect(long_option).to_be_visible()
    name = next(m["name"] for m in CATALOG if m["id"] == LONG_NAMED)
    expect(long_option).to_contain_text(name)
    # Nothing of it is clipped: no hidden overflow, and the whole box is on screen.
    clipped = long_option.evaluate(
        "el => el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1"
    )
    assert clipped is False
    box = long_option.bounding_box()
    viewport = page.viewport_size
    assert box is not None and viewport is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    # Wider than the settings column: the list opens over the chat.
    column = page.locator("#model-picker").bounding_box()
    assert column is not None and box["width"] > column["width"]

    page.keyboard.press("Escape")
    page.locator("#model-flags").get_by_text("Vision", exact=True).click()
    expect(status).not_to_contain_text("match the filters")
