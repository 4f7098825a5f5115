"""One-time import of a data folder of JSON conversation files (the file store's layout).

`DATA_DIR/conversations/<owner_key>/<conversation_id>.json` files are read by the file
store's own reader (`ConversationStore.load`: the one decode path) and inserted as they are:
ids, titles, dates, revisions and every message with its metadata. A damaged file is
logged, counted and skipped. Attached files,
`DATA_DIR/attachments/<owner_key>/<sha256>.<suffix>` (what the dataset sync restores), are
inserted for their owner when their bytes have that hash and are of that type; others are
skipped the same way. The files are left untouched, and a row in `store_meta` remembers
the import so it never runs twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import structlog
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from chatlib.attachments import sniff
from chatlib.errors import StorageError
from chatlib.storage import (
    CONVERSATIONS_DIR,
    Conversation,
    ConversationStore,
    is_valid_conversation_id,
    is_valid_owner_key,
)
from chatlib.store.attachments import ATTACHMENTS_DIR, insert_file, parse_file_name
from chatlib.store.engine import startup_lock
from chatlib.store.schema import conversations, store_meta
from chatlib.store.sql import SqlConversationStore, insert_conversation, storable

log = structlog.get_logger(__name__)

IMPORT_MARKER = "json_import"
_BATCH = 200  # files read per worker-thread hop


@dataclass(frozen=True)
class ImportReport:
    """What one import did; `already_done`: an earlier startup imported, nothing was read."""

    imported: int = 0
    skipped: int = 0  # damaged or unreadable files
    already_present: int = 0  # ids this owner already had in the database
    owners: int = 0
    files: int = 0  # attached files inserted
    files_skipped: int = 0  # damaged: not of the hash or type their name says
    already_done: bool = False


async def import_json_directory(store: SqlConversationStore, data_dir: Path) -> ImportReport:
    """Import `data_dir`'s conversation files once; later calls return `already_done`.

    Holds the startup lock throughout, so of several processes one imports and the others
    then find the marker. A damaged file is skipped; a database failure is raised as is.
    """
    async with startup_lock(store.engine) as connection:
        done = await connection.execute(
            select(store_meta.c.value).where(store_meta.c.key == IMPORT_MARKER)
        )
        if done.first() is not None:
            return ImportReport(already_done=True)
        report = await _import_all(connection, Path(data_dir))
        files, files_skipped = await _import_files(connection, Path(data_dir) / ATTACHMENTS_DIR)
        report = replace(report, files=files, files_skipped=files_skipped)
        record: dict[str, Any] = {**asdict(report), "finished_at": time.time()}
        await connection.execute(
            insert(store_meta).values(key=IMPORT_MARKER, value=orjson.dumps(record).decode())
        )
    log.info("store.json_imported", **asdict(report))
    return report


async def _import_all(connection: AsyncConnection, data_dir: Path) -> ImportReport:
    """Every owner's files, inserted on `connection`; the counts."""
    root = data_dir / CONVERSATIONS_DIR
    reader = ConversationStore(data_dir, log=log)
    totals = ImportReport()
    for owner_key, ids in await asyncio.to_thread(_owners_and_ids, root):
        imported = skipped = present = 0
        for start in range(0, len(ids), _BATCH):
            batch = await asyncio.to_thread(
                _read_batch, reader, owner_key, ids[start : start + _BATCH]
            )
            for conversation_id, conversation in batch:
                if conversation is None:
                    skipped += 1
                    log.warning(
                        "store.import_skipped", owner_key=owner_key, conversation_id=conversation_id
                    )
                elif await _insert(connection, owner_key, conversation):
                    imported += 1
                else:
                    present += 1
        totals = ImportReport(
            imported=totals.imported + imported,
            skipped=totals.skipped + skipped,
            already_present=totals.already_present + present,
            owners=totals.owners + 1,
        )
    return totals


