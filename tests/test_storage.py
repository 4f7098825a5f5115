"""Conversations persist per visitor: saved atomically, listed fast, private, crash-safe."""

from __future__ import annotations

import errno
import fcntl
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from chatlib.errors import (
    ConversationChanged,
    ConversationCorrupt,
    ConversationDeleted,
    ConversationNotFound,
    StorageError,
)
from chatlib.messages import AnswerMeta, ChatMessage
from chatlib.options import AnswerOptions
from chatlib.sources import Source
from chatlib.storage import (
    MAX_TITLE_CHARS,
    NEW_CHAT_TITLE,
    AsyncConversationStore,
    Conversation,
    ConversationStore,
    auto_title,
    clean_title,
)
from tests.clocks import FakeClock

REPO = Path(__file__).resolve().parent.parent
ALICE = "a1" * 16
BOB = "b2" * 16


@pytest.fixture
def store(tmp_path: Path) -> ConversationStore:
    return ConversationStore(tmp_path, clock=FakeClock())


def _chat(
    store: ConversationStore, owner: str, *texts: str, model: str = "openai/gpt-4o"
) -> Conversation:
    """Save a conversation where the user said `texts` and the assistant answered each."""
    conversation = store.new_conversation(model, "Be brief.", 0.3)
    messages: list[ChatMessage] = []
    for text in texts:
        messages.append(ChatMessage("user", text, created_at=1_750_000_000.0))
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
        messages.append(ChatMessage("assistant", f"Answer to {text}", "thinking…", meta))
    return store.save(owner, replace(conversation, messages=tuple(messages)))


def _owner_dir(root: Path, owner: str) -> Path:
    return root / "conversations" / owner


def _litter(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.endswith(".tmp")]


# -- the basics a user sees -------------------------------------------------------------------


def test_a_saved_conversation_comes_back_exactly_after_a_restart(tmp_path: Path) -> None:
    saved = _chat(ConversationStore(tmp_path), ALICE, "What is a monad?", "And a functor?")

    reopened = ConversationStore(tmp_path).load(ALICE, saved.id)

    assert reopened == saved
    assert reopened.title == "What is a monad?"
    assert reopened.messages[1].meta is not None
    assert reopened.messages[1].meta.cost_usd == 0.0015
    assert reopened.total_cost_usd == pytest.approx(0.003)


def test_the_list_shows_the_most_recently_used_conversation_first(
    store: ConversationStore,
) -> None:
    first = _chat(store, ALICE, "first")
    second = _chat(store, ALICE, "second")
    # Continuing the first conversation moves it back to the top.
    first = store.save(
        ALICE, replace(first, messages=(*first.messages, ChatMessage("user", "more")))
    )

    listed = store.list(ALICE)

    assert [s.id for s in listed.conversations] == [first.id, second.id]
    assert listed.corrupt == []
    top = listed.conversations[0]
    assert (top.title, top.message_count) == ("first", 3)
    assert top.total_cost_usd == pytest.approx(0.0015)


def test_a_new_chat_is_not_listed_until_it_is_saved(store: ConversationStore) -> None:
    fresh = store.new_conversation("openai/gpt-4o", "", 0.5)

    assert fresh.title == NEW_CHAT_TITLE
    assert fresh.messages == ()
    assert store.list(ALICE).conversations == []


def test_renaming_keeps_the_conversation_in_its_place(store: ConversationStore) -> None:
    older = _chat(store, ALICE, "older")
    newer = _chat(store, ALICE, "newer")

    renamed = store.rename(ALICE, older.id, "  Trip\nplanning \x1b[31m\u202e ")

    assert renamed.title == "Trip planning [31m"
    assert [s.title for s in store.list(ALICE).conversations] == ["newer", renamed.title]
    assert store.load(ALICE, older.id).title == renamed.title
    assert store.list(ALICE).conversations[0].id == newer.id


