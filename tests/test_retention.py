"""Exports, uploads and unused attached files are gone an hour after they were made."""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import secrets
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from chatlib.attachments import Attachment, AttachmentRef
from chatlib.branches import BranchNode
from chatlib.messages import AnswerMeta, ChatMessage
from chatlib.retention import RetentionSweeper, ensure_private_dir, sweep
from chatlib.services import create_services
from chatlib.store import SqlAttachmentStore, open_store
from chatlib.store.attachments import unused_files_sweep
from tests.clocks import FakeClock
from tests.conftest import settings_for
from tests.fakes.openrouter import FakeOpenRouter
from tests.pg_server import postgres_server, postgres_url  # noqa: F401
from tests.turns import each_database

HOUR = 3600.0
NOW = 1_800_000_000.0


def made(path: Path, age_seconds: float, data: bytes = b"private text") -> Path:
    """A file written `age_seconds` before NOW (its parent directory too, if it is new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = NOW - age_seconds
    os.utime(path, (when, when))
    os.utime(path.parent, (when, when))
    return path


def an_export(exports: Path, age_seconds: float) -> Path:
    """One export as the app writes it: a random folder holding a readable file name."""
    return made(exports / secrets.token_hex(8) / "conversations-2026-12-03.json", age_seconds)


def test_exports_older_than_an_hour_are_deleted_and_younger_ones_stay(tmp_path: Path) -> None:
    exports, uploads = tmp_path / "exports", tmp_path / "gradio"
    old_export = an_export(exports, HOUR + 1)
    new_export = an_export(exports, HOUR - 60)
    old_upload = made(uploads / "c0ffee" / "import.json", 2 * HOUR)
    loose_file = made(uploads / "loose.bin", 3 * HOUR)

    removed = sweep([exports, uploads, tmp_path / "missing"], max_age_seconds=HOUR, now=NOW)

    assert removed == 3
    assert not old_export.exists() and not old_export.parent.exists()
    assert not old_upload.parent.exists() and not loose_file.exists()
    assert new_export.read_bytes() == b"private text"
    assert exports.is_dir() and uploads.is_dir()  # the folders themselves stay


def test_a_folder_still_being_written_to_is_kept(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    folder = an_export(exports, 2 * HOUR).parent
    fresh = folder / "second-file.md"
    fresh.write_text("written just now")
    os.utime(fresh, (NOW - 5, NOW - 5))
    os.utime(folder, (NOW - 2 * HOUR, NOW - 2 * HOUR))
    assert sweep([exports], max_age_seconds=HOUR, now=NOW) == 0
    assert fresh.exists()


def test_symlinks_are_removed_as_links_and_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    precious = made(outside / "keep.txt", 10 * HOUR)
    exports = tmp_path / "exports"
    folder = an_export(exports, 2 * HOUR).parent
    (folder / "link-to-outside").symlink_to(outside, target_is_directory=True)
    os.utime(folder / "link-to-outside", (NOW - 2 * HOUR,) * 2, follow_symlinks=False)
    os.utime(folder, (NOW - 2 * HOUR, NOW - 2 * HOUR))
    top_link = exports / "top-link"
    top_link.symlink_to(outside, target_is_directory=True)
    os.utime(top_link, (NOW - 2 * HOUR,) * 2, follow_symlinks=False)

    assert sweep([exports], max_age_seconds=HOUR, now=NOW) == 2

    assert precious.read_bytes() == b"private text"
    assert not folder.exists() and not top_link.is_symlink()


def test_an_entry_that_cannot_be_removed_does_not_stop_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = tmp_path / "exports"
    first, second = an_export(exports, 2 * HOUR), an_export(exports, 2 * HOUR)
    real_rmtree = shutil.rmtree
    calls: list[str] = []

    def racing_rmtree(path: str) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise FileNotFoundError(path)  # another replica's sweep got there first
        real_rmtree(path)

    monkeypatch.setattr("chatlib.retention.shutil.rmtree", racing_rmtree)
    assert sweep([exports], max_age_seconds=HOUR, now=NOW) == 1
    assert len(calls) == 2
    assert first.exists() != second.exists()


class Steps:
    """A sweeper's `wait`: each pause reports itself and waits for the test to go on."""

    def __init__(self) -> None:
        self.paused: queue.Queue[float] = queue.Queue()
        self.go: queue.Queue[bool] = queue.Queue()

    def __call__(self, seconds: float) -> None:
        self.paused.put(seconds)
        self.go.get(timeout=10)

    def next_sweep(self) -> None:
        """Let the sweeper run one more sweep, and wait until it has."""
        self.go.put(True)
        assert self.paused.get(timeout=10) == 300.0


