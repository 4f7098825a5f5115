"""Visitors keep their identity across restarts, and nobody's raw id reaches the disk."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from chatlib.errors import ConfigError
from chatlib.identity import (
    Owner,
    browser_state_params,
    is_valid_anonymous_id,
    load_or_create_server_secret,
    new_anonymous_id,
    owner_key,
)

HF_TOKEN = "hf_TESTTOKEN0000secret0000feedface"


def test_a_generated_secret_is_private_and_survives_restarts(tmp_path: Path) -> None:
    first, source = load_or_create_server_secret(tmp_path, None)
    again, _ = load_or_create_server_secret(tmp_path, None)

    assert source == "file"
    assert again == first
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    path = tmp_path / "secrets" / "server_secret"
    assert path.read_text().strip() == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["server_secret"]


def test_replicas_booting_together_agree_on_one_secret(tmp_path: Path) -> None:
    results: list[str] = []
    start = threading.Barrier(8)

    def boot() -> None:
        start.wait()
        results.append(load_or_create_server_secret(tmp_path, None)[0])

    threads = [threading.Thread(target=boot) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 8
    assert len(set(results)) == 1


def test_the_operators_secret_wins(tmp_path: Path) -> None:
    secret, source = load_or_create_server_secret(
        tmp_path, "operator-chosen", hf_token=HF_TOKEN, sync_enabled=True
    )

    assert (secret, source) == ("operator-chosen", "env")
    assert not (tmp_path / "secrets").exists()


def test_with_dataset_sync_the_secret_follows_the_hf_token(tmp_path: Path) -> None:
    """A rebuilt Space has an empty disk but the same token: identities must survive."""
    secret, source = load_or_create_server_secret(
        tmp_path, None, hf_token=HF_TOKEN, sync_enabled=True
    )
    rebuilt, _ = load_or_create_server_secret(
        tmp_path / "fresh-disk", None, hf_token=HF_TOKEN, sync_enabled=True
    )

    assert source == "hf_token"
    assert rebuilt == secret
    assert HF_TOKEN not in secret
    assert not (tmp_path / "secrets").exists()
    # Without sync the token is not used.
    _, source = load_or_create_server_secret(tmp_path, None, hf_token=HF_TOKEN, sync_enabled=False)
    assert source == "file"


def test_a_damaged_secret_file_is_reported_not_silently_replaced(tmp_path: Path) -> None:
    load_or_create_server_secret(tmp_path, None)
    (tmp_path / "secrets" / "server_secret").write_text("oops")

    with pytest.raises(ConfigError, match="server secret file .* is damaged"):
        load_or_create_server_secret(tmp_path, None)


def test_browser_state_keys_are_stable_and_secret_specific() -> None:
    storage_key, browser_secret = browser_state_params("server-secret")

    assert browser_state_params("server-secret") == (storage_key, browser_secret)
    assert storage_key != browser_secret
    assert "server-secret" not in storage_key + browser_secret
    assert browser_state_params("another-secret") != (storage_key, browser_secret)


def test_anonymous_ids_are_random_and_checked() -> None:
    ids = {new_anonymous_id() for _ in range(200)}

    assert len(ids) == 200
    assert all(is_valid_anonymous_id(i) for i in ids)
    for forged in (None, 42, "", "short", "../../etc/passwd/xxxxxxxx", "a" * 23, "a" * 21 + "!"):
        assert not is_valid_anonymous_id(forged)


def test_owner_keys_separate_visitors_and_hide_who_they_are() -> None:
    alice = Owner("hf", "user-sub-123", display_name="alice")
    keys = {
        owner_key("secret", alice),
        owner_key("secret", Owner("hf", "user-sub-456")),
        owner_key("secret", Owner("anon", "user-sub-123")),
        owner_key("other-secret", alice),
    }

    assert len(keys) == 4
    assert owner_key("secret", alice) == owner_key("secret", Owner("hf", "user-sub-123"))
    assert all(re.fullmatch(r"[0-9a-f]{32}", key) for key in keys)
    assert not any("user-sub" in key or "alice" in key for key in keys)
    assert "user-sub-123" not in repr(alice)


def test_an_unwritable_data_dir_names_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")

    with pytest.raises(ConfigError, match="make DATA_DIR writable or set BROWSER_STATE_SECRET"):
        load_or_create_server_secret(blocker, None)
