"""A real HAProxy on a free loopback port in front of given backends, configured like deploy/.

The config is deploy/haproxy.cfg itself, rewritten for loopback: the same defaults, timeouts,
cookie and health check, with static `server appN 127.0.0.1:<port> cookie appN` lines instead
of Docker's DNS (so the SRV cookie names the server: `proxy.backend_for(cookie)`), a loopback
`bind`, faster health checks, and an admin socket to read server states.

Use the fixture from a test module:

    from tests import proxy_server

    start_proxy = proxy_server.proxy_factory   # a fixture

    def test_x(start_proxy):
        proxy = start_proxy([app_a.url, app_b.url])
        ...  # browse proxy.url

or the context manager `running_proxy(backends, workdir)` anywhere else (a bench).

The proxy connects to backends from PROXY_ADDRESS (127.0.0.2), not 127.0.0.1, so a backend
can tell the proxy (its socket peer; what TRUSTED_PROXIES must list) from a client on
127.0.0.1 (what X-Forwarded-For carries).
"""

from __future__ import annotations

import re
import resource
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
DEPLOY_CONFIG = REPO / "deploy" / "haproxy.cfg"
HAPROXY = "haproxy"
NOT_INSTALLED = "haproxy is not on PATH (`make system-deps` or apt-get install haproxy)"
# Where the proxy's connections to backends come from (any 127/8 address is loopback).
PROXY_ADDRESS = "127.0.0.2"
BACKEND = "app"
COOKIE = "SRV"


def backend_address(backend: str) -> tuple[str, int]:
    """host and port from `http://host:port/...` or `host:port`."""
    parts = urlsplit(backend if "//" in backend else f"//{backend}")
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"backend {backend!r} has no host:port")
    return parts.hostname, parts.port


@dataclass(frozen=True)
class Discovery:
    """Find replicas the way deploy/ does: DNS answers for `app` from a given nameserver."""

    nameserver_port: int  # on 127.0.0.1, UDP
    service_port: int  # every replica listens on this port, each on its own address


def loopback_config(
    backends: Sequence[str],
    port: int,
    admin_socket: Path,
    *,
    check_interval_ms: int = 200,
    source_address: str = PROXY_ADDRESS,
    discovery: Discovery | None = None,
    deploy_config: Path = DEPLOY_CONFIG,
) -> str:
    """deploy/haproxy.cfg rewritten to listen on 127.0.0.1:`port` in front of `backends`.

    Servers are named app1, app2, ... in the order given. With `discovery` instead of
    backends, the deploy file's resolvers and server-template stay, pointed at a loopback
    nameserver and port. Raises AssertionError if the deploy config no longer has the lines
    this rewrite replaces (so the two cannot drift apart).
    """
    if bool(backends) == (discovery is not None):
        raise ValueError("give either backends or discovery")
    out: list[str] = []
    section = ""
    replaced = {"bind": 0, "server-template": 0, "default-server": 0, "nameserver": 0}
    for raw in deploy_config.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if raw and not raw[0].isspace() and not raw.startswith("#"):
            section = line.split()[0]
            if section != "resolvers" or discovery is not None:
                out.append(raw)
            if section == "global":
                out.append(f"    stats socket {admin_socket} mode 600 level admin")
            continue
        if section == "resolvers":
            if line.startswith("nameserver "):
                replaced["nameserver"] += 1
                if discovery is not None:
                    name = line.split()[1]
                    out.append(f"    nameserver {name} 127.0.0.1:{discovery.nameserver_port}")
            elif discovery is not None:
                out.append(raw)
        elif section == "frontend" and line.startswith("bind "):
            replaced["bind"] += 1
            out.append(f"    bind 127.0.0.1:{port}")
        elif line.startswith("maxconn "):
            # haproxy needs two descriptors per connection and refuses to start when the
            # hard limit is lower; a small CI machine gets fewer connections, not an error.
            wanted = int(line.split()[1])
            out.append(f"    maxconn {min(wanted, _max_connections())}")
        elif section == "backend" and line.startswith("default-server "):
            replaced["default-server"] += 1
            # Fast checks so a stopped backend is marked down within a second.
            fast = f"inter {check_interval_ms}ms fastinter {check_interval_ms}ms"
            out.append(re.sub(r"\binter \S+", fast, raw))
        elif section == "backend" and line.startswith("server-template "):
            replaced["server-template"] += 1
            out.append(f"    source {source_address}")
            if discovery is not None:
                out.append(re.sub(r" app:\d+ ", f" app:{discovery.service_port} ", raw))
            for number, backend in enumerate(backends, start=1):
                host, backend_port = backend_address(backend)
                # A fixed cookie value (the server's name) instead of deploy's dynamic hash,
                # so a test can read which replica a browser is on from its cookie.
                name = f"{BACKEND}{number}"
                out.append(f"    server {name} {host}:{backend_port} check cookie {name}")
        else:
            out.append(raw)
    expected = {"bind": 1, "server-template": 1, "default-server": 1, "nameserver": 1}
    assert replaced == expected, f"{deploy_config} changed shape; rewrote {replaced}"
    return "\n".join(out) + "\n"


