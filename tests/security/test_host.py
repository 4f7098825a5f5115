"""Break 9: a local run serves this machine only; a Space and the image serve everyone."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatlib.config import Settings
from chatlib.operator import local_base_url
from chatlib.services import create_services
from tests.conftest import REPO, TEST_API_KEY
from ui.page import launch_kwargs


def test_make_run_with_the_operators_key_in_dot_env_binds_loopback(tmp_path: Path) -> None:
    dot_env = tmp_path / ".env"
    dot_env.write_text(f"OPENROUTER_API_KEY={TEST_API_KEY}\n", encoding="utf-8")
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data")}, env_file=dot_env)
    assert settings.openrouter_api_key == TEST_API_KEY
    assert settings.host == "127.0.0.1"
    assert launch_kwargs(settings, create_services(settings))["server_name"] == "127.0.0.1"
    assert local_base_url(settings.host, settings.port).startswith("http://127.0.0.1:")


def test_on_a_space_the_app_binds_every_interface() -> None:
    space = Settings.from_env({"SPACE_ID": "alice/chat"}, env_file=None)
    assert space.host == "0.0.0.0"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "127.0.0.1"])
def test_an_explicit_host_is_what_the_operator_chose(host: str) -> None:
    assert Settings.from_env({"HOST": host}, env_file=None).host == host
    assert Settings.from_env({"HOST": host, "SPACE_ID": "a/b"}, env_file=None).host == host


def test_make_run_and_the_image_say_where_they_listen() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    run_recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "HOST" not in run_recipe  # `make run` keeps the 127.0.0.1 default
    assert "HOST=0.0.0.0" in (REPO / "Dockerfile").read_text(encoding="utf-8")
