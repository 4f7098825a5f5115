"""Optional backup of conversations and usage logs to a private Hugging Face dataset repo.

A Space's disk is wiped on every restart, so when HF_DATASET_REPO and HF_TOKEN are set the app:

1. `restore()`s at boot, before serving: downloads the repo and merges it into DATA_DIR
   (newer `updated_at` wins; nothing local is ever deleted);
2. `start()`s a background thread that makes sure the repo exists (private) and pushes the files
   that changed every HF_SYNC_EVERY_MINUTES;
3. `flush()`es once more on SIGTERM / normal exit (`install_signal_flush`).

With conversations in a database, `before_push` (e.g. `chatlib.snapshot.snapshot_hook`) runs on
the push thread before every push and writes the changed conversations out as these files first.

Only `conversations/<owner>/<id>.json`, `attachments/<owner>/<sha256>.<suffix>` (attached files,
named by their content) and `usage/*.csv` are ever uploaded: never `secrets/`, `exports/`, index
files, temp files or dot files. A conversation or attached file the app deletes (or moves to
another owner) after this process saw it in sync is deleted from the repo too, so a restart does
not bring it back; nothing else is ever deleted remotely, and restore never deletes locally.

Why not `huggingface_hub.CommitScheduler`: its constructor calls `create_repo` synchronously
(an unreachable Hub would crash startup), its timer thread sleeps uninterruptibly (no prompt
stop, no bounded flush), it reads files after releasing its lock with a size cap taken from an
earlier `stat` (an atomic replace in between uploads a truncated JSON), and it has no status
hook. The thread below keeps its model (changed files only) without those problems. Writers
need no lock: conversations are replaced atomically (chatlib/files.py) and read through one
open descriptor, so a push sees either the old or the new file; usage files only grow, and a
push takes them up to their last complete line.
"""

from __future__ import annotations

import atexit
import hashlib
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any, Final

import httpx2
import orjson
import structlog
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import (
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)
from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

from chatlib.config import Settings
from chatlib.errors import ConfigError
from chatlib.files import atomic_write

__all__ = [
    "ALLOW_PATTERNS",
    "IGNORE_PATTERNS",
    "HubSync",
    "RestoreReport",
    "SyncStatus",
    "install_signal_flush",
    "is_synced_path",
]

log = structlog.get_logger(__name__)

# What is backed up, as glob patterns (documentation, and the download filter of `restore`)...
ALLOW_PATTERNS: Final = ("conversations/*/*.json", "attachments/*/*", "usage/*.csv")
IGNORE_PATTERNS: Final = ("secrets/*", "exports/*", "*/index.jsonl", "*.tmp", ".*", "*/.*")
# ...and the exact rule both directions apply. Names are restricted to safe characters, which
# also rules out temp files (`.x.json.tmp`), dot files and any path that could escape DATA_DIR.
_SYNCED_PATH = re.compile(
    r"conversations/[A-Za-z0-9_-]{1,128}/[A-Za-z0-9_-]{1,128}\.json"
    r"|attachments/[0-9a-f]{32}/[0-9a-f]{64}\.(?:png|jpg|webp|gif|pdf|txt)"
    r"|usage/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,200}\.csv"
)
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_FILES_PER_COMMIT = 500
# What the app deletes locally is deleted remotely too; usage logs only ever grow.
_DELETABLE: Final = ("conversations/", "attachments/")
_REPO_TYPE = "dataset"

_Signature = tuple[int, int, int]  # (inode, mtime_ns, bytes uploaded)


def is_synced_path(relative: str) -> bool:
    """Whether a '/'-separated path relative to DATA_DIR is backed up to the dataset repo."""
    return _SYNCED_PATH.fullmatch(relative) is not None


@dataclass(frozen=True)
class SyncStatus:
    """What the operator needs to know about the dataset sync."""

    enabled: bool
    last_success_at: float | None = None
    last_error: str | None = None
    last_attempt_at: float | None = None
    pending: bool = False

    @classmethod
    def disabled(cls) -> SyncStatus:
        """The status shown when sync is off (no HF_DATASET_REPO or HF_TOKEN)."""
        return cls(enabled=False)


