"""Dataset sync against a fake Hub on loopback: restore at boot, periodic push, flush on exit."""

from __future__ import annotations

import hashlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from chatlib.config import Settings
from chatlib.errors import ConfigError
from chatlib.hub_sync import HubSync, RestoreReport, install_signal_flush, is_synced_path
from chatlib.messages import AnswerMeta, ChatMessage
from chatlib.options import AnswerOptions
from chatlib.sources import Source
from chatlib.storage import ConversationStore
from tests.conftest import free_port
from tests.fakes.hf_hub import DEFAULT_TOKEN, FakeHfHub

REPO = Path(__file__).resolve().parent.parent
DATASET = "fake-user/chat-data"
READ_ONLY_TOKEN = "hf_fakeReadOnlyToken000000000000000"
WRONG_TOKEN = "hf_fakeWrongToken00000000000000000000"
SECRET_BYTES = b"server-secret-never-leaves-this-disk"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def hub_module() -> Iterator[FakeHfHub]:
    """One fake Hub for this module."""
    with FakeHfHub(read_only_tokens=[READ_ONLY_TOKEN]) as fake:
        yield fake


@pytest.fixture
def hub(hub_module: FakeHfHub, monkeypatch: pytest.MonkeyPatch) -> FakeHfHub:
    """The module's fake Hub, emptied."""
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    hub_module.reset()
    return hub_module


@pytest.fixture
def make_sync(tmp_path: Path, hub: FakeHfHub) -> Iterator[Callable[..., HubSync]]:
    """Build HubSyncs against the fake Hub; all are stopped after the test."""
    made: list[HubSync] = []

    def make(
        data_dir: Path | None = None,
        *,
        token: str = DEFAULT_TOKEN,
        every_minutes: float = 60.0,
        endpoint: str | None = None,
        before_push: Callable[[], object] | None = None,
    ) -> HubSync:
        sync = HubSync(
            data_dir or tmp_path / "data",
            DATASET,
            token,
            endpoint=endpoint or hub.endpoint,
            every_minutes=every_minutes,
            before_push=before_push,
        )
        made.append(sync)
        return sync

    yield make
    for sync in made:
        sync.stop()


# ------------------------------------------------------------------ helpers


def conversation(conversation_id: str, updated_at: float, text: str) -> bytes:
    """A conversation file as the store writes it."""
    return orjson.dumps(
        {
            "schema_version": 1,
            "id": conversation_id,
            "updated_at": updated_at,
            "messages": [{"role": "user", "content": text}],
        }
    )


def hex_id() -> str:
    return uuid.uuid4().hex


