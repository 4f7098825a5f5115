"""A real, throwaway PostgreSQL cluster on a free loopback port, for the SQL store's tests.

Use the session fixture from a test module, and a fresh database per module:

    from tests.pg_server import fresh_database, postgres_url  # noqa: F401 - pytest fixture

    @pytest.fixture(scope="module")
    def database_url(postgres_url: str) -> str:
        return fresh_database(postgres_url)

or the context manager `running_postgres()` anywhere else (a bench, a script).

The cluster is Debian's `postgresql` (`make system-deps`), started by `initdb` + `postgres`
in a temporary directory with durability off (fsync, full-page writes), so a start takes a
second or two. PostgreSQL refuses to run as root: as root, the server runs as the
`postgres` system user the Debian package creates; otherwise as the current user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import free_port

NOT_INSTALLED = (
    "PostgreSQL's server programs are missing: no /usr/lib/postgresql/*/bin/initdb "
    "(`make system-deps` or apt-get install postgresql)"
)
SUPERUSER = "postgres"
APP_USER = "chat"
APP_PASSWORD = "chat"
APP_DATABASE = "chat"
# Debian's package creates this system user; the server runs as it when we are root.
SYSTEM_USER = "postgres"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    # Speed over durability: the cluster is deleted at the end of the session anyway.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_connections": "200",
    "logging_collector": "off",
    "log_min_messages": "warning",
}


def postgres_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb, or None."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: int(Path(p).parent.parent.name.split(".")[0]))
    return Path(newest).parent


def _as_user(run_as: str | None) -> dict[str, object]:
    """Popen keyword arguments that drop root to `run_as` (its group, no supplementary groups)."""
    if run_as is None:
        return {}
    entry = pwd.getpwnam(run_as)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _run_as() -> str | None:
    """The user to run the server as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError as exc:
        raise RuntimeError(
            f"running as root, PostgreSQL needs the {SYSTEM_USER!r} system user "
            "(created by Debian's postgresql package; `make system-deps`)"
        ) from exc
    return SYSTEM_USER


@dataclass
class PostgresServer:
    """A PostgreSQL cluster subprocess, its directory and the URLs to reach it."""

    port: int
    process: subprocess.Popen[bytes]
    root: Path
    bin_dir: Path
    run_as: str | None

    @property
    def url(self) -> str:
        """postgresql://chat:chat@127.0.0.1:<port>/chat (the app's user and database)."""
        return f"postgresql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{self.port}/{APP_DATABASE}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    def logs(self) -> str:
        """What the server printed so far."""
        path = self.root / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def psql(self, sql: str, database: str = "postgres", timeout: float = 30.0) -> str:
        """Run `sql` as the superuser over the unix socket; return psql's output."""
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-tA",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_client_env(),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def stop(self) -> None:
        """Stop the cluster at once (`pg_ctl stop -m immediate`), then delete its directory."""
        if self.process.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "stop",
                        "-m",
                        "immediate",
                        "-D",
                        str(self.data_dir),
                    ],
                    cwd=self.root,
                    **_as_user(self.run_as),
                    capture_output=True,
                    timeout=15,
                    check=False,
                )
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _client_env() -> dict[str, str]:
    # No PGPASSWORD/PGSERVICE/... from the developer's shell, and no ~/.psqlrc.
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


def _make_root() -> Path:
    """A temporary directory the server's user owns (pytest's tmp dirs are root-only)."""
    root = Path(tempfile.mkdtemp(prefix="pg-test-", dir="/tmp"))
    run_as = _run_as()
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    return root


def _initdb(bin_dir: Path, root: Path, run_as: str | None) -> None:
    result = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            SUPERUSER,
            "--auth-local=trust",  # the superuser, over the unix socket in `root`
            "--auth-host=scram-sha-256",  # everyone on TCP, with a password, like production
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "--no-instructions",
        ],
        cwd=root,
        env=_client_env(),
        capture_output=True,
        text=True,
        timeout=120,
        **_as_user(run_as),
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def _is_ready(bin_dir: Path, port: int) -> bool:
    result = subprocess.run(
        [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "1"],
        env=_client_env(),
        capture_output=True,
        timeout=10,
        check=False,
    )
    return result.returncode == 0


def start_postgres(timeout: float = 30.0) -> PostgresServer:
    """initdb a cluster, start it on a free loopback port, and create the app's user and database.

    The returned server's `url` is postgresql://chat:chat@127.0.0.1:<port>/chat; the user
    `chat` owns that database and may create others (see `fresh_database`).
    """
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError(NOT_INSTALLED)
    run_as = _run_as()
    root = _make_root()
    try:
        _initdb(bin_dir, root, run_as)
        server = _start_server(bin_dir, root, run_as, timeout)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        # Two calls: psql runs one -c string as one transaction, and CREATE DATABASE
        # refuses to run inside one.
        server.psql(f"CREATE ROLE {APP_USER} LOGIN CREATEDB PASSWORD '{APP_PASSWORD}'")
        server.psql(f"CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}")
    except BaseException:
        server.stop()
        raise
    return server


def _start_server(bin_dir: Path, root: Path, run_as: str | None, timeout: float) -> PostgresServer:
    server: PostgresServer | None = None
    for _attempt in range(3):  # another process may take the free port before postgres binds it
        port = free_port()
        settings = {**SERVER_SETTINGS, "port": str(port), "unix_socket_directories": str(root)}
        argv = [str(bin_dir / "postgres"), "-D", str(root / "data")]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        log_path = root / "postgres.log"
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                argv,
                cwd=root,
                env=_client_env(),
                stdin=subprocess.DEVNULL,
                **_as_user(run_as),
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = PostgresServer(
            port=port, process=process, root=root, bin_dir=bin_dir, run_as=run_as
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _is_ready(bin_dir, port):
                return server
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if "could not bind" not in server.logs() and "in use" not in server.logs():
            break
    logs = server.logs() if server is not None else ""
    raise RuntimeError(f"postgres did not start:\n{logs}")


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the duration of the block."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


def fresh_database(url: str) -> str:
    """Create an empty database owned by the URL's user on the same server; return its URL.

    Give each test module its own: tests then see neither each other's rows nor schema.
    """
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"not a postgresql:// URL: {parts.scheme}://…")
    name = f"test_{secrets.token_hex(6)}"
    owner = parts.username or APP_USER
    psql = _find_psql()
    result = subprocess.run(
        [
            psql,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            f'CREATE DATABASE "{name}" OWNER "{owner}"',
        ],
        env=_client_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"could not create database {name}: {result.stderr.strip()}")
    return urlunsplit(parts._replace(path=f"/{name}"))


def _find_psql() -> str:
    bin_dir = postgres_bin_dir()
    if bin_dir is not None and (bin_dir / "psql").exists():
        return str(bin_dir / "psql")
    found = shutil.which("psql")
    if found is None:
        raise FileNotFoundError("psql is missing (apt-get install postgresql-client)")
    return found


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster shared by the session; skips if PostgreSQL is not installed."""
    if postgres_bin_dir() is None:
        pytest.skip(NOT_INSTALLED)
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """postgresql://chat:chat@127.0.0.1:<port>/chat on the session's cluster."""
    return postgres_server.url
