"""The database's conversations as the JSON files the dataset repo keeps, and back.

A Space's disk is wiped at every restart: conversations saved in SQLite must come back from
the dataset repo's files. Every story runs on SQLite and PostgreSQL unless it says otherwise.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from chatlib import branches
from chatlib.errors import AttachmentNotFound
from chatlib.hub_sync import HubSync
from chatlib.messages import AnswerMeta, ChatMessage
from chatlib.snapshot import (
    SNAPSHOT_STATE_NAME,
    SnapshotReport,
    conversation_file_bytes,
    snapshot_hook,
    write_snapshot,
)
from chatlib.storage import Conversation, ConversationStore
from chatlib.store import SqlAttachmentStore, SqlConversationStore, database_url, open_store
from tests.clocks import FakeClock
from tests.fakes.hf_hub import DEFAULT_TOKEN, FakeHfHub
from tests.pg_server import fresh_database, postgres_server, postgres_url  # noqa: F401
from tests.test_attachment_store import DOCUMENT, PICTURE

ALICE = "a1" * 16
BOB = "b2" * 16
DATASET = "fake-user/chat-data"


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Make empty databases of the test's engine (SQLite: a file outside DATA_DIR)."""
    made = 0

    def make() -> str:
        nonlocal made
        made += 1
        if request.param == "sqlite":
            return database_url(tmp_path / f"db{made}")
        return fresh_database(request.getfixturevalue("postgres_url"))

    return make


@pytest.fixture
async def opened() -> AsyncIterator[Callable[..., Any]]:
    """Open stores (migrated, JSON imported from `data_dir` if given); closed after the test."""
    stores: list[SqlConversationStore] = []

    async def open_(url: str, data_dir: Path | None = None) -> SqlConversationStore:
        stores.append(await open_store(url, data_dir=data_dir, clock=FakeClock()))
        return stores[-1]

    yield open_
    for store in stores:
        await store.aclose()


async def _chat(store: SqlConversationStore, owner: str, *texts: str) -> Conversation:
    """Save a conversation where the user said `texts` and the assistant answered each."""
    conversation = store.new_conversation("openai/gpt-4o", "Be brief.", 0.7)
    messages: list[ChatMessage] = []
    for said in texts:
        messages.append(ChatMessage("user", said, created_at=1_750_000_000.5))
        meta = AnswerMeta(
            model="openai/gpt-4o",
            status="complete",
            prompt_tokens=10,
            completion_tokens=20,
            cost_usd=0.0015,
            ttft_ms=120.0,
            latency_ms=900.0,
            generation_id="gen-1",
        )
        messages.append(ChatMessage("assistant", f"Answer to {said} ✓", "thinking…", meta))
    return await store.save(owner, replace(conversation, messages=tuple(messages)))


def _file(data_dir: Path, owner: str, conversation_id: str) -> Path:
    return data_dir / "conversations" / owner / f"{conversation_id}.json"


def _files(data_dir: Path) -> set[str]:
    root = data_dir / "conversations"
    return {p.relative_to(root).as_posix() for p in root.rglob("*.json")}


async def _everything(store: SqlConversationStore, *owners: str) -> dict[str, Conversation]:
    found: dict[str, Conversation] = {}
    for owner in owners:
        for summary in (await store.list(owner)).conversations:
            found[f"{owner}/{summary.id}"] = await store.load(owner, summary.id)
    return found


