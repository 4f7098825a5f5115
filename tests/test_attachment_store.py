"""Attached files are stored once per visitor, private to them, and go when nothing uses them.

Every story runs on SQLite and PostgreSQL (a throwaway cluster from tests/pg_server.py).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from alembic import command
from PIL import Image
from sqlalchemy import func, select, text

from chatlib.attachments import Attachment, AttachmentKind, AttachmentRef
from chatlib.branches import BranchNode
from chatlib.conversations import ConversationService
from chatlib.errors import AttachmentNotFound, ConversationNotFound, ImportRejected
from chatlib.messages import AnswerMeta, ChatMessage
from chatlib.storage import Conversation
from chatlib.store import (
    SqlAttachmentStore,
    SqlConversationStore,
    create_engine_for,
    open_store,
)
from chatlib.store.attachments import UNUSED_GRACE_SECONDS
from chatlib.store.migrate import alembic_config
from chatlib.store.schema import attachments
from tests.clocks import FakeClock
from tests.fakes.openrouter import FakeOpenRouter
from tests.pg_server import fresh_database, postgres_server, postgres_url  # noqa: F401
from tests.turns import each_database, service_over

ALICE = "a1" * 16
BOB = "b2" * 16
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def png(color: str = "red", size: tuple[int, int] = (3, 2)) -> bytes:
    """A small real PNG picture."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def attachment(data: bytes, name: str, mime: str, kind: AttachmentKind) -> Attachment:
    """A file as `chatlib.attachments.prepare` hands it over: its reference and bytes."""
    sides: dict[str, int] = {}
    if kind == "image":
        with Image.open(io.BytesIO(data)) as image:
            sides = {"width": image.width, "height": image.height}
    ref = AttachmentRef(
        sha256=hashlib.sha256(data).hexdigest(),
        name=name,
        mime=mime,
        size=len(data),
        kind=kind,
        **sides,
    )
    return Attachment(ref=ref, data=data)


