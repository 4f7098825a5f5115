"""Who is asking: the browser's stored identity, an optional HF login, and the client IP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from chatlib.identity import Owner, is_valid_anonymous_id, new_anonymous_id, owner_key
from chatlib.keys import looks_like_key
from chatlib.ratelimit import IPNetwork, client_ip

# Why a stored state was not used as it stands (logged as `identity.state_rejected`).
StateRejection = Literal[
    "not_an_object", "anon_id_missing", "anon_id_wrong_shape", "api_key_wrong_shape"
]


@dataclass(frozen=True)
class BrowserIdentity:
    """What lives in the visitor's browser: never on our disk.

    Gradio keeps it in the browser's localStorage, scrambled with a secret that the page
    itself ships, so it is a bearer credential like a session cookie: anyone with that
    browser profile can read the id (which opens that visitor's chats) and a remembered key.
    """

    anon_id: str = field(repr=False)
    api_key: str | None = field(default=None, repr=False)
    migration_declined: bool = False

    def to_value(self) -> dict[str, Any]:
        """The JSON value stored by the browser."""
        return {
            "anon_id": self.anon_id,
            "api_key": self.api_key,
            "migration_declined": self.migration_declined,
        }

    @classmethod
    def parse(cls, value: Any) -> tuple[BrowserIdentity, StateRejection | None]:
        """The stored identity and None, or what replaced it and why; never raises.

        Nothing stored yet (None) gives a fresh identity and None: a first visit. A value
        that is not an object, or whose id does not have the shape `new_anonymous_id`
        makes, gives a fresh identity and the reason. A well-formed id with something that
        is no key in `api_key` keeps the id, drops the key and names that. The reason never
        contains the value itself.
        """
        if value is None:
            return cls(anon_id=new_anonymous_id()), None
        if not isinstance(value, Mapping):
            return cls(anon_id=new_anonymous_id()), "not_an_object"
        anon_id = value.get("anon_id")
        if anon_id is None:
            return cls(anon_id=new_anonymous_id()), "anon_id_missing"
        if not is_valid_anonymous_id(anon_id):
            return cls(anon_id=new_anonymous_id()), "anon_id_wrong_shape"
        key = value.get("api_key")
        identity = cls(
            anon_id=str(anon_id),
            api_key=key if looks_like_key(key) else None,
            migration_declined=value.get("migration_declined") is True,
        )
        if key is not None and identity.api_key is None:
            return identity, "api_key_wrong_shape"
        return identity, None

    @classmethod
    def from_value(cls, value: Any) -> BrowserIdentity | None:
        """Parse a stored value; None when it is missing or not ours (treat as untrusted)."""
        identity, rejected = cls.parse(value)
        if value is None or rejected in ("not_an_object", "anon_id_missing", "anon_id_wrong_shape"):
            return None
        return identity

    @classmethod
    def ensure(cls, value: Any) -> BrowserIdentity:
        """The stored identity, or a fresh anonymous one."""
        return cls.parse(value)[0]


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
    user_keys_allowed: bool = True,
    session_api_key: str | None = None,
) -> Visitor:
    """Resolve the visitor: logged-in HF users own by their `sub`, others by browser id.

    Their own key is the one held for this page session (`session_api_key`), else the
    one remembered in the browser; with `user_keys_allowed` False (ALLOW_USER_KEYS=false
    and an operator key set) neither is used, whatever the browser sends.
    """
    anon_key = owner_key(secret, Owner(kind="anon", subject=identity.anon_id))
    subject, name = profile_fields(profile)
    ip = client_ip(peer, list(forwarded_for), trusted_proxies)
    api_key = (session_api_key or identity.api_key) if user_keys_allowed else None
    if subject:
        return Visitor(
            owner_key=owner_key(secret, Owner(kind="hf", subject=subject)),
            anon_owner_key=anon_key,
            logged_in=True,
            user_name=name,
            rate_key=f"hf:{subject}",
            api_key=api_key,
        )
    return Visitor(
        owner_key=anon_key,
        anon_owner_key=anon_key,
        logged_in=False,
        user_name=None,
        rate_key=ip,
        api_key=api_key,
    )


def is_operator(
    *,
    user_name: str | None,
    admin_user_names: frozenset[str],
    token_ok: bool = False,
    **_retired: object,
) -> bool:
    """Whether this visitor sees the app-wide usage (every visitor's costs and the CSV).

    A logged-in user named in ADMIN_USERS does, and so does a page session that presented
    the operator token (`OperatorGate.check`). Nothing about the connection grants it:
    a loopback peer may be a reverse proxy or a share tunnel serving everyone.
    (`_retired` swallows the old peer/forwarded_for/on_space/share arguments until every
    caller has dropped them; they are ignored.)
    """
    if token_ok:
        return True
    return user_name is not None and user_name in admin_user_names
