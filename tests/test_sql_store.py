"""Conversations in SQL, on SQLite and PostgreSQL alike: private, revisioned, searchable.

The same stories as tests/test_storage.py's, told against the database store; every test
runs on both engines (PostgreSQL: a throwaway cluster from tests/pg_server.py).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from chatlib.branches import fork, switch, versions_of
from chatlib.conversations import ConversationService, TurnRequest
from chatlib.errors import (
    ConversationChanged,
    ConversationDeleted,
    ConversationNotFound,
    StorageError,
)
from chatlib.messages import AnswerMeta, ChatMessage
from chatlib.options import AnswerOptions
from chatlib.sources import Source
from chatlib.storage import NEW_CHAT_TITLE, Conversation
from chatlib.store import (
    SqlConversationStore,
    create_engine_for,
    database_url,
    open_store,
    prepare_database,
)
from chatlib.store.migrate import alembic_config
from chatlib.store.schema import metadata
from tests.clocks import FakeClock
from tests.fakes.openrouter import FakeOpenRouter, expected_reply
from tests.pg_server import fresh_database, postgres_server, postgres_url  # noqa: F401
from tests.turns import each_database, last_frame, service_over, turn_request

ALICE = "a1" * 16
BOB = "b2" * 16


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each engine (PostgreSQL: a new database per test)."""
    return each_database(request, tmp_path)


@pytest.fixture
async def opened(database: str) -> AsyncIterator[Callable[[], Any]]:
    """Open more stores on the test's database (each one stands for another process)."""
    stores: list[SqlConversationStore] = []

    async def another() -> SqlConversationStore:
        stores.append(await open_store(database, data_dir=None, clock=FakeClock()))
        return stores[-1]

    yield another
    for store in stores:
        await store.aclose()


@pytest.fixture
async def store(opened: Callable[[], Any]) -> SqlConversationStore:
    result: SqlConversationStore = await opened()
    return result


async def _chat(
    store: SqlConversationStore, owner: str, *texts: str, model: str = "openai/gpt-4o"
) -> Conversation:
    """Save a conversation where the user said `texts` and the assistant answered each."""
    conversation = store.new_conversation(model, "Be brief.", 0.3)
    messages: list[ChatMessage] = []
    for said in texts:
        messages.append(ChatMessage("user", said, created_at=1_750_000_000.0))
        meta = AnswerMeta(
            model=model,
            status="complete",
            prompt_tokens=10,
            completion_tokens=20,
            cost_usd=0.0015,
            ttft_ms=120.0,
            latency_ms=900.0,
            generation_id="gen-1",
        )
        messages.append(ChatMessage("assistant", f"Answer to {said}", "thinking…", meta))
    return await store.save(owner, replace(conversation, messages=tuple(messages)))


def _more(conversation: Conversation, said: str) -> Conversation:
    return replace(conversation, messages=(*conversation.messages, ChatMessage("user", said)))


# -- the basics a user sees -------------------------------------------------------------------


async def test_a_saved_conversation_comes_back_exactly_after_a_restart(
    opened: Callable[[], Any],
) -> None:
    saved = await _chat(await opened(), ALICE, "What is a monad?", "And a functor?")

    reopened = await (await opened()).load(ALICE, saved.id)

    assert reopened == saved
    assert reopened.title == "What is a monad?"
    assert reopened.revision == 1
    assert reopened.messages[1].meta is not None
    assert reopened.messages[1].meta.cost_usd == 0.0015
    assert reopened.messages[1].reasoning == "thinking…"
    assert reopened.total_cost_usd == pytest.approx(0.003)


async def test_the_list_shows_the_most_recently_used_conversation_first(
    store: SqlConversationStore,
) -> None:
    first = await _chat(store, ALICE, "first")
    second = await _chat(store, ALICE, "second")
    first = await store.save(ALICE, _more(first, "more"))  # continuing moves it to the top

    listed = await store.list(ALICE)

    assert [s.id for s in listed.conversations] == [first.id, second.id]
    assert listed.corrupt == []
    top = listed.conversations[0]
    assert (top.title, top.message_count) == ("first", 3)
    assert top.total_cost_usd == pytest.approx(0.0015)
    assert [s.id for s in (await store.list(ALICE, limit=1)).conversations] == [first.id]


async def test_a_new_chat_is_not_listed_until_it_is_saved(store: SqlConversationStore) -> None:
    fresh = store.new_conversation("openai/gpt-4o", "", 0.5)

    assert fresh.title == NEW_CHAT_TITLE
    assert (await store.list(ALICE)).conversations == []


