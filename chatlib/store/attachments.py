"""Attached files in SQL, beside the conversations: once per owner and content, private.

A message refers to a file by the SHA-256 of its bytes (`AttachmentRef`); the bytes are stored
here once per owner, so the same picture attached twice, or carried by an edited question's
other version, costs its size once. Every statement names the owner in its WHERE clause: a
hash another visitor has reads exactly like one nobody has (AttachmentNotFound).

Files are swept by `delete_unused` once no message of their owner (active or another version)
refers to them any more: when a chat is deleted, and for every owner on the retention
sweeper's timer (`unused_files_sweep`), so a file uploaded but never sent goes too. A file
stored within the last `grace_seconds` is never swept: it may belong to a question being
sent right now, stored before the message that refers to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import orjson
import structlog
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatlib.attachments import Attachment, AttachmentLimits, AttachmentRef, AttachmentRejected
from chatlib.errors import AttachmentNotFound, StorageError
from chatlib.storage import is_valid_owner_key
from chatlib.store.engine import create_engine_for, write_transaction
from chatlib.store.failures import DATABASE_ERRORS, error_code, problem
from chatlib.store.schema import attachments, conversations, messages

__all__ = [
    "ATTACHMENTS_DIR",
    "FILE_SUFFIXES",
    "UNUSED_GRACE_SECONDS",
    "SqlAttachmentStore",
    "file_name",
    "parse_file_name",
    "referenced_hashes",
    "unused_files_sweep",
]

UNUSED_GRACE_SECONDS = 3600.0
_HASH_CHARS = 64
# Files as the dataset sync keeps them: attachments/<owner_key>/<sha256>.<suffix>.
ATTACHMENTS_DIR = "attachments"
FILE_SUFFIXES: Final[dict[str, str]] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "application/pdf": "pdf",
    "text/plain": "txt",
}
_MIME_OF_SUFFIX: Final = {suffix: mime for mime, suffix in FILE_SUFFIXES.items()}


def file_name(sha256: str, mime: str) -> str:
    """The file's name in a folder of files: `<sha256>.<suffix>` (`.bin` for an unknown type)."""
    return f"{sha256}.{FILE_SUFFIXES.get(mime, 'bin')}"


def parse_file_name(name: str) -> tuple[str, str] | None:
    """(sha256, MIME type) of a `file_name`, or None for any other name."""
    sha256, dot, suffix = name.partition(".")
    mime = _MIME_OF_SUFFIX.get(suffix)
    if not dot or mime is None or not _is_hash(sha256):
        return None
    return sha256, mime


class _Log(Protocol):
    def warning(self, event: str, **fields: Any) -> Any: ...

    def info(self, event: str, **fields: Any) -> Any: ...


def _require_owner_key(owner_key: str) -> None:
    if not is_valid_owner_key(owner_key):
        raise ValueError("owner_key must be 32 lowercase hex characters (see identity.owner_key)")


def _is_hash(value: str) -> bool:
    return len(value) == _HASH_CHARS and all(c in "0123456789abcdef" for c in value)


