"""Retention: files that hold private text are deleted once they are older than promised.

Exports (one random subdirectory per export), the download copies and Gradio's upload and
cache folders (one subdirectory per file) are swept on a timer, so an export is gone an
hour after it was made whether or not anyone exports again, and so are uploads no event
consumed. The same timer runs `jobs` for what is not a file here (attached files nothing
refers to any more, in the database: `chatlib.store.attachments.unused_files_sweep`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger(__name__)

# The README promises that an export is deleted after an hour.
DEFAULT_MAX_AGE_SECONDS: Final = 3600.0
# How often the sweeper looks: a file lives at most max age + this long.
DEFAULT_INTERVAL_SECONDS: Final = 300.0
# A sweep looks this deep into one entry for its newest change, then stops looking.
_MAX_WALK_ENTRIES = 1000

# A job the sweeper runs on every sweep besides its folders: given the sweep's wall-clock
# time, it deletes what has expired and returns how many things it deleted.
SweepJob = Callable[[float], int]


def _newest_mtime(entry: os.DirEntry[str], info: os.stat_result) -> float:
    """The latest modification in `entry` (a file, or a directory and what it holds)."""
    newest = info.st_mtime
    if not stat.S_ISDIR(info.st_mode):
        return newest
    seen = 0
    pending = [entry.path]
    while pending and seen < _MAX_WALK_ENTRIES:
        with os.scandir(pending.pop()) as inner:
            for child in inner:
                seen += 1
                child_info = child.stat(follow_symlinks=False)
                newest = max(newest, child_info.st_mtime)
                if stat.S_ISDIR(child_info.st_mode):
                    pending.append(child.path)
    return newest


def _remove(entry: os.DirEntry[str], info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        # rmtree never follows a symlink inside the tree: it removes the link itself.
        shutil.rmtree(entry.path)
    else:
        os.unlink(entry.path)  # a file, or a symlink (never its target)


def sweep(directories: Iterable[Path], *, max_age_seconds: float, now: float) -> int:
    """Delete every entry of `directories` last changed more than `max_age_seconds` ago.

    An entry is a file or a subdirectory; a subdirectory's age is that of the newest thing
    in it, so a folder still being written to stays. The directories themselves stay, a
    missing one is skipped, symlinks are removed as links and never followed, and an entry
    that vanishes or cannot be removed meanwhile (another replica's sweep, an export being
    written) is skipped. Returns how many entries were removed.
    """
    removed = 0
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # missing, or not a directory
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
                if now - _newest_mtime(entry, info) < max_age_seconds:
                    continue
                _remove(entry, info)
            except OSError:
                continue
            removed += 1
    return removed


class RetentionSweeper:
    """Runs `sweep` over `directories`, then each of `jobs`, every `interval_seconds`.

    The sweeps run in a daemon thread, so a job that needs an event loop brings its own.
    `clock` gives the wall-clock time files are compared with (`time.time`); `wait` is
    how the thread pauses between sweeps (default: the stop event's own `wait`, so `stop`
    ends it at once). Tests pass a fake clock and a `wait` that returns immediately.
    """

    def __init__(
        self,
        directories: Iterable[Path],
        *,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.time,
        wait: Callable[[float], object] | None = None,
        jobs: Iterable[SweepJob] = (),
    ) -> None:
        if max_age_seconds <= 0 or interval_seconds <= 0:
            raise ValueError("max_age_seconds and interval_seconds must be positive")
        self.directories = tuple(directories)
        self.jobs = tuple(jobs)
        self.max_age_seconds = max_age_seconds
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self._thread: threading.Thread | None = None
        self.sweeps = 0
        self.removed = 0

    def sweep_once(self) -> int:
        """One sweep now; returns how many entries were removed (never raises OSError).

        A job that fails is logged and skipped: the folders and the other jobs still count.
        """
        now = self._clock()
        removed = sweep(self.directories, max_age_seconds=self.max_age_seconds, now=now)
        for job in self.jobs:
            try:
                removed += job(now)
            except Exception as exc:  # e.g. the database is down: try again next time
                log.warning(
                    "retention.job_failed",
                    job=getattr(job, "__name__", type(job).__name__),
                    error=type(exc).__name__,
                )
        self.sweeps += 1
        self.removed += removed
        if removed:
            log.info("retention.swept", removed=removed)
        return removed

    def start(self) -> None:
        """Sweep now, then every interval, until `stop` (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="retention-sweeper", daemon=True)
        self._thread.start()
        log.info(
            "retention.started",
            directories=len(self.directories),
            jobs=len(self.jobs),
            max_age_s=self.max_age_seconds,
            interval_s=self.interval_seconds,
        )

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread and wait (up to `timeout`) for a sweep in progress to end."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the sweeping thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep_once()
            except Exception as exc:  # a sweep must never kill the thread
                log.warning("retention.sweep_failed", error=type(exc).__name__)
            self._wait(self.interval_seconds)


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if needed and return it; for download and upload folders."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    return path
