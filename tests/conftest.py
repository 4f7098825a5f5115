"""Shared fixtures: the fake OpenRouter, the real app as a subprocess, headless Chromium."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chatlib.config import Settings
from chatlib.logging import configure_logging
from tests.fakes.openrouter import FakeOpenRouter

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Recognizable fake secrets: tests assert they never leak anywhere.
TEST_API_KEY = "sk-or-v1-TESTKEY0000secret0000feedface"


def settings_for(fake: FakeOpenRouter, tmp_path: Path, **env: str) -> Settings:
    """Settings pointing at the fake with the test key, logging (to memory) configured."""
    settings = Settings.from_env(
        {
            "OPENROUTER_API_KEY": TEST_API_KEY,
            "OPENROUTER_BASE_URL": fake.base_url,
            "LOG_PATH": str(tmp_path / "logs" / "app.log"),
            **env,
        },
        env_file=None,
    )
    configure_logging(settings, stream=io.StringIO())
    return settings


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def fake_openrouter() -> Iterator[FakeOpenRouter]:
    """One fake OpenRouter server for the whole session."""
    fake = FakeOpenRouter(tokens_per_second=200.0, default_tokens=20)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_openrouter: FakeOpenRouter) -> FakeOpenRouter:
    """The fake, with recorded requests and defaults cleared."""
    fake_openrouter.reset()
    fake_openrouter.catalog_mode = "ok"
    return fake_openrouter


@dataclass
class AppServer:
    """The real app running as a subprocess."""

    url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def port(self) -> int:
        """The TCP port the app listens on."""
        return int(self.env["PORT"])

    def restart(self) -> AppServer:
        """Stop the app and start it again on the same port and data."""
        self.stop()
        overrides = {k: v for k, v in self.env.items() if k != "PORT"}
        return start_app(self.workdir, overrides, port=self.port)

    def logs(self) -> str:
        """Everything the app wrote to its log file and stderr so far."""
        parts = []
        for path in (self.log_path, self.workdir / "stderr.log"):
            if path.exists():
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        """Terminate the app and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def start_app(
    workdir: Path, env_overrides: dict[str, str], timeout: float = 60.0, port: int | None = None
) -> AppServer:
    """Start `python app.py` in `workdir` (so no developer .env is read) and wait for it.

    Restarting on the same `port` keeps the browser origin, so a visitor's BrowserState
    (their anonymous identity) survives like it does on a real deployment.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = workdir / "logs" / "app.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_PATH": str(log_path),
        "LOG_JSON": "true",
        "LOG_LEVEL": "DEBUG",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "NO_PROXY": "*",
        "RATE_LIMIT_REQUESTS_PER_MIN": "0",
        **env_overrides,
    }
    with (workdir / "stderr.log").open("ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "app.py")],
            cwd=workdir,
            env=env,
            stdout=stderr,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    server = AppServer(url=url, process=process, workdir=workdir, log_path=log_path, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app exited with {process.returncode}:\n{server.logs()}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"app did not start within {timeout} s:\n{server.logs()}")


@pytest.fixture(scope="module")
def app_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., AppServer]]:
    """Start apps on demand; all are stopped at the end of the module."""
    started: list[AppServer] = []

    def factory(name: str = "app", **env: str) -> AppServer:
        server = start_app(tmp_path_factory.mktemp(name), env)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def shared_app_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., AppServer]]:
    """Like `app_factory`, but one app per distinct settings for the whole session.

    For modules whose tests each take a fresh browser context (a new visitor) and depend on
    no server-wide state: they share the app instead of starting their own (~10 s each).
    """
    started: dict[tuple[tuple[str, str], ...], AppServer] = {}

    def factory(name: str = "app", **env: str) -> AppServer:
        key = tuple(sorted(env.items()))
        if key not in started:
            started[key] = start_app(tmp_path_factory.mktemp(name), env)
        return started[key]

    yield factory
    for server in started.values():
        server.stop()


@pytest.fixture(scope="session")
def app_server(
    shared_app_factory: Callable[..., AppServer], fake_openrouter: FakeOpenRouter
) -> AppServer:
    """The app with an operator key, pointed at the fake OpenRouter.

    One for the session: every module using it opens its own pages (new visitors), so none
    sees another's chats; a test about the whole server compares before and after.
    """
    return shared_app_factory(
        "app",
        OPENROUTER_API_KEY=TEST_API_KEY,
        OPENROUTER_BASE_URL=fake_openrouter.base_url,
        STREAM_IDLE_TIMEOUT_SECONDS="3",
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium driven by Playwright.

    Module-scoped: sync Playwright keeps an event loop running in the main thread while it
    is open, which would break the asyncio tests of later modules.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Remember each phase's report so fixtures can screenshot failures."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(params=["desktop", "phone"])
def device(request: pytest.FixtureRequest) -> str:
    """Runs the test twice: at desktop size (1280×800) and as a phone (Pixel 7 emulation).

    Take it with `device_page` below, or pass it to `tests.ui.device_page(browser, device)`.
    """
    return str(request.param)


@pytest.fixture
def device_page(browser: object, device: str, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh page emulating `device` (see `tests.ui.DEVICES`); a screenshot if the test fails."""
    from tests.ui import new_device_context

    context = new_device_context(browser, device)  # type: ignore[arg-type]
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture
def page(browser: object, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh browser context and page; a screenshot is kept if the test fails."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    context.set_default_timeout(20_000)
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