def test_deleting_a_conversation_removes_it_for_good(store: ConversationStore) -> None:
    doomed = _chat(store, ALICE, "delete me")
    kept = _chat(store, ALICE, "keep me")

    assert store.delete(ALICE, doomed.id) is True
    assert store.delete(ALICE, doomed.id) is False
    assert [s.id for s in store.list(ALICE).conversations] == [kept.id]
    with pytest.raises(ConversationNotFound):
        store.load(ALICE, doomed.id)


def test_search_finds_words_in_titles_and_messages_regardless_of_case(
    store: ConversationStore,
) -> None:
    trip = _chat(store, ALICE, "Plan a trip to Lisbon")
    code = _chat(store, ALICE, "Fix my Python", "It says LISBON somewhere in the traceback")
    _chat(store, ALICE, "Something else")

    assert [s.id for s in store.search(ALICE, "lisbon")] == [code.id, trip.id]
    assert [s.id for s in store.search(ALICE, "answer to fix")] == [code.id]
    assert store.search(ALICE, "madrid") == []
    assert len(store.search(ALICE, "   ")) == 3


async def test_async_handlers_use_the_same_store_without_blocking(tmp_path: Path) -> None:
    store = AsyncConversationStore(ConversationStore(tmp_path, clock=FakeClock()))
    conversation = store.new_conversation("openai/gpt-4o", "", 0.3)
    conversation = replace(conversation, messages=(ChatMessage("user", "hi from async"),))

    saved = await store.save(ALICE, conversation)

    assert (await store.load(ALICE, saved.id)) == saved
    assert [s.title for s in (await store.list(ALICE)).conversations] == ["hi from async"]
    assert [s.id for s in await store.search(ALICE, "ASYNC")] == [saved.id]
    assert (await store.rename(ALICE, saved.id, "Renamed")).title == "Renamed"
    assert await store.move_all(ALICE, BOB) == 1
    assert await store.delete(BOB, saved.id) is True


def test_an_answer_saved_mid_stream_reopens_as_interrupted(store: ConversationStore) -> None:
    conversation = replace(
        store.new_conversation("m/x", "", 0.3),
        messages=(
            ChatMessage("user", "hi"),
            ChatMessage("assistant", "Hel", meta=AnswerMeta(model="m/x", status="streaming")),
        ),
    )
    saved = store.save(ALICE, conversation)

    meta = store.load(ALICE, saved.id).messages[1].meta
    assert meta is not None and meta.status == "interrupted"


def test_text_with_broken_unicode_from_the_browser_is_still_saved(store: ConversationStore) -> None:
    conversation = replace(
        store.new_conversation("m/x", "", 0.3),
        messages=(ChatMessage("user", "emoji half \ud83d here"),),
    )

    saved = store.save(ALICE, conversation)

    assert store.load(ALICE, saved.id).messages[0].content == "emoji half ? here"


# -- privacy ----------------------------------------------------------------------------------


def test_one_visitor_can_never_reach_another_visitors_conversation(
    store: ConversationStore,
) -> None:
    secret = _chat(store, ALICE, "my medical question")

    with pytest.raises(ConversationNotFound) as not_found:
        store.load(BOB, secret.id)
    with pytest.raises(ConversationNotFound) as missing:
        store.load(BOB, "0" * 32)
    assert str(not_found.value) == str(missing.value)  # existence is not revealed
    with pytest.raises(ConversationNotFound):
        store.rename(BOB, secret.id, "mine now")
    assert store.delete(BOB, secret.id) is False
    assert store.search(BOB, "medical") == []
    assert store.list(BOB).conversations == []
    assert store.load(ALICE, secret.id) == secret


@pytest.mark.parametrize(
    "conversation_id",
    ["../" + ALICE + "/x", "../../etc/passwd", "A" * 32, "a" * 31, "a" * 33, "", "a" * 32 + "\x00"],
)
def test_ids_that_are_not_ours_are_simply_not_found(
    store: ConversationStore, conversation_id: str
) -> None:
    _chat(store, ALICE, "hello")

    with pytest.raises(ConversationNotFound):
        store.load(ALICE, conversation_id)
    with pytest.raises(ConversationNotFound):
        store.rename(ALICE, conversation_id, "x")
    assert store.delete(ALICE, conversation_id) is False