def write(root: Path, relative: str, data: bytes) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def local_files(root: Path) -> dict[str, bytes]:
    """Every file under root, by '/'-separated relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll until predicate() is true (a bound against hangs, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def seed_data_dir(root: Path) -> dict[str, bytes]:
    """A data dir as the app leaves it; returns the files that must be synced."""
    owner_a, owner_b = hex_id(), hex_id()
    c1, c2, c3 = hex_id(), hex_id(), hex_id()
    synced = {
        f"conversations/{owner_a}/{c1}.json": conversation(c1, 100.0, "hello"),
        f"conversations/{owner_a}/{c2}.json": conversation(c2, 200.0, "again"),
        f"conversations/{owner_b}/{c3}.json": conversation(c3, 300.0, "other owner"),
        f"usage/usage-{hex_id()}.csv": b"ts,model,tokens\n1,openai/gpt-4o,12\n",
    }
    never = {
        "secrets/server_secret": SECRET_BYTES,
        "exports/export-1.json": b'{"export": "' + SECRET_BYTES + b'"}',
        f"conversations/{owner_a}/index.jsonl": b'{"id": "x"}\n',
        f"conversations/{owner_a}/.{c1}.json.tmp": b"half a conversation",
        f"conversations/{owner_a}/{c1}.json.tmp": b"half a conversation",
        f"conversations/{owner_b}/.hidden.json": b"{}",
        "usage/.usage-x.csv.tmp": b"ts\n",
        "notes.txt": b"stray file at the root",
    }
    for relative, data in {**synced, **never}.items():
        write(root, relative, data)
    return synced


# ------------------------------------------------------------ first boot


def test_synced_paths_are_conversations_and_usage_logs_only() -> None:
    owner, cid = hex_id(), hex_id()
    assert is_synced_path(f"conversations/{owner}/{cid}.json")
    assert is_synced_path("usage/usage-5f2b0c4e-8d1a-4c1e-9d4f-2a7b9e1c3d5f.csv")
    for path in (
        "secrets/server_secret",
        "exports/a.json",
        f"conversations/{owner}/index.jsonl",
        f"conversations/{owner}/.{cid}.json.tmp",
        f"conversations/{owner}/{cid}.json.tmp",
        f"conversations/{owner}/sub/{cid}.json",
        f"conversations/../secrets/{cid}.json",
        "usage/.usage.csv",
        "usage/usage.csv.tmp",
        "notes.json",
    ):
        assert not is_synced_path(path), path


def test_first_boot_creates_private_repo_and_pushes_only_conversations_and_usage(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    synced = seed_data_dir(data_dir)
    before = local_files(data_dir)
    sync = make_sync(data_dir)

    with capture_logs() as logs:
        report = sync.restore()
        sync.start()
        assert sync.flush(timeout=20)

    assert report.ok and not report.repo_found
    repo = hub.repo(DATASET)
    assert repo.private
    assert repo.repo_type == "dataset"
    assert repo.files == {".gitattributes": repo.files[".gitattributes"], **synced}
    for commit in repo.commits:
        for data in commit.files.values():
            assert SECRET_BYTES not in data
    assert local_files(data_dir) == before, "pushing must not change local data"
    assert {r.token for r in hub.requests} == {DEFAULT_TOKEN}
    assert len(hub.commits) == 1
    assert sum(e["files"] for e in events(logs, "hub.push_ok")) == len(synced)
    status = sync.status
    assert status.enabled and status.last_error is None and not status.pending
    assert status.last_success_at is not None and status.last_attempt_at is not None


def test_only_changed_files_are_pushed_again(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    synced = seed_data_dir(data_dir)
    sync = make_sync(data_dir)
    assert sync.flush(timeout=20)
    assert len(hub.commits) == 1

    assert sync.flush(timeout=20)
    assert len(hub.commits) == 1, "nothing changed, nothing committed"

    changed = next(p for p in synced if p.startswith("conversations/"))
    cid = Path(changed).stem
    new_path = data_dir / (changed + ".tmp")
    new_path.write_bytes(conversation(cid, 999.0, "edited"))
    os.replace(new_path, data_dir / changed)  # how the store writes: temp file + replace
    assert sync.flush(timeout=20)

    assert len(hub.commits) == 2
    latest, previous = hub.commits[-1].files, hub.commits[-2].files
    assert {p for p in latest if latest[p] != previous.get(p)} == {changed}
    assert orjson.loads(hub.repo(DATASET).files[changed])["updated_at"] == 999.0


def test_a_usage_row_being_appended_is_pushed_only_once_complete(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    log_path = write(data_dir, "usage/usage-abc.csv", b"ts,tokens\n1,10\n2,2")
    sync = make_sync(data_dir)

    assert sync.flush(timeout=20)
    assert hub.repo(DATASET).files["usage/usage-abc.csv"] == b"ts,tokens\n1,10\n"

    with log_path.open("ab") as handle:
        handle.write(b"0\n")
    assert sync.flush(timeout=20)
    assert hub.repo(DATASET).files["usage/usage-abc.csv"] == b"ts,tokens\n1,10\n2,20\n"


def test_a_deleted_conversation_is_deleted_from_the_repo_and_stays_deleted(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    synced = seed_data_dir(data_dir)
    usage = next(p for p in synced if p.startswith("usage/"))
    deleted, moved = [p for p in synced if p.startswith("conversations/")][:2]
    sync = make_sync(data_dir)
    assert sync.flush(timeout=20)

    (data_dir / deleted).unlink()  # the visitor deleted it
    moved_to = f"conversations/{hex_id()}/{Path(moved).name}"  # logged in: moved to the account
    write(data_dir, moved_to, (data_dir / moved).read_bytes())
    (data_dir / moved).unlink()
    (data_dir / usage).unlink()  # usage logs are append-only: never deleted remotely
    assert sync.flush(timeout=20)

    remote = hub.repo(DATASET).files
    assert deleted not in remote and moved not in remote
    assert moved_to in remote and usage in remote
    restarted = tmp_path / "restarted"
    assert make_sync(restarted).restore().ok
    assert deleted not in local_files(restarted) and moved not in local_files(restarted)


def test_a_wiped_disk_never_deletes_the_backup(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    synced = seed_data_dir(tmp_path / "first")
    assert make_sync(tmp_path / "first").flush(timeout=20)

    wiped = make_sync(tmp_path / "wiped")  # a restart whose restore was skipped
    assert wiped.flush(timeout=20)

    remote = hub.repo(DATASET).files
    assert all(remote[p] == data for p, data in synced.items())


def test_a_conversation_already_removed_on_the_hub_does_not_block_pushes(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    synced = seed_data_dir(data_dir)
    first, second = [p for p in synced if p.startswith("conversations/")][:2]
    sync = make_sync(data_dir)
    assert sync.flush(timeout=20)

    hub.delete_files(DATASET, [first])  # someone tidied the dataset by hand
    (data_dir / first).unlink()
    (data_dir / second).unlink()
    assert sync.flush(timeout=20)

    assert first not in hub.repo(DATASET).files and second not in hub.repo(DATASET).files
    assert sync.status.last_error is None


# ----------------------------------------------------------------- restore


def test_restart_with_an_empty_data_dir_restores_everything(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    first_dir = tmp_path / "first"
    synced = seed_data_dir(first_dir)
    first = make_sync(first_dir)
    assert first.flush(timeout=20)
    first.stop()
    commits = len(hub.commits)

    fresh_dir = tmp_path / "after-restart"
    second = make_sync(fresh_dir)
    report = second.restore()

    assert report.ok and report.repo_found
    assert report.added == len(synced) and report.restored == len(synced)
    assert local_files(fresh_dir) == synced
    assert second.flush(timeout=20)
    assert len(hub.commits) == commits, "restored files are not pushed back"


def test_a_chats_options_and_an_answers_sources_come_back_after_a_restart(
    tmp_path: Path, make_sync: Callable[..., HubSync]
) -> None:
    owner, first_dir = hex_id(), tmp_path / "first"
    files = ConversationStore(first_dir)
    cited = (Source("https://weather.example/today", "Forecast"), Source("data:text/html,hi"))
    answer = ChatMessage("assistant", "Rain.", meta=AnswerMeta("m/x", "complete", sources=cited))
    chat = replace(
        files.new_conversation("m/x", "", 0.3),
        messages=(ChatMessage("user", "Weather?"), answer),
        options=AnswerOptions(web_search=True, reasoning_effort="medium", max_tokens=256),
    )
    saved = files.save(owner, chat)
    assert make_sync(first_dir).flush(timeout=20)

    fresh_dir = tmp_path / "after-restart"
    assert make_sync(fresh_dir).restore().ok

    back = ConversationStore(fresh_dir).load(owner, saved.id)
    assert back == saved and back.options == chat.options
    assert back.messages[1].meta is not None and back.messages[1].meta.sources == cited


def test_restore_merges_instead_of_overwriting(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    owner = hex_id()
    names = ("newer", "older", "remote", "local", "bad_remote", "orphan", "bad_local")
    ids = {name: hex_id() for name in names}

    def conv(name: str) -> str:
        return f"conversations/{owner}/{ids[name]}.json"

    usage_remote_only = f"usage/usage-{hex_id()}.csv"
    usage_local_longer = f"usage/usage-{hex_id()}.csv"
    usage_remote_longer = f"usage/usage-{hex_id()}.csv"
    remote = {
        conv("newer"): conversation(ids["newer"], 500.0, "remote is newer"),
        conv("older"): conversation(ids["older"], 100.0, "remote is older"),
        conv("remote"): conversation(ids["remote"], 100.0, "only on the Hub"),
        conv("bad_remote"): b'{"schema_version": 1, "id": "trunc',
        conv("orphan"): b"not json at all",
        conv("bad_local"): conversation(ids["bad_local"], 50.0, "remote can be read"),
        usage_remote_only: b"ts\n1\n",
        usage_local_longer: b"ts\n1\n",
        usage_remote_longer: b"ts\n1\n2\n3\n",
    }
    local = {
        conv("newer"): conversation(ids["newer"], 400.0, "local is older"),
        conv("older"): conversation(ids["older"], 900.0, "local is newer"),
        conv("local"): conversation(ids["local"], 100.0, "only on this disk"),
        conv("bad_remote"): conversation(ids["bad_remote"], 1.0, "local can be read"),
        conv("bad_local"): b"\x00\x01garbage",
        usage_local_longer: b"ts\n1\n2\n",
        usage_remote_longer: b"ts\n1\n",
    }
    hub.add_repo(DATASET, files=remote)
    data_dir = tmp_path / "data"
    for relative, data in local.items():
        write(data_dir, relative, data)
    sync = make_sync(data_dir)

    report = sync.restore()

    assert report == RestoreReport(
        ok=True, repo_found=True, added=2, replaced=3, kept_local=2, skipped=2
    )
    now = local_files(data_dir)
    assert now[conv("newer")] == remote[conv("newer")]
    assert now[conv("older")] == local[conv("older")]
    assert now[conv("remote")] == remote[conv("remote")]
    assert now[conv("local")] == local[conv("local")]
    assert now[conv("bad_remote")] == local[conv("bad_remote")]
    assert conv("orphan") not in now
    assert now[conv("bad_local")] == remote[conv("bad_local")]
    kept_aside = [p for p in now if p.startswith(conv("bad_local") + ".unreadable-")]
    assert [now[p] for p in kept_aside] == [local[conv("bad_local")]]
    assert now[usage_remote_only] == remote[usage_remote_only]
    assert now[usage_local_longer] == local[usage_local_longer]
    assert now[usage_remote_longer] == remote[usage_remote_longer]
    assert not [p for p in now if p.endswith(".tmp")], "restored files are written atomically"

    # The next push sends what this disk has that the Hub lacks, and nothing else.
    assert sync.flush(timeout=20)
    pushed = hub.repo(DATASET).files
    assert {p for p in pushed if pushed[p] != remote.get(p)} - {".gitattributes"} == {
        conv("older"),
        conv("local"),
        conv("bad_remote"),
        usage_local_longer,
    }


def test_restore_of_a_missing_or_empty_repo_is_not_an_error(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    synced = seed_data_dir(data_dir)
    before = local_files(data_dir)
    sync = make_sync(data_dir)

    with capture_logs() as logs:
        missing = sync.restore()
        hub.add_repo(DATASET)  # created, but nothing pushed yet
        empty = sync.restore()

    assert missing == RestoreReport(ok=True, repo_found=False)
    assert empty == RestoreReport(ok=True, repo_found=True)
    assert not events(logs, "hub.restore_failed")
    assert local_files(data_dir) == before
    assert sync.flush(timeout=20)
    assert set(synced) <= set(hub.repo(DATASET).files)


def test_restore_failure_keeps_local_data_and_is_retried_before_the_first_push(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    owner, cid, remote_cid = hex_id(), hex_id(), hex_id()
    stale = f"conversations/{owner}/{cid}.json"
    remote_only = f"conversations/{owner}/{remote_cid}.json"
    hub.add_repo(
        DATASET,
        files={
            stale: conversation(cid, 900.0, "newer on the Hub"),
            remote_only: conversation(remote_cid, 1.0, "only on the Hub"),
        },
    )
    data_dir = tmp_path / "data"
    write(data_dir, stale, conversation(cid, 100.0, "old copy on a persistent disk"))
    sync = make_sync(data_dir)
    hub.fail_next(1, status=503, route="info")

    with capture_logs() as logs:
        report = sync.restore()
    assert not report.ok and report.status == 503
    assert [e["status"] for e in events(logs, "hub.restore_failed")] == [503]
    assert orjson.loads((data_dir / stale).read_bytes())["updated_at"] == 100.0

    # The Hub is back: the first push restores first, so the stale copy never overwrites.
    sync.start()
    assert sync.flush(timeout=20)
    assert orjson.loads(hub.repo(DATASET).files[stale])["updated_at"] == 900.0
    assert orjson.loads((data_dir / stale).read_bytes())["updated_at"] == 900.0
    assert (data_dir / remote_only).exists()


def test_restore_from_an_unreachable_hub_reports_and_keeps_local_data(
    tmp_path: Path, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    seed_data_dir(data_dir)
    before = local_files(data_dir)
    sync = make_sync(data_dir, endpoint=f"http://127.0.0.1:{free_port()}")

    with capture_logs() as logs:
        report = sync.restore()

    assert not report.ok and report.status is None
    assert report.error is not None and "Cannot reach the Hub" in report.error
    assert [e["error"] for e in events(logs, "hub.restore_failed")] == ["ConnectError"]
    assert local_files(data_dir) == before


def test_a_hub_that_never_answers_does_not_hold_up_boot(
    tmp_path: Path, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    seed_data_dir(data_dir)
    before = local_files(data_dir)
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sync = make_sync(data_dir, endpoint=f"http://127.0.0.1:{listener.getsockname()[1]}")
        report = sync.restore(timeout=0.5)

    assert not report.ok
    assert report.error is not None and "longer than 0.5 s" in report.error
    assert local_files(data_dir) == before


# ------------------------------------------------------------------ failures


def test_hub_errors_for_a_while_lose_nothing_and_status_recovers(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    synced = seed_data_dir(data_dir)
    sync = make_sync(data_dir, every_minutes=0.005)  # a retry every 0.3 s
    hub.fail_next(1_000_000, status=500, route="commit")

    with capture_logs() as logs:
        sync.start()
        wait_until(lambda: sync.status.last_error is not None)
        during = sync.status
        owner, cid = hex_id(), hex_id()
        written_during_outage = f"conversations/{owner}/{cid}.json"
        write(data_dir, written_during_outage, conversation(cid, 5.0, "typed while down"))
        wait_until(lambda: len(events(logs, "hub.push_failed")) >= 2)

        hub.clear_failures()
        wait_until(lambda: sync.status.last_success_at is not None)
        assert sync.flush(timeout=20)

    assert during.last_error is not None and "500" in during.last_error
    assert during.pending and during.last_success_at is None
    after = sync.status
    assert after.last_error is None and not after.pending
    remote = hub.repo(DATASET).files
    assert all(remote[p] == data for p, data in synced.items())
    assert written_during_outage in remote
    failed = events(logs, "hub.push_failed")
    assert {(e["status"], e["error"]) for e in failed} == {(500, "HfHubHTTPError")}
    assert events(logs, "hub.push_ok")


def test_a_public_repo_is_never_pushed_to(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    seed_data_dir(data_dir)
    hub.add_repo(DATASET, private=False)
    sync = make_sync(data_dir)

    with capture_logs() as logs:
        sync.start()
        ok = sync.flush(timeout=20)

    assert not ok
    assert not hub.commits
    assert sync.status.last_error is not None and "is public" in sync.status.last_error
    assert sync.status.pending
    assert events(logs, "hub.push_failed")
    hub.repo(DATASET).private = True  # the operator fixes it: the next push goes through
    assert sync.flush(timeout=20)
    assert hub.commits and sync.status.last_error is None
    pushed = len(hub.commits)
    hub.repo(DATASET).private = False  # made public again later: pushing stops at once
    assert not sync.flush(timeout=20)
    assert len(hub.commits) == pushed and "is public" in (sync.status.last_error or "")


@pytest.mark.parametrize(
    ("token", "status"),
    [(WRONG_TOKEN, 401), (READ_ONLY_TOKEN, 403)],
    ids=["wrong-token", "read-only-token"],
)
def test_a_rejected_token_is_logged_clearly_and_local_data_stays(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync], token: str, status: int
) -> None:
    data_dir = tmp_path / "data"
    seed_data_dir(data_dir)
    before = local_files(data_dir)
    if status == 403:
        hub.add_repo(DATASET)  # readable with that token, not writable
    sync = make_sync(data_dir, token=token)

    with capture_logs() as logs:
        sync.start()
        ok = sync.flush(timeout=20)

    assert not ok
    expected = f"HF_TOKEN was rejected by the Hub ({status}): check the token has write access"
    assert sync.status.last_error is not None and sync.status.last_error.startswith(expected)
    assert sync.status.pending and sync.status.last_success_at is None
    failed = events(logs, "hub.push_failed")
    assert failed and all(e["status"] == status and e["log_level"] == "error" for e in failed)
    assert failed[0]["message"].startswith(expected)
    assert token not in repr(logs)
    assert local_files(data_dir) == before
    assert not hub.commits


def test_an_unreachable_hub_does_not_break_start(
    tmp_path: Path, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    seed_data_dir(data_dir)
    sync = make_sync(data_dir, endpoint=f"http://127.0.0.1:{free_port()}")

    sync.start()
    assert not sync.flush(timeout=20)

    assert sync.status.last_error is not None
    assert sync.status.last_error.startswith("Cannot reach the Hub")


# ----------------------------------------------------------------- shutdown

_SHUTDOWN_SCRIPT = r"""
import pathlib, signal, sys, time
from chatlib.hub_sync import HubSync, install_signal_flush

