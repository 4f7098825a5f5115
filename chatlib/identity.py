"""Who owns a conversation: the server secret, browser identities and owner keys.

A visitor is either a logged-in Hugging Face user (stable `sub` claim) or an anonymous
browser holding a random id in `gr.BrowserState`. Neither raw value is ever written to disk
or to a log: storage and logs only see `owner_key`, an HMAC of it under the server secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from chatlib.errors import ConfigError

SecretSource = Literal["env", "hf_token", "file"]
OwnerKind = Literal["hf", "anon"]

_HF_TOKEN_LABEL = b"openrouter-chat/browser-state-secret/v1"
_STORAGE_KEY_LABEL = b"openrouter-chat/browser-state-storage-key/v1"
_BROWSER_SECRET_LABEL = b"openrouter-chat/browser-state-encryption/v1"
_SECRET_FILE_RE = re.compile(r"[0-9a-f]{64}")
# secrets.token_urlsafe(16): 16 random bytes, base64url without padding = 22 characters.
_ANONYMOUS_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")


def _hmac_hex(key: str, message: bytes) -> str:
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest()


def load_or_create_server_secret(
    data_dir: Path,
    configured: str | None,
    *,
    hf_token: str | None = None,
    sync_enabled: bool = False,
) -> tuple[str, str]:
    """Return (secret, source): BROWSER_STATE_SECRET, else derived from HF_TOKEN, else a file.

    With dataset sync on, the HF token is the one secret that survives a Space rebuild, so
    deriving from it keeps visitors' identities. Otherwise a random secret is generated once
    and kept in `data_dir/secrets/server_secret` (mode 0600, directory 0700).
    """
    if configured:
        return configured, "env"
    if sync_enabled and hf_token:
        return _hmac_hex(hf_token, _HF_TOKEN_LABEL), "hf_token"
    path = data_dir / "secrets" / "server_secret"
    try:
        return _load_or_create_secret_file(path), "file"
    except OSError as exc:
        raise ConfigError(
            [
                f"the server secret cannot be created in {path.parent} ({exc.strerror}); "
                "make DATA_DIR writable or set BROWSER_STATE_SECRET"
            ]
        ) from exc


def _load_or_create_secret_file(path: Path) -> str:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    existing = _read_secret_file(path)
    if existing is not None:
        return existing
    secret = secrets.token_hex(32)
    # Write a private temporary file, then link it into place: the link fails if another
    # process got there first (then its secret wins), and nobody ever reads a half-written file.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, secret.encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            winner = _read_secret_file(path)
            if winner is None:
                raise
            return winner
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    return secret


def _read_secret_file(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"the server secret file {path} cannot be read ({exc})"]) from exc
    if not _SECRET_FILE_RE.fullmatch(text):
        raise ConfigError(
            [
                f"the server secret file {path} is damaged. Delete it to generate a new one "
                "(anonymous visitors then lose their saved conversations) or set "
                "BROWSER_STATE_SECRET"
            ]
        )
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return text


def browser_state_params(secret: str) -> tuple[str, str]:
    """Return (storage_key, browser_secret) for `gr.BrowserState`, stable for one secret."""
    storage_key = "orc_" + _hmac_hex(secret, _STORAGE_KEY_LABEL)[:16]
    browser_secret = _hmac_hex(secret, _BROWSER_SECRET_LABEL)
    return storage_key, browser_secret


def new_anonymous_id() -> str:
    """A fresh random id (128 bits) for a browser that has none yet."""
    return secrets.token_urlsafe(16)


def is_valid_anonymous_id(value: object) -> bool:
    """True when `value` has the exact shape `new_anonymous_id` produces."""
    return isinstance(value, str) and _ANONYMOUS_ID_RE.fullmatch(value) is not None


@dataclass(frozen=True)
class Owner:
    """The visitor a conversation belongs to; `subject` is kept out of reprs and logs."""

    kind: OwnerKind
    subject: str = field(repr=False)
    display_name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("hf", "anon"):
            raise ValueError(f"owner kind must be 'hf' or 'anon', got {self.kind!r}")
        if not self.subject:
            raise ValueError("owner subject must not be empty")


def owner_key(secret: str, owner: Owner) -> str:
    """The owner's storage name: HMAC-SHA256 of kind and subject, 32 hex characters."""
    return _hmac_hex(secret, f"{owner.kind}:{owner.subject}".encode())[:32]
