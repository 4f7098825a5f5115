"""Settings: defaults, .env handling, and one clear error naming every bad variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chatlib.config import ENV_VARS, Settings
from chatlib.errors import ConfigError
from chatlib.services import create_services

REPO = Path(__file__).resolve().parent.parent


def test_defaults_match_the_product() -> None:
    settings = Settings.from_env({}, env_file=None)
    assert settings.default_model == "openai/gpt-4o"
    assert settings.temperature == 0.3
    assert settings.openrouter_base_url == "https://openrouter.ai/api/v1"
    assert settings.openrouter_api_key is None
    assert (settings.host, settings.port) == ("127.0.0.1", 7860)
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


def test_a_local_run_serves_this_machine_only_and_a_space_every_interface() -> None:
    # `python app.py` / `make run`: the operator's key must not serve the whole LAN.
    assert Settings.from_env({}, env_file=None).host == "127.0.0.1"
    assert Settings.from_env({"HOST": ""}, env_file=None).host == "127.0.0.1"
    # On a Space the proxy reaches the app from another address: bind every interface.
    assert Settings.from_env({"SPACE_ID": "alice/chat"}, env_file=None).host == "0.0.0.0"
    # An explicit HOST always wins (the Docker image sets 0.0.0.0).
    assert Settings.from_env({"HOST": "0.0.0.0"}, env_file=None).host == "0.0.0.0"
    chosen = Settings.from_env({"HOST": "192.168.1.5", "SPACE_ID": "a/b"}, env_file=None)
    assert chosen.host == "192.168.1.5"
    with pytest.raises(ConfigError, match="HOST must be a host name"):
        Settings.from_env({"HOST": "http://x/"}, env_file=None)


def test_copying_env_example_keeps_a_local_run_on_this_machine(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text((REPO / ".env.example").read_text(encoding="utf-8"))
    assert Settings.from_env({}, env_file=env_file).host == "127.0.0.1"


def test_key_checks_and_uploads_have_small_limits_by_default() -> None:
    settings = Settings.from_env({}, env_file=None)
    assert settings.key_checks_per_min == 3
    assert settings.uploads_per_min == 10
    assert settings.max_upload_bytes == 2 * settings.max_import_bytes
    tuned = Settings.from_env({"KEY_CHECKS_PER_MIN": "0", "UPLOADS_PER_MIN": "5"}, env_file=None)
    assert (tuned.key_checks_per_min, tuned.uploads_per_min) == (0, 5)
    with pytest.raises(ConfigError, match="KEY_CHECKS_PER_MIN must be a whole number"):
        Settings.from_env({"KEY_CHECKS_PER_MIN": "-1"}, env_file=None)


def test_an_operator_token_must_be_long_and_is_never_echoed() -> None:
    assert Settings.from_env({}, env_file=None).operator_token is None
    token = "Ab3_" * 8
    settings = Settings.from_env({"OPERATOR_TOKEN": f"  {token} "}, env_file=None)
    assert settings.operator_token == token
    assert token not in repr(settings)
    for bad in ("short-token", "x" * 23, "has space" * 4, "query?string&" * 3):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"OPERATOR_TOKEN": bad}, env_file=None)
        assert "OPERATOR_TOKEN must be 24 to 200 characters" in str(caught.value)
        assert bad not in str(caught.value)


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


def test_a_shared_database_needs_the_shared_identity_secret() -> None:
    with pytest.raises(ConfigError, match="BROWSER_STATE_SECRET is required"):
        Settings.from_env({"DATABASE_URL": "postgresql://chat:pw@db:5432/chat"}, env_file=None)
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://chat:pw@db:5432/chat", "BROWSER_STATE_SECRET": "s" * 32},
        env_file=None,
    )
    assert settings.database_url == "postgresql://chat:pw@db:5432/chat"
    assert "pw@" not in repr(settings)


def test_a_database_url_of_another_kind_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"DATABASE_URL": "mysql://root:hunter2@db/chat"}, env_file=None)
    assert "DATABASE_URL must be postgresql://" in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_a_database_that_cannot_be_opened_stops_startup_with_a_message(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": "sqlite:////proc/openrouter-chat/chat.db",  # never writable
            "BROWSER_STATE_SECRET": "s" * 32,
        },
        env_file=None,
    )
    with pytest.raises(ConfigError, match="could not be opened or migrated.*DATA_DIR"):
        create_services(settings)


def test_web_search_results_default_to_five_and_stay_within_what_openrouter_takes() -> None:
    assert Settings.from_env({}, env_file=None).web_search_max_results == 5
    assert (
        Settings.from_env({"WEB_SEARCH_MAX_RESULTS": "25"}, env_file=None).web_search_max_results
        == 25
    )
    for wrong in ("0", "26", "five"):
        with pytest.raises(ConfigError, match="WEB_SEARCH_MAX_RESULTS"):
            Settings.from_env({"WEB_SEARCH_MAX_RESULTS": wrong}, env_file=None)