def _max_connections() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return 1_000_000
    return max(100, (hard - 200) // 2)


@dataclass
class ProxyServer:
    """An haproxy subprocess in front of `backends` (named app1, app2, ... in that order)."""

    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    backends: tuple[str, ...]
    source_address: str = PROXY_ADDRESS

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>/"""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def admin_socket(self) -> Path:
        return self.workdir / "admin.sock"

    def backend_for(self, cookie_value: str) -> str:
        """The backend a browser with this SRV cookie is pinned to (values are app1, app2...)."""
        names = {f"{BACKEND}{number}": url for number, url in enumerate(self.backends, start=1)}
        if cookie_value not in names:
            raise KeyError(f"no server {cookie_value!r}; servers are {sorted(names)}")
        return names[cookie_value]

    def logs(self) -> str:
        """What haproxy printed so far (its log lines go to stdout)."""
        path = self.workdir / "haproxy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """Run one command on haproxy's admin socket (e.g. "show stat") and return the answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.admin_socket))
            sock.sendall(command.encode() + b"\n")
            chunks: list[bytes] = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def server_states(self) -> dict[str, str]:
        """{"app1": "UP", "app2": "DOWN", ...} as haproxy's health checks see them now."""
        lines = self.admin("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        states: dict[str, str] = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            # Server rows only: the backend's own summary row is named "BACKEND".
            if row.get("pxname") == BACKEND and row.get("svname", "").startswith(BACKEND):
                states[row["svname"]] = row.get("status", "").split(" ")[0]
        return states

    def wait_for_state(self, server: str, state: str, timeout: float = 10.0) -> None:
        """Wait until `server` (e.g. "app1") is `state` ("UP" or "DOWN"); raise if it is not."""
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            seen = self.server_states().get(server, "")
            if seen == state:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{server} is {seen!r}, not {state!r}, after {timeout} s")

    def stop(self) -> None:
        """Terminate haproxy (kill it if it does not exit) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_proxy(
    backends: Sequence[str],
    workdir: Path,
    *,
    check_interval_ms: int = 200,
    source_address: str = PROXY_ADDRESS,
    discovery: Discovery | None = None,
    timeout: float = 15.0,
) -> ProxyServer:
    """Start haproxy on a free loopback port and wait until it listens.

    It serves `backends`, or, with `discovery`, the replicas a DNS query for `app` returns.
    """
    executable = shutil.which(HAPROXY)
    if executable is None:
        raise FileNotFoundError(NOT_INSTALLED)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "haproxy.cfg"
    server: ProxyServer | None = None
    for _attempt in range(3):  # another process may take the free port before haproxy binds it
        port = free_port()
        config_path.write_text(
            loopback_config(
                backends,
                port,
                workdir / "admin.sock",
                check_interval_ms=check_interval_ms,
                source_address=source_address,
                discovery=discovery,
            ),
            encoding="utf-8",
        )
        with (workdir / "haproxy.log").open("ab") as log_file:
            process = subprocess.Popen(
                # -db: stay in the foreground, one process (no master/worker, no daemon).
                [executable, "-db", "-f", str(config_path)],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = ProxyServer(port, process, workdir, tuple(backends), source_address)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _accepts(port) and server.admin_socket.exists():
                return server
            time.sleep(0.05)
        server.stop()
    raise RuntimeError(f"haproxy did not start:\n{server.logs() if server else ''}")


@contextmanager
def running_proxy(
    backends: Sequence[str],
    workdir: Path,
    *,
    check_interval_ms: int = 200,
    source_address: str = PROXY_ADDRESS,
) -> Iterator[ProxyServer]:
    """An haproxy in front of `backends` for the duration of the block."""
    server = start_proxy(
        backends, workdir, check_interval_ms=check_interval_ms, source_address=source_address
    )
    try:
        yield server
    finally:
        server.stop()


class FakeDns:
    """A tiny DNS server on loopback (UDP) that answers every A query with `addresses`.

    Stands in for Docker's embedded DNS, which answers `app` with one address per replica.
    Change `addresses` to scale; AAAA and other queries get an empty answer.
    """

    def __init__(self, addresses: Sequence[str]) -> None:
        self.addresses = list(addresses)
        self.queries = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> FakeDns:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                query, client = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = self._answer(query)
            if answer:
                self.queries += 1
                self._sock.sendto(answer, client)

    def _answer(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        end = 12
        while end < len(query) and query[end] != 0:  # the question's name, label by label
            end += 1 + query[end]
        question = query[12 : end + 5]  # name, its terminating zero, type and class
        if len(question) < 5:
            return None
        qtype = struct.unpack("!H", question[-4:-2])[0]
        records = list(self.addresses) if qtype == 1 else []  # type 1: A
        header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, len(records), 0, 0)
        body = b"".join(
            struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(address)
            for address in records
        )
        return header + question + body


@pytest.fixture(scope="module")
def proxy_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ProxyServer]]:
    """Start proxies on demand: `factory(backends, check_interval_ms=200, discovery=None)`.

    All of a module's proxies stop at the end of the module.
    Skips if haproxy is not installed.
    """
    if shutil.which(HAPROXY) is None:
        pytest.skip(NOT_INSTALLED)
    started: list[ProxyServer] = []

    def factory(
        backends: Sequence[str],
        *,
        check_interval_ms: int = 200,
        source_address: str = PROXY_ADDRESS,
        discovery: Discovery | None = None,
    ) -> ProxyServer:
        proxy = start_proxy(
            backends,
            tmp_path_factory.mktemp("haproxy"),
            check_interval_ms=check_interval_ms,
            source_address=source_address,
            discovery=discovery,
        )
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        proxy.stop()