async def test_renaming_keeps_the_conversation_in_its_place(store: SqlConversationStore) -> None:
    older = await _chat(store, ALICE, "older")
    newer = await _chat(store, ALICE, "newer")

    renamed = await store.rename(ALICE, older.id, "  Trip\nplanning \x1b[31m\u202e ")

    assert renamed.title == "Trip planning [31m"
    assert renamed.messages == older.messages and renamed.revision == older.revision + 1
    assert [s.title for s in (await store.list(ALICE)).conversations] == ["newer", renamed.title]
    assert (await store.load(ALICE, older.id)).title == renamed.title
    assert (await store.list(ALICE)).conversations[0].id == newer.id


async def test_deleting_a_conversation_removes_it_and_its_messages_for_good(
    store: SqlConversationStore,
) -> None:
    doomed = await _chat(store, ALICE, "delete me with a unique word: zanzibar")
    kept = await _chat(store, ALICE, "keep me")

    assert await store.delete(ALICE, doomed.id) is True
    assert await store.delete(ALICE, doomed.id) is False
    assert [s.id for s in (await store.list(ALICE)).conversations] == [kept.id]
    with pytest.raises(ConversationNotFound):
        await store.load(ALICE, doomed.id)
    assert await store.search(ALICE, "zanzibar") == []
    async with store.engine.connect() as connection:
        left = await connection.scalar(text("SELECT count(*) FROM messages"))
    assert left == 2  # only the kept conversation's


async def test_an_answer_saved_mid_stream_reopens_as_interrupted(
    store: SqlConversationStore,
) -> None:
    conversation = replace(
        store.new_conversation("m/x", "", 0.3),
        messages=(
            ChatMessage("user", "hi"),
            ChatMessage("assistant", "Hel", meta=AnswerMeta(model="m/x", status="streaming")),
        ),
    )
    saved = await store.save(ALICE, conversation)

    meta = (await store.load(ALICE, saved.id)).messages[1].meta
    assert meta is not None and meta.status == "interrupted"


async def test_text_with_broken_unicode_or_nul_from_the_browser_is_still_saved(
    store: SqlConversationStore,
) -> None:
    conversation = replace(
        store.new_conversation("m/x", "", 0.3),
        messages=(ChatMessage("user", "emoji half \ud83d here\x00"),),
    )

    saved = await store.save(ALICE, conversation)

    assert (await store.load(ALICE, saved.id)).messages[0].content == "emoji half ? here"
    assert (await store.load(ALICE, saved.id)) == saved


# -- search -----------------------------------------------------------------------------------


async def test_search_finds_words_in_titles_and_messages_regardless_of_case(
    store: SqlConversationStore,
) -> None:
    trip = await _chat(store, ALICE, "Plan a trip to Lisbon")
    code = await _chat(store, ALICE, "Fix my Python", "It says LISBON somewhere in the traceback")
    await _chat(store, ALICE, "Something else")
    await _chat(store, BOB, "Lisbon for Bob")

    assert [s.id for s in await store.search(ALICE, "lisbon")] == [code.id, trip.id]
    assert [s.id for s in await store.search(ALICE, "answer to fix")] == [code.id]
    assert [s.id for s in await store.search(ALICE, "isbo")] == [code.id, trip.id]  # substring
    assert await store.search(ALICE, "madrid") == []
    assert len(await store.search(ALICE, "   ")) == 3


async def test_search_for_short_texts_and_special_characters_matches_literally(
    store: SqlConversationStore,
) -> None:
    percent = await _chat(store, ALICE, 'Is 100% of "quoted" text_here OK? *')
    await _chat(store, ALICE, "plain words")

    for query in ("%", "_", '"', '"quoted"', "*", "0%", "? *", "OK", "k?"):
        found = [s.id for s in await store.search(ALICE, query)]
        assert found == [percent.id], query
    assert [s.title for s in await store.search(ALICE, "pl")] == ["plain words"]
    assert await store.search(ALICE, "NOT plain") == []
    assert await store.search(ALICE, "x" * 5000) == []


async def test_a_renamed_title_is_found_and_the_old_one_is_not(
    store: SqlConversationStore,
) -> None:
    chat = await _chat(store, ALICE, "hello")

    await store.rename(ALICE, chat.id, "Ångström units")

    assert [s.id for s in await store.search(ALICE, "ångström")] == [chat.id]
    assert await store.search(ALICE, "hello there") == []