def test_files_on_disk_are_named_by_keys_and_ids_only(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path, clock=FakeClock())
    saved = _chat(store, ALICE, "../../etc/passwd is my title")

    names = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}

    assert names == {
        "conversations",
        f"conversations/{ALICE}",
        f"conversations/{ALICE}/.lock",  # shared by processes writing this owner's files
        f"conversations/{ALICE}/index.jsonl",
        f"conversations/{ALICE}/{saved.id}.json",
    }
    assert oct(_owner_dir(tmp_path, ALICE).stat().st_mode & 0o777) == "0o700"
    assert oct(next(iter(tmp_path.rglob("*.json"))).stat().st_mode & 0o777) == "0o600"


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_failed_write_keeps_the_previous_version_and_leaves_no_litter(
    store: ConversationStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    before = _chat(store, ALICE, "version one")
    longer = replace(before, messages=(*before.messages, ChatMessage("user", "version two")))

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(StorageError, match="Your chat continues but is not stored"):
        store.save(ALICE, longer)
    monkeypatch.undo()

    assert store.load(ALICE, before.id) == before
    assert store.list(ALICE).conversations[0].message_count == 2
    assert _litter(tmp_path) == []


def test_a_full_disk_is_explained_and_the_previous_version_kept(
    store: ConversationStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _chat(store, ALICE, "short")
    longer = replace(before, messages=(*before.messages, ChatMessage("user", "x" * 100_000)))

    def disk_full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(StorageError) as failure:
        store.save(ALICE, longer)
    monkeypatch.undo()

    assert str(failure.value) == (
        "Could not save the conversation: the disk is full. Your chat continues but is not stored."
    )
    assert store.load(ALICE, before.id) == before
    assert _litter(tmp_path) == []


def test_a_read_only_data_folder_is_explained(
    store: ConversationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _chat(store, ALICE, "hello")

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(StorageError, match="read-only"):
        store.save(ALICE, before)
    monkeypatch.undo()
    assert store.load(ALICE, before.id) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_folder_without_write_permission_is_explained(
    store: ConversationStore, tmp_path: Path
) -> None:
    before = _chat(store, ALICE, "hello")
    folder = _owner_dir(tmp_path, ALICE)
    folder.chmod(0o500)
    try:
        with pytest.raises(StorageError, match="read-only"):
            store.save(ALICE, before)
    finally:
        folder.chmod(0o700)
    assert store.load(ALICE, before.id) == before


def test_damaged_files_are_reported_while_the_others_stay_listed(
    store: ConversationStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _chat(store, ALICE, "still fine")
    truncated, wrong_shape, future, unreadable = (
        _chat(store, ALICE, f"private note {i}") for i in range(4)
    )
    folder = _owner_dir(tmp_path, ALICE)
    path = folder / f"{truncated.id}.json"
    path.write_bytes(path.read_bytes()[:40])
    (folder / f"{wrong_shape.id}.json").write_bytes(b'["a", "list"]')
    path = folder / f"{future.id}.json"
    path.write_bytes(path.read_bytes().replace(b'"schema_version":1', b'"schema_version":99'))
    unreadable_path = folder / f"{unreadable.id}.json"
    unreadable_path.write_bytes(unreadable_path.read_bytes() + b" ")  # changed: must be re-read
    real_open = Path.open

    def permission_denied(self: Path, *args: object, **kwargs: object) -> object:
        if self == unreadable_path:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", permission_denied)
    with structlog.testing.capture_logs() as logs:
        listed = ConversationStore(tmp_path).list(ALICE)

    assert [s.id for s in listed.conversations] == [good.id]
    damaged = sorted([truncated.id, wrong_shape.id, future.id, unreadable.id])
    assert listed.corrupt == damaged
    warnings = [e for e in logs if e["event"] == "storage.corrupt_file"]
    assert sorted(e["conversation_id"] for e in warnings) == damaged
    assert all(e["owner_key"] == ALICE and e["log_level"] == "warning" for e in warnings)
    assert "private note" not in repr(warnings)  # never the content
    with pytest.raises(ConversationCorrupt):
        store.load(ALICE, truncated.id)
    # Known damage is remembered: listing again does not re-read or re-log it.
    with structlog.testing.capture_logs() as logs:
        assert store.list(ALICE).corrupt == damaged
    assert [e for e in logs if e["event"] == "storage.corrupt_file"] == []


# -- the index --------------------------------------------------------------------------------


def _index(root: Path, owner: str) -> Path:
    return _owner_dir(root, owner) / "index.jsonl"


def _listing(store: ConversationStore, owner: str) -> list[tuple[str, str, int]]:
    return [(s.id, s.title, s.message_count) for s in store.list(owner).conversations]


def test_a_lost_index_is_rebuilt_from_the_conversations(
    store: ConversationStore, tmp_path: Path
) -> None:
    for text in ("one", "two", "three"):
        _chat(store, ALICE, text)
    expected = _listing(store, ALICE)
    _index(tmp_path, ALICE).unlink()

    assert _listing(ConversationStore(tmp_path), ALICE) == expected
    assert _index(tmp_path, ALICE).exists()


def test_a_garbled_index_is_repaired(store: ConversationStore, tmp_path: Path) -> None:
    for text in ("one", "two", "three"):
        _chat(store, ALICE, text)
    expected = _listing(store, ALICE)
    index = _index(tmp_path, ALICE)
    data = index.read_bytes()
    index.write_bytes(b"\x00\xffgarbage\n{not json}\n[1,2]\n" + data[: len(data) // 2])

    assert _listing(ConversationStore(tmp_path), ALICE) == expected


def test_a_save_after_a_torn_index_line_is_not_lost(
    store: ConversationStore, tmp_path: Path
) -> None:
    first = _chat(store, ALICE, "before the crash")
    with _index(tmp_path, ALICE).open("ab") as index:
        index.write(b'{"id":"' + first.id.encode() + b'","stamp":[1,2')  # a crash mid-append
    second = _chat(store, ALICE, "after the crash")

    lines = _index(tmp_path, ALICE).read_bytes().splitlines()
    assert orjson.loads(lines[-1])["id"] == second.id
    assert _listing(store, ALICE) == [
        (second.id, "after the crash", 2),
        (first.id, "before the crash", 2),
    ]


def test_conversations_restored_from_a_backup_appear_in_the_list(
    store: ConversationStore, tmp_path: Path
) -> None:
    """Dataset sync restores files at boot; the store must notice new and changed ones."""
    kept = _chat(store, ALICE, "kept")
    changed = _chat(store, ALICE, "will change")
    removed = _chat(store, ALICE, "will vanish")
    store.list(ALICE)
    backup = tmp_path / "backup"
    other = ConversationStore(backup, clock=FakeClock(1_800_000_000.0))
    restored = _chat(other, ALICE, "restored from the dataset")
    newer = other.save(ALICE, replace(changed, messages=(ChatMessage("user", "edited elsewhere"),)))
    folder = _owner_dir(tmp_path, ALICE)
    for conversation in (restored, newer):
        name = f"{conversation.id}.json"
        shutil.copyfile(_owner_dir(backup, ALICE) / name, folder / name)
    (folder / f"{removed.id}.json").unlink()

    assert _listing(store, ALICE) == [
        (newer.id, "will change", 1),
        (restored.id, "restored from the dataset", 2),
        (kept.id, "kept", 2),
    ]


def test_the_index_stays_small_however_often_a_conversation_is_saved(
    store: ConversationStore, tmp_path: Path
) -> None:
    conversation = _chat(store, ALICE, "chatty")
    others = [_chat(store, ALICE, f"other {i}") for i in range(3)]
    store.list(ALICE)
    for turn in range(400):
        message = ChatMessage("user", f"turn {turn}")
        conversation = store.save(
            ALICE, replace(conversation, messages=(*conversation.messages, message))
        )

    lines = _index(tmp_path, ALICE).read_bytes().count(b"\n")
    assert lines <= 2 * 4 + 100
    assert _listing(store, ALICE)[0] == (conversation.id, "chatty", 402)
    assert len(store.list(ALICE).conversations) == 1 + len(others)


def test_saving_and_listing_never_read_every_conversation(
    store: ConversationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What keeps a turn fast for a visitor with thousands of conversations (see bench/)."""
    conversations = [_chat(store, ALICE, f"chat {i}") for i in range(30)]
    store.list(ALICE)
    opened: list[str] = []
    scans: list[str] = []
    real_open, real_scandir = Path.open, os.scandir

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(self.name)
        return real_open(self, *args, **kwargs)

    def counting_scandir(path: Any) -> Any:
        scans.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(Path, "open", counting_open)
    monkeypatch.setattr(os, "scandir", counting_scandir)
    last = conversations[-1]
    store.save(ALICE, replace(last, messages=(*last.messages, ChatMessage("user", "again"))))
    assert (opened, scans) == ([], [])

    listed = store.list(ALICE)
    assert len(listed.conversations) == 30
    assert [name for name in opened if name.endswith(".json")] == []
    assert len(scans) == 1  # names and stamps only


def test_saves_from_many_threads_leave_a_consistent_list(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path)
    shared = store.save(ALICE, store.new_conversation("m/x", "", 0.3))
    start = threading.Barrier(8)
    errors: list[BaseException] = []
    own_ids: list[str] = []

    def visitor_tab(n: int) -> None:
        try:
            start.wait()
            own = store.new_conversation("m/x", "", 0.3)
            for turn in range(15):
                message = ChatMessage("user", f"tab {n} turn {turn}")
                own = store.save(ALICE, replace(own, messages=(*own.messages, message)))
                latest = store.load(ALICE, shared.id)
                store.save(ALICE, replace(latest, messages=(*latest.messages, message)))
                if turn % 5 == 0:
                    store.list(ALICE)
            own_ids.append(own.id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=visitor_tab, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for reader in (store, ConversationStore(tmp_path)):
        listed = reader.list(ALICE)
        assert listed.corrupt == []
        by_id = {s.id: s for s in listed.conversations}
        assert set(by_id) == {shared.id, *own_ids}
        for conversation_id, summary in by_id.items():
            assert summary.message_count == len(reader.load(ALICE, conversation_id).messages)
        assert all(by_id[i].message_count == 15 for i in own_ids)
    for line in _index(tmp_path, ALICE).read_bytes().splitlines():
        orjson.loads(line)


def test_logging_in_moves_an_anonymous_visitors_conversations(
    store: ConversationStore, tmp_path: Path
) -> None:
    anonymous = [_chat(store, BOB, "anon one"), _chat(store, BOB, "anon two")]
    account = _chat(store, ALICE, "from my account")
    # The same id on both sides (a copied file) must not overwrite anything.
    clash = _owner_dir(tmp_path, BOB) / f"{account.id}.json"
    shutil.copyfile(_owner_dir(tmp_path, ALICE) / f"{account.id}.json", clash)

    moved = store.move_all(BOB, ALICE)

    assert moved == 3
    listed = store.list(ALICE)
    assert listed.corrupt == []
    titles = sorted(s.title for s in listed.conversations)
    assert titles == ["anon one", "anon two", "from my account", "from my account"]
    assert store.load(ALICE, account.id) == account
    assert store.list(BOB).conversations == []
    for conversation in anonymous:
        assert store.load(ALICE, conversation.id).messages == conversation.messages
        with pytest.raises(ConversationNotFound):
            store.load(BOB, conversation.id)
    assert not _owner_dir(tmp_path, BOB).exists()
    assert store.move_all(BOB, ALICE) == 0


# -- crashes ----------------------------------------------------------------------------------


def test_killing_the_process_mid_save_never_loses_a_readable_conversation(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = REPO / "tests" / "storage_crash_worker.py"
    saves_seen = 0
    for _ in range(5):
        process = subprocess.Popen(
            [sys.executable, str(worker), str(tmp_path), ALICE],
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == b"saving\n"
            time.sleep(random.uniform(0.05, 0.5))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
        assert process.returncode == -signal.SIGKILL

        store = ConversationStore(tmp_path)
        listed = store.list(ALICE)
        assert listed.corrupt == []
        assert listed.conversations
        on_disk = sorted(p.stem for p in _owner_dir(tmp_path, ALICE).glob("*.json"))
        assert sorted(s.id for s in listed.conversations) == on_disk
        for summary in listed.conversations:
            conversation = store.load(ALICE, summary.id)
            assert summary.message_count == len(conversation.messages)
            assert summary.title == conversation.title
        assert _litter(tmp_path) == []
        saves_seen += sum(s.message_count for s in listed.conversations)
    assert saves_seen > 0


# -- titles -----------------------------------------------------------------------------------


def test_titles_come_from_the_first_line_of_the_first_message() -> None:
    assert auto_title("\n\n  How do I   center a div?\nI tried flexbox.") == (
        "How do I center a div?"
    )
    long = auto_title("Explain the difference between processes and threads in operating systems")
    assert long == "Explain the difference between processes and threads in…"
    assert len(long) <= 60
    assert auto_title("x" * 500) == "x" * 59 + "…"
    assert auto_title("\x00\x07 \u202eevil\t title") == "evil title"
    assert auto_title("   \n\t ") == NEW_CHAT_TITLE
    assert auto_title("") == NEW_CHAT_TITLE


def test_a_title_pasted_a_million_times_over_is_cut_to_size() -> None:
    assert len(clean_title("Holiday " * 1_000_000)) <= MAX_TITLE_CHARS
    assert clean_title("  My   trip\n") == "My trip"


# -- revisions: answers that end late, in another process or after a restart ------------------


def _question(store: ConversationStore, text: str = "What is a monad?") -> Conversation:
    """A turn's first save: the question alone."""
    conversation = store.new_conversation("openai/gpt-4o", "", 0.3)
    return store.save(ALICE, replace(conversation, messages=(ChatMessage("user", text),)))


def _answered(question: Conversation) -> Conversation:
    meta = AnswerMeta(model="openai/gpt-4o", status="complete")
    return replace(
        question, messages=(*question.messages, ChatMessage("assistant", "A", meta=meta))
    )


def test_an_answer_ending_after_a_delete_in_another_process_does_not_bring_the_chat_back(
    tmp_path: Path,
) -> None:
    tab, other_process = ConversationStore(tmp_path), ConversationStore(tmp_path)
    question = _question(tab)

    assert other_process.delete(ALICE, question.id)
    with pytest.raises(ConversationDeleted):
        tab.save(ALICE, _answered(question), expected=question)

    assert ConversationStore(tmp_path).list(ALICE).conversations == []
    with pytest.raises(ConversationNotFound):
        other_process.load(ALICE, question.id)


def test_an_answer_ending_after_a_rename_in_another_process_keeps_the_new_name(
    tmp_path: Path,
) -> None:
    tab, other_process = ConversationStore(tmp_path), ConversationStore(tmp_path)
    question = _question(tab)

    other_process.rename(ALICE, question.id, "Category theory")
    saved = tab.save(ALICE, _answered(question), expected=question)

    stored = ConversationStore(tmp_path).load(ALICE, question.id)
    assert stored == saved
    assert stored.title == "Category theory" and len(stored.messages) == 2
    assert stored.revision == question.revision + 2  # the rename, then the answer


def test_an_answer_ending_after_a_newer_turn_in_another_process_is_not_saved_over_it(
    tmp_path: Path,
) -> None:
    tab, other_process = ConversationStore(tmp_path), ConversationStore(tmp_path)
    question = _question(tab)
    newer = replace(question, messages=(*question.messages, ChatMessage("user", "and a functor?")))
    other_process.save(ALICE, newer, expected=question)

    with pytest.raises(ConversationChanged):
        tab.save(ALICE, _answered(question), expected=question)

    assert tab.load(ALICE, question.id).messages == newer.messages


def test_an_answer_ending_after_a_restart_is_saved_and_a_delete_still_holds(
    tmp_path: Path,
) -> None:
    kept, doomed = _question(ConversationStore(tmp_path)), _question(ConversationStore(tmp_path))
    restarted = ConversationStore(tmp_path)

    restarted.save(ALICE, _answered(kept), expected=kept)
    restarted.delete(ALICE, doomed.id)
    with pytest.raises(ConversationDeleted):
        ConversationStore(tmp_path).save(ALICE, _answered(doomed), expected=doomed)

    assert [s.id for s in ConversationStore(tmp_path).list(ALICE).conversations] == [kept.id]
    assert len(restarted.load(ALICE, kept.id).messages) == 2


def test_old_files_without_a_revision_read_as_revision_zero(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path)
    saved = _chat(store, ALICE, "from an older version")
    path = _owner_dir(tmp_path, ALICE) / f"{saved.id}.json"
    document = orjson.loads(path.read_bytes())
    del document["revision"]
    path.write_bytes(orjson.dumps(document))

    assert store.load(ALICE, saved.id) == replace(saved, revision=0)


def test_a_chats_options_and_an_answers_sources_are_kept_and_old_files_read_as_defaults(
    tmp_path: Path,
) -> None:
    store = ConversationStore(tmp_path)
    chat = _chat(store, ALICE, "Who won yesterday?")
    answer = chat.messages[1]
    assert answer.meta is not None
    cited = (Source("https://news.example/match", "Match report"), Source("ftp://odd.example"))
    searched = replace(
        chat,
        messages=(chat.messages[0], replace(answer, meta=replace(answer.meta, sources=cited))),
        options=AnswerOptions(web_search=True, reasoning_effort="low", max_tokens=800),
    )
    saved = store.save(ALICE, searched, expected=chat)

    reopened = ConversationStore(tmp_path).load(ALICE, saved.id)
    assert reopened == saved and reopened.options == searched.options
    assert reopened.messages[1].meta is not None and reopened.messages[1].meta.sources == cited

    path = _owner_dir(tmp_path, ALICE) / f"{saved.id}.json"
    document = orjson.loads(path.read_bytes())
    del document["options"]  # as an older version of the app wrote it
    path.write_bytes(orjson.dumps(document))
    assert store.load(ALICE, saved.id) == replace(saved, options=AnswerOptions())


def test_a_write_waits_for_another_process_holding_the_owners_lock(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path)
    question = _question(store)
    # flock() excludes every other open of the file, so this stands for another process.
    other_process = os.open(_owner_dir(tmp_path, ALICE) / ".lock", os.O_RDWR)
    fcntl.flock(other_process, fcntl.LOCK_EX)
    saving = threading.Thread(target=store.save, args=(ALICE, _answered(question)))
    try:
        saving.start()
        saving.join(timeout=0.3)
        assert saving.is_alive()  # still waiting for the other process
        assert len(store.load(ALICE, question.id).messages) == 1
    finally:
        os.close(other_process)  # releases the lock
    saving.join(timeout=10)
    assert not saving.is_alive()
    assert len(store.load(ALICE, question.id).messages) == 2


def test_a_questions_files_are_kept_with_it_in_the_file_store(store: ConversationStore) -> None:
    from tests.test_attachment_store import DOCUMENT, PICTURE

    chat = store.new_conversation("openai/gpt-4o", "", 0.3)
    question = ChatMessage("user", "Compare", attachments=(PICTURE.ref, DOCUMENT.ref))
    saved = store.save(ALICE, replace(chat, messages=(question,)))

    reopened = store.load(ALICE, saved.id)

    assert reopened.messages[0].attachments == (PICTURE.ref, DOCUMENT.ref)
