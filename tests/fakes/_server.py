"""Serving an ASGI app with uvicorn on a background thread, as both fakes do."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self

import uvicorn

START_TIMEOUT_S = 15.0


class _ThreadedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner."""

    def install_signal_handlers(self) -> None:
        """Install nothing: the server runs in a background thread."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Capture nothing: the server runs in a background thread."""
        yield


class Fake:
    """A fake service that can be used as a context manager: started on entry, stopped on exit."""

    def start(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()


class BackgroundServer:
    """One uvicorn server for `app` on 127.0.0.1, on its own thread and event loop."""

    def __init__(self, app: Any, *, name: str, port: int = 0, **config: Any) -> None:
        self._config = {
            "host": "127.0.0.1",
            "port": port,
            "http": "h11",
            "ws": "none",
            "lifespan": "off",
            "log_config": None,
            "log_level": "warning",
            "access_log": False,
            "proxy_headers": False,
            "timeout_graceful_shutdown": 3,
            **config,
        }
        self._app = app
        self._name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: _ThreadedServer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def connections(self) -> list[Any]:
        """uvicorn's open connection objects (e.g. to abort one)."""
        server = self._server
        return [] if server is None else list(server.server_state.connections)

    def start(self, port: int | None = None) -> int:
        """Serve (on `port`, else the one given at creation; 0: any free one) and return the
        port once it accepts TCP connections."""
        if self._thread is not None:
            raise RuntimeError(f"{self._name} is already running")
        config = {**self._config, **({} if port is None else {"port": port})}
        self._server = _ThreadedServer(uvicorn.Config(self._app, **config))
        self._error = None
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self._name} failed to start") from self._error
            time.sleep(0.005)
        port: int = self._server.servers[0].sockets[0].getsockname()[1]
        _wait_accepting(port, deadline)
        return port

    def stop(self, on_loop: Callable[[], None] | None = None) -> None:
        """Stop serving; `on_loop` runs first on the server's loop (e.g. to wake streams)."""
        thread, server, loop = self._thread, self._server, self.loop
        if thread is None or server is None:
            return

        def begin_shutdown() -> None:
            if on_loop is not None:
                on_loop()
            server.should_exit = True

        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(begin_shutdown)
        else:
            server.should_exit = True
        thread.join(timeout=15.0)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5.0)
        self._thread = None
        self._server = None
        self.loop = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    async def _serve(self) -> None:
        assert self._server is not None
        self.loop = asyncio.get_running_loop()
        await self._server.serve()


def _wait_accepting(port: int, deadline: float) -> None:
    """Block until the port accepts TCP connections."""
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