PICTURE = attachment(png(), "photo.png", "image/png", "image")
DOCUMENT = attachment(PDF, "report.pdf", "application/pdf", "pdf")
NOTES = attachment(b"shopping: eggs\n", "notes.txt", "text/plain", "text")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return each_database(request, tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(database: str, clock: FakeClock) -> AsyncIterator[SqlConversationStore]:
    opened = await open_store(database, data_dir=None, clock=clock)
    yield opened
    await opened.aclose()


@pytest.fixture
def files(store: SqlConversationStore, clock: FakeClock) -> SqlAttachmentStore:
    return SqlAttachmentStore(store.engine, clock=clock)


async def _chat_with(
    store: SqlConversationStore, owner: str, *attached: Attachment, said: str = "Look at this"
) -> Conversation:
    conversation = store.new_conversation("openai/gpt-4o", "", 0.3)
    question = ChatMessage("user", said, attachments=tuple(a.ref for a in attached))
    answer = ChatMessage("assistant", "Nice.", meta=AnswerMeta("openai/gpt-4o", "complete"))
    return await store.save(owner, replace(conversation, messages=(question, answer)))


async def _rows(store: SqlConversationStore) -> int:
    async with store.engine.connect() as connection:
        count = await connection.execute(select(func.count()).select_from(attachments))
        return int(count.scalar_one())


# -- the store ----------------------------------------------------------------------------


async def test_a_file_attached_twice_is_stored_once_and_comes_back_byte_for_byte(
    store: SqlConversationStore, files: SqlAttachmentStore
) -> None:
    first = await files.put(ALICE, PICTURE)
    again = await files.put(ALICE, replace(PICTURE, ref=replace(PICTURE.ref, name="same.png")))
    await files.put(ALICE, DOCUMENT)

    assert first == PICTURE.ref and again.sha256 == first.sha256
    assert await files.get(ALICE, PICTURE.ref.sha256) == PICTURE.data
    assert await files.get(ALICE, DOCUMENT.ref.sha256) == PDF
    assert await _rows(store) == 2
    assert await files.hashes(ALICE) == {PICTURE.ref.sha256, DOCUMENT.ref.sha256}


async def test_another_visitor_cannot_read_a_file_nor_tell_that_it_exists(
    files: SqlAttachmentStore,
) -> None:
    await files.put(ALICE, PICTURE)

    with pytest.raises(AttachmentNotFound) as someone_elses:
        await files.get(BOB, PICTURE.ref.sha256)
    with pytest.raises(AttachmentNotFound) as nobodys:
        await files.get(BOB, "0" * 64)
    with pytest.raises(AttachmentNotFound):
        await files.get(ALICE, "../../etc/passwd")
    assert str(someone_elses.value) == str(nobodys.value)
    assert await files.hashes(BOB) == set()
    # Bob storing the same bytes gets his own copy; Alice's stays hers.
    await files.put(BOB, PICTURE)
    assert await files.get(BOB, PICTURE.ref.sha256) == PICTURE.data


async def test_a_reference_that_does_not_describe_its_bytes_is_refused(
    files: SqlAttachmentStore,
) -> None:
    with pytest.raises(ValueError, match="sha256"):
        await files.put(ALICE, replace(PICTURE, data=png("blue")))


async def test_files_no_message_uses_are_swept_but_other_versions_keep_theirs(
    store: SqlConversationStore, files: SqlAttachmentStore, clock: FakeClock
) -> None:
    for file in (PICTURE, DOCUMENT, NOTES):
        await files.put(ALICE, file)
    chat = await _chat_with(store, ALICE, PICTURE)
    # The PDF was on a question that was edited since: an inactive version keeps it.
    old_question = ChatMessage(
        "user", "the first try", id="0123456789ab", attachments=(DOCUMENT.ref,)
    )
    chat = await store.save(
        ALICE, replace(chat, branches=(BranchNode(None, old_question),)), expected=chat
    )
    assert await files.delete_unused(ALICE) == 0  # all three were just stored

    clock.now += UNUSED_GRACE_SECONDS + 1
    assert await files.delete_unused(ALICE) == 1  # the notes: nothing refers to them

    assert await files.hashes(ALICE) == {PICTURE.ref.sha256, DOCUMENT.ref.sha256}
    reopened = await store.load(ALICE, chat.id)
    assert reopened.messages[0].attachments == (PICTURE.ref,)
    assert reopened.branches[0].message.attachments == (DOCUMENT.ref,)
    assert await store.delete(ALICE, chat.id)
    assert await files.delete_unused(ALICE) == 2
    assert await files.hashes(ALICE) == set()


async def test_sweeping_one_visitors_files_never_touches_anothers(
    store: SqlConversationStore, files: SqlAttachmentStore, clock: FakeClock
) -> None:
    await files.put(ALICE, PICTURE)
    await files.put(BOB, PICTURE)
    await _chat_with(store, BOB, PICTURE)
    clock.now += UNUSED_GRACE_SECONDS + 1

    assert await files.delete_unused(BOB) == 0
    assert await files.delete_unused(ALICE) == 1
    assert await files.get(BOB, PICTURE.ref.sha256) == PICTURE.data


async def test_attaching_the_same_file_again_restarts_its_grace_period(
    files: SqlAttachmentStore, clock: FakeClock
) -> None:
    await files.put(ALICE, PICTURE)
    clock.now += UNUSED_GRACE_SECONDS + 1
    await files.put(ALICE, PICTURE)  # picked again in the composer, not sent yet

    assert await files.delete_unused(ALICE) == 0


async def test_logging_in_takes_the_files_along_with_the_chats(
    store: SqlConversationStore, files: SqlAttachmentStore
) -> None:
    await files.put(ALICE, PICTURE)
    await files.put(ALICE, DOCUMENT)
    await files.put(BOB, PICTURE)  # already has it: kept once
    chat = await _chat_with(store, ALICE, PICTURE, DOCUMENT)

    assert await store.move_all(ALICE, BOB) == 1

    moved = await store.load(BOB, chat.id)
    for ref in moved.messages[0].attachments:
        assert hashlib.sha256(await files.get(BOB, ref.sha256)).hexdigest() == ref.sha256
    with pytest.raises(AttachmentNotFound):
        await files.get(ALICE, PICTURE.ref.sha256)


async def test_message_attachments_come_back_after_a_restart(
    database: str, store: SqlConversationStore
) -> None:
    chat = await _chat_with(store, ALICE, PICTURE, DOCUMENT)

    restarted = await open_store(database, data_dir=None)
    try:
        reopened = await restarted.load(ALICE, chat.id)
    finally:
        await restarted.aclose()
    assert reopened == chat
    assert reopened.messages[0].attachments == (PICTURE.ref, DOCUMENT.ref)
    assert reopened.messages[0].attachments[0].width == 3


async def test_a_database_at_revision_0002_with_chats_migrates_and_takes_files(
    database: str,
) -> None:
    engine = create_engine_for(database)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0002"))
            await connection.execute(
                text(
                    "INSERT INTO conversations (id, owner_key, title, created_at, updated_at, "
                    "model, system_prompt, temperature, revision, message_count, "
                    "total_cost_usd) VALUES (:id, :owner, 'Old chat', 1.0, 2.0, 'm/x', '', "
                    "0.3, 3, 1, 0.0)"
                ),
                {"id": "c" * 32, "owner": ALICE},
            )
            await connection.execute(
                text(
                    "INSERT INTO messages (conversation_id, position, node_id, role, content, "
                    "reasoning, meta, created_at) VALUES (:c, 0, 'aaaaaaaaaaaa', 'user', "
                    "'an old question', '', NULL, 1.0)"
                ),
                {"c": "c" * 32},
            )
    finally:
        await engine.dispose()

    store = await open_store(database, data_dir=None)
    try:
        old = await store.load(ALICE, "c" * 32)
        assert [(m.content, m.attachments) for m in old.messages] == [("an old question", ())]
        files = SqlAttachmentStore(store.engine)
        await files.put(ALICE, PICTURE)
        asked = replace(
            old,
            messages=(*old.messages, ChatMessage("user", "and this?", attachments=(PICTURE.ref,))),
        )
        saved = await store.save(ALICE, asked, expected=old)
        assert (await store.load(ALICE, old.id)).messages == saved.messages
        assert await files.get(ALICE, PICTURE.ref.sha256) == PICTURE.data
    finally:
        await store.aclose()


# -- through the conversation service -----------------------------------------------------


@pytest.fixture
async def service(
    fake: FakeOpenRouter,
    tmp_path: Path,
    store: SqlConversationStore,
    files: SqlAttachmentStore,
) -> AsyncIterator[ConversationService]:
    async with service_over(
        store, fake, tmp_path, max_import_bytes=5_000_000, attachments=files
    ) as conversations:
        yield conversations


async def test_deleting_a_chat_deletes_its_files_unless_another_chat_uses_them(
    service: ConversationService,
    store: SqlConversationStore,
    files: SqlAttachmentStore,
    clock: FakeClock,
) -> None:
    for file in (PICTURE, DOCUMENT):
        await files.put(ALICE, file)
    only_picture = await _chat_with(store, ALICE, PICTURE)
    both = await _chat_with(store, ALICE, PICTURE, DOCUMENT)
    clock.now += UNUSED_GRACE_SECONDS + 1

    assert await service.delete(ALICE, both.id)
    assert await files.hashes(ALICE) == {PICTURE.ref.sha256}
    assert not await service.delete(BOB, only_picture.id)  # not Bob's: nothing happens
    assert await files.hashes(ALICE) == {PICTURE.ref.sha256}


async def test_a_chat_with_a_picture_and_a_pdf_survives_export_and_import_byte_for_byte(
    service: ConversationService, store: SqlConversationStore, files: SqlAttachmentStore
) -> None:
    for file in (PICTURE, DOCUMENT):
        await files.put(ALICE, file)
    chat = await _chat_with(store, ALICE, PICTURE, DOCUMENT, said="Compare these")

    export = await service.export(ALICE, chat.id, "json")
    document = orjson.loads(export.data)
    assert set(document["attachments"]) == {PICTURE.ref.sha256, DOCUMENT.ref.sha256}
    assert await service.import_file(BOB, export.data) == 1

    [summary] = (await service.list(BOB)).conversations
    imported = await service.open(BOB, summary.id)
    assert imported.messages[0].attachments == chat.messages[0].attachments
    assert await files.get(BOB, PICTURE.ref.sha256) == PICTURE.data
    assert await files.get(BOB, DOCUMENT.ref.sha256) == PDF


async def test_a_refused_import_stores_no_chat(
    service: ConversationService, store: SqlConversationStore, files: SqlAttachmentStore
) -> None:
    await files.put(ALICE, PICTURE)
    chat = await _chat_with(store, ALICE, PICTURE)
    document = orjson.loads((await service.export(ALICE, chat.id, "json")).data)
    document["attachments"][PICTURE.ref.sha256]["data_base64"] = "aGVsbG8="

    with pytest.raises(ImportRejected, match="SHA-256"):
        await service.import_file(BOB, orjson.dumps(document))
    assert (await service.list(BOB)).conversations == []


async def test_an_export_leaves_out_a_file_that_is_gone_and_still_imports(
    service: ConversationService, store: SqlConversationStore
) -> None:
    chat = await _chat_with(store, ALICE, PICTURE)  # its file was never stored

    export = await service.export(ALICE, chat.id, "json")

    assert "attachments" not in orjson.loads(export.data)
    assert await service.import_file(BOB, export.data) == 1


async def test_markdown_of_a_chat_with_files_downloads_as_a_zip(
    service: ConversationService, store: SqlConversationStore, files: SqlAttachmentStore
) -> None:
    for file in (PICTURE, DOCUMENT):
        await files.put(ALICE, file)
    chat = await _chat_with(store, ALICE, PICTURE, DOCUMENT)
    plain = await _chat_with(store, ALICE, said="no files here")

    export = await service.export(ALICE, chat.id, "markdown")
    assert export.name.endswith(".zip")
    with zipfile.ZipFile(io.BytesIO(export.data)) as archive:
        assert sorted(archive.namelist()) == ["chat.md", "files/photo.png", "files/report.pdf"]
        assert archive.read("files/photo.png") == PICTURE.data
        markdown = archive.read("chat.md").decode()
    assert "![photo.png](files/photo.png)" in markdown
    assert "[report.pdf](files/report.pdf)" in markdown
    assert (await service.export(ALICE, plain.id, "markdown")).name.endswith(".md")


async def test_another_visitors_chat_is_not_exported_with_files(
    service: ConversationService, store: SqlConversationStore, files: SqlAttachmentStore
) -> None:
    await files.put(ALICE, PICTURE)
    chat = await _chat_with(store, ALICE, PICTURE)
    with pytest.raises(ConversationNotFound):
        await service.export(BOB, chat.id, "json")