class SqlAttachmentStore:
    """Every owner's attached files, in the conversation store's database."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        grace_seconds: float = UNUSED_GRACE_SECONDS,
        max_file_bytes: int = AttachmentLimits.max_file_bytes,
        log: _Log | None = None,
    ) -> None:
        self._engine = engine
        self.max_file_bytes = max_file_bytes  # MAX_ATTACHMENT_BYTES: what put and imports take
        self._clock = clock
        self._grace_seconds = grace_seconds
        self._log: _Log = log if log is not None else structlog.get_logger(__name__)

    async def put(self, owner_key: str, attachment: Attachment) -> AttachmentRef:
        """Store the file for `owner_key` (once: the same bytes again only refresh its date).

        AttachmentRejected past `max_file_bytes`; ValueError when the reference does not
        describe the bytes (a caller's bug: `prepare` makes both); StorageError when the
        database refuses.
        """
        _require_owner_key(owner_key)
        ref, data = attachment.ref, attachment.data
        if len(data) > self.max_file_bytes:
            raise AttachmentRejected(
                f"{ref.name} is larger than this server's limit of {self.max_file_bytes:,} bytes."
            )
        # Hashing megabytes takes milliseconds: off the loop (hashlib lets go of the GIL).
        digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        if digest != ref.sha256 or ref.size != len(data):
            raise ValueError("the attachment's sha256 and size must be those of its bytes")
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(attachments).values(
            owner_key=owner_key,
            sha256=ref.sha256,
            mime=ref.mime,
            size=len(data),
            data=data,
            created_at=self._clock(),
        )
        statement = statement.on_conflict_do_update(
            index_elements=[attachments.c.owner_key, attachments.c.sha256],
            set_={"created_at": statement.excluded.created_at},
        )
        try:
            async with write_transaction(self._engine) as connection:
                await connection.execute(statement)
        except DATABASE_ERRORS as exc:
            raise self._failed(exc, "store", owner_key) from exc
        return ref

    async def get(self, owner_key: str, sha256: str) -> bytes:
        """The bytes of the owner's file; AttachmentNotFound for any other hash."""
        _require_owner_key(owner_key)
        if not _is_hash(sha256):
            raise AttachmentNotFound()
        statement = select(attachments.c.data).where(
            attachments.c.owner_key == owner_key, attachments.c.sha256 == sha256
        )
        try:
            async with self._engine.connect() as connection:
                data = (await connection.execute(statement)).scalar_one_or_none()
        except DATABASE_ERRORS as exc:
            raise self._failed(exc, "read", owner_key) from exc
        if data is None:
            raise AttachmentNotFound()
        return bytes(data)

    async def hashes(self, owner_key: str) -> set[str]:
        """The hashes of every file the owner has stored (no bytes are read)."""
        _require_owner_key(owner_key)
        statement = select(attachments.c.sha256).where(attachments.c.owner_key == owner_key)
        try:
            async with self._engine.connect() as connection:
                return set((await connection.execute(statement)).scalars())
        except DATABASE_ERRORS as exc:
            raise self._failed(exc, "read", owner_key) from exc

    async def delete_unused(self, owner_key: str) -> int:
        """Delete the owner's files no message refers to any more; returns how many.

        Files stored within the grace period are kept (see the module docstring). One write
        transaction: on SQLite no save can slip in between reading references and deleting.
        """
        _require_owner_key(owner_key)
        stored_before = self._clock() - self._grace_seconds
        try:
            async with write_transaction(self._engine) as connection:
                used = await referenced_hashes(connection, owner_key)
                candidates = (
                    await connection.execute(
                        select(attachments.c.sha256).where(
                            attachments.c.owner_key == owner_key,
                            attachments.c.created_at < stored_before,
                        )
                    )
                ).scalars()
                unused = sorted(set(candidates) - used)
                for start in range(0, len(unused), 500):
                    await connection.execute(
                        delete(attachments).where(
                            attachments.c.owner_key == owner_key,
                            attachments.c.sha256.in_(unused[start : start + 500]),
                        )
                    )
        except DATABASE_ERRORS as exc:
            raise self._failed(exc, "delete", owner_key) from exc
        if unused:
            self._log.info("attachments.swept", owner_key=owner_key, deleted=len(unused))
        return len(unused)

    async def delete_unused_everywhere(self) -> int:
        """`delete_unused` for every owner with a file older than the grace; how many went."""
        stored_before = self._clock() - self._grace_seconds
        statement = (
            select(attachments.c.owner_key)
            .where(attachments.c.created_at < stored_before)
            .distinct()
        )
        try:
            async with self._engine.connect() as connection:
                owners = sorted((await connection.execute(statement)).scalars())
        except DATABASE_ERRORS as exc:
            raise self._failed(exc, "delete", "*") from exc
        deleted = 0
        for owner_key in owners:
            if is_valid_owner_key(owner_key):
                deleted += await self.delete_unused(owner_key)
        return deleted

    def _failed(self, exc: Exception, doing: str, owner_key: str) -> StorageError:
        # The driver's message may quote parameters (the file's bytes): log its type only.
        self._log.warning(
            f"attachments.{doing}_failed",
            owner_key=owner_key,
            reason=type(getattr(exc, "orig", None) or exc).__name__,
            code=error_code(exc),
        )
        if doing == "read":
            return StorageError(f"Could not read the file: {problem(exc)}. Try again later.")
        if doing == "delete":
            return StorageError(f"Could not tidy up unused files: {problem(exc)}.")
        return StorageError(f"Could not store the file: {problem(exc)}. Try again later.")


async def referenced_hashes(connection: AsyncConnection, owner_key: str) -> set[str]:
    """Hashes of the files the owner's messages refer to, active or other versions."""
    active = await connection.execute(
        select(messages.c.attachments)
        .select_from(messages.join(conversations))
        .where(conversations.c.owner_key == owner_key, messages.c.attachments.is_not(None))
    )
    used = _hashes_in(orjson.loads(text) for text in active.scalars())
    # Other versions live in `branches`; only documents that mention a file are parsed.
    inactive = await connection.execute(
        select(conversations.c.branches).where(
            conversations.c.owner_key == owner_key,
            conversations.c.branches.contains('"attachments"'),
        )
    )
    for text in inactive.scalars():
        nodes = orjson.loads(text)
        used |= _hashes_in(n.get("attachments") for n in nodes if isinstance(n, dict))
    return used


def _hashes_in(lists: Iterable[object]) -> set[str]:
    """The `sha256` of every reference in some lists of reference dicts (None: no list)."""
    found: set[str] = set()
    for refs in lists:
        if not isinstance(refs, list):
            continue
        found.update(r["sha256"] for r in refs if isinstance(r, dict) and "sha256" in r)
    return found


async def insert_file(
    connection: AsyncConnection, owner_key: str, sha256: str, mime: str, data: bytes, now: float
) -> bool:
    """Insert one file as it is (a restore); False if the owner has it already."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    result = await connection.execute(
        dialect.insert(attachments)
        .values(
            owner_key=owner_key,
            sha256=sha256,
            mime=mime,
            size=len(data),
            data=data,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=[attachments.c.owner_key, attachments.c.sha256])
    )
    return result.rowcount > 0


def unused_files_sweep(
    url: str, *, grace_seconds: float = UNUSED_GRACE_SECONDS
) -> Callable[[float], int]:
    """A job for `chatlib.retention.RetentionSweeper`: every owner's unused files, deleted.

    The sweeper calls it from its own thread with the sweep's time; each call opens an engine
    of its own on an event loop of its own, so the serving engine's connections stay on the
    server's loop (as `services._prepared_database` does at startup).
    """

    async def sweep_at(now: float) -> int:
        engine = create_engine_for(url)
        try:
            store = SqlAttachmentStore(engine, clock=lambda: now, grace_seconds=grace_seconds)
            return await store.delete_unused_everywhere()
        finally:
            await engine.dispose()

    def unused_attachments(now: float) -> int:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the sweeper's own thread: no loop here
            return asyncio.run(sweep_at(now))
        # Called on a thread that runs a loop (asyncio.run would refuse): a thread of its own.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, sweep_at(now)).result()

    return unused_attachments
