"""structlog and stdlib logging under one configuration, with secrets redacted."""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from chatlib.config import Settings

# What an OpenRouter key looks like (a visitor's pasted key must match it: see keys.py).
OPENROUTER_KEY_SHAPE = re.compile(r"sk-or-[A-Za-z0-9_\-]{6,}")
# Shapes of credentials that must never reach a log line, whatever logged them.
_SECRET_PATTERNS = (
    OPENROUTER_KEY_SHAPE,
    re.compile(r"sk-[A-Za-z0-9_\-]{16,}"),
    re.compile(r"hf_[A-Za-z0-9]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-\.=]{6,}"),
)
REDACTED = "[REDACTED]"
# The log file rotates at UTC midnight and a week of days is kept. A Space's disk is wiped on
# restart anyway, so this only bounds the disk a long-running server uses.
LOG_ROTATION_WHEN = "MIDNIGHT"
LOG_ROTATION_INTERVAL = 1
LOG_BACKUP_COUNT = 7
# Libraries that log request bodies or SQL parameters (message text, titles, owner keys) at
# DEBUG: never below WARNING, whatever LOG_LEVEL says.
_NOISY_LOGGERS = (
    "aiosqlite",
    "asyncpg",
    "sqlalchemy",
    "alembic",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "openai",
    "urllib3",
    "gradio",
    "uvicorn.access",
)


def redact_secret_shapes(text: str) -> str:
    """Replace anything shaped like an API key, HF token or bearer credential in `text`."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.lastindex else "") + REDACTED, text)
    return text


class SecretRedactor:
    """A structlog processor that scrubs known secrets and key-shaped strings."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = {s for s in secrets if s and len(s) >= 6}

    def add(self, secret: str | None) -> None:
        """Also scrub `secret` from now on: the operator's secrets, never a visitor's input.

        (A visitor's own key has the shape of an OpenRouter key, which is always scrubbed;
        registering what visitors send would let anyone erase chosen words from the logs.)
        """
        if secret and len(secret) >= 6:
            self._secrets.add(secret)

    def scrub(self, text: str) -> str:
        """Return `text` with every secret replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return redact_secret_shapes(text)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        return value

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Process one event."""
        del logger, method_name
        return {key: self._clean(value) for key, value in event_dict.items()}


def _drop_color_message(
    logger: WrappedLogger, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    del logger, method_name
    event_dict.pop("color_message", None)
    return event_dict


def _formatter(
    shared: list[Processor], redactor: SecretRedactor, renderer: Processor
) -> logging.Formatter:
    """stdlib records and structlog events alike: scrubbed, then rendered by `renderer`."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor, renderer],
    )


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def console_wants_json(settings: Settings, stream: TextIO) -> bool:
    """Whether the console gets JSON lines: LOG_JSON=true, or auto unless a person reads it.

    auto means readable lines in a terminal, JSON when the stream is a pipe or a file (log
    collectors) and always on a Space, whose log viewer is read as a stream.
    """
    if settings.log_json == "auto":
        return settings.on_space or not _is_tty(stream)
    return settings.log_json != "false"


def configure_logging(
    settings: Settings, *, stream: TextIO | None = None, redactor: SecretRedactor | None = None
) -> SecretRedactor:
    """Send structlog and stdlib logs to stderr (`stream`) and a rotating file.

    The file is always JSON; the console is JSON or readable lines as LOG_JSON says (see
    `console_wants_json`), colored only on a terminal. Secrets are scrubbed from both.
    """
    redactor = redactor or SecretRedactor([settings.openrouter_api_key or ""])
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
        structlog.processors.format_exc_info,
    ]
    console = stream or sys.stderr

    json_formatter = _formatter(shared, redactor, structlog.processors.JSONRenderer())
    console_formatter = json_formatter
    if not console_wants_json(settings, console):
        readable = structlog.dev.ConsoleRenderer(colors=_is_tty(console))
        console_formatter = _formatter(shared, redactor, readable)
    settings.log_path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.TimedRotatingFileHandler(
        settings.log_path,
        when=LOG_ROTATION_WHEN,
        interval=LOG_ROTATION_INTERVAL,
        backupCount=LOG_BACKUP_COUNT,
        encoding="utf-8",
        utc=True,
    )
    console_handler = logging.StreamHandler(console)
    console_handler.setFormatter(console_formatter)
    file_handler.setFormatter(json_formatter)  # the file is for machines: always JSON
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in (console_handler, file_handler):
        root.addHandler(handler)
    level = logging.getLevelName(settings.log_level)
    root.setLevel(level)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return redactor