# -- privacy ----------------------------------------------------------------------------------


async def test_one_visitor_can_never_reach_another_visitors_conversation(
    store: SqlConversationStore,
) -> None:
    secret = await _chat(store, ALICE, "my medical question")

    with pytest.raises(ConversationNotFound) as not_found:
        await store.load(BOB, secret.id)
    with pytest.raises(ConversationNotFound) as missing:
        await store.load(BOB, "0" * 32)
    assert str(not_found.value) == str(missing.value)  # existence is not revealed
    with pytest.raises(ConversationNotFound):
        await store.rename(BOB, secret.id, "mine now")
    assert await store.delete(BOB, secret.id) is False
    with pytest.raises(ConversationNotFound):
        await store.save(BOB, _more(secret, "overwrite it"))
    with pytest.raises(ConversationDeleted):
        await store.save(BOB, _more(secret, "overwrite it"), expected=secret)
    with pytest.raises(ConversationNotFound):
        await store.save_all(BOB, [_more(secret, "imported over it")])
    assert await store.search(BOB, "medical") == []
    assert (await store.list(BOB)).conversations == []
    assert await store.load(ALICE, secret.id) == secret


@pytest.mark.parametrize(
    "conversation_id",
    ["../" + ALICE + "/x", "' OR 1=1 --", "A" * 32, "a" * 31, "a" * 33, "", "a" * 32 + "\x00"],
)
async def test_ids_that_are_not_ours_are_simply_not_found(
    store: SqlConversationStore, conversation_id: str
) -> None:
    await _chat(store, ALICE, "hello")

    with pytest.raises(ConversationNotFound):
        await store.load(ALICE, conversation_id)
    with pytest.raises(ConversationNotFound):
        await store.rename(ALICE, conversation_id, "x")
    assert await store.delete(ALICE, conversation_id) is False


async def test_logging_in_moves_an_anonymous_visitors_conversations(
    store: SqlConversationStore,
) -> None:
    anonymous = [await _chat(store, BOB, "anon one"), await _chat(store, BOB, "anon two")]
    account = await _chat(store, ALICE, "from my account")

    assert await store.move_all(BOB, ALICE) == 2

    titles = sorted(s.title for s in (await store.list(ALICE)).conversations)
    assert titles == ["anon one", "anon two", "from my account"]
    assert await store.load(ALICE, account.id) == account
    assert (await store.list(BOB)).conversations == []
    for conversation in anonymous:
        assert (await store.load(ALICE, conversation.id)).messages == conversation.messages
        with pytest.raises(ConversationNotFound):
            await store.load(BOB, conversation.id)
    assert [s.title for s in await store.search(ALICE, "anon two")] == ["anon two"]
    assert await store.move_all(BOB, ALICE) == 0
    assert await store.move_all(ALICE, ALICE) == 0


# -- revisions: answers that end late, in another process or after a restart ------------------


async def _question(store: SqlConversationStore, said: str = "What is a monad?") -> Conversation:
    """A turn's first save: the question alone."""
    conversation = store.new_conversation("openai/gpt-4o", "", 0.3)
    return await store.save(ALICE, replace(conversation, messages=(ChatMessage("user", said),)))


def _answered(question: Conversation) -> Conversation:
    meta = AnswerMeta(model="openai/gpt-4o", status="complete")
    return replace(
        question, messages=(*question.messages, ChatMessage("assistant", "A", meta=meta))
    )


async def test_an_answer_ending_after_a_delete_in_another_process_does_not_bring_it_back(
    opened: Callable[[], Any],
) -> None:
    tab, other_process = await opened(), await opened()
    question = await _question(tab)

    assert await other_process.delete(ALICE, question.id)
    with pytest.raises(ConversationDeleted):
        await tab.save(ALICE, _answered(question), expected=question)

    assert (await (await opened()).list(ALICE)).conversations == []


async def test_an_answer_ending_after_a_rename_in_another_process_keeps_the_new_name(
    opened: Callable[[], Any],
) -> None:
    tab, other_process = await opened(), await opened()
    question = await _question(tab)

    await other_process.rename(ALICE, question.id, "Category theory")
    saved = await tab.save(ALICE, _answered(question), expected=question)

    stored = await (await opened()).load(ALICE, question.id)
    assert stored == saved
    assert stored.title == "Category theory" and len(stored.messages) == 2
    assert stored.revision == question.revision + 2  # the rename, then the answer


