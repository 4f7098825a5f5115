"""Atomic file writes (a crash leaves the old bytes or the new, never half) and safe JSON."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

Stamp = tuple[int, int, int]  # (inode, size, mtime_ns) of a file
TEMP_SUFFIX = ".tmp"


def _scrub_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _scrub_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_surrogates(v) for v in value]
    return value


def json_bytes(data: Any, option: int = 0) -> bytes:
    """orjson.dumps that never fails on text: lone surrogates (not UTF-8) become '?'."""
    try:
        return orjson.dumps(data, option=option)
    except orjson.JSONEncodeError:
        # Lone surrogates (possible in text that came through a browser) are not UTF-8.
        return orjson.dumps(_scrub_surrogates(data), option=option)


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_directory(directory: Path) -> None:
    """Make a rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> Stamp:
    """Replace `path` with `data` so readers see the old or the new bytes, never a mix.

    The temporary file lives next to the target (same filesystem) and is removed on any
    failure, leaving the previous file untouched. Files are created with mode 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
            stamp = stamp_of(os.fstat(fd))
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)
    return stamp
