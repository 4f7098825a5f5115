"""Exports and uploads are gone an hour after they were made, whether or not anyone exports."""

from __future__ import annotations

import os
import queue
import secrets
import shutil
from pathlib import Path

import pytest

from chatlib.retention import RetentionSweeper, ensure_private_dir, sweep

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
