"""Who is asking: the browser's stored identity, an optional HF login, and the client IP."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chatlib.identity import Owner, is_valid_anonymous_id, new_anonymous_id, owner_key
from chatlib.keys import looks_like_key
from chatlib.ratelimit import IPNetwork, client_ip


@dataclass(frozen=True)
class BrowserIdentity:
    """What lives in the visitor's browser (encrypted, in localStorage): never on our disk."""

    anon_id: str
    api_key: str | None = None
    migration_declined: bool = False

    def to_value(self) -> dict[str, Any]:
        """The JSON value stored by the browser."""
        return {
            "anon_id": self.anon_id,
            "api_key": self.api_key,
            "migration_declined": self.migration_declined,
        }

    @classmethod
    def from_value(cls, value: Any) -> BrowserIdentity | None:
        """Parse a stored value; None when it is missing or not ours (treat as untrusted)."""
        if not isinstance(value, Mapping) or not is_valid_anonymous_id(value.get("anon_id")):
            return None
        key = value.get("api_key")
        return cls(
            anon_id=str(value["anon_id"]),
            api_key=key if looks_like_key(key) else None,
            migration_declined=value.get("migration_declined") is True,
        )

    @classmethod
    def ensure(cls, value: Any) -> BrowserIdentity:
        """The stored identity, or a fresh anonymous one."""
        return cls.from_value(value) or cls(anon_id=new_anonymous_id())


@dataclass(frozen=True)
class Visitor:
    """The owner of the conversations shown, and how to limit and bill them."""

    owner_key: str
    anon_owner_key: str
    logged_in: bool
    user_name: str | None
    rate_key: str
    api_key: str | None


def profile_fields(profile: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """(stable subject id, user name) from an OAuth profile, or (None, None)."""
    if not profile:
        return None, None
    subject = profile.get("sub")
    name = profile.get("preferred_username") or profile.get("name")
    return (
        str(subject) if subject else None,
        str(name) if name else None,
    )


def identify(
    secret: str,
    identity: BrowserIdentity,
    profile: Mapping[str, Any] | None,
    *,
    peer: str | None,
    forwarded_for: Sequence[str],
    trusted_proxies: Sequence[IPNetwork],
) -> Visitor:
    """Resolve the visitor: logged-in HF users own by their `sub`, others by browser id."""
    anon_key = owner_key(secret, Owner(kind="anon", subject=identity.anon_id))
    subject, name = profile_fields(profile)
    ip = client_ip(peer, list(forwarded_for), trusted_proxies)
    if subject:
        return Visitor(
            owner_key=owner_key(secret, Owner(kind="hf", subject=subject)),
            anon_owner_key=anon_key,
            logged_in=True,
            user_name=name,
            rate_key=f"hf:{subject}",
            api_key=identity.api_key,
        )
    return Visitor(
        owner_key=anon_key,
        anon_owner_key=anon_key,
        logged_in=False,
        user_name=None,
        rate_key=ip,
        api_key=identity.api_key,
    )


def is_operator(
    *,
    user_name: str | None,
    admin_user_names: frozenset[str],
    on_space: bool,
    share: bool,
    peer: str | None,
    forwarded_for: Sequence[str],
) -> bool:
    """Whether this visitor sees the app-wide usage (every visitor's costs and the CSV).

    A logged-in user named in ADMIN_USERS does. Off a Space, so does someone at this very
    machine: a loopback connection with no proxy in between, and no share link open (its
    tunnel connects from loopback for everyone). Anyone else reaching a Docker or LAN
    deployment does not.
    """
    if user_name is not None and user_name in admin_user_names:
        return True
    if on_space or share or forwarded_for or peer is None:
        return False
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False
