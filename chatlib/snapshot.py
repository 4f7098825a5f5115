"""The database's conversations as the per-conversation JSON files a dataset repo keeps.

On a Space the disk is wiped at every restart, so the SQLite database is not the durable
copy: the dataset repo is, and it holds `conversations/<owner_key>/<id>.json`, the file
store's format (the one `import` accepts and `chatlib.store.json_import` reads back into an
empty database at boot). Before each push, `write_snapshot` brings those files in line with
the database:

- conversations changed since the last snapshot (another revision, date or owner) are
  written, atomically, and only when their bytes differ (an unchanged file keeps its inode and
  mtime, so the sync does not upload it again);
- files of conversations that are gone from the database (deleted, or moved to another owner)
  are removed, so the sync deletes them from the repo and a restore never brings them back.

Attached files travel beside them as `attachments/<owner_key>/<sha256>.<suffix>` (see
`chatlib.store.attachments.file_name`): named by their content, so a file is written once
and never changes; files no longer in the database (swept as unused, or moved at login) are
removed like conversation files. The import at boot reads them back into the database.

A small state file remembers what each exported file holds (owner, revision, updated_at) and
which attached files were written, so a snapshot costs one listing of ids and revisions, one
of file hashes, and one read per changed conversation or new file.
Only files this module wrote are ever removed: anything else in the folder (a file the
import skipped as damaged) is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from chatlib.errors import AttachmentNotFound, ConversationCorrupt, ConversationNotFound
from chatlib.files import atomic_write
from chatlib.storage import (
    CONVERSATIONS_DIR,
    Conversation,
    conversation_file_bytes,
    is_valid_conversation_id,
    is_valid_owner_key,
)
from chatlib.store.attachments import (
    ATTACHMENTS_DIR,
    SqlAttachmentStore,
    file_name,
    parse_file_name,
)
from chatlib.store.engine import create_engine_for
from chatlib.store.schema import attachments, conversations
from chatlib.store.sql import SqlConversationStore

__all__ = [
    "SNAPSHOT_STATE_NAME",
    "SnapshotReport",
    "conversation_file_bytes",
    "snapshot_hook",
    "write_snapshot",
]

log = structlog.get_logger(__name__)

# Next to the database in DATA_DIR; never synced (the sync takes conversations/ and usage/).
SNAPSHOT_STATE_NAME: Final = "snapshot-state.json"
_STATE_VERSION = 1
_BATCH = 100  # conversations read per worker-thread hop for the writes

# What an exported file holds: (owner key, revision, updated_at).
_Entry = tuple[str, int, float]


@dataclass(frozen=True)
class SnapshotReport:
    """What one snapshot did."""

    conversations: int = 0  # in the database
    written: int = 0  # files created or replaced
    unchanged: int = 0  # changed in the database, but the file already held these bytes
    removed: int = 0  # files of deleted or moved conversations
    failed: int = 0  # unreadable rows: their files are left as they were, retried next time
    files: int = 0  # attached files in the database
    files_written: int = 0
    files_removed: int = 0


async def write_snapshot(
    store_or_engine: SqlConversationStore | AsyncEngine | str,
    data_dir: Path,
    state_path: Path,
) -> SnapshotReport:
    """Bring DATA_DIR/conversations/ in line with the database; O(changed) conversation reads.

    `store_or_engine` is the app's store or engine, or a database URL (then a short-lived
    engine is opened and closed here: see `snapshot_hook`). Raises StorageError (or the
    driver's error) when the database cannot be read; what was done so far is remembered.
    """
    if isinstance(store_or_engine, str):
        engine = create_engine_for(store_or_engine)
        try:
            return await _snapshot(SqlConversationStore(engine), Path(data_dir), state_path)
        finally:
            await engine.dispose()
    store = (
        store_or_engine
        if isinstance(store_or_engine, SqlConversationStore)
        else SqlConversationStore(store_or_engine)
    )
    return await _snapshot(store, Path(data_dir), state_path)


def snapshot_hook(
    url: str, data_dir: Path, state_path: Path | None = None
) -> Callable[[], SnapshotReport]:
    """A blocking snapshot for `HubSync(before_push=...)`, run on the sync's own thread.

    An async engine's connections belong to the event loop that opened them, so the hook
    does not borrow the app's: each call runs `asyncio.run` with its own engine on `url`,
    closed at the end. That also works during the shutdown flush, when the app's loop is
    stopped in a signal handler. A snapshot every few minutes makes the extra connect cheap.
    """
    state = state_path if state_path is not None else Path(data_dir) / SNAPSHOT_STATE_NAME

    def run() -> SnapshotReport:
        return asyncio.run(write_snapshot(url, data_dir, state))

    return run


async def _snapshot(
    store: SqlConversationStore, data_dir: Path, state_path: Path
) -> SnapshotReport:
    root = data_dir / CONVERSATIONS_DIR
    exported, exported_files = await asyncio.to_thread(_read_state, state_path)
    files_state = set(exported_files)
    listed = await _listing(store.engine)
    changed = [(cid, entry) for cid, entry in listed.items() if exported.get(cid) != entry]
    state = dict(exported)
    counts = {"written": 0, "unchanged": 0, "removed": 0, "failed": 0}
    try:
        for start in range(0, len(changed), _BATCH):
            batch = await _load(store, changed[start : start + _BATCH], counts)
            outcomes = await asyncio.to_thread(_write_files, root, batch)
            for (owner_key, conversation), outcome in zip(batch, outcomes, strict=True):
                counts[outcome] += 1
                before = state.get(conversation.id)
                state[conversation.id] = (owner_key, conversation.revision, conversation.updated_at)
                if before is not None and before[0] != owner_key:  # moved: the old file goes
                    counts["removed"] += await asyncio.to_thread(
                        _remove_files, root, [(before[0], conversation.id)]
                    )
        gone = [(entry[0], cid) for cid, entry in state.items() if cid not in listed]
        counts["removed"] += await asyncio.to_thread(_remove_files, root, gone)
        for _, cid in gone:
            del state[cid]
        counts.update(await _snapshot_files(store.engine, data_dir, files_state))
    finally:
        if state != exported or files_state != set(exported_files):
            await asyncio.to_thread(_write_state, state_path, state, files_state)
    report = SnapshotReport(conversations=len(listed), **counts)
    busy = report.written or report.removed or report.failed
    level = log.info if busy or report.files_written or report.files_removed else log.debug
    level("snapshot.written", **vars(report))
    return report


async def _listing(engine: AsyncEngine) -> dict[str, _Entry]:
    """(owner, revision, updated_at) of every conversation: the one query over all owners.

    This is the backup's view of the whole database, not a visitor's door: every read of a
    conversation itself goes through the store, with its owner.
    """
    statement = select(
        conversations.c.id,
        conversations.c.owner_key,
        conversations.c.revision,
        conversations.c.updated_at,
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    return {
        row.id: (row.owner_key, int(row.revision), float(row.updated_at))
        for row in rows
        if is_valid_conversation_id(row.id) and is_valid_owner_key(row.owner_key)
    }


async def _load(
    store: SqlConversationStore, changed: list[tuple[str, _Entry]], counts: dict[str, int]
) -> list[tuple[str, Conversation]]:
    """The changed conversations as stored now; gone ones are left to the deletion pass."""
    loaded: list[tuple[str, Conversation]] = []
    for conversation_id, (owner_key, _, _) in changed:
        try:
            loaded.append((owner_key, await store.load(owner_key, conversation_id)))
        except ConversationNotFound:
            continue  # deleted or moved since the listing: the next snapshot sees it
        except ConversationCorrupt:
            counts["failed"] += 1  # logged by the store; its file stays as it was
    return loaded


def _write_files(root: Path, batch: Iterable[tuple[str, Conversation]]) -> list[str]:
    """Write each conversation's file unless it already holds the same bytes."""
    outcomes: list[str] = []
    for owner_key, conversation in batch:
        directory = root / owner_key
        path = directory / f"{conversation.id}.json"
        data = conversation_file_bytes(conversation)
        try:
            if path.read_bytes() == data:
                outcomes.append("unchanged")
                continue
        except OSError:  # missing (or unreadable: replaced below)
            pass
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        atomic_write(path, data)
        outcomes.append("written")
    return outcomes


def _remove_files(root: Path, files: Iterable[tuple[str, str]]) -> int:
    """Remove conversations/<owner>/<id>.json files, and owner folders left empty."""
    removed = 0
    for owner_key, conversation_id in files:
        directory = root / owner_key
        try:
            os.unlink(directory / f"{conversation_id}.json")
            removed += 1
        except FileNotFoundError:
            pass
        with contextlib.suppress(OSError):  # not empty (or already gone): keep it
            directory.rmdir()
    return removed


def _read_state(path: Path) -> tuple[dict[str, _Entry], list[str]]:
    """What the exported files hold, and the attached files written (as paths under
    DATA_DIR); empty (export everything) if missing or unreadable."""
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}, []
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("snapshot.state_unreadable", error=type(exc).__name__)
        return {}, []
    entries: Any = document.get("conversations") if isinstance(document, dict) else None
    if not isinstance(entries, dict) or document.get("version") != _STATE_VERSION:
        log.warning("snapshot.state_unreadable", error="format")
        return {}, []
    files = document.get("attachments")
    written = [f for f in files if _is_file_path(f)] if isinstance(files, list) else []
    state: dict[str, _Entry] = {}
    for conversation_id, entry in entries.items():
        match entry:
            case [str(owner_key), int(revision), int() | float() as updated_at] if (
                is_valid_conversation_id(conversation_id) and is_valid_owner_key(owner_key)
            ):
                state[conversation_id] = (owner_key, revision, float(updated_at))
    return state, written


