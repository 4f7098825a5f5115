"""Logs: readable in a terminal, JSON for machines and in the file, secrets never shown."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

import app
from chatlib.config import Settings
from chatlib.logging import configure_logging, console_wants_json

SECRET_KEY = "sk-or-v1-LOGTEST0000secret0000cafebabe"


class Terminal(io.StringIO):
    """A console stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"LOG_PATH": str(tmp_path / "logs" / "app.log"), **env}, env_file=None)


def _log_one_event(settings: Settings, stream: io.StringIO) -> tuple[str, str]:
    """Log a turn's event (with a key in it); what the console and the file got."""
    configure_logging(settings, stream=stream)
    structlog.get_logger("test").info("chat.finished", model="openai/gpt-4o", key=SECRET_KEY)
    return stream.getvalue(), settings.log_path.read_text("utf-8")


def _is_json_lines(text: str) -> bool:
    try:
        return all(isinstance(json.loads(line), dict) for line in text.splitlines() if line)
    except json.JSONDecodeError:
        return False


def test_auto_in_a_terminal_reads_as_lines_with_colors_and_the_file_stays_json(
    tmp_path: Path,
) -> None:
    console, file = _log_one_event(_settings(tmp_path, OPENROUTER_API_KEY=SECRET_KEY), Terminal())
    assert "chat.finished" in console and "openai/gpt-4o" in console
    assert not _is_json_lines(console)
    assert "\x1b[" in console  # colored: a person is reading
    assert _is_json_lines(file)
    event = json.loads(file.splitlines()[-1])
    assert event["event"] == "chat.finished" and event["model"] == "openai/gpt-4o"
    assert SECRET_KEY not in console and SECRET_KEY not in file


def test_auto_into_a_pipe_is_json(tmp_path: Path) -> None:
    console, file = _log_one_event(_settings(tmp_path), io.StringIO())
    assert _is_json_lines(console) and _is_json_lines(file)
    assert SECRET_KEY not in console + file


def test_auto_on_a_space_is_json_even_in_a_terminal(tmp_path: Path) -> None:
    settings = _settings(tmp_path, SPACE_ID="someone/chat", BROWSER_STATE_SECRET="x" * 32)
    console, _ = _log_one_event(settings, Terminal())
    assert _is_json_lines(console)


def test_false_gives_plain_lines_without_colors_in_a_pipe(tmp_path: Path) -> None:
    console, file = _log_one_event(_settings(tmp_path, LOG_JSON="false"), io.StringIO())
    assert "chat.finished" in console and not _is_json_lines(console)
    assert "\x1b[" not in console
    assert _is_json_lines(file)
    assert SECRET_KEY not in console + file


def test_true_is_json_even_in_a_terminal(tmp_path: Path) -> None:
    console, _ = _log_one_event(_settings(tmp_path, LOG_JSON="true"), Terminal())
    assert _is_json_lines(console)


@pytest.mark.parametrize(
    ("log_json", "tty", "space", "expected"),
    [
        ("auto", True, False, False),
        ("auto", False, False, True),
        ("auto", True, True, True),
        ("true", True, False, True),
        ("false", False, True, False),
    ],
)
def test_when_the_console_gets_json(
    tmp_path: Path, log_json: str, tty: bool, space: bool, expected: bool
) -> None:
    env = {"LOG_JSON": log_json}
    if space:
        env |= {"SPACE_ID": "someone/chat", "BROWSER_STATE_SECRET": "x" * 32}
    stream = Terminal() if tty else io.StringIO()
    assert console_wants_json(_settings(tmp_path, **env), stream) is expected


# -- startup without an operator key ---------------------------------------------------------


def test_startup_without_a_key_warns_in_the_log_and_tells_the_operator_what_to_do(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, LOG_JSON="true")
    console = io.StringIO()
    configure_logging(settings, stream=console)
    out = io.StringIO()
    assert app.warn_if_no_key(settings, out) is True
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "visitor's own key" in lines[0] and "paste" in lines[0]
    assert "OPENROUTER_API_KEY=" in lines[0] and ".env" in lines[0] and "secret" in lines[0]
    events = [json.loads(line) for line in console.getvalue().splitlines()]
    warning = next(e for e in events if e["event"] == "startup.no_api_key")
    assert warning["level"] == "warning"


def test_startup_with_a_key_says_nothing_about_keys(tmp_path: Path) -> None:
    settings = _settings(tmp_path, OPENROUTER_API_KEY=SECRET_KEY)
    console = io.StringIO()
    configure_logging(settings, stream=console)
    out = io.StringIO()
    assert app.warn_if_no_key(settings, out) is False
    assert out.getvalue() == "" and "startup.no_api_key" not in console.getvalue()
