"""Browser journeys for saved conversations: sidebar, privacy, restarts, export/import, BYOK."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from chatlib.messages import ChatMessage
from chatlib.storage import ConversationStore
from tests import stored
from tests.conftest import TEST_API_KEY, AppServer
from tests.fakes.openrouter import FakeOpenRouter
from tests.ui import (
    INPUT,
    chat_once,
    last_answer,
    open_app,
    send,
    toast,
    user_messages,
)

pytestmark = pytest.mark.e2e


def conversation_items(page: Page):  # noqa: ANN201 - a Locator
    """The sidebar's conversation entries."""
    return page.locator("#conversation-list label")


def new_chat(page: Page) -> None:
    """Start a fresh conversation from the sidebar."""
    page.locator("#new-chat").click()
    expect(user_messages(page)).to_have_count(0)


def chat_menu(page: Page, title: str) -> Locator:
    """Open the ⋯ menu of the listed chat titled `title` (its start will do); the menu."""
    page.get_by_role("button", name=f"Actions for {title}").first.click()
    menu = page.get_by_role("menu")
    expect(menu).to_be_visible()
    return menu


def send_action(page: Page, payload: str) -> None:
    """Send raw text through the ⋯ menus' hidden channel, as a forged page script would."""
    page.evaluate(
        "(payload) => window.orchat.send('chat-action', 'chat-action-send', payload)", payload
    )


@pytest.fixture(scope="module")
def app(shared_app_factory: Callable[..., AppServer], fake_openrouter: FakeOpenRouter) -> AppServer:
    return shared_app_factory(  # the keyed app of the session: every test is a new visitor
        "conversations",
        OPENROUTER_API_KEY=TEST_API_KEY,
        OPENROUTER_BASE_URL=fake_openrouter.base_url,
    )