@dataclass(frozen=True)
class RestoreReport:
    """The outcome of merging the dataset repo into DATA_DIR."""

    ok: bool
    repo_found: bool = False
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    kept_local: int = 0
    skipped: int = 0
    error: str | None = None
    status: int | None = None

    @property
    def restored(self) -> int:
        """Files written from the remote (new or newer)."""
        return self.added + self.replaced


@dataclass(frozen=True)
class _Problem:
    """A failure described for the operator: never the token, never file contents."""

    message: str
    status: int | None
    error_class: str


@dataclass(frozen=True)
class _LocalFile:
    """A synced file's bytes as read once, with the signature of exactly those bytes."""

    relative: str
    data: bytes
    signature: _Signature


class _QuietProgress(hf_tqdm):
    """Progress bars off: a restore at boot would only clutter the logs with them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]


class HubSync:
    """Restore DATA_DIR from, and back it up to, a private dataset repo on the Hub.

    Nothing here raises into the app once constructed: failures are logged (`hub.push_failed`,
    `hub.restore_failed`), shown in `status` and retried on the next tick.
    """

    def __init__(
        self,
        data_dir: Path,
        repo_id: str,
        token: str,
        *,
        endpoint: str,
        every_minutes: float,
        api: HfApi | None = None,
        clock: Callable[[], float] = time.time,
        before_push: Callable[[], object] | None = None,
    ) -> None:
        """Configure the sync; nothing touches the network until `restore()` or `start()`.

        `before_push` runs on the push thread before each push (after a pending restore), to
        bring the synced files up to date, e.g. exported from a database. Its failure is
        logged as `hub.before_push_failed` and shown in `status`; the files are pushed anyway.
        """
        problems = []
        if not _REPO_ID.fullmatch(repo_id):
            problems.append(f"HF_DATASET_REPO must look like 'owner/name', got {repo_id!r}")
        if not token:
            problems.append("HF_TOKEN is required for dataset sync, got <hidden>")
        if not (math.isfinite(every_minutes) and every_minutes > 0):
            problems.append(f"HF_SYNC_EVERY_MINUTES must be positive, got {every_minutes!r}")
        if problems:
            raise ConfigError(problems)
        self.data_dir = Path(data_dir)
        self.repo_id = repo_id
        self.endpoint = endpoint.rstrip("/")
        self.every_seconds = every_minutes * 60.0
        self._token = token
        self._api = api or HfApi(
            endpoint=self.endpoint, token=token, library_name="openrouter-chat"
        )
        self._clock = clock
        self._before_push = before_push
        # Held while synced files are scanned and read, and while a restore writes them.
        self._files_lock = threading.Lock()
        # One push or restore at a time (re-entrant: a push may run the pending restore).
        self._serial = threading.RLock()
        # Scheduling and status; re-entrant because a SIGTERM handler may run on a thread that
        # is inside `status` or `flush` already.
        self._cond = threading.Condition(threading.RLock())
        self._status = SyncStatus(enabled=True)
        self._uploaded: dict[str, _Signature] = {}
        self._repo_ready = False
        self._restore_needed = False
        self._requested = 0
        self._served = 0
        self._last_result = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        """Show where it syncs, never the token."""
        return f"HubSync(repo_id={self.repo_id!r}, endpoint={self.endpoint!r})"

    @classmethod
    def from_settings(
        cls, settings: Settings, *, before_push: Callable[[], object] | None = None
    ) -> HubSync | None:
        """A HubSync for these settings, or None when sync is off (repo or token unset)."""
        if not settings.sync_enabled or not settings.hf_token:
            return None
        return cls(
            settings.data_dir,
            settings.hf_dataset_repo,
            settings.hf_token,
            endpoint=settings.hf_endpoint,
            every_minutes=settings.hf_sync_every_minutes,
            before_push=before_push,
        )

    # ------------------------------------------------------------------ public

    @property
    def status(self) -> SyncStatus:
        """A snapshot of the sync's health for the operator."""
        with self._cond:
            return self._status

    def restore(self, timeout: float | None = 300.0) -> RestoreReport:
        """Merge the dataset repo into DATA_DIR; call once at boot, before serving.

        Conversations: the newer `updated_at` wins, a local file missing remotely is kept, an
        unreadable remote file never replaces a readable local one. Usage logs: remote files
        missing locally are added, a same-named local file wins unless the remote is larger.
        A missing or empty repo is not an error. When the Hub cannot be reached (or `timeout`
        seconds pass) the report carries the error, the app runs on local data, and the
        background thread retries the restore before its first push.
        """
        try:
            report = self._restore(timeout)
        except Exception as exc:  # e.g. no space for the temp dir: boot goes on regardless
            report = self._restore_failed(self._describe(exc))
        with self._cond:
            self._restore_needed = not report.ok
        return report

    def start(self) -> None:
        """Start the background thread: ensure the private repo, then push every N minutes.

        Returns at once; the first push happens right away on the thread, and a Hub that is
        down or refuses the token only produces `hub.push_failed` events and retries.
        """
        with self._cond:
            if self._thread is not None and self._thread.is_alive() and not self._stopping:
                return
            self._stopping = False
            self._status = replace(self._status, pending=True)
            self._thread = threading.Thread(target=self._run, name="hub-sync", daemon=True)
            self._thread.start()
        log.info("hub.sync_started", repo=self.repo_id, every_s=self.every_seconds)

    def flush(self, timeout: float = 20.0) -> bool:
        """Push every pending change now, waiting at most `timeout` seconds.

        Returns True when a push that started after this call succeeded in time. Used at
        shutdown; safe to call whether or not `start()` was called.
        """
        with self._cond:
            worker = self._thread
            if worker is not None and worker.is_alive() and not self._stopping:
                self._requested += 1
                ticket = self._requested
                self._status = replace(self._status, pending=True)
                self._cond.notify_all()
                served = self._cond.wait_for(lambda: self._served >= ticket, timeout=timeout)
                return served and self._last_result
        outcome: list[bool] = []
        helper = threading.Thread(
            target=lambda: outcome.append(self._attempt()), name="hub-sync-flush", daemon=True
        )
        helper.start()
        helper.join(timeout)
        return bool(outcome) and outcome[0]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread (no final push: call `flush()` first)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            worker = self._thread
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    # ------------------------------------------------------------- the thread

    def _run(self) -> None:
        """Push now, then every `every_seconds` or whenever a flush asks."""
        next_tick = time.monotonic()
        while True:
            with self._cond:
                while not self._stopping and self._requested == self._served:
                    remaining = next_tick - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._stopping or self._thread is not threading.current_thread():
                    return  # stopped, or replaced by a newer thread after stop() + start()
                ticket = self._requested
            ok = self._attempt()
            with self._cond:
                self._served = max(self._served, ticket)
                self._last_result = ok
                self._cond.notify_all()
            next_tick = time.monotonic() + self.every_seconds

    def _attempt(self) -> bool:
        """One push: pending restore, repo creation, then every changed file. Never raises."""
        with self._serial:
            self._update(last_attempt_at=self._clock())
            try:
                if self._restore_needed:
                    report = self._restore(timeout=None)
                    if not report.ok:
                        problem = _Problem(
                            f"Waiting for a successful restore before pushing: {report.error}",
                            report.status,
                            "RestoreFailed",
                        )
                        return self._failed(problem)
                    with self._cond:
                        self._restore_needed = False
                if not self._repo_ready:
                    self._api.create_repo(
                        self.repo_id,
                        repo_type=_REPO_TYPE,
                        private=True,
                        exist_ok=True,
                        token=self._token,
                    )
                    self._repo_ready = True
                    log.info("hub.repo_ready", repo=self.repo_id)
                # An existing repo keeps its visibility, and an owner can change it at any
                # time: before every push, make sure chats never go into a public repo.
                info = self._api.repo_info(self.repo_id, repo_type=_REPO_TYPE, token=self._token)
                if not getattr(info, "private", False):
                    return self._failed(
                        _Problem(
                            f"The dataset repo {self.repo_id} is public, so conversations are "
                            "not pushed to it: make it private on the Hub or set "
                            "HF_DATASET_REPO to another repo",
                            None,
                            "PublicRepo",
                        )
                    )
                prepared = self._run_before_push()
                files, commits = self._push_changes()
                deleted = self._push_deletions()
            except Exception as exc:  # a failed push must never take the app down
                return self._failed(self._describe(exc))
            if prepared is not None:  # what was on disk is pushed, but it may be stale
                return self._failed(prepared)
            self._update(last_success_at=self._clock(), last_error=None, pending=False)
            level = log.info if files or deleted else log.debug
            level("hub.push_ok", repo=self.repo_id, files=files, deleted=deleted, commits=commits)
            return True

    def _run_before_push(self) -> _Problem | None:
        """Run the `before_push` hook; the problem to report if it failed."""
        if self._before_push is None:
            return None
        try:
            self._before_push()
        except Exception as exc:  # e.g. the database is down: push what is on disk anyway
            # The exception's text may quote a database URL or data: its type is enough.
            name = type(exc).__name__
            log.error("hub.before_push_failed", repo=self.repo_id, error=name)
            return _Problem(
                f"Could not write the latest conversations out for the backup ({name}); will retry",
                None,
                name,
            )
        return None

    def _failed(self, problem: _Problem) -> bool:
        self._update(last_error=problem.message, pending=True)
        log.error(
            "hub.push_failed",
            repo=self.repo_id,
            status=problem.status,
            error=problem.error_class,
            message=problem.message,
            retry_in_s=self.every_seconds,
        )
        return False

    def _update(self, **changes: Any) -> None:
        with self._cond:
            self._status = replace(self._status, **changes)

    def _push_changes(self) -> tuple[int, int]:
        """Commit every changed synced file, at most _FILES_PER_COMMIT per commit."""
        files = commits = 0
        while True:
            batch = self._changed_files(limit=_FILES_PER_COMMIT)
            if not batch:
                return files, commits
            operations = [CommitOperationAdd(f.relative, f.data) for f in batch]
            self._api.create_commit(
                self.repo_id,
                operations,
                commit_message=f"Sync {len(batch)} file(s)",
                repo_type=_REPO_TYPE,
                token=self._token,
            )
            for local_file in batch:
                self._uploaded[local_file.relative] = local_file.signature
            files += len(batch)
            commits += 1
            if len(batch) < _FILES_PER_COMMIT:
                return files, commits

    def _push_deletions(self) -> int:
        """Delete remotely the conversations this process saw in sync that are gone locally.

        Only paths known to match the remote (uploaded or restored by this process) qualify,
        so a wiped or unrestored disk never deletes anything: what disappears is what the app
        deleted or moved to another owner, and a restore must not bring it back. Usage logs
        are append-only and never deleted.
        """
        with self._files_lock:
            removed = sorted(
                relative
                for relative in self._uploaded
                if relative.startswith(_DELETABLE) and not os.path.lexists(self.data_dir / relative)
            )
        if not removed:
            return 0
        try:
            self._commit_deletions(removed)
        except RemoteEntryNotFoundError:
            # Someone removed some of them on the Hub already: delete only what is left.
            remote = set(
                self._api.list_repo_files(self.repo_id, repo_type=_REPO_TYPE, token=self._token)
            )
            self._commit_deletions([relative for relative in removed if relative in remote])
        for relative in removed:
            self._uploaded.pop(relative, None)
        return len(removed)

    def _commit_deletions(self, paths: list[str]) -> None:
        for start in range(0, len(paths), _FILES_PER_COMMIT):
            batch = paths[start : start + _FILES_PER_COMMIT]
            self._api.create_commit(
                self.repo_id,
                [CommitOperationDelete(relative) for relative in batch],
                commit_message=f"Delete {len(batch)} conversation file(s)",
                repo_type=_REPO_TYPE,
                token=self._token,
            )

    def _changed_files(self, limit: int) -> list[_LocalFile]:
        """Read the synced files that changed since they were last uploaded or restored."""
        changed: list[_LocalFile] = []
        with self._files_lock:
            for relative, path in _synced_files(self.data_dir):
                try:
                    info = path.stat()
                except OSError:  # gone since listed, or unreadable: the next tick sees it again
                    continue
                seen = self._uploaded.get(relative)
                if seen == (info.st_ino, info.st_mtime_ns, info.st_size):
                    continue
                local_file = _read_consistent(path, relative)
                if local_file is None or local_file.signature == seen:
                    continue
                changed.append(local_file)
                if len(changed) >= limit:
                    break
        return changed

    # ----------------------------------------------------------------- restore

    def _restore(self, timeout: float | None) -> RestoreReport:
        """Download the repo (bounded by `timeout`) and merge it into DATA_DIR."""
        workdir = Path(tempfile.mkdtemp(prefix="hub-restore-"))
        download = _Download(lambda: self._download(workdir), cleanup=workdir)
        try:
            finished = download.run(timeout)
            if not finished:
                problem = _Problem(
                    f"Restoring from the Hub took longer than {timeout:g} s; serving local data",
                    None,
                    "TimeoutError",
                )
                return self._restore_failed(problem)
            if isinstance(download.error, RepositoryNotFoundError):
                log.info("hub.restore_empty", repo=self.repo_id, reason="repo not found")
                return RestoreReport(ok=True)
            if download.error is not None:
                return self._restore_failed(self._describe(download.error))
            with self._serial, self._files_lock:
                report = self._merge(workdir / "snapshot")
        finally:
            download.release()
        log.info(
            "hub.restore_done",
            repo=self.repo_id,
            added=report.added,
            replaced=report.replaced,
            unchanged=report.unchanged,
            kept_local=report.kept_local,
            skipped=report.skipped,
        )
        return report

    def _restore_failed(self, problem: _Problem) -> RestoreReport:
        log.error(
            "hub.restore_failed",
            repo=self.repo_id,
            status=problem.status,
            error=problem.error_class,
            message=problem.message,
        )
        return RestoreReport(ok=False, error=problem.message, status=problem.status)

    def _download(self, workdir: Path) -> None:
        """Fetch the synced files of the repo's main branch into `workdir/snapshot`."""
        self._api.snapshot_download(
            self.repo_id,
            repo_type=_REPO_TYPE,
            local_dir=workdir / "snapshot",
            # Keep the library's refs/blobs cache out of $HOME: it would only grow.
            cache_dir=workdir / "cache",
            token=self._token,
            allow_patterns=list(ALLOW_PATTERNS),
            ignore_patterns=list(IGNORE_PATTERNS),
            tqdm_class=_QuietProgress,
        )

    def _merge(self, snapshot: Path) -> RestoreReport:
        """Merge downloaded files into DATA_DIR (caller holds the locks)."""
        counts = {"added": 0, "replaced": 0, "unchanged": 0, "kept_local": 0, "skipped": 0}
        for relative, remote_path in _synced_files(snapshot):
            local_path = self.data_dir / relative
            try:
                remote = remote_path.read_bytes()
                if relative.startswith("conversations/"):
                    outcome = self._merge_conversation(relative, local_path, remote)
                elif relative.startswith("attachments/"):
                    outcome = self._merge_attachment(relative, local_path, remote)
                else:
                    outcome = self._merge_usage(local_path, remote)
                if outcome not in ("kept_local", "skipped"):
                    # What is on disk now equals the remote: no need to push it back.
                    self._uploaded[relative] = _signature(local_path)
            except OSError as exc:  # one bad file (disk full, permissions) must not stop the rest
                log.error("hub.restore_skipped", path=relative, reason=type(exc).__name__)
                outcome = "skipped"
            counts[outcome] += 1
        return RestoreReport(
            ok=True,
            repo_found=True,
            added=counts["added"],
            replaced=counts["replaced"],
            unchanged=counts["unchanged"],
            kept_local=counts["kept_local"],
            skipped=counts["skipped"],
        )

    def _merge_conversation(self, relative: str, local_path: Path, remote: bytes) -> str:
        remote_doc = _parse_conversation(remote)
        if remote_doc is None:
            log.warning("hub.restore_skipped", path=relative, reason="remote file unreadable")
            return "skipped"
        local = _read_or_none(local_path)
        if local is None:
            atomic_write(local_path, remote)
            return "added"
        if local == remote:
            return "unchanged"
        local_doc = _parse_conversation(local)
        if local_doc is None:
            # Keep the unreadable bytes beside it (never delete local data), then take remote.
            aside = local_path.with_name(f"{local_path.name}.unreadable-{int(self._clock())}")
            os.replace(local_path, aside)
            log.warning("hub.restore_unreadable_local", path=relative, kept_as=aside.name)
            atomic_write(local_path, remote)
            return "replaced"
        if _updated_at(remote_doc) > _updated_at(local_doc):
            atomic_write(local_path, remote)
            return "replaced"
        return "kept_local"

    @staticmethod
    def _merge_attachment(relative: str, local_path: Path, remote: bytes) -> str:
        """An attached file is named by its SHA-256: a copy of another hash is damaged."""
        if hashlib.sha256(remote).hexdigest() != local_path.name.partition(".")[0]:
            log.warning("hub.restore_skipped", path=relative, reason="remote file damaged")
            return "skipped"
        local = _read_or_none(local_path)
        if local == remote:
            return "unchanged"
        local_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(local_path, remote)
        return "added" if local is None else "replaced"

    @staticmethod
    def _merge_usage(local_path: Path, remote: bytes) -> str:
        local = _read_or_none(local_path)
        if local is None:
            atomic_write(local_path, remote)
            return "added"
        if local == remote:
            return "unchanged"
        if len(remote) > len(local):
            atomic_write(local_path, remote)
            return "replaced"
        return "kept_local"

    # ------------------------------------------------------------------ errors

    def _describe(self, exc: BaseException) -> _Problem:
        """Turn an exception into an operator-facing problem (status code, class, advice)."""
        causes = list(_causes(exc))
        for err in causes:
            if isinstance(err, HfHubHTTPError):
                status = err.response.status_code
                name = type(err).__name__
                if status == 401:
                    message = (
                        "HF_TOKEN was rejected by the Hub (401): check the token has write access"
                    )
                elif status == 403:
                    message = (
                        f"HF_TOKEN was rejected by the Hub (403): check the token has write "
                        f"access to {self.repo_id}"
                    )
                elif status == 404 or isinstance(err, RepositoryNotFoundError):
                    message = (
                        f"The dataset repo {self.repo_id} was not found (404): check "
                        "HF_DATASET_REPO and that HF_TOKEN can see it"
                    )
                elif status == 429:
                    message = "The Hub is rate limiting this app (429); will retry"
                elif status >= 500:
                    message = f"The Hub failed with HTTP {status}; will retry"
                else:
                    message = f"The Hub refused the request (HTTP {status})"
                return _Problem(message, status, name)
        for err in causes:
            if isinstance(err, OfflineModeIsEnabled):
                message = "HF_HUB_OFFLINE is set, so the dataset sync cannot reach the Hub"
                return _Problem(message, None, type(err).__name__)
            if isinstance(err, httpx2.TransportError | ConnectionError | TimeoutError):
                name = type(err).__name__
                return _Problem(f"Cannot reach the Hub at {self.endpoint} ({name})", None, name)
        detail = f"{type(exc).__name__}: {exc}".replace(self._token, "[REDACTED]")
        return _Problem(detail[:300], None, type(exc).__name__)