async def test_saved_conversations_become_the_file_stores_files_and_import_back_identically(
    new_database: Callable[[], str], opened: Callable[..., Any], tmp_path: Path
) -> None:
    store = await opened(new_database())
    first = await _chat(store, ALICE, "What is a monad?", "And a functor?")
    second = await _chat(store, ALICE, "Hi")
    other = await _chat(store, BOB, "Bonjour")
    data_dir = tmp_path / "data"

    report = await write_snapshot(store, data_dir, data_dir / SNAPSHOT_STATE_NAME)

    assert report == SnapshotReport(conversations=3, written=3)
    assert _files(data_dir) == {
        f"{ALICE}/{first.id}.json",
        f"{ALICE}/{second.id}.json",
        f"{BOB}/{other.id}.json",
    }
    # The file store's own reader takes them, and they are the bytes it would have written.
    reader = ConversationStore(data_dir)
    assert reader.load(ALICE, first.id) == first
    assert _file(data_dir, ALICE, first.id).read_bytes() == conversation_file_bytes(first)
    # A new, empty database imports them at startup as they were.
    restored = await opened(new_database(), data_dir)
    assert await _everything(restored, ALICE, BOB) == await _everything(store, ALICE, BOB)


async def test_a_branched_imported_chat_comes_back_from_the_snapshot_with_every_version(
    new_database: Callable[[], str], opened: Callable[..., Any], tmp_path: Path
) -> None:
    store = await opened(new_database())
    chat = await _chat(store, ALICE, "Tell me a joke")
    retried = branches.fork(chat, 1)  # what retry does: the old answer stays a version
    answer = ChatMessage("assistant", "Another joke", created_at=1_750_000_009.0)
    retried = replace(retried, messages=(*retried.messages, answer), imported_at=1_760_000_000.0)
    saved = await store.save(ALICE, retried, expected=chat)
    shown = await store.save(ALICE, branches.switch(saved, 1, -1), expected=saved)
    data_dir = tmp_path / "data"

    await write_snapshot(store, data_dir, data_dir / SNAPSHOT_STATE_NAME)
    restored = await opened(new_database(), data_dir)

    back = await restored.load(ALICE, chat.id)
    assert branches.same_tree(back, shown) and back.imported_at == 1_760_000_000.0
    assert branches.versions_of(back) == ((1, 1), (1, 2))
    assert branches.switch(back, 1, +1).messages[1].content == "Another joke"


def test_the_export_format_is_what_the_file_store_writes(tmp_path: Path) -> None:
    files = ConversationStore(tmp_path)
    conversation = files.new_conversation("openai/gpt-4o", "sys", 0.2)
    meta = AnswerMeta(model="openai/gpt-4o", status="stopped", cost_usd=0.25, ttft_ms=1.5)
    saved = files.save(
        ALICE,
        replace(
            conversation,
            messages=(ChatMessage("user", "héllo\n"), ChatMessage("assistant", "ok", meta=meta)),
        ),
    )
    written = _file(tmp_path, ALICE, saved.id).read_bytes()
    assert conversation_file_bytes(files.load(ALICE, saved.id)) == written
    assert orjson.loads(written)["revision"] == saved.revision == 1


async def test_only_what_changed_is_written_again(
    new_database: Callable[[], str], opened: Callable[..., Any], tmp_path: Path
) -> None:
    store = await opened(new_database())
    conversations = [await _chat(store, ALICE, f"question {n}") for n in range(5)]
    data_dir, state = tmp_path / "data", tmp_path / "data" / SNAPSHOT_STATE_NAME
    await write_snapshot(store, data_dir, state)
    untouched = _file(data_dir, ALICE, conversations[0].id).stat()

    assert await write_snapshot(store, data_dir, state) == SnapshotReport(conversations=5)
    await store.rename(ALICE, conversations[1].id, "Monads, explained")
    await store.save(ALICE, conversations[2], expected=conversations[2])
    report = await write_snapshot(store, data_dir, state)

    assert report == SnapshotReport(conversations=5, written=2)
    renamed = orjson.loads(_file(data_dir, ALICE, conversations[1].id).read_bytes())
    assert renamed["title"] == "Monads, explained"
    after = _file(data_dir, ALICE, conversations[0].id).stat()
    assert (after.st_ino, after.st_mtime_ns) == (untouched.st_ino, untouched.st_mtime_ns)


