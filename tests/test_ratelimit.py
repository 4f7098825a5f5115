"""Who a visitor is behind proxies, and how many messages a minute they may send."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Callable
from ipaddress import IPv4Network, IPv6Network, ip_address

import limits.aio.storage.memory
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from chatlib.errors import ChatError, ConfigError, RateLimited, UpstreamRateLimited
from chatlib.ratelimit import (
    MAX_FORWARDED_HOPS,
    SPACE_PROXY_NETWORKS,
    RateDecision,
    RateLimiter,
    client_ip,
    effective_trusted_proxies,
    parse_hop,
    parse_trusted_proxies,
)
from tests.conftest import free_port
from tests.redis_server import redis_url  # noqa: F401 - pytest fixture

PROXY = "10.0.0.5"
TRUSTED = parse_trusted_proxies("10.0.0.0/8, 2001:db8:ffff::/48")


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake clock for the limiter and for `limits`' in-memory storage.

    `limits` has no clock parameter: its memory storage stamps entries with the
    `time.time()` of its own module, so that module's `time` is swapped for the fake.
    """
    fake = FakeClock()
    monkeypatch.setattr(limits.aio.storage.memory, "time", types.SimpleNamespace(time=fake))
    return fake


LimiterFactory = Callable[..., RateLimiter]


@pytest.fixture
async def make_limiter() -> AsyncIterator[LimiterFactory]:
    """Build RateLimiters (memory:// unless told); all are closed after the test."""
    made: list[RateLimiter] = []

    def factory(
        per_minute: int,
        per_minute_logged_in: int = 0,
        *,
        storage_uri: str = "memory://",
        clock: Callable[[], float] | None = None,
        storage_timeout_seconds: float = 1.0,
        key_checks_per_minute: int = 0,
        uploads_per_minute: int = 0,
    ) -> RateLimiter:
        kwargs = {} if clock is None else {"clock": clock}
        limiter = RateLimiter(
            storage_uri,
            per_minute,
            per_minute_logged_in,
            key_checks_per_minute=key_checks_per_minute,
            uploads_per_minute=uploads_per_minute,
            storage_timeout_seconds=storage_timeout_seconds,
            **kwargs,
        )
        made.append(limiter)
        return limiter

    yield factory
    for limiter in made:
        await limiter.aclose()


# --- trusted proxies -------------------------------------------------------------------


def test_trusted_proxies_accept_addresses_and_networks_of_both_families() -> None:
    parsed = parse_trusted_proxies(
        " 10.0.0.0/8,192.168.1.7 ,, 2001:db8::/32, ::1, ::ffff:172.16.0.9"
    )
    assert parsed == (
        IPv4Network("10.0.0.0/8"),
        IPv4Network("192.168.1.7/32"),
        IPv6Network("2001:db8::/32"),
        IPv6Network("::1/128"),
        IPv4Network("172.16.0.9/32"),
    )
    assert parse_trusted_proxies("") == ()


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "proxy.internal", "10.1.2.3/8", "1.2.3"])
def test_a_bad_trusted_proxy_entry_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match="TRUSTED_PROXIES entry") as info:
        parse_trusted_proxies(f"10.0.0.1, {bad}")
    assert repr(bad) in str(info.value)


def test_on_a_space_an_empty_setting_trusts_the_space_proxy_ranges() -> None:
    assert effective_trusted_proxies("", on_space=True) == SPACE_PROXY_NETWORKS
    assert effective_trusted_proxies("", on_space=False) == ()
    assert effective_trusted_proxies("203.0.113.7", on_space=True) == (
        IPv4Network("203.0.113.7/32"),
    )
    space = effective_trusted_proxies("", on_space=True)
    for proxy in ("10.16.3.4", "172.20.0.1", "192.168.0.9", "100.64.1.1", "127.0.0.1", "::1"):
        assert client_ip(proxy, "198.51.100.23", space) == "198.51.100.23"
    assert client_ip("fd12::1", "2001:db8::77", space) == "2001:db8::77"


# --- client IP -------------------------------------------------------------------------