data_dir, endpoint, token, repo, mode, relative, content = sys.argv[1:8]
root = pathlib.Path(data_dir)
if mode == "chain":
    def previous(signum, frame):
        print("PREVIOUS HANDLER RAN", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, previous)
sync = HubSync(root, repo, token, endpoint=endpoint, every_minutes=60)
sync.start()
install_signal_flush(sync, timeout=20)
if not sync.flush(20):
    sys.exit("the first push failed")
target = root / relative
target.parent.mkdir(parents=True, exist_ok=True)
target.write_bytes(content.encode())
print("READY", flush=True)
if mode == "exit":
    sys.exit(0)
while True:
    time.sleep(0.05)
"""


def _read_until_ready(process: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    """Read the child's stdout until READY (or its end); return everything read."""
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while b"READY\n" not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    return seen.decode(errors="replace")


@pytest.mark.parametrize(
    ("mode", "returncode"),
    [("sigterm", -signal.SIGTERM), ("chain", 3), ("exit", 0)],
    ids=["sigterm-default", "sigterm-chained-handler", "normal-exit"],
)
def test_shutdown_flushes_the_last_change(
    tmp_path: Path, hub: FakeHfHub, mode: str, returncode: int
) -> None:
    data_dir = tmp_path / "data"
    seed_data_dir(data_dir)
    owner, cid = hex_id(), hex_id()
    relative = f"conversations/{owner}/{cid}.json"
    content = conversation(cid, 42.0, "the very last message").decode()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    args = [data_dir, hub.endpoint, DEFAULT_TOKEN, DATASET, mode, relative, content]
    process = subprocess.Popen(
        [sys.executable, "-c", _SHUTDOWN_SCRIPT, *map(str, args)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output = _read_until_ready(process)
        assert "READY" in output, output
        if mode != "exit":
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        assert process.stdout is not None
        output += process.stdout.read().decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    assert process.returncode == returncode, output
    # One commit at start-up, one at shutdown: the periodic push (hourly) never ran.
    first_push, shutdown_flush = hub.commits
    assert relative not in first_push.files
    assert shutdown_flush.files[relative] == content.encode()
    if mode == "chain":
        assert "PREVIOUS HANDLER RAN" in output


def test_install_signal_flush_is_main_thread_only_and_can_be_undone(
    tmp_path: Path, make_sync: Callable[..., HubSync]
) -> None:
    sync = make_sync(tmp_path / "data")
    errors: list[BaseException] = []

    def install_off_main_thread() -> None:
        try:
            install_signal_flush(sync, timeout=1.0)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=install_off_main_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])

    original = signal.getsignal(signal.SIGTERM)
    uninstall = install_signal_flush(sync, timeout=1.0)
    try:
        assert signal.getsignal(signal.SIGTERM) is not original
    finally:
        uninstall()
    assert signal.getsignal(signal.SIGTERM) == original