def _write_state(path: Path, state: dict[str, _Entry], files: set[str]) -> None:
    # `attachments` is a key older versions of this module do not read (same version).
    document = {"version": _STATE_VERSION, "conversations": state, "attachments": sorted(files)}
    atomic_write(path, orjson.dumps(document))


# -- attached files ----------------------------------------------------------------------------


def _is_file_path(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = value.split("/")
    return (
        len(parts) == 3
        and parts[0] == ATTACHMENTS_DIR
        and is_valid_owner_key(parts[1])
        and parse_file_name(parts[2]) is not None
    )


async def _snapshot_files(engine: AsyncEngine, data_dir: Path, written: set[str]) -> dict[str, int]:
    """Write the attached files the folder lacks, remove those gone from the database.

    `written` (the files this module wrote) is updated as it goes. Files are named by their
    content, so one that exists with the right size is taken to be right.
    """
    statement = select(
        attachments.c.owner_key, attachments.c.sha256, attachments.c.mime, attachments.c.size
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    wanted = {
        f"{ATTACHMENTS_DIR}/{row.owner_key}/{file_name(row.sha256, row.mime)}": row
        for row in rows
        if is_valid_owner_key(row.owner_key)
    }
    store = SqlAttachmentStore(engine)
    counts = {"files": len(wanted), "files_written": 0, "files_removed": 0}
    for relative, row in wanted.items():
        if await asyncio.to_thread(_has_size, data_dir / relative, row.size):
            written.add(relative)
            continue
        try:
            data = await store.get(row.owner_key, row.sha256)
        except AttachmentNotFound:
            continue  # swept since the listing: the next snapshot sees it gone
        await asyncio.to_thread(_write_file, data_dir / relative, data)
        written.add(relative)
        counts["files_written"] += 1
    gone = sorted(written - wanted.keys())
    counts["files_removed"] = await asyncio.to_thread(_remove_paths, data_dir, gone)
    written.difference_update(gone)
    return counts


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _write_file(path: Path, data: bytes) -> None:
    path.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    atomic_write(path, data)


def _remove_paths(data_dir: Path, relatives: Iterable[str]) -> int:
    """Remove attached files (paths under DATA_DIR) and owner folders left empty."""
    removed = 0
    for relative in relatives:
        path = data_dir / relative
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
        with contextlib.suppress(OSError):
            path.parent.rmdir()
    return removed
