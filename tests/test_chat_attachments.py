"""Files in a chat, the way OpenRouter takes them: pictures to models that can see, PDFs to any
model, text inlined, older files within the size budget, and pictures a model draws kept with
its answer. Real fake server, real services, a real SQL store."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from chatlib.attachments import Attachment, content_parts, prepare, upstream_size
from chatlib.catalog import ModelCatalog, http_catalog_fetcher
from chatlib.chat import ChatService
from chatlib.client import ClientPool
from chatlib.config import Settings
from chatlib.conversations import ConversationFrame, ConversationService, TurnRequest
from chatlib.errors import InputError
from chatlib.frames import FrameBudget
from chatlib.messages import sent_chars
from chatlib.store import SqlAttachmentStore, SqlConversationStore, database_url, open_store
from chatlib.usage import UsageLog, UsageRecord, read_usage
from tests.conftest import settings_for
from tests.fakes.openrouter import (
    BAD_IMAGE_URL,
    CATALOG,
    DRAWN_IMAGE_SIDE,
    FakeOpenRouter,
    expected_cost,
)

OWNER = "0" * 32
VISION = "openai/gpt-4o"
TEXT_ONLY = "meta-llama/llama-3.3-70b-instruct"
DRAWS = "google/gemini-2.5-flash-image"


@dataclass
class App:
    settings: Settings
    chat: ChatService
    conversations: ConversationService
    files: SqlAttachmentStore
    usage: UsageLog


async def _app(fake: FakeOpenRouter, tmp_path: Path, **env: str) -> AsyncIterator[App]:
    settings = settings_for(fake, tmp_path, **env)
    pool = ClientPool(settings)
    catalog = ModelCatalog(
        http_catalog_fetcher(settings.openrouter_base_url, 5.0),
        ttl_seconds=3600,
        timeout_seconds=5.0,
    )
    assert await catalog.refresh()
    usage = UsageLog(tmp_path / "usage")
    chat = ChatService(
        settings,
        pool,
        FrameBudget(updates_per_second=300, min_interval_s=0.01),
        usage=usage,
        catalog=catalog,
    )
    store: SqlConversationStore = await open_store(database_url(tmp_path), data_dir=None)
    files = SqlAttachmentStore(store.engine)
    conversations = ConversationService(
        store,  # type: ignore[arg-type]  # the service takes ConversationStoreProtocol
        chat,
        exports_dir=tmp_path / "exports",
        max_import_bytes=1_000_000,
        attachments=files,
    )
    try:
        yield App(settings, chat, conversations, files, usage)
    finally:
        await pool.aclose()
        await store.aclose()
        usage.close()


@pytest.fixture
async def app(fake: FakeOpenRouter, tmp_path: Path) -> AsyncIterator[App]:
    async for made in _app(fake, tmp_path):
        yield made


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def _file(app: App, name: str, data: bytes) -> Attachment:
    return prepare(name, data, app.settings.attachment_limits)


def _pdf(size: int) -> bytes:
    return b"%PDF-1.4\n" + os.urandom(size - 9)


def _turn(text: str, model: str = VISION, *files: Attachment, **kw: Any) -> TurnRequest:
    return TurnRequest(
        owner_key=OWNER,
        conversation_id=kw.pop("conversation_id", None),
        user_text=text,
        model=model,
        system_prompt="",
        temperature=0.3,
        attachments=files,
        **kw,
    )


async def _done(app: App, request: TurnRequest) -> ConversationFrame:
    frames = [frame async for frame in app.conversations.turn(request)]
    assert frames[-1].done
    return frames[-1]


def _rows(usage: UsageLog) -> list[UsageRecord]:
    return list(read_usage(usage.path.parent)) if usage.path.exists() else []


async def test_a_picture_for_a_model_that_cannot_see_is_refused_before_anything_is_sent(
    fake: FakeOpenRouter, app: App
) -> None:
    photo = _file(app, "photo.png", _png(40, 30))
    with pytest.raises(InputError) as refused:
        await _done(app, _turn("what is this?", TEXT_ONLY, photo))

    message = refused.value.user_message
    assert message.startswith(f"{TEXT_ONLY} can't see images. Try a model that can: ")
    named = message.split(": ", 1)[1].removesuffix(", …").split(", ")
    vision = {m["id"] for m in CATALOG if "image" in m["architecture"]["input_modalities"]}
    assert len(named) == 3 and set(named) <= vision
    assert fake.chat_requests() == []
    assert (await app.conversations.list(OWNER)).conversations == []


async def test_a_picture_reaches_a_vision_model_downscaled_and_is_kept_with_the_question(
    fake: FakeOpenRouter, app: App
) -> None:
    photo = _file(app, "photo.png", _png(3000, 2000))
    final = await _done(app, _turn("what is this? [[tokens=40]]", VISION, photo))

    assert fake.received_images() == [("image/png", 1568, 1045)]
    parts = fake.chat_requests()[-1].body["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"]
    answer = final.conversation.messages[-1]
    assert "[saw: image/png 1568x1045]" in answer.content
    question = final.conversation.messages[0]
    assert question.attachments == (photo.ref,)
    assert await app.files.get(OWNER, photo.ref.sha256) == photo.data
    stored = await app.conversations.open(OWNER, final.conversation.id)
    assert stored.messages[0].attachments == (photo.ref,)


async def test_a_pdf_goes_to_a_text_only_model_as_a_file_with_the_chosen_engine(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    async for app in _app(fake, tmp_path, PDF_ENGINE="cloudflare-ai"):
        report = _file(app, "report.pdf", _pdf(2000))
        final = await _done(app, _turn("summarise [[tokens=30]]", TEXT_ONLY, report))

        body = fake.chat_requests()[-1].body
        assert body["plugins"] == [{"id": "file-parser", "pdf": {"engine": "cloudflare-ai"}}]
        assert "modalities" not in body
        assert [(f.kind, f.name) for f in fake.received_files()] == [("pdf", "report.pdf")]
        assert "[saw: report.pdf]" in final.conversation.messages[-1].content


async def test_a_text_file_is_inlined_in_a_fence_and_no_plugin_is_asked(
    fake: FakeOpenRouter, app: App
) -> None:
    notes = _file(app, "notes.txt", b"milk\neggs\n")
    await _done(app, _turn("what is on my list?", TEXT_ONLY, notes))

    body = fake.chat_requests()[-1].body
    content = body["messages"][-1]["content"]
    assert content == [
        {"type": "text", "text": "what is on my list?\n\n```notes.txt\nmilk\neggs\n```"}
    ]
    assert "plugins" not in body


async def test_a_file_alone_is_a_question(fake: FakeOpenRouter, app: App) -> None:
    photo = _file(app, "photo.png", _png(20, 20))
    final = await _done(app, _turn("   ", VISION, photo))
    assert final.conversation.messages[0].content == ""
    assert fake.received_images() == [("image/png", 20, 20)]


async def test_older_files_past_the_size_budget_are_dropped_oldest_first_and_said(
    fake: FakeOpenRouter, app: App
) -> None:
    # The budget is 400,000 characters: three PDFs of 120 KB (160,000 as data URLs) do not fit.
    conversation_id = None
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        pdf = _file(app, name, _pdf(120_000))
        final = await _done(
            app, _turn(f"read {name}", VISION, pdf, conversation_id=conversation_id)
        )
        conversation_id = final.conversation.id

    assert [f.name for f in fake.received_files()] == ["b.pdf", "c.pdf"]
    sent = fake.chat_requests()[-1].body["messages"]
    assert sent[0]["content"] == "read a.pdf"  # its text is still sent, without the file
    assert final.dropped_attachments == 1
    assert final.notes == ("1 older attachment was not sent: over the size budget.",)
    stored = await app.conversations.open(OWNER, conversation_id)
    assert [m.attachments[0].name for m in stored.messages if m.role == "user"] == [
        "a.pdf",
        "b.pdf",
        "c.pdf",
    ]  # nothing is lost from the chat itself


async def test_older_pictures_are_not_sent_to_a_model_that_cannot_see_them(
    fake: FakeOpenRouter, app: App
) -> None:
    photo = _file(app, "photo.png", _png(20, 20))
    first = await _done(app, _turn("look", VISION, photo))
    final = await _done(app, _turn("and now?", TEXT_ONLY, conversation_id=first.conversation.id))
    assert fake.received_images() == []
    assert final.notes == (f"1 older picture was not sent: {TEXT_ONLY} can't see images.",)
    assert final.conversation.messages[-1].meta is not None
    assert final.conversation.messages[-1].meta.status == "complete"


async def test_retry_asks_again_with_the_question_files(fake: FakeOpenRouter, app: App) -> None:
    photo = _file(app, "photo.png", _png(30, 20))
    first = await _done(app, _turn("look", VISION, photo))
    again = await _done(
        app, _turn("", VISION, action="retry", conversation_id=first.conversation.id)
    )
    assert fake.received_images() == [("image/png", 30, 20)]
    assert again.conversation.messages[0].attachments == (photo.ref,)
    with pytest.raises(InputError, match="Retry asks the same question again"):
        await _done(
            app, _turn("", VISION, photo, action="retry", conversation_id=first.conversation.id)
        )


async def test_files_are_refused_when_the_server_cannot_keep_them(
    fake: FakeOpenRouter, app: App, tmp_path: Path
) -> None:
    store: SqlConversationStore = await open_store(database_url(tmp_path / "other"), data_dir=None)
    try:
        without = ConversationService(
            store,  # type: ignore[arg-type]
            app.chat,
            exports_dir=tmp_path / "exports",
            max_import_bytes=1_000_000,
        )
        photo = _file(app, "photo.png", _png(20, 20))
        with pytest.raises(InputError, match="cannot keep attached files"):
            [frame async for frame in without.turn(_turn("look", VISION, photo))]
    finally:
        await store.aclose()
    assert fake.chat_requests() == []


async def test_too_many_files_are_refused_naming_the_limit(fake: FakeOpenRouter, app: App) -> None:
    files = [_file(app, f"n{i}.txt", f"note {i}".encode()) for i in range(6)]
    with pytest.raises(InputError, match="6 files; the limit is 5 per message"):
        await _done(app, _turn("read these", VISION, *files))
    assert fake.chat_requests() == []


async def test_a_picture_the_model_draws_is_shown_while_streaming_and_saved_with_the_answer(
    fake: FakeOpenRouter, app: App
) -> None:
    frames = [
        frame
        async for frame in app.conversations.turn(
            _turn("draw a cat [[images=1]] [[tokens=60]]", DRAWS)
        )
    ]
    body = fake.chat_requests()[-1].body
    assert body["modalities"] == ["image", "text"]
    streaming = [f for f in frames if not f.done and f.conversation.messages[-1].attachments]
    assert streaming, "the picture is in a frame before the answer ends"
    ref = streaming[0].conversation.messages[-1].attachments[0]
    assert ref.sha256 in streaming[0].files

    final = frames[-1]
    answer = final.conversation.messages[-1]
    assert answer.attachments == (ref,)
    assert answer.meta is not None and answer.meta.status == "complete"
    assert (ref.kind, ref.mime, ref.width, ref.height) == (
        "image",
        "image/png",
        DRAWN_IMAGE_SIDE,
        DRAWN_IMAGE_SIDE,
    )
    data = await app.files.get(OWNER, ref.sha256)
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.size == (DRAWN_IMAGE_SIDE, DRAWN_IMAGE_SIDE)
    stored = await app.conversations.open(OWNER, final.conversation.id)
    assert stored.messages[-1].attachments == (ref,)
    [row] = _rows(app.usage)
    assert row.cost_usd == pytest.approx(
        expected_cost(DRAWS, answer.meta.prompt_tokens or 0, answer.meta.completion_tokens or 0)
    )
    assert (answer.meta.completion_tokens or 0) > 1000  # the picture is billed


async def test_a_malformed_picture_in_the_stream_is_left_out_and_the_answer_goes_on(
    fake: FakeOpenRouter, app: App
) -> None:
    final = await _done(app, _turn("draw [[badimage=1]] [[images=1]] [[tokens=30]]", DRAWS))
    answer = final.conversation.messages[-1]
    assert answer.meta is not None and answer.meta.status == "complete"
    assert final.error is None
    assert answer.content.startswith("Echo: draw")
    assert len(answer.attachments) == 1  # the good one
    assert len(final.notes) == 1 and final.notes[0].startswith(
        "A picture from the model was left out: "
    )
    assert BAD_IMAGE_URL not in final.notes[0]


def test_the_budget_counts_a_file_as_what_it_adds_to_the_request(app: App) -> None:
    for name, data in (("p.png", _png(30, 20)), ("r.pdf", _pdf(1001)), ("n.txt", b"a\nb\n")):
        file = _file(app, name, data)
        added = upstream_size(content_parts("", [(file.ref, file.data)]))
        if file.ref.kind == "text":
            assert sent_chars(file.ref) >= added
        else:
            assert sent_chars(file.ref) == added