async def test_an_answer_ending_after_a_newer_turn_in_another_process_is_not_saved_over_it(
    opened: Callable[[], Any],
) -> None:
    tab, other_process = await opened(), await opened()
    question = await _question(tab)
    newer = _more(question, "and a functor?")
    await other_process.save(ALICE, newer, expected=question)

    with pytest.raises(ConversationChanged):
        await tab.save(ALICE, _answered(question), expected=question)

    assert (await tab.load(ALICE, question.id)).messages == newer.messages


async def test_an_undo_elsewhere_also_counts_as_a_change(opened: Callable[[], Any]) -> None:
    tab, other_process = await opened(), await opened()
    answered = await tab.save(ALICE, _answered(await _question(tab)))
    await other_process.save(ALICE, replace(answered, messages=()), expected=answered)

    with pytest.raises(ConversationChanged):
        await tab.save(ALICE, _more(answered, "next"), expected=answered)
    assert (await tab.load(ALICE, answered.id)).messages == ()


async def test_an_answer_ending_after_a_restart_is_saved_and_a_delete_still_holds(
    opened: Callable[[], Any],
) -> None:
    kept, doomed = await _question(await opened()), await _question(await opened())
    restarted = await opened()

    await restarted.save(ALICE, _answered(kept), expected=kept)
    await restarted.delete(ALICE, doomed.id)
    with pytest.raises(ConversationDeleted):
        await (await opened()).save(ALICE, _answered(doomed), expected=doomed)

    assert [s.id for s in (await (await opened()).list(ALICE)).conversations] == [kept.id]
    assert len((await restarted.load(ALICE, kept.id)).messages) == 2


async def test_every_write_bumps_the_revision(store: SqlConversationStore) -> None:
    question = await _question(store)
    answered = await store.save(ALICE, _answered(question), expected=question)
    renamed = await store.rename(ALICE, question.id, "Named")
    overwritten = await store.save(ALICE, _more(renamed, "again"))

    revisions = [c.revision for c in (question, answered, renamed, overwritten)]
    assert revisions == [1, 2, 3, 4]
    assert (await store.load(ALICE, question.id)).revision == 4


async def test_tabs_in_two_processes_saving_at_once_leave_a_consistent_store(
    opened: Callable[[], Any],
) -> None:
    processes = [await opened(), await opened()]
    shared = await processes[0].save(ALICE, processes[0].new_conversation("m/x", "", 0.3))

    async def visitor_tab(n: int) -> str:
        store = processes[n % 2]
        own = store.new_conversation("m/x", "", 0.3)
        for turn in range(8):
            own = await store.save(ALICE, _more(own, f"tab {n} turn {turn}"))
            while True:  # a turn in the shared chat, retried when another tab got there first
                latest = await store.load(ALICE, shared.id)
                try:
                    await store.save(ALICE, _more(latest, f"{n}/{turn}"), expected=latest)
                    break
                except ConversationChanged:
                    continue
        return own.id

    own_ids = await asyncio.gather(*(visitor_tab(n) for n in range(6)))

    for reader in (*processes, await opened()):
        by_id = {s.id: s for s in (await reader.list(ALICE)).conversations}
        assert set(by_id) == {shared.id, *own_ids}
        for conversation_id, summary in by_id.items():
            loaded = await reader.load(ALICE, conversation_id)
            assert summary.message_count == len(loaded.messages)
        assert all(by_id[i].message_count == 8 for i in own_ids)
        assert by_id[shared.id].message_count == 6 * 8  # no turn lost, none twice
    shared_now = await processes[1].load(ALICE, shared.id)
    assert shared_now.revision == 1 + 6 * 8


# -- all or nothing, and failures explained ----------------------------------------------------


async def _refuse_writes_of_title(engine: AsyncEngine, title: str, sqlstate: str) -> None:
    """A database-side failure for one conversation (like a disk filling up mid-import)."""
    async with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            await connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON conversations "
                    f"WHEN NEW.title = '{title}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
            return
        await connection.execute(
            text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.title = '{title}' THEN "
                f"RAISE EXCEPTION 'refused' USING ERRCODE = '{sqlstate}'; END IF; "
                "RETURN NEW; END $$"
            )
        )
        await connection.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON conversations "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        )