async def _import_files(connection: AsyncConnection, root: Path) -> tuple[int, int]:
    """Insert every owner's attached files that are what their names say; (inserted, skipped)."""
    inserted = skipped = 0
    now = time.time()
    for owner_key, names in await asyncio.to_thread(_owners_and_files, root):
        for start in range(0, len(names), _BATCH):
            batch = await asyncio.to_thread(
                _read_files, root / owner_key, names[start : start + _BATCH]
            )
            for name, checked in batch:
                if checked is None:
                    skipped += 1
                    log.warning("store.import_file_skipped", owner_key=owner_key, name=name)
                elif await insert_file(connection, owner_key, *checked, now):
                    inserted += 1
    return inserted, skipped


def _owners_and_files(root: Path) -> list[tuple[str, list[str]]]:
    """(owner key, file names) per owner folder of attached files."""
    found: list[tuple[str, list[str]]] = []
    try:
        owners = sorted(e.name for e in os.scandir(root) if is_valid_owner_key(e.name))
    except OSError:  # none yet (or unreadable: logged by nobody, nothing to import)
        return []
    for owner_key in owners:
        try:
            names = sorted(n for n in os.listdir(root / owner_key) if parse_file_name(n))
        except OSError:
            continue
        found.append((owner_key, names))
    return found


def _read_files(
    directory: Path, names: list[str]
) -> list[tuple[str, tuple[str, str, bytes] | None]]:
    """(name, (sha256, mime, bytes)) when the bytes are what the name says, else None."""
    read: list[tuple[str, tuple[str, str, bytes] | None]] = []
    for name in names:
        sha256, mime = parse_file_name(name) or ("", "")
        try:
            data = (directory / name).read_bytes()
        except OSError:
            read.append((name, None))
            continue
        sniffed = sniff(data)
        if hashlib.sha256(data).hexdigest() != sha256 or sniffed is None or sniffed[1] != mime:
            read.append((name, None))
        else:
            read.append((name, (sha256, mime, data)))
    return read


def _owners_and_ids(root: Path) -> list[tuple[str, list[str]]]:
    """(owner key, conversation ids) per owner folder; other names are not ours and ignored."""
    found: list[tuple[str, list[str]]] = []
    try:
        owners = sorted(
            (e for e in os.scandir(root) if is_valid_owner_key(e.name)), key=lambda e: e.name
        )
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("store.import_unreadable_folder", errno=exc.errno)
        return []
    for owner in owners:
        try:
            names = sorted(os.listdir(owner.path))
        except OSError as exc:  # not a folder, or unreadable: skip this owner
            log.warning("store.import_unreadable_folder", owner_key=owner.name, errno=exc.errno)
            continue
        ids = [n[: -len(".json")] for n in names if n.endswith(".json")]
        found.append((owner.name, [i for i in ids if is_valid_conversation_id(i)]))
    return found


def _read_batch(
    reader: ConversationStore, owner_key: str, ids: list[str]
) -> list[tuple[str, Conversation | None]]:
    """Read files through the file store's reader; None for a damaged or vanished one."""
    read: list[tuple[str, Conversation | None]] = []
    for conversation_id in ids:
        try:
            read.append((conversation_id, reader.load(owner_key, conversation_id)))
        except StorageError:  # damaged (logged by the reader), gone, or unreadable
            read.append((conversation_id, None))
    return read


async def _insert(connection: AsyncConnection, owner_key: str, conversation: Conversation) -> bool:
    """Insert as it is; False if this owner has it already (another owner's id: a new id)."""
    conversation = storable(conversation)
    if await insert_conversation(connection, owner_key, conversation):
        return True
    mine = await connection.execute(
        select(conversations.c.id).where(
            conversations.c.id == conversation.id, conversations.c.owner_key == owner_key
        )
    )
    if mine.first() is not None:
        return False
    return await insert_conversation(
        connection, owner_key, replace(conversation, id=uuid.uuid4().hex)
    )
