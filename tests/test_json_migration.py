"""Upgrading keeps every conversation: a data folder of JSON files is imported once, on
both engines, damaged files skipped and reported, the files themselves left untouched."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import structlog
from sqlalchemy import select, text

from chatlib.messages import AnswerMeta, ChatMessage
from chatlib.options import AnswerOptions
from chatlib.sources import Source
from chatlib.storage import Conversation, ConversationStore
from chatlib.store import SqlConversationStore, database_url, import_json_directory, open_store
from chatlib.store.json_import import IMPORT_MARKER
from chatlib.store.schema import store_meta
from tests.clocks import FakeClock
from tests.pg_server import fresh_database, postgres_server, postgres_url  # noqa: F401

ALICE = "a1" * 16
BOB = "b2" * 16
CAROL = "c3" * 16


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each engine."""
    if request.param == "sqlite":
        return database_url(tmp_path / "db")
    return fresh_database(request.getfixturevalue("postgres_url"))


def _answer(text: str, **meta: object) -> ChatMessage:
    return ChatMessage(
        "assistant",
        text,
        reasoning="Let me think…",
        meta=AnswerMeta(model="anthropic/claude-sonnet-4", **meta),  # type: ignore[arg-type]
        created_at=1_700_000_100.25,
    )


def _write_todays_folder(data_dir: Path) -> dict[str, list[Conversation]]:
    """A data folder as today's file store writes it: three owners, renamed, long, odd chats."""
    files = ConversationStore(data_dir, clock=FakeClock(1_700_000_000.0))
    written: dict[str, list[Conversation]] = {ALICE: [], BOB: [], CAROL: []}

    def chat(owner: str, *messages: ChatMessage, **fields: object) -> Conversation:
        fresh = files.new_conversation("openai/gpt-4o", "Be brief.", 0.7)
        saved = files.save(owner, replace(fresh, messages=messages, **fields))  # type: ignore[arg-type]
        written[owner].append(saved)
        return saved

    question = ChatMessage("user", "What is a monad?", created_at=1_700_000_000.5)
    complete = _answer(
        "A monoid in the category of endofunctors.",
        status="complete",
        prompt_tokens=12,
        completion_tokens=40,
        reasoning_tokens=8,
        cost_usd=0.00123,
        ttft_ms=230.5,
        latency_ms=1900.0,
        generation_id="gen-abc",
    )
    cited = replace(
        complete,
        meta=replace(
            complete.meta, sources=(Source("https://ncatlab.org/nlab/show/monad", "nLab"),)
        ),  # type: ignore[arg-type]
    )
    searched = AnswerOptions(web_search=True, reasoning_effort="medium", max_tokens=4000)
    monad = chat(ALICE, question, cited, options=searched)
    renamed = files.rename(ALICE, monad.id, "Category theory")  # revision 2
    written[ALICE][-1] = files.save(ALICE, _with(renamed, "And a functor?"), expected=renamed)
    chat(ALICE, question, _answer("Mid-answ", status="streaming"))
    chat(ALICE, question, _answer("", status="interrupted", error="Upstream timed out"))
    chat(ALICE, system_prompt="", temperature=0.0)  # saved before any question
    chat(BOB, ChatMessage("user", "Ünïcödé and emoji 🎉 and\nnew lines"), title="Résumé help")
    for n in range(25):
        chat(CAROL, ChatMessage("user", f"question {n}"), _answer(f"answer {n}", status="stopped"))
    return written


def _with(conversation: Conversation, said: str) -> Conversation:
    return replace(conversation, messages=(*conversation.messages, ChatMessage("user", said)))


def _damage(data_dir: Path, owner: str, conversation: Conversation) -> None:
    path = data_dir / "conversations" / owner / f"{conversation.id}.json"
    path.write_bytes(path.read_bytes()[:50])


