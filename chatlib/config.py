"""Settings: read once from the environment (and `.env`), validated, frozen."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dotenv import dotenv_values

from chatlib.attachments import AttachmentLimits
from chatlib.errors import ConfigError

TEMPERATURE_SLIDER_MAX = 1.2
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: its name, default, parser and documentation."""

    name: str
    default: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


def _text(raw: str) -> str:
    return raw.strip()


def _optional_secret(raw: str) -> str | None:
    return raw.strip() or None


def _model_id(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("must be a model id such as 'openai/gpt-4o'")
    return value


def _http_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http(s) URL")
    return value


def _optional_url(raw: str) -> str:
    return _http_url(raw) if raw.strip() else ""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("must be true or false")


def _number(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise ValueError(f"must be a number between {low:g} and {high:g}")
        return value

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ValueError(f"must be a whole number between {low} and {high}")
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _log_json(raw: str) -> str:
    value = raw.strip().lower()
    if value in ("1", "yes", "on"):
        value = "true"
    if value in ("0", "no", "off"):
        value = "false"
    if value not in ("auto", "true", "false"):
        raise ValueError("must be auto, true or false")
    return value


def _pdf_engine(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("", "cloudflare-ai", "mistral-ocr", "native"):
        raise ValueError("must be empty, cloudflare-ai, mistral-ocr or native")
    return value


def _host(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() or c in "/?#" for c in value):
        raise ValueError("must be a host name or IP address")
    return value


def _optional_host(raw: str) -> str:
    return _host(raw) if raw.strip() else ""


# A Space (and the Docker image, which sets HOST) must bind every interface; anything else
# binds this machine only, so a `make run` with the operator's key in .env does not serve
# that key's credit to the whole network.
LOCAL_HOST = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - used only on a Space or when HOST says so

# secrets.token_urlsafe(24) is 32 characters; a chosen token must be at least 24.
OPERATOR_TOKEN_MIN_CHARS = 24
_OPERATOR_TOKEN_MAX_CHARS = 200
_URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


_DATABASE_SCHEMES = ("postgresql://", "postgres://", "sqlite:///")


def _database_url(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if not value.startswith(_DATABASE_SCHEMES) or any(c.isspace() for c in value):
        raise ValueError(
            "must be postgresql://user:password@host:port/database (or sqlite:///path)"
        )
    return value


def _operator_token(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if not (
        OPERATOR_TOKEN_MIN_CHARS <= len(value) <= _OPERATOR_TOKEN_MAX_CHARS
        and set(value) <= _URL_SAFE
    ):
        raise ValueError(
            f"must be {OPERATOR_TOKEN_MIN_CHARS} to {_OPERATOR_TOKEN_MAX_CHARS} characters of "
            "A-Z, a-z, 0-9, - and _ (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(24))')"
        )
    return value


def _proxies(raw: str) -> str:
    # Imported here: ratelimit pulls in the limits library, which config need not load.
    from chatlib.ratelimit import parse_trusted_proxies

    parse_trusted_proxies(raw)
    return raw.strip()


def _path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("must be a file path")
    return Path(raw.strip())


# The single source of truth for every variable: Settings, .env.example and the README table
# are all checked against this list by the tests.
ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar(
        "OPENROUTER_API_KEY",
        "",
        _optional_secret,
        "OpenRouter API key used for every visitor's requests. Optional: without it the "
        "page explains how to set one.",
        secret=True,
    ),
    EnvVar(
        "OPENROUTER_BASE_URL",
        "https://openrouter.ai/api/v1",
        _http_url,
        "OpenRouter API base URL (tests point it at a local stand-in).",
    ),
    EnvVar("DEFAULT_MODEL", "openai/gpt-4o", _model_id, "Model selected for new chats."),
    EnvVar(
        "TEMPERATURE",
        "0.3",
        _number(0.0, 2.0),
        "Default sampling temperature, 0-2 (the slider covers 0-1.2; higher is clamped).",
    ),
    EnvVar(
        "MAX_INPUT_CHARS",
        "8000",
        _integer(1, 1_000_000),
        "Longest message a visitor may send, in characters.",
    ),
    EnvVar(
        "MAX_HISTORY_MESSAGES",
        "40",
        _integer(1, 10_000),
        "How many of the latest messages are sent upstream (plus the system prompt).",
    ),
    EnvVar(
        "HOST",
        "",
        _optional_host,
        "Address the server binds to. Empty: 127.0.0.1 (this machine only), or 0.0.0.0 on a "
        "Space; the Docker image sets 0.0.0.0.",
    ),
    EnvVar("PORT", "7860", _integer(1, 65535), "Port the server listens on."),
    EnvVar("LOG_LEVEL", "INFO", _choice(_LOG_LEVELS), "DEBUG, INFO, WARNING or ERROR."),
    EnvVar(
        "LOG_JSON",
        "auto",
        _log_json,
        "true: one JSON object per log line; false: readable console lines; auto: console "
        "in a terminal, JSON otherwise (and always on a Space).",
    ),
    EnvVar("LOG_PATH", "logs/app.log", _path, "Log file (rotated); its directory is created."),
    EnvVar(
        "REQUEST_TIMEOUT_SECONDS",
        "60",
        _number(1, 3600),
        "Read/write timeout of an upstream request, in seconds.",
    ),
    EnvVar(
        "CONNECT_TIMEOUT_SECONDS",
        "10",
        _number(0.1, 600),
        "Timeout to connect to OpenRouter (and to wait for a pooled connection).",
    ),
    EnvVar(
        "STREAM_IDLE_TIMEOUT_SECONDS",
        "60",
        _number(0.1, 3600),
        "A stream with no new chunk for this long is declared stalled; the partial answer is kept.",
    ),
    EnvVar(
        "OPENROUTER_MAX_RETRIES",
        "1",
        _integer(0, 10),
        "Retries of a request that failed before streaming started (connection errors, 5xx).",
    ),
    EnvVar(
        "CATALOG_REFRESH_SECONDS",
        "3600",
        _number(10, 7 * 86400),
        "How long the live model catalog is cached before it is fetched again.",
    ),
    EnvVar(
        "CATALOG_TIMEOUT_SECONDS",
        "10",
        _number(0.1, 600),
        "Timeout for fetching the model catalog; on failure a built-in list is used.",
    ),
    EnvVar(
        "MAX_CONCURRENT_STREAMS",
        "600",
        _integer(1, 100_000),
        "How many answers may stream at the same time (Gradio queue workers).",
    ),
    EnvVar(
        "DATA_DIR",
        ".data",
        _path,
        "Where conversations, usage logs, exports and the server secret are kept.",
    ),
    EnvVar(
        "BROWSER_STATE_SECRET",
        "",
        _optional_secret,
        "Secret that keys visitors' browser identities and owner ids. Set it as a Space "
        "secret so identities survive restarts; otherwise one is generated in DATA_DIR "
        "(or derived from HF_TOKEN when sync is on).",
        secret=True,
    ),
    EnvVar(
        "ALLOW_USER_KEYS",
        "false",
        _bool,
        "Let visitors paste their own OpenRouter key (always allowed when "
        "OPENROUTER_API_KEY is unset). The key stays in their browser.",
    ),
    EnvVar(
        "MAX_ATTACHMENTS_PER_MESSAGE",
        "5",
        _integer(0, 100),
        "Files a visitor may attach to one message (images, PDFs, text files); 0 turns "
        "attachments off.",
    ),
    EnvVar(
        "MAX_ATTACHMENT_BYTES",
        "10000000",
        _integer(1000, 1_000_000_000),
        "Largest file a visitor may attach, in bytes (as uploaded).",
    ),
    EnvVar(
        "MAX_MESSAGE_ATTACHMENT_BYTES",
        "25000000",
        _integer(1000, 1_000_000_000),
        "Most bytes of files one message may carry, all attachments together.",
    ),
    EnvVar(
        "IMAGE_MAX_SIDE",
        "1568",
        _integer(64, 10_000),
        "Attached images are downscaled so their long side is at most this many pixels.",
    ),
    EnvVar(
        "PDF_ENGINE",
        "",
        _pdf_engine,
        "How OpenRouter reads PDFs: empty lets OpenRouter choose; cloudflare-ai (free), "
        "mistral-ocr (scans, paid per page) or native (the model's own file input).",
    ),
    EnvVar(
        "WEB_SEARCH_MAX_RESULTS",
        "5",
        _integer(1, 25),
        "Pages a web search may return per answer (OpenRouter bills each result, and the "
        "cost shows up in the answer's cost).",
    ),
    EnvVar(
        "MAX_UNATTENDED_ANSWERS",
        "3",
        _integer(0, 1000),
        "Answers a visitor may leave generating with no page open on them (closed or "
        "reloaded tab); past this, the oldest unattended one is stopped (and saved).",
    ),
    EnvVar(
        "MAX_IMPORT_BYTES",
        "5000000",
        _integer(1000, 1_000_000_000),
        "Largest conversation file a visitor may import, in bytes.",
    ),
    EnvVar(
        "TRUSTED_PROXIES",
        "",
        _text,
        "Comma-separated IPs/CIDRs of reverse proxies whose X-Forwarded-For is believed. "
        "On a Space, empty means the Space proxy's private ranges.",
    ),
    EnvVar(
        "RATE_LIMIT_REQUESTS_PER_MIN",
        "20",
        _integer(0, 1_000_000),
        "Chat requests per minute per client IP (a burst up to this many); 0 disables.",
    ),
    EnvVar(
        "RATE_LIMIT_REQUESTS_PER_MIN_LOGGED_IN",
        "0",
        _integer(0, 1_000_000),
        "Separate limit for logged-in Hugging Face users; 0 means the same as anonymous.",
    ),
    EnvVar(
        "KEY_CHECKS_PER_MIN",
        "3",
        _integer(0, 10_000),
        "OpenRouter key checks (a visitor pasting their own key) per minute per client, on "
        "top of the chat limit; 0 disables.",
    ),
    EnvVar(
        "UPLOADS_PER_MIN",
        "10",
        _integer(0, 1_000_000),
        "File uploads (imports) per minute per client IP; 0 disables.",
    ),
    EnvVar(
        "DATABASE_URL",
        "",
        _database_url,
        "Where conversations and usage are kept: empty for SQLite in DATA_DIR/chat.db, or "
        "postgresql://user:password@host:port/db to share one database between replicas "
        "(BROWSER_STATE_SECRET is then required).",
        secret=True,
    ),
    EnvVar(
        "RATE_LIMIT_STORAGE_URI",
        "memory://",
        _text,
        "Where limit counters live: memory:// (one process) or redis://host:port "
        "(shared by replicas).",
    ),
    EnvVar(
        "ENABLE_ANALYTICS",
        "true",
        _bool,
        "Record one usage row (tokens, cost, latency; never text) per chat turn.",
    ),
    EnvVar(
        "ADMIN_USERS",
        "",
        _text,
        "Comma-separated Hugging Face user names who see app-wide usage and the CSV.",
    ),
    EnvVar(
        "OPERATOR_TOKEN",
        "",
        _operator_token,
        "Token of the operator link (/?operator=...) that opens the app-wide usage. Empty: "
        "a random one is made at each start and printed (off a Space only).",
        secret=True,
    ),
    EnvVar(
        "HF_TOKEN",
        "",
        _optional_secret,
        "Hugging Face token with write access, for dataset sync.",
        secret=True,
    ),
    EnvVar(
        "HF_DATASET_REPO",
        "",
        _text,
        "Private dataset repo (owner/name) to sync conversations and usage to; empty "
        "disables sync.",
    ),
    EnvVar("HF_SYNC_EVERY_MINUTES", "5", _number(0.05, 1440), "Minutes between dataset pushes."),
    EnvVar(
        "HF_ENDPOINT",
        "https://huggingface.co",
        _http_url,
        "Hugging Face Hub URL (tests point it at a local stand-in).",
    ),
    EnvVar("SHARE", "false", _bool, "Also open a public gradio.live share link."),
    EnvVar("SPACE_ID", "", _text, "Set by Hugging Face Spaces (owner/name); do not set it."),
    EnvVar(
        "SPACE_HOST",
        "",
        _optional_host,
        "Set by Hugging Face Spaces (the Space's own host name); do not set it.",
    ),
    EnvVar(
        "OAUTH_CLIENT_ID",
        "",
        _text,
        "Set by Spaces with `hf_oauth: true`; enables Log in with Hugging Face.",
    ),
    EnvVar(
        "APP_TITLE",
        "OpenRouter Chat",
        _text,
        "Page title; also sent to OpenRouter as X-OpenRouter-Title.",
    ),
    EnvVar(
        "PUBLIC_URL",
        "",
        _optional_url,
        "Public URL of this app, sent to OpenRouter as HTTP-Referer (app attribution). "
        "On a Space it defaults to https://$SPACE_HOST; APP_URL, its older name, is still read.",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Every setting of the app, validated."""

    openrouter_api_key: str | None = dataclasses.field(default=None, repr=False)
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    default_model: str = "openai/gpt-4o"
    temperature: float = 0.3
    max_input_chars: int = 8000
    max_history_messages: int = 40
    host: str = LOCAL_HOST
    port: int = 7860
    log_level: str = "INFO"
    log_json: str = "auto"
    log_path: Path = Path("logs/app.log")
    request_timeout_seconds: float = 60.0
    connect_timeout_seconds: float = 10.0
    stream_idle_timeout_seconds: float = 60.0
    openrouter_max_retries: int = 1
    catalog_refresh_seconds: float = 3600.0
    catalog_timeout_seconds: float = 10.0
    max_concurrent_streams: int = 600
    data_dir: Path = Path(".data")
    browser_state_secret: str | None = dataclasses.field(default=None, repr=False)
    allow_user_keys: bool = False
    max_attachments_per_message: int = 5
    max_attachment_bytes: int = 10_000_000
    max_message_attachment_bytes: int = 25_000_000
    image_max_side: int = 1568
    pdf_engine: str = ""
    web_search_max_results: int = 5
    max_unattended_answers: int = 3
    max_import_bytes: int = 5_000_000
    trusted_proxies: str = ""
    rate_limit_requests_per_min: int = 20
    rate_limit_requests_per_min_logged_in: int = 0
    key_checks_per_min: int = 3
    uploads_per_min: int = 10
    database_url: str | None = dataclasses.field(default=None, repr=False)
    rate_limit_storage_uri: str = "memory://"
    enable_analytics: bool = True
    admin_users: str = ""
    operator_token: str | None = dataclasses.field(default=None, repr=False)
    hf_token: str | None = dataclasses.field(default=None, repr=False)
    hf_dataset_repo: str = ""
    hf_sync_every_minutes: float = 5.0
    hf_endpoint: str = "https://huggingface.co"
    share: bool = False
    space_id: str = ""
    space_host: str = ""
    oauth_client_id: str = ""
    app_title: str = "OpenRouter Chat"
    public_url: str = ""

    @property
    def slider_temperature(self) -> float:
        """The default temperature clamped into the UI slider's range."""
        return min(self.temperature, TEMPERATURE_SLIDER_MAX)

    @property
    def on_space(self) -> bool:
        """True when running inside a Hugging Face Space."""
        return bool(self.space_id)

    @property
    def login_enabled(self) -> bool:
        """HF login works only on a Space with OAuth enabled (`hf_oauth: true`)."""
        return self.on_space and bool(self.oauth_client_id)

    @property
    def user_keys_allowed(self) -> bool:
        """Visitors may bring their own key (always, when the operator set none)."""
        return self.allow_user_keys or not self.openrouter_api_key

    @property
    def sync_enabled(self) -> bool:
        """Dataset sync is on only with both a repo and a token."""
        return bool(self.hf_dataset_repo and self.hf_token)

    @property
    def max_upstream_chars(self) -> int:
        """The most text one turn sends upstream; older messages beyond it are left out."""
        return max(400_000, self.max_input_chars * self.max_history_messages)

    @property
    def max_upload_bytes(self) -> int:
        """Largest file an upload may carry: an import, or an attachment."""
        return max(2 * self.max_import_bytes, self.max_attachment_bytes)

    @property
    def attachment_limits(self) -> AttachmentLimits:
        """What a visitor may attach to one message."""
        return AttachmentLimits(
            max_files=self.max_attachments_per_message,
            max_file_bytes=self.max_attachment_bytes,
            max_message_bytes=self.max_message_attachment_bytes,
            image_max_side=self.image_max_side,
        )

    @property
    def admin_user_names(self) -> frozenset[str]:
        """ADMIN_USERS as a set of names."""
        return frozenset(n.strip() for n in self.admin_users.split(",") if n.strip())

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, env_file: Path | None = Path(".env")
    ) -> Settings:
        """Build settings from `environ`, with `env_file` filling only unset variables."""
        merged: dict[str, str] = {}
        if env_file is not None and env_file.is_file():
            merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        merged.update(environ)
        if "PUBLIC_URL" not in merged and "APP_URL" in merged:
            merged["PUBLIC_URL"] = merged["APP_URL"]  # the older name of the same setting
        values: dict[str, Any] = {}
        problems: list[str] = []
        for var in ENV_VARS:
            raw = merged.get(var.name, var.default)
            try:
                values[var.name.lower()] = var.parse(raw)
            except ValueError as exc:
                shown = "<hidden>" if var.secret else repr(raw)
                problems.append(f"{var.name} {exc}, got {shown}")
        if values.get("database_url") and not values.get("browser_state_secret"):
            problems.append(
                "BROWSER_STATE_SECRET is required when DATABASE_URL is set: every replica "
                "must recognise the same visitors"
            )
        if problems:
            raise ConfigError(problems)
        if not values["host"]:
            values["host"] = ALL_INTERFACES if values["space_id"] else LOCAL_HOST
        if not values["public_url"] and values["space_id"] and values["space_host"]:
            values["public_url"] = f"https://{values['space_host']}"
        return cls(**values)