def test_conversations_are_listed_switched_renamed_deleted_and_survive_restart(
    browser: Browser,
    app_factory: Callable[..., AppServer],
    fake: FakeOpenRouter,
) -> None:
    server = app_factory(
        "restart", OPENROUTER_API_KEY=TEST_API_KEY, OPENROUTER_BASE_URL=fake.base_url
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        open_app(page, server.url)
        chat_once(page, "Paris trip plans [[tokens=4]]")
        new_chat(page)
        chat_once(page, "Python decorators [[tokens=4]]")
        expect(conversation_items(page)).to_have_count(2)
        expect(conversation_items(page).first).to_contain_text("Python decorators")

        # Switch back: the first conversation's messages come back.
        conversation_items(page).filter(has_text="Paris trip").click()
        expect(user_messages(page).first).to_contain_text("Paris trip plans")
        expect(user_messages(page)).to_have_count(1)
        conversation_items(page).filter(has_text="Python decorators").click()
        expect(user_messages(page).first).to_contain_text("Python decorators")

        # Rename the other chat from its ⋯ menu, in place: the open chat stays open.
        chat_menu(page, "Paris trip plans").get_by_role("menuitem", name="Rename").click()
        rename = page.locator("#conversation-list .chat-rename")
        expect(rename).to_have_value("Paris trip plans [[tokens=4]]")
        expect(rename).to_be_focused()
        rename.fill("Holiday in France")
        rename.press("Enter")
        expect(conversation_items(page).filter(has_text="Holiday in France")).to_have_count(1)
        expect(page.get_by_role("radio", checked=True)).to_have_accessible_name(
            re.compile("^Python decorators")
        )
        expect(user_messages(page).first).to_contain_text("Python decorators")

        # The keyboard: Enter on ⋯ opens the menu at its first item, arrows move, Esc closes
        # (handled, so the page's own Esc shortcut leaves it alone) and focus comes back.
        page.evaluate(
            "() => { window.escapes = []; window.addEventListener('keydown', (e) => "
            "e.key === 'Escape' && window.escapes.push(e.defaultPrevented)); }"
        )
        actions = page.get_by_role("button", name="Actions for Holiday in France")
        actions.focus()
        actions.press("Enter")
        expect(actions).to_have_attribute("aria-expanded", "true")
        expect(page.get_by_role("menuitem", name="Rename")).to_be_focused()
        page.keyboard.press("ArrowDown")
        expect(page.get_by_role("menuitem", name="Export JSON")).to_be_focused()
        page.keyboard.press("Escape")
        expect(page.get_by_role("menu")).to_have_count(0)
        expect(actions).to_be_focused()
        expect(actions).to_have_attribute("aria-expanded", "false")
        assert page.evaluate("() => window.escapes") == [True]
        expect(user_messages(page).first).to_contain_text("Python decorators")

        # Restart the server on the same port and data: same list, same messages.
        server = server.restart()
        open_app(page, server.url)
        expect(conversation_items(page)).to_have_count(2)
        conversation_items(page).filter(has_text="Holiday in France").click()
        expect(user_messages(page).first).to_contain_text("Paris trip plans")

        # Delete the open chat, confirmed in its menu: a fresh chat shows, the other stays.
        menu = chat_menu(page, "Holiday in France")
        menu.get_by_role("menuitem", name="Delete").click()
        expect(menu).to_contain_text("Delete “Holiday in France”?")
        menu.get_by_role("menuitem", name="Yes, delete").click()
        expect(conversation_items(page)).to_have_count(1)
        expect(conversation_items(page)).to_contain_text("Python decorators")
        expect(user_messages(page)).to_have_count(0)
    finally:
        context.close()
        server.stop()


def test_another_visitor_sees_none_of_my_conversations(
    browser: Browser, app: AppServer, fake: FakeOpenRouter
) -> None:
    mine = browser.new_context()
    theirs = browser.new_context()
    try:
        page = mine.new_page()
        open_app(page, app.url)
        chat_once(page, "My secret plans quokka7731 [[tokens=3]]")
        expect(conversation_items(page).filter(has_text="My secret plans")).to_have_count(1)

        other = theirs.new_page()
        open_app(other, app.url)
        expect(other.locator("#conversation-list")).not_to_contain_text("My secret plans")
        # A word no page holds by chance (a bare number can turn up in inline styles).
        other.locator("#conversation-search input").fill("quokka7731")
        expect(other.locator("#storage-notice")).to_contain_text("No chat matches")
        expect(conversation_items(other)).to_have_count(0)
        assert "quokka7731" not in other.content()

        # Forged menu actions through the hidden channel: my chat's id, then junk. They are
        # handled in order, each refused; the last one's refusal says they are all done.
        mine_id = page.locator("#conversation-list input[type=radio]").first.get_attribute("value")
        send_action(other, json.dumps({"action": "delete", "id": mine_id}))
        expect(toast(other, "does not exist")).to_be_visible()
        send_action(other, json.dumps({"action": "rename", "id": mine_id, "title": "pwned"}))
        send_action(other, '{"action": "drop tables", "id": 1}')
        expect(toast(other, "That chat action was refused (action:")).to_be_visible()
        open_app(page, app.url)
        expect(conversation_items(page).filter(has_text="My secret plans")).to_have_count(1)
        expect(conversation_items(page).filter(has_text="pwned")).to_have_count(0)
    finally:
        mine.close()
        theirs.close()


def test_export_downloads_in_one_click_and_import_marks_the_copy(
    page: Page, app: AppServer, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    open_app(page, app.url)
    chat_once(page, "Remember the llama [[tokens=3]]")
    menu = chat_menu(page, "Remember the llama")
    with page.expect_download() as download_info:
        menu.get_by_role("menuitem", name="Export JSON").click()
    download = download_info.value
    assert download.suggested_filename.startswith("chat_")
    exported = tmp_path / download.suggested_filename
    download.save_as(exported)
    document = json.loads(exported.read_text())
    assert document["conversations"][0]["messages"][0]["content"].startswith("Remember the llama")
    assert TEST_API_KEY not in exported.read_text()
    expect(page.get_by_role("menu")).to_have_count(0)

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export all").click()
    everything = json.loads(Path(download_info.value.path()).read_text())
    assert [c["title"] for c in everything["conversations"]] == [
        document["conversations"][0]["title"]
    ]

    with page.expect_file_chooser() as chooser:
        page.locator("#import-button").click()
    chooser.value.set_files(str(exported))
    expect(toast(page, "Imported 1 conversation")).to_be_visible()
    llamas = conversation_items(page).filter(has_text="Remember the llama")
    expect(llamas).to_have_count(2)
    expect(llamas.filter(has_text="⤓ imported")).to_have_count(1)


def test_a_malicious_import_is_refused_with_a_reason(
    page: Page, app: AppServer, tmp_path: Path
) -> None:
    evil = tmp_path / "evil.json"
    evil.write_text(
        json.dumps(
            {
                "format": "openrouter-chat",
                "schema_version": 1,
                "conversations": [
                    {
                        "id": "../../etc/passwd",
                        "title": "../../etc/passwd",
                        "created_at": 1.0,
                        "updated_at": 2.0,
                        "model": "openai/gpt-4o",
                        "system_prompt": "",
                        "temperature": 0.3,
                        "messages": [
                            {"role": "user", "content": "hi"},
                            {"role": "tool", "content": "rm -rf /"},
                        ],
                    }
                ],
            }
        )
    )
    open_app(page, app.url)
    with page.expect_file_chooser() as chooser:
        page.locator("#import-button").click()
    chooser.value.set_files(str(evil))
    expect(toast(page, "role 'tool'")).to_be_visible()
    expect(conversation_items(page)).to_have_count(0)


def test_html_in_messages_is_shown_as_text_and_never_runs(
    page: Page, app: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app.url)
    payload = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    chat_once(page, f"{payload} [[tokens=3]]")
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.__pwned") is None
    expect(page.locator("#chat script")).to_have_count(0)
    expect(page.locator("#chat img[onerror]")).to_have_count(0)


def test_visitor_key_is_used_for_their_requests_and_only_shown_masked(
    browser: Browser, app_factory: Callable[..., AppServer], fake: FakeOpenRouter
) -> None:
    byok = app_factory(
        "byok",
        OPENROUTER_API_KEY=TEST_API_KEY,
        OPENROUTER_BASE_URL=fake.base_url,
        ALLOW_USER_KEYS="true",
    )
    visitor_key = "sk-or-v1-VISITOR0000key0000cafe1234"
    context = browser.new_context()
    page = context.new_page()
    try:
        open_app(page, byok.url)
        page.get_by_text("Your OpenRouter key", exact=True).click()
        page.locator("#byok-key input").fill(visitor_key)
        page.locator("#byok-remember input").check()  # kept after a reload
        page.get_by_role("button", name="Use my key").click()
        expect(page.locator("#byok-status")).to_contain_text("$7.50 of $10.00")
        expect(page.locator("#byok-status")).to_contain_text("sk-or-…1234")
        chat_once(page, "Bill me, not the operator [[tokens=3]]")
        assert fake.chat_requests()[-1].headers["authorization"] == f"Bearer {visitor_key}"

        open_app(page, byok.url)
        expect(page.locator("#byok-status")).to_contain_text("sk-or-…1234")
        assert visitor_key not in page.content()
        chat_once(page, "Still me [[tokens=3]]")
        assert fake.chat_requests()[-1].headers["authorization"] == f"Bearer {visitor_key}"

        page.get_by_text("Your OpenRouter key", exact=True).click()
        page.get_by_role("button", name="Forget my key").click()
        expect(page.locator("#byok-status")).to_contain_text("operator's key")
        chat_once(page, "Operator again [[tokens=3]]")
        assert fake.chat_requests()[-1].headers["authorization"] == f"Bearer {TEST_API_KEY}"
        for path in byok.workdir.rglob("*"):
            if path.is_file():
                assert visitor_key not in path.read_text(errors="replace"), path
    finally:
        context.close()


def test_a_key_not_remembered_lasts_only_as_long_as_the_page(
    page: Page, app_factory: Callable[..., AppServer], fake: FakeOpenRouter
) -> None:
    byok = app_factory(
        "byok-session",
        OPENROUTER_API_KEY=TEST_API_KEY,
        OPENROUTER_BASE_URL=fake.base_url,
        ALLOW_USER_KEYS="true",
    )
    visitor_key = "sk-or-v1-VISITOR0000key0000beef5678"
    open_app(page, byok.url)
    page.get_by_text("Your OpenRouter key", exact=True).click()
    page.locator("#byok-key input").fill(visitor_key)
    page.get_by_role("button", name="Use my key").click()
    expect(page.locator("#byok-status")).to_contain_text("for this page only")
    chat_once(page, "On my key [[tokens=3]]")
    assert fake.chat_requests()[-1].headers["authorization"] == f"Bearer {visitor_key}"

    open_app(page, byok.url)  # a reload is a new page session: the key is gone
    expect(page.locator("#byok-status")).to_contain_text("operator's key")
    chat_once(page, "Back on the operator [[tokens=3]]")
    assert fake.chat_requests()[-1].headers["authorization"] == f"Bearer {TEST_API_KEY}"


def old_data_folder(data_dir: Path, owner_key: str, questions: list[str], broken: str) -> str:
    """Write chats as the file store (before the database) did, one file damaged; its id."""
    files = ConversationStore(data_dir)
    for question in [*questions, broken]:
        chat = files.new_conversation("openai/gpt-4o", "", 0.3)
        messages = (
            ChatMessage(role="user", content=question),
            ChatMessage(role="assistant", content=f"Answer to {question}"),
        )
        saved = files.save(owner_key, replace(chat, messages=messages))
    damaged = data_dir / "conversations" / owner_key / f"{saved.id}.json"
    damaged.write_bytes(damaged.read_bytes()[:40])  # torn, as by a crash mid-write
    return saved.id


def test_a_damaged_file_in_an_old_data_folder_is_skipped_and_logged_not_fatal(
    page: Page, app_factory: Callable[..., AppServer], fake: FakeOpenRouter
) -> None:
    # An operator upgrades a data folder written by the file store: at its first start on
    # it the app imports the files into its new database, once. The visitor's identity is
    # learnt from a first chat; the folder is then written for it, without the database.
    server = app_factory(
        "old-folder", OPENROUTER_API_KEY=TEST_API_KEY, OPENROUTER_BASE_URL=fake.base_url
    )
    data_dir = server.workdir / ".data"
    open_app(page, server.url)
    chat_once(page, "Who am I [[tokens=3]]")
    owner_key = stored.find_saved(data_dir, "Who am I").owner_key
    server.stop()
    for database in data_dir.glob("chat.db*"):
        database.unlink()
    broken_id = old_data_folder(data_dir, owner_key, ["Keep me safe", "Me too"], "Break me")

    server = server.restart()  # same port and server secret: the same visitor
    try:
        open_app(page, server.url)
        expect(conversation_items(page)).to_have_count(2)
        conversation_items(page).filter(has_text="Keep me safe").click()
        expect(last_answer(page)).to_contain_text("Answer to Keep me safe")
        expect(page.locator("#storage-notice")).not_to_be_visible()
        chat_once(page, "Still working [[tokens=3]]")  # an imported chat goes on

        imported = stored.conversations(data_dir, owner_key)
        assert sorted(c.contents[0] for c in imported) == ["Keep me safe", "Me too"]
        assert broken_id not in {c.id for c in imported}
        events = [json.loads(line) for line in server.log_path.read_text().splitlines()]
        skipped = [e for e in events if e["event"] == "store.import_skipped"]
        assert [(e["owner_key"], e["conversation_id"]) for e in skipped] == [(owner_key, broken_id)]
        report = [e for e in events if e["event"] == "store.json_imported"][-1]
        assert (report["imported"], report["skipped"]) == (2, 1)
        assert (data_dir / "conversations" / owner_key / f"{broken_id}.json").exists()
    finally:
        server.stop()


def test_switching_mid_answer_keeps_the_answer_in_its_own_conversation(
    page: Page, app: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app.url)
    chat_once(page, "Short one [[tokens=3]]")
    new_chat(page)
    send(page, "Long story [[tokens=60]] [[rate=30]]")
    expect(last_answer(page)).to_contain_text("Echo: Long story")
    conversation_items(page).filter(has_text="Short one").click()
    expect(user_messages(page)).to_have_count(1)
    expect(user_messages(page).first).to_contain_text("Short one")
    page.wait_for_timeout(2500)  # the other answer finishes meanwhile
    expect(user_messages(page)).to_have_count(1)
    expect(page.locator("#chat")).not_to_contain_text("Long story")
    conversation_items(page).filter(has_text="Long story").click()
    expect(last_answer(page)).to_contain_text("w50")
    expect(page.locator(INPUT)).to_be_visible()


def test_a_chat_opened_from_the_list_mid_answer_follows_it_and_can_stop_it(
    page: Page, app: AppServer, fake: FakeOpenRouter
) -> None:
    open_app(page, app.url)
    new_chat(page)
    send(page, "Reload during this [[tokens=400]] [[rate=20]]")
    expect(last_answer(page)).to_contain_text("w10")
    open_app(page, app.url)  # the app's plain address: a new chat, the answer goes on
    conversation_items(page).filter(has_text="Reload during this").click()
    expect(user_messages(page)).to_have_count(1)
    answer = last_answer(page)
    expect(answer).to_contain_text("w30")  # still growing, live
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(answer).to_contain_text("stopped")
    expect(answer).not_to_contain_text("w400")