def _snapshot(data_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(data_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(data_dir.rglob("*"))
        if p.is_file()
    }


async def test_every_conversation_of_every_owner_arrives_exactly(
    tmp_path: Path, database: str
) -> None:
    data_dir = tmp_path / "data"
    written = _write_todays_folder(data_dir)
    damaged = written[BOB].pop()  # Bob's only chat: a crash tore it
    _damage(data_dir, BOB, damaged)
    (data_dir / "conversations" / ALICE / "notes.txt").write_text("not a conversation")
    (data_dir / "conversations" / "not-an-owner").mkdir()
    # What a visitor saw with today's reader (its listing may repair its index first).
    reference = ConversationStore(data_dir)
    listings = {owner: reference.list(owner).conversations for owner in written}
    before = _snapshot(data_dir)

    with structlog.testing.capture_logs() as logs:
        store = await open_store(database, data_dir=data_dir)
    try:
        for owner, conversations in written.items():
            for conversation in conversations:
                imported = await store.load(owner, conversation.id)
                assert imported == reference.load(owner, conversation.id)
                assert imported.revision == conversation.revision
                assert imported.options == conversation.options  # web search, reasoning, length
            # The same order, titles, dates, counts and costs.
            assert (await store.list(owner)).conversations == listings[owner]
        assert [s.title for s in await store.search(ALICE, "FUNCTOR")] == ["Category theory"]
        monad = await store.load(ALICE, written[ALICE][0].id)
        assert monad.options.web_search and monad.messages[1].meta is not None
        assert [s.title for s in monad.messages[1].meta.sources] == ["nLab"]
        assert [s.title for s in await store.search(BOB, "résumé")] == []  # the damaged one
    finally:
        await store.aclose()

    assert _snapshot(data_dir) == before  # the files are left as they were
    (report,) = [e for e in logs if e["event"] == "store.json_imported"]
    assert (report["imported"], report["skipped"], report["owners"]) == (29, 1, 3)
    (skipped,) = [e for e in logs if e["event"] == "store.import_skipped"]
    assert (skipped["owner_key"], skipped["conversation_id"]) == (BOB, damaged.id)
    assert "Résumé" not in repr(logs) and "monad" not in repr(logs)  # never the content


async def test_the_imported_revisions_still_guard_answers_that_end_late(
    tmp_path: Path, database: str
) -> None:
    data_dir = tmp_path / "data"
    monad = _write_todays_folder(data_dir)[ALICE][0]
    store = await open_store(database, data_dir=data_dir)
    try:
        # A tab that loaded the chat before the upgrade finishes its answer after it.
        answered = await store.save(ALICE, _with(monad, "a late answer"), expected=monad)
        assert answered.revision == monad.revision + 1
        with pytest.raises(Exception, match="newer messages"):
            await store.save(ALICE, _with(monad, "another tab"), expected=monad)
    finally:
        await store.aclose()


async def test_a_second_startup_imports_nothing(tmp_path: Path, database: str) -> None:
    data_dir = tmp_path / "data"
    written = _write_todays_folder(data_dir)
    first = await open_store(database, data_dir=data_dir)
    await first.delete(ALICE, written[ALICE][0].id)  # a visitor deletes after the upgrade
    await first.aclose()
    late = ConversationStore(data_dir).save(
        CAROL, ConversationStore(data_dir).new_conversation("m/x", "", 0.3)
    )

    with structlog.testing.capture_logs() as logs:
        second = await open_store(database, data_dir=data_dir)
    try:
        report = await import_json_directory(second, data_dir)
        assert report.already_done and report.imported == 0
        assert [e for e in logs if e["event"] == "store.json_imported"] == []
        ids = {s.id for s in (await second.list(ALICE)).conversations}
        assert written[ALICE][0].id not in ids  # the delete holds: nothing came back
        assert late.id not in {s.id for s in (await second.list(CAROL)).conversations}
        async with second.engine.connect() as connection:
            marker = await connection.scalar(
                select(store_meta.c.value).where(store_meta.c.key == IMPORT_MARKER)
            )
        assert orjson.loads(marker)["imported"] == 30
    finally:
        await second.aclose()


async def test_replicas_starting_together_import_each_conversation_once(
    tmp_path: Path, database: str
) -> None:
    data_dir = tmp_path / "data"
    written = _write_todays_folder(data_dir)

    stores = await asyncio.gather(*(open_store(database, data_dir=data_dir) for _ in range(3)))
    try:
        async with stores[0].engine.connect() as connection:
            count = await connection.scalar(text("SELECT count(*) FROM conversations"))
        assert count == sum(len(c) for c in written.values())
        for store in stores:
            assert len((await store.list(CAROL)).conversations) == 25
    finally:
        for store in stores:
            await store.aclose()


async def test_no_data_folder_or_an_unreadable_one_is_not_fatal(
    tmp_path: Path, database: str
) -> None:
    missing = await open_store(database, data_dir=tmp_path / "never-created")
    await missing.aclose()
    assert not (tmp_path / "never-created").exists()  # nothing is created there

    data_dir = tmp_path / "data"
    _write_todays_folder(data_dir)
    store = SqlConversationStore(missing.engine)  # a disposed engine reconnects
    report = await import_json_directory(store, data_dir)
    assert report.already_done  # the first startup recorded that it had nothing to import
    await store.aclose()


async def test_odd_entries_in_the_folder_are_skipped_and_the_rest_imported(
    tmp_path: Path, database: str
) -> None:
    data_dir = tmp_path / "data"
    written = _write_todays_folder(data_dir)
    folder = data_dir / "conversations"
    (folder / ("d4" * 16)).write_text("an owner 'folder' that is a file")
    (folder / CAROL / f"{'e5' * 16}.json").mkdir()  # a 'conversation' that is a folder

    store = await open_store(database, data_dir=data_dir)
    try:
        assert len((await store.list(CAROL)).conversations) == len(written[CAROL])
        assert len((await store.list(ALICE)).conversations) == len(written[ALICE])
    finally:
        await store.aclose()