# ----------------------------------------------------------------- settings


def test_sync_is_off_unless_repo_and_token_are_set(tmp_path: Path) -> None:
    base = {"DATA_DIR": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:9"}
    for env in ({}, {"HF_DATASET_REPO": DATASET}, {"HF_TOKEN": DEFAULT_TOKEN}):
        settings = Settings.from_env({**base, **env}, env_file=None)
        assert HubSync.from_settings(settings) is None

    settings = Settings.from_env(
        {
            **base,
            "HF_DATASET_REPO": DATASET,
            "HF_TOKEN": DEFAULT_TOKEN,
            "HF_SYNC_EVERY_MINUTES": "2",
        },
        env_file=None,
    )
    sync = HubSync.from_settings(settings)
    assert sync is not None
    assert (sync.repo_id, sync.endpoint, sync.every_seconds) == (DATASET, "http://127.0.0.1:9", 120)
    assert sync.data_dir == tmp_path
    assert DEFAULT_TOKEN not in repr(sync)
    assert sync.status.enabled and sync.status.last_attempt_at is None


def test_a_malformed_repo_id_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HF_DATASET_REPO"):
        HubSync(tmp_path, "no-owner", DEFAULT_TOKEN, endpoint="http://x", every_minutes=1)


# ------------------------------------------------------------ before_push


def test_the_before_push_hook_writes_files_that_the_same_push_takes(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    owner, cid = hex_id(), hex_id()
    relative = f"conversations/{owner}/{cid}.json"
    calls: list[float] = []

    def export_from_database() -> None:
        calls.append(time.monotonic())
        write(data_dir, relative, conversation(cid, float(len(calls)), f"version {len(calls)}"))

    sync = make_sync(data_dir, before_push=export_from_database)
    assert sync.flush(timeout=20)
    assert hub.repo(DATASET).files[relative] == conversation(cid, 1.0, "version 1")
    assert sync.flush(timeout=20)
    assert hub.repo(DATASET).files[relative] == conversation(cid, 2.0, "version 2")
    assert len(calls) == 2


def test_a_failing_before_push_hook_still_pushes_what_is_on_disk_and_says_so(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    synced = seed_data_dir(data_dir)
    database_up = False

    def export_from_database() -> None:
        if not database_up:
            raise ConnectionRefusedError("postgresql://chat:hunter2@db:5432/chat refused")

    sync = make_sync(data_dir, before_push=export_from_database)
    with capture_logs() as logs:
        assert not sync.flush(timeout=20)

    remote = hub.repo(DATASET).files
    assert all(remote[p] == data for p, data in synced.items())
    status = sync.status
    assert status.pending and status.last_error is not None
    assert "latest conversations" in status.last_error
    assert events(logs, "hub.before_push_failed")[0]["error"] == "ConnectionRefusedError"
    assert "hunter2" not in repr(logs) and "hunter2" not in status.last_error
    database_up = True
    assert sync.flush(timeout=20)
    assert sync.status.last_error is None and not sync.status.pending


# ---------------------------------------------------------- attached files


def test_attached_files_are_synced_by_content_name_only() -> None:
    owner, sha = hex_id(), hashlib.sha256(b"x").hexdigest()
    assert is_synced_path(f"attachments/{owner}/{sha}.png")
    assert is_synced_path(f"attachments/{owner}/{sha}.pdf")
    for path in (
        f"attachments/{owner}/{sha}.exe",
        f"attachments/{owner}/{sha}",
        f"attachments/{owner}/photo.png",
        f"attachments/{owner}/.{sha}.png.tmp",
        f"attachments/../secrets/{sha}.png",
        f"attachments/not-an-owner/{sha}.png",
    ):
        assert not is_synced_path(path), path


def test_attached_files_are_pushed_restored_and_deleted_like_conversations(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    owner = hex_id()
    picture, gone = b"\x89PNG\r\n\x1a\n" + bytes(16), b"%PDF-1.4\n%%EOF\n"
    paths = {
        data: f"attachments/{owner}/{hashlib.sha256(data).hexdigest()}.{suffix}"
        for data, suffix in ((picture, "png"), (gone, "pdf"))
    }
    for data, relative in paths.items():
        write(data_dir, relative, data)
    sync = make_sync(data_dir)
    assert sync.flush(timeout=20)
    assert hub.repo(DATASET).files[paths[picture]] == picture

    (data_dir / paths[gone]).unlink()  # swept as unused
    assert sync.flush(timeout=20)
    assert paths[gone] not in hub.repo(DATASET).files

    restarted = tmp_path / "restarted"
    report = make_sync(restarted).restore()
    assert report.ok and report.added == 1
    assert local_files(restarted) == {paths[picture]: picture}


def test_a_damaged_attached_file_on_the_hub_is_not_restored(
    tmp_path: Path, hub: FakeHfHub, make_sync: Callable[..., HubSync]
) -> None:
    data_dir = tmp_path / "data"
    relative = f"attachments/{hex_id()}/{hashlib.sha256(b'right').hexdigest()}.txt"
    write(data_dir, relative, b"wrong")
    assert make_sync(data_dir).flush(timeout=20)

    report = make_sync(tmp_path / "restarted").restore()

    assert report.ok and report.skipped == 1
    assert not (tmp_path / "restarted" / relative).exists()
