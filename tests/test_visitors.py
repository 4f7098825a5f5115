"""Who is asking: anonymous browsers, HF logins, and the IP the limit applies to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatlib.identity import new_anonymous_id
from chatlib.ratelimit import parse_trusted_proxies
from chatlib.storage import ConversationStore
from chatlib.visitors import BrowserIdentity, identify, is_operator

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


def test_only_someone_at_this_machine_or_a_listed_user_sees_everyones_usage() -> None:
    def operator(**changes: Any) -> bool:
        base: dict[str, Any] = {
            "user_name": None,
            "admin_user_names": frozenset({"boss"}),
            "on_space": False,
            "share": False,
            "peer": "127.0.0.1",
            "forwarded_for": [],
        }
        return is_operator(**{**base, **changes})

    assert operator()  # `make run` on a laptop, opened in its own browser
    assert operator(peer="::1")
    assert not operator(peer="172.17.0.1")  # Docker's port mapping: another machine
    assert not operator(peer="192.168.1.20")  # someone on the LAN
    assert not operator(forwarded_for=["203.0.113.9"])  # behind a proxy on this machine
    assert not operator(share=True)  # the share tunnel connects from loopback for everyone
    assert not operator(on_space=True, peer="10.0.0.1")
    assert operator(on_space=True, user_name="boss", peer="10.0.0.1")
    assert not operator(on_space=True, user_name="someone", peer="10.0.0.1")
    assert not operator(peer="not an address") and not operator(peer=None)
