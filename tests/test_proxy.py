"""The proxy in deploy/ keeps a browser on its replica, says who the visitor is, and streams.

A real haproxy (configured from deploy/haproxy.cfg, see tests/proxy_server.py) in front of
two tiny backends on loopback: Starlette under uvicorn, the server Gradio runs on. Each answers
its own name, the socket peer it sees and the X-Forwarded-For lines it got; /stream sends SSE
events one at a time, each after the client's go-ahead.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from chatlib.ratelimit import client_ip, parse_trusted_proxies
from tests import proxy_server
from tests.proxy_server import COOKIE, PROXY_ADDRESS, Discovery, FakeDns, ProxyServer

proxy_factory = proxy_server.proxy_factory  # the fixture, visible to this module
CLIENT_ADDRESS = "127.0.0.3"  # a visitor on loopback, distinct from the proxy's address
STREAM_RELEASE_S = 2.0
STREAM_EVENTS = 8
# Measured: 7 round trips take ~5 ms through deploy/haproxy.cfg, and ~0.8 s without its
# `option http-no-delay` (each small write held back by ~120 ms).
STREAM_ROUND_TRIPS_MAX_S = 0.35


@dataclass
class Backend:
    """A small Starlette app under uvicorn (Gradio's server) on loopback, in a thread."""

    name: str
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket
    release_stream: threading.Event

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()
        return f"http://{host}:{port}/"

    def stop(self) -> None:
        """Stop serving; the port then refuses connections."""
        self.release_stream.set()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def start_backend(name: str, host: str = "127.0.0.1", port: int = 0) -> Backend:
    release = threading.Event()

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "name": name,
                "peer": request.client.host if request.client else None,
                "forwarded_for": request.headers.getlist("x-forwarded-for"),
            }
        )

    async def stream(request: Request) -> StreamingResponse:
        # Ping-pong: each event after the first waits for the client's go-ahead, so a proxy
        # that holds small writes back shows up as a stall instead of hiding behind the next.
        async def events() -> AsyncIterator[str]:
            for number in range(STREAM_EVENTS):
                if number:
                    await anyio.to_thread.run_sync(release.wait, STREAM_RELEASE_S)
                    release.clear()
                yield f"event: generating\ndata: {json.dumps([name, number])}\n\n"
            yield "event: complete\ndata: null\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/stream", stream), Route("/{path:path}", whoami)])
    # proxy_headers off, as in app.py: the peer must stay the real socket peer.
    config = uvicorn.Config(app, log_level="warning", proxy_headers=False, lifespan="off")
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind((host, port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, f"backend {name} did not start"
    return Backend(name, server, thread, sock, release)


@pytest.fixture(scope="module")
def backend_factory() -> Iterator[Callable[[str], Backend]]:
    started: list[Backend] = []

    def factory(name: str) -> Backend:
        backend = start_backend(name)
        started.append(backend)
        return backend

    yield factory
    for backend in started:
        backend.stop()


@pytest.fixture(scope="module")
def backends(backend_factory: Callable[[str], Backend]) -> tuple[Backend, Backend]:
    return backend_factory("alpha"), backend_factory("beta")


@pytest.fixture(scope="module")
def proxy(
    proxy_factory: Callable[..., ProxyServer], backends: tuple[Backend, Backend]
) -> ProxyServer:
    proxy = proxy_factory([b.url for b in backends])
    for server in ("app1", "app2"):
        proxy.wait_for_state(server, "UP")
    return proxy


def browser(**options: Any) -> httpx.Client:
    """A client that keeps cookies, like a browser tab."""
    return httpx.Client(timeout=10.0, trust_env=False, **options)


def visit(client: httpx.Client, proxy: ProxyServer, path: str = "") -> dict[str, Any]:
    response = client.get(proxy.url + path)
    response.raise_for_status()
    return dict(response.json())


def test_a_browser_stays_on_the_replica_that_served_it(
    proxy: ProxyServer, backends: tuple[Backend, Backend]
) -> None:
    with browser() as client:
        first = visit(client, proxy)
        pinned_to = proxy.backend_for(client.cookies[COOKIE])
        names = {visit(client, proxy)["name"] for _ in range(10)}
    assert names == {first["name"]}
    assert pinned_to == next(b.url for b in backends if b.name == first["name"])


def test_new_visitors_are_spread_over_the_replicas(proxy: ProxyServer) -> None:
    names = []
    for _ in range(4):
        with browser() as client:
            names.append(visit(client, proxy)["name"])
    assert set(names) == {"alpha", "beta"}


def test_the_replica_learns_the_visitors_address_from_the_proxy(proxy: ProxyServer) -> None:
    # The visitor also sends a forged header: the proxy appends the real address after it.
    transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS)
    with browser(transport=transport) as client:
        client.headers["X-Forwarded-For"] = "203.0.113.66"
        seen = visit(client, proxy)
    assert seen["peer"] == PROXY_ADDRESS == proxy.source_address
    hops = [hop.strip() for line in seen["forwarded_for"] for hop in line.split(",")]
    assert hops[-1] == CLIENT_ADDRESS
    # What the app makes of it with the proxy's address in TRUSTED_PROXIES:
    trusted = parse_trusted_proxies(proxy.source_address)
    assert client_ip(seen["peer"], seen["forwarded_for"], trusted) == CLIENT_ADDRESS
    # ...and without: the proxy itself is the client, and the header is not believed.
    assert client_ip(seen["peer"], seen["forwarded_for"], ()) == PROXY_ADDRESS


def test_an_answer_streams_through_the_proxy_event_by_event(
    proxy: ProxyServer, backends: tuple[Backend, Backend]
) -> None:
    by_name = {b.name: b for b in backends}
    with browser() as client:
        name = visit(client, proxy)["name"]
        backend = by_name[name]
        backend.release_stream.clear()
        received: list[Any] = []
        with client.stream("GET", proxy.url + "stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            started = time.monotonic()
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: ") and len(received) < STREAM_EVENTS:
                    received.append(json.loads(line[6:]))
                    # The backend is holding the rest back until now: nothing was buffered.
                    backend.release_stream.set()
                    if len(received) == STREAM_EVENTS:
                        elapsed = time.monotonic() - started
                        break
            rest = list(lines)
    assert received == [[name, number] for number in range(STREAM_EVENTS)]
    assert elapsed < STREAM_ROUND_TRIPS_MAX_S, f"{STREAM_EVENTS} events took {elapsed:.2f} s"
    assert "event: complete" in rest


def test_a_visitor_whose_replica_died_lands_on_the_other(
    proxy_factory: Callable[..., ProxyServer], backend_factory: Callable[[str], Backend]
) -> None:
    doomed, survivor = backend_factory("doomed"), backend_factory("survivor")
    proxy = proxy_factory([doomed.url, survivor.url])
    proxy.wait_for_state("app1", "UP")
    proxy.wait_for_state("app2", "UP")
    with browser() as client:
        for _ in range(4):  # round robin: a fresh visitor lands on `doomed` within two tries
            client.cookies.clear()
            if visit(client, proxy)["name"] == "doomed":
                break
        assert visit(client, proxy)["name"] == "doomed"

        doomed.stop()
        proxy.wait_for_state("app1", "DOWN", timeout=10)

        assert visit(client, proxy)["name"] == "survivor"
        # The proxy re-pinned the visitor: it stays on the survivor from now on.
        assert {visit(client, proxy)["name"] for _ in range(5)} == {"survivor"}


def test_replicas_are_found_by_dns_like_compose_scale(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    # deploy/'s own resolvers + server-template + dynamic cookie, with a loopback stand-in
    # for Docker's DNS: two "containers" on their own addresses, on the same port.
    first = start_backend("replica-a", host="127.0.10.1")
    port = first.sock.getsockname()[1]
    second = start_backend("replica-b", host="127.0.10.2", port=port)
    dns = FakeDns(["127.0.10.1", "127.0.10.2"]).start()
    try:
        proxy = proxy_factory([], discovery=Discovery(dns.port, port))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if list(proxy.server_states().values()).count("UP") == 2:
                break
            time.sleep(0.1)
        states = proxy.server_states()
        assert list(states.values()).count("UP") == 2, states
        assert dns.queries > 0

        seen = []
        for _ in range(4):
            with browser() as client:
                name = visit(client, proxy)["name"]
                # The dynamic cookie (a hash of the replica's address) keeps the browser there.
                assert {visit(client, proxy)["name"] for _ in range(3)} == {name}
                seen.append(name)
        assert set(seen) == {"replica-a", "replica-b"}
    finally:
        dns.stop()
        first.stop()
        second.stop()
