"""Deployment behaviour: Space conventions, share link wiring, data surviving a Space restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from chatlib.config import Settings
from chatlib.services import create_services
from tests.conftest import REPO, TEST_API_KEY, AppServer, start_app
from tests.fakes.hf_hub import DEFAULT_TOKEN, DEFAULT_USER, FakeHfHub
from tests.fakes.openrouter import FakeOpenRouter
from tests.ui import last_answer, open_app, send, wait_until_idle
from ui import page as app_module

SECRET = "space-secret-for-tests-0000000000000000"


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"DATA_DIR": str(tmp_path / "data"), **env}, env_file=None)


def test_defaults_follow_space_conventions(tmp_path: Path) -> None:
    settings = _settings(tmp_path, SPACE_ID="someone/openrouter-chat", SYSTEM="spaces")
    kwargs = app_module.launch_kwargs(settings, create_services(settings))
    assert (kwargs["server_name"], kwargs["server_port"]) == ("0.0.0.0", 7860)
    assert kwargs["share"] is False
    assert settings.on_space


def test_share_true_asks_gradio_for_a_public_link(tmp_path: Path) -> None:
    settings = _settings(tmp_path, SHARE="true")
    assert app_module.launch_kwargs(settings, create_services(settings))["share"] is True


HAS_LOGIN_SCRIPT = """
import gradio as gr, os
from chatlib.config import Settings
from chatlib.services import create_services
from ui import page
settings = Settings.from_env(os.environ, env_file=None)
demo = page.build(settings, create_services(settings))
print(any(isinstance(b, gr.LoginButton) for b in demo.blocks.values()))
"""


def _has_login(tmp_path: Path, **env: str) -> bool:
    """Build the page in a fresh interpreter (Gradio reads the Space variables at import)."""
    result = subprocess.run(
        [sys.executable, "-c", HAS_LOGIN_SCRIPT],
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO),
            "HOME": str(tmp_path),
            "DATA_DIR": str(tmp_path / "data"),
            "LOG_PATH": str(tmp_path / "app.log"),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1] == "True"


def test_login_button_only_on_a_space_with_oauth(tmp_path: Path) -> None:
    space = {"SYSTEM": "spaces", "SPACE_ID": "someone/openrouter-chat"}
    oauth = {
        "OAUTH_CLIENT_ID": "client-id",
        "OAUTH_CLIENT_SECRET": "client-secret",
        "OAUTH_SCOPES": "openid profile",
        "OPENID_PROVIDER_URL": "https://huggingface.co",
    }
    assert not _has_login(tmp_path)
    assert not _has_login(tmp_path, **space)  # hf_oauth not enabled
    assert _has_login(tmp_path, **space, **oauth)


@pytest.fixture
def hub() -> Iterator[FakeHfHub]:
    fake_hub = FakeHfHub()
    fake_hub.start()
    yield fake_hub
    fake_hub.stop()


def push_failures(app: AppServer) -> list[str]:
    """The dataset sync's failed pushes in the app's log (each one shows in the operator view)."""
    events = ('"hub.push_failed"', '"hub.before_push_failed"')
    lines = app.log_path.read_text().splitlines()
    return [line for line in lines if any(event in line for event in events)]


@pytest.mark.e2e
def test_a_visitor_finds_their_chats_after_the_space_restarts_with_an_empty_disk(
    browser: Browser,
    tmp_path: Path,
    hub: FakeHfHub,
    fake_openrouter: FakeOpenRouter,
    app_factory: Callable[..., AppServer],
) -> None:
    env = {
        "OPENROUTER_API_KEY": TEST_API_KEY,
        "OPENROUTER_BASE_URL": fake_openrouter.base_url,
        "HF_TOKEN": DEFAULT_TOKEN,
        "HF_DATASET_REPO": f"{DEFAULT_USER}/chat-data",
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_SYNC_EVERY_MINUTES": "60",
        "BROWSER_STATE_SECRET": SECRET,
    }
    first = start_app(tmp_path / "boot-1", env)
    context = browser.new_context()
    page = context.new_page()
    second: AppServer | None = None
    try:
        open_app(page, first.url)
        send(page, "Remember me across restarts [[tokens=3]]")
        expect(last_answer(page)).to_contain_text("TTFT")
        wait_until_idle(page)
        # A Space restart: SIGTERM, then a fresh container with an empty disk.
        first.process.send_signal(signal.SIGTERM)
        first.process.wait(timeout=60)
        repo = hub.repo(f"{DEFAULT_USER}/chat-data")
        assert repo.private
        names = list(repo.files)
        assert any(n.startswith("conversations/") and n.endswith(".json") for n in names)
        assert any(n.startswith("usage/") for n in names)
        assert not any(n.startswith(("secrets/", "exports/")) for n in names)
        # Every push went through: the first one at boot too (it runs before_push, which
        # reads the database, so it must not start before the database is ready).
        assert push_failures(first) == []

        second = start_app(tmp_path / "boot-2", env, port=first.port)
        open_app(page, second.url)
        item = page.locator("#conversation-list label").filter(has_text="Remember me")
        expect(item).to_have_count(1)
        item.click()
        expect(page.locator('#chat [data-testid="user"]').first).to_contain_text(
            "Remember me across restarts"
        )
        second.stop()  # SIGTERM: the shutdown flush pushes once more
        assert push_failures(second) == []
    finally:
        context.close()
        first.stop()
        if second is not None:
            second.stop()