async def test_an_import_that_fails_midway_stores_nothing(store: SqlConversationStore) -> None:
    before = await _chat(store, ALICE, "already here")
    await _refuse_writes_of_title(store.engine, "second", "53100")
    imported = [
        replace(store.new_conversation("m/x", "", 0.3), title=title, messages=messages)
        for title, messages in [
            ("first", (ChatMessage("user", "one"),)),
            ("second", (ChatMessage("user", "two"),)),
            ("third", (ChatMessage("user", "three"),)),
        ]
    ]

    with pytest.raises(StorageError, match="Your chat continues but is not stored"):
        await store.save_all(ALICE, imported)

    assert [s.id for s in (await store.list(ALICE)).conversations] == [before.id]
    assert await store.search(ALICE, "one") == []
    del imported[1]
    saved = await store.save_all(ALICE, imported)
    assert [c.revision for c in saved] == [1, 1]
    assert len((await store.list(ALICE)).conversations) == 3


async def test_imported_conversations_carry_their_mark_into_the_list(
    store: SqlConversationStore,
) -> None:
    here = await _chat(store, ALICE, "made here")
    brought = replace(
        store.new_conversation("m/x", "", 0.3),
        messages=(ChatMessage("user", "from a file"),),
        imported_at=1_760_000_000.0,
    )
    [imported] = await store.save_all(ALICE, [brought])

    marks = {s.id: s.imported_at for s in (await store.list(ALICE)).conversations}
    assert marks == {here.id: None, imported.id: 1_760_000_000.0}
    assert (await store.load(ALICE, imported.id)).imported_at == 1_760_000_000.0
    assert [s.imported_at for s in await store.search(ALICE, "from a file")] == [1_760_000_000.0]


