"""Settings: defaults, .env handling, and one clear error naming every bad variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chatlib.config import ENV_VARS, Settings
from chatlib.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_defaults_match_the_product() -> None:
    settings = Settings.from_env({}, env_file=None)
    assert settings.default_model == "openai/gpt-4o"
    assert settings.temperature == 0.3
    assert settings.openrouter_base_url == "https://openrouter.ai/api/v1"
    assert settings.openrouter_api_key is None
    assert (settings.host, settings.port) == ("0.0.0.0", 7860)
    assert settings.max_input_chars == 8000
    assert settings.max_history_messages == 40


def test_every_invalid_variable_is_named_in_one_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {"TEMPERATURE": "abc", "PORT": "99999", "LOG_JSON": "maybe", "LOG_LEVEL": "LOUD"},
            env_file=None,
        )
    message = str(caught.value)
    assert "TEMPERATURE must be a number between 0 and 2, got 'abc'" in message
    assert "PORT must be a whole number between 1 and 65535, got '99999'" in message
    assert "LOG_JSON" in message and "LOG_LEVEL" in message
    assert len(caught.value.problems) == 4


def test_limits_are_bounded() -> None:
    with pytest.raises(ConfigError, match="MAX_HISTORY_MESSAGES"):
        Settings.from_env({"MAX_HISTORY_MESSAGES": "10001"}, env_file=None)


def test_the_defaults_in_code_are_the_defaults_of_an_empty_environment() -> None:
    assert Settings() == Settings.from_env({}, env_file=None)


def test_on_a_space_the_public_url_is_the_space_s_own() -> None:
    space = {"SPACE_ID": "alice/chat", "SPACE_HOST": "alice-chat.hf.space"}
    assert Settings.from_env(space, env_file=None).public_url == "https://alice-chat.hf.space"
    chosen = Settings.from_env({**space, "PUBLIC_URL": "https://chat.example.org/"}, env_file=None)
    assert chosen.public_url == "https://chat.example.org"


def test_off_a_space_there_is_no_public_url_unless_one_is_set() -> None:
    assert Settings.from_env({"SPACE_HOST": "stray.hf.space"}, env_file=None).public_url == ""
    assert Settings.from_env({}, env_file=None).public_url == ""
    older_name = Settings.from_env({"APP_URL": "https://chat.example.org"}, env_file=None)
    assert older_name.public_url == "https://chat.example.org"
    with pytest.raises(ConfigError, match="PUBLIC_URL must be an http"):
        Settings.from_env({"PUBLIC_URL": "chat.example.org"}, env_file=None)


def test_secret_values_are_never_echoed_in_errors() -> None:
    settings = Settings.from_env({"OPENROUTER_API_KEY": "  sk-or-v1-xyz  "}, env_file=None)
    assert settings.openrouter_api_key == "sk-or-v1-xyz"
    assert "sk-or-v1-xyz" not in repr(settings)


def test_dotenv_fills_gaps_but_never_overrides_real_environment(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DEFAULT_MODEL=anthropic/claude-sonnet-4.5\nTEMPERATURE=0.9\n")
    settings = Settings.from_env({"TEMPERATURE": "0.1"}, env_file=env_file)
    assert settings.default_model == "anthropic/claude-sonnet-4.5"
    assert settings.temperature == 0.1


def test_high_default_temperature_is_clamped_into_the_slider() -> None:
    settings = Settings.from_env({"TEMPERATURE": "1.8"}, env_file=None)
    assert settings.temperature == 1.8
    assert settings.slider_temperature == 1.2


def test_base_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="OPENROUTER_BASE_URL must be an http"):
        Settings.from_env({"OPENROUTER_BASE_URL": "ftp://x"}, env_file=None)


def test_settings_fields_and_env_vars_are_one_list() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert fields == {var.name.lower() for var in ENV_VARS}


def test_env_example_documents_every_variable() -> None:
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    for var in ENV_VARS:
        assert f"{var.name}=" in text, f"{var.name} missing from .env.example"


def test_readme_table_lists_every_variable() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for var in ENV_VARS:
        assert f"`{var.name}`" in text, f"{var.name} missing from the README table"
