"""Who is asking (client IP behind trusted proxies) and whether they may ask again now.

The limiter is the `limits` library's moving window: at most N requests in any rolling
60 seconds per key. A visitor can burst up to N at once and never beyond; each request's
slot comes back exactly 60 s after that request was let through, so capacity returns at
the pace it was used. Refused requests are not recorded and cost nothing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any, Final
from urllib.parse import urlsplit

import structlog
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError, StorageError
from limits.storage import storage_from_string

from chatlib.errors import ConfigError, RateLimited

log = structlog.get_logger(__name__)

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address

# What a Hugging Face Space's ingress proxy connects from: private and carrier-grade NAT
# ranges, unique-local IPv6, and loopback.
SPACE_PROXY_NETWORKS: Final[tuple[IPNetwork, ...]] = (
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
    IPv4Network("100.64.0.0/10"),
    IPv4Network("127.0.0.0/8"),
    IPv6Network("fc00::/7"),
    IPv6Network("::1/128"),
)

# A real chain has a handful of hops; past this the left part is attacker padding.
MAX_FORWARDED_HOPS: Final = 30
UNKNOWN_CLIENT: Final = "unknown"
_MAX_HOP_CHARS = 64  # "[ffff:...:ffff]:65535" is 47; anything longer is not an address
WINDOW_SECONDS: Final = 60
KEY_PREFIX: Final = "openrouter-chat"
_ANONYMOUS_NAMESPACE = "ip"
_LOGGED_IN_NAMESPACE = "user"
_KEY_CHECK_NAMESPACE = "keycheck"
_UPLOAD_NAMESPACE = "upload"
_REFUSAL_ROWS_NAMESPACE = "refusal-rows"
_PENDING_REFUSALS_EXPIRY_S = 24 * 3600
KEY_CHECKS_DOING: Final = "checking OpenRouter keys"
_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix")


def parse_trusted_proxies(spec: str) -> tuple[IPNetwork, ...]:
    """Parse TRUSTED_PROXIES: comma-separated IPs and CIDRs, IPv4 or IPv6.

    Raises ValueError naming the entry that is not an address or network.
    """
    networks: list[IPNetwork] = []
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            network = ip_network(entry, strict=True)
        except ValueError as exc:
            raise ValueError(
                f"TRUSTED_PROXIES entry {entry!r} is not an IP address or CIDR network ({exc})"
            ) from exc
        if isinstance(network, IPv6Network) and network.prefixlen >= 96:
            # Client addresses are compared as IPv4 once unmapped, so ranges must be too.
            mapped = network.network_address.ipv4_mapped
            if mapped is not None:
                network = IPv4Network((mapped, network.prefixlen - 96))
        networks.append(network)
    return tuple(networks)


def effective_trusted_proxies(spec: str, on_space: bool) -> tuple[IPNetwork, ...]:
    """TRUSTED_PROXIES, or the Space proxy's ranges when it is empty on a Space."""
    networks = parse_trusted_proxies(spec)
    if not networks and on_space:
        return SPACE_PROXY_NETWORKS
    return networks


def _normalise(address: IPAddress) -> IPAddress:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _valid_port(port: str) -> bool:
    return 0 < len(port) <= 5 and port.isascii() and port.isdigit() and int(port) <= 65535


def parse_hop(text: str) -> IPAddress | None:
    """One X-Forwarded-For element as an address, or None if it is not one.

    Accepts `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` and
    `[2001:db8::1]:443`; IPv4-mapped IPv6 becomes IPv4. Everything else (`unknown`,
    `_hidden`, zone ids, empty strings) is None.
    """
    hop = text.strip()
    if not hop or len(hop) > _MAX_HOP_CHARS or not hop.isascii() or "%" in hop:
        return None
    if hop.startswith("["):
        host, bracket, rest = hop[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and _valid_port(rest[1:]))):
            return None
        try:
            return _normalise(IPv6Address(host))
        except ValueError:
            return None
    if hop.count(":") == 1:
        host, _, port = hop.partition(":")
        if not _valid_port(port):
            return None
        try:
            return IPv4Address(host)
        except ValueError:
            return None
    try:
        return _normalise(ip_address(hop))
    except ValueError:
        return None


