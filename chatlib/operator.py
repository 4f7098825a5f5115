"""The operator link: a random token, printed at startup, that opens the app-wide usage.

Off a Space nobody logs in, so the operator proves who they are the way Jupyter does: the
app makes a random token at startup and prints a link carrying it. Whoever opens that link
(or is a logged-in user named in ADMIN_USERS) sees every visitor's usage. The token is
compared in constant time, and a client that sends wrong ones is shut out for a while.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from ipaddress import ip_address
from typing import Final
from urllib.parse import urlsplit

import structlog

from chatlib.config import ALL_INTERFACES, Settings

log = structlog.get_logger(__name__)

OPERATOR_QUERY_PARAMETER: Final = "operator"
# Wrong tokens a client may send in WINDOW before every check from it fails until the
# oldest of them is older than the window.
MAX_FAILURES: Final = 5
FAILURE_WINDOW_SECONDS: Final = 600.0
# Clients whose failures are remembered at once; the least recently seen are dropped first.
MAX_TRACKED_CLIENTS: Final = 10_000
_MAX_TOKEN_CHARS = 200
_TOKEN_BYTES = 24


class OperatorGate:
    """Decides whether a presented operator token is the right one, per client, safely.

    `token` is the operator's chosen OPERATOR_TOKEN, or None for a random one made now.
    A disabled gate (on a Space with no OPERATOR_TOKEN: there the login is the way in)
    accepts nothing and has no link. Failures are counted in this process's memory.
    Safe to call from several threads.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        enabled: bool = True,
        max_failures: int = MAX_FAILURES,
        window_seconds: float = FAILURE_WINDOW_SECONDS,
        max_tracked_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window_seconds <= 0 or max_tracked_clients < 1:
            raise ValueError("max_failures, window_seconds and max_tracked_clients must be > 0")
        self._token = token or secrets.token_urlsafe(_TOKEN_BYTES)
        self._expected = self._token.encode("utf-8")
        self._enabled = enabled
        self._max_failures = max_failures
        self._window = window_seconds
        self._max_clients = max_tracked_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> OperatorGate:
        """OPERATOR_TOKEN, or a random token; on a Space only a chosen token is honoured."""
        enabled = not settings.on_space or settings.operator_token is not None
        return cls(settings.operator_token, enabled=enabled)

    @property
    def enabled(self) -> bool:
        """Whether any token can open the operator view (and a link is worth printing)."""
        return self._enabled

    @property
    def token(self) -> str:
        """The secret itself: for the log redactor only, never for display."""
        return self._token

    def __repr__(self) -> str:
        return f"OperatorGate(enabled={self._enabled})"  # never the token

    def check(self, token: str | None, rate_key: str) -> bool:
        """True when `token` is the operator token and `rate_key` is not shut out.

        No token (None or empty) is a normal visit: False, and not a failure. A wrong one
        counts against `rate_key` (the client IP or user); after `max_failures` within
        the window every check from that client is False, the right token included,
        until the oldest failure leaves the window. Logs `operator.token_rejected`
        (never the token or the client).
        """
        if not token or not self._enabled:
            return False
        with self._lock:
            now = self._clock()
            failures = self._recent_failures(rate_key, now)
            if failures is not None and len(failures) >= self._max_failures:
                retry_after = failures[0] + self._window - now
                log.warning(
                    "operator.token_rejected",
                    reason="too_many_failures",
                    retry_after_s=round(retry_after, 1),
                )
                return False
            if isinstance(token, str) and len(token) <= _MAX_TOKEN_CHARS:
                presented = token.encode("utf-8", errors="surrogatepass")
                if hmac.compare_digest(presented, self._expected):
                    return True
            if failures is None:
                failures = self._failures[rate_key] = deque()
                while len(self._failures) > self._max_clients:
                    self._failures.popitem(last=False)
            failures.append(now)
            log.warning(
                "operator.token_rejected",
                reason="wrong_token",
                failures=len(failures),
                locked=len(failures) >= self._max_failures,
            )
            return False

    def _recent_failures(self, rate_key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(rate_key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[rate_key]
            return None
        self._failures.move_to_end(rate_key)
        return failures

    def link(self, public_base_url: str) -> str | None:
        """The operator link for the startup line, or None when the gate is disabled."""
        if not self._enabled:
            return None
        return f"{public_base_url.rstrip('/')}/?{OPERATOR_QUERY_PARAMETER}={self._token}"


def local_base_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches a server bound to `host`:`port`."""
    if host in (ALL_INTERFACES, "::", ""):
        host = "127.0.0.1"
    try:
        if ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name
    return f"http://{host}:{port}"


def startup_line(gate: OperatorGate, base_url: str) -> str | None:
    """'Operator view: <link>' to print on the console (not the log), or None."""
    link = gate.link(base_url)
    if link is None:
        return None
    scheme = urlsplit(link).scheme
    if scheme not in ("http", "https"):
        raise ValueError("the operator link needs an http(s) base URL")
    return f"Operator view: {link}"