def test_untrusted_peer_is_the_client_whatever_the_header_says() -> None:
    assert client_ip("203.0.113.9", "1.1.1.1", TRUSTED) == "203.0.113.9"
    assert client_ip("203.0.113.9", ["1.1.1.1", "10.0.0.1"], TRUSTED) == "203.0.113.9"
    assert client_ip("203.0.113.9", None, ()) == "203.0.113.9"


def test_trusted_proxy_chain_resolves_to_the_first_untrusted_hop_from_the_right() -> None:
    header = "6.6.6.6, 198.51.100.23, 10.1.1.1, 10.2.2.2"
    assert client_ip(PROXY, header, TRUSTED) == "198.51.100.23"
    assert client_ip(PROXY, "198.51.100.23", TRUSTED) == "198.51.100.23"
    assert client_ip(PROXY, None, TRUSTED) == PROXY
    assert client_ip(PROXY, "", TRUSTED) == PROXY


def test_all_trusted_hops_give_the_left_most_one() -> None:
    assert client_ip(PROXY, "10.9.9.9, 10.8.8.8", TRUSTED) == "10.9.9.9"


def test_several_header_lines_count_as_one_list() -> None:
    lines = ["6.6.6.6, 198.51.100.23", "", "10.1.1.1"]
    assert client_ip(PROXY, lines, TRUSTED) == "198.51.100.23"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("198.51.100.23:5678", "198.51.100.23"),
        ("::ffff:198.51.100.23", "198.51.100.23"),
        ("  198.51.100.23  ", "198.51.100.23"),
        ("2001:DB8:0::1", "2001:db8::1"),
    ],
)
def test_ports_brackets_and_mapped_addresses_are_normalised(header: str, expected: str) -> None:
    assert client_ip(PROXY, f"{header}, 10.1.1.1", TRUSTED) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("198.51.100.23, unknown", PROXY),  # obfuscated hop right after our proxy
        ("198.51.100.23, unknown, 10.1.1.1", "10.1.1.1"),
        ("198.51.100.23, _hidden, 10.1.1.1", "10.1.1.1"),
        ("198.51.100.23,,10.1.1.1", "10.1.1.1"),  # empty element
        ("198.51.100.23, 10.1.1.1,", PROXY),  # trailing comma
        ("<script>, 10.1.1.1", "10.1.1.1"),
        ("[2001:db8::1, 10.1.1.1", "10.1.1.1"),  # unclosed bracket
        ("[2001:db8::1]:99999, 10.1.1.1", "10.1.1.1"),  # port out of range
        ("1.2.3.4:80:80, 10.1.1.1", "10.1.1.1"),
        ("fe80::1%eth0, 10.1.1.1", "10.1.1.1"),  # zone ids are local to a host
        ("１.２.３.４, 10.1.1.1", "10.1.1.1"),  # full-width digits
        ("x" * 100 + ", 10.1.1.1", "10.1.1.1"),  # far too long for an address
    ],
)
def test_garbage_stops_the_walk_at_the_last_trusted_hop(header: str, expected: str) -> None:
    assert client_ip(PROXY, header, TRUSTED) == expected


def test_only_the_right_most_30_hops_are_read() -> None:
    inner = ", ".join(f"10.0.{i // 256}.{i % 256}" for i in range(MAX_FORWARDED_HOPS))
    assert client_ip(PROXY, f"198.51.100.23, {inner}", TRUSTED) == "10.0.0.0"
    shorter = ", ".join(f"10.0.0.{i}" for i in range(MAX_FORWARDED_HOPS - 1))
    assert client_ip(PROXY, f"198.51.100.23, {shorter}", TRUSTED) == "198.51.100.23"
    huge = "6.6.6.6," * 200_000 + "198.51.100.23"
    assert client_ip(PROXY, huge, TRUSTED) == "198.51.100.23"


def test_peer_edge_cases() -> None:
    assert client_ip(None, "198.51.100.23", TRUSTED) == "unknown"
    assert client_ip("::ffff:10.0.0.5", "198.51.100.23", TRUSTED) == "198.51.100.23"
    assert client_ip("testclient", "198.51.100.23", TRUSTED) == "testclient"


# --- properties ------------------------------------------------------------------------

