"""Browser journeys with attachments: attach, send, see, reload; refusals; private links."""

from __future__ import annotations

import base64
import io
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import TEST_API_KEY, AppServer, start_app
from tests.fakes.openrouter import FakeOpenRouter
from tests.test_e2e_conversations import chat_menu
from tests.ui import INPUT, new_device_context, open_app, set_model, toast, wait_until_idle

VISION_MODEL = "openai/gpt-4o"
TEXT_ONLY_MODEL = "meta-llama/llama-3.3-70b-instruct"
DRAWING_MODEL = "google/gemini-2.5-flash-image"
FILE_INPUT = "#message-input input[type=file]"
CHIPS = "#message-input .thumbnail-wrapper"
USER_IMAGES = '#chat [data-testid="user"] a[href^="/attachment/"] img'
MAX_ATTACHMENT_BYTES = 300_000


def png(width: int = 64, height: int = 48, color: str = "teal") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def pdf() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )


@pytest.fixture(scope="module")
def app(app_factory: Callable[..., AppServer], fake_openrouter: FakeOpenRouter) -> AppServer:
    return app_factory(
        "attachments",
        OPENROUTER_API_KEY=TEST_API_KEY,
        OPENROUTER_BASE_URL=fake_openrouter.base_url,
        MAX_ATTACHMENT_BYTES=str(MAX_ATTACHMENT_BYTES),
        # Every journey here uploads from 127.0.0.1: the default 10 a minute would refuse the
        # later ones (the upload limit has its own test).
        UPLOADS_PER_MIN="0",
    )


def files(tmp_path: Path, **named: bytes) -> list[str]:
    paths = []
    for name, data in named.items():
        path = tmp_path / name.replace("_", ".", 1)
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def paste_png(page: Page, data: bytes, name: str = "screenshot.png") -> None:
    """Paste a picture into the message box, as a screenshot from the clipboard would be."""
    page.locator(INPUT).evaluate(
        """(box, [b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name, { type: "image/png" }));
            box.focus();
            box.dispatchEvent(new ClipboardEvent("paste", {
                clipboardData: data, bubbles: true, cancelable: true,
            }));
        }""",
        [base64.b64encode(data).decode("ascii"), name],
    )


def drop_files(page: Page, *named: tuple[str, bytes, str]) -> None:
    """Drag files (name, bytes, MIME type) from the desktop and drop them on the message box."""
    transfer = page.evaluate_handle(
        """(files) => {
            const data = new DataTransfer();
            for (const [b64, name, type] of files) {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                data.items.add(new File([bytes], name, { type }));
            }
            return data;
        }""",
        [[base64.b64encode(data).decode("ascii"), name, mime] for name, data, mime in named],
    )
    box = page.locator(INPUT)
    for event in ("dragenter", "dragover", "drop"):
        box.dispatch_event(event, {"dataTransfer": transfer})


def send_now(page: Page, text: str) -> None:
    page.locator(INPUT).fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def loaded_images(page: Page, selector: str) -> int:
    """How many of the pictures matched have loaded (naturalWidth > 0)."""
    return int(
        page.locator(selector).evaluate_all(
            "(images) => images.filter((i) => i.complete && i.naturalWidth > 0).length"
        )
    )