def _on_every_connection(engine: AsyncEngine, statement: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _run(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(statement)
        cursor.close()
        dbapi_connection.commit()  # PostgreSQL: a SET in a rolled back transaction is undone


async def test_a_full_disk_is_explained_and_the_previous_version_kept(
    store: SqlConversationStore, database: str
) -> None:
    before = await _chat(store, ALICE, "short")
    engine = create_engine_for(database)
    if engine.dialect.name == "sqlite":
        _on_every_connection(engine, "PRAGMA max_page_count = 1")  # = the current size
    else:
        await _refuse_writes_of_title(store.engine, "short", "53100")  # disk_full
    full = SqlConversationStore(engine)
    try:
        with pytest.raises(StorageError) as failure:
            await full.save(ALICE, _more(before, "x" * 200_000))
    finally:
        await full.aclose()

    assert str(failure.value) == (
        "Could not save the conversation: the disk is full. Your chat continues but is not stored."
    )
    assert await store.load(ALICE, before.id) == before


async def test_a_read_only_database_is_explained(
    store: SqlConversationStore, database: str
) -> None:
    before = await _chat(store, ALICE, "hello")
    engine = create_engine_for(database)
    _on_every_connection(
        engine,
        "PRAGMA query_only = 1"
        if engine.dialect.name == "sqlite"
        else "SET default_transaction_read_only = on",
    )
    read_only = SqlConversationStore(engine)
    try:
        with (
            structlog.testing.capture_logs() as logs,
            pytest.raises(StorageError, match="read-only"),
        ):
            await read_only.save(ALICE, _more(before, "private words"))
        assert await read_only.load(ALICE, before.id) == before  # reading still works
    finally:
        await read_only.aclose()
    failures = [e for e in logs if e["event"] == "store.save_failed"]
    assert failures and failures[0]["owner_key"] == ALICE
    assert "private words" not in repr(logs)  # never the content


async def test_an_unreachable_database_reads_as_unavailable(tmp_path: Path) -> None:
    broken = SqlConversationStore(create_engine_for("postgresql://chat:chat@127.0.0.1:9/chat"))
    try:
        with pytest.raises(StorageError, match="cannot be read right now"):
            await broken.load(ALICE, "0" * 32)
        with pytest.raises(StorageError, match="Your chat continues but is not stored"):
            await broken.save(ALICE, broken.new_conversation("m/x", "", 0.3))
    finally:
        await broken.aclose()


# -- scale and startup ------------------------------------------------------------------------


async def test_saving_and_listing_use_indexes_not_scans(tmp_path: Path) -> None:
    """What keeps a turn O(one conversation) at 10 000 per owner (see bench/)."""
    store = await open_store(database_url(tmp_path), data_dir=None)
    statements: list[tuple[str, Any]] = []

    @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
    def _record(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().split()[0] in ("SELECT", "UPDATE", "DELETE", "INSERT"):
            statements.append((statement, parameters))

    try:
        chats = [await _chat(store, ALICE, f"chat {n}") for n in range(5)]
        question = await store.save(ALICE, _more(chats[2], "again"), expected=chats[2])
        await store.save(ALICE, _answered(question))
        await store.list(ALICE)
        await store.load(ALICE, question.id)
        plans = []
        async with store.engine.connect() as connection:
            for statement, parameters in statements:
                if statement.startswith("INSERT"):
                    continue
                result = await connection.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + statement, parameters
                )
                plans += [(row[-1], statement) for row in result]
    finally:
        await store.aclose()

    scans = [(p, s) for p, s in plans if re.match(r"SCAN (conversations|messages)\b", p)]
    assert scans == []
    assert not [p for p, _ in plans if "TEMP B-TREE" in p]  # the list is never sorted


async def test_two_processes_starting_at_once_migrate_once(database: str) -> None:
    stores = await asyncio.gather(*(open_store(database, data_dir=None) for _ in range(3)))
    try:
        chat = await _chat(stores[0], ALICE, "hello")
        for store in stores:
            assert await store.load(ALICE, chat.id) == chat
        async with stores[1].engine.connect() as connection:
            versions = (await connection.execute(text("SELECT * FROM alembic_version"))).all()
        assert [tuple(v) for v in versions] == [("0004",)]
    finally:
        for store in stores:
            await store.aclose()


async def _database_at_first_revision(database: str) -> None:
    """A database as the first release left it: revision 0001, one chat of two messages."""
    engine = create_engine_for(database)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0001"))
            await connection.execute(
                text(
                    "INSERT INTO conversations VALUES (:id, :owner, 'Old chat', 1.0, 2.0, "
                    "'m/x', '', 0.3, 4, 2, 0.5)"
                ),
                {"id": "c" * 32, "owner": ALICE},
            )
            for position, (role, content, meta) in enumerate(
                [("user", "an old question", None), ("assistant", "an old answer", _OLD_META)]
            ):
                await connection.execute(
                    text(
                        "INSERT INTO messages (conversation_id, position, role, content, "
                        "reasoning, meta, created_at) VALUES (:c, :p, :r, :t, '', :m, 1.0)"
                    ),
                    {"c": "c" * 32, "p": position, "r": role, "t": content, "m": meta},
                )
    finally:
        await engine.dispose()


_OLD_META = '{"model":"m/x","status":"complete","cost_usd":0.5}'


async def test_a_database_from_the_first_release_migrates_without_losing_anything(
    database: str, opened: Callable[[], Any]
) -> None:
    await _database_at_first_revision(database)
    store: SqlConversationStore = await opened()  # migrates to the newest revision

    old = await store.load(ALICE, "c" * 32)
    assert [(m.role, m.content) for m in old.messages] == [
        ("user", "an old question"),
        ("assistant", "an old answer"),
    ]
    assert old.revision == 4 and old.total_cost_usd == 0.5 and old.imported_at is None
    ids = [m.id for m in old.messages]
    assert len(set(ids)) == 2 and all(ids)
    assert [m.id for m in (await store.load(ALICE, "c" * 32)).messages] == ids  # stable
    [summary] = (await store.list(ALICE)).conversations
    assert (summary.title, summary.message_count, summary.imported_at) == ("Old chat", 2, None)
    # Search still follows new messages (SQLite: the full-text triggers survived).
    answered = await store.save(ALICE, _more(old, "a brand new question"), expected=old)
    assert [s.id for s in await store.search(ALICE, "brand new")] == [old.id]
    assert [m.id for m in answered.messages[:2]] == ids


async def _database_at_revision_0003(database: str) -> None:
    """A database as the attachments release left it: one chat, an answer with two versions."""
    engine = create_engine_for(database)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0003"))
            await connection.execute(
                text(
                    "INSERT INTO conversations (id, owner_key, title, created_at, updated_at, "
                    "model, system_prompt, temperature, revision, message_count, total_cost_usd, "
                    "imported_at, branches) VALUES (:id, :owner, 'Before options', 1.0, 2.0, "
                    "'m/x', 'Be brief.', 0.3, 7, 2, 0.5, NULL, :branches)"
                ),
                {"id": "d" * 32, "owner": ALICE, "branches": _OLD_BRANCHES},
            )
            for position, (node, role, content, meta) in enumerate(
                [("q1", "user", "a question", None), ("a2", "assistant", "answer", _OLD_META)]
            ):
                await connection.execute(
                    text(
                        "INSERT INTO messages (conversation_id, position, node_id, role, content, "
                        "reasoning, meta, created_at, attachments) "
                        "VALUES (:c, :p, :n, :r, :t, '', :m, 1.0, NULL)"
                    ),
                    {"c": "d" * 32, "p": position, "n": node, "r": role, "t": content, "m": meta},
                )
    finally:
        await engine.dispose()


_OLD_BRANCHES = (
    '[{"id":"a1","parent_id":"q1","role":"assistant","content":"first answer",'
    '"meta":{"model":"m/y","status":"complete"}}]'
)


async def test_chats_from_before_options_keep_everything_and_ask_with_the_defaults(
    database: str, opened: Callable[[], Any]
) -> None:
    await _database_at_revision_0003(database)
    store: SqlConversationStore = await opened()  # migrates 0003 -> 0004

    old = await store.load(ALICE, "d" * 32)
    assert old.options == AnswerOptions()
    assert (old.title, old.revision, old.system_prompt) == ("Before options", 7, "Be brief.")
    assert [(m.id, m.content) for m in old.messages] == [("q1", "a question"), ("a2", "answer")]
    assert versions_of(old) == ((1, 1), (2, 2))  # the other answer is still there
    assert [n.message.content for n in old.branches] == ["first answer"]

    chosen = AnswerOptions(web_search=True, max_tokens=300)
    saved = await store.save(ALICE, replace(old, options=chosen), expected=old)
    assert (await (await opened()).load(ALICE, old.id)).options == chosen == saved.options


async def test_sources_in_every_version_and_the_chats_options_come_back_from_the_database(
    opened: Callable[[], Any],
) -> None:
    store: SqlConversationStore = await opened()
    chat = await _chat(store, ALICE, "Who won the match?")
    first = chat.messages[1]
    assert first.meta is not None
    cited = (Source("https://news.example/report", "Report"), Source("javascript:alert(1)"))
    first = replace(first, meta=replace(first.meta, sources=cited))
    chat = await store.save(ALICE, replace(chat, messages=(chat.messages[0], first)), expected=chat)
    # Asked again: the first answer becomes another version, the new one cites another page.
    second = replace(first, id="", meta=replace(first.meta, sources=cited[:1], model="m/other"))
    forked = fork(chat, 1)
    options = AnswerOptions(web_search=True, reasoning_effort="high", max_tokens=1200)
    retried = replace(forked, messages=(*forked.messages, second), options=options)
    saved = await store.save(ALICE, retried, expected=chat)

    reopened = await (await opened()).load(ALICE, saved.id)

    assert reopened == saved and reopened.options == options
    assert reopened.messages[1].meta is not None
    assert reopened.messages[1].meta.sources == cited[:1]
    assert [n.message.meta.sources for n in reopened.branches if n.message.meta] == [cited]
    back = switch(reopened, 1, -1)
    assert back.messages[1].meta is not None and back.messages[1].meta.sources == cited


def test_database_urls_name_the_engine_and_never_echo_a_password(tmp_path: Path) -> None:
    assert database_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'chat.db'}"
    assert database_url(tmp_path, "postgresql://u:p@h/db") == "postgresql://u:p@h/db"
    assert create_engine_for("postgresql://u:p@h:5/db").dialect.driver == "asyncpg"
    assert create_engine_for("postgres://u:p@h:5/db").dialect.driver == "asyncpg"
    with pytest.raises(ValueError, match="mysql") as refused:
        create_engine_for("mysql://root:hunter2@h/db")
    assert "hunter2" not in str(refused.value)
    with pytest.raises(ValueError, match="not a URL") as garbled:
        create_engine_for("hunter2")
    assert "hunter2" not in str(garbled.value)


# -- the door in front of it --------------------------------------------------------------------


@pytest.fixture
async def conversation_service(
    fake: FakeOpenRouter, tmp_path: Path, store: SqlConversationStore
) -> AsyncIterator[ConversationService]:
    async with service_over(store, fake, tmp_path) as service:
        yield service


def _turn(said: str, conversation_id: str | None = None) -> TurnRequest:
    return turn_request(said, conversation_id, owner=ALICE)


_last = last_frame


async def test_turns_through_the_conversation_service_keep_deletes_renames_and_newer_turns(
    conversation_service: ConversationService,
) -> None:
    service = conversation_service
    turn = _turn("short [[tokens=30]] [[rate=100]]")
    doomed_stream, renamed_stream = service.turn(turn), service.turn(turn)
    doomed = (await anext(doomed_stream)).conversation
    renamed = (await anext(renamed_stream)).conversation
    assert await service.delete(ALICE, doomed.id)
    await service.rename(ALICE, renamed.id, "My own title")
    doomed_end, renamed_end = await _last(doomed_stream), await _last(renamed_stream)

    assert doomed_end.save_error is not None and "deleted" in doomed_end.save_error.user_message
    assert renamed_end.save_error is None
    kept = await service.open(ALICE, renamed.id)
    assert kept.title == "My own title" and len(kept.messages) == 2

    slow = service.turn(_turn("first [[delay=1]] [[tokens=3]]", renamed.id))
    await anext(slow)
    fast = await _last(service.turn(_turn("second [[tokens=3]]", renamed.id)))
    late = await _last(slow)
    assert fast.save_error is None
    assert late.save_error is not None and "not saved" in late.save_error.user_message
    stored = (await service.open(ALICE, renamed.id)).messages
    assert [m.content for m in stored[2:]] == [
        "first [[delay=1]] [[tokens=3]]",
        "second [[tokens=3]]",
        expected_reply("second", 3),
    ]
    assert [s.title for s in (await service.list(ALICE, "SECOND")).conversations] == [
        "My own title"
    ]


def test_a_database_prepared_before_the_server_starts_serves_on_the_servers_loop(
    database: str, tmp_path: Path
) -> None:
    """How a synchronous startup wires it: migrate in one event loop, serve in another."""
    asyncio.run(prepare_database(database, data_dir=tmp_path / "no-json-here"))
    store = SqlConversationStore(create_engine_for(database), clock=FakeClock())

    async def serve() -> Conversation:
        try:
            saved = await _chat(store, ALICE, "hello from the server's loop")
            return await store.load(ALICE, saved.id)
        finally:
            await store.aclose()  # at shutdown, on the same loop

    assert asyncio.run(serve()).title == "hello from the server's loop"


async def test_the_migrations_build_exactly_the_tables_the_code_uses(
    store: SqlConversationStore,
) -> None:
    """schema.py and migrations/ agree (a column added to one needs a revision in the other)."""

    def differences(connection: Any) -> list[Any]:
        def ours(obj: Any, name: str | None, kind: str, reflected: bool, _: Any) -> bool:
            # The search indexes are engine-specific DDL, not metadata: FTS5 tables, GIN indexes.
            return not (name or "").startswith(("messages_fts", "alembic_")) and not (
                kind == "index" and (name or "").endswith("_trgm")
            )

        context = MigrationContext.configure(connection, opts={"include_object": ours})
        return compare_metadata(context, metadata)

    async with store.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_versions_of_answers_are_stored_and_the_chosen_one_is_shown_after_a_restart(
    conversation_service: ConversationService, opened: Callable[[], Any]
) -> None:
    service = conversation_service
    first = await _last(service.turn(_turn("a joke [[tokens=3]]")))
    chat = first.conversation
    retried = await _last(service.turn(replace(_turn("", chat.id), action="retry")))
    assert retried.save_error is None
    assert versions_of(retried.conversation) == ((1, 1), (2, 2))
    listed_before = (await service.list(ALICE)).conversations

    shown = await service.switch_version(ALICE, chat.id, 1, -1)
    restarted: SqlConversationStore = await opened()  # another process, reading the rows
    reopened = await restarted.load(ALICE, chat.id)
    assert [m.id for m in reopened.messages] == [m.id for m in chat.messages]
    assert versions_of(reopened) == ((1, 1), (1, 2)) and reopened.revision == shown.revision
    assert (await service.list(ALICE)).conversations[0].updated_at == listed_before[0].updated_at
    assert [s.id for s in await restarted.search(ALICE, "a joke")] == [chat.id]

    with pytest.raises(ConversationChanged):  # a tab that still shows the other answer
        stale = retried.conversation
        await restarted.save(ALICE, switch(stale, 1, -1), expected=stale)
    with pytest.raises(ConversationNotFound):
        await service.switch_version(BOB, chat.id, 1, +1)
    undone, _ = await service.undo(ALICE, chat.id)
    assert undone.messages == () and undone.branches == ()


async def test_a_sqlite_url_can_shorten_how_long_a_write_waits_for_another_writer(
    tmp_path: Path,
) -> None:
    waits: dict[str, int] = {}
    for query in ("", "?timeout=0.25"):
        engine = create_engine_for(f"sqlite:///{tmp_path / 'chat.db'}{query}")
        try:
            async with engine.connect() as connection:
                result = await connection.exec_driver_sql("PRAGMA busy_timeout")
                waits[query] = result.scalar_one()
        finally:
            await engine.dispose()
    assert waits == {"": 5000, "?timeout=0.25": 250}
