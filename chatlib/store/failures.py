"""Database failures as the messages a visitor can act on (the same as the file store's)."""

from __future__ import annotations

import sqlite3
from typing import Literal

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from chatlib.errors import StorageError, StorageUnavailable

Doing = Literal["save", "read", "delete", "move"]
# What a database call can raise: SQLAlchemy's errors, and OSError from a driver's connect
# (a refused or timed-out connection is not translated to a DBAPI error).
DATABASE_ERRORS = (SQLAlchemyError, OSError)

# PostgreSQL SQLSTATEs: disk full, out of memory / resources, read-only, no privilege.
_PG_DISK_FULL = {"53100", "53000"}
_PG_READ_ONLY = {"25006", "42501"}
_SQLITE_FULL = {sqlite3.SQLITE_FULL}
_SQLITE_READ_ONLY = {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN}


def _codes(exc: BaseException) -> tuple[int | None, str | None]:
    """(SQLite's primary result code, PostgreSQL's SQLSTATE) of a driver error, when known."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return (
        sqlite_code & 0xFF if isinstance(sqlite_code, int) else None,
        sqlstate if isinstance(sqlstate, str) else None,
    )


def error_code(exc: BaseException) -> str | None:
    """The engine's code for a log line: "sqlite:13" (full), "pg:25006" (read-only)..."""
    sqlite_code, sqlstate = _codes(exc)
    if sqlite_code is not None:
        return f"sqlite:{sqlite_code}"
    return None if sqlstate is None else f"pg:{sqlstate}"


def problem(exc: BaseException) -> str:
    """What went wrong, in the words the file store used."""
    sqlite_code, sqlstate = _codes(exc)
    if sqlite_code in _SQLITE_FULL or sqlstate in _PG_DISK_FULL:
        return "the disk is full"
    if sqlite_code in _SQLITE_READ_ONLY:
        return "the server's data folder is read-only (the operator should check DATA_DIR)"
    if sqlstate in _PG_READ_ONLY:
        return "the server's database is read-only (the operator should check DATABASE_URL)"
    if sqlite_code == sqlite3.SQLITE_BUSY:
        return "the database is busy"
    return f"a storage error occurred ({type(exc).__name__})"


def storage_error(exc: Exception, doing: Doing) -> StorageError:
    """The StorageError to raise for a database failure while `doing` something."""
    if doing == "read":
        # A chat open on a page goes on from memory (ConversationService._load_for_turn).
        return StorageUnavailable()
    if doing == "save":
        return StorageError(
            f"Could not save the conversation: {problem(exc)}. "
            "Your chat continues but is not stored."
        )
    if doing == "delete":
        return StorageError(f"Could not delete the conversation: {problem(exc)}. Try again later.")
    return StorageError(
        f"Could not move your conversations: {problem(exc)}. "
        "They stay where they were. Try again later."
    )
