"""Who is asking: anonymous browsers, HF logins, and the IP the limit applies to."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatlib.identity import is_valid_anonymous_id, new_anonymous_id
from chatlib.keys import looks_like_key
from chatlib.ratelimit import parse_trusted_proxies
from chatlib.storage import ConversationStore
from chatlib.visitors import BrowserIdentity, StateRejection, identify, is_operator

SECRET = "server-secret-for-tests"


def test_an_anonymous_browser_owns_by_its_id_and_is_limited_by_ip() -> None:
    browser = BrowserIdentity(anon_id=new_anonymous_id())
    visitor = identify(
        SECRET, browser, None, peer="203.0.113.5", forwarded_for=[], trusted_proxies=()
    )
    assert not visitor.logged_in
    assert visitor.owner_key == visitor.anon_owner_key
    assert browser.anon_id not in visitor.owner_key
    assert visitor.rate_key == "203.0.113.5"


def test_a_logged_in_user_owns_by_account_and_keeps_a_link_to_their_browser() -> None:
    browser = BrowserIdentity(anon_id=new_anonymous_id())
    profile = {"sub": "6612abc", "preferred_username": "ada", "name": "Ada L."}
    visitor = identify(
        SECRET, browser, profile, peer="203.0.113.5", forwarded_for=[], trusted_proxies=()
    )
    again = identify(
        SECRET,
        BrowserIdentity(anon_id=new_anonymous_id()),
        profile,
        peer="198.51.100.1",
        forwarded_for=[],
        trusted_proxies=(),
    )
    assert visitor.logged_in and visitor.user_name == "ada"
    assert visitor.owner_key == again.owner_key  # same account on another browser
    assert visitor.owner_key != visitor.anon_owner_key
    assert visitor.rate_key == "hf:6612abc"


def test_moving_anonymous_chats_into_the_account_loses_nothing(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path)
    browser = BrowserIdentity(anon_id=new_anonymous_id())
    visitor = identify(
        SECRET,
        browser,
        {"sub": "42", "preferred_username": "bob"},
        peer=None,
        forwarded_for=[],
        trusted_proxies=(),
    )
    for title in ("one", "two"):
        chat = store.new_conversation("openai/gpt-4o", "", 0.3)
        store.save(visitor.anon_owner_key, chat.__class__(**{**chat.__dict__, "title": title}))
    assert store.move_all(visitor.anon_owner_key, visitor.owner_key) == 2
    assert store.list(visitor.anon_owner_key).conversations == []
    assert sorted(c.title for c in store.list(visitor.owner_key).conversations) == ["one", "two"]


def test_a_tampered_browser_value_is_not_an_identity() -> None:
    assert BrowserIdentity.from_value({"anon_id": "../../etc"}) is None
    assert BrowserIdentity.from_value("hello") is None
    assert BrowserIdentity.from_value(None) is None
    fresh = BrowserIdentity.ensure({"anon_id": 12})
    assert BrowserIdentity.from_value(fresh.to_value()) == fresh
    forged = BrowserIdentity.from_value({"anon_id": fresh.anon_id, "api_key": "chat.started"})
    assert forged is not None and forged.api_key is None


def test_forwarded_for_counts_only_behind_a_trusted_proxy() -> None:
    browser = BrowserIdentity(anon_id=new_anonymous_id())
    trusted = parse_trusted_proxies("10.0.0.0/8")
    behind = identify(
        SECRET,
        browser,
        None,
        peer="10.0.0.2",
        forwarded_for=["198.51.100.9, 10.0.0.7"],
        trusted_proxies=trusted,
    )
    direct = identify(
        SECRET,
        browser,
        None,
        peer="203.0.113.5",
        forwarded_for=["198.51.100.9"],
        trusted_proxies=trusted,
    )
    assert behind.rate_key == "198.51.100.9"
    assert direct.rate_key == "203.0.113.5"


def test_only_a_listed_user_or_the_operator_link_opens_everyones_usage() -> None:
    admins = frozenset({"boss"})
    assert is_operator(user_name="boss", admin_user_names=admins)
    assert not is_operator(user_name="someone", admin_user_names=admins)
    assert not is_operator(user_name=None, admin_user_names=admins)
    assert not is_operator(user_name=None, admin_user_names=frozenset())
    # The session that opened the operator link (the right token) sees it, logged in or not.
    assert is_operator(user_name=None, admin_user_names=admins, token_ok=True)
    assert is_operator(user_name="someone", admin_user_names=frozenset(), token_ok=True)


def test_a_loopback_connection_alone_no_longer_opens_everyones_usage() -> None:
    # `make run` opened on the laptop, a reverse proxy on the same host that adds no
    # X-Forwarded-For, the share tunnel: all connect from loopback, none is the operator.
    for peer in ("127.0.0.1", "::1"):
        assert not is_operator(
            user_name=None,
            admin_user_names=frozenset({"boss"}),
            on_space=False,
            share=False,
            peer=peer,
            forwarded_for=[],
        )


def test_without_user_keys_allowed_no_visitor_key_is_used_whatever_the_browser_sends() -> None:
    crafted = BrowserIdentity.ensure(
        {"anon_id": new_anonymous_id(), "api_key": "sk-or-v1-crafted-123456789"}
    )
    assert crafted.api_key == "sk-or-v1-crafted-123456789"
    common: dict[str, Any] = {"peer": "203.0.113.5", "forwarded_for": [], "trusted_proxies": ()}
    refused = identify(
        SECRET,
        crafted,
        None,
        user_keys_allowed=False,
        session_api_key="sk-or-v1-session-123456789",
        **common,
    )
    assert refused.api_key is None
    assert identify(SECRET, crafted, None, **common).api_key == "sk-or-v1-crafted-123456789"
    # A key pasted for this page session wins over one remembered on the device.
    session = identify(
        SECRET, crafted, None, session_api_key="sk-or-v1-session-123456789", **common
    )
    assert session.api_key == "sk-or-v1-session-123456789"


# --- stored state that does not parse -------------------------------------------------


def test_a_first_visit_gets_a_fresh_identity_without_complaint() -> None:
    identity, rejected = BrowserIdentity.parse(None)
    assert rejected is None and is_valid_anonymous_id(identity.anon_id)
    again, rejected = BrowserIdentity.parse(identity.to_value())
    assert again == identity and rejected is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("hello", "not_an_object"),
        ([1, 2], "not_an_object"),
        (12, "not_an_object"),
        ({}, "anon_id_missing"),
        ({"api_key": "sk-or-v1-abc-123456789"}, "anon_id_missing"),
        ({"anon_id": "../../etc/passwd"}, "anon_id_wrong_shape"),
        ({"anon_id": 12}, "anon_id_wrong_shape"),
        ({"anon_id": "A" * 23}, "anon_id_wrong_shape"),
        ({"anon_id": ["x"]}, "anon_id_wrong_shape"),
    ],
)
def test_a_stored_state_that_is_not_ours_gives_a_fresh_identity_and_a_reason(
    value: Any, reason: str
) -> None:
    identity, rejected = BrowserIdentity.parse(value)
    assert rejected == reason
    assert is_valid_anonymous_id(identity.anon_id) and identity.api_key is None
    assert identity.anon_id not in repr(value)


def test_a_stored_junk_key_is_dropped_but_the_visitor_keeps_their_chats() -> None:
    anon_id = new_anonymous_id()
    identity, rejected = BrowserIdentity.parse({"anon_id": anon_id, "api_key": "<script>"})
    assert rejected == "api_key_wrong_shape"
    assert identity.anon_id == anon_id and identity.api_key is None


def test_raw_ids_and_keys_stay_out_of_the_identity_s_repr() -> None:
    identity = BrowserIdentity(anon_id=new_anonymous_id(), api_key="sk-or-v1-secret-123456789")
    assert identity.anon_id not in repr(identity)
    assert "sk-or-v1-secret" not in repr(identity)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
HOSTILE_STATE = JSON | st.fixed_dictionaries(
    {},
    optional={
        "anon_id": JSON | st.text(alphabet="Aa0_-/.\\x00", min_size=20, max_size=24),
        "api_key": JSON | st.from_regex(r"sk-or-[\w-]{0,300}", fullmatch=True),
        "migration_declined": JSON,
    },
)


@given(HOSTILE_STATE)
def test_any_hostile_stored_state_parses_without_raising(value: Any) -> None:
    identity, rejected = BrowserIdentity.parse(value)
    assert is_valid_anonymous_id(identity.anon_id)
    assert identity.api_key is None or looks_like_key(identity.api_key)
    assert rejected is None or rejected in get_args(StateRejection)
    if isinstance(value, dict) and rejected is None:
        assert identity.anon_id == value["anon_id"]
