"""A real redis-server on a free loopback port, for tests of state shared by app replicas.

Use the session fixture from a test module:

    from tests.redis_server import redis_url  # noqa: F401 - pytest fixture

or the context manager `running_redis(tmp_dir)` anywhere else.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

REDIS_SERVER = "redis-server"
NOT_INSTALLED = "redis-server is not on PATH (`make system-deps` or apt-get install redis-server)"


@dataclass
class RedisServer:
    """A redis-server subprocess and the URL to reach it."""

    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def url(self) -> str:
        """redis://127.0.0.1:<port>/0"""
        return f"redis://127.0.0.1:{self.port}/0"

    def logs(self) -> str:
        """What the server printed so far."""
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Terminate the server (kill it if it does not exit) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis server on loopback `port` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(workdir: Path, timeout: float = 15.0) -> RedisServer:
    """Start redis-server without persistence in `workdir` and wait until it answers PING."""
    executable = shutil.which(REDIS_SERVER)
    if executable is None:
        raise FileNotFoundError(NOT_INSTALLED)
    workdir.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):  # another process may take the free port before redis binds it
        port = free_port()
        with (workdir / "redis.log").open("ab") as log_file:
            process = subprocess.Popen(
                [
                    executable,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                ],
                cwd=workdir,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = RedisServer(port=port, process=process, workdir=workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if ping(port):
                return server
            time.sleep(0.05)
        server.stop()
    raise RuntimeError(f"redis-server did not start:\n{server.logs()}")


@contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    """A redis-server for the duration of the block."""
    server = start_redis(workdir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of one redis-server shared by the session; skips if redis-server is missing."""
    if shutil.which(REDIS_SERVER) is None:
        pytest.skip(NOT_INSTALLED)
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url