async def test_a_deleted_conversations_file_goes_with_the_next_snapshot(
    new_database: Callable[[], str], opened: Callable[..., Any], tmp_path: Path
) -> None:
    store = await opened(new_database())
    kept, deleted = await _chat(store, ALICE, "keep me"), await _chat(store, BOB, "delete me")
    data_dir, state = tmp_path / "data", tmp_path / "data" / SNAPSHOT_STATE_NAME
    await write_snapshot(store, data_dir, state)

    assert await store.delete(BOB, deleted.id)
    report = await write_snapshot(store, data_dir, state)

    assert report == SnapshotReport(conversations=1, removed=1)
    assert _files(data_dir) == {f"{ALICE}/{kept.id}.json"}
    assert not (data_dir / "conversations" / BOB).exists()  # an emptied owner folder goes too


async def test_conversations_moved_at_login_move_folders(
    new_database: Callable[[], str], opened: Callable[..., Any], tmp_path: Path
) -> None:
    store = await opened(new_database())
    moved = await _chat(store, ALICE, "anonymous question")
    data_dir, state = tmp_path / "data", tmp_path / "data" / SNAPSHOT_STATE_NAME
    await write_snapshot(store, data_dir, state)

    await store.move_all(ALICE, BOB)
    report = await write_snapshot(store, data_dir, state)

    assert report == SnapshotReport(conversations=1, written=1, removed=1)
    assert _files(data_dir) == {f"{BOB}/{moved.id}.json"}


async def test_files_the_snapshot_did_not_write_are_never_removed(
    new_database: Callable[[], str], opened: Callable[..., Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    damaged = _file(data_dir, ALICE, "c" * 32)
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b'{"schema_version": 1, "id": "cut of')
    store = await opened(new_database(), data_dir)  # the import skips the damaged file
    await _chat(store, ALICE, "new")

    report = await write_snapshot(store, data_dir, data_dir / SNAPSHOT_STATE_NAME)

    assert report == SnapshotReport(conversations=1, written=1)
    assert damaged.read_bytes() == b'{"schema_version": 1, "id": "cut of'


async def test_a_lost_state_file_costs_one_full_pass_and_rewrites_nothing(
    new_database: Callable[[], str], opened: Callable[..., Any], tmp_path: Path
) -> None:
    store = await opened(new_database())
    for n in range(3):
        await _chat(store, ALICE, f"question {n}")
    data_dir, state = tmp_path / "data", tmp_path / "data" / SNAPSHOT_STATE_NAME
    await write_snapshot(store, data_dir, state)

    state.write_bytes(b"\x00garbage")
    report = await write_snapshot(store, data_dir, state)

    assert report == SnapshotReport(conversations=3, unchanged=3)
    assert await write_snapshot(store, data_dir, state) == SnapshotReport(conversations=3)


# -- through the fake Hub: a Space restart on the default engine ------------------------------


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHfHub]:
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    with FakeHfHub() as fake:
        yield fake


def _sync(data_dir: Path, hub: FakeHfHub, before_push: Callable[[], object] | None) -> HubSync:
    return HubSync(
        data_dir,
        DATASET,
        DEFAULT_TOKEN,
        endpoint=hub.endpoint,
        every_minutes=60.0,
        before_push=before_push,
    )