def _is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)


def client_ip(
    peer: str | None,
    forwarded_for: str | Sequence[str] | None,
    trusted: Sequence[IPNetwork],
) -> str:
    """The visitor's IP address, resolved from the socket peer and X-Forwarded-For.

    The header is believed only when the socket peer is a trusted proxy. It is then read
    from the right (the hop our own proxy appended) past every trusted address; the first
    untrusted one is the client. If every hop is trusted, the left-most is. The walk stops
    at the first element that is not an address, and the last trusted hop (possibly the
    peer itself) is returned rather than anything to its left. Only the right-most 30
    elements are considered. Several header lines count as one, joined with commas.
    Never raises; a missing peer gives "unknown".
    """
    if peer is None:
        return UNKNOWN_CLIENT
    peer_address = parse_hop(peer)
    if peer_address is None:
        return peer.strip() or UNKNOWN_CLIENT
    if not _is_trusted(peer_address, trusted) or not forwarded_for:
        return str(peer_address)
    if isinstance(forwarded_for, str):
        header = forwarded_for
    else:
        header = ",".join(line for line in forwarded_for if isinstance(line, str) and line.strip())
    hops = header.rsplit(",", MAX_FORWARDED_HOPS)[-MAX_FORWARDED_HOPS:]
    last_trusted = peer_address
    for hop in reversed(hops):
        address = parse_hop(hop)
        if address is None:
            break
        if not _is_trusted(address, trusted):
            return str(address)
        last_trusted = address
    return str(last_trusted)


@dataclass(frozen=True)
class RateDecision:
    """The limiter's answer to one request.

    `limit` is the requests allowed per rolling minute for this client (0: no limit
    applies). `remaining` is a snapshot of how many more would be allowed right now.
    `storage_error` is True when the counter store failed and the request was let through.
    """

    allowed: bool
    retry_after_seconds: float
    remaining: int
    limit: int
    storage_error: bool = False

    def raise_if_refused(self, *, doing: str = "sending messages") -> None:
        """Raise RateLimited (with the wait and the limit) if this request was refused."""
        if not self.allowed:
            raise self.refusal(doing=doing)

    def refusal(self, *, doing: str = "sending messages") -> RateLimited:
        """The error that tells the visitor how long to wait."""
        return RateLimited(self.retry_after_seconds, self.limit, doing=doing)


def _async_storage_uri(storage_uri: str) -> str:
    uri = storage_uri.strip()
    scheme, sep, _ = uri.partition("://")
    base = scheme.removeprefix("async+")
    if not sep or base not in _STORAGE_SCHEMES:
        raise ConfigError(
            [
                "RATE_LIMIT_STORAGE_URI must start with memory:// or redis:// "
                f"(also rediss://, redis+unix://), got scheme {scheme!r}"
            ]
        )
    return f"async+{base}://{uri.partition('://')[2]}"


def _create_storage(storage_uri: str, timeout_seconds: float) -> Storage:
    uri = _async_storage_uri(storage_uri)
    options: dict[str, Any] = {"wrap_exceptions": True}
    if not uri.startswith("async+memory"):
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options.update(
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            # One immediate retry re-opens a pooled connection that went stale (Redis
            # restarted); the client's default backoff would stall a chat turn for seconds.
            retry=Retry(NoBackoff(), 1),
        )
    try:
        storage = storage_from_string(uri, **options)
    except (ConfigurationError, ValueError) as exc:
        detail = str(exc)
        password = urlsplit(uri).password
        if password:
            detail = detail.replace(password, "***")
        raise ConfigError([f"RATE_LIMIT_STORAGE_URI cannot be used: {detail}"]) from None
    if not isinstance(storage, Storage):  # pragma: no cover - async+ schemes give async storage
        raise ConfigError(["RATE_LIMIT_STORAGE_URI did not give an async storage"])
    return storage


def limit_key(client_key: str) -> str:
    """What one visitor's requests are counted under.

    An IPv6 client is counted by its /64 network: one subscriber usually gets a whole /64
    and can pick any address in it, so counting single addresses would not limit anyone.
    """
    try:
        address = ip_address(client_key)
    except ValueError:
        return client_key  # a user id
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ip_network(f"{address}/64", strict=False))
    return client_key