class _Download:
    """Run a download on a daemon thread that the caller may stop waiting for.

    Whoever finishes last (the caller after merging, or an abandoned download) deletes the
    work directory, so a slow download never writes into a directory that is gone.
    """

    def __init__(self, target: Callable[[], None], *, cleanup: Path) -> None:
        self.error: BaseException | None = None
        self._target = target
        self._cleanup = cleanup
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._abandoned = False

    def run(self, timeout: float | None) -> bool:
        """Start the download and wait; False if `timeout` passed first."""
        if timeout is None:
            self._work()
            return True
        threading.Thread(target=self._work, name="hub-restore", daemon=True).start()
        return self._done.wait(timeout)

    def release(self) -> None:
        """The caller is done: delete the work directory now, or when the download ends."""
        with self._lock:
            self._abandoned = not self._done.is_set()
            if self._abandoned:
                return
        shutil.rmtree(self._cleanup, ignore_errors=True)

    def _work(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # reported to the caller, never raised on this thread
            self.error = exc
        with self._lock:
            self._done.set()
            abandoned = self._abandoned
        if abandoned:
            shutil.rmtree(self._cleanup, ignore_errors=True)


# ------------------------------------------------------------------- shutdown


def install_signal_flush(sync: HubSync, timeout: float) -> Callable[[], None]:
    """Flush `sync` when the process is told to stop; returns a function that uninstalls it.

    Main thread only: Python runs signal handlers there and `signal.signal` refuses other
    threads. A Space restart sends SIGTERM, which skips `atexit`, so this installs both:
    a SIGTERM handler that flushes (bounded by `timeout` seconds), stops the sync, then hands
    the signal on (to the previous Python handler, or by restoring the default action and
    re-raising SIGTERM so the process ends as it would have; as PID 1, where that is a no-op,
    it exits with status 143), and an `atexit` hook for a normal exit. The flush runs once
    even if both fire. A previous handler of SIG_IGN is respected: flush, then keep running.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_signal_flush() must be called from the main thread")
    previous = signal.getsignal(signal.SIGTERM)
    flushed = threading.Event()

    def flush_once() -> None:
        if flushed.is_set():
            return
        flushed.set()
        ok = sync.flush(timeout)
        sync.stop(timeout=1.0)
        log.info("hub.shutdown_flush", repo=sync.repo_id, ok=ok)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        flush_once()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            # Still alive: we are PID 1 in a container, where the kernel drops signals whose
            # action is the default. Exit the way a shell reports death by SIGTERM.
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    atexit.register(flush_once)

    def uninstall() -> None:
        atexit.unregister(flush_once)
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return uninstall


# -------------------------------------------------------------------- helpers


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it was raised from, outermost first."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _synced_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, absolute path) of every synced file under `root`, in a stable order.

    Only `conversations/*/`, `attachments/*/` and `usage/` are walked: `secrets/` and
    `exports/` are never even listed. Symlinks are skipped so nothing outside `root` can be
    read or written through one.
    """
    for folder in ("conversations", "attachments"):
        for owner in _scandir(root / folder):
            if not owner.is_dir(follow_symlinks=False):
                continue
            for entry in _scandir(Path(owner.path)):
                relative = f"{folder}/{owner.name}/{entry.name}"
                if entry.is_file(follow_symlinks=False) and is_synced_path(relative):
                    yield relative, Path(entry.path)
    for entry in _scandir(root / "usage"):
        relative = f"usage/{entry.name}"
        if entry.is_file(follow_symlinks=False) and is_synced_path(relative):
            yield relative, Path(entry.path)


def _read_consistent(path: Path, relative: str) -> _LocalFile | None:
    """Read one file through one descriptor, so bytes and signature describe the same file.

    An append-only CSV is cut after its last complete line: a row being appended right now is
    uploaded on the next tick (its signature then differs from the recorded one).
    """
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            data = handle.read(info.st_size)
    except FileNotFoundError:
        return None
    except OSError as exc:  # e.g. permissions: skip this file, keep pushing the others
        log.warning("hub.file_unreadable", path=relative, error=type(exc).__name__)
        return None
    if relative.endswith(".csv"):
        data = data[: data.rfind(b"\n") + 1]
        if not data:
            return None
    return _LocalFile(relative, data, (info.st_ino, info.st_mtime_ns, len(data)))


def _signature(path: Path) -> _Signature:
    info = path.stat()
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _parse_conversation(data: bytes) -> dict[str, Any] | None:
    """The conversation as a JSON object, or None if it is not one."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _updated_at(document: dict[str, Any]) -> float:
    value = document.get("updated_at")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return -math.inf