def test_the_sweeper_deletes_old_exports_on_its_own_timer(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    clock = [NOW]
    steps = Steps()
    sweeper = RetentionSweeper(
        [exports], max_age_seconds=HOUR, interval_seconds=300, clock=lambda: clock[0], wait=steps
    )
    export = an_export(exports, 0)  # exported just now; nobody exports again
    sweeper.start()
    try:
        assert steps.paused.get(timeout=10) == 300.0  # the sweep at startup
        assert export.exists()
        clock[0] += HOUR - 1
        steps.next_sweep()
        assert export.exists()  # 59 min 59 s: still there
        clock[0] += 301
        steps.next_sweep()
        assert not export.exists() and not export.parent.exists()
        assert sweeper.removed == 1 and sweeper.sweeps == 3
        assert sweeper.running
    finally:
        sweeper.stop(timeout=0)
        steps.go.put(True)
    assert not sweeper.running


def test_stopping_ends_the_thread_at_once(tmp_path: Path) -> None:
    sweeper = RetentionSweeper([tmp_path], interval_seconds=3600)
    sweeper.start()
    sweeper.start()  # idempotent
    assert sweeper.running
    sweeper.stop()
    assert not sweeper.running
    assert sweeper.sweeps == 1


def test_a_sweep_that_fails_unexpectedly_does_not_kill_the_sweeper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = Steps()
    sweeper = RetentionSweeper([tmp_path], interval_seconds=300, wait=steps)

    def broken(*_args: object, **_kwargs: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr("chatlib.retention.sweep", broken)
    sweeper.start()
    try:
        assert steps.paused.get(timeout=10) == 300.0
        steps.next_sweep()
        assert sweeper.running
    finally:
        sweeper.stop(timeout=0)
        steps.go.put(True)


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        RetentionSweeper([tmp_path], max_age_seconds=0)
    with pytest.raises(ValueError):
        RetentionSweeper([tmp_path], interval_seconds=-1)


def test_a_private_folder_is_made_for_downloads(tmp_path: Path) -> None:
    folder = ensure_private_dir(tmp_path / "data" / "downloads")
    assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700


# -- attached files nothing uses --------------------------------------------------------

ALICE = "a1" * 16
BOB = "b2" * 16


def a_file(text: str) -> Attachment:
    """A small text file as `chatlib.attachments.prepare` hands it over."""
    data = text.encode()
    ref = AttachmentRef(
        hashlib.sha256(data).hexdigest(), f"{text}.txt", "text/plain", len(data), "text"
    )
    return Attachment(ref=ref, data=data)


ASKED_WITH, OLD_VERSION, NEVER_SENT, BOBS_LEFTOVER, JUST_UPLOADED = (
    a_file(name) for name in ("asked", "old-version", "never-sent", "bobs", "just-uploaded")
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return each_database(request, tmp_path)


async def test_the_sweeper_deletes_attached_files_no_message_uses_once_they_are_an_hour_old(
    database: str, tmp_path: Path
) -> None:
    url = database
    store = await open_store(url, data_dir=None, clock=FakeClock())
    clock = [NOW]
    files = SqlAttachmentStore(store.engine, clock=lambda: clock[0])
    steps = Steps()
    sweeper = RetentionSweeper(
        [tmp_path / "exports"],
        interval_seconds=300,
        clock=lambda: clock[0],
        wait=steps,
        jobs=[unused_files_sweep(url)],
    )
    try:
        for file in (ASKED_WITH, OLD_VERSION, NEVER_SENT):
            await files.put(ALICE, file)
        await files.put(BOB, BOBS_LEFTOVER)
        # Alice asked with one file; an earlier version of her question (edited since) had another.
        chat = store.new_conversation("openai/gpt-4o", "", 0.3)
        question = ChatMessage("user", "Look", attachments=(ASKED_WITH.ref,))
        answer = ChatMessage("assistant", "Nice.", meta=AnswerMeta("openai/gpt-4o", "complete"))
        chat = await store.save(ALICE, replace(chat, messages=(question, answer)))
        first_try = ChatMessage("user", "Look?", id="0123456789ab", attachments=(OLD_VERSION.ref,))
        await store.save(
            ALICE, replace(chat, branches=(BranchNode(None, first_try),)), expected=chat
        )
        clock[0] += HOUR + 1
        await files.put(ALICE, JUST_UPLOADED)  # on a question being sent right now

        sweeper.start()
        await asyncio.to_thread(steps.paused.get, timeout=30)  # the sweep at startup

        assert sweeper.removed == 2  # the file never sent, and Bob's
        assert await files.hashes(BOB) == set()
        kept = {ASKED_WITH.ref.sha256, OLD_VERSION.ref.sha256, JUST_UPLOADED.ref.sha256}
        assert await files.hashes(ALICE) == kept
        clock[0] += HOUR + 1  # nothing came to use the last upload
        await asyncio.to_thread(steps.next_sweep)
        assert await files.hashes(ALICE) == kept - {JUST_UPLOADED.ref.sha256}
        assert await files.get(ALICE, OLD_VERSION.ref.sha256) == OLD_VERSION.data
    finally:
        sweeper.stop(timeout=0)
        steps.go.put(True)
        await store.aclose()


def test_a_job_that_fails_is_skipped_and_the_folders_are_still_swept(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    export = an_export(exports, 2 * HOUR)

    def database_down(_now: float) -> int:
        raise OSError("the database is not answering")

    sweeper = RetentionSweeper([exports], clock=lambda: NOW, jobs=[database_down, lambda _now: 2])

    assert sweeper.sweep_once() == 3
    assert not export.exists()


async def test_the_app_sweeps_unused_attached_files_on_its_retention_timer(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    settings = settings_for(fake, tmp_path, DATA_DIR=str(tmp_path / "data"))
    services = await asyncio.to_thread(create_services, settings)
    try:
        await services.attachments.put(ALICE, NEVER_SENT)
        jobs = services.retention.jobs  # the store dated the file by the real clock
        assert [await asyncio.to_thread(job, time.time() + 60) for job in jobs] == [0]
        assert await services.attachments.hashes(ALICE) == {NEVER_SENT.ref.sha256}
        assert [await asyncio.to_thread(job, time.time() + HOUR + 1) for job in jobs] == [1]
        assert await services.attachments.hashes(ALICE) == set()
    finally:
        await services.aclose()