class RateLimiter:
    """Per-client request limits, shared by replicas when the storage is Redis.

    Anonymous visitors are keyed by client IP with `per_minute`; logged-in users are keyed
    by their user id in a separate namespace with `per_minute_logged_in` (when 0, the
    anonymous limit applies to them too). A limit of 0 lets every request through.
    Two small limits live in their own namespaces of the same storage: OpenRouter key
    checks (`key_checks_per_minute`, so the app is no free oracle for stolen keys) and
    uploads (`uploads_per_minute`). Each counts separately from the chat allowance.
    If the storage fails or does not answer within `storage_timeout_seconds`, the request
    is allowed (fail open) and `ratelimit.storage_error` is logged: an outage of the
    counter store must never break a chat turn.
    """

    def __init__(
        self,
        storage_uri: str,
        per_minute: int,
        per_minute_logged_in: int = 0,
        *,
        key_checks_per_minute: int = 0,
        uploads_per_minute: int = 0,
        storage_timeout_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        limits_given = (per_minute, per_minute_logged_in, key_checks_per_minute, uploads_per_minute)
        if any(limit < 0 for limit in limits_given):
            raise ValueError("rate limits must be 0 (off) or positive")
        self._anonymous_limit = per_minute
        self._logged_in_limit = per_minute_logged_in or per_minute
        self._timeout = storage_timeout_seconds
        # limits stamps entries with time.time(); retry_after must be measured on that clock.
        self._clock = clock
        self._storage: Storage | None = None
        self._strategy: MovingWindowRateLimiter | None = None
        self._items: dict[bool, RateLimitItem] = {}
        if self._anonymous_limit:
            self._items[False] = RateLimitItemPerMinute(
                self._anonymous_limit, namespace=_ANONYMOUS_NAMESPACE
            )
        if self._logged_in_limit:
            self._items[True] = RateLimitItemPerMinute(
                self._logged_in_limit, namespace=_LOGGED_IN_NAMESPACE
            )
        self._key_check_item: RateLimitItem | None = (
            RateLimitItemPerMinute(key_checks_per_minute, namespace=_KEY_CHECK_NAMESPACE)
            if key_checks_per_minute
            else None
        )
        self._upload_item: RateLimitItem | None = (
            RateLimitItemPerMinute(uploads_per_minute, namespace=_UPLOAD_NAMESPACE)
            if uploads_per_minute
            else None
        )
        if self._items or self._key_check_item or self._upload_item:
            self._storage = _create_storage(storage_uri, storage_timeout_seconds)
            self._strategy = MovingWindowRateLimiter(self._storage)

    def limit_for(self, *, logged_in: bool = False) -> int:
        """Requests per rolling minute for this kind of visitor (0: unlimited)."""
        return self._logged_in_limit if logged_in else self._anonymous_limit

    @property
    def key_checks_per_minute(self) -> int:
        """Key checks per rolling minute per client (0: unlimited)."""
        return self._key_check_item.amount if self._key_check_item else 0

    @property
    def uploads_per_minute(self) -> int:
        """Uploads per rolling minute per client (0: unlimited)."""
        return self._upload_item.amount if self._upload_item else 0

    async def check(self, client_key: str | None, *, logged_in: bool, doing: str) -> None:
        """Count one request other than a chat turn (same allowance); RateLimited if over."""
        if client_key is not None:
            (await self.hit(client_key, logged_in=logged_in)).raise_if_refused(doing=doing)

    async def hit(self, client_key: str, *, logged_in: bool = False) -> RateDecision:
        """Count one request for `client_key` (an IP, or a user id when logged in)."""
        return await self._hit(
            self._items.get(logged_in), client_key, kind="user" if logged_in else "ip"
        )

    async def check_key_check(self, client_key: str | None) -> None:
        """Count one OpenRouter key check for `client_key`; RateLimited if over the small limit.

        Call it (after `check(..., doing=...)`, the visitor's general allowance) before
        every request to OpenRouter's `/key`. The message says what was limited and when
        to try again.
        """
        if client_key is not None:
            decision = await self.hit_key_check(client_key)
            decision.raise_if_refused(doing=KEY_CHECKS_DOING)

    async def hit_key_check(self, client_key: str) -> RateDecision:
        """Count one key check for `client_key` and say whether it may go ahead."""
        return await self._hit(self._key_check_item, client_key, kind="key_check")

    async def hit_upload(self, client_key: str) -> RateDecision:
        """Count one upload for `client_key` (a client IP) and say whether it may go ahead."""
        return await self._hit(self._upload_item, client_key, kind="upload")

    async def refusals_to_record(
        self, client_key: str, *, every_seconds: float, now: float
    ) -> int | None:
        """How many refusals of `client_key` one usage row should stand for now; None: not yet.

        A client hammering past its limit gets one row per `every_seconds`, however many
        replicas it reaches: every refusal adds to a pending count in the shared storage,
        and the first refusal of each window (of wall-clock time `now`, the same on every
        replica) takes that count and empties it. When the storage fails, each refusal is
        its own row rather than lost.
        """
        if self._storage is None:
            return 1
        key = limit_key(client_key)
        pending_key = f"{_REFUSAL_ROWS_NAMESPACE}/pending/{key}"
        window = math.floor(now / every_seconds)
        window_key = f"{_REFUSAL_ROWS_NAMESPACE}/window/{key}/{window}"
        try:
            async with asyncio.timeout(self._timeout):
                pending = await self._storage.incr(pending_key, _PENDING_REFUSALS_EXPIRY_S)
                expiry = max(1, math.ceil(2 * every_seconds))
                if await self._storage.incr(window_key, expiry) != 1:
                    return None
                await self._storage.clear(pending_key)
        except (StorageError, TimeoutError, OSError) as exc:
            cause = exc.storage_error if isinstance(exc, StorageError) else exc
            log.warning("ratelimit.storage_error", error=type(cause).__name__, limit_kind="rows")
            return 1
        return pending

    async def _hit(self, item: RateLimitItem | None, client_key: str, *, kind: str) -> RateDecision:
        if item is None or self._strategy is None:
            return RateDecision(allowed=True, retry_after_seconds=0.0, remaining=0, limit=0)
        logged_in = kind == "user"
        client_key = limit_key(client_key)
        try:
            async with asyncio.timeout(self._timeout):
                allowed = await self._strategy.hit(item, client_key)
                stats = await self._strategy.get_window_stats(item, client_key)
        except (StorageError, TimeoutError, OSError) as exc:
            cause = exc.storage_error if isinstance(exc, StorageError) else exc
            log.warning(
                "ratelimit.storage_error",
                error=type(cause).__name__,
                logged_in=logged_in,
                limit_kind=kind,
                action="allowed",
            )
            return RateDecision(
                allowed=True,
                retry_after_seconds=0.0,
                remaining=item.amount,
                limit=item.amount,
                storage_error=True,
            )
        remaining = max(0, min(item.amount, stats.remaining))
        if allowed:
            return RateDecision(
                allowed=True, retry_after_seconds=0.0, remaining=remaining, limit=item.amount
            )
        # reset_time is when the oldest request in the window leaves it, freeing one slot.
        retry_after = max(stats.reset_time - self._clock(), 0.001)
        log.info(
            "ratelimit.refused",
            logged_in=logged_in,
            limit_kind=kind,
            retry_after_s=round(retry_after, 1),
        )
        return RateDecision(
            allowed=False, retry_after_seconds=retry_after, remaining=0, limit=item.amount
        )

    async def aclose(self) -> None:
        """Close the storage's connections and background task."""
        storage, self._storage, self._strategy = self._storage, None, None
        if isinstance(storage, RedisStorage) and isinstance(storage.bridge, RedispyBridge):
            client = storage.bridge.get_connection()
            close = getattr(client, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception as exc:  # closing is best effort at shutdown
                    log.debug("ratelimit.close_failed", error=type(exc).__name__)
        elif isinstance(storage, MemoryStorage) and storage.timer is not None:
            storage.timer.cancel()