_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)
_hop_text = st.one_of(
    _ipv4,
    _ipv6,
    _ipv6.map(lambda a: f"[{a}]:443"),
    _ipv4.map(lambda a: f"{a}:8080"),
    st.sampled_from(["unknown", "", " ", "_x", "[", "]:1", "10.0.0.1", "::1", "::ffff:10.0.0.2"]),
    st.text(max_size=20),
)
_header = st.one_of(
    st.text(max_size=300),
    st.lists(_hop_text, max_size=40).map(", ".join),
    st.lists(st.text(max_size=40), max_size=4),
)
_peer = st.one_of(st.none(), _ipv4, _ipv6, st.sampled_from([PROXY, "::1", "10.200.0.1"]))


def _addresses_in(header: str | list[str]) -> set[str]:
    """Every address a liberal reader could see in the header (independent of parse_hop)."""
    text = header if isinstance(header, str) else ",".join(header)
    found: set[str] = set()
    for item in text.split(","):
        item = item.strip()
        for candidate in (item, item.strip("[]"), item.rsplit(":", 1)[0].strip("[]")):
            try:
                address = ip_address(candidate)
            except ValueError:
                continue
            mapped = getattr(address, "ipv4_mapped", None)
            found.add(str(mapped or address))
    return found


def _normalised_peer(peer: str) -> str:
    address = ip_address(peer)
    return str(getattr(address, "ipv4_mapped", None) or address)


@given(peer=_peer, header=st.one_of(st.none(), _header))
def test_client_ip_never_raises_and_returns_the_peer_or_a_header_address(
    peer: str | None, header: str | list[str] | None
) -> None:
    result = client_ip(peer, header, TRUSTED)
    if peer is None:
        assert result == "unknown"
        return
    assert result == _normalised_peer(peer) or result in _addresses_in(header or "")


@given(header=st.one_of(st.none(), _header), peer=st.one_of(_ipv4, _ipv6))
def test_an_untrusted_peer_always_is_the_client(header: str | list[str] | None, peer: str) -> None:
    address = ip_address(peer)
    if any(address in network for network in TRUSTED):
        return
    assert client_ip(peer, header, TRUSTED) == _normalised_peer(peer)


@given(
    client=_ipv4.filter(lambda a: not ip_address(a).is_private),
    proxies=st.lists(st.sampled_from(["10.0.0.1", "10.3.2.1", "2001:db8:ffff::9"]), max_size=4),
    spoofed=st.lists(_hop_text, max_size=40),
)
def test_entries_an_attacker_prepends_never_change_the_result(
    client: str, proxies: list[str], spoofed: list[str]
) -> None:
    honest = ", ".join([client, *proxies])
    expected = client_ip(PROXY, honest, TRUSTED)
    assert expected == client
    forged = ", ".join([*spoofed, honest])
    assert client_ip(PROXY, forged, TRUSTED) == expected


@given(st.text(max_size=80))
def test_parse_hop_never_raises(text: str) -> None:
    parse_hop(text)


# --- the limiter -----------------------------------------------------------------------