async def test_a_space_restart_on_sqlite_brings_every_conversation_back(
    opened: Callable[..., Any], hub: FakeHfHub, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    url = database_url(data_dir)  # DATA_DIR/chat.db: wiped with the disk
    store = await opened(url, data_dir)
    kept = [await _chat(store, ALICE, "one", "two"), await _chat(store, BOB, "three")]
    deleted = await _chat(store, ALICE, "gone before the restart")
    sync = _sync(data_dir, hub, snapshot_hook(url, data_dir))
    assert sync.flush(timeout=30)
    assert await store.delete(ALICE, deleted.id)
    assert sync.flush(timeout=30)
    before = await _everything(store, ALICE, BOB)
    await store.aclose()

    shutil.rmtree(data_dir)  # the restart
    restarted = _sync(data_dir, hub, snapshot_hook(url, data_dir))
    assert restarted.restore().ok
    store = await opened(url, data_dir)

    assert await _everything(store, ALICE, BOB) == before
    assert {c.id for c in before.values()} == {c.id for c in kept}
    # The first push after the restart finds everything already in the repo.
    commits = len(hub.commits)
    assert restarted.flush(timeout=30)
    assert len(hub.commits) == commits


# -- attached files ------------------------------------------------------------------------


async def _chat_with_files(store: SqlConversationStore, owner: str) -> Conversation:
    """A chat whose question carries a picture and a PDF, both stored for `owner`."""
    files = SqlAttachmentStore(store.engine)
    for file in (PICTURE, DOCUMENT):
        await files.put(owner, file)
    chat = store.new_conversation("openai/gpt-4o", "", 0.7)
    question = ChatMessage("user", "Compare", attachments=(PICTURE.ref, DOCUMENT.ref))
    return await store.save(owner, replace(chat, messages=(question,)))


def _attached(data_dir: Path) -> set[str]:
    root = data_dir / "attachments"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


async def test_attached_files_are_written_once_beside_the_chats_and_go_when_swept(
    new_database: Callable[[], str], opened: Callable[..., Any], tmp_path: Path
) -> None:
    store = await opened(new_database())
    state = tmp_path / SNAPSHOT_STATE_NAME
    chat = await _chat_with_files(store, ALICE)

    first = await write_snapshot(store, tmp_path, state)
    second = await write_snapshot(store, tmp_path, state)

    png_name, pdf_name = (f"{f.ref.sha256}.{s}" for f, s in ((PICTURE, "png"), (DOCUMENT, "pdf")))
    assert _attached(tmp_path) == {f"{ALICE}/{png_name}", f"{ALICE}/{pdf_name}"}
    assert (tmp_path / "attachments" / ALICE / png_name).read_bytes() == PICTURE.data
    assert (first.files, first.files_written, second.files_written) == (2, 2, 0)
    assert await store.delete(ALICE, chat.id)
    swept = SqlAttachmentStore(store.engine, grace_seconds=0)
    assert await swept.delete_unused(ALICE) == 2
    third = await write_snapshot(store, tmp_path, state)
    assert third.files_removed == 2 and _attached(tmp_path) == set()


async def test_a_space_restart_brings_attached_files_back(
    opened: Callable[..., Any], hub: FakeHfHub, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    url = database_url(data_dir)
    store = await opened(url, data_dir)
    chat = await _chat_with_files(store, ALICE)
    sync = _sync(data_dir, hub, snapshot_hook(url, data_dir))
    assert sync.flush(timeout=30)
    await store.aclose()

    shutil.rmtree(data_dir)  # the restart
    restarted = _sync(data_dir, hub, snapshot_hook(url, data_dir))
    assert restarted.restore().ok
    store = await opened(url, data_dir)

    reopened = await store.load(ALICE, chat.id)
    files = SqlAttachmentStore(store.engine)
    assert reopened.messages[0].attachments == (PICTURE.ref, DOCUMENT.ref)
    assert await files.get(ALICE, PICTURE.ref.sha256) == PICTURE.data
    assert await files.get(ALICE, DOCUMENT.ref.sha256) == DOCUMENT.data
    with pytest.raises(AttachmentNotFound):
        await files.get(BOB, PICTURE.ref.sha256)
    commits = len(hub.commits)
    assert restarted.flush(timeout=30)
    assert len(hub.commits) == commits  # nothing new to push


async def test_a_damaged_file_in_the_folder_is_not_restored_into_the_database(
    opened: Callable[..., Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    folder = data_dir / "attachments" / ALICE
    folder.mkdir(parents=True)
    (folder / f"{PICTURE.ref.sha256}.png").write_bytes(b"not the picture")
    (folder / f"{DOCUMENT.ref.sha256}.pdf").write_bytes(DOCUMENT.data)

    store = await opened(database_url(data_dir), data_dir)

    files = SqlAttachmentStore(store.engine)
    assert await files.hashes(ALICE) == {DOCUMENT.ref.sha256}