def user_parts(fake: FakeOpenRouter) -> list[dict[str, Any]]:
    """The content parts of the last question sent upstream."""
    content = fake.chat_requests()[-1].body["messages"][-1]["content"]
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def test_a_photo_and_a_pasted_screenshot_reach_a_vision_model_and_stay_after_a_reload(
    page: Page, app: AppServer, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    # Desktop only: issue 16 names no phone journey (the composer is the same component).
    open_app(page, app.url)
    set_model(page, VISION_MODEL)
    page.locator(FILE_INPUT).set_input_files(files(tmp_path, photo_png=png()))
    paste_png(page, png(color="orange"))
    expect(page.locator(CHIPS)).to_have_count(2)
    expect(page.locator(CHIPS).first).to_contain_text("photo.png")
    send_now(page, "What is in these pictures? [[tokens=3]]")
    wait_until_idle(page)
    expect(page.locator(USER_IMAGES)).to_have_count(2)
    expect(page.locator(CHIPS)).to_have_count(0)  # sent: the box is empty again
    assert [p["type"] for p in user_parts(fake)].count("image_url") == 2
    page.wait_for_function(
        f"document.querySelectorAll('{USER_IMAGES}').length === 2 && "
        f"[...document.querySelectorAll('{USER_IMAGES}')].every((i) => i.naturalWidth > 0)"
    )
    page.reload(wait_until="load")
    expect(page.locator(USER_IMAGES)).to_have_count(2)
    page.wait_for_function(
        f"[...document.querySelectorAll('{USER_IMAGES}')].every((i) => i.naturalWidth > 0)"
    )


def test_a_pdf_goes_to_a_text_only_model_and_a_picture_is_refused_with_the_text_kept(
    page: Page, app: AppServer, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    open_app(page, app.url)
    set_model(page, TEXT_ONLY_MODEL)
    page.locator(FILE_INPUT).set_input_files(files(tmp_path, report_pdf=pdf()))
    expect(page.locator(CHIPS)).to_have_count(1)
    send_now(page, "Summarise the report [[tokens=3]]")
    wait_until_idle(page)
    expect(page.locator('#chat [data-testid="user"]').last).to_contain_text("report.pdf")
    assert any(p["type"] == "file" for p in user_parts(fake))

    asked = len(fake.chat_requests())
    page.locator(FILE_INPUT).set_input_files(files(tmp_path, cat_png=png()))
    expect(page.locator(CHIPS)).to_have_count(1)
    send_now(page, "Describe the cat")
    expect(toast(page, "image")).to_be_visible()
    expect(page.locator(INPUT)).to_have_value("Describe the cat")
    expect(page.locator(CHIPS)).to_have_count(1)
    assert len(fake.chat_requests()) == asked  # nothing went upstream


def test_oversize_and_disguised_files_are_refused_with_the_reason(
    page: Page, app: AppServer, tmp_path: Path
) -> None:
    open_app(page, app.url)
    set_model(page, VISION_MODEL)
    big = files(tmp_path, big_txt=b"a" * (MAX_ATTACHMENT_BYTES + 50_000))
    page.locator(FILE_INPUT).set_input_files(big)
    expect(page.locator(CHIPS)).to_have_count(1)
    send_now(page, "Read this")
    expect(toast(page, "the limit is 300 KB")).to_be_visible()
    expect(page.locator(INPUT)).to_have_value("Read this")
    page.locator(f"{CHIPS} .delete-button").click()
    expect(page.locator(CHIPS)).to_have_count(0)

    disguised = files(tmp_path, fake_png=b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\xff\xff" * 40)
    page.locator(FILE_INPUT).set_input_files(disguised)
    expect(page.locator(CHIPS)).to_have_count(1)
    send_now(page, "Look at this")
    expect(toast(page, "fake.png")).to_be_visible()
    expect(page.locator(INPUT)).to_have_value("Look at this")


def test_an_attachment_link_opens_only_in_its_owner_s_browser(
    browser: Browser, app: AppServer, tmp_path: Path
) -> None:
    owner = new_device_context(browser, "desktop")
    try:
        page = owner.new_page()
        open_app(page, app.url)
        set_model(page, VISION_MODEL)
        page.locator(FILE_INPUT).set_input_files(files(tmp_path, private_png=png()))
        expect(page.locator(CHIPS)).to_have_count(1)
        send_now(page, "Keep this private [[tokens=2]]")
        wait_until_idle(page)
        link = page.locator(USER_IMAGES).first.locator("xpath=..").get_attribute("href")
        assert link is not None and link.startswith("/attachment/")
        url = app.url.rstrip("/") + link
        answer = page.request.get(url)
        assert answer.status == 200
        assert answer.headers["content-type"] == "image/png"
        assert answer.headers["x-content-type-options"] == "nosniff"
        stranger = new_device_context(browser, "desktop")
        try:
            other = stranger.new_page()
            open_app(other, app.url)  # has a seat of its own
            assert other.request.get(url).status == 404
        finally:
            stranger.close()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)  # noqa: S310 - loopback test server
        assert refused.value.code == 404
    finally:
        owner.close()


def test_a_drawn_picture_appears_and_is_still_there_after_a_restart(
    page: Page, fake: FakeOpenRouter, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir = tmp_path_factory.mktemp("drawing")
    env = {"OPENROUTER_API_KEY": TEST_API_KEY, "OPENROUTER_BASE_URL": fake.base_url}
    drawn = '#chat [data-testid="bot"] img'
    server = start_app(workdir, env)
    try:
        open_app(page, server.url)
        set_model(page, DRAWING_MODEL)
        send_now(page, "Draw me a logo [[images=1]] [[tokens=3]]")
        wait_until_idle(page)
        expect(page.locator(drawn)).to_have_count(1)
        page.wait_for_function(f"document.querySelector('{drawn}').naturalWidth > 0")
        assert fake.chat_requests()[-1].body["modalities"] == ["image", "text"]
        address = page.url
    finally:
        server.stop()
    again = start_app(workdir, env, port=server.port)  # same address: same visitor, same seat
    try:
        open_app(page, address)
        expect(page.locator(drawn)).to_have_count(1)
        page.wait_for_function(f"document.querySelector('{drawn}').naturalWidth > 0")
    finally:
        again.stop()


def test_files_dropped_on_the_composer_are_sent_and_a_blind_model_is_said_to_miss_the_picture(
    page: Page, app: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app.url)
    set_model(page, VISION_MODEL)
    drop_files(
        page,
        ("holiday.png", png(color="navy"), "image/png"),
        ("plan.pdf", pdf(), "application/pdf"),
    )
    expect(page.locator(CHIPS)).to_have_count(2)
    expect(page.locator(CHIPS).first).to_contain_text("holiday.png")
    send_now(page, "What do these show? [[tokens=3]]")
    wait_until_idle(page)
    expect(page.locator(USER_IMAGES)).to_have_count(1)
    expect(page.locator('#chat [data-testid="user"]').last).to_contain_text("plan.pdf")
    assert sorted(p["type"] for p in user_parts(fake)) == ["file", "image_url", "text"]

    # The visitor moves on with a model that cannot see: the picture stays behind, and says so.
    set_model(page, TEXT_ONLY_MODEL)
    send_now(page, "Now in one word [[tokens=2]]")
    # Looked for at once: a toast closes by itself after a while.
    expect(toast(page, "older picture was not sent")).to_contain_text("can't see images")
    wait_until_idle(page)
    sent = fake.chat_requests()[-1].body["messages"]
    parts = [p for m in sent if isinstance(m["content"], list) for p in m["content"]]
    assert "image_url" not in {p["type"] for p in parts}
    expect(page.locator(USER_IMAGES)).to_have_count(1)  # still on the page, and kept


def test_a_chat_with_files_exports_from_its_menu_as_markdown_with_the_files_beside_it(
    page: Page, app: AppServer, tmp_path: Path
) -> None:
    photo, report = png(color="maroon"), pdf()
    open_app(page, app.url)
    set_model(page, VISION_MODEL)
    page.locator(FILE_INPUT).set_input_files(files(tmp_path, sunset_png=photo, budget_pdf=report))
    expect(page.locator(CHIPS)).to_have_count(2)
    send_now(page, "Keep these for the trip report [[tokens=3]]")
    wait_until_idle(page)
    # The list is drawn again once the answer is saved (with its cost): open the menu after.
    listed = page.locator("#conversation-list label").filter(has_text="Keep these for the trip")
    expect(listed).to_contain_text("$")

    menu = chat_menu(page, "Keep these for the trip")
    with page.expect_download() as download_info:
        menu.get_by_role("menuitem", name="Export Markdown").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".zip")
    with zipfile.ZipFile(download.path()) as archive:
        assert sorted(archive.namelist()) == ["chat.md", "files/budget.pdf", "files/sunset.png"]
        document = archive.read("chat.md").decode("utf-8")
        assert archive.read("files/sunset.png") == photo
        assert archive.read("files/budget.pdf") == report
    assert "Keep these for the trip report" in document
    assert "(files/sunset.png)" in document and "(files/budget.pdf)" in document
    assert TEST_API_KEY not in document