async def test_a_visitor_can_burst_up_to_the_limit_and_is_then_told_when_to_retry(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    limiter = make_limiter(3, clock=clock)
    decisions = [await limiter.hit("198.51.100.23") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.remaining for d in decisions] == [2, 1, 0]
    clock.advance(12)
    refused = await limiter.hit("198.51.100.23")
    assert refused == RateDecision(allowed=False, retry_after_seconds=48.0, remaining=0, limit=3)
    with pytest.raises(RateLimited) as info:
        refused.raise_if_refused()
    assert str(info.value) == (
        "You're sending messages too fast: the limit is 3 per minute. Try again in 48 s."
    )


async def test_each_slot_comes_back_sixty_seconds_after_it_was_used(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    limiter = make_limiter(3, clock=clock)
    for _ in range(3):  # one message at t=0, 10 and 20
        assert (await limiter.hit("ip")).allowed
        clock.advance(10)
    assert (await limiter.hit("ip")).retry_after_seconds == pytest.approx(30)  # t=30
    clock.advance(30.5)  # t=60.5: the t=0 slot is free again, only that one
    assert (await limiter.hit("ip")).allowed
    refused = await limiter.hit("ip")
    assert not refused.allowed and refused.retry_after_seconds == pytest.approx(9.5)
    clock.advance(10)  # t=70.5: the t=10 slot
    assert (await limiter.hit("ip")).allowed
    assert not (await limiter.hit("ip")).allowed


async def test_refused_requests_do_not_count_against_the_visitor(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    limiter = make_limiter(2, clock=clock)
    assert (await limiter.hit("ip")).allowed and (await limiter.hit("ip")).allowed
    for _ in range(20):
        clock.advance(1)
        assert not (await limiter.hit("ip")).allowed
    clock.advance(40.5)  # 60.5 s after the two allowed requests
    assert (await limiter.hit("ip")).allowed and (await limiter.hit("ip")).allowed
    assert not (await limiter.hit("ip")).allowed


async def test_never_more_than_the_limit_in_any_rolling_minute(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    limiter = make_limiter(5, clock=clock)
    allowed_at: list[float] = []
    for _ in range(600):  # one attempt every 0.7 s for 7 minutes
        if (await limiter.hit("ip")).allowed:
            allowed_at.append(clock.now)
        clock.advance(0.7)
    for start in allowed_at:
        assert sum(1 for t in allowed_at if start <= t < start + 60) <= 5
    assert len(allowed_at) >= 5 * 7  # and the full limit is usable every minute


async def test_two_visitors_have_separate_limits(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    limiter = make_limiter(1, clock=clock)
    assert (await limiter.hit("198.51.100.1")).allowed
    assert not (await limiter.hit("198.51.100.1")).allowed
    assert (await limiter.hit("198.51.100.2")).allowed


async def test_one_ipv6_subscriber_cannot_dodge_the_limit_by_changing_address(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    limiter = make_limiter(1, clock=clock)
    assert (await limiter.hit("2001:db8:1:2::1")).allowed
    assert not (await limiter.hit("2001:db8:1:2:ffff::77")).allowed  # same /64
    assert (await limiter.hit("2001:db8:1:3::1")).allowed  # another subscriber
    assert (await limiter.hit("::ffff:198.51.100.7")).allowed  # IPv4-mapped: its own address
    assert (await limiter.hit("::ffff:198.51.100.8")).allowed


async def test_logged_in_users_have_their_own_limit_and_namespace(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    limiter = make_limiter(1, 3, clock=clock)
    assert limiter.limit_for(logged_in=True) == 3 and limiter.limit_for() == 1
    same_name = "198.51.100.1"  # a user id that happens to equal an IP shares nothing
    assert (await limiter.hit(same_name)).allowed
    assert not (await limiter.hit(same_name)).allowed
    user = [await limiter.hit(same_name, logged_in=True) for _ in range(4)]
    assert [d.allowed for d in user] == [True, True, True, False]
    assert user[0].limit == 3


async def test_logged_in_limit_zero_means_the_anonymous_limit(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    limiter = make_limiter(2, 0, clock=clock)
    assert limiter.limit_for(logged_in=True) == 2
    user = [await limiter.hit("alice", logged_in=True) for _ in range(3)]
    assert [d.allowed for d in user] == [True, True, False]
    assert (await limiter.hit("203.0.113.5")).allowed


async def test_zero_disables_the_limit(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(0)
    decisions = [await limiter.hit("ip") for _ in range(100)]
    assert all(d.allowed and d.limit == 0 for d in decisions)
    only_users = make_limiter(0, 1)
    assert (await only_users.hit("ip")).allowed and (await only_users.hit("ip")).allowed
    assert (await only_users.hit("bob", logged_in=True)).allowed
    assert not (await only_users.hit("bob", logged_in=True)).allowed


async def test_a_spoofed_header_from_an_untrusted_peer_does_not_dodge_the_limit(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    limiter = make_limiter(2, clock=clock)
    attacker = "203.0.113.66"
    results = []
    for i in range(5):
        key = client_ip(attacker, f"198.51.100.{i}", TRUSTED)
        results.append((await limiter.hit(key)).allowed)
    assert results == [True, True, False, False, False]


async def test_visitors_behind_a_trusted_proxy_are_limited_one_by_one(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    limiter = make_limiter(1, clock=clock)
    alice = client_ip(PROXY, "198.51.100.1, 10.3.3.3", TRUSTED)
    bob = client_ip(PROXY, "6.6.6.6, 198.51.100.2", TRUSTED)
    assert (await limiter.hit(alice)).allowed
    assert (await limiter.hit(bob)).allowed
    assert not (await limiter.hit(alice)).allowed


def test_this_apps_limit_is_distinct_from_openrouters() -> None:
    error = RateLimited(11.2, 20)
    assert isinstance(error, ChatError) and not isinstance(error, UpstreamRateLimited)
    assert error.retry_after == 11.2 and error.code == "rate_limited"
    assert error.user_message == (
        "You're sending messages too fast: the limit is 20 per minute. Try again in 12 s."
    )
    assert "Try again in 1 s." in str(RateLimited(0.001, 20))


@pytest.mark.parametrize("uri", ["memcached://localhost:11211", "redis", "file:///tmp/x"])
def test_an_unusable_storage_uri_is_a_configuration_error(uri: str) -> None:
    with pytest.raises(ConfigError, match="RATE_LIMIT_STORAGE_URI"):
        RateLimiter(uri, 20)


def test_a_bad_redis_uri_error_does_not_show_the_password() -> None:
    with pytest.raises(ConfigError, match="RATE_LIMIT_STORAGE_URI") as info:
        RateLimiter("redis://:hunter2-secret@redis.internal:not-a-port/0", 20)
    assert "hunter2-secret" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_an_unreachable_redis_lets_requests_through_and_says_so(
    make_limiter: LimiterFactory,
) -> None:
    limiter = make_limiter(1, storage_uri=f"redis://127.0.0.1:{free_port()}/0")
    with capture_logs() as logs:
        first = await limiter.hit("198.51.100.23")
        second = await limiter.hit("198.51.100.23")
    assert first.allowed and second.allowed  # fail open: never break a chat turn
    assert first.storage_error and second.storage_error
    events = [e for e in logs if e["event"] == "ratelimit.storage_error"]
    assert len(events) == 2
    assert events[0]["log_level"] == "warning" and events[0]["error"] == "ConnectionError"
    assert "198.51.100.23" not in repr(events)


async def test_a_redis_that_never_answers_lets_requests_through_after_the_timeout(
    make_limiter: LimiterFactory,
) -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # read everything, answer nothing, until the client hangs up
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = make_limiter(
        1, storage_uri=f"redis://127.0.0.1:{port}/0", storage_timeout_seconds=0.2
    )
    try:
        with capture_logs() as logs:
            decision = await limiter.hit("198.51.100.23")
        assert decision.allowed and decision.storage_error
        errors = [e["error"] for e in logs if e["event"] == "ratelimit.storage_error"]
        assert errors == ["TimeoutError"]
    finally:
        await limiter.aclose()
        server.close()
        await server.wait_closed()


# --- Redis: limits shared by replicas ---------------------------------------------------


async def test_two_replicas_sharing_redis_share_one_limit(
    make_limiter: LimiterFactory,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    replica_a = make_limiter(3, storage_uri=redis_url)
    replica_b = make_limiter(3, storage_uri=redis_url)
    key = "198.51.100.77"
    decisions = [
        await replica_a.hit(key),
        await replica_b.hit(key),
        await replica_a.hit(key),
        await replica_b.hit(key),
        await replica_a.hit(key),
    ]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert not any(d.storage_error for d in decisions)
    assert 0 < decisions[3].retry_after_seconds <= 60
    assert (await replica_b.hit("198.51.100.78")).allowed  # another visitor is unaffected


async def test_redis_keeps_logged_in_users_apart_from_ips(
    make_limiter: LimiterFactory,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    replica_a = make_limiter(1, 2, storage_uri=redis_url)
    replica_b = make_limiter(1, 2, storage_uri=redis_url)
    assert (await replica_a.hit("carol")).allowed
    assert not (await replica_b.hit("carol")).allowed
    user = [await r.hit("carol", logged_in=True) for r in (replica_a, replica_b, replica_a)]
    assert [d.allowed for d in user] == [True, True, False]


# --- key checks and uploads: small limits of their own ------------------------------------


async def test_key_checks_have_a_small_limit_of_their_own_with_a_clear_message(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    limiter = make_limiter(20, key_checks_per_minute=3, clock=clock)
    for _ in range(3):
        await limiter.check_key_check("198.51.100.23")
    clock.advance(15)
    with capture_logs() as logs, pytest.raises(RateLimited) as info:
        await limiter.check_key_check("198.51.100.23")
    assert str(info.value) == (
        "You're checking OpenRouter keys too fast: the limit is 3 per minute. Try again in 45 s."
    )
    assert info.value.retry_after == 45.0
    refused = [e for e in logs if e["event"] == "ratelimit.refused"]
    assert refused[0]["limit_kind"] == "key_check"
    assert "198.51.100.23" not in repr(logs)
    # The chat allowance is untouched by key checks, and another client has its own count.
    assert (await limiter.hit("198.51.100.23")).remaining == 19
    await limiter.check_key_check("198.51.100.24")
    # A minute after the first check, the visitor may check again.
    clock.advance(45.5)
    await limiter.check_key_check("198.51.100.23")


async def test_chat_requests_do_not_use_up_key_checks(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    limiter = make_limiter(2, key_checks_per_minute=1, clock=clock)
    await limiter.check("198.51.100.23", logged_in=False, doing="checking a key")
    await limiter.check("198.51.100.23", logged_in=False, doing="checking a key")
    with pytest.raises(RateLimited, match="checking a key too fast"):
        await limiter.check("198.51.100.23", logged_in=False, doing="checking a key")
    await limiter.check_key_check("198.51.100.23")  # its own, separate count
    with pytest.raises(RateLimited, match="checking OpenRouter keys too fast"):
        await limiter.check_key_check("198.51.100.23")


async def test_key_check_limit_zero_or_no_client_lets_every_check_through(
    make_limiter: LimiterFactory,
) -> None:
    unlimited = make_limiter(0)
    assert unlimited.key_checks_per_minute == 0
    for _ in range(50):
        await unlimited.check_key_check("198.51.100.23")
    limited = make_limiter(0, key_checks_per_minute=1)
    assert limited.key_checks_per_minute == 1
    await limited.check_key_check(None)
    await limited.check_key_check(None)


async def test_one_ipv6_subscriber_cannot_check_more_keys_by_changing_address(
    make_limiter: LimiterFactory,
) -> None:
    limiter = make_limiter(0, key_checks_per_minute=1)
    await limiter.check_key_check("2001:db8:1:2::1")
    with pytest.raises(RateLimited):
        await limiter.check_key_check("2001:db8:1:2::beef")


async def test_uploads_are_counted_per_client_apart_from_chats(
    make_limiter: LimiterFactory,
) -> None:
    limiter = make_limiter(1, uploads_per_minute=2)
    assert limiter.uploads_per_minute == 2
    uploads = [await limiter.hit_upload("198.51.100.23") for _ in range(3)]
    assert [d.allowed for d in uploads] == [True, True, False]
    assert uploads[2].limit == 2 and 0 < uploads[2].retry_after_seconds <= 60
    assert (await limiter.hit_upload("198.51.100.24")).allowed
    assert (await limiter.hit("198.51.100.23")).allowed


async def test_an_unreachable_store_lets_key_checks_through_and_says_so(
    make_limiter: LimiterFactory,
) -> None:
    limiter = make_limiter(
        0, key_checks_per_minute=1, storage_uri=f"redis://127.0.0.1:{free_port()}/0"
    )
    with capture_logs() as logs:
        await limiter.check_key_check("198.51.100.23")
        await limiter.check_key_check("198.51.100.23")
    kinds = [e["limit_kind"] for e in logs if e["event"] == "ratelimit.storage_error"]
    assert kinds == ["key_check", "key_check"]


async def test_replicas_sharing_redis_share_one_key_check_limit(
    make_limiter: LimiterFactory,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    replica_a = make_limiter(20, key_checks_per_minute=3, storage_uri=redis_url)
    replica_b = make_limiter(20, key_checks_per_minute=3, storage_uri=redis_url)
    key = "198.51.100.79"
    decisions = [await r.hit_key_check(key) for r in (replica_a, replica_b, replica_a, replica_b)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert (await replica_a.hit(key)).remaining == 19  # the chat count is another namespace


def test_a_negative_small_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="0 \\(off\\) or positive"):
        RateLimiter("memory://", 1, key_checks_per_minute=-1)
